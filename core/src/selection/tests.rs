use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::model::{Protocol, ServicePortName};

/// Test node `node-a` in `zone-a`; pods 10.0.0.0/8; the service at 172.30.0.1.
fn node() -> NodeInfo {
    NodeInfo {
        zone: Some("zone-a".into()),
        ..NodeInfo::named("node-a")
    }
}

fn port() -> ServicePort {
    ServicePort::cluster_ip(
        ServicePortName::new("ns", "svc", "", Protocol::Tcp),
        "172.30.0.1".parse().unwrap(),
        80,
    )
}

fn ep(last: u8, ready: bool, serving: bool, terminating: bool, node: &str) -> Endpoint {
    Endpoint {
        ready,
        serving,
        terminating,
        node_name: Some(Arc::from(node)),
        ..Endpoint::ready(format!("10.0.0.{last}").parse().unwrap(), 80)
    }
}

fn with_zone_hint(mut e: Endpoint, zone: &str) -> Endpoint {
    e.zone_hints = BTreeSet::from([Arc::from(zone)]);
    e
}

fn lasts(endpoints: &[&Endpoint]) -> Vec<String> {
    endpoints.iter().map(|e| e.address.to_string()).collect()
}

#[test]
fn cluster_policy_uses_ready_endpoints_only() {
    let endpoints = [
        ep(1, true, true, false, "node-a"),
        ep(2, false, true, true, "node-b"),
    ];
    let selected = select_endpoints(&port(), &endpoints, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);
    assert_eq!(selected.all_reachable, selected.cluster);
    assert!(selected.local.is_empty());
    assert!(selected.has_any_endpoints);
}

#[test]
fn cluster_policy_falls_back_to_serving_terminating() {
    let endpoints = [
        ep(1, false, true, true, "node-b"),
        ep(2, false, false, true, "node-b"),
        ep(3, false, false, false, "node-a"),
    ];
    let selected = select_endpoints(&port(), &endpoints, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);
}

#[test]
fn nothing_serving_means_no_endpoints() {
    let endpoints = [ep(1, false, false, true, "node-a")];
    let selected = select_endpoints(&port(), &endpoints, &node(), None);
    assert!(selected.all_reachable.is_empty());
    assert!(!selected.has_any_endpoints);
}

#[test]
fn internal_local_policy_uses_local_endpoints_with_their_own_fallback() {
    let mut port = port();
    port.internal_policy_local = true;
    let endpoints = [
        ep(1, true, true, false, "node-b"),
        ep(2, false, true, true, "node-a"),
        ep(3, false, false, true, "node-a"),
    ];
    let selected = select_endpoints(&port, &endpoints, &node(), None);
    assert!(selected.cluster.is_empty());
    assert_eq!(lasts(&selected.local), ["10.0.0.2"]);
    assert_eq!(selected.all_reachable, selected.local);
    assert!(selected.has_any_endpoints);
}

#[test]
fn external_local_policy_keeps_cluster_endpoints_for_short_circuit() {
    let mut port = port();
    port.node_port = Some(30080);
    port.external_policy_local = true;
    let endpoints = [
        ep(1, true, true, false, "node-b"),
        ep(2, false, true, true, "node-a"),
    ];
    let selected = select_endpoints(&port, &endpoints, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);
    assert_eq!(lasts(&selected.local), ["10.0.0.2"]);
    assert_eq!(lasts(&selected.all_reachable), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn zone_hints_narrow_only_when_every_ready_endpoint_has_one() {
    let hinted = [
        with_zone_hint(ep(1, true, true, false, "node-b"), "zone-a"),
        with_zone_hint(ep(2, true, true, false, "node-c"), "zone-b"),
    ];
    let selected = select_endpoints(&port(), &hinted, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);

    let partly = [hinted[0].clone(), ep(2, true, true, false, "node-c")];
    let selected = select_endpoints(&port(), &partly, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1", "10.0.0.2"]);

    let elsewhere = [with_zone_hint(ep(1, true, true, false, "node-b"), "zone-b")];
    let selected = select_endpoints(&port(), &elsewhere, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);
}

#[test]
fn node_hints_take_precedence_over_zone_hints() {
    let mut mine = with_zone_hint(ep(1, true, true, false, "node-a"), "zone-a");
    mine.node_hints = BTreeSet::from([Arc::from("node-a")]);
    let mut other = with_zone_hint(ep(2, true, true, false, "node-b"), "zone-a");
    other.node_hints = BTreeSet::from([Arc::from("node-b")]);
    let endpoints = [mine, other];
    let selected = select_endpoints(&port(), &endpoints, &node(), None);
    assert_eq!(lasts(&selected.cluster), ["10.0.0.1"]);
}

#[test]
fn family_filter_keeps_one_family() {
    let mut v6 = ep(1, true, true, false, "node-a");
    v6.address = "fd00::1".parse().unwrap();
    let endpoints = [v6, ep(2, true, true, false, "node-a")];
    let selected = select_endpoints(&port(), &endpoints, &node(), Some(IpFamily::V4));
    assert_eq!(lasts(&selected.cluster), ["10.0.0.2"]);
}
