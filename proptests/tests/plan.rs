//! Invariants of the plan, over random service ports, endpoints, nodes and configurations:
//! - REJECT only when no endpoint anywhere serves, and then for every traffic class;
//! - a route leads to an endpoint set only when that set is not empty; a Local route only
//!   when local endpoints are used;
//! - DROP only under a Local policy (the cluster has endpoints, this node none);
//! - a firewall iff the port has load-balancer IPs of the family and source ranges;
//! - masquerade of external traffic iff the Cluster policy; the short-circuit iff the Local
//!   policy with endpoints somewhere;
//! - a hairpin candidate is local or of unknown node; no endpoint of another family is used.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kproxy_core::plan::{FamilyPlan, Firewall, Policy, PortPlan, Route};
use kproxy_core::{
    Balancing, Endpoint, IpFamily, LocalTrafficDetector, NodeInfo, Protocol, ProxyConfig,
    ProxyState, ServicePort, ServicePortName, ServicePortState, SessionAffinity,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use kproxy_proptests::config;

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        1u8..=6,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        option::of(select(&["node-a", "node-b"][..])),
    )
        .prop_map(|(last, v6, ready, serving, terminating, node)| {
            let address = if v6 {
                IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last)])
            } else {
                IpAddr::from([10, 0, 0, last])
            };
            Endpoint {
                ready,
                serving,
                terminating,
                node_name: node.map(Arc::from),
                ..Endpoint::ready(address, 80)
            }
        })
}

fn endpoints() -> impl Strategy<Value = Vec<Endpoint>> {
    vec(endpoint(), 0..8).prop_map(|mut endpoints| {
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        endpoints
    })
}

fn addresses(v4: [u8; 4], v6: u16) -> impl Strategy<Value = Vec<IpAddr>> {
    (any::<bool>(), any::<bool>()).prop_map(move |(four, six)| {
        let mut ips = Vec::new();
        if four {
            ips.push(IpAddr::from(v4));
        }
        if six {
            ips.push(IpAddr::from([0x2001, 0xdb8, v6, 0, 0, 0, 0, 1]));
        }
        ips
    })
}

fn service_port() -> impl Strategy<Value = ServicePort> {
    (
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        addresses([192, 168, 99, 1], 99),
        addresses([5, 6, 7, 8], 5),
        prop_oneof![
            Just(vec![]),
            Just(vec!["203.0.113.0/24".parse().unwrap()]),
            Just(vec!["192.168.0.0/16".parse().unwrap()]),
            Just(vec!["2001:db8::/32".parse().unwrap()]),
        ],
    )
        .prop_map(
            |((node_port, external_local, internal_local, affinity), external, lb, ranges)| {
                let mut port = ServicePort::cluster_ip(
                    ServicePortName::new("ns", "svc", "", Protocol::Tcp),
                    IpAddr::from([172, 30, 0, 1]),
                    80,
                );
                port.cluster_ips.push("fd00:30::1".parse().unwrap());
                port.node_port = node_port.then_some(30080);
                port.external_ips = external;
                port.load_balancer_ips = lb;
                port.load_balancer_source_ranges = ranges;
                port.external_policy_local = external_local && port.externally_accessible();
                port.internal_policy_local = internal_local;
                if affinity {
                    port.session_affinity = SessionAffinity::ClientIp {
                        timeout_seconds: 100,
                    };
                }
                port
            },
        )
}

fn proxy_config() -> impl Strategy<Value = ProxyConfig> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(LocalTrafficDetector::None),
            Just(LocalTrafficDetector::NodeCidr),
            Just(LocalTrafficDetector::ClusterCidr(vec![
                "10.0.0.0/8".parse().unwrap()
            ])),
            Just(LocalTrafficDetector::InterfaceNamePrefix("veth".into())),
        ],
    )
        .prop_map(
            |(masquerade_all, round_robin, local_detector)| ProxyConfig {
                masquerade_all,
                local_detector,
                balancing: if round_robin {
                    Balancing::RoundRobin
                } else {
                    Balancing::Random
                },
                ..ProxyConfig::default()
            },
        )
}

fn node() -> NodeInfo {
    NodeInfo {
        pod_cidrs: vec!["10.0.0.0/24".parse().unwrap()],
        addresses: vec!["192.168.0.2".parse().unwrap()],
        ..NodeInfo::named("node-a")
    }
}

fn usable(e: &Endpoint) -> bool {
    e.serving && (e.ready || e.terminating)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plan_invariants_hold(
        port in service_port(),
        endpoints in endpoints(),
        proxy in proxy_config(),
        v6 in any::<bool>(),
    ) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let state = ProxyState::from_parts(BTreeMap::new(), node());
        let family_plan = FamilyPlan::new(family, &proxy, &state);
        let port_state = ServicePortState { port: port.clone(), endpoints: endpoints.clone() };
        let plan = PortPlan::new(&family_plan, &port_state).expect("both families have a cluster IP");
        let any_usable = endpoints.iter().any(|e| e.family() == family && usable(e));

        let mut routes = vec![plan.internal];
        if let Some(external) = &plan.external {
            routes.push(external.route);
        }
        for route in &routes {
            prop_assert_eq!(*route == Route::Reject, !any_usable, "{:?}", route);
            if let Route::Endpoints(policy) = route {
                prop_assert!(!plan.endpoints(*policy).is_empty(), "{:?} leads to an empty set", policy);
                if *policy == Policy::Local {
                    prop_assert!(port.uses_local_endpoints());
                }
            }
        }
        if plan.internal == Route::Drop {
            prop_assert!(port.internal_policy_local);
        }
        if let Some(external) = &plan.external {
            if external.route == Route::Drop {
                prop_assert!(port.external_policy_local);
            }
            prop_assert_eq!(external.masquerade, !port.external_policy_local);
            prop_assert_eq!(external.short_circuit_local_traffic, port.external_policy_local && any_usable);
            prop_assert_eq!(external.has_chain(), any_usable);
        } else {
            prop_assert!(port.node_port.is_none());
        }
        let lb_of_family = port.load_balancer_ips.iter().any(|ip| IpFamily::of(ip) == family);
        prop_assert_eq!(
            plan.firewall.is_some(),
            lb_of_family && !port.load_balancer_source_ranges.is_empty()
        );
        if let Some(Firewall::Allow { ranges, .. }) = &plan.firewall {
            prop_assert!(!ranges.is_empty());
            prop_assert!(ranges.iter().all(|r| IpFamily::of_net(r) == family));
        }
        for planned in plan.cluster_endpoints.iter().chain(&plan.local_endpoints) {
            prop_assert_eq!(planned.endpoint.family(), family);
            prop_assert!(usable(planned.endpoint));
            prop_assert_eq!(
                planned.hairpin,
                planned.endpoint.node_name.as_deref().is_none_or(|n| n == "node-a")
            );
        }
        for planned in &plan.local_endpoints {
            prop_assert_eq!(planned.endpoint.node_name.as_deref(), Some("node-a"));
        }
        prop_assert_eq!(plan.balancing, proxy.balancing);
    }
}
