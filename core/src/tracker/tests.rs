use super::*;
use crate::model::Protocol;
use crate::test_objects::{ready, service, slice};

fn tracker() -> ServiceChangeTracker {
    ServiceChangeTracker::new(NodeInfo::named("node-a"), ConversionOptions::default())
}

fn key(name: &str, port: &str) -> ServicePortName {
    ServicePortName::new("ns", name, port, Protocol::Tcp)
}

fn addresses(change: &Change) -> Vec<String> {
    change.current.as_ref().map_or_else(Vec::new, |state| {
        state.endpoints.iter().map(ToString::to_string).collect()
    })
}

#[test]
fn new_service_with_endpoints_is_one_change() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    let changes = t.drain();
    assert_eq!(changes.len(), 1);
    let change = changes.get(&key("web", "http")).unwrap();
    assert!(change.previous.is_none());
    assert_eq!(addresses(change), ["10.0.0.1:8080"]);
    assert_eq!(t.state().len(), 1);
}

#[test]
fn add_then_delete_nets_to_nothing() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.delete_service("ns", "web");
    assert!(t.drain().is_empty());
}

#[test]
fn a_to_b_to_a_nets_to_nothing() {
    let mut t = tracker();
    let a = slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    );
    let b = slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.2")],
    );
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.upsert_endpoint_slice(&a);
    t.drain();
    t.upsert_endpoint_slice(&b);
    t.upsert_endpoint_slice(&a);
    assert!(t.drain().is_empty());
}

#[test]
fn endpoint_moved_between_slices_of_one_service_is_no_change() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    t.upsert_endpoint_slice(&slice("ns", "web-2", "web", &[("http", 8080)], &[]));
    t.drain();
    t.upsert_endpoint_slice(&slice("ns", "web-1", "web", &[("http", 8080)], &[]));
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-2",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    assert!(t.drain().is_empty());
}

#[test]
fn address_in_two_slices_counts_once_preferring_the_local_copy() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    let remote = ("10.0.0.1", true, true, false, Some("node-b"));
    let local = ("10.0.0.1", true, true, false, Some("node-a"));
    t.upsert_endpoint_slice(&slice("ns", "web-1", "web", &[("http", 8080)], &[remote]));
    t.upsert_endpoint_slice(&slice("ns", "web-2", "web", &[("http", 8080)], &[local]));
    let changes = t.drain();
    let state = changes
        .get(&key("web", "http"))
        .unwrap()
        .current
        .clone()
        .unwrap();
    assert_eq!(state.endpoints.len(), 1);
    assert!(state.endpoints[0].is_local_to("node-a"));
}

#[test]
fn only_the_changed_port_is_reported() {
    let mut t = tracker();
    t.upsert_service(&service(
        "ns",
        "web",
        "172.30.0.1",
        &[("http", 80), ("https", 443)],
    ));
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080), ("https", 8443)],
        &[ready("10.0.0.1")],
    ));
    assert_eq!(t.drain().len(), 2);
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080), ("https", 9443)],
        &[ready("10.0.0.1")],
    ));
    let changes = t.drain();
    let keys: Vec<_> = changes.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [key("web", "https")]);
    assert!(changes.get(&key("web", "https")).unwrap().endpoints_only());
}

#[test]
fn endpoints_without_a_service_are_not_state() {
    let mut t = tracker();
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    assert!(t.drain().is_empty());
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    let changes = t.drain();
    assert_eq!(
        addresses(changes.get(&key("web", "http")).unwrap()),
        ["10.0.0.1:8080"]
    );
}

#[test]
fn slice_relabelled_to_another_service_moves_its_endpoints() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.upsert_service(&service("ns", "api", "172.30.0.2", &[("http", 80)]));
    t.upsert_endpoint_slice(&slice(
        "ns",
        "s-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    t.drain();
    t.upsert_endpoint_slice(&slice(
        "ns",
        "s-1",
        "api",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    let changes = t.drain();
    assert_eq!(
        addresses(changes.get(&key("web", "http")).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        addresses(changes.get(&key("api", "http")).unwrap()),
        ["10.0.0.1:8080"]
    );
}

#[test]
fn deleting_a_service_reports_its_ports_gone() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    t.drain();
    t.delete_service("ns", "web");
    let changes = t.drain();
    let change = changes.get(&key("web", "http")).unwrap();
    assert!(change.previous.is_some() && change.current.is_none());
    assert!(t.state().is_empty());
}

#[test]
fn malformed_slice_does_not_disturb_others() {
    let mut t = tracker();
    t.upsert_service(&service("ns", "web", "172.30.0.1", &[("http", 80)]));
    let mut bad = slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    );
    bad.endpoints[0].addresses = vec!["nonsense".into()];
    let errors = t.upsert_endpoint_slice(&bad);
    assert_eq!(errors.len(), 1);
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-2",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.2")],
    ));
    let changes = t.drain();
    assert_eq!(
        addresses(changes.get(&key("web", "http")).unwrap()),
        ["10.0.0.2:8080"]
    );
}

#[test]
fn node_change_is_reported_once() {
    let mut t = tracker();
    t.set_node(NodeInfo::named("node-a"));
    assert!(t.drain().is_empty());
    t.set_node(NodeInfo {
        zone: Some("zone-b".into()),
        ..NodeInfo::named("node-a")
    });
    let changes = t.drain();
    assert_eq!(
        changes.node().and_then(|n| n.zone.as_deref()),
        Some("zone-b")
    );
    assert_eq!(t.state().node().zone.as_deref(), Some("zone-b"));
    assert!(t.drain().is_empty());
}

#[test]
fn only_this_nodes_node_object_counts() {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mut t = tracker();
    let labelled = |name: &str| Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(
                    crate::convert::LABEL_TOPOLOGY_ZONE.to_string(),
                    "zone-z".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(t.upsert_node(&labelled("node-b")).is_empty());
    assert!(t.drain().node().is_none());
    t.upsert_node(&labelled("node-a"));
    assert_eq!(
        t.drain().node().and_then(|n| n.zone.as_deref()),
        Some("zone-z")
    );
}

/// A label-only change must reach embedders that key on labels, so it is a change; the kernel
/// backends then plan exactly what they had, and write nothing.
#[test]
fn a_label_only_change_is_reported_and_plans_the_same() {
    use crate::ProxyConfig;
    use crate::model::IpFamily;
    use crate::plan::{FamilyPlan, PortPlan};

    let mut t = tracker();
    let mut svc = service("ns", "web", "172.30.0.1", &[("http", 80)]);
    t.upsert_service(&svc);
    t.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 8080)],
        &[ready("10.0.0.1")],
    ));
    t.drain();
    let before = t.state();

    svc.metadata.labels = Some([("team".to_owned(), "blue".to_owned())].into());
    t.upsert_service(&svc);
    let changes = t.drain();
    let change = changes.get(&key("web", "http")).expect("a change");
    assert!(!change.endpoints_only());
    let (previous, current) = (
        change.previous.as_deref().unwrap(),
        change.current.as_deref().unwrap(),
    );
    assert_eq!(
        current.port.labels.get("team").map(String::as_str),
        Some("blue")
    );

    let config = ProxyConfig::default();
    let after = t.state();
    let old_family = FamilyPlan::new(IpFamily::V4, &config, &before);
    let new_family = FamilyPlan::new(IpFamily::V4, &config, &after);
    assert_eq!(
        PortPlan::new(&old_family, previous),
        PortPlan::new(&new_family, current)
    );

    // The same labels again: nothing to report.
    t.upsert_service(&svc);
    assert!(t.drain().is_empty());
}
