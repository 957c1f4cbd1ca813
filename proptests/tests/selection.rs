//! Properties of endpoint selection: never a non-serving endpoint; fallback to terminating
//! endpoints only when nothing is ready; the local set is this node's; topology narrows only
//! with complete hints; the reachable set is the union of the two.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use kproxy_core::{Endpoint, NodeInfo, Protocol, ServicePort, ServicePortName, select_endpoints};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use kproxy_proptests::config;

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = BTreeSet<Arc<str>>> {
    btree_set(select(pool).prop_map(Arc::from), 0..=2)
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        1u8..=6,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        option::of(select(&["node-a", "node-b"][..])),
        prop_oneof![2 => Just(BTreeSet::new()), 3 => names(&["zone-a", "zone-b"])],
        prop_oneof![3 => Just(BTreeSet::new()), 1 => names(&["node-a", "node-b"])],
    )
        .prop_map(
            |(last, ready, serving, terminating, node, zone_hints, node_hints)| Endpoint {
                ready,
                serving,
                terminating,
                node_name: node.map(Arc::from),
                zone_hints,
                node_hints,
                ..Endpoint::ready(IpAddr::from([10, 0, 0, last]), 80)
            },
        )
}

fn endpoints() -> impl Strategy<Value = Vec<Endpoint>> {
    vec(endpoint(), 0..8).prop_map(|mut endpoints| {
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        endpoints
    })
}

fn service_port() -> impl Strategy<Value = ServicePort> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(node_port, external_local, internal_local)| {
            let mut port = ServicePort::cluster_ip(
                ServicePortName::new("ns", "svc", "", Protocol::Tcp),
                IpAddr::from([172, 30, 0, 1]),
                80,
            );
            port.node_port = node_port.then_some(30080);
            port.external_policy_local = external_local && node_port;
            port.internal_policy_local = internal_local;
            port
        },
    )
}

fn node() -> impl Strategy<Value = NodeInfo> {
    option::of(select(&["zone-a", "zone-b"][..])).prop_map(|zone| NodeInfo {
        zone: zone.map(String::from),
        ..NodeInfo::named("node-a")
    })
}

fn is_ready(e: &Endpoint) -> bool {
    e.ready && e.serving
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn selection_invariants_hold(port in service_port(), endpoints in endpoints(), node in node()) {
        let selected = select_endpoints(&port, &endpoints, &node, None);
        let any_ready = endpoints.iter().any(is_ready);

        for e in selected.cluster.iter().chain(&selected.local).chain(&selected.all_reachable) {
            prop_assert!(e.serving, "selected a non-serving endpoint {e}");
        }
        if selected.cluster.iter().any(|e| !is_ready(e)) {
            prop_assert!(!any_ready, "fell back to terminating endpoints while {} were ready", endpoints.len());
        }
        if !selected.cluster.is_empty() && any_ready {
            prop_assert!(selected.cluster.iter().all(|e| is_ready(e)));
        }
        let local_ready = endpoints.iter().any(|e| is_ready(e) && e.is_local_to("node-a"));
        for e in &selected.local {
            prop_assert!(e.is_local_to("node-a"), "{e} in the local set is not on this node");
            if local_ready {
                prop_assert!(is_ready(e), "local fallback used while a local endpoint was ready");
            }
        }
        if port.uses_cluster_endpoints() {
            let ready: Vec<&Endpoint> = endpoints.iter().filter(|e| is_ready(e)).collect();
            if any_ready && selected.cluster.len() < ready.len() {
                let all_zone = ready.iter().all(|e| !e.zone_hints.is_empty());
                let all_node = ready.iter().all(|e| !e.node_hints.is_empty());
                prop_assert!(all_zone || all_node, "topology narrowed with incomplete hints");
            }
            prop_assert!(!any_ready || !selected.cluster.is_empty(), "ready endpoints exist but none selected");
        } else {
            prop_assert!(selected.cluster.is_empty());
        }
        if !port.uses_local_endpoints() {
            prop_assert!(selected.local.is_empty());
        }
        let union: BTreeSet<IpAddr> =
            selected.cluster.iter().chain(&selected.local).map(|e| e.address).collect();
        let reachable: BTreeSet<IpAddr> = selected.all_reachable.iter().map(|e| e.address).collect();
        prop_assert_eq!(reachable, union);
        let usable = endpoints.iter().any(|e| is_ready(e) || (e.serving && e.terminating));
        prop_assert_eq!(selected.has_any_endpoints, usable);
    }
}
