//! From scenario specs to what the proxy and the world take: k8s-openapi objects,
//! [`ProxyConfig`], [`NodeInfo`], probes, with the Kubernetes API's (and upstream
//! kube-proxy's) defaults filled in.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort,
    ServiceSpec as K8sServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
use kproxy_core::convert::{LABEL_SERVICE_NAME, LABEL_TOPOLOGY_ZONE};
use kproxy_core::model::DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS;
use kproxy_core::{
    IpFamily, LocalTrafficDetector, NodeInfo, NodePortAddresses, Protocol, ProxyConfig,
};

use super::spec::{
    Cidr, ConfigSpec, EndpointSliceSpec, IntOrString, NodeSpec, ProbeSpec, ServiceSpec, Step,
};
use kproxy_rig::PodAttachment;
use kproxy_rig::probe::{Expectation, Probe};

use crate::factory::{canonical_mode, same_mode};

/// The node name when a scenario gives none (upstream's tests call it `test-node`).
pub const DEFAULT_NODE_NAME: &str = "test-node";
/// The node address when a scenario gives none (upstream's `testNodeIP`).
pub const DEFAULT_NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2));
/// The namespace of objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The pod link prefix for `InterfaceNamePrefix` when the config names none.
pub const DEFAULT_INTERFACE_PREFIX: &str = "veth";
/// The pod bridge for `BridgeInterface` when the config names none.
pub const DEFAULT_BRIDGE: &str = "cni0";

fn parse_cidrs(items: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|item| {
            Cidr::parse(item)
                .map(|cidr| cidr.0.trunc())
                .map_err(|e| format!("{field}: {e}"))
        })
        .collect()
}

impl ConfigSpec {
    /// The families to program: `IPv4`, `IPv6`, or both (`DualStack`, the default).
    ///
    /// # Errors
    ///
    /// For any other value.
    pub fn ip_families(&self) -> Result<Vec<IpFamily>, String> {
        match self.ip_family.as_deref() {
            Some("IPv4") => Ok(vec![IpFamily::V4]),
            Some("IPv6") => Ok(vec![IpFamily::V6]),
            None | Some("DualStack") => Ok(vec![IpFamily::V4, IpFamily::V6]),
            Some(other) => Err(format!(
                "ipFamily: {other:?} is not IPv4, IPv6 or DualStack"
            )),
        }
    }

    /// The cluster CIDRs.
    ///
    /// # Errors
    ///
    /// When one does not parse.
    pub fn cluster_cidrs(&self) -> Result<Vec<IpNet>, String> {
        parse_cidrs(
            &self
                .cluster_cidr
                .as_ref()
                .map(|c| c.items())
                .unwrap_or_default(),
            "clusterCIDR",
        )
    }

    /// Whether the expectations are written for `backend` (true when `backend` is unset).
    pub fn describes_backend(&self, backend: &str) -> bool {
        self.backend
            .as_deref()
            .is_none_or(|own| same_mode(own, backend))
    }

    /// How the world attaches pods, so the configured local-traffic detector can see them.
    pub fn pod_attachment(&self) -> PodAttachment {
        match self.local_detector.as_deref() {
            Some("BridgeInterface") => PodAttachment::Bridge {
                name: self
                    .bridge_interface
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned()),
            },
            _ => PodAttachment::Veth {
                prefix: self
                    .interface_name_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_INTERFACE_PREFIX.to_owned()),
            },
        }
    }

    /// The proxy settings for a run of `backend` (which decides the default of
    /// `nodePortAddresses` when `config.backend` is unset: primary IPs for nftables, every
    /// local address otherwise, as upstream).
    ///
    /// # Errors
    ///
    /// When a value is not one the format allows, naming the field.
    pub fn to_proxy_config(&self, backend: &str) -> Result<ProxyConfig, String> {
        let cluster_cidrs = self.cluster_cidrs()?;
        let local_detector = match self.local_detector.as_deref() {
            None | Some("ClusterCIDR") if cluster_cidrs.is_empty() => LocalTrafficDetector::None,
            None | Some("ClusterCIDR") => LocalTrafficDetector::ClusterCidr(cluster_cidrs),
            Some("NodeCIDR") => LocalTrafficDetector::NodeCidr,
            Some("InterfaceNamePrefix") => LocalTrafficDetector::InterfaceNamePrefix(
                self.interface_name_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_INTERFACE_PREFIX.to_owned()),
            ),
            Some("BridgeInterface") => LocalTrafficDetector::BridgeInterface(
                self.bridge_interface
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned()),
            ),
            Some("None") => LocalTrafficDetector::None,
            Some(other) => {
                return Err(format!(
                    "localDetector: {other:?} is not ClusterCIDR, NodeCIDR, InterfaceNamePrefix, BridgeInterface or None"
                ));
            }
        };
        let node_port_addresses = match &self.node_port_addresses {
            None => {
                let mode = self.backend.as_deref().unwrap_or(backend);
                if canonical_mode(mode) == "nftables" {
                    NodePortAddresses::Primary
                } else {
                    NodePortAddresses::All
                }
            }
            Some(list) if list.is_empty() => NodePortAddresses::All,
            Some(list) if list.iter().any(|item| item == "primary") => {
                if list.len() > 1 {
                    return Err(
                        "nodePortAddresses: \"primary\" cannot be mixed with CIDRs".to_owned()
                    );
                }
                NodePortAddresses::Primary
            }
            Some(list) => NodePortAddresses::Cidrs(parse_cidrs(list, "nodePortAddresses")?),
        };
        let service_cidrs = parse_cidrs(
            &self
                .service_cidrs
                .as_ref()
                .map(|c| c.items())
                .unwrap_or_default(),
            "serviceCIDRs",
        )?;
        Ok(ProxyConfig {
            ip_families: self.ip_families()?,
            local_detector,
            masquerade_all: self.masquerade_all.unwrap_or(false),
            node_port_addresses,
            service_cidrs,
            ..ProxyConfig::default()
        })
    }
}

impl NodeSpec {
    /// The node's name.
    pub fn node_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| DEFAULT_NODE_NAME.to_owned())
    }

    /// The node's links and addresses, `lo` always included.
    ///
    /// # Errors
    ///
    /// For a link name the kernel would refuse.
    pub fn interface_map(&self) -> Result<BTreeMap<String, Vec<IpNet>>, String> {
        let loopback: Vec<IpNet> = vec![
            "127.0.0.1/8".parse().expect("valid"),
            "::1/128".parse().expect("valid"),
        ];
        let mut map: BTreeMap<String, Vec<IpNet>> = match &self.interfaces {
            Some(interfaces) => interfaces
                .iter()
                .map(|(name, cidrs)| (name.clone(), cidrs.iter().map(|cidr| cidr.0).collect()))
                .collect(),
            None => {
                let ips = self.ips.clone().unwrap_or_else(|| vec![DEFAULT_NODE_IP]);
                let eth0 = ips
                    .iter()
                    .map(|ip| {
                        IpNet::new(*ip, if ip.is_ipv4() { 24 } else { 64 }).expect("valid prefix")
                    })
                    .collect();
                BTreeMap::from([("eth0".to_owned(), eth0)])
            }
        };
        for name in map.keys() {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(format!(
                    "interfaces: {name:?} is not a valid link name (1-15 characters)"
                ));
            }
        }
        map.entry("lo".to_owned()).or_insert(loopback);
        if map.len() == 1 {
            return Err("interfaces: the node needs a link besides lo".to_owned());
        }
        Ok(map)
    }

    /// The node's addresses: `ips`, or those of its links, or 192.168.0.2.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        if let Some(ips) = &self.ips {
            return ips.clone();
        }
        let from_links: Vec<IpAddr> = self
            .interfaces
            .iter()
            .flatten()
            .filter(|(name, _)| name.as_str() != "lo")
            .flat_map(|(_, cidrs)| cidrs.iter().map(|cidr| cidr.0.addr()))
            .filter(|ip| !ip.is_loopback() && !is_link_local(*ip))
            .collect();
        if from_links.is_empty() {
            vec![DEFAULT_NODE_IP]
        } else {
            from_links
        }
    }

    /// The primary address: `primaryIP` or the first of the node's addresses.
    pub fn primary_ip(&self) -> IpAddr {
        self.primary_ip.unwrap_or_else(|| self.node_ips()[0])
    }

    /// The link that holds the primary address, if any.
    pub fn primary_interface(&self) -> Option<String> {
        let primary = self.primary_ip();
        self.interface_map()
            .ok()?
            .into_iter()
            .find(|(name, nets)| name != "lo" && nets.iter().any(|net| net.addr() == primary))
            .map(|(name, _)| name)
    }

    /// The node's pod CIDRs (`podCIDR` and `podCIDRs`).
    ///
    /// # Errors
    ///
    /// When one does not parse.
    pub fn pod_cidr_list(&self) -> Result<Vec<IpNet>, String> {
        let mut items = self
            .pod_cidr
            .as_ref()
            .map(|c| c.items())
            .unwrap_or_default();
        items.extend(self.pod_cidrs.iter().flatten().cloned());
        let mut cidrs = parse_cidrs(&items, "podCIDR")?;
        cidrs.dedup();
        Ok(cidrs)
    }

    /// What the proxy knows about its node: name, zone label, pod CIDRs, and its addresses
    /// with the primary one first.
    ///
    /// # Errors
    ///
    /// When a pod CIDR does not parse.
    pub fn to_node_info(&self) -> Result<NodeInfo, String> {
        let primary = self.primary_ip();
        let mut addresses = vec![primary];
        addresses.extend(self.node_ips().into_iter().filter(|ip| *ip != primary));
        Ok(NodeInfo {
            name: self.node_name(),
            zone: self.labels.get(LABEL_TOPOLOGY_ZONE).cloned(),
            pod_cidrs: self.pod_cidr_list()?,
            addresses,
        })
    }

    /// Whether `addr` is the node's own (any link's address, any loopback address, or one
    /// of `ips`).
    pub fn owns(&self, addr: IpAddr) -> bool {
        addr.is_loopback()
            || self.node_ips().contains(&addr)
            || self
                .interface_map()
                .is_ok_and(|map| map.values().flatten().any(|net| net.addr() == addr))
    }
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

impl ServiceSpec {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    /// The Service as the API server would store it.
    pub fn to_k8s(&self) -> Service {
        let type_ = self.type_.clone().unwrap_or_else(|| "ClusterIP".to_owned());
        let external = matches!(type_.as_str(), "NodePort" | "LoadBalancer");
        let cluster_ips = self
            .cluster_ips
            .clone()
            .filter(|ips| !ips.is_empty())
            .or_else(|| self.cluster_ip.clone().map(|ip| vec![ip]));
        let affinity = self
            .session_affinity
            .clone()
            .unwrap_or_else(|| "None".to_owned());
        let affinity_config = (affinity == "ClientIP").then(|| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(self.session_affinity_timeout_seconds.unwrap_or(
                    i32::try_from(DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS).unwrap_or(i32::MAX),
                )),
            }),
        });
        let ports = self
            .ports
            .iter()
            .map(|port| ServicePort {
                name: port.name.clone(),
                port: port.port,
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                node_port: port.node_port.filter(|n| *n != 0),
                target_port: Some(match &port.target_port {
                    None => K8sIntOrString::Int(port.port),
                    Some(IntOrString::Int(n)) => K8sIntOrString::Int(*n),
                    Some(IntOrString::String(name)) => K8sIntOrString::String(name.clone()),
                }),
                ..ServicePort::default()
            })
            .collect();
        let spec = K8sServiceSpec {
            type_: Some(type_),
            cluster_ip: cluster_ips.as_ref().and_then(|ips| ips.first().cloned()),
            cluster_ips,
            external_ips: non_empty(&self.external_ips),
            load_balancer_source_ranges: non_empty(&self.load_balancer_source_ranges),
            external_traffic_policy: self
                .external_traffic_policy
                .clone()
                .or_else(|| external.then(|| "Cluster".to_owned())),
            internal_traffic_policy: Some(
                self.internal_traffic_policy
                    .clone()
                    .unwrap_or_else(|| "Cluster".to_owned()),
            ),
            session_affinity: Some(affinity),
            session_affinity_config: affinity_config,
            health_check_node_port: self.health_check_node_port.filter(|n| *n != 0),
            traffic_distribution: self.traffic_distribution.clone(),
            ports: Some(ports),
            ..K8sServiceSpec::default()
        };
        let status = (!self.load_balancer_ingress.is_empty()).then(|| ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    self.load_balancer_ingress
                        .iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.clone()),
                            ip_mode: Some(
                                self.load_balancer_ingress_ip_mode
                                    .clone()
                                    .unwrap_or_else(|| "VIP".to_owned()),
                            ),
                            ..LoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
            ..ServiceStatus::default()
        });
        Service {
            metadata: ObjectMeta {
                namespace: Some(self.namespace()),
                name: Some(self.name.clone()),
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status,
        }
    }

    /// Whether this Service has ClientIP session affinity on the port a probe reaches:
    /// a cluster IP, external IP or load-balancer IP with its port, or a node address (as
    /// decided by `is_node`) with its node port.
    pub fn has_affinity_for(&self, probe: &Probe, is_node: impl Fn(IpAddr) -> bool) -> bool {
        if self.session_affinity.as_deref() != Some("ClientIP") {
            return false;
        }
        let dst = probe.dst.to_string();
        let mut vips: Vec<&String> = self.cluster_ips.iter().flatten().collect();
        vips.extend(self.cluster_ip.iter());
        vips.extend(self.external_ips.iter());
        vips.extend(self.load_balancer_ingress.iter());
        let normalize = |ip: &String| {
            kproxy_core::convert::parse_ip(ip.trim())
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        self.ports.iter().any(|port| {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if !protocol.eq_ignore_ascii_case(&probe.protocol.to_string()) {
                return false;
            }
            let on_vip =
                i32::from(probe.dport) == port.port && vips.iter().any(|vip| normalize(vip) == dst);
            let on_node_port = port.node_port == Some(i32::from(probe.dport)) && is_node(probe.dst);
            on_vip || on_node_port
        })
    }
}

fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

impl EndpointSliceSpec {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    /// The address type: as given, or the family of the first address.
    pub fn address_type(&self) -> String {
        self.address_type.clone().unwrap_or_else(|| {
            let first = self
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.first())
                .next();
            if first.is_some_and(|address| address.contains(':')) {
                "IPv6"
            } else {
                "IPv4"
            }
            .to_owned()
        })
    }

    /// The EndpointSlice as the API server would store it; `default_name` is used when the
    /// spec names none.
    pub fn to_k8s(&self, default_name: &str) -> EndpointSlice {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_SERVICE_NAME.to_owned(), self.service.clone());
        let endpoints = self
            .endpoints
            .iter()
            .map(|endpoint| Endpoint {
                addresses: endpoint.addresses.clone(),
                conditions: Some(EndpointConditions {
                    ready: endpoint.ready,
                    serving: endpoint.serving,
                    terminating: endpoint.terminating,
                }),
                hints: endpoint.hints.as_ref().map(|hints| EndpointHints {
                    for_zones: hints.for_zones.as_ref().map(|zones| {
                        zones
                            .iter()
                            .map(|zone| ForZone {
                                name: zone.name().to_owned(),
                            })
                            .collect()
                    }),
                    for_nodes: hints.for_nodes.as_ref().map(|nodes| {
                        nodes
                            .iter()
                            .map(|node| ForNode {
                                name: node.name().to_owned(),
                            })
                            .collect()
                    }),
                }),
                node_name: endpoint.node_name.clone(),
                zone: endpoint.zone.clone(),
                ..Endpoint::default()
            })
            .collect();
        let ports = self
            .ports
            .iter()
            .map(|port| EndpointPort {
                name: port.name.clone(),
                port: port.port,
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                ..EndpointPort::default()
            })
            .collect();
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(self.namespace()),
                name: Some(self.name.clone().unwrap_or_else(|| default_name.to_owned())),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            address_type: self.address_type(),
            endpoints,
            ports: Some(ports),
        }
    }
}

/// Objects keyed by namespace and name.
pub type ObjectMap<T> = BTreeMap<(String, String), T>;

impl Step {
    /// The step's Services and EndpointSlices, keyed by namespace and name. Unnamed slices
    /// are called `<service>-<n>`, counting that service's slices in this step.
    pub fn objects(&self) -> (ObjectMap<Service>, ObjectMap<EndpointSlice>) {
        let services = self
            .services
            .iter()
            .map(|svc| ((svc.namespace(), svc.name.clone()), svc.to_k8s()))
            .collect();
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut slices = BTreeMap::new();
        for slice in &self.endpoint_slices {
            let count = counts
                .entry((slice.namespace(), slice.service.clone()))
                .or_default();
            let default_name = format!("{}-{count}", slice.service);
            *count += 1;
            let object = slice.to_k8s(&default_name);
            let name = object.metadata.name.clone().unwrap_or_default();
            slices.insert((slice.namespace(), name), object);
        }
        (services, slices)
    }

    /// Whether the probe reaches a service port with ClientIP session affinity.
    pub fn affinity_for(&self, probe: &Probe, is_node: impl Fn(IpAddr) -> bool + Copy) -> bool {
        self.services
            .iter()
            .any(|svc| svc.has_affinity_for(probe, is_node))
    }
}

/// Parses a protocol name (`TCP`, `UDP`, `SCTP`, any case).
///
/// # Errors
///
/// For anything else.
pub fn protocol(name: &str) -> Result<Protocol, String> {
    Protocol::from_k8s(&name.to_ascii_uppercase())
        .ok_or_else(|| format!("{name:?} is not TCP, UDP or SCTP"))
}

impl ProbeSpec {
    /// The packet to send.
    ///
    /// # Errors
    ///
    /// For an unknown protocol, or a source and destination of different families.
    pub fn to_probe(&self) -> Result<Probe, String> {
        let protocol =
            protocol(self.proto.as_deref().unwrap_or("TCP")).map_err(|e| format!("proto: {e}"))?;
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(format!(
                "src {} and dst {} are of different families",
                self.src, self.dst
            ));
        }
        Ok(Probe {
            src: self.src,
            dst: self.dst,
            dport: self.dport,
            protocol,
        })
    }

    /// The expected outcome under `mode`.
    ///
    /// # Errors
    ///
    /// When `expect` is not one the format defines.
    pub fn expectation(&self, mode: &str) -> Result<Expectation, String> {
        self.expect_for(mode).unwrap_or("").parse()
    }

    /// The expected outcome's text for `mode`: its `expectBy` entry, else `expect`.
    pub fn expect_for(&self, mode: &str) -> Option<&str> {
        self.expect_by
            .iter()
            .find(|(name, _)| same_mode(name, mode))
            .map(|(_, expect)| expect.as_str())
            .or(self.expect.as_deref())
    }

    /// Whether `mode` must masquerade the probe: its `masqBy` entry, else `masq` (default
    /// false).
    pub fn masq_for(&self, mode: &str) -> bool {
        self.masq_by
            .iter()
            .find(|(name, _)| same_mode(name, mode))
            .map(|(_, masq)| *masq)
            .or(self.masq)
            .unwrap_or(false)
    }

    /// A label for the report: the name, or the packet.
    pub fn label(&self) -> String {
        match (&self.name, self.to_probe()) {
            (Some(name), _) => name.clone(),
            (None, Ok(probe)) => probe.to_string(),
            (None, Err(_)) => format!("{} -> {}:{}", self.src, self.dst, self.dport),
        }
    }
}
