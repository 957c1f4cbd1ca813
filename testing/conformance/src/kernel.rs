//! Kernel invariants every backend must keep, checked against the real kernel in namespaces
//! of their own: incremental syncs leave what one full sync of the same state leaves; syncs
//! are atomic under churn (live connections survive, new ones never fail); a refused sync
//! leaves the previous state and the next sync is full and repairs it.
//!
//! A backend's own tests call these with its [`KernelTarget`]. They panic with a message that
//! says what went wrong, as test assertions do.
//!
//! Address conventions: node `node-a` at 192.168.0.2/24 on eth0; pods in 10.0.0.0/8 (client
//! 10.0.0.2, endpoints 10.180.x.y) and fd00::/48; services in 172.30.0.0/16 and fd00:30::/64.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::convert::LABEL_SERVICE_NAME;
use kproxy_core::{
    ChangeSet, ConversionOptions, DataplaneError, IpFamily, NodeInfo, Protocol, ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_objects as objects;
use kproxy_rig::probe::{self, Outcome, Probe};
use kproxy_rig::{NetNs, Result, World, WorldSpec};
use proptest::prelude::*;

use crate::DataplaneFactory;

/// What the kernel invariant checks need of a backend beyond building its dataplane.
pub trait KernelTarget: DataplaneFactory {
    /// Everything the dataplane programmed in `netns`, normalized so that equal states list
    /// equally however they were built (sorted blocks and elements, no counters, no handles,
    /// no objects a full sync would not write, such as emptied chains awaiting deletion).
    ///
    /// # Errors
    ///
    /// When the state cannot be listed.
    fn listing(&self, netns: &NetNs) -> Result<String>;

    /// Puts an object of someone else's in the way of the next sync that programs the TCP
    /// port 80 of `cluster_ip`, so that the kernel must refuse that sync.
    ///
    /// # Errors
    ///
    /// When the obstacle cannot be placed.
    fn obstruct(&self, netns: &NetNs, cluster_ip: IpAddr) -> Result<()>;
}

/// The node of these checks.
pub fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        pod_cidrs: vec!["10.0.1.0/24".parse().expect("valid")],
        addresses: vec!["192.168.0.2".parse().expect("valid")],
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

/// A ClusterIP Service `ns/{name}` with TCP port `p` 80.
pub fn simple_service(name: &str, cluster_ip: &str) -> Service {
    objects::service("ns", name)
        .cluster_ip(cluster_ip)
        .port("p", 80, "TCP")
        .build()
}

/// The EndpointSlice of `simple_service(service)`: ready endpoints on node-b, port 80.
pub fn simple_slice(service: &str, addresses: &[&str]) -> EndpointSlice {
    objects::slice("ns", service, &format!("{service}-a"))
        .port("p", 80, "TCP")
        .ready_on("node-b", addresses)
        .build()
}

/// One Service of the pool, as a step of a random sequence describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceShape {
    /// Which Service of the pool (`svc{index}`, cluster IPs 172.30.0.{index+1} and
    /// fd00:30::{index+1}).
    pub index: usize,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    pub kind: &'static str,
    /// `externalTrafficPolicy: Local` (for the external kinds).
    pub local: bool,
    /// `sessionAffinity: ClientIP`.
    pub affinity: bool,
    /// UDP instead of TCP.
    pub udp: bool,
    /// Endpoints by number: (ready, serving, terminating, on node-a).
    pub endpoints: Vec<(u8, bool, bool, bool, bool)>,
}

fn service(shape: &ServiceShape) -> Service {
    let i = shape.index;
    Service {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(format!("svc{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(shape.kind.into()),
            cluster_ips: Some(vec![
                format!("172.30.0.{}", i + 1),
                format!("fd00:30::{}", i + 1),
            ]),
            cluster_ip: Some(format!("172.30.0.{}", i + 1)),
            ports: Some(vec![ServicePort {
                name: Some("p".into()),
                port: 80,
                protocol: Some(if shape.udp { "UDP" } else { "TCP" }.into()),
                node_port: (shape.kind != "ClusterIP")
                    .then_some(30_000 + i32::try_from(i).unwrap_or(0)),
                ..Default::default()
            }]),
            external_ips: Some(vec![format!("192.0.2.{}", i + 1)]),
            external_traffic_policy: (shape.local && shape.kind != "ClusterIP")
                .then(|| "Local".into()),
            session_affinity: shape.affinity.then(|| "ClientIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn slices(shape: &ServiceShape) -> Vec<EndpointSlice> {
    let family = |v6: bool| {
        let endpoints = shape
            .endpoints
            .iter()
            .map(|(n, ready, serving, terminating, local)| Endpoint {
                addresses: vec![if v6 {
                    format!("fd00::{}:{n}", shape.index + 1)
                } else {
                    format!("10.180.{}.{n}", shape.index)
                }],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                node_name: Some(if *local { "node-a" } else { "node-b" }.into()),
                ..Default::default()
            })
            .collect();
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(format!(
                    "svc{}-{}",
                    shape.index,
                    if v6 { "v6" } else { "v4" }
                )),
                labels: Some(BTreeMap::from([(
                    LABEL_SERVICE_NAME.to_owned(),
                    format!("svc{}", shape.index),
                )])),
                ..Default::default()
            },
            address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some("p".into()),
                port: Some(8080),
                protocol: Some(if shape.udp { "UDP" } else { "TCP" }.into()),
                ..Default::default()
            }]),
        }
    };
    vec![family(false), family(true)]
}

fn shape(index: usize) -> impl Strategy<Value = ServiceShape> {
    (
        prop::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer"]),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop::collection::btree_map(
            1u8..6,
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
            0..4,
        ),
    )
        .prop_map(
            move |(kind, local, affinity, udp, endpoints)| ServiceShape {
                index,
                kind,
                local,
                affinity,
                udp,
                endpoints: endpoints
                    .into_iter()
                    .map(|(n, (r, s, t, l))| (n, r, s, t, l))
                    .collect(),
            },
        )
}

/// A step of a random sequence: which of four Services exist, and how.
pub fn step() -> impl Strategy<Value = Vec<Option<ServiceShape>>> {
    (0..4)
        .map(|i| prop::option::weighted(0.75, shape(i)))
        .collect::<Vec<_>>()
}

/// Applies a step to the tracker: upserts the Services that exist, deletes the others.
pub fn apply_step(tracker: &mut ServiceChangeTracker, step: &[Option<ServiceShape>]) {
    for (i, shape) in step.iter().enumerate() {
        match shape {
            Some(shape) => {
                tracker.upsert_service(&service(shape));
                for slice in slices(shape) {
                    tracker.upsert_endpoint_slice(&slice);
                }
            }
            None => {
                tracker.delete_service("ns", &format!("svc{i}"));
                tracker.delete_endpoint_slice("ns", &format!("svc{i}-v4"));
                tracker.delete_endpoint_slice("ns", &format!("svc{i}-v6"));
            }
        }
    }
}

/// Incremental syncs through `steps` leave what a full sync of each step's state leaves in a
/// second namespace.
///
/// # Panics
///
/// At the first step whose listings differ, or when a sync is refused.
pub async fn incremental_equals_full(
    target: &dyn KernelTarget,
    config: &ProxyConfig,
    steps: &[Vec<Option<ServiceShape>>],
) {
    let incremental_ns = NetNs::new("incr").expect("namespace");
    let full_ns = NetNs::new("full").expect("namespace");
    let mut incremental = target
        .build(config, incremental_ns.name())
        .expect("dataplane");
    let mut full = target.build(config, full_ns.name()).expect("dataplane");
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    incremental
        .full_sync(&tracker.state())
        .await
        .expect("first full sync");
    for (i, step) in steps.iter().enumerate() {
        apply_step(&mut tracker, step);
        let changes = tracker.drain();
        let state = tracker.state();
        incremental
            .sync(&state, &changes)
            .await
            .unwrap_or_else(|e| panic!("step {i}: incremental sync refused: {e:?}"));
        full.full_sync(&state)
            .await
            .unwrap_or_else(|e| panic!("step {i}: full sync refused: {e:?}"));
        let a = target.listing(&incremental_ns).expect("listing");
        let b = target.listing(&full_ns).expect("listing");
        assert!(
            a == b,
            "step {i}: incremental and full rulesets differ\n--- incremental\n{a}\n--- full\n{b}"
        );
    }
}

/// A world with a client pod, four endpoints of `churned` and one of `steady`.
pub async fn churn_world() -> World {
    let mut interfaces = BTreeMap::new();
    interfaces.insert(
        "eth0".to_owned(),
        vec!["192.168.0.2/24".parse().expect("valid")],
    );
    let mut spec = WorldSpec::new(interfaces);
    spec.pod_networks = vec!["10.0.0.0/8".parse().expect("valid")];
    for endpoint in [
        "10.180.0.1",
        "10.180.0.2",
        "10.180.0.3",
        "10.180.0.4",
        "10.180.1.1",
    ] {
        spec.endpoint(ip(endpoint), 80, Protocol::Tcp);
    }
    spec.probe(&Probe::tcp(ip("10.0.0.2"), ip("172.30.0.1"), 80));
    spec.probe(&Probe::tcp(ip("10.0.0.2"), ip("172.30.0.2"), 80));
    World::build(spec).await.expect("world")
}

/// 300 syncs churn the endpoints of one Service while probes hit it and a steady one, and two
/// connections opened before stay open: no probe may fail, both connections must survive.
///
/// # Panics
///
/// When a probe failed, a connection broke or a sync was refused.
pub async fn syncs_are_atomic(target: &dyn KernelTarget, config: &ProxyConfig) {
    let world = churn_world().await;
    let churned = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.1"), 80);
    let steady = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.2"), 80);
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("churned", "172.30.0.1"));
    tracker.upsert_service(&simple_service("steady", "172.30.0.2"));
    tracker.upsert_endpoint_slice(&simple_slice("churned", &["10.180.0.1", "10.180.0.2"]));
    tracker.upsert_endpoint_slice(&simple_slice("steady", &["10.180.1.1"]));
    tracker.drain();
    let config = ProxyConfig {
        ip_families: vec![IpFamily::V4],
        ..config.clone()
    };
    let mut dataplane = target
        .build(&config, world.node_netns())
        .expect("dataplane");
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");

    // Connections opened before the churn must keep working through it.
    let mut before_churned = probe::open_stream(&world, &churned, Duration::from_secs(2))
        .await
        .expect("churned up");
    let mut before_steady = probe::open_stream(&world, &steady, Duration::from_secs(2))
        .await
        .expect("steady up");

    let done = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let world = Arc::new(world);
    let prober = {
        let (world, done, failures, probes) = (
            world.clone(),
            done.clone(),
            failures.clone(),
            probes.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                for probe in [churned, steady] {
                    let outcome = probe::send(&world, &probe, Duration::from_secs(2)).await;
                    probes.fetch_add(1, Ordering::SeqCst);
                    if !matches!(&outcome, Outcome::Reply(reply) if reply.kind == "endpoint") {
                        failures.fetch_add(1, Ordering::SeqCst);
                        seen.push(format!("{probe}: {outcome:?}"));
                    }
                }
            }
            seen
        })
    };

    // 10.180.0.1 stays ready throughout; the others come and go.
    let others = ["10.180.0.2", "10.180.0.3", "10.180.0.4"];
    for round in 0..300usize {
        let mut addresses = vec!["10.180.0.1"];
        addresses.extend(
            others
                .iter()
                .enumerate()
                .filter(|(i, _)| (round >> i) & 1 == 1)
                .map(|(_, a)| *a),
        );
        tracker.upsert_endpoint_slice(&simple_slice("churned", &addresses));
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = prober.await.expect("prober");
    assert!(
        probes.load(Ordering::SeqCst) > 20,
        "too few probes ran during the churn"
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "probes failed during syncs: {seen:?}"
    );
    probe::echo(
        &mut before_churned.1,
        b"still there\n",
        Duration::from_secs(2),
    )
    .await
    .expect("old churned connection survives");
    probe::echo(
        &mut before_steady.1,
        b"still there\n",
        Duration::from_secs(2),
    )
    .await
    .expect("old steady connection survives");
}

/// A sync the kernel refuses (an obstacle from [`KernelTarget::obstruct`]) changes nothing,
/// and the next sync, even with no change, is full and leaves what a fresh full sync leaves.
/// Returns the refusal, for the backend's own checks of what it says.
///
/// # Panics
///
/// When the refused sync changed the state, was not refused, or the repair differs.
pub async fn a_refused_sync_keeps_the_state(
    target: &dyn KernelTarget,
    config: &ProxyConfig,
) -> DataplaneError {
    let ns = NetNs::new("refuse").expect("namespace");
    let mut dataplane = target.build(config, ns.name()).expect("dataplane");
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("a", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1"]));
    tracker.drain();
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");

    target
        .obstruct(&ns, ip("172.30.0.2"))
        .expect("placing the obstacle");
    let before = target.listing(&ns).expect("listing");
    tracker.upsert_service(&simple_service("b", "172.30.0.2"));
    tracker.upsert_endpoint_slice(&simple_slice("b", &["10.180.0.2"]));
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1", "10.180.0.3"]));
    let changes = tracker.drain();
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .expect_err("the kernel must refuse the sync");
    assert_eq!(
        target.listing(&ns).expect("listing"),
        before,
        "nothing of the refused sync took effect"
    );

    dataplane
        .sync(&tracker.state(), &ChangeSet::default())
        .await
        .expect("the next sync repairs everything");
    let fresh_ns = NetNs::new("fresh").expect("namespace");
    let mut fresh = target.build(config, fresh_ns.name()).expect("dataplane");
    fresh.full_sync(&tracker.state()).await.expect("full sync");
    assert_eq!(
        target.listing(&ns).expect("listing"),
        target.listing(&fresh_ns).expect("listing"),
        "the repair leaves what a full sync leaves"
    );
    error
}
