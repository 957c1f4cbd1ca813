//! What the backend counts for upstream's iptables metrics, read by the binary at scrape time.
//! Per family, as upstream labels them (`ip_family`).

use std::sync::atomic::{AtomicU64, Ordering};

use kproxy_core::IpFamily;

use crate::restore::Table;

/// One family's counters.
#[derive(Debug, Default)]
struct FamilyStats {
    rules_total: [AtomicU64; 3],
    rules_last: [AtomicU64; 3],
    restore_failures: AtomicU64,
    partial_restore_failures: AtomicU64,
}

/// Rule counts and restore failures, shared between the dataplane and whoever exports them.
#[derive(Debug, Default)]
pub struct IptablesStats {
    families: [FamilyStats; 2],
}

fn index(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

impl IptablesStats {
    fn of(&self, family: IpFamily) -> &FamilyStats {
        &self.families[index(family)]
    }

    /// The rules this proxy holds in `table` of `family`
    /// (`sync_proxy_rules_iptables_total{ip_family, table}`; the jumps from the built-in
    /// chains not counted).
    pub fn rules_total(&self, family: IpFamily, table: Table) -> u64 {
        self.of(family).rules_total[table as usize].load(Ordering::Relaxed)
    }

    /// The rules the last successful sync wrote to `table` of `family`
    /// (`sync_proxy_rules_iptables_last{ip_family, table}`): all of them after a full sync,
    /// only those added after a partial one.
    pub fn rules_last(&self, family: IpFamily, table: Table) -> u64 {
        self.of(family).rules_last[table as usize].load(Ordering::Relaxed)
    }

    /// Restores of `family` the tool refused, full or partial
    /// (`sync_proxy_rules_iptables_restore_failures_total{ip_family}`).
    pub fn restore_failures(&self, family: IpFamily) -> u64 {
        self.of(family).restore_failures.load(Ordering::Relaxed)
    }

    /// Partial restores of `family` the tool refused
    /// (`sync_proxy_rules_iptables_partial_restore_failures_total{ip_family}`).
    pub fn partial_restore_failures(&self, family: IpFamily) -> u64 {
        self.of(family)
            .partial_restore_failures
            .load(Ordering::Relaxed)
    }

    pub(crate) fn set_rules(&self, family: IpFamily, table: Table, total: u64, last: u64) {
        let stats = self.of(family);
        stats.rules_total[table as usize].store(total, Ordering::Relaxed);
        stats.rules_last[table as usize].store(last, Ordering::Relaxed);
    }

    pub(crate) fn count_failure(&self, family: IpFamily, partial: bool) {
        let stats = self.of(family);
        stats.restore_failures.fetch_add(1, Ordering::Relaxed);
        if partial {
            stats
                .partial_restore_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
