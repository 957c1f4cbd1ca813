//! The backend-neutral model: what a dataplane needs to know about services, endpoints and
//! the node, with every Kubernetes default already applied and every field already validated.
//!
//! Dual-stack is carried in the values, not the keys: a [`ServicePort`] lists the cluster IPs of
//! both families and an endpoint list may mix them. A backend that programs one family at a time
//! uses [`ServicePort::cluster_ip`] and [`Endpoint::family`] to pick its half.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// The transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP, the Kubernetes default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name used by nftables and iptables (`tcp`, `udp`, `sctp`).
    pub fn as_lower_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(value: &str) -> Option<Protocol> {
        match value {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for IpFamily {
    /// Upstream's spelling: `IPv4`, `IPv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }
}

/// The namespace and name of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl NamespacedName {
    /// Builds a name from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The key of everything: one port of one Service, named as upstream kube-proxy names it.
///
/// Ports are identified by their *name* and protocol, not their number, because that is how
/// EndpointSlices refer to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a Service's single unnamed port).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Builds a key from its parts.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
        protocol: Protocol,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
            protocol,
        }
    }

    /// The Service this port belongs to.
    pub fn service(&self) -> NamespacedName {
        NamespacedName::new(self.namespace.clone(), self.name.clone())
    }
}

impl fmt::Display for ServicePortName {
    /// Upstream's spelling: `ns/name:port/PROTO` (`ns/name/PROTO` hides nothing when unnamed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}/{}", self.namespace, self.name, self.protocol)
        } else {
            write!(
                f,
                "{}/{}:{}/{}",
                self.namespace, self.name, self.port, self.protocol
            )
        }
    }
}

/// Client-IP session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionAffinity {
    /// No affinity: every new connection is balanced afresh.
    None,
    /// Connections from one client IP go to the same endpoint while they keep coming within
    /// the timeout.
    ClientIp {
        /// Seconds of idleness after which the affinity is forgotten (Kubernetes default 10800).
        timeout_seconds: u32,
    },
}

/// The Kubernetes default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// `spec.trafficDistribution`, kept for backends that want it; endpoint selection relies on
/// the hints the EndpointSlice controller derives from it, as upstream does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrafficDistribution {
    /// `PreferClose` or `PreferSameZone`.
    PreferSameZone,
    /// `PreferSameNode`.
    PreferSameNode,
    /// A value this proxy does not know; treated as unset.
    Other(String),
}

/// One service port as a dataplane sees it: every address it is reachable on and how traffic
/// to it is to be treated, plus what some backends key on without it changing a packet's
/// path in the kernel backends: [`app_protocol`](Self::app_protocol) and the Service's
/// [`labels`](Self::labels) and [`annotations`](Self::annotations).
///
/// Every field counts in comparisons, so a change of labels only (or of an endpoint's
/// [`target_ref`](Endpoint::target_ref)) is a change the tracker reports: an embedder that
/// keys on them must see it. Its [`plan`](crate::plan) is the same, so a backend that compares
/// what it renders writes nothing for it (the nftables backend compares rendered chains and
/// elements; stale-flow cleaning looks at endpoints and addresses only). A backend that
/// rewrites a service's rules on any change of its `ServicePort` would rewrite them needlessly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// Which port of which Service this is.
    pub name: ServicePortName,
    /// Cluster IPs, at most one per family, in the Service's family order.
    pub cluster_ips: Vec<IpAddr>,
    /// The service port number.
    pub port: u16,
    /// The node port, if the Service has one for this port.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs that this proxy short-circuits (`ipMode` VIP or unset).
    /// Ingress IPs with `ipMode: Proxy` are left out on purpose, as upstream does: traffic to
    /// them must reach the load balancer, which proxies it.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`; empty means every source is allowed.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy: Local` on a Service that is reachable from outside.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// The health-check node port of a LoadBalancer Service with `externalTrafficPolicy: Local`.
    pub health_check_node_port: Option<u16>,
    /// `spec.trafficDistribution`.
    pub traffic_distribution: Option<TrafficDistribution>,
    /// The port's `appProtocol` (e.g. `kubernetes.io/h2c`, `http`), as given; this proxy's
    /// own backends do not read it.
    pub app_protocol: Option<String>,
    /// The Service's labels, opaque, shared by all its ports.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The Service's annotations, opaque, shared by all its ports, without
    /// [`ANNOTATION_LAST_APPLIED`] (a copy of the whole object).
    pub annotations: Arc<BTreeMap<String, String>>,
}

/// `kubectl apply`'s copy of the whole object. Left out of [`ServicePort::annotations`]: it is
/// often larger than everything else the proxy keeps of a Service, and no backend keys on it.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl ServicePort {
    /// A plain ClusterIP service port with every optional feature off; a base for tests and
    /// examples.
    pub fn cluster_ip(name: ServicePortName, cluster_ip: IpAddr, port: u16) -> Self {
        Self {
            name,
            cluster_ips: vec![cluster_ip],
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            traffic_distribution: None,
            app_protocol: None,
            labels: Arc::default(),
            annotations: Arc::default(),
        }
    }

    /// The protocol (from the key).
    pub fn protocol(&self) -> Protocol {
        self.name.protocol
    }

    /// The cluster IP of one family, if the Service has one.
    pub fn cluster_ip_of(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
    }

    /// Whether traffic can reach this port from outside the cluster: a node port, an external
    /// IP or a load-balancer IP (upstream's `ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// Whether some traffic uses the cluster-wide endpoint set (upstream's
    /// `UsesClusterEndpoints`). Even with `externalTrafficPolicy: Local` external traffic from
    /// inside the cluster is short-circuited to cluster endpoints, so any externally reachable
    /// port needs them.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Whether some traffic uses the node-local endpoint set (upstream's `UsesLocalEndpoints`).
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// One endpoint of one service port, with the conditions of its EndpointSlice entry after the
/// API's nil defaults (`ready` nil → true, `serving` nil → true, `terminating` nil → false).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The endpoint's address (the first of its slice entry's addresses, as upstream).
    pub address: IpAddr,
    /// The endpoint's port.
    pub port: u16,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The node the endpoint runs on.
    pub node_name: Option<Arc<str>>,
    /// The endpoint's zone.
    pub zone: Option<Arc<str>>,
    /// `hints.forZones`, sorted.
    pub zone_hints: BTreeSet<Arc<str>>,
    /// `hints.forNodes`, sorted.
    pub node_hints: BTreeSet<Arc<str>>,
    /// `targetRef`: the object behind the endpoint, usually its Pod.
    pub target_ref: Option<Arc<TargetRef>>,
}

/// The object an endpoint stands for (an EndpointSlice endpoint's `targetRef`), usually a Pod:
/// for backends that key on the pod (policy, per-pod counters). Fields the slice leaves out
/// are empty.
///
/// Compact on purpose: every endpoint of a real cluster has one (a million at 100,000 Services
/// × 10). `kind` and `namespace` are shared by the endpoints of a slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TargetRef {
    /// `kind`, e.g. `Pod`.
    pub kind: Arc<str>,
    /// `namespace`.
    pub namespace: Arc<str>,
    /// `name`.
    pub name: Box<str>,
    /// `uid`: tells a Pod from a later one of the same name.
    pub uid: Box<str>,
}

impl Endpoint {
    /// A ready endpoint with no node, zone or hints; a base for tests and examples.
    pub fn ready(address: IpAddr, port: u16) -> Self {
        Self {
            address,
            port,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            zone_hints: BTreeSet::new(),
            node_hints: BTreeSet::new(),
            target_ref: None,
        }
    }

    /// The endpoint's IP family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.address)
    }

    /// Whether the endpoint runs on the named node.
    pub fn is_local_to(&self, node_name: &str) -> bool {
        self.node_name.as_deref() == Some(node_name)
    }
}

impl fmt::Display for Endpoint {
    /// `10.0.0.1:80` or `[fd00::1]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// What the proxy needs to know about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// The node's name: endpoints with this `nodeName` are local.
    pub name: String,
    /// `topology.kubernetes.io/zone`, used for zone hints.
    pub zone: Option<String>,
    /// `spec.podCIDRs`, used by the `NodeCIDR` local-traffic detector.
    pub pod_cidrs: Vec<IpNet>,
    /// The node's addresses from `status.addresses` (InternalIP and ExternalIP).
    pub addresses: Vec<IpAddr>,
}

impl NodeInfo {
    /// A node known only by name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// The effective state of one service port: the port and all its endpoints, sorted by address
/// and port, each address counted once. Both families are present; endpoint selection and
/// family filtering happen in the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortState {
    /// The service port.
    pub port: ServicePort,
    /// Every endpoint the EndpointSlices list for it, whatever its conditions.
    pub endpoints: Vec<Endpoint>,
}
