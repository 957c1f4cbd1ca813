//! The IPVS backend against in-memory kernels (IPVS and iptables): what a cluster becomes,
//! incremental syncs equal to full ones under random changes, graceful termination, refused
//! requests undone, drift noticed, cleanup that leaves others' virtual servers alone.

use std::collections::BTreeSet;

use kproxy_core::{
    ChangeSet, ConversionOptions, Dataplane, Integrity, IpFamily, LocalTrafficDetector, NodeInfo,
    Protocol, ProxyConfig, ProxyState, ServiceChangeTracker,
};
use kproxy_iptables::{FakeIptables, Table};
use kproxy_ipvs::model::{FLAG_PERSISTENT, ServiceKey, VirtualServer};
use kproxy_ipvs::{DUMMY_LINK, FakeIpvs, IpvsConfig, IpvsDataplane, Scheduler};
use kproxy_objects as objects;
use proptest::prelude::*;

mod common;
use common::{ip, real, tcp};
use kproxy_objects::edits::{apply_edit, edit};

use kproxy_objects::edits::NODE;
const NODE_IP: &str = "192.168.0.2";

fn node() -> NodeInfo {
    NodeInfo {
        name: NODE.into(),
        zone: None,
        pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        addresses: vec![NODE_IP.parse().unwrap()],
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

struct Kernel {
    ipvs: FakeIpvs,
    iptables: FakeIptables,
}

fn dataplane() -> (IpvsDataplane, Kernel) {
    let ipvs = FakeIpvs::with_addresses(&[("eth0", NODE_IP.parse().unwrap())]);
    let iptables = FakeIptables::new();
    let dataplane = IpvsDataplane::new(
        config(),
        IpvsConfig::default(),
        Box::new(ipvs.clone()),
        Box::new(iptables.clone()),
    )
    .unwrap();
    (dataplane, Kernel { ipvs, iptables })
}

fn tracker() -> ServiceChangeTracker {
    ServiceChangeTracker::new(node(), ConversionOptions::default())
}

/// Everything the kernels hold, normalized (see [`common::snapshot::normalized`]).
fn snapshot(kernel: &Kernel) -> String {
    common::snapshot::normalized(&common::snapshot::Holdings {
        listing: kernel.ipvs.listing(),
        link: kernel.ipvs.link(DUMMY_LINK),
        sets: kernel.ipvs.sets(),
        tables: [Table::Mangle, Table::Nat, Table::Filter]
            .map(|table| kernel.iptables.saved(IpFamily::V4, table)),
    })
}

async fn full_of(state: &ProxyState) -> String {
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(state).await.unwrap();
    snapshot(&kernel)
}

/// A cluster with each kind of service port.
fn cluster(tracker: &mut ServiceChangeTracker) {
    let services = [
        objects::service("ns1", "svc1")
            .cluster_ip("172.30.0.41")
            .port("p80", 80, "TCP")
            .client_ip_affinity(Some(300))
            .build(),
        objects::service("ns2", "svc2")
            .type_("LoadBalancer")
            .cluster_ip("172.30.0.42")
            .port("p80", 80, "TCP")
            .node_port(3001)
            .load_balancer_ip("1.2.3.4")
            .external_policy_local()
            .health_check_node_port(30000)
            .source_range("203.0.113.0/25")
            .build(),
        objects::service("ns3", "svc3")
            .cluster_ip("172.30.0.43")
            .port("p53", 53, "UDP")
            .build(),
    ];
    for service in &services {
        tracker.upsert_service(service);
    }
    let slice = |ns: &str, svc: &str, port: (&str, i32, &str), eps: &[(&str, &str)]| {
        eps.iter()
            .fold(
                objects::slice(ns, svc, &format!("{svc}-1")).port(port.0, port.1, port.2),
                |slice, (addr, node)| slice.endpoint(objects::endpoint(addr).node(node)),
            )
            .build()
    };
    tracker.upsert_endpoint_slice(&slice(
        "ns1",
        "svc1",
        ("p80", 80, "TCP"),
        &[("10.180.0.1", NODE), ("10.180.0.2", "other")],
    ));
    tracker.upsert_endpoint_slice(&slice(
        "ns2",
        "svc2",
        ("p80", 80, "TCP"),
        &[("10.180.0.3", "other"), ("10.180.0.4", "other")],
    ));
    tracker.upsert_endpoint_slice(&slice(
        "ns3",
        "svc3",
        ("p53", 53, "UDP"),
        &[("10.180.0.5", NODE)],
    ));
}

#[tokio::test]
async fn a_cluster_becomes_virtual_servers_sets_and_addresses() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let listing = kernel.ipvs.listing();

    // ClusterIP with affinity: persistence, both endpoints.
    let (vs, reals) = &listing[&tcp("172.30.0.41", 80)];
    assert_eq!(vs.scheduler, "rr");
    assert_eq!(vs.flags, FLAG_PERSISTENT);
    assert_eq!(vs.timeout, 300);
    assert_eq!(
        *reals,
        BTreeSet::from([real("10.180.0.1", 80, 1), real("10.180.0.2", 80, 1)])
    );
    // eTP=Local without local endpoints: the cluster IP serves everyone, the LB IP and
    // node port have no virtual server (dropped), the short-circuit marks take local
    // traffic to every endpoint.
    assert!(listing.contains_key(&tcp("172.30.0.42", 80)));
    assert!(!listing.contains_key(&tcp("1.2.3.4", 80)));
    assert!(!listing.contains_key(&tcp(NODE_IP, 3001)));
    let marks: Vec<&ServiceKey> = listing
        .keys()
        .filter(|key| matches!(key, ServiceKey::Fwmark { .. }))
        .collect();
    assert_eq!(
        marks,
        [
            &ServiceKey::Fwmark {
                family: IpFamily::V4,
                mark: 0x10000
            },
            &ServiceKey::Fwmark {
                family: IpFamily::V4,
                mark: 0x14000
            }
        ]
    );
    for mark in marks {
        assert_eq!(listing[mark].1.len(), 2, "{mark}: every endpoint");
    }
    assert!(listing.contains_key(&ServiceKey::Address {
        protocol: Protocol::Udp,
        addr: ip("172.30.0.43"),
        port: 53
    }));

    let sets = kernel.ipvs.sets();
    assert!(sets["KUBE-CLUSTER-IP"].contains("172.30.0.42,tcp:80"));
    assert!(sets["KUBE-LOAD-BALANCER-LOCAL"].contains("1.2.3.4,tcp:80"));
    assert!(sets["KUBE-NO-LOCAL-ENDPOINTS"].contains("1.2.3.4,tcp:80"));
    assert!(sets["KUBE-NO-LOCAL-ENDPOINTS"].contains(&format!("{NODE_IP},tcp:3001")));
    assert!(sets["KUBE-LOAD-BALANCER-FW"].contains("1.2.3.4,tcp:80"));
    assert!(sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].contains("1.2.3.4,tcp:80,203.0.113.0/25"));
    assert!(sets["KUBE-NODE-PORT-LOCAL-TCP"].contains("3001"));
    assert!(sets["KUBE-HEALTH-CHECK-NODE-PORT"].contains("30000"));
    assert_eq!(
        sets["KUBE-LOOP-BACK"],
        BTreeSet::from([
            "10.180.0.1,tcp:80,10.180.0.1".to_owned(),
            "10.180.0.5,udp:53,10.180.0.5".to_owned()
        ])
    );
    let bound = kernel.ipvs.link(DUMMY_LINK).unwrap();
    for addr in ["172.30.0.41", "172.30.0.42", "172.30.0.43", "1.2.3.4"] {
        assert!(bound.contains(&ip(addr)), "{addr} on {DUMMY_LINK}");
    }
    assert_eq!(kernel.ipvs.sysctls()["net.ipv4.vs.conntrack"], "1");
    let mangle = kernel.iptables.saved(IpFamily::V4, Table::Mangle);
    assert!(
        mangle.contains("-s 10.0.0.0/8 -d 1.2.3.4 -p tcp"),
        "{mangle}"
    );
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
}

/// The book's example (`book/src/ipvs-mode.md` includes the file): what the first full sync
/// of [`cluster`] writes with iptables-restore, and the virtual servers it makes.
#[tokio::test]
async fn the_book_example_is_what_a_full_sync_writes() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let inputs = kernel.iptables.inputs();
    let mut text = inputs.last().expect("one restore").clone();
    text.push_str("\n# virtual servers (scheduler, flags, persistence timeout) and real servers\n");
    for (key, (vs, reals)) in kernel.ipvs.listing() {
        text.push_str(&format!(
            "{key} {} flags {:#x} timeout {}\n",
            vs.scheduler, vs.flags, vs.timeout
        ));
        for real in reals {
            text.push_str(&format!("  -> {real} weight {}\n", real.weight));
        }
    }
    text.push_str("\n# ipset members\n");
    for (name, members) in kernel.ipvs.sets() {
        if !members.is_empty() {
            let members: Vec<String> = members.into_iter().collect();
            text.push_str(&format!("{name}: {}\n", members.join(" ")));
        }
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/book-example.txt");
    kproxy_rig::golden::assert_golden(
        &path,
        &text,
        "the book's IPVS example",
        "; the book includes the file",
    );
}

#[tokio::test]
async fn one_endpoint_change_is_one_request() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let before = kernel.ipvs.requests();
    tracker.upsert_endpoint_slice(
        &objects::slice("ns1", "svc1", "svc1-1")
            .port("p80", 80, "TCP")
            .endpoint(objects::endpoint("10.180.0.1").node(NODE))
            .endpoint(objects::endpoint("10.180.0.2").node("other"))
            .endpoint(objects::endpoint("10.180.0.9").node("other"))
            .build(),
    );
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    assert_eq!(kernel.ipvs.requests() - before, 1);
    let report = dataplane.last_sync();
    assert!(!report.full);
    assert_eq!(report.ipvs_requests, 1);
    assert_eq!(report.tool_runs, 0);
}

#[tokio::test]
async fn a_removed_tcp_endpoint_drains_then_goes_and_a_returning_one_is_restored() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let key = tcp("172.30.0.41", 80);
    kernel.ipvs.set_connections(&key, (ip("10.180.0.2"), 80), 3);
    let only_first = objects::slice("ns1", "svc1", "svc1-1")
        .port("p80", 80, "TCP")
        .endpoint(objects::endpoint("10.180.0.1").node(NODE))
        .build();
    tracker.upsert_endpoint_slice(&only_first);
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    assert!(
        kernel.ipvs.listing()[&key]
            .1
            .contains(&real("10.180.0.2", 80, 0))
    );

    // While it has connections it stays; a periodic check removes it once they ended.
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
    assert!(
        kernel.ipvs.listing()[&key]
            .1
            .contains(&real("10.180.0.2", 80, 0))
    );
    kernel.ipvs.set_connections(&key, (ip("10.180.0.2"), 80), 0);
    dataplane.verify().await.unwrap();
    assert_eq!(
        kernel.ipvs.listing()[&key].1,
        BTreeSet::from([real("10.180.0.1", 80, 1)])
    );

    // Removed and back before it drained: weight 1 again.
    kernel.ipvs.set_connections(&key, (ip("10.180.0.1"), 80), 1);
    tracker.upsert_endpoint_slice(
        &objects::slice("ns1", "svc1", "svc1-1")
            .port("p80", 80, "TCP")
            .endpoint(objects::endpoint("10.180.0.2").node("other"))
            .build(),
    );
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    assert!(
        kernel.ipvs.listing()[&key]
            .1
            .contains(&real("10.180.0.1", 80, 0))
    );
    tracker.upsert_endpoint_slice(&only_first);
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    assert!(
        kernel.ipvs.listing()[&key]
            .1
            .contains(&real("10.180.0.1", 80, 1))
    );

    // UDP real servers go at once.
    let udp = ServiceKey::Address {
        protocol: Protocol::Udp,
        addr: ip("172.30.0.43"),
        port: 53,
    };
    tracker.upsert_endpoint_slice(
        &objects::slice("ns3", "svc3", "svc3-1")
            .port("p53", 53, "UDP")
            .endpoint(objects::endpoint("10.180.0.6").node(NODE))
            .build(),
    );
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    assert_eq!(
        kernel.ipvs.listing()[&udp].1,
        BTreeSet::from([real("10.180.0.6", 53, 1)])
    );
}

#[tokio::test]
async fn a_refused_request_undoes_the_ones_before_it_and_forces_a_full_sync() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let before = snapshot(&kernel);
    tracker.upsert_service(
        &objects::service("ns9", "new")
            .cluster_ip("172.30.0.99")
            .port("p80", 80, "TCP")
            .build(),
    );
    tracker.upsert_endpoint_slice(
        &objects::slice("ns9", "new", "new-1")
            .port("p80", 80, "TCP")
            .endpoint(objects::endpoint("10.180.9.1"))
            .endpoint(objects::endpoint("10.180.9.2"))
            .build(),
    );
    let changes = tracker.drain();
    // the service and its first real server go in; the second is refused
    kernel.ipvs.refuse_request(2);
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("add real server 10.180.9.2:80 to TCP 172.30.0.99:80"),
        "{error}"
    );
    assert_eq!(snapshot(&kernel), before);
    // the next sync is full, whatever its change set
    dataplane
        .sync(&tracker.state(), &ChangeSet::default())
        .await
        .unwrap();
    assert!(dataplane.last_sync().full);
    assert_eq!(snapshot(&kernel), full_of(&tracker.state()).await);
}

#[tokio::test]
async fn drift_is_noticed_and_cleanup_spares_other_agents_servers() {
    let mut tracker = tracker();
    cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, kernel) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let foreign = VirtualServer {
        key: tcp("10.99.0.1", 443),
        scheduler: "wlc".into(),
        flags: 0,
        timeout: 0,
    };
    kernel.ipvs.add_foreign_service(foreign.clone());
    // a foreign server is no damage, and a full sync leaves it
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert!(kernel.ipvs.listing().contains_key(&foreign.key));

    kernel.ipvs.clear_services();
    assert!(matches!(
        dataplane.verify().await.unwrap(),
        Integrity::Damaged(_)
    ));
    dataplane.full_sync(&tracker.state()).await.unwrap();
    kernel
        .iptables
        .apply(IpFamily::V4, "*nat\n-F PREROUTING\nCOMMIT\n")
        .unwrap();
    assert!(matches!(
        dataplane.verify().await.unwrap(),
        Integrity::Damaged(what) if what.contains("PREROUTING")
    ));

    // A new node address: node ports must answer there too.
    dataplane.full_sync(&tracker.state()).await.unwrap();
    kernel
        .ipvs
        .set_addresses(&[("eth0", ip(NODE_IP)), ("eth1", ip("192.168.1.2"))]);
    assert!(matches!(
        dataplane.verify().await.unwrap(),
        Integrity::Damaged(what) if what.contains("addresses")
    ));
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
    assert!(kernel.ipvs.sets()["KUBE-NO-LOCAL-ENDPOINTS"].contains("192.168.1.2,tcp:3001"));

    kernel.ipvs.add_foreign_service(foreign.clone());
    dataplane.full_sync(&tracker.state()).await.unwrap();
    dataplane.cleanup().await.unwrap();
    let left: Vec<ServiceKey> = kernel.ipvs.listing().into_keys().collect();
    assert_eq!(left, [foreign.key]);
    assert_eq!(kernel.ipvs.link(DUMMY_LINK), None);
    assert!(kernel.ipvs.sets().is_empty(), "{:?}", kernel.ipvs.sets());
    for table in [Table::Nat, Table::Mangle, Table::Filter] {
        let saved = kernel.iptables.saved(IpFamily::V4, table);
        assert!(!saved.contains("KUBE-"), "{saved}");
    }
}

#[test]
fn an_unknown_scheduler_is_refused_by_name() {
    let error = Scheduler::parse("fastest").unwrap_err().to_string();
    assert!(
        error.contains("\"fastest\"") && error.contains("wrr"),
        "{error}"
    );
    assert_eq!(Scheduler::parse("").unwrap(), Scheduler::round_robin());
    assert_eq!(Scheduler::parse("mh").unwrap().flags(), 0x10);
}

proptest! {
    /// Invariant 3 of the design: after any sequence of changes, what incremental syncs
    /// programmed equals what one full sync of the final state programs.
    #[test]
    fn incremental_syncs_equal_a_full_sync(steps in proptest::collection::vec(
        proptest::collection::vec(edit(), 1..4), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut tracker = tracker();
            let (mut dataplane, kernel) = dataplane();
            dataplane.full_sync(&tracker.state()).await.unwrap();
            for edits in &steps {
                for edit in edits {
                    apply_edit(&mut tracker, edit);
                }
                let changes: ChangeSet = tracker.drain();
                dataplane.sync(&tracker.state(), &changes).await.unwrap();
                prop_assert!(!dataplane.last_sync().full);
                prop_assert_eq!(snapshot(&kernel), full_of(&tracker.state()).await);
            }
            Ok(())
        })?;
    }
}
