//! The two iptables variants, and which one a node uses.

use std::fmt;
use std::str::FromStr;

use kproxy_core::IpFamily;

/// Which iptables a node runs: both program netfilter, but into different kernel tables,
/// and rules of one are invisible to the other's tools. A proxy must use the variant the rest
/// of the node (kubelet, the CNI, the firewall) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `iptables-nft`: the iptables syntax over nf_tables (Debian's default).
    Nft,
    /// `iptables-legacy`: the old x_tables kernel interface.
    Legacy,
}

/// One iptables tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `iptables-restore`.
    Restore,
    /// `iptables-save`.
    Save,
    /// `iptables` itself.
    Iptables,
}

impl Variant {
    /// Both variants.
    pub const ALL: [Variant; 2] = [Variant::Nft, Variant::Legacy];

    /// The variant's name (`nft`, `legacy`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        }
    }

    /// The binary of `tool` for `family` (`ip6tables-legacy-restore`, ...).
    pub fn binary(self, family: IpFamily, tool: Tool) -> &'static str {
        use IpFamily::{V4, V6};
        use Tool::{Iptables, Restore, Save};
        match (self, family, tool) {
            (Variant::Nft, V4, Restore) => "iptables-nft-restore",
            (Variant::Nft, V4, Save) => "iptables-nft-save",
            (Variant::Nft, V4, Iptables) => "iptables-nft",
            (Variant::Nft, V6, Restore) => "ip6tables-nft-restore",
            (Variant::Nft, V6, Save) => "ip6tables-nft-save",
            (Variant::Nft, V6, Iptables) => "ip6tables-nft",
            (Variant::Legacy, V4, Restore) => "iptables-legacy-restore",
            (Variant::Legacy, V4, Save) => "iptables-legacy-save",
            (Variant::Legacy, V4, Iptables) => "iptables-legacy",
            (Variant::Legacy, V6, Restore) => "ip6tables-legacy-restore",
            (Variant::Legacy, V6, Save) => "ip6tables-legacy-save",
            (Variant::Legacy, V6, Iptables) => "ip6tables-legacy",
        }
    }

    /// The variant a node uses, decided as upstream's kube-proxy image decides it
    /// (`iptables-wrapper`): kubelet's hint chains (`KUBE-IPTABLES-HINT`,
    /// `KUBE-KUBELET-CANARY` in mangle) name it; without them, the variant holding more rules;
    /// on a tie (a fresh node), nft.
    ///
    /// `save` runs a save tool (e.g. `iptables-legacy-save`, without arguments) in the node's
    /// namespace and answers its output, or `None` when it fails (a variant
    /// whose kernel side is not loaded holds nothing).
    pub fn detect(mut save: impl FnMut(&str, &[&str]) -> Option<String>) -> Variant {
        let has_hint = |text: &str| {
            text.lines().any(|line| {
                line.starts_with(":KUBE-IPTABLES-HINT") || line.starts_with(":KUBE-KUBELET-CANARY")
            })
        };
        let mut rules = [0usize; 2];
        for (i, variant) in Variant::ALL.into_iter().enumerate() {
            for family in [IpFamily::V4, IpFamily::V6] {
                let tool = variant.binary(family, Tool::Save);
                // A legacy save of one table creates that table in the kernel; a whole save
                // only lists what exists (upstream's iptables-wrapper does the same).
                let text = save(tool, &[]).unwrap_or_default();
                if has_hint(&text) {
                    return variant;
                }
                rules[i] += text.lines().filter(|l| l.starts_with("-A ")).count();
            }
        }
        if rules[1] > rules[0] {
            Variant::Legacy
        } else {
            Variant::Nft
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "nft" => Ok(Variant::Nft),
            "legacy" => Ok(Variant::Legacy),
            other => Err(format!(
                "unknown iptables variant {other:?}: must be nft or legacy"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_win_then_rule_counts_then_nft() {
        let hint_in_legacy = Variant::detect(|tool, args| {
            (tool == "iptables-legacy-save" && args.is_empty())
                .then(|| "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n".to_owned())
        });
        assert_eq!(hint_in_legacy, Variant::Legacy);
        let more_legacy_rules = Variant::detect(|tool, args| {
            (tool == "iptables-legacy-save" && args.is_empty())
                .then(|| "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n".to_owned())
        });
        assert_eq!(more_legacy_rules, Variant::Legacy);
        assert_eq!(Variant::detect(|_, _| None), Variant::Nft);
        assert_eq!("legacy".parse::<Variant>(), Ok(Variant::Legacy));
        assert!("xt".parse::<Variant>().is_err());
    }
}
