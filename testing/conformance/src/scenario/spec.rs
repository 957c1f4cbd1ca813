//! The scenario format's types, field for field as SCENARIOS.md spells them.
//!
//! Every object accepts a `name` (meaningful for services, slices, ports and the node;
//! a label elsewhere); the other informational fields are stripped before these types see
//! them, so `deny_unknown_fields` catches every other unknown field.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// An address with a prefix (`192.168.0.2/24`); a bare address means a host route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address (as /32 or /128).
    ///
    /// # Errors
    ///
    /// When the text is neither.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(Cidr)
            .map_err(|_| format!("{text:?} is not an address or CIDR"))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cidr::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A string that may also be written as a list (`"10.0.0.0/8,fd00::/48"` or
/// `["10.0.0.0/8", "fd00::/48"]`); commas separate items either way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string, maybe comma-separated.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl StringOrList {
    /// The items, split at commas, trimmed, empty ones left out.
    pub fn items(&self) -> Vec<String> {
        let all: Vec<&str> = match self {
            StringOrList::One(one) => vec![one.as_str()],
            StringOrList::Many(many) => many.iter().map(String::as_str).collect(),
        };
        all.iter()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A port number or a port name (`targetPort`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i32),
    /// A name.
    String(String),
}

/// The node the proxy runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// The node's name (default `test-node`): endpoints with this `nodeName` are local.
    #[serde(default)]
    pub name: Option<String>,
    /// The node's addresses (default: the addresses of its non-loopback links, or
    /// 192.168.0.2).
    #[serde(default)]
    pub ips: Option<Vec<IpAddr>>,
    /// The primary address (default: the first of `ips`).
    #[serde(default, rename = "primaryIP")]
    pub primary_ip: Option<IpAddr>,
    /// Links and their addresses (default: `lo` and `eth0` holding `ips` as /24 or /64).
    #[serde(default)]
    pub interfaces: Option<BTreeMap<String, Vec<Cidr>>>,
    /// `spec.podCIDR` (comma-separated or a list).
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<StringOrList>,
    /// `spec.podCIDRs` (runner extension; joins `podCIDR`).
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
    /// The node's labels (`topology.kubernetes.io/zone` gives its zone).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Proxy settings; left-out fields take upstream kube-proxy's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigSpec {
    /// Informational.
    #[serde(default)]
    pub name: Option<String>,
    /// The backend whose behaviour the expectations describe (`nftables`, `iptables`); unset
    /// means every backend.
    #[serde(default)]
    pub backend: Option<String>,
    /// `IPv4`, `IPv6` or `DualStack` (default: both families).
    #[serde(default)]
    pub ip_family: Option<String>,
    /// `clusterCIDR` (comma-separated or a list; default none).
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<StringOrList>,
    /// `ClusterCIDR` (default), `NodeCIDR`, `InterfaceNamePrefix`, `BridgeInterface`, `None`.
    #[serde(default)]
    pub local_detector: Option<String>,
    /// `masqueradeAll` (default false).
    #[serde(default)]
    pub masquerade_all: Option<bool>,
    /// `nodePortAddresses`: `[]` every local address, `["primary"]` the primary IPs, or
    /// CIDRs. Left out: the primary IPs for nftables (as upstream), every address otherwise.
    #[serde(default)]
    pub node_port_addresses: Option<Vec<String>>,
    /// Service CIDRs (default none).
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Option<StringOrList>,
    /// `localhostNodePorts` (default true; iptables only).
    #[serde(default)]
    pub localhost_node_ports: Option<bool>,
    /// Runner extension: the pod link prefix for `InterfaceNamePrefix` (default `veth`).
    #[serde(default)]
    pub interface_name_prefix: Option<String>,
    /// Runner extension: the pod bridge for `BridgeInterface` (default `cni0`).
    #[serde(default)]
    pub bridge_interface: Option<String>,
}

/// A Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The name (required).
    pub name: String,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// `spec.clusterIP` (`None` for headless).
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `spec.clusterIPs` (runner extension, for dual-stack; the first is `clusterIP`).
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    /// `spec.externalIPs`.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<String>,
    /// `status.loadBalancer.ingress[].ip`.
    #[serde(default)]
    pub load_balancer_ingress: Vec<String>,
    /// `status.loadBalancer.ingress[].ipMode` for every ingress IP: `VIP` (default) or `Proxy`.
    #[serde(default, rename = "loadBalancerIngressIPMode")]
    pub load_balancer_ingress_ip_mode: Option<String>,
    /// `spec.loadBalancerSourceRanges`.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    /// `Cluster` (default for NodePort and LoadBalancer) or `Local`.
    #[serde(default)]
    pub external_traffic_policy: Option<String>,
    /// `Cluster` (default) or `Local`.
    #[serde(default)]
    pub internal_traffic_policy: Option<String>,
    /// `None` (default) or `ClientIP`.
    #[serde(default)]
    pub session_affinity: Option<String>,
    /// ClientIP affinity timeout (default 10800).
    #[serde(default)]
    pub session_affinity_timeout_seconds: Option<i32>,
    /// `spec.healthCheckNodePort`; 0 means none.
    #[serde(default)]
    pub health_check_node_port: Option<i32>,
    /// `spec.trafficDistribution`.
    #[serde(default)]
    pub traffic_distribution: Option<String>,
    /// Labels (runner extension).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The ports.
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
}

/// A Service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePortSpec {
    /// The port's name (matches the EndpointSlice port of the same name).
    #[serde(default)]
    pub name: Option<String>,
    /// The service port.
    pub port: i32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The node port, if any.
    #[serde(default)]
    pub node_port: Option<i32>,
    /// The target port (default: `port`); the proxy uses the EndpointSlice's port instead.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
}

/// An EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSliceSpec {
    /// The namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The name (default `<service>-<n>`, n counting this service's slices in the step).
    #[serde(default)]
    pub name: Option<String>,
    /// The Service it belongs to (the `kubernetes.io/service-name` label).
    pub service: String,
    /// `IPv4`, `IPv6` or `FQDN` (default: the family of the first address).
    #[serde(default)]
    pub address_type: Option<String>,
    /// Labels besides `kubernetes.io/service-name` (runner extension).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The ports.
    #[serde(default)]
    pub ports: Vec<SlicePortSpec>,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// An EndpointSlice port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlicePortSpec {
    /// The name of the Service port it serves.
    #[serde(default)]
    pub name: Option<String>,
    /// The endpoints' port.
    #[serde(default)]
    pub port: Option<i32>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One entry of an EndpointSlice's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSpec {
    /// Informational.
    #[serde(default)]
    pub name: Option<String>,
    /// The addresses (the proxy uses the first).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `conditions.ready` (null: true).
    #[serde(default)]
    pub ready: Option<bool>,
    /// `conditions.serving` (null: true).
    #[serde(default)]
    pub serving: Option<bool>,
    /// `conditions.terminating` (null: false).
    #[serde(default)]
    pub terminating: Option<bool>,
    /// The node it runs on.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Its zone.
    #[serde(default)]
    pub zone: Option<String>,
    /// Topology hints.
    #[serde(default)]
    pub hints: Option<HintsSpec>,
}

/// Topology hints. Each entry is a name, or an object `{"name": ...}` as in the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HintsSpec {
    /// Informational.
    #[serde(default)]
    pub name: Option<String>,
    /// `forZones`.
    #[serde(default)]
    pub for_zones: Option<Vec<NameRef>>,
    /// `forNodes`.
    #[serde(default)]
    pub for_nodes: Option<Vec<NameRef>>,
}

/// A hint entry: `"zone-a"` or `{"name": "zone-a"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NameRef {
    /// The bare name.
    Name(String),
    /// The API's object form.
    Object {
        /// The name.
        name: String,
    },
}

impl NameRef {
    /// The name.
    pub fn name(&self) -> &str {
        match self {
            NameRef::Name(name) | NameRef::Object { name } => name,
        }
    }
}

/// A probe and its expected outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSpec {
    /// A label for the report.
    #[serde(default)]
    pub name: Option<String>,
    /// The source address.
    pub src: IpAddr,
    /// The destination address.
    pub dst: IpAddr,
    /// The destination port.
    pub dport: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub proto: Option<String>,
    /// Endpoints (`"10.180.0.1:80, [fd00::1]:80"`), `REJECT`, `DROP`, `ACCEPT` or `""`
    /// (untouched, the default).
    #[serde(default)]
    pub expect: Option<String>,
    /// Whether an endpoint must see a source other than `src` (default false).
    #[serde(default)]
    pub masq: Option<bool>,
    /// `expect` for the named modes (`nftables`, `iptables`, `ipvs`) where upstream's modes
    /// differ.
    #[serde(default)]
    pub expect_by: BTreeMap<String, String>,
    /// `masq` for the named modes.
    #[serde(default)]
    pub masq_by: BTreeMap<String, bool>,
}

/// One step of a scenario: the complete desired state and the probes to send after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// A label for the report.
    #[serde(default)]
    pub name: Option<String>,
    /// Every Service.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Every EndpointSlice.
    #[serde(default)]
    pub endpoint_slices: Vec<EndpointSliceSpec>,
    /// The probes.
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
}

/// One scenario: a node, settings, and steps applied in order to one running proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Its name (the file's stem for a single-state file).
    pub name: String,
    /// The node.
    pub node: NodeSpec,
    /// The settings.
    pub config: ConfigSpec,
    /// The steps.
    pub steps: Vec<Step>,
}
