//! The example of the book's iptables chapters (`book/src/iptables-ruleset.md`,
//! `book/src/iptables-partial-syncs.md`), written by the code: the restore inputs of a full
//! sync of a small cluster and of three partial syncs are compared with golden files, which the
//! book includes, so its listings cannot drift from what the backend writes.
//!
//! `UPDATE_GOLDEN=1 cargo test -p kproxy-iptables --test example` rewrites the golden files;
//! read the diff before committing it, and check that the prose around the listings still fits.

use kproxy_core::{
    ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, NodeInfo, Protocol, ProxyConfig,
    ServiceChangeTracker, ServicePortName,
};
use kproxy_iptables::{FakeIptables, IptablesConfig, IptablesDataplane, names};
use kproxy_objects as objects;

/// The node the proxy runs on; the example's other node is `node-b`.
const NODE: &str = "node-a";

/// One IPv4 node, `clusterCIDR: 10.0.0.0/8`, and otherwise the defaults (node ports on every
/// local address and on localhost, masquerade bit 14, random balancing).
fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

fn tracker() -> ServiceChangeTracker {
    ServiceChangeTracker::new(NodeInfo::named(NODE), ConversionOptions::default())
}

/// The EndpointSlice of `service` (port `p80`, 80/TCP) with `endpoints` as (address, node).
fn slice(namespace: &str, service: &str, endpoints: &[(&str, &str)]) -> objects::SliceBuilder {
    endpoints.iter().fold(
        objects::slice(namespace, service, &format!("{service}-1")).port("p80", 80, "TCP"),
        |slice, (address, node)| slice.endpoint(objects::endpoint(address).node(node)),
    )
}

/// The book's cluster: `svc1` with an endpoint on each node, `svc2` the same with ClientIP
/// affinity, `svc3` without endpoints, and the NodePort `svc4` with one endpoint here.
fn book_cluster(tracker: &mut ServiceChangeTracker) {
    let services = [
        objects::service("ns1", "svc1")
            .cluster_ip("172.30.0.41")
            .port("p80", 80, "TCP"),
        objects::service("ns2", "svc2")
            .cluster_ip("172.30.0.42")
            .port("p80", 80, "TCP")
            .client_ip_affinity(None),
        objects::service("ns3", "svc3")
            .cluster_ip("172.30.0.43")
            .port("p80", 80, "TCP"),
        objects::service("ns4", "svc4")
            .type_("NodePort")
            .cluster_ip("172.30.0.44")
            .port("p80", 80, "TCP")
            .node_port(30004),
    ];
    for service in services {
        tracker.upsert_service(&service.build());
    }
    for slice in [
        slice(
            "ns1",
            "svc1",
            &[("10.180.0.1", NODE), ("10.180.1.1", "node-b")],
        ),
        slice(
            "ns2",
            "svc2",
            &[("10.180.0.2", NODE), ("10.180.1.2", "node-b")],
        ),
        slice("ns4", "svc4", &[("10.180.0.4", NODE)]),
    ] {
        tracker.upsert_endpoint_slice(&slice.build());
    }
}

/// Compares `actual` with `tests/golden/NAME`, or writes it there with `UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    kproxy_rig::golden::assert_golden(
        &path,
        actual,
        "restore input",
        " (the book includes it: check the book's prose too)",
    );
}

/// The book cluster, synced once in full into an empty kernel.
async fn synced() -> (ServiceChangeTracker, IptablesDataplane, FakeIptables) {
    let mut tracker = tracker();
    book_cluster(&mut tracker);
    tracker.drain();
    let fake = FakeIptables::new();
    let mut dataplane =
        IptablesDataplane::new(config(), IptablesConfig::default(), Box::new(fake.clone()));
    dataplane.full_sync(&tracker.state()).await.unwrap();
    (tracker, dataplane, fake)
}

#[tokio::test]
async fn the_books_full_sync_matches_its_golden_input() {
    let (_, _, fake) = synced().await;
    let input = &fake.inputs()[0];
    golden("book-example.txt", input);
    // The affinity section shows svc2's policy chain by itself.
    let svc2 = names::cluster_chain(&ServicePortName::new("ns2", "svc2", "p80", Protocol::Tcp));
    let chain: String = input
        .lines()
        .filter(|line| line.starts_with(&format!("-A {svc2} ")))
        .map(|line| format!("{line}\n"))
        .collect();
    golden("book-affinity.txt", &chain);
    // No chain per endpoint: the restore input declares none.
    assert!(!input.contains(":KUBE-SEP-"), "{input}");
}

/// Drains the tracker into one partial sync and returns its restore input.
async fn partial(
    tracker: &mut ServiceChangeTracker,
    dataplane: &mut IptablesDataplane,
    fake: &FakeIptables,
) -> String {
    let changes = tracker.drain();
    let before = fake.inputs().len();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    let inputs = fake.inputs();
    assert_eq!(inputs.len(), before + 1, "one restore per partial sync");
    inputs[before].clone()
}

#[tokio::test]
async fn the_books_partial_syncs_match_their_golden_inputs() {
    let (mut tracker, mut dataplane, fake) = synced().await;
    // A third endpoint, on this node, joins svc1.
    tracker.upsert_endpoint_slice(
        &slice(
            "ns1",
            "svc1",
            &[
                ("10.180.0.1", NODE),
                ("10.180.0.9", NODE),
                ("10.180.1.1", "node-b"),
            ],
        )
        .build(),
    );
    let input = partial(&mut tracker, &mut dataplane, &fake).await;
    golden("book-partial-endpoint-added.txt", &input);
    // Then svc4 is deleted, then svc3.
    tracker.delete_service("ns4", "svc4");
    let input = partial(&mut tracker, &mut dataplane, &fake).await;
    golden("book-partial-svc4-deleted.txt", &input);
    tracker.delete_service("ns3", "svc3");
    let input = partial(&mut tracker, &mut dataplane, &fake).await;
    golden("book-partial-svc3-deleted.txt", &input);
}
