//! The proxy modes.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A proxy mode: which kernel mechanism programs the node (upstream's `--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mode {
    /// nftables (`kproxy-nft`): the recommended mode, and the default.
    Nftables,
    /// iptables (`kproxy-iptables`): upstream's default mode, through `iptables-restore` of
    /// either iptables variant ([`IptablesVariant`](crate::IptablesVariant)).
    Iptables,
    /// ipvs (`kproxy-ipvs`): IPVS virtual servers over netlink, with ipsets and a few
    /// iptables rules. Upstream deprecated it in 1.35 in favour of nftables.
    Ipvs,
}

impl Mode {
    /// Every mode this project implements.
    pub const ALL: &'static [Mode] = &[Mode::Nftables, Mode::Iptables, Mode::Ipvs];

    /// The mode's name as upstream spells it (`nftables`, `iptables`, `ipvs`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::Iptables => "iptables",
            Mode::Ipvs => "ipvs",
        }
    }

    /// Upstream's deprecation notice for the mode, which kube-proxy logs once at start;
    /// `None` for a mode that is not deprecated.
    pub fn deprecation(self) -> Option<&'static str> {
        match self {
            // Upstream's words (cmd/kube-proxy/app/server_linux.go, 1.35).
            Mode::Ipvs => Some(
                "The ipvs proxier is now deprecated and may be removed in a future release. \
                 Please use 'nftables' instead.",
            ),
            Mode::Nftables | Mode::Iptables => None,
        }
    }

    /// The name and help of the mode's sync-failure counter, as upstream names it (without the
    /// `_total` suffix that OpenMetrics adds).
    pub fn sync_failures_metric(self) -> (&'static str, &'static str) {
        match self {
            Mode::Nftables => (
                "kubeproxy_sync_proxy_rules_nftables_sync_failures",
                "Cumulative proxy nftables sync failures",
            ),
            // Upstream's IPVS proxier counts its iptables-restore failures under the
            // iptables name: IPVS requests have no failure counter of their own.
            Mode::Iptables | Mode::Ipvs => (
                "kubeproxy_sync_proxy_rules_iptables_restore_failures",
                "Cumulative proxy iptables restore failures",
            ),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;

    /// `nftables` (alias `nft`), `iptables` or `ipvs`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "nftables" | "nft" => Ok(Mode::Nftables),
            "iptables" => Ok(Mode::Iptables),
            "ipvs" => Ok(Mode::Ipvs),
            other => Err(Error::UnknownMode(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipvs_is_deprecated_in_upstreams_words() {
        let notice = Mode::Ipvs.deprecation().expect("deprecated");
        assert!(
            notice.contains("deprecated") && notice.contains("'nftables'"),
            "{notice}"
        );
        assert_eq!(Mode::Nftables.deprecation(), None);
        assert_eq!(Mode::Iptables.deprecation(), None);
    }

    #[test]
    fn modes_parse_as_upstream_spells_them() {
        assert_eq!("nftables".parse::<Mode>().unwrap(), Mode::Nftables);
        assert_eq!("nft".parse::<Mode>().unwrap(), Mode::Nftables);
        assert_eq!("iptables".parse::<Mode>().unwrap(), Mode::Iptables);
        assert_eq!("ipvs".parse::<Mode>().unwrap(), Mode::Ipvs);
        assert!(matches!("bpf".parse::<Mode>(), Err(Error::UnknownMode(_))));
        for mode in Mode::ALL {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), *mode);
        }
    }

    #[test]
    fn each_mode_names_upstreams_sync_failure_counter() {
        assert_eq!(
            Mode::Iptables.sync_failures_metric(),
            (
                "kubeproxy_sync_proxy_rules_iptables_restore_failures",
                "Cumulative proxy iptables restore failures"
            )
        );
        assert_eq!(
            Mode::Ipvs.sync_failures_metric(),
            Mode::Iptables.sync_failures_metric()
        );
        assert_eq!(
            Mode::Nftables.sync_failures_metric().0,
            "kubeproxy_sync_proxy_rules_nftables_sync_failures"
        );
    }
}
