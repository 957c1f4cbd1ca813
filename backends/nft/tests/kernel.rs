//! The nftables backend against the real kernel, in namespaces of its own:
//! - incremental syncs leave the same ruleset as one full sync of the same state;
//! - syncs are atomic: connections to a churned and to a steady service never fail;
//! - a refused transaction leaves the previous ruleset in place and the next sync is full.
//!
//! Needs root, iproute2 and nft; without them the tests fail saying what is missing.
//!
//! Address conventions: node 192.168.0.2/24 on eth0; pods in 10.0.0.0/8 (client 10.0.0.2,
//! endpoints 10.180.x.y) and fd00::/48; services in 172.30.0.0/16 and fd00:30::/64.

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
    Balancing, ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, NodeInfo, Protocol,
    ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_nft::{NftCommand, NftDataplane};
use kproxy_objects as objects;
use kproxy_rig::probe::{self, Outcome, Probe};
use kproxy_rig::{NetNs, World, WorldSpec, netns};
use proptest::prelude::*;

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    if let Err(error) = netns::require_tool("nft", &["--version"]) {
        panic!("nftables kernel tests cannot run here: {error}");
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("valid"),
            "fd00::/48".parse().expect("valid"),
        ]),
        service_cidrs: vec![
            "172.30.0.0/16".parse().expect("valid"),
            "fd00:30::/64".parse().expect("valid"),
        ],
        ..ProxyConfig::default()
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        pod_cidrs: vec!["10.0.1.0/24".parse().expect("valid")],
        addresses: vec!["192.168.0.2".parse().expect("valid")],
    }
}

/// One Service of the pool, as a step of a random sequence describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceShape {
    index: usize,
    kind: &'static str,
    local: bool,
    affinity: bool,
    udp: bool,
    /// Endpoints by number: (ready, serving, terminating, on this node).
    endpoints: Vec<(u8, bool, bool, bool, bool)>,
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

/// A step: which of four Services exist, and how.
fn step() -> impl Strategy<Value = Vec<Option<ServiceShape>>> {
    (0..4)
        .map(|i| prop::option::weighted(0.75, shape(i)))
        .collect::<Vec<_>>()
}

/// `nft list table` of both families with every block sorted by name and every set's elements
/// sorted, so that listings of equal rulesets built in different orders compare equal.
fn normalized_listing(ns: &NetNs) -> String {
    let mut out = String::new();
    for family in ["ip", "ip6"] {
        let listing = ns
            .exec("nft", &["list", "table", family, "kube-proxy"], None)
            .unwrap_or_default();
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut elements: Option<Vec<String>> = None;
        for line in listing.lines() {
            let trimmed = line.trim();
            if let Some(collected) = elements.as_mut() {
                let done = trimmed.ends_with('}');
                collected.extend(
                    trimmed
                        .trim_end_matches('}')
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(String::from),
                );
                if done {
                    let mut sorted = elements.take().unwrap_or_default();
                    sorted.sort();
                    current.push(format!("elements = {{ {} }}", sorted.join(", ")));
                }
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("elements = {") {
                elements = Some(Vec::new());
                let done = rest.ends_with('}');
                if let Some(collected) = elements.as_mut() {
                    collected.extend(
                        rest.trim_end_matches('}')
                            .split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(String::from),
                    );
                }
                if done {
                    let mut sorted = elements.take().unwrap_or_default();
                    sorted.sort();
                    current.push(format!("elements = {{ {} }}", sorted.join(", ")));
                }
                continue;
            }
            if line.starts_with("\t}") || (trimmed == "}" && line.starts_with('\t')) {
                // Emptied chains wait for a later sync to be deleted; a full sync writes none.
                let empty_chain = current.len() == 1 && current[0].starts_with("chain ");
                if !empty_chain {
                    blocks.push(current.join("\n"));
                }
                current.clear();
            } else if !trimmed.is_empty() && line.starts_with('\t') {
                current.push(trimmed.to_owned());
            }
        }
        blocks.sort();
        out.push_str(&format!("table {family}\n{}\n", blocks.join("\n")));
    }
    out
}

async fn apply_step(tracker: &mut ServiceChangeTracker, step: &[Option<ServiceShape>]) {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn incremental_syncs_leave_the_ruleset_of_a_full_sync(steps in prop::collection::vec(step(), 2..6)) {
        require_kernel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let incremental_ns = NetNs::new("incr").expect("namespace");
            let full_ns = NetNs::new("full").expect("namespace");
            let mut incremental = NftDataplane::new(config(), Box::new(NftCommand::in_netns(incremental_ns.name())));
            let mut full = NftDataplane::new(config(), Box::new(NftCommand::in_netns(full_ns.name())));
            let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
            incremental.full_sync(&tracker.state()).await.expect("first full sync");
            for (i, step) in steps.iter().enumerate() {
                apply_step(&mut tracker, step).await;
                let changes = tracker.drain();
                let state = tracker.state();
                incremental.sync(&state, &changes).await.unwrap_or_else(|e| panic!("step {i}: incremental sync refused: {e:?}"));
                full.full_sync(&state).await.unwrap_or_else(|e| panic!("step {i}: full sync refused: {e:?}"));
                let (a, b) = (normalized_listing(&incremental_ns), normalized_listing(&full_ns));
                assert!(a == b, "step {i}: incremental and full rulesets differ\n--- incremental\n{a}\n--- full\n{b}");
            }
        });
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn simple_service(name: &str, cluster_ip: &str) -> Service {
    objects::service("ns", name)
        .cluster_ip(cluster_ip)
        .port("p", 80, "TCP")
        .build()
}

fn simple_slice(service: &str, addresses: &[&str]) -> EndpointSlice {
    objects::slice("ns", service, &format!("{service}-a"))
        .port("p", 80, "TCP")
        .ready_on("node-b", addresses)
        .build()
}

/// A world with a client pod, four endpoints of `churned` and one of `steady`.
async fn churn_world() -> World {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_survive_hundreds_of_syncs_and_new_ones_never_fail() {
    require_kernel();
    let world = churn_world().await;
    let churned = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.1"), 80);
    let steady = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.2"), 80);
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("churned", "172.30.0.1"));
    tracker.upsert_service(&simple_service("steady", "172.30.0.2"));
    tracker.upsert_endpoint_slice(&simple_slice("churned", &["10.180.0.1", "10.180.0.2"]));
    tracker.upsert_endpoint_slice(&simple_slice("steady", &["10.180.1.1"]));
    tracker.drain();
    let mut dataplane = NftDataplane::new(
        ProxyConfig {
            ip_families: vec![IpFamily::V4],
            ..config()
        },
        Box::new(NftCommand::in_netns(world.node_netns())),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_leaves_the_ruleset_and_the_next_sync_is_full() {
    require_kernel();
    let ns = NetNs::new("refuse").expect("namespace");
    let mut dataplane = NftDataplane::new(config(), Box::new(NftCommand::in_netns(ns.name())));
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("a", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1"]));
    tracker.drain();
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");

    // Someone else takes the key the next sync wants, with another value: the kernel must
    // refuse the whole transaction.
    ns.exec(
        "nft",
        &["add element ip kube-proxy service-ips { 172.30.0.2 . tcp . 80 : drop }"],
        None,
    )
    .expect("conflicting element");
    let before = normalized_listing(&ns);
    tracker.upsert_service(&simple_service("b", "172.30.0.2"));
    tracker.upsert_endpoint_slice(&simple_slice("b", &["10.180.0.2"]));
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1", "10.180.0.3"]));
    let changes = tracker.drain();
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .expect_err("the kernel refuses");
    let chain = format!("{error:?}");
    assert!(
        chain.contains("File exists"),
        "the error carries nft's message: {chain}"
    );
    assert!(
        chain.contains("add element ip kube-proxy service-ips"),
        "and the refused input: {chain}"
    );
    assert_eq!(
        normalized_listing(&ns),
        before,
        "nothing of the refused transaction took effect"
    );

    // The next sync, even without changes, is full and repairs everything.
    dataplane
        .sync(&tracker.state(), &kproxy_core::ChangeSet::default())
        .await
        .expect("full repair");
    let repaired = normalized_listing(&ns);
    assert!(
        repaired.contains("172.30.0.2 . tcp . 80 : goto service-"),
        "b is programmed: {repaired}"
    );
    assert!(
        repaired.contains("10.180.0.3 . 80"),
        "a's new endpoint is programmed"
    );
}

/// With `Balancing::RoundRobin` (`numgen inc`), successive connections of one client cycle
/// through the endpoints in order, over the netlink fast path (an endpoint added by a partial
/// sync joins the cycle) as well as after a full sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_cycles_through_the_endpoints() {
    require_kernel();
    let world = churn_world().await;
    let service = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.1"), 80);
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("churned", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice(
        "churned",
        &["10.180.0.1", "10.180.0.2", "10.180.0.3"],
    ));
    tracker.drain();
    let mut dataplane = NftDataplane::new(
        ProxyConfig {
            ip_families: vec![IpFamily::V4],
            balancing: Balancing::RoundRobin,
            ..config()
        },
        Box::new(NftCommand::in_netns(world.node_netns())),
    );
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");

    async fn answers(world: &World, probe: &Probe, count: usize) -> Vec<IpAddr> {
        let mut seen = Vec::with_capacity(count);
        for _ in 0..count {
            match probe::send(world, probe, Duration::from_secs(2)).await {
                Outcome::Reply(reply) if reply.kind == "endpoint" => seen.push(reply.local.ip()),
                other => panic!("{probe}: {other:?}"),
            }
        }
        seen
    }
    let assert_cycles = |seen: &[IpAddr], period: usize| {
        for (i, window) in seen.windows(period).enumerate() {
            let mut distinct = window.to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), period, "window {i} of {seen:?} repeats an endpoint");
        }
        for (i, pair) in seen.windows(period + 1).enumerate() {
            assert_eq!(pair[0], pair[period], "the cycle breaks at {i}: {seen:?}");
        }
    };
    assert_cycles(&answers(&world, &service, 9).await, 3);

    tracker.upsert_endpoint_slice(&simple_slice(
        "churned",
        &["10.180.0.1", "10.180.0.2", "10.180.0.3", "10.180.0.4"],
    ));
    let changes = tracker.drain();
    dataplane
        .sync(&tracker.state(), &changes)
        .await
        .expect("partial sync");
    assert_cycles(&answers(&world, &service, 12).await, 4);
}
