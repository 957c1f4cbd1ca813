//! Syncs against the real kernel, inside the UML guest: partial syncs after random changes
//! leave the namespace as one full sync of the final state does (virtual and real servers,
//! sets, addresses, rules); a request the kernel refuses in the middle of a partial sync leaves
//! the previous state; live connections survive churn; `cleanup()` leaves another agent's
//! virtual server alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kproxy_conformance::DataplaneFactory;
use kproxy_core::{
    ChangeSet, ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, NodeInfo, Protocol,
    ProxyConfig, ProxyState, ServiceChangeTracker,
};
use kproxy_iptables::{IptablesCommand, IptablesKernel, Table, Variant};
use kproxy_ipvs::model::{IpvsOp, ServiceKey, VirtualServer};
use kproxy_ipvs::{DUMMY_LINK, IpvsKernel, NetlinkIpvs};
use kproxy_objects as objects;
use kproxy_rig::NetNs;
use kproxy_rig::probe::{self, Probe};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

mod common;
use common::snapshot::{Holdings, normalized};
use common::{Ipvs, NODE_IP};
use kproxy_objects::edits::{NODE, apply_edit, edit};

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

fn tracker() -> ServiceChangeTracker {
    let node = NodeInfo {
        name: NODE.into(),
        zone: None,
        pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        addresses: vec![NODE_IP.parse().unwrap()],
    };
    ServiceChangeTracker::new(node, ConversionOptions::default())
}

/// A namespace with the node's address on a dummy `eth0`, and the dataplane for it.
fn node(role: &str) -> (NetNs, Box<dyn Dataplane>) {
    let ns = NetNs::new(role).expect("a namespace");
    ns.ip(&["link", "add", "eth0", "type", "dummy"]).unwrap();
    ns.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"])
        .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    let dataplane = Ipvs { scheduler: "rr" }
        .build(&config(), ns.name())
        .expect("the dataplane");
    (ns, dataplane)
}

/// Everything the namespace holds, normalized.
async fn snapshot(ns: &NetNs) -> String {
    let mut kernel = NetlinkIpvs::in_netns(ns.name());
    let mut iptables = IptablesCommand::in_netns(Variant::Legacy, ns.name());
    let mut listing = BTreeMap::new();
    for server in kernel.virtual_servers().await.unwrap() {
        let reals = kernel
            .real_servers(&server.key)
            .await
            .unwrap()
            .into_iter()
            .map(|status| status.server)
            .collect();
        listing.insert(server.key, (server, reals));
    }
    let mut tables = Vec::new();
    for table in [Table::Mangle, Table::Nat, Table::Filter] {
        tables.push(iptables.save(IpFamily::V4, table).await.unwrap());
    }
    normalized(&Holdings {
        listing,
        link: kernel
            .link_addresses(DUMMY_LINK)
            .await
            .unwrap()
            .map(|addrs| addrs.into_iter().collect()),
        sets: kernel
            .list_sets()
            .await
            .unwrap()
            .into_iter()
            .map(|(name, members)| (name, members.into_iter().collect::<BTreeSet<_>>()))
            .collect(),
        tables: tables.try_into().unwrap(),
    })
}

async fn full_of(state: &ProxyState) -> String {
    let (ns, mut dataplane) = node("ipvs-full");
    dataplane.full_sync(state).await.unwrap();
    snapshot(&ns).await
}

/// Invariant 3 with the real kernel: a fixed number of random histories (each full sync in
/// the guest costs about a second).
async fn incremental_equals_full() {
    let mut runner = TestRunner::new(Config {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let histories = proptest::collection::vec(proptest::collection::vec(edit(), 1..4), 2..5);
    for case in 0..5 {
        let steps = histories.new_tree(&mut runner).unwrap().current();
        let mut tracker = tracker();
        let (ns, mut dataplane) = node("ipvs-inc");
        dataplane.full_sync(&tracker.state()).await.unwrap();
        for (i, edits) in steps.iter().enumerate() {
            for edit in edits {
                apply_edit(&mut tracker, edit);
            }
            let changes: ChangeSet = tracker.drain();
            dataplane.sync(&tracker.state(), &changes).await.unwrap();
            let incremental = snapshot(&ns).await;
            let full = full_of(&tracker.state()).await;
            assert_eq!(incremental, full, "case {case}, step {i}: {edits:?}");
        }
        println!("incremental = full: case {case}, {} steps", steps.len());
    }
}

fn web(tracker: &mut ServiceChangeTracker, name: &str, cluster_ip: &str, endpoints: &[&str]) {
    tracker.upsert_service(
        &objects::service("ns", name)
            .cluster_ip(cluster_ip)
            .port("http", 80, "TCP")
            .build(),
    );
    let slice = endpoints.iter().fold(
        objects::slice("ns", name, &format!("{name}-1")).port("http", 80, "TCP"),
        |slice, addr| slice.endpoint(objects::endpoint(addr).node("other")),
    );
    tracker.upsert_endpoint_slice(&slice.build());
}

/// A request refused in the middle of a partial sync: the ones before it are undone.
async fn a_refused_request_keeps_the_previous_state() {
    let mut tracker = tracker();
    web(&mut tracker, "a", "172.30.0.10", &["10.180.0.1"]);
    tracker.drain();
    let (ns, mut dataplane) = node("ipvs-refuse");
    dataplane.full_sync(&tracker.state()).await.unwrap();
    // Another agent's virtual server where the next Service's cluster IP will be.
    let mut kernel = NetlinkIpvs::in_netns(ns.name());
    let obstacle = VirtualServer {
        key: ServiceKey::Address {
            protocol: Protocol::Tcp,
            addr: "172.30.0.99".parse().unwrap(),
            port: 80,
        },
        scheduler: "wlc".into(),
        flags: 0,
        timeout: 0,
    };
    kernel
        .apply(&[IpvsOp::AddService(obstacle.clone())])
        .await
        .unwrap();
    let before = snapshot(&ns).await;
    // One sync: a's real servers change (applied first, key order), then b's virtual server
    // is refused.
    web(
        &mut tracker,
        "a",
        "172.30.0.10",
        &["10.180.0.1", "10.180.0.2"],
    );
    web(&mut tracker, "b", "172.30.0.99", &["10.180.0.3"]);
    let changes = tracker.drain();
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .unwrap_err()
        .to_string();
    println!("refused: {error}");
    assert!(
        error.contains("add virtual server TCP 172.30.0.99:80") && error.contains("exists"),
        "the error names the object and the kernel's reason: {error}"
    );
    assert_eq!(snapshot(&ns).await, before, "the previous state stays");
    kernel
        .apply(&[IpvsOp::DeleteService(obstacle.key)])
        .await
        .unwrap();
    dataplane
        .sync(&tracker.state(), &ChangeSet::default())
        .await
        .unwrap();
    assert_eq!(snapshot(&ns).await, full_of(&tracker.state()).await);
}

/// `cleanup()` removes this mode's rules, virtual servers, sets and link, and nothing else.
async fn cleanup_removes_only_its_own() {
    let mut tracker = tracker();
    web(&mut tracker, "a", "172.30.0.10", &["10.180.0.1"]);
    tracker.drain();
    let (ns, mut dataplane) = node("ipvs-cleanup");
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let mut kernel = NetlinkIpvs::in_netns(ns.name());
    let foreign = VirtualServer {
        key: ServiceKey::Address {
            protocol: Protocol::Tcp,
            addr: "10.99.0.1".parse().unwrap(),
            port: 443,
        },
        scheduler: "wlc".into(),
        flags: 0,
        timeout: 0,
    };
    kernel
        .apply(&[IpvsOp::AddService(foreign.clone())])
        .await
        .unwrap();
    dataplane.cleanup().await.unwrap();
    let left: Vec<ServiceKey> = kernel
        .virtual_servers()
        .await
        .unwrap()
        .into_iter()
        .map(|server| server.key)
        .collect();
    assert_eq!(left, [foreign.key], "another agent's virtual server stays");
    assert_eq!(kernel.link_addresses(DUMMY_LINK).await.unwrap(), None);
    assert!(kernel.list_sets().await.unwrap().is_empty());
    let mut iptables = IptablesCommand::in_netns(Variant::Legacy, ns.name());
    for table in [Table::Nat, Table::Mangle, Table::Filter] {
        let saved = iptables.save(IpFamily::V4, table).await.unwrap();
        assert!(!saved.contains("KUBE-"), "{saved}");
    }
    println!("cleanup left only the foreign virtual server");
}

/// Live connections to one Service survive syncs that change it and others.
async fn connections_survive_churn() {
    const VIP: &str = "172.30.0.10";
    let endpoints = ["10.180.0.1", "10.180.0.2", "10.180.0.3"];
    let client = "10.0.0.21".parse().unwrap();
    let world = common::one_node_world(&endpoints, &["10.0.0.21"], VIP).await;
    let mut dataplane = Ipvs { scheduler: "rr" }
        .build(&config(), world.node_netns())
        .unwrap();
    let mut tracker = tracker();
    web(&mut tracker, "a", VIP, &endpoints[..2]);
    tracker.drain();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let probe = Probe::tcp(client, VIP.parse().unwrap(), 80);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (_, stream) = probe::open_stream(&world, &probe, Duration::from_secs(2))
            .await
            .expect("a connection");
        streams.push(stream);
    }
    for round in 0..12 {
        let others = format!("172.30.1.{round}");
        web(
            &mut tracker,
            &format!("other{round}"),
            &others,
            &["10.180.9.9"],
        );
        if round % 3 == 0 {
            tracker.delete_service("ns", &format!("other{}", round.max(1) - 1));
        }
        let set: &[&str] = if round % 2 == 0 {
            &endpoints
        } else {
            &endpoints[..2]
        };
        web(&mut tracker, "a", VIP, set);
        let changes = tracker.drain();
        dataplane.sync(&tracker.state(), &changes).await.unwrap();
        for (i, stream) in streams.iter_mut().enumerate() {
            probe::echo(
                stream,
                format!("round {round}").as_bytes(),
                Duration::from_secs(2),
            )
            .await
            .unwrap_or_else(|e| panic!("connection {i} broke in round {round}: {e}"));
        }
        let (_, fresh) = probe::open_stream(&world, &probe, Duration::from_secs(2))
            .await
            .unwrap_or_else(|o| panic!("a new connection in round {round}: {o:?}"));
        drop(fresh);
    }
    println!("4 connections survived 12 syncs of churn");
}

#[test]
fn syncs_against_the_real_kernel_in_the_guest() {
    kproxy_guest::run_test_in_guest("guest_syncs", Duration::from_secs(400));
}

#[test]
#[ignore = "runs inside the UML guest (see syncs_against_the_real_kernel_in_the_guest)"]
fn guest_syncs() {
    kproxy_guest::require_inside();
    common::runtime().block_on(async {
        a_refused_request_keeps_the_previous_state().await;
        cleanup_removes_only_its_own().await;
        connections_survive_churn().await;
        incremental_equals_full().await;
    });
}
