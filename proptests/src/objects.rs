//! Strategies for Services, EndpointSlices and event sequences, drawn from small pools so that
//! names, ports and addresses collide often (that is where trackers go wrong). Some values are
//! invalid on purpose.
//!
//! Pools: namespaces `a`, `b`; Services `s1`..`s3`; slices `e1`..`e4`; service IPs
//! 172.30.0.0/16 and fd00:30::/64; pod IPs 10.0.0.0/8 and fd00:10::/64; nodes `node-a` (the
//! proxy's own) and `node-b`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// The namespaces used.
pub const NAMESPACES: &[&str] = &["a", "b"];
/// The Service names used.
pub const SERVICES: &[&str] = &["s1", "s2", "s3"];
/// The EndpointSlice names used.
pub const SLICES: &[&str] = &["e1", "e2", "e3", "e4"];
/// Port names and protocols; the same name with two protocols is two service ports.
const PORTS: &[(&str, &str)] = &[
    ("", "TCP"),
    ("http", "TCP"),
    ("http", "UDP"),
    ("dns", "UDP"),
    ("sctp", "SCTP"),
    ("bad", "ICMP"),
];

fn meta(namespace: &str, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        labels: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    }
}

fn port_number() -> impl Strategy<Value = i32> {
    prop_oneof![8 => select(vec![53, 80, 443, 8080]), 1 => select(vec![0, 70_000])]
}

fn cluster_ips() -> impl Strategy<Value = Vec<String>> {
    let ip = |pool: &[&'static str]| select(pool.to_vec()).prop_map(String::from);
    prop_oneof![
        4 => ip(&["172.30.0.1", "172.30.0.2"]).prop_map(|ip| vec![ip]),
        2 => (ip(&["172.30.0.1", "172.30.0.2"]), ip(&["fd00:30::1", "fd00:30::2"]))
            .prop_map(|(a, b)| vec![a, b]),
        1 => ip(&["fd00:30::1"]).prop_map(|ip| vec![ip]),
        1 => Just(vec!["None".to_owned()]),
        1 => Just(vec!["172.30.0.999".to_owned()]),
    ]
}

/// A Service of one of the pools, with some of every feature the model reads.
pub fn service() -> impl Strategy<Value = Service> {
    (
        select(NAMESPACES),
        select(SERVICES),
        cluster_ips(),
        subsequence(PORTS.to_vec(), 0..=3),
        vec(port_number(), 3),
        select(vec![
            "ClusterIP",
            "NodePort",
            "LoadBalancer",
            "ExternalName",
        ]),
        option::of(select(vec!["Local", "Cluster"])),
        any::<bool>(),
        subsequence(vec!["192.0.2.1", "2001:db8::1", "bogus"], 0..=2),
        any::<bool>(),
    )
        .prop_map(
            |(ns, name, ips, ports, numbers, kind, policy, affinity, external_ips, other_proxy)| {
                let mut labels = BTreeMap::new();
                if other_proxy {
                    labels.insert(
                        kproxy_core::convert::LABEL_SERVICE_PROXY_NAME.to_owned(),
                        "someone-else".to_owned(),
                    );
                }
                let node_ports = kind != "ClusterIP";
                Service {
                    metadata: meta(ns, name, labels),
                    spec: Some(ServiceSpec {
                        type_: Some(kind.into()),
                        cluster_ip: ips.first().cloned(),
                        cluster_ips: Some(ips),
                        ports: Some(
                            ports
                                .iter()
                                .zip(numbers)
                                .map(|((port_name, protocol), port)| ServicePort {
                                    name: Some((*port_name).into()),
                                    protocol: Some((*protocol).into()),
                                    port,
                                    node_port: node_ports.then_some(30_000 + port % 1000),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        external_traffic_policy: policy.map(String::from),
                        internal_traffic_policy: policy.map(String::from),
                        session_affinity: affinity.then(|| "ClientIP".to_owned()),
                        external_ips: Some(external_ips.into_iter().map(String::from).collect()),
                        ..Default::default()
                    }),
                    status: None,
                }
            },
        )
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        select(vec![
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "fd00:10::1",
            "fd00:10::2",
            "garbage",
        ]),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        option::of(select(vec!["node-a", "node-b"])),
        option::of(subsequence(vec!["zone-a", "zone-b"], 0..=2)),
        option::of(subsequence(vec!["node-a", "node-b"], 0..=2)),
    )
        .prop_map(
            |(address, (ready, serving, terminating), node, zones, nodes)| Endpoint {
                addresses: vec![address.into()],
                conditions: Some(EndpointConditions {
                    ready,
                    serving,
                    terminating,
                }),
                node_name: node.map(String::from),
                hints: (zones.is_some() || nodes.is_some()).then(|| EndpointHints {
                    for_zones: zones.map(|z| {
                        z.into_iter()
                            .map(|name| ForZone { name: name.into() })
                            .collect()
                    }),
                    for_nodes: nodes.map(|n| {
                        n.into_iter()
                            .map(|name| ForNode { name: name.into() })
                            .collect()
                    }),
                }),
                ..Default::default()
            },
        )
}

/// An EndpointSlice of one of the pools, usually labelled for one of the pool's Services.
pub fn endpoint_slice() -> impl Strategy<Value = EndpointSlice> {
    (
        select(NAMESPACES),
        select(SLICES),
        option::weighted(0.9, select(SERVICES)),
        prop_oneof![6 => Just("IPv4"), 3 => Just("IPv6"), 1 => Just("FQDN")],
        subsequence(PORTS.to_vec(), 0..=3),
        vec(port_number(), 3),
        vec(endpoint(), 0..5),
    )
        .prop_map(
            |(ns, name, service, address_type, ports, numbers, endpoints)| {
                let labels = service
                    .map(|service| {
                        BTreeMap::from([(
                            kproxy_core::convert::LABEL_SERVICE_NAME.to_owned(),
                            service.to_owned(),
                        )])
                    })
                    .unwrap_or_default();
                EndpointSlice {
                    metadata: meta(ns, name, labels),
                    address_type: address_type.into(),
                    endpoints,
                    ports: Some(
                        ports
                            .iter()
                            .zip(numbers)
                            .map(|((port_name, protocol), port)| EndpointPort {
                                name: Some((*port_name).into()),
                                protocol: Some((*protocol).into()),
                                port: Some(port),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }
            },
        )
}

/// One event as a watcher would deliver it, or a drain.
#[derive(Debug, Clone)]
pub enum Event {
    /// A Service was created or updated.
    UpsertService(Box<Service>),
    /// A Service was deleted.
    DeleteService(String, String),
    /// An EndpointSlice was created or updated.
    UpsertSlice(Box<EndpointSlice>),
    /// An EndpointSlice was deleted.
    DeleteSlice(String, String),
    /// The proxy drains the tracker.
    Drain,
}

/// A sequence of events with drains at random points (and one at the end).
pub fn events() -> impl Strategy<Value = Vec<Event>> {
    let event = prop_oneof![
        3 => service().prop_map(|s| Event::UpsertService(Box::new(s))),
        1 => (select(NAMESPACES), select(SERVICES))
            .prop_map(|(ns, name)| Event::DeleteService(ns.into(), name.into())),
        5 => endpoint_slice().prop_map(|s| Event::UpsertSlice(Box::new(s))),
        1 => (select(NAMESPACES), select(SLICES))
            .prop_map(|(ns, name)| Event::DeleteSlice(ns.into(), name.into())),
        2 => Just(Event::Drain),
    ];
    vec(event, 1..80).prop_map(|mut events| {
        events.push(Event::Drain);
        events
    })
}
