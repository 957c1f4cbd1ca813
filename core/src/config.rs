//! Settings that every kernel dataplane shares (upstream's `KubeProxyConfiguration` fields
//! that decide what a packet meets). The core itself does not read them.

use ipnet::IpNet;

use crate::model::IpFamily;

/// How the proxy tells traffic from pods on this node ("local traffic") from the rest, to
/// decide whether external-policy traffic needs masquerading (upstream's `detectLocalMode`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalTrafficDetector {
    /// Source address inside the cluster CIDRs (`ClusterCIDR`).
    ClusterCidr(Vec<IpNet>),
    /// Source address inside this node's pod CIDRs, from the Node object (`NodeCIDR`).
    NodeCidr,
    /// Packet arrived on an interface whose name starts with this prefix
    /// (`InterfaceNamePrefix`).
    InterfaceNamePrefix(String),
    /// Packet arrived on this bridge (`BridgeInterface`).
    BridgeInterface(String),
    /// No detection: nothing counts as local (`None`, or `ClusterCIDR` without a CIDR).
    #[default]
    None,
}

/// Which addresses node ports answer on (upstream's `nodePortAddresses`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every local address of the node (the default).
    #[default]
    All,
    /// The node's primary address of each family (`primary`).
    Primary,
    /// Local addresses inside these CIDRs.
    Cidrs(Vec<IpNet>),
}

/// How a service's traffic is spread over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balancing {
    /// Each new connection picks an endpoint at random (upstream's iptables and nftables
    /// modes).
    #[default]
    Random,
    /// New connections cycle through the endpoints in order (upstream offers this only in IPVS
    /// mode, as its `rr` scheduler). A kube-proxy-rs option: `--balancing=round-robin`.
    RoundRobin,
}

/// The settings every kernel dataplane reads beyond the desired state. Settings of one mode
/// only belong to that mode's own configuration type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The families to program.
    pub ip_families: Vec<IpFamily>,
    /// How local traffic is recognised.
    pub local_detector: LocalTrafficDetector,
    /// Masquerade all traffic to services (`masqueradeAll`).
    pub masquerade_all: bool,
    /// The fwmark bit used to flag packets for masquerading (`masqueradeBit`, default 14).
    pub masquerade_bit: u8,
    /// Addresses node ports answer on.
    pub node_port_addresses: NodePortAddresses,
    /// Service CIDRs: traffic to an unallocated address inside them is dropped, and to an
    /// allocated one on a wrong port rejected.
    pub service_cidrs: Vec<IpNet>,
    /// How connections are spread over endpoints.
    pub balancing: Balancing,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            ip_families: vec![IpFamily::V4, IpFamily::V6],
            local_detector: LocalTrafficDetector::None,
            masquerade_all: false,
            masquerade_bit: 14,
            node_port_addresses: NodePortAddresses::All,
            service_cidrs: Vec::new(),
            balancing: Balancing::Random,
        }
    }
}
