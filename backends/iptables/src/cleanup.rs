//! Removing everything this backend (or upstream's iptables mode) programmed from one table:
//! its chains, and the rules of other chains that jump to them. Kubelet's chains
//! (`KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`, and `KUBE-FIREWALL`, which both write) stay,
//! as upstream's cleanup leaves them.

use crate::names::{self, *};
use crate::restore::{RestoreInput, Table};
use crate::save::SavedTable;

/// The fixed chains of this backend, in any table.
const FIXED: &[&str] = &[
    SERVICES,
    EXTERNAL_SERVICES,
    NODEPORTS,
    POSTROUTING,
    MARK_MASQ,
    FORWARD,
    PROXY_FIREWALL,
    CANARY,
];

/// Whether `chain` is one of this backend's.
pub(crate) fn is_ours(chain: &str) -> bool {
    FIXED.contains(&chain) || names::is_service_chain(chain)
}

/// Adds to `input` what removes this backend's chains from `saved` (one table).
pub(crate) fn removal(table: Table, saved: &SavedTable, input: &mut RestoreInput) {
    let ours: Vec<&String> = saved.chains.keys().filter(|c| is_ours(c)).collect();
    if ours.is_empty() {
        return;
    }
    for (chain, rules) in &saved.chains {
        if is_ours(chain) {
            continue;
        }
        for rule in rules {
            let words: Vec<&str> = rule.split_whitespace().collect();
            if words
                .windows(2)
                .any(|w| matches!(w[0], "-j" | "-g") && is_ours(w[1]))
            {
                input.delete_rule(table, chain, rule);
            }
        }
    }
    for chain in ours {
        input.remove_chain(table, chain);
    }
}
