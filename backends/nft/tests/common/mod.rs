//! Shared helpers for the nft backend's tests.
//!
//! IP conventions: service IPs 172.30.0.0/16 (fd00:30::/64), pods 10.0.0.0/8 (fd00:10::/64),
//! the node `node-a` at 192.168.0.2 with pod CIDR 10.0.1.0/24.

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test helpers"
)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::convert::LABEL_SERVICE_NAME;
use kproxy_core::{
    ConversionOptions, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig, ServiceChangeTracker,
};

pub fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        addresses: vec!["192.168.0.2".parse().unwrap()],
    }
}

pub fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00:10::/64".parse().unwrap(),
        ]),
        service_cidrs: vec![
            "172.30.0.0/16".parse().unwrap(),
            "fd00:30::/64".parse().unwrap(),
        ],
        ..ProxyConfig::default()
    }
}

pub fn tracker() -> ServiceChangeTracker {
    ServiceChangeTracker::new(node(), ConversionOptions::default())
}

/// What kind of Service to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClusterIp,
    NodePort {
        node_port: i32,
        local: bool,
    },
    LoadBalancer {
        node_port: i32,
        local: bool,
        ranges: bool,
    },
}

pub fn service(
    name: &str,
    cluster_ips: &[&str],
    port: i32,
    protocol: &str,
    kind: Kind,
    affinity: bool,
) -> Service {
    let (type_, node_port, local) = match kind {
        Kind::ClusterIp => ("ClusterIP", None, false),
        Kind::NodePort { node_port, local } => ("NodePort", Some(node_port), local),
        Kind::LoadBalancer {
            node_port, local, ..
        } => ("LoadBalancer", Some(node_port), local),
    };
    let load_balancer = matches!(kind, Kind::LoadBalancer { .. });
    Service {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: cluster_ips.first().map(|ip| (*ip).to_owned()),
            cluster_ips: Some(cluster_ips.iter().map(|ip| (*ip).to_owned()).collect()),
            ports: Some(vec![ServicePort {
                name: Some("p".into()),
                port,
                protocol: Some(protocol.into()),
                node_port,
                ..Default::default()
            }]),
            external_ips: load_balancer.then(|| vec!["192.0.2.10".to_owned()]),
            external_traffic_policy: local.then(|| "Local".to_owned()),
            session_affinity: affinity.then(|| "ClientIP".to_owned()),
            load_balancer_source_ranges: matches!(kind, Kind::LoadBalancer { ranges: true, .. })
                .then(|| vec!["203.0.113.0/24".to_owned()]),
            health_check_node_port: (load_balancer && local).then_some(30999),
            ..Default::default()
        }),
        status: load_balancer.then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("198.51.100.7".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }),
    }
}

/// An endpoint: address, ready, serving, terminating, node.
pub type Ep = (&'static str, bool, bool, bool, &'static str);

pub fn slice(
    service: &str,
    suffix: &str,
    port: i32,
    protocol: &str,
    endpoints: &[Ep],
) -> EndpointSlice {
    let v6 = endpoints.iter().any(|e| e.0.contains(':'));
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(format!("{service}-{suffix}")),
            labels: Some(BTreeMap::from([(
                LABEL_SERVICE_NAME.to_owned(),
                service.to_owned(),
            )])),
            ..Default::default()
        },
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: endpoints
            .iter()
            .map(|(address, ready, serving, terminating, node)| Endpoint {
                addresses: vec![(*address).into()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                node_name: Some((*node).into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("p".into()),
            port: Some(port),
            protocol: Some(protocol.into()),
            ..Default::default()
        }]),
    }
}

pub fn ready(address: &'static str, node: &'static str) -> Ep {
    (address, true, true, false, node)
}

/// A small cluster exercising every feature the renderer has.
pub fn sample_cluster(tracker: &mut ServiceChangeTracker) {
    tracker.upsert_service(&service(
        "web",
        &["172.30.0.10", "fd00:30::10"],
        80,
        "TCP",
        Kind::ClusterIp,
        false,
    ));
    tracker.upsert_endpoint_slice(&slice(
        "web",
        "v4",
        8080,
        "TCP",
        &[ready("10.0.1.5", "node-a"), ready("10.0.2.5", "node-b")],
    ));
    tracker.upsert_endpoint_slice(&slice(
        "web",
        "v6",
        8080,
        "TCP",
        &[ready("fd00:10::5", "node-a")],
    ));
    tracker.upsert_service(&service(
        "dns",
        &["172.30.0.53"],
        53,
        "UDP",
        Kind::ClusterIp,
        true,
    ));
    tracker.upsert_endpoint_slice(&slice(
        "dns",
        "a",
        5353,
        "UDP",
        &[ready("10.0.1.53", "node-a"), ready("10.0.2.53", "node-b")],
    ));
    tracker.upsert_service(&service(
        "np",
        &["172.30.0.20"],
        80,
        "TCP",
        Kind::NodePort {
            node_port: 30080,
            local: true,
        },
        false,
    ));
    tracker.upsert_endpoint_slice(&slice(
        "np",
        "a",
        80,
        "TCP",
        &[
            ready("10.0.2.20", "node-b"),
            ("10.0.1.20", false, true, true, "node-a"),
        ],
    ));
    tracker.upsert_service(&service(
        "lb",
        &["172.30.0.30"],
        443,
        "TCP",
        Kind::LoadBalancer {
            node_port: 30443,
            local: false,
            ranges: true,
        },
        false,
    ));
    tracker.upsert_endpoint_slice(&slice(
        "lb",
        "a",
        8443,
        "TCP",
        &[ready("10.0.2.30", "node-b")],
    ));
    tracker.upsert_service(&service(
        "empty",
        &["172.30.0.40"],
        80,
        "TCP",
        Kind::NodePort {
            node_port: 30040,
            local: false,
        },
        false,
    ));
    tracker.upsert_service(&service(
        "sctp",
        &["172.30.0.50"],
        9000,
        "SCTP",
        Kind::ClusterIp,
        false,
    ));
    tracker.upsert_endpoint_slice(&slice(
        "sctp",
        "a",
        9000,
        "SCTP",
        &[ready("10.0.1.50", "node-a")],
    ));
}
