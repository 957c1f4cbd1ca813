//! The iptables dataplane of kube-proxy-rs: upstream kube-proxy's iptables-mode rules, in the
//! `filter` and `nat` tables of each family, written with one `iptables-restore --noflush`
//! per family and sync, on either iptables variant ([`Variant`]).
//!
//! ```text
//!  nat PREROUTING / OUTPUT ─► KUBE-SERVICES ─ cluster IP ─► KUBE-SVC-… / KUBE-SVL-…
//!                                          ─ external / LB IP ─► KUBE-EXT-… (KUBE-FW-…)
//!                                          ─ local address ─► KUBE-NODEPORTS ─► KUBE-EXT-…
//!      KUBE-SVC-… / KUBE-SVL-… ─ statistic random (or nth) ─► DNAT (no chain per endpoint)
//!  filter INPUT / FORWARD / OUTPUT ─► reject/drop without endpoints, firewall, INVALID drop
//!  nat POSTROUTING ─► KUBE-POSTROUTING (hairpin marks; masquerade marked packets)
//! ```
//!
//! A full sync declares (flushes) every chain and writes it whole, removing stale per-service
//! chains; a partial sync rewrites only the chains of the service ports that changed and
//! deletes or inserts only their rules in the shared chains, so its cost follows the change,
//! not the cluster. Kernel access sits behind [`IptablesKernel`]: [`IptablesCommand`] drives
//! the real tools, [`FakeIptables`] is an in-memory stand-in for unit tests.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod base;
mod cleanup;
mod context;
mod dataplane;
mod error;
mod fake;
mod kernel;
pub mod names;
mod render;
mod restore;
mod save;
mod stats;
mod variant;

pub use context::local_traffic_matches;
pub use dataplane::IptablesDataplane;
pub use error::IptablesError;
pub use fake::FakeIptables;
pub use kernel::{IptablesCommand, IptablesKernel, TOOL_TIMEOUT};
pub use restore::{RestoreInput, Table, join_args};
pub use save::{SavedTable, normalize};
pub use stats::IptablesStats;
pub use variant::{Tool, Variant};

/// The settings only this mode reads (upstream's `iptables` configuration block; the rest,
/// `masqueradeAll` and `masqueradeBit` included, is in [`kproxy_core::ProxyConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesConfig {
    /// Node ports also answer on 127.0.0.1 (`localhostNodePorts`, upstream's default `true`;
    /// IPv4 only). Needs `route_localnet`, which the dataplane then sets in its namespace.
    pub localhost_node_ports: bool,
}

impl Default for IptablesConfig {
    fn default() -> Self {
        Self {
            localhost_node_ports: true,
        }
    }
}
