//! The ipsets of this mode: upstream's names and types where upstream has the set (SCTP node
//! ports excepted: upstream keeps them in `hash:ip,port` sets named `…-SCTP-HASH`, here they
//! are `bitmap:port` sets like TCP's and UDP's), and two of our own for the verdicts upstream
//! leaves to chance (see [`SetId::NoEndpoints`]).

use kproxy_core::IpFamily;

use crate::model::{SetKind, SetSpec};

/// One of this mode's sets, in either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SetId {
    /// Every cluster IP and port.
    ClusterIp,
    /// External IPs and ports of `externalTrafficPolicy: Cluster` Services (masqueraded).
    ExternalIp,
    /// External IPs and ports of `externalTrafficPolicy: Local` Services.
    ExternalIpLocal,
    /// Load-balancer IPs and ports, policy Cluster (masqueraded).
    LoadBalancer,
    /// Load-balancer IPs and ports, policy Local.
    LoadBalancerLocal,
    /// Load-balancer IPs and ports with source ranges.
    LoadBalancerFw,
    /// (load-balancer IP, port, source range) admitted through the firewall.
    LoadBalancerSourceCidr,
    /// (load-balancer IP, port, source IP) admitted: the node reaching a VIP it owns.
    LoadBalancerSourceIp,
    /// TCP node ports, policy Cluster (masqueraded).
    NodePortTcp,
    /// UDP node ports, policy Cluster.
    NodePortUdp,
    /// SCTP node ports, policy Cluster.
    NodePortSctp,
    /// TCP node ports, policy Local.
    NodePortLocalTcp,
    /// UDP node ports, policy Local.
    NodePortLocalUdp,
    /// SCTP node ports, policy Local.
    NodePortLocalSctp,
    /// Health-check node ports (accepted).
    HealthCheckNodePort,
    /// (endpoint, port, endpoint): hairpin connections, masqueraded.
    LoopBack,
    /// Every address bound to `kube-ipvs0`.
    IpvsIps,
    /// Service destinations without any endpoint: rejected. Upstream lets such packets
    /// reach the node's own stack, which answers with a reset only while nothing on the
    /// node listens on that port.
    NoEndpoints,
    /// Service destinations whose Local policy finds no local endpoint: dropped (unless
    /// the packet is local traffic that short-circuits to every endpoint).
    NoLocalEndpoints,
}

/// Every set, in the order they are created.
pub(crate) const ALL: [SetId; 19] = [
    SetId::ClusterIp,
    SetId::ExternalIp,
    SetId::ExternalIpLocal,
    SetId::LoadBalancer,
    SetId::LoadBalancerLocal,
    SetId::LoadBalancerFw,
    SetId::LoadBalancerSourceCidr,
    SetId::LoadBalancerSourceIp,
    SetId::NodePortTcp,
    SetId::NodePortUdp,
    SetId::NodePortSctp,
    SetId::NodePortLocalTcp,
    SetId::NodePortLocalUdp,
    SetId::NodePortLocalSctp,
    SetId::HealthCheckNodePort,
    SetId::LoopBack,
    SetId::IpvsIps,
    SetId::NoEndpoints,
    SetId::NoLocalEndpoints,
];

impl SetId {
    /// The set's name, kind and comment: (IPv4 name, IPv6 name, kind, comment). IPv6 names
    /// use upstream's `KUBE-6-` prefix; ipset names have at most 31 characters, so the one
    /// that would not fit is shortened.
    fn describe(self) -> (&'static str, &'static str, SetKind, &'static str) {
        use SetKind::*;
        match self {
            SetId::ClusterIp => (
                "KUBE-CLUSTER-IP",
                "KUBE-6-CLUSTER-IP",
                HashIpPort,
                "Kubernetes service cluster ip + port for masquerade purpose",
            ),
            SetId::ExternalIp => (
                "KUBE-EXTERNAL-IP",
                "KUBE-6-EXTERNAL-IP",
                HashIpPort,
                "Kubernetes service external ip + port for masquerade and filter purpose",
            ),
            SetId::ExternalIpLocal => (
                "KUBE-EXTERNAL-IP-LOCAL",
                "KUBE-6-EXTERNAL-IP-LOCAL",
                HashIpPort,
                "Kubernetes service external ip + port with externalTrafficPolicy=local",
            ),
            SetId::LoadBalancer => (
                "KUBE-LOAD-BALANCER",
                "KUBE-6-LOAD-BALANCER",
                HashIpPort,
                "Kubernetes service lb portal",
            ),
            SetId::LoadBalancerLocal => (
                "KUBE-LOAD-BALANCER-LOCAL",
                "KUBE-6-LOAD-BALANCER-LOCAL",
                HashIpPort,
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
            ),
            SetId::LoadBalancerFw => (
                "KUBE-LOAD-BALANCER-FW",
                "KUBE-6-LOAD-BALANCER-FW",
                HashIpPort,
                "Kubernetes service load balancer ip + port for load balancer with sourceRange",
            ),
            SetId::LoadBalancerSourceCidr => (
                "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                "KUBE-6-LOAD-BALANCER-SRC-CIDR",
                HashIpPortNet,
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
            ),
            SetId::LoadBalancerSourceIp => (
                "KUBE-LOAD-BALANCER-SOURCE-IP",
                "KUBE-6-LOAD-BALANCER-SOURCE-IP",
                HashIpPortIp,
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
            ),
            SetId::NodePortTcp => (
                "KUBE-NODE-PORT-TCP",
                "KUBE-6-NODE-PORT-TCP",
                BitmapPort,
                "Kubernetes nodeport TCP port for masquerade purpose",
            ),
            SetId::NodePortUdp => (
                "KUBE-NODE-PORT-UDP",
                "KUBE-6-NODE-PORT-UDP",
                BitmapPort,
                "Kubernetes nodeport UDP port for masquerade purpose",
            ),
            SetId::NodePortSctp => (
                "KUBE-NODE-PORT-SCTP",
                "KUBE-6-NODE-PORT-SCTP",
                BitmapPort,
                "Kubernetes nodeport SCTP port for masquerade purpose",
            ),
            SetId::NodePortLocalTcp => (
                "KUBE-NODE-PORT-LOCAL-TCP",
                "KUBE-6-NODE-PORT-LOCAL-TCP",
                BitmapPort,
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
            ),
            SetId::NodePortLocalUdp => (
                "KUBE-NODE-PORT-LOCAL-UDP",
                "KUBE-6-NODE-PORT-LOCAL-UDP",
                BitmapPort,
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
            ),
            SetId::NodePortLocalSctp => (
                "KUBE-NODE-PORT-LOCAL-SCTP",
                "KUBE-6-NODE-PORT-LOCAL-SCTP",
                BitmapPort,
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local",
            ),
            SetId::HealthCheckNodePort => (
                "KUBE-HEALTH-CHECK-NODE-PORT",
                "KUBE-6-HEALTH-CHECK-NODE-PORT",
                BitmapPort,
                "Kubernetes health check node port",
            ),
            SetId::LoopBack => (
                "KUBE-LOOP-BACK",
                "KUBE-6-LOOP-BACK",
                HashIpPortIp,
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
            ),
            SetId::IpvsIps => (
                "KUBE-IPVS-IPS",
                "KUBE-6-IPVS-IPS",
                HashIp,
                "IPVS virtual server IP addresses",
            ),
            SetId::NoEndpoints => (
                "KUBE-NO-ENDPOINTS",
                "KUBE-6-NO-ENDPOINTS",
                HashIpPort,
                "service destinations without endpoints, rejected",
            ),
            SetId::NoLocalEndpoints => (
                "KUBE-NO-LOCAL-ENDPOINTS",
                "KUBE-6-NO-LOCAL-ENDPOINTS",
                HashIpPort,
                "service destinations whose local policy finds no local endpoint, dropped",
            ),
        }
    }

    /// The set of this id in `family`.
    pub(crate) fn spec(self, family: IpFamily) -> SetSpec {
        let (v4, v6, kind, comment) = self.describe();
        SetSpec {
            name: match family {
                IpFamily::V4 => v4,
                IpFamily::V6 => v6,
            },
            kind,
            family,
            comment,
        }
    }

    /// The set's name in `family`.
    pub(crate) fn name(self, family: IpFamily) -> &'static str {
        self.spec(family).name
    }
}

/// Every set of both families.
pub(crate) fn all_specs() -> impl Iterator<Item = SetSpec> {
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .flat_map(|family| ALL.iter().map(move |id| id.spec(family)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_fits_ipset_and_is_unique() {
        let names: Vec<&str> = all_specs().map(|spec| spec.name).collect();
        for name in &names {
            assert!(name.len() <= 31, "{name} is longer than ipset allows");
        }
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }
}
