//! What the backend counts for upstream's iptables metrics, read by the binary at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::restore::Table;

/// Rule counts and restore failures, shared between the dataplane and whoever exports them.
#[derive(Debug, Default)]
pub struct IptablesStats {
    rules_total: [AtomicU64; 3],
    rules_last: [AtomicU64; 3],
    restore_failures: AtomicU64,
    partial_restore_failures: AtomicU64,
}

impl IptablesStats {
    /// The rules this proxy holds in `table`, over every family
    /// (`sync_proxy_rules_iptables_total{table}`).
    pub fn rules_total(&self, table: Table) -> u64 {
        self.rules_total[table as usize].load(Ordering::Relaxed)
    }

    /// The rules the last successful sync wrote to `table`
    /// (`sync_proxy_rules_iptables_last{table}`).
    pub fn rules_last(&self, table: Table) -> u64 {
        self.rules_last[table as usize].load(Ordering::Relaxed)
    }

    /// Restores that failed, full or partial
    /// (`sync_proxy_rules_iptables_restore_failures_total`).
    pub fn restore_failures(&self) -> u64 {
        self.restore_failures.load(Ordering::Relaxed)
    }

    /// Partial restores that failed (`sync_proxy_rules_iptables_partial_restore_failures_total`).
    pub fn partial_restore_failures(&self) -> u64 {
        self.partial_restore_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn set_rules(&self, table: Table, total: u64, last: u64) {
        self.rules_total[table as usize].store(total, Ordering::Relaxed);
        self.rules_last[table as usize].store(last, Ordering::Relaxed);
    }

    pub(crate) fn count_failure(&self, partial: bool) {
        self.restore_failures.fetch_add(1, Ordering::Relaxed);
        if partial {
            self.partial_restore_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
