//! One test per plan decision. Conventions: node `node-a` at 192.168.0.2 with pod CIDR
//! 10.0.1.0/24; cluster CIDR 10.0.0.0/8; services in 172.30.0.0/16; endpoints 10.180.0.x
//! (`local` ones on node-a, the others on node-b).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::model::Endpoint;
use crate::{ChangeSet, ServicePort};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: None,
        pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        addresses: vec![ip("192.168.0.2")],
    }
}

fn state_with_node() -> ProxyState {
    ProxyState::from_parts(BTreeMap::new(), node())
}

fn config() -> ProxyConfig {
    ProxyConfig {
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

fn port() -> ServicePort {
    ServicePort::cluster_ip(
        ServicePortName::new("ns", "svc", "p80", Protocol::Tcp),
        ip("172.30.0.41"),
        80,
    )
}

fn endpoint(address: &str, node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ..Endpoint::ready(ip(address), 80)
    }
}

fn local() -> Endpoint {
    endpoint("10.180.0.1", "node-a")
}

fn remote() -> Endpoint {
    endpoint("10.180.0.2", "node-b")
}

fn terminating(mut e: Endpoint) -> Endpoint {
    e.ready = false;
    e.terminating = true;
    e
}

fn plan_of<R>(
    config: &ProxyConfig,
    port: ServicePort,
    endpoints: Vec<Endpoint>,
    check: impl FnOnce(&PortPlan<'_>) -> R,
) -> R {
    let state = state_with_node();
    let family = FamilyPlan::new(IpFamily::V4, config, &state);
    let port_state = ServicePortState { port, endpoints };
    let plan = PortPlan::new(&family, &port_state).expect("an IPv4 cluster IP");
    check(&plan)
}

fn external_port(local_policy: bool) -> ServicePort {
    ServicePort {
        node_port: Some(30080),
        external_ips: vec![ip("192.168.99.1")],
        load_balancer_ips: vec![ip("5.6.7.8")],
        external_policy_local: local_policy,
        ..port()
    }
}

#[test]
fn internal_route_follows_policy_and_endpoints() {
    let cases = [
        (false, vec![remote()], Route::Endpoints(Policy::Cluster)),
        (false, vec![], Route::Reject),
        (
            true,
            vec![local(), remote()],
            Route::Endpoints(Policy::Local),
        ),
        (true, vec![remote()], Route::Drop),
        (true, vec![], Route::Reject),
    ];
    for (local_policy, endpoints, expected) in cases {
        let port = ServicePort {
            internal_policy_local: local_policy,
            ..port()
        };
        plan_of(&config(), port, endpoints.clone(), |plan| {
            assert_eq!(plan.internal, expected, "{local_policy} {endpoints:?}");
        });
    }
}

#[test]
fn terminating_endpoints_count_as_endpoints_only_when_serving() {
    plan_of(&config(), port(), vec![terminating(remote())], |plan| {
        assert_eq!(plan.internal, Route::Endpoints(Policy::Cluster));
    });
    let mut not_serving = terminating(remote());
    not_serving.serving = false;
    plan_of(&config(), port(), vec![not_serving], |plan| {
        assert_eq!(plan.internal, Route::Reject);
    });
}

#[test]
fn no_external_plan_without_external_destinations() {
    plan_of(&config(), port(), vec![remote()], |plan| {
        assert!(plan.external.is_none());
        assert!(plan.firewall.is_none());
    });
}

#[test]
fn cluster_policy_external_traffic_is_masqueraded_to_every_endpoint() {
    plan_of(&config(), external_port(false), vec![remote()], |plan| {
        let external = plan.external.as_ref().unwrap();
        assert_eq!(external.route, Route::Endpoints(Policy::Cluster));
        assert!(external.masquerade);
        assert!(!external.short_circuit_local_traffic);
        assert!(external.has_chain());
        assert_eq!(external.node_port, Some(30080));
        assert_eq!(
            external.destinations,
            vec![
                ExternalDestination {
                    ip: ip("192.168.99.1"),
                    load_balancer: false
                },
                ExternalDestination {
                    ip: ip("5.6.7.8"),
                    load_balancer: true
                },
            ]
        );
    });
}

#[test]
fn local_policy_external_traffic_keeps_its_source_and_short_circuits_local_traffic() {
    plan_of(
        &config(),
        external_port(true),
        vec![local(), remote()],
        |plan| {
            let external = plan.external.as_ref().unwrap();
            assert_eq!(external.route, Route::Endpoints(Policy::Local));
            assert!(!external.masquerade);
            assert!(external.short_circuit_local_traffic);
            // The short-circuit needs the cluster-wide set too.
            assert_eq!(plan.cluster_endpoints.len(), 2);
            assert_eq!(plan.local_endpoints.len(), 1);
        },
    );
}

#[test]
fn local_policy_without_local_endpoints_drops_external_traffic_but_short_circuits() {
    plan_of(&config(), external_port(true), vec![remote()], |plan| {
        let external = plan.external.as_ref().unwrap();
        assert_eq!(external.route, Route::Drop);
        assert!(external.short_circuit_local_traffic);
        assert!(external.has_chain());
        assert_eq!(plan.internal, Route::Endpoints(Policy::Cluster));
    });
}

#[test]
fn no_endpoint_anywhere_rejects_external_traffic_without_a_chain() {
    plan_of(&config(), external_port(true), vec![], |plan| {
        let external = plan.external.as_ref().unwrap();
        assert_eq!(external.route, Route::Reject);
        assert!(!external.short_circuit_local_traffic);
        assert!(!external.has_chain());
    });
}

#[test]
fn firewall_exists_iff_load_balancer_ips_and_source_ranges() {
    plan_of(&config(), external_port(false), vec![remote()], |plan| {
        assert!(plan.firewall.is_none(), "no ranges");
    });
    let ranges = |text: &[&str]| text.iter().map(|r| r.parse().unwrap()).collect();
    let with_ranges = ServicePort {
        load_balancer_source_ranges: ranges(&["203.0.113.0/24"]),
        ..external_port(false)
    };
    plan_of(&config(), with_ranges, vec![remote()], |plan| {
        assert_eq!(
            plan.firewall,
            Some(Firewall::Allow {
                ranges: ranges(&["203.0.113.0/24"]),
                vips: vec![]
            })
        );
    });
    let no_lb = ServicePort {
        load_balancer_ips: vec![],
        load_balancer_source_ranges: ranges(&["203.0.113.0/24"]),
        ..external_port(false)
    };
    plan_of(&config(), no_lb, vec![remote()], |plan| {
        assert!(plan.firewall.is_none(), "no load-balancer IP");
    });
}

#[test]
fn firewall_admits_the_vips_when_the_ranges_admit_the_node() {
    let port = ServicePort {
        load_balancer_source_ranges: vec!["192.168.0.0/16".parse().unwrap()],
        ..external_port(false)
    };
    plan_of(&config(), port, vec![remote()], |plan| {
        assert_eq!(
            plan.firewall,
            Some(Firewall::Allow {
                ranges: vec!["192.168.0.0/16".parse().unwrap()],
                vips: vec![ip("5.6.7.8")]
            })
        );
    });
}

#[test]
fn firewall_ranges_only_of_the_other_family_close_this_one() {
    let port = ServicePort {
        load_balancer_source_ranges: vec!["2001:db8::/32".parse().unwrap()],
        ..external_port(false)
    };
    plan_of(&config(), port, vec![remote()], |plan| {
        assert_eq!(plan.firewall, Some(Firewall::DropAll));
    });
}

#[test]
fn hairpin_candidates_are_local_or_of_unknown_node() {
    let unknown = Endpoint::ready(ip("10.180.0.3"), 80);
    plan_of(
        &config(),
        port(),
        vec![local(), remote(), unknown],
        |plan| {
            let hairpin: Vec<(IpAddr, bool)> = plan
                .cluster_endpoints
                .iter()
                .map(|p| (p.endpoint.address, p.hairpin))
                .collect();
            assert_eq!(
                hairpin,
                vec![
                    (ip("10.180.0.1"), true),
                    (ip("10.180.0.2"), false),
                    (ip("10.180.0.3"), true)
                ]
            );
        },
    );
}

#[test]
fn affinity_and_balancing_are_carried() {
    let port = ServicePort {
        session_affinity: SessionAffinity::ClientIp {
            timeout_seconds: 60,
        },
        ..port()
    };
    let config = ProxyConfig {
        balancing: Balancing::RoundRobin,
        ..config()
    };
    plan_of(&config, port, vec![remote()], |plan| {
        assert_eq!(plan.affinity_timeout, Some(60));
        assert_eq!(plan.balancing, Balancing::RoundRobin);
    });
}

#[test]
fn a_port_without_a_cluster_ip_of_the_family_has_no_plan() {
    let state = state_with_node();
    let family = FamilyPlan::new(IpFamily::V6, &config(), &state);
    let port_state = ServicePortState {
        port: port(),
        endpoints: vec![],
    };
    assert!(PortPlan::new(&family, &port_state).is_none());
}

#[test]
fn local_traffic_detector_is_resolved_per_family() {
    let state = state_with_node();
    let cases: [(LocalTrafficDetector, LocalTraffic, LocalTraffic); 5] = [
        (
            LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
            LocalTraffic::SourceCidrs(vec!["10.0.0.0/8".parse().unwrap()]),
            LocalTraffic::Undetectable,
        ),
        (
            LocalTrafficDetector::NodeCidr,
            LocalTraffic::SourceCidrs(vec!["10.0.1.0/24".parse().unwrap()]),
            LocalTraffic::Undetectable,
        ),
        (
            LocalTrafficDetector::InterfaceNamePrefix("veth".into()),
            LocalTraffic::InterfacePrefix("veth".into()),
            LocalTraffic::InterfacePrefix("veth".into()),
        ),
        (
            LocalTrafficDetector::BridgeInterface("cni0".into()),
            LocalTraffic::Bridge("cni0".into()),
            LocalTraffic::Bridge("cni0".into()),
        ),
        (
            LocalTrafficDetector::None,
            LocalTraffic::Undetectable,
            LocalTraffic::Undetectable,
        ),
    ];
    for (detector, v4, v6) in cases {
        let config = ProxyConfig {
            local_detector: detector.clone(),
            ..ProxyConfig::default()
        };
        assert_eq!(
            FamilyPlan::new(IpFamily::V4, &config, &state).local_traffic,
            v4,
            "{detector:?}"
        );
        assert_eq!(
            FamilyPlan::new(IpFamily::V6, &config, &state).local_traffic,
            v6,
            "{detector:?}"
        );
    }
}

#[test]
fn cluster_ip_masquerade_needs_masquerade_all_or_a_detector() {
    let state = state_with_node();
    let family = |config: &ProxyConfig| FamilyPlan::new(IpFamily::V4, config, &state);
    assert_eq!(
        family(&config()).cluster_ip_masquerade,
        ClusterIpMasquerade::NotFromLocalPods
    );
    let all = ProxyConfig {
        masquerade_all: true,
        ..config()
    };
    assert_eq!(family(&all).cluster_ip_masquerade, ClusterIpMasquerade::All);
    assert_eq!(
        family(&ProxyConfig::default()).cluster_ip_masquerade,
        ClusterIpMasquerade::Never
    );
}

#[test]
fn node_port_destinations_per_family() {
    let state = state_with_node();
    let with = |addresses: NodePortAddresses, family: IpFamily| {
        let config = ProxyConfig {
            node_port_addresses: addresses,
            ..config()
        };
        FamilyPlan::new(family, &config, &state).node_ports
    };
    assert_eq!(
        with(NodePortAddresses::All, IpFamily::V4),
        NodePortDestinations::AllLocal
    );
    assert_eq!(
        with(NodePortAddresses::Primary, IpFamily::V4),
        NodePortDestinations::Addresses(vec![ip("192.168.0.2")])
    );
    assert_eq!(
        with(NodePortAddresses::Primary, IpFamily::V6),
        NodePortDestinations::None,
        "no IPv6 node address"
    );
    let cidrs = NodePortAddresses::Cidrs(vec!["192.168.0.0/24".parse().unwrap()]);
    assert_eq!(
        with(cidrs.clone(), IpFamily::V4),
        NodePortDestinations::LocalInCidrs(vec!["192.168.0.0/24".parse().unwrap()])
    );
    assert_eq!(with(cidrs, IpFamily::V6), NodePortDestinations::None);
}

#[test]
fn effective_service_cidrs_join_configured_and_cluster_ones_per_family() {
    let mut state = state_with_node();
    let cluster: Vec<IpNet> = vec![
        "172.31.0.0/16".parse().unwrap(),
        "172.30.0.0/16".parse().unwrap(),
        "fd00:30::/64".parse().unwrap(),
    ];
    state.apply(&ChangeSet::default().with_service_cidrs(Some(cluster)));
    let config = ProxyConfig {
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        ..config()
    };
    let v4 = FamilyPlan::new(IpFamily::V4, &config, &state);
    assert_eq!(
        v4.service_cidrs,
        vec![
            "172.30.0.0/16".parse::<IpNet>().unwrap(),
            "172.31.0.0/16".parse().unwrap()
        ]
    );
    let v6 = FamilyPlan::new(IpFamily::V6, &config, &state);
    assert_eq!(
        v6.service_cidrs,
        vec!["fd00:30::/64".parse::<IpNet>().unwrap()]
    );
}
