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

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{
    ConversionOptions, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig, ServiceChangeTracker,
};
use kproxy_objects as objects;

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
    let mut service = cluster_ips
        .iter()
        .fold(objects::service("ns", name), |service, ip| {
            service.cluster_ip(ip)
        });
    service = match kind {
        Kind::ClusterIp => service.type_("ClusterIP").port("p", port, protocol),
        Kind::NodePort { node_port, .. } => service
            .type_("NodePort")
            .port("p", port, protocol)
            .node_port(node_port),
        Kind::LoadBalancer {
            node_port, ranges, ..
        } => {
            let service = service
                .type_("LoadBalancer")
                .port("p", port, protocol)
                .node_port(node_port)
                .external_ip("192.0.2.10")
                .load_balancer_ip("198.51.100.7");
            if ranges {
                service.source_range("203.0.113.0/24")
            } else {
                service
            }
        }
    };
    let local = match kind {
        Kind::ClusterIp => false,
        Kind::NodePort { local, .. } | Kind::LoadBalancer { local, .. } => local,
    };
    if local {
        service = service.external_policy_local();
        if matches!(kind, Kind::LoadBalancer { .. }) {
            service = service.health_check_node_port(30999);
        }
    }
    if affinity {
        service = service.client_ip_affinity(None);
    }
    service.build()
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
    endpoints
        .iter()
        .fold(
            objects::slice("ns", service, &format!("{service}-{suffix}")).port("p", port, protocol),
            |slice, (address, ready, serving, terminating, node)| {
                slice.endpoint(
                    objects::endpoint(address)
                        .conditions_are(*ready, *serving, *terminating)
                        .node(node),
                )
            },
        )
        .build()
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

/// kproxy-nft in a namespace, as the conformance runner and checks build it; `balancing`
/// overrides the configuration's.
#[derive(Debug, Default)]
pub struct Nftables {
    pub balancing: Option<kproxy_core::Balancing>,
}

impl kproxy_conformance::DataplaneFactory for Nftables {
    fn mode(&self) -> &str {
        "nftables"
    }

    fn preflight(&self) -> kproxy_rig::Result<()> {
        kproxy_rig::netns::require_tool("nft", &["--version"])
    }

    fn build(
        &self,
        config: &ProxyConfig,
        node_netns: &str,
    ) -> kproxy_rig::Result<Box<dyn kproxy_core::Dataplane>> {
        let mut config = config.clone();
        if let Some(balancing) = self.balancing {
            config.balancing = balancing;
        }
        Ok(Box::new(kproxy_nft::NftDataplane::new(
            config,
            Box::new(kproxy_nft::NftCommand::in_netns(node_netns)),
        )))
    }
}
