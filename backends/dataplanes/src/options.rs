//! The settings only some modes read ([`ModeOptions`]), and what a build hands back besides
//! the dataplane ([`Built`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use kproxy_core::Dataplane;

/// Which iptables a node runs (the facade's own name for it, so that [`ModeOptions`] is the
/// same whatever the Cargo features). Both program netfilter, into different kernel tables
/// whose rules the other's tools do not see: the proxy must use the variant the rest of the
/// node (kubelet, the CNI, the firewall) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IptablesVariant {
    /// `iptables-nft`: the iptables syntax over nf_tables (Debian's default).
    Nft,
    /// `iptables-legacy`: the old x_tables kernel interface.
    Legacy,
}

impl IptablesVariant {
    /// Both variants.
    pub const ALL: [IptablesVariant; 2] = [IptablesVariant::Nft, IptablesVariant::Legacy];

    /// The variant's name (`nft`, `legacy`), as in its tools' names (`iptables-nft-restore`).
    pub fn name(self) -> &'static str {
        match self {
            IptablesVariant::Nft => "nft",
            IptablesVariant::Legacy => "legacy",
        }
    }
}

impl fmt::Display for IptablesVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IptablesVariant {
    type Err = String;

    /// `nft` or `legacy`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "nft" => Ok(IptablesVariant::Nft),
            "legacy" => Ok(IptablesVariant::Legacy),
            other => Err(format!(
                "unknown iptables variant {other:?}: must be nft or legacy"
            )),
        }
    }
}

/// The settings that belong to one mode only (upstream keeps them in the mode's own section
/// of `KubeProxyConfiguration`, or, for the iptables variant, in its image's
/// `iptables-wrapper`); a mode ignores the others'. What every mode reads is in
/// [`ProxyConfig`](kproxy_core::ProxyConfig).
///
/// [`Default`] is upstream's defaults: node ports on localhost, the variant detected, the
/// IPVS settings of [`IpvsOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeOptions {
    /// iptables mode: node ports also answer on 127.0.0.1 (upstream's
    /// `iptables.localhostNodePorts`, default `true`; IPv4 only). The dataplane then sets
    /// `net.ipv4.conf.all.route_localnet=1` in the namespace it programs.
    pub localhost_node_ports: bool,
    /// iptables mode: the variant to drive; `None` detects the one the node uses, as
    /// upstream's kube-proxy image does (kubelet's hint chains in the `mangle` table; without
    /// them, the variant holding more rules; on a tie, nft). The choice is logged.
    pub iptables_variant: Option<IptablesVariant>,
    /// ipvs mode: upstream's `ipvs` section (the sync periods aside, which the reconciler
    /// reads). The IPVS mode's helper rules use the iptables variant above, picked as the
    /// iptables mode picks it.
    pub ipvs: IpvsOptions,
}

impl Default for ModeOptions {
    fn default() -> Self {
        Self {
            localhost_node_ports: true,
            iptables_variant: None,
            ipvs: IpvsOptions::default(),
        }
    }
}

/// The IPVS mode's own settings (upstream's `ipvs` section of `KubeProxyConfiguration`),
/// in the facade's own terms so that [`ModeOptions`] is the same whatever the Cargo
/// features; the build checks them ([`IpvsOptions::check`]).
///
/// [`Default`] is upstream's: round robin, no strict ARP, the kernel's timeouts, nothing
/// excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsOptions {
    /// The scheduler of every virtual server (`scheduler`, `--ipvs-scheduler`); empty is
    /// round robin, as upstream.
    pub scheduler: String,
    /// `strictARP`: the namespace answers ARP only for addresses of the receiving link, so
    /// the service addresses bound to `kube-ipvs0` are not announced on the node's network.
    pub strict_arp: bool,
    /// `tcpTimeout`: idle established TCP connections; `None` (upstream's 0) leaves the
    /// kernel's value.
    pub tcp_timeout: Option<Duration>,
    /// `tcpFinTimeout`: TCP connections after a FIN; `None` leaves the kernel's value.
    pub tcp_fin_timeout: Option<Duration>,
    /// `udpTimeout`: UDP flows; `None` leaves the kernel's value.
    pub udp_timeout: Option<Duration>,
    /// `excludeCIDRs`: virtual servers on these addresses belong to another agent and are
    /// never deleted.
    pub exclude_cidrs: Vec<IpNet>,
}

impl IpvsOptions {
    /// Checks what the build would refuse in these settings before touching any kernel: an
    /// unknown scheduler (the error names the valid ones). A caller validating its
    /// configuration calls it to fail at start, before anything else runs.
    ///
    /// # Errors
    ///
    /// [`Error::IpvsSettings`](crate::Error::IpvsSettings). Without the `ipvs` feature
    /// nothing is checked: the build refuses the mode as not built.
    pub fn check(&self) -> Result<(), crate::Error> {
        #[cfg(feature = "ipvs")]
        {
            crate::ipvs::ipvs_config(self).map(drop)
        }
        #[cfg(not(feature = "ipvs"))]
        {
            Ok(())
        }
    }
}

/// A mode's dataplane, with what its caller may read of it besides the
/// [`Dataplane`] trait: the counters behind a mode's own metrics, and the choices the build
/// made. Fields that another mode has no use for are `None`.
#[non_exhaustive]
pub struct Built {
    /// The dataplane, ready for its first (full) sync.
    pub dataplane: Box<dyn Dataplane>,
    /// iptables mode: the rule counts and restore failures behind upstream's
    /// `kubeproxy_sync_proxy_rules_iptables_*` metrics, updated by every sync; read them at
    /// scrape time.
    #[cfg(feature = "iptables")]
    pub iptables_stats: Option<std::sync::Arc<kproxy_iptables::IptablesStats>>,
    /// iptables mode: the variant the dataplane drives (forced or detected); ipvs mode: the
    /// variant its helper rules are written with.
    pub iptables_variant: Option<IptablesVariant>,
    /// ipvs mode: what each sync sent to the kernel (netlink requests, set updates, tool
    /// runs), for tools that measure it; read it after a sync.
    #[cfg(feature = "ipvs")]
    pub ipvs_reports: Option<crate::ipvs::IpvsReports>,
}

impl Built {
    /// A dataplane with nothing else to report.
    #[cfg_attr(
        not(any(feature = "nftables", feature = "iptables", feature = "ipvs")),
        allow(dead_code)
    )]
    pub(crate) fn plain(dataplane: Box<dyn Dataplane>) -> Self {
        Self {
            dataplane,
            #[cfg(feature = "iptables")]
            iptables_stats: None,
            iptables_variant: None,
            #[cfg(feature = "ipvs")]
            ipvs_reports: None,
        }
    }
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("dataplane", &self.dataplane.name())
            .field("iptables_variant", &self.iptables_variant)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams_and_variants_parse_by_name() {
        let options = ModeOptions::default();
        assert!(options.localhost_node_ports);
        assert_eq!(options.iptables_variant, None);
        assert_eq!(options.ipvs.scheduler, "");
        assert!(!options.ipvs.strict_arp);
        assert_eq!(options.ipvs.tcp_timeout, None);
        for variant in IptablesVariant::ALL {
            assert_eq!(variant.to_string().parse::<IptablesVariant>(), Ok(variant));
        }
        assert!("auto".parse::<IptablesVariant>().is_err());
    }
}
