use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeSpec,
    NodeStatus, Service, ServicePort as K8sServicePort, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as K8sEndpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice,
    ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::model::{Protocol, SessionAffinity};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: Some("ns".into()),
        name: Some(name.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

fn port(name: &str, number: i32, protocol: &str) -> K8sServicePort {
    K8sServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn service(spec: ServiceSpec) -> Service {
    Service {
        metadata: meta("svc", &[]),
        spec: Some(spec),
        status: None,
    }
}

fn cluster_ip_spec(ip: &str) -> ServiceSpec {
    ServiceSpec {
        cluster_ip: Some(ip.into()),
        ports: Some(vec![port("http", 80, "TCP")]),
        ..Default::default()
    }
}

fn options() -> ConversionOptions {
    ConversionOptions::default()
}

#[test]
fn cluster_ip_service_gets_api_defaults() {
    let converted = super::service(&service(cluster_ip_spec("172.30.0.1")), &options());
    assert!(converted.errors.is_empty());
    let [port] = converted.value.ports.as_slice() else {
        panic!("one port expected")
    };
    assert_eq!(
        port.name,
        ServicePortName::new("ns", "svc", "http", Protocol::Tcp)
    );
    assert_eq!(
        port.cluster_ips,
        vec!["172.30.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(port.session_affinity, SessionAffinity::None);
    assert!(!port.external_policy_local && !port.internal_policy_local);
    assert_eq!(port.node_port, None);
}

use crate::model::ServicePortName;

#[test]
fn external_name_and_headless_services_are_skipped_without_error() {
    for spec in [
        ServiceSpec {
            type_: Some("ExternalName".into()),
            ..cluster_ip_spec("172.30.0.1")
        },
        cluster_ip_spec("None"),
        ServiceSpec {
            cluster_ip: None,
            ..cluster_ip_spec("")
        },
    ] {
        let converted = super::service(&service(spec), &options());
        assert!(converted.value.ports.is_empty());
        assert!(converted.errors.is_empty());
    }
}

#[test]
fn service_proxy_name_label_selects_the_proxy() {
    let mut svc = service(cluster_ip_spec("172.30.0.1"));
    svc.metadata = meta("svc", &[(LABEL_SERVICE_PROXY_NAME, "other")]);
    assert!(super::service(&svc, &options()).value.ports.is_empty());
    let mine = ConversionOptions {
        proxy_name: Some("other".into()),
    };
    assert_eq!(super::service(&svc, &mine).value.ports.len(), 1);

    svc.metadata = meta("svc", &[(LABEL_HEADLESS, "")]);
    assert!(super::service(&svc, &options()).value.ports.is_empty());
}

#[test]
fn dual_stack_cluster_ips_keep_one_per_family() {
    let spec = ServiceSpec {
        cluster_ips: Some(vec![
            "fd00::10".into(),
            "172.30.0.1".into(),
            "172.30.0.2".into(),
        ]),
        ..cluster_ip_spec("fd00::10")
    };
    let converted = super::service(&service(spec), &options());
    let port = &converted.value.ports[0];
    assert_eq!(
        port.cluster_ip_of(IpFamily::V6),
        Some("fd00::10".parse().unwrap())
    );
    assert_eq!(
        port.cluster_ip_of(IpFamily::V4),
        Some("172.30.0.1".parse().unwrap())
    );
    assert_eq!(converted.errors.len(), 1);
    assert_eq!(converted.errors[0].field(), "spec.clusterIPs[2]");
}

use crate::model::IpFamily;

#[test]
fn bad_port_drops_only_that_port() {
    let spec = ServiceSpec {
        ports: Some(vec![
            port("a", 70000, "TCP"),
            port("b", 53, "QUIC"),
            port("c", 53, "UDP"),
        ]),
        ..cluster_ip_spec("172.30.0.1")
    };
    let converted = super::service(&service(spec), &options());
    let names: Vec<_> = converted
        .value
        .ports
        .iter()
        .map(|p| p.name.port.as_str())
        .collect();
    assert_eq!(names, ["c"]);
    assert!(matches!(
        &converted.errors[0],
        ModelError::PortOutOfRange { field, value: 70000, .. } if field == "spec.ports[0].port"
    ));
    assert!(matches!(
        &converted.errors[1],
        ModelError::UnknownProtocol { field, value, .. } if field == "spec.ports[1].protocol" && value == "QUIC"
    ));
    assert_eq!(
        converted.errors[0].to_string(),
        "Service ns/svc: spec.ports[0].port is out of range 1-65535: 70000"
    );
}

#[test]
fn unparsable_cluster_ip_skips_the_service_with_an_error() {
    let converted = super::service(&service(cluster_ip_spec("172.30.0.300")), &options());
    assert!(converted.value.ports.is_empty());
    assert!(
        matches!(&converted.errors[..], [ModelError::InvalidIp { field, .. }] if field == "spec.clusterIP[0]")
    );
}

fn load_balancer(ranges: Vec<&str>, ingress: Vec<(&str, Option<&str>)>) -> Service {
    let mut spec = cluster_ip_spec("172.30.0.1");
    spec.type_ = Some("LoadBalancer".into());
    spec.external_traffic_policy = Some("Local".into());
    spec.health_check_node_port = Some(30000);
    spec.ports = Some(vec![K8sServicePort {
        node_port: Some(31000),
        ..port("http", 80, "TCP")
    }]);
    spec.load_balancer_source_ranges = Some(ranges.into_iter().map(String::from).collect());
    spec.external_ips = Some(vec!["192.0.2.9".into(), "not-an-ip".into()]);
    let mut svc = service(spec);
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(
                ingress
                    .into_iter()
                    .map(|(ip, mode)| LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ip_mode: mode.map(String::from),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    });
    svc
}

#[test]
fn load_balancer_fields_are_read_and_proxy_mode_ips_left_out() {
    let svc = load_balancer(
        vec!["10.0.0.0/8", " 192.168.1.7 "],
        vec![
            ("1.2.3.4", None),
            ("1.2.3.5", Some("VIP")),
            ("1.2.3.6", Some("Proxy")),
        ],
    );
    let converted = super::service(&svc, &options());
    let port = &converted.value.ports[0];
    assert_eq!(port.node_port, Some(31000));
    assert_eq!(port.health_check_node_port, Some(30000));
    assert!(port.external_policy_local);
    assert_eq!(
        port.load_balancer_ips,
        [
            "1.2.3.4".parse::<std::net::IpAddr>().unwrap(),
            "1.2.3.5".parse().unwrap()
        ]
    );
    assert_eq!(
        port.load_balancer_source_ranges,
        [
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.168.1.7/32".parse().unwrap()
        ]
    );
    assert_eq!(
        port.external_ips,
        ["192.0.2.9".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(
        matches!(&converted.errors[..], [ModelError::InvalidIp { field, .. }] if field == "spec.externalIPs[1]")
    );
}

#[test]
fn unusable_source_ranges_fail_closed() {
    let svc = load_balancer(vec!["bogus"], vec![("1.2.3.4", None)]);
    let converted = super::service(&svc, &options());
    assert!(converted.value.ports[0].load_balancer_ips.is_empty());
    assert!(converted.errors.iter().any(|e| matches!(e, ModelError::InvalidCidr { field, .. } if field == "spec.loadBalancerSourceRanges[0]")));
}

#[test]
fn external_policy_local_needs_external_reachability() {
    let mut spec = cluster_ip_spec("172.30.0.1");
    spec.external_traffic_policy = Some("Local".into());
    let converted = super::service(&service(spec), &options());
    assert!(!converted.value.ports[0].external_policy_local);
}

#[test]
fn session_affinity_timeout_defaults_and_bounds() {
    let mut spec = cluster_ip_spec("172.30.0.1");
    spec.session_affinity = Some("ClientIP".into());
    let converted = super::service(&service(spec.clone()), &options());
    assert_eq!(
        converted.value.ports[0].session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10_800
        }
    );

    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(60),
        }),
    });
    let converted = super::service(&service(spec.clone()), &options());
    assert_eq!(
        converted.value.ports[0].session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 60
        }
    );

    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(0),
        }),
    });
    let converted = super::service(&service(spec), &options());
    assert_eq!(
        converted.value.ports[0].session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10_800
        }
    );
    assert_eq!(converted.errors.len(), 1);
}

fn slice(address_type: &str, endpoints: Vec<K8sEndpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: meta("svc-abc", &[(LABEL_SERVICE_NAME, "svc")]),
        address_type: address_type.into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: None,
            ..Default::default()
        }]),
    }
}

fn endpoint(address: &str, conditions: Option<EndpointConditions>) -> K8sEndpoint {
    K8sEndpoint {
        addresses: vec![address.into()],
        conditions,
        ..Default::default()
    }
}

#[test]
fn endpoint_conditions_follow_the_api_nil_semantics() {
    let converted = endpoint_slice(
        &slice(
            "IPv4",
            vec![
                endpoint("10.0.0.1", None),
                endpoint(
                    "10.0.0.2",
                    Some(EndpointConditions {
                        ready: Some(false),
                        serving: None,
                        terminating: Some(true),
                    }),
                ),
            ],
        ),
        &options(),
    );
    let [first, second] = converted.value.endpoints.as_slice() else {
        panic!()
    };
    assert!(first.ready && first.serving && !first.terminating);
    assert!(!second.ready && second.serving && second.terminating);
    assert_eq!(
        converted.value.ports,
        [SlicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080
        }]
    );
    assert_eq!(
        converted.value.service,
        Some(crate::NamespacedName::new("ns", "svc"))
    );
}

#[test]
fn wrong_family_and_bad_addresses_drop_only_that_endpoint() {
    let converted = endpoint_slice(
        &slice(
            "IPv4",
            vec![
                endpoint("fd00::1", None),
                endpoint("10.0.0.x", None),
                endpoint("10.0.0.3", None),
            ],
        ),
        &options(),
    );
    assert_eq!(converted.value.endpoints.len(), 1);
    assert!(
        matches!(&converted.errors[0], ModelError::WrongFamily { field, .. } if field == "endpoints[0].addresses[0]")
    );
    assert!(
        matches!(&converted.errors[1], ModelError::InvalidIp { field, .. } if field == "endpoints[1].addresses[0]")
    );
}

#[test]
fn fqdn_slices_are_ignored_and_unlabelled_slices_reported() {
    let converted = endpoint_slice(
        &slice("FQDN", vec![endpoint("example.com", None)]),
        &options(),
    );
    assert!(converted.value.service.is_none() && converted.errors.is_empty());

    let mut unlabelled = slice("IPv4", vec![endpoint("10.0.0.1", None)]);
    unlabelled.metadata.labels = None;
    let converted = endpoint_slice(&unlabelled, &options());
    assert!(converted.value.service.is_none());
    assert!(matches!(
        &converted.errors[..],
        [ModelError::MissingField { .. }]
    ));
}

#[test]
fn hints_and_topology_are_read() {
    let mut ep = endpoint("10.0.0.1", None);
    ep.node_name = Some("node-a".into());
    ep.zone = Some("zone-a".into());
    ep.hints = Some(EndpointHints {
        for_zones: Some(vec![ForZone {
            name: "zone-a".into(),
        }]),
        for_nodes: Some(vec![ForNode {
            name: "node-a".into(),
        }]),
    });
    let converted = endpoint_slice(&slice("IPv4", vec![ep]), &options());
    let endpoint = &converted.value.endpoints[0];
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
    assert_eq!(endpoint.zone.as_deref(), Some("zone-a"));
    assert!(endpoint.zone_hints.contains("zone-a") && endpoint.node_hints.contains("node-a"));
}

#[test]
fn node_info_reads_zone_pod_cidrs_and_addresses() {
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            labels: Some([(LABEL_TOPOLOGY_ZONE.to_string(), "zone-a".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some("10.0.0.0/24".into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.0.2".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "node-a".into(),
                },
            ]),
            ..Default::default()
        }),
    };
    let converted = super::node(&node);
    assert!(converted.errors.is_empty());
    assert_eq!(converted.value.zone.as_deref(), Some("zone-a"));
    assert_eq!(
        converted.value.pod_cidrs,
        ["10.0.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        converted.value.addresses,
        ["192.168.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn app_protocol_labels_and_annotations_are_kept() {
    let mut svc = service(ServiceSpec {
        cluster_ip: Some("172.30.0.1".into()),
        ports: Some(vec![
            K8sServicePort {
                app_protocol: Some("kubernetes.io/h2c".into()),
                ..port("grpc", 81, "TCP")
            },
            port("http", 80, "TCP"),
        ]),
        ..Default::default()
    });
    svc.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    svc.metadata.annotations = Some(
        [
            ("cni.example/policy".to_owned(), "strict".to_owned()),
            (
                crate::model::ANNOTATION_LAST_APPLIED.to_owned(),
                "{\"apiVersion\":\"v1\"}".to_owned(),
            ),
        ]
        .into(),
    );
    let converted = super::service(&svc, &options());
    assert!(converted.errors.is_empty());
    let [grpc, http] = converted.value.ports.as_slice() else {
        panic!("two ports expected")
    };
    assert_eq!(grpc.app_protocol.as_deref(), Some("kubernetes.io/h2c"));
    assert_eq!(http.app_protocol, None);
    assert_eq!(
        *grpc.labels,
        BTreeMap::from([("app".to_owned(), "web".to_owned())])
    );
    assert_eq!(
        *grpc.annotations,
        BTreeMap::from([("cni.example/policy".to_owned(), "strict".to_owned())]),
        "kubectl's copy of the object is left out"
    );
    // One copy per Service, not per port.
    assert!(std::sync::Arc::ptr_eq(&grpc.labels, &http.labels));
    assert!(std::sync::Arc::ptr_eq(&grpc.annotations, &http.annotations));
}

#[test]
fn a_service_without_labels_has_empty_maps() {
    let converted = super::service(&service(cluster_ip_spec("172.30.0.1")), &options());
    let [port] = converted.value.ports.as_slice() else {
        panic!("one port expected")
    };
    assert!(port.labels.is_empty() && port.annotations.is_empty());
    assert_eq!(port.app_protocol, None);
}

/// A million endpoints at 100,000 Services × 10 each name a pod: their kind and namespace are
/// one allocation per slice.
#[test]
fn target_kinds_and_namespaces_are_shared_within_a_slice() {
    let pod = |address: &str, name: &str| K8sEndpoint {
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }),
        ..endpoint(address, None)
    };
    let converted = endpoint_slice(
        &slice("IPv4", vec![pod("10.0.0.1", "a"), pod("10.0.0.2", "b")]),
        &options(),
    );
    let [a, b] = converted.value.endpoints.as_slice() else {
        panic!("two endpoints expected")
    };
    let (a, b) = (
        a.target_ref.as_deref().unwrap(),
        b.target_ref.as_deref().unwrap(),
    );
    assert!(std::sync::Arc::ptr_eq(&a.kind, &b.kind));
    assert!(std::sync::Arc::ptr_eq(&a.namespace, &b.namespace));
    assert_eq!((&*a.name, &*b.uid), ("a", "uid-b"));
}

#[test]
fn the_target_ref_is_kept_for_each_port() {
    let mut slice = slice(
        "IPv4",
        vec![
            K8sEndpoint {
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some("ns".into()),
                    name: Some("web-7d4f".into()),
                    uid: Some("0b5c9c52-6a3e-4a8e-9d1e-2f0c3f6c1a11".into()),
                    ..Default::default()
                }),
                ..endpoint("10.0.0.1", None)
            },
            K8sEndpoint {
                target_ref: Some(ObjectReference {
                    name: Some("bare".into()),
                    ..Default::default()
                }),
                ..endpoint("10.0.0.2", None)
            },
            endpoint("10.0.0.3", None),
        ],
    );
    slice.ports = Some(vec![
        EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        },
        EndpointPort {
            name: Some("admin".into()),
            port: Some(9090),
            ..Default::default()
        },
    ]);
    let converted = endpoint_slice(&slice, &options());
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    let [pod, bare, none] = converted.value.endpoints.as_slice() else {
        panic!("three endpoints expected")
    };
    let target = pod.target_ref.as_deref().unwrap();
    assert_eq!(
        *target,
        crate::model::TargetRef {
            kind: "Pod".into(),
            namespace: "ns".into(),
            name: "web-7d4f".into(),
            uid: "0b5c9c52-6a3e-4a8e-9d1e-2f0c3f6c1a11".into(),
        }
    );
    assert_eq!(
        bare.target_ref.as_deref(),
        Some(&crate::model::TargetRef {
            name: "bare".into(),
            ..Default::default()
        }),
        "fields the slice leaves out are empty"
    );
    assert_eq!(none.target_ref, None);
    // The endpoint's copies at each port share one reference.
    let at_http = pod.at_port(8080);
    let at_admin = pod.at_port(9090);
    assert!(std::sync::Arc::ptr_eq(
        at_http.target_ref.as_ref().unwrap(),
        at_admin.target_ref.as_ref().unwrap()
    ));
}

// Addresses written the legacy way (issue 12): objects stored before strict validation keep
// IPv4 numbers with leading zeros; upstream reads them as decimal and programs them.

fn ips(texts: &[&str]) -> Vec<std::net::IpAddr> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

fn nets(texts: &[&str]) -> Vec<ipnet::IpNet> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

#[test]
fn legacy_cluster_ips_are_read_as_decimal() {
    let converted = super::service(&service(cluster_ip_spec("10.96.0.010")), &options());
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    assert_eq!(converted.value.ports[0].cluster_ips, ips(&["10.96.0.10"]));

    let mut spec = cluster_ip_spec("ignored");
    spec.cluster_ips = Some(vec!["172.030.000.041".into(), "fd00::0000a".into()]);
    let converted = super::service(&service(spec), &options());
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    assert_eq!(
        converted.value.ports[0].cluster_ips,
        ips(&["172.30.0.41", "fd00::a"])
    );
}

#[test]
fn legacy_external_ips_load_balancer_ips_and_source_ranges_are_read_as_decimal() {
    let mut svc = load_balancer(
        vec!["192.168.000.0/24", "010.000.000.001/8", "203.0.113.007"],
        vec![("198.051.100.010", None), ("1.2.3.004", Some("VIP"))],
    );
    svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.000.002.009".into()]);
    let converted = super::service(&svc, &options());
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    let port = &converted.value.ports[0];
    assert_eq!(port.external_ips, ips(&["192.0.2.9"]));
    assert_eq!(port.load_balancer_ips, ips(&["198.51.100.10", "1.2.3.4"]));
    // Host bits are cleared, as Go's ParseCIDR returns the masked network; a bare address
    // is a host route.
    assert_eq!(
        port.load_balancer_source_ranges,
        nets(&["192.168.0.0/24", "10.0.0.0/8", "203.0.113.7/32"])
    );
}

#[test]
fn legacy_source_ranges_count_as_usable_so_the_load_balancer_ip_is_kept() {
    // A bare address is a host route. Before legacy addresses were read, this only range
    // failed to parse and the load-balancer IPs were dropped with it (fail closed).
    let svc = load_balancer(vec!["203.000.113.007"], vec![("1.2.3.4", None)]);
    let converted = super::service(&svc, &options());
    assert_eq!(
        converted.value.ports[0].load_balancer_ips,
        ips(&["1.2.3.4"])
    );
}

#[test]
fn legacy_values_above_255_stay_invalid() {
    let converted = super::service(&service(cluster_ip_spec("10.96.0.0256")), &options());
    assert!(converted.value.ports.is_empty());
    assert!(matches!(
        &converted.errors[..],
        [ModelError::InvalidIp { .. }]
    ));
}

#[test]
fn legacy_endpoint_addresses_are_read_as_decimal() {
    let converted = endpoint_slice(
        &slice(
            "IPv4",
            vec![
                endpoint("10.244.001.005", None),
                endpoint("10.244.1.6", None),
            ],
        ),
        &options(),
    );
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    let addresses: Vec<_> = converted
        .value
        .endpoints
        .iter()
        .map(|e| e.address)
        .collect();
    assert_eq!(addresses, ips(&["10.244.1.5", "10.244.1.6"]));
}

#[test]
fn ipv4_mapped_endpoints_are_ipv4_as_upstream_reads_them() {
    // Go's To4() calls ::ffff:a.b.c.d IPv4: kept in an IPv4 slice, dropped from an IPv6 one.
    let converted = endpoint_slice(
        &slice("IPv4", vec![endpoint("::ffff:10.244.1.5", None)]),
        &options(),
    );
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    assert_eq!(
        converted.value.endpoints[0].address,
        ips(&["10.244.1.5"])[0]
    );
    let converted = endpoint_slice(
        &slice("IPv6", vec![endpoint("::ffff:10.244.1.5", None)]),
        &options(),
    );
    assert!(converted.value.endpoints.is_empty());
    assert!(matches!(
        &converted.errors[..],
        [ModelError::WrongFamily { .. }]
    ));
}

#[test]
fn legacy_node_addresses_and_pod_cidrs_are_read_as_decimal() {
    let node_with = |pod_cidrs: Option<Vec<String>>, pod_cidr: Option<String>| Node {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr,
            pod_cidrs,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.000.002".into(),
                },
                NodeAddress {
                    type_: "ExternalIP".into(),
                    address: "203.000.113.010".into(),
                },
            ]),
            ..Default::default()
        }),
    };
    let converted = super::node(&node_with(
        Some(vec!["10.244.001.0/24".into(), "fd00:0:0:1::/64".into()]),
        None,
    ));
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    assert_eq!(
        converted.value.pod_cidrs,
        nets(&["10.244.1.0/24", "fd00:0:0:1::/64"])
    );
    assert_eq!(
        converted.value.addresses,
        ips(&["192.168.0.2", "203.0.113.10"])
    );
    let converted = super::node(&node_with(None, Some("10.244.000.000/016".into())));
    assert!(converted.errors.is_empty(), "{:?}", converted.errors);
    assert_eq!(converted.value.pod_cidrs, nets(&["10.244.0.0/16"]));
}

/// Log lines written while `body` runs, at `debug` for this crate.
fn debug_lines(body: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex, PoisonError};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter("kproxy_core=debug")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, body);
    let bytes = buffer.0.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_legacy_spelling_is_logged_at_debug_once_per_field_and_a_canonical_one_not_at_all() {
    let mut svc = service(cluster_ip_spec("10.96.0.010"));
    svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.9".into()]);
    let lines = debug_lines(|| {
        super::service(&svc, &options());
    });
    let legacy: Vec<&str> = lines.lines().filter(|l| l.contains("legacy")).collect();
    assert_eq!(legacy.len(), 1, "{lines}");
    assert!(
        legacy[0].contains("DEBUG")
            && legacy[0].contains("Service ns/svc")
            && legacy[0].contains("spec.clusterIP[0]")
            && legacy[0].contains("10.96.0.010")
            && legacy[0].contains("read_as=10.96.0.10"),
        "{lines}"
    );
    let canonical = debug_lines(|| {
        super::service(&service(cluster_ip_spec("10.96.0.10")), &options());
    });
    assert!(!canonical.contains("legacy"), "{canonical}");
}
