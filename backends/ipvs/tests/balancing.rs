//! What only IPVS does, checked with real connections inside the UML guest: round robin is
//! round robin (one client's successive connections cycle through the endpoints), `wrr` with
//! Kubernetes' equal weights cycles the same way, `sh` keeps each client on one endpoint,
//! ClientIP affinity (persistence) keeps a client on one endpoint; a connection that outlives
//! its endpoint's removal keeps working while the endpoint drains; a full sync after partial
//! ones changes nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kproxy_conformance::DataplaneFactory;
use kproxy_core::{
    ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_objects as objects;
use kproxy_rig::World;
use kproxy_rig::probe::{self, Outcome, Probe};

mod common;
use common::Ipvs;
use common::{NODE_IP, ip};

const CLUSTER_IP: &str = "172.30.0.10";
const ENDPOINTS: [&str; 3] = ["10.180.0.1", "10.180.0.2", "10.180.0.3"];
const CLIENTS: [&str; 3] = ["10.0.0.21", "10.0.0.22", "10.0.0.23"];

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

async fn make_world() -> World {
    common::one_node_world(&ENDPOINTS, &CLIENTS, CLUSTER_IP).await
}

fn tracker(affinity: bool, endpoints: &[&str]) -> ServiceChangeTracker {
    let node = NodeInfo {
        name: "node".into(),
        zone: None,
        pod_cidrs: vec![],
        addresses: vec![ip(NODE_IP)],
    };
    let mut tracker = ServiceChangeTracker::new(node, ConversionOptions::default());
    let mut service = objects::service("ns", "web")
        .cluster_ip(CLUSTER_IP)
        .port("http", 80, "TCP");
    if affinity {
        service = service.client_ip_affinity(Some(60));
    }
    tracker.upsert_service(&service.build());
    set_endpoints(&mut tracker, endpoints);
    tracker
}

fn set_endpoints(tracker: &mut ServiceChangeTracker, endpoints: &[&str]) {
    let slice = endpoints.iter().fold(
        objects::slice("ns", "web", "web-1").port("http", 80, "TCP"),
        |slice, addr| slice.endpoint(objects::endpoint(addr).node("other")),
    );
    tracker.upsert_endpoint_slice(&slice.build());
}

/// The endpoints that answered `count` successive connections from `client`.
async fn answers(world: &World, client: &str, count: usize) -> Vec<IpAddr> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let probe = Probe::tcp(ip(client), ip(CLUSTER_IP), 80);
        match probe::send(world, &probe, Duration::from_secs(2)).await {
            Outcome::Reply(reply) if reply.kind == "endpoint" => seen.push(reply.local.ip()),
            other => panic!("{client} -> {CLUSTER_IP}:80: {other:?}"),
        }
    }
    seen
}

async fn run(scheduler: &'static str, affinity: bool) -> (World, Box<dyn Dataplane>) {
    let world = make_world().await;
    let mut dataplane = Ipvs { scheduler }
        .build(&config(), world.node_netns())
        .expect("the dataplane");
    let mut tracker = tracker(affinity, &ENDPOINTS);
    tracker.drain();
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("a full sync");
    (world, dataplane)
}

fn assert_cycles(seen: &[IpAddr]) {
    let distinct: BTreeSet<&IpAddr> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        ENDPOINTS.len(),
        "every endpoint in turn: {seen:?}"
    );
    for (i, addr) in seen.iter().enumerate().skip(ENDPOINTS.len()) {
        assert_eq!(*addr, seen[i - ENDPOINTS.len()], "a strict cycle: {seen:?}");
    }
}

async fn guest_checks() {
    // rr and wrr (equal weights): one client cycles through the endpoints.
    for scheduler in ["rr", "wrr"] {
        let (world, _dataplane) = run(scheduler, false).await;
        let seen = answers(&world, CLIENTS[0], 9).await;
        println!("{scheduler}: {seen:?}");
        assert_cycles(&seen);
    }
    // sh: each client stays on one endpoint (source hashing), whatever the count.
    let (world, _dataplane) = run("sh", false).await;
    for client in CLIENTS {
        let seen = answers(&world, client, 5).await;
        println!("sh {client}: {seen:?}");
        assert_eq!(
            seen.iter().collect::<BTreeSet<_>>().len(),
            1,
            "{client}: {seen:?}"
        );
    }
    drop(world);
    // ClientIP affinity with rr: persistence keeps each client on one endpoint.
    let (world, _dataplane) = run("rr", true).await;
    for client in CLIENTS {
        let seen = answers(&world, client, 5).await;
        println!("persistent {client}: {seen:?}");
        assert_eq!(
            seen.iter().collect::<BTreeSet<_>>().len(),
            1,
            "{client}: {seen:?}"
        );
    }
    drop(world);

    // Graceful termination: a connection to an endpoint that is removed keeps carrying data
    // (its real server drains at weight 0), new connections avoid it.
    let world = make_world().await;
    let mut dataplane = Ipvs { scheduler: "rr" }
        .build(&config(), world.node_netns())
        .expect("the dataplane");
    let mut tracker = tracker(false, &ENDPOINTS[..1]);
    tracker.drain();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let probe = Probe::tcp(ip(CLIENTS[0]), ip(CLUSTER_IP), 80);
    let (_, mut stream) = probe::open_stream(&world, &probe, Duration::from_secs(2))
        .await
        .expect("a connection to the only endpoint");
    set_endpoints(&mut tracker, &ENDPOINTS[1..]);
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    probe::echo(&mut stream, b"still there", Duration::from_secs(2))
        .await
        .expect("the connection outlives its endpoint's removal");
    let seen = answers(&world, CLIENTS[1], 4).await;
    assert!(
        !seen.contains(&ip(ENDPOINTS[0])),
        "new connections avoid it: {seen:?}"
    );
    // A full sync now equals the incremental state: it sends nothing but keeps the drain.
    dataplane.full_sync(&tracker.state()).await.unwrap();
    probe::echo(&mut stream, b"after a full sync", Duration::from_secs(2))
        .await
        .expect("a full sync keeps the draining connection");
}

#[test]
fn schedulers_persistence_and_draining_in_the_guest() {
    kproxy_guest::run_test_in_guest("guest_schedulers", Duration::from_secs(300));
}

#[test]
#[ignore = "runs inside the UML guest (see schedulers_persistence_and_draining_in_the_guest)"]
fn guest_schedulers() {
    kproxy_guest::require_inside();
    common::runtime().block_on(guest_checks());
}
