//! What a packet meets, decided once for every backend: per IP family the table-wide
//! decisions ([`FamilyPlan`]), and per service port and family what it needs ([`PortPlan`]).
//!
//! Pure: a plan is a function of the desired state and the configuration. A backend only
//! translates plans into its own kernel's terms (chains, sets, virtual servers...), so two
//! backends cannot disagree about whether a packet is rejected, dropped, masqueraded or
//! short-circuited. Upstream kube-proxy makes these decisions in every proxier separately.
//!
//! ```
//! use kproxy_core::plan::{FamilyPlan, PortPlan, Route};
//! use kproxy_core::{Endpoint, IpFamily, ProxyConfig, ProxyState, ServicePort, ServicePortName,
//!     ServicePortState, Protocol};
//!
//! let name = ServicePortName::new("ns", "web", "http", Protocol::Tcp);
//! let port = ServicePort::cluster_ip(name, "172.30.0.10".parse().unwrap(), 80);
//! let state = ServicePortState { port, endpoints: vec![Endpoint::ready("10.1.0.5".parse().unwrap(), 8080)] };
//! let proxy_state = ProxyState::default();
//! let family = FamilyPlan::new(IpFamily::V4, &ProxyConfig::default(), &proxy_state);
//! let plan = PortPlan::new(&family, &state).expect("the port has an IPv4 cluster IP");
//! assert_eq!(plan.internal, Route::Endpoints(kproxy_core::plan::Policy::Cluster));
//! assert_eq!(plan.cluster_endpoints.len(), 1);
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Balancing, LocalTrafficDetector, NodePortAddresses, ProxyConfig};
use crate::model::{
    Endpoint, IpFamily, NodeInfo, Protocol, ServicePortName, ServicePortState, SessionAffinity,
};
use crate::selection::select_endpoints;
use crate::state::ProxyState;

/// How traffic from pods on this node is recognised in one family (upstream's resolved
/// `LocalTrafficDetector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTraffic {
    /// The source address is inside one of these CIDRs (never empty).
    SourceCidrs(Vec<IpNet>),
    /// The packet arrived on an interface whose name starts with this prefix.
    InterfacePrefix(String),
    /// The packet arrived on this bridge.
    Bridge(String),
    /// Nothing tells local traffic apart in this family (no detector, or CIDRs only of the
    /// other family).
    Undetectable,
}

impl LocalTraffic {
    /// Whether local traffic can be told apart at all.
    pub fn is_detectable(&self) -> bool {
        !matches!(self, LocalTraffic::Undetectable)
    }
}

/// Which traffic to a cluster IP is masqueraded, whatever its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIpMasquerade {
    /// Every packet (`masqueradeAll`).
    All,
    /// Packets that do not come from a local pod: they may have been routed here from off the
    /// cluster, and replies must come back through this node.
    NotFromLocalPods,
    /// None (no way to tell local traffic apart, and no `masqueradeAll`).
    Never,
}

/// Which destinations node ports answer on, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortDestinations {
    /// Every local address except loopback.
    AllLocal,
    /// Exactly these addresses (the node's primary address, for `primary`).
    Addresses(Vec<IpAddr>),
    /// Local addresses (except loopback) inside these CIDRs.
    LocalInCidrs(Vec<IpNet>),
    /// None: node ports do not answer in this family.
    None,
}

/// The table-wide decisions of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan<'a> {
    /// The family.
    pub family: IpFamily,
    /// How local-pod traffic is recognised.
    pub local_traffic: LocalTraffic,
    /// Which cluster-IP traffic is masqueraded.
    pub cluster_ip_masquerade: ClusterIpMasquerade,
    /// Where node ports answer.
    pub node_ports: NodePortDestinations,
    /// The effective service CIDRs of this family, sorted, each once: the configured ones and
    /// those of the cluster's ServiceCIDR objects. Traffic to an unallocated address inside
    /// them is dropped; to an allocated one on a port no service uses, rejected.
    pub service_cidrs: Vec<IpNet>,
    /// The node's primary address of this family.
    pub primary_ip: Option<IpAddr>,
    /// How connections are spread over endpoints.
    pub balancing: Balancing,
    /// The fwmark bit that flags a packet for masquerading.
    pub masquerade_mark: u32,
    /// The node this proxy runs on.
    pub node: &'a NodeInfo,
}

impl<'a> FamilyPlan<'a> {
    /// Resolves the configuration and the node for `family`.
    pub fn new(family: IpFamily, config: &ProxyConfig, state: &'a ProxyState) -> Self {
        let node = state.node();
        let of_family = |cidrs: &[IpNet]| -> Vec<IpNet> {
            cidrs
                .iter()
                .copied()
                .filter(|cidr| IpFamily::of_net(cidr) == family)
                .collect()
        };
        let local_traffic = match &config.local_detector {
            LocalTrafficDetector::ClusterCidr(cidrs) => source_cidrs(of_family(cidrs)),
            LocalTrafficDetector::NodeCidr => source_cidrs(of_family(&node.pod_cidrs)),
            LocalTrafficDetector::InterfaceNamePrefix(prefix) => {
                LocalTraffic::InterfacePrefix(prefix.clone())
            }
            LocalTrafficDetector::BridgeInterface(bridge) => LocalTraffic::Bridge(bridge.clone()),
            LocalTrafficDetector::None => LocalTraffic::Undetectable,
        };
        let cluster_ip_masquerade = if config.masquerade_all {
            ClusterIpMasquerade::All
        } else if local_traffic.is_detectable() {
            ClusterIpMasquerade::NotFromLocalPods
        } else {
            ClusterIpMasquerade::Never
        };
        let primary_ip = node
            .addresses
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family);
        let node_ports = match &config.node_port_addresses {
            NodePortAddresses::All => NodePortDestinations::AllLocal,
            NodePortAddresses::Primary => match primary_ip {
                Some(ip) => NodePortDestinations::Addresses(vec![ip]),
                None => NodePortDestinations::None,
            },
            NodePortAddresses::Cidrs(cidrs) => {
                let cidrs = of_family(cidrs);
                if cidrs.is_empty() {
                    NodePortDestinations::None
                } else {
                    NodePortDestinations::LocalInCidrs(cidrs)
                }
            }
        };
        let mut service_cidrs: Vec<IpNet> = of_family(&config.service_cidrs);
        service_cidrs.extend(of_family(state.service_cidrs()));
        service_cidrs.sort_by_key(ToString::to_string);
        service_cidrs.dedup();
        Self {
            family,
            local_traffic,
            cluster_ip_masquerade,
            node_ports,
            service_cidrs,
            primary_ip,
            balancing: config.balancing,
            masquerade_mark: 1u32 << config.masquerade_bit.min(31),
            node,
        }
    }

    /// The addresses of `ips` in this family.
    pub fn of_family(&self, ips: &[IpAddr]) -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| IpFamily::of(ip) == self.family)
            .collect()
    }
}

fn source_cidrs(cidrs: Vec<IpNet>) -> LocalTraffic {
    if cidrs.is_empty() {
        LocalTraffic::Undetectable
    } else {
        LocalTraffic::SourceCidrs(cidrs)
    }
}

/// Which endpoint set a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// The cluster-wide endpoints ([`PortPlan::cluster_endpoints`]).
    Cluster,
    /// This node's endpoints ([`PortPlan::local_endpoints`]).
    Local,
}

/// What becomes of new connections of one traffic class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// DNATed to one endpoint of this set (which is not empty).
    Endpoints(Policy),
    /// Dropped: endpoints exist in the cluster, but none this traffic may use (a Local policy
    /// without local endpoints).
    Drop,
    /// Rejected: no endpoint anywhere serves.
    Reject,
}

impl Route {
    /// The endpoint set, when the route leads to one.
    pub fn policy(self) -> Option<Policy> {
        match self {
            Route::Endpoints(policy) => Some(policy),
            Route::Drop | Route::Reject => None,
        }
    }
}

/// An external address of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalDestination {
    /// The address.
    pub ip: IpAddr,
    /// Whether it is a load-balancer IP (firewalled by source ranges), not an external IP.
    pub load_balancer: bool,
}

/// What external traffic (node port, external IPs, load-balancer IPs) meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPlan {
    /// External and load-balancer IPs of this family.
    pub destinations: Vec<ExternalDestination>,
    /// The node port, when there is one.
    pub node_port: Option<u16>,
    /// Where external traffic goes (after the short-circuit, when there is one).
    pub route: Route,
    /// `externalTrafficPolicy: Local` with endpoints somewhere: traffic from local pods and
    /// from the node itself does not come through a load balancer, so it goes to the
    /// cluster-wide endpoints instead; the node's own traffic is masqueraded on the way (its
    /// source would be the external address itself).
    pub short_circuit_local_traffic: bool,
    /// `externalTrafficPolicy: Cluster`: every external packet is masqueraded, since the
    /// endpoint may be on another node and replies must come back through this one.
    pub masquerade: bool,
}

impl ExternalPlan {
    /// Whether anything is programmed for external traffic besides the no-endpoint verdict
    /// (upstream's external chain): some endpoint exists in the cluster.
    pub fn has_chain(&self) -> bool {
        self.route != Route::Reject
    }
}

/// Who may reach a load-balancer IP (`loadBalancerSourceRanges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firewall {
    /// Nobody: the ranges exist only in the other family, which closes this one rather than
    /// leaving it open.
    DropAll,
    /// Sources inside these ranges, and sources equal to one of these load-balancer IPs (the
    /// node reaching a VIP it owns, when the ranges admit the node).
    Allow {
        /// The ranges of this family.
        ranges: Vec<IpNet>,
        /// Load-balancer IPs admitted as sources.
        vips: Vec<IpAddr>,
    },
}

/// One endpoint as a backend programs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedEndpoint<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Whether it may send its own connections through this node's DNAT to itself (it runs
    /// on this node, or its node is unknown), so such hairpin connections are masqueraded.
    pub hairpin: bool,
}

/// What one service port needs in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan<'a> {
    /// The service port's key.
    pub name: &'a ServicePortName,
    /// Its protocol.
    pub protocol: Protocol,
    /// The service port number.
    pub port: u16,
    /// The cluster IP of this family.
    pub cluster_ip: IpAddr,
    /// Where traffic to the cluster IP goes.
    pub internal: Route,
    /// What external traffic meets; `None` when the port has no node port and no external
    /// or load-balancer IP of this family.
    pub external: Option<ExternalPlan>,
    /// The load-balancer firewall; `None` without load-balancer IPs of this family or without
    /// source ranges.
    pub firewall: Option<Firewall>,
    /// The cluster-wide endpoint set, when some route uses it (else empty).
    pub cluster_endpoints: Vec<PlannedEndpoint<'a>>,
    /// This node's endpoint set, when some route uses it (else empty).
    pub local_endpoints: Vec<PlannedEndpoint<'a>>,
    /// `ClientIP` session affinity: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// How new connections are spread over an endpoint set.
    pub balancing: Balancing,
}

impl<'a> PortPlan<'a> {
    /// Plans `state` for `family`; `None` when the service port has no cluster IP of that
    /// family (nothing is programmed for it there).
    pub fn new(family: &FamilyPlan<'_>, state: &'a ServicePortState) -> Option<Self> {
        let port = &state.port;
        let cluster_ip = port.cluster_ip_of(family.family)?;
        let node = family.node;
        let selected = select_endpoints(port, &state.endpoints, node, Some(family.family));
        let has_endpoints = selected.has_any_endpoints;
        let has_local = !selected.local.is_empty();
        let route = |local_policy: bool| {
            let (policy, usable) = if local_policy {
                (Policy::Local, has_local)
            } else {
                (Policy::Cluster, has_endpoints)
            };
            if usable {
                Route::Endpoints(policy)
            } else if has_endpoints {
                Route::Drop
            } else {
                Route::Reject
            }
        };

        let external_ips = family.of_family(&port.external_ips);
        let load_balancer_ips = family.of_family(&port.load_balancer_ips);
        let destinations: Vec<ExternalDestination> = external_ips
            .iter()
            .map(|&ip| ExternalDestination {
                ip,
                load_balancer: false,
            })
            .chain(load_balancer_ips.iter().map(|&ip| ExternalDestination {
                ip,
                load_balancer: true,
            }))
            .collect();
        let external =
            (port.node_port.is_some() || !destinations.is_empty()).then(|| ExternalPlan {
                destinations,
                node_port: port.node_port,
                route: route(port.external_policy_local),
                short_circuit_local_traffic: port.external_policy_local && has_endpoints,
                masquerade: !port.external_policy_local,
            });

        let planned = |endpoints: Vec<&'a Endpoint>| -> Vec<PlannedEndpoint<'a>> {
            endpoints
                .into_iter()
                .map(|endpoint| PlannedEndpoint {
                    endpoint,
                    hairpin: endpoint.node_name.is_none() || endpoint.is_local_to(&node.name),
                })
                .collect()
        };
        let cluster_endpoints = if port.uses_cluster_endpoints() {
            planned(selected.cluster)
        } else {
            Vec::new()
        };
        let local_endpoints = if port.uses_local_endpoints() {
            planned(selected.local)
        } else {
            Vec::new()
        };

        Some(Self {
            name: &port.name,
            protocol: port.protocol(),
            port: port.port,
            cluster_ip,
            internal: route(port.internal_policy_local),
            external,
            firewall: firewall(
                family,
                &port.load_balancer_source_ranges,
                &load_balancer_ips,
            ),
            cluster_endpoints,
            local_endpoints,
            affinity_timeout: match port.session_affinity {
                SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
                SessionAffinity::None => None,
            },
            balancing: family.balancing,
        })
    }

    /// The endpoint set of `policy`.
    pub fn endpoints(&self, policy: Policy) -> &[PlannedEndpoint<'a>] {
        match policy {
            Policy::Cluster => &self.cluster_endpoints,
            Policy::Local => &self.local_endpoints,
        }
    }
}

fn firewall(
    family: &FamilyPlan<'_>,
    source_ranges: &[IpNet],
    load_balancer_ips: &[IpAddr],
) -> Option<Firewall> {
    if load_balancer_ips.is_empty() || source_ranges.is_empty() {
        return None;
    }
    let ranges: Vec<IpNet> = source_ranges
        .iter()
        .copied()
        .filter(|range| IpFamily::of_net(range) == family.family)
        .collect();
    if ranges.is_empty() {
        return Some(Firewall::DropAll);
    }
    let admits_node = family
        .primary_ip
        .is_some_and(|node_ip| ranges.iter().any(|range| range.contains(&node_ip)));
    let vips = if admits_node {
        load_balancer_ips.to_vec()
    } else {
        Vec::new()
    };
    Some(Firewall::Allow { ranges, vips })
}

#[cfg(test)]
mod tests;
