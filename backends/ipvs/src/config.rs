//! The settings only this mode reads (upstream's `ipvs` configuration block).

use std::time::Duration;

use ipnet::IpNet;

use crate::model::FLAG_SCHED2;

/// The schedulers of Linux's IPVS, as `--ipvs-scheduler` names them.
pub const SCHEDULERS: [&str; 11] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
];

/// A validated IPVS scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduler {
    name: &'static str,
}

/// A scheduler name IPVS does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IPVS scheduler {name:?}: expected one of {}", SCHEDULERS.join(", "))]
pub struct UnknownScheduler {
    /// What was asked for.
    pub name: String,
}

impl Scheduler {
    /// Round robin, upstream's default.
    pub fn round_robin() -> Self {
        Self { name: "rr" }
    }

    /// Parses a scheduler name; empty means round robin, as upstream.
    ///
    /// # Errors
    ///
    /// [`UnknownScheduler`] for a name that is not one of [`SCHEDULERS`].
    pub fn parse(name: &str) -> Result<Self, UnknownScheduler> {
        if name.is_empty() {
            return Ok(Self::round_robin());
        }
        SCHEDULERS
            .iter()
            .find(|known| **known == name)
            .map(|known| Self { name: known })
            .ok_or_else(|| UnknownScheduler {
                name: name.to_owned(),
            })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The service flags it needs: `mh` hashes on the source port too (upstream's
    /// `FlagSourceHash`), or every connection of a client would go to one endpoint.
    pub fn flags(&self) -> u32 {
        if self.name == "mh" { FLAG_SCHED2 } else { 0 }
    }
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::round_robin()
    }
}

/// IPVS's connection timeouts (`ipvsadm --set`); `None` leaves the kernel's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle established TCP connections (`tcpTimeout`).
    pub tcp: Option<Duration>,
    /// TCP connections after a FIN (`tcpFinTimeout`).
    pub tcp_fin: Option<Duration>,
    /// UDP flows (`udpTimeout`).
    pub udp: Option<Duration>,
}

impl Timeouts {
    /// Whether any timeout is set.
    pub fn any(&self) -> bool {
        self.tcp.is_some() || self.tcp_fin.is_some() || self.udp.is_some()
    }
}

/// The settings only this mode reads; the rest is in [`kproxy_core::ProxyConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsConfig {
    /// The scheduler of every virtual server (`scheduler`, `--ipvs-scheduler`).
    pub scheduler: Scheduler,
    /// Answer ARP only for addresses of the receiving link (`strictARP`): the namespace's
    /// `arp_ignore=1`, `arp_announce=2`, so the service addresses on `kube-ipvs0` are not
    /// announced on the node's network.
    pub strict_arp: bool,
    /// IPVS's connection timeouts.
    pub timeouts: Timeouts,
    /// Virtual servers whose address is inside these CIDRs are never deleted
    /// (`excludeCIDRs`): another agent's.
    pub exclude_cidrs: Vec<IpNet>,
}
