//! One family's plan with the iptables spellings its rules need: the local-traffic matches,
//! the node-port destinations, and the decisions only this mode makes (node ports on
//! localhost, the conntrack-INVALID drop).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kproxy_core::plan::{FamilyPlan, LocalTraffic, NodePortDestinations};
use kproxy_core::{IpFamily, ProxyConfig, ProxyState};

use crate::IptablesConfig;

/// One family's plan, spelled for iptables.
#[derive(Debug, Clone)]
pub(crate) struct FamilyContext<'a> {
    pub(crate) plan: FamilyPlan<'a>,
    /// Matches traffic from local pods, when the detector works for this family.
    pub(crate) if_local: Option<String>,
    /// Matches traffic not from local pods.
    pub(crate) if_not_local: Option<String>,
    /// Node ports also answer on 127.0.0.0/8 (upstream's `localhostNodePorts`: IPv4 only,
    /// and only where node ports answer on every local address or on a range holding
    /// 127.0.0.1).
    pub(crate) localhost_node_ports: bool,
    /// `nf_conntrack_tcp_be_liberal` is set, so conntrack-INVALID packets are not dropped.
    pub(crate) tcp_be_liberal: bool,
    /// Upstream's large-cluster mode ([`is_large_cluster`]): the endpoint rules carry no
    /// comment.
    pub(crate) large_cluster: bool,
}

/// Above this many endpoints upstream leaves the comments out of the endpoint rules
/// (`largeClusterEndpointsThreshold`): they are most of the restore input, and on the nft
/// variant each costs the kernel's validation of the nat table time on every commit.
pub(crate) const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Whether `state` holds more than [`LARGE_CLUSTER_ENDPOINTS`] endpoints.
pub(crate) fn is_large_cluster(state: &ProxyState) -> bool {
    let mut endpoints = 0;
    state.iter().any(|(_, port)| {
        endpoints += port.endpoints.len();
        endpoints > LARGE_CLUSTER_ENDPOINTS
    })
}

/// The iptables matches of traffic from local pods and of the rest, `(local, not local)`;
/// both `None` when the detector cannot tell in this family. The IPVS mode's helper rules use
/// them too.
pub fn local_traffic_matches(local: &LocalTraffic) -> (Option<String>, Option<String>) {
    match local {
        // iptables negates one address match only; upstream's detectors take one CIDR per
        // family, and a second one of the same family is ignored here as there.
        LocalTraffic::SourceCidrs(cidrs) => {
            let cidr = cidrs[0];
            (Some(format!("-s {cidr}")), Some(format!("! -s {cidr}")))
        }
        LocalTraffic::InterfacePrefix(prefix) => (
            Some(format!("-i {prefix}+")),
            Some(format!("! -i {prefix}+")),
        ),
        LocalTraffic::Bridge(bridge) => {
            (Some(format!("-i {bridge}")), Some(format!("! -i {bridge}")))
        }
        LocalTraffic::Undetectable => (None, None),
    }
}

impl<'a> FamilyContext<'a> {
    pub(crate) fn new(
        family: IpFamily,
        config: &ProxyConfig,
        settings: &IptablesConfig,
        tcp_be_liberal: bool,
        large_cluster: bool,
        state: &'a ProxyState,
    ) -> Self {
        let plan = FamilyPlan::new(family, config, state);
        let (if_local, if_not_local) = local_traffic_matches(&plan.local_traffic);
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let localhost_node_ports = settings.localhost_node_ports
            && family == IpFamily::V4
            && match &plan.node_ports {
                NodePortDestinations::AllLocal => true,
                NodePortDestinations::LocalInCidrs(cidrs) => {
                    cidrs.iter().any(|cidr| cidr.contains(&loopback))
                }
                NodePortDestinations::Addresses(ips) => ips.contains(&loopback),
                NodePortDestinations::None => false,
            };
        Self {
            plan,
            if_local,
            if_not_local,
            localhost_node_ports,
            tcp_be_liberal,
            large_cluster,
        }
    }

    /// The family.
    pub(crate) fn family(&self) -> IpFamily {
        self.plan.family
    }

    /// The masquerade mark, as iptables prints it (`0x4000`).
    pub(crate) fn mark(&self) -> String {
        format!("{:#x}", self.plan.masquerade_mark)
    }

    /// The destination matches of the jumps from `KUBE-SERVICES` to `KUBE-NODEPORTS`, one
    /// rule each; empty when node ports do not answer in this family.
    pub(crate) fn node_port_destinations(&self) -> Vec<String> {
        let not_loopback = match self.family() {
            IpFamily::V6 => Some("! -d ::1/128"),
            IpFamily::V4 if !self.localhost_node_ports => Some("! -d 127.0.0.0/8"),
            IpFamily::V4 => None,
        };
        let with_loopback_rule = |base: String| match not_loopback {
            Some(exclusion) => format!("{base} {exclusion}"),
            None => base,
        };
        match &self.plan.node_ports {
            NodePortDestinations::AllLocal => {
                vec![with_loopback_rule(
                    "-m addrtype --dst-type LOCAL".to_owned(),
                )]
            }
            NodePortDestinations::Addresses(ips) => ips
                .iter()
                .filter(|ip| !ip.is_loopback() || self.localhost_node_ports)
                .map(|ip| format!("-d {ip}"))
                .collect(),
            NodePortDestinations::LocalInCidrs(cidrs) => cidrs
                .iter()
                .map(|cidr| {
                    let holds_loopback = match self.family() {
                        IpFamily::V4 => cidr.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
                        IpFamily::V6 => cidr.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)),
                    };
                    let base = format!("-d {cidr} -m addrtype --dst-type LOCAL");
                    if holds_loopback {
                        with_loopback_rule(base)
                    } else {
                        base
                    }
                })
                .collect(),
            NodePortDestinations::None => Vec::new(),
        }
    }
}
