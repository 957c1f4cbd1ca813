//! What the backend needs of the kernel besides iptables: IPVS, the dummy link and its
//! addresses, ipsets and the namespace's sysctls. [`NetlinkIpvs`](crate::NetlinkIpvs) is the
//! real kernel, [`FakeIpvs`](crate::FakeIpvs) an in-memory stand-in for unit tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;

use crate::config::Timeouts;
use crate::error::IpvsError;
use crate::model::{IpvsOp, RealServerStatus, ServiceKey, SetOp, VirtualServer};

/// An address of the namespace, with the link it is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalAddress {
    /// The link's name.
    pub link: String,
    /// The address.
    pub addr: IpAddr,
}

/// The kernel refused a request of a batch.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ApplyError {
    /// The index of the refused request: every one before it was applied.
    pub applied: usize,
    /// Requests after the refused one that the kernel applied all the same (it goes on
    /// after a refusal within one write); nothing after the write that held the refusal
    /// was sent.
    pub applied_after: Vec<usize>,
    /// Why the next one was refused, naming it.
    #[source]
    pub error: IpvsError,
}

/// The kernel side of the IPVS mode, in one network namespace.
#[async_trait]
pub trait IpvsKernel: Send {
    /// How many bytes of netlink requests this kernel handle wrote so far (benchmarks); 0
    /// where nothing is written (a fake).
    fn bytes_sent(&self) -> u64 {
        0
    }

    /// Checks that the kernel has IPVS and the tools are there.
    async fn check(&mut self) -> Result<(), IpvsError>;

    /// Every IPVS virtual server of the namespace (one dump).
    async fn virtual_servers(&mut self) -> Result<Vec<VirtualServer>, IpvsError>;

    /// The real servers of one virtual server, with their connection counters.
    async fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerStatus>, IpvsError>;

    /// Sends `ops` in order, in as few writes as the socket allows, and stops after the
    /// write in which the kernel refused one. IPVS has no transactions: the caller undoes
    /// what was applied ([`ApplyError`] says exactly which).
    async fn apply(&mut self, ops: &[IpvsOp]) -> Result<(), ApplyError>;

    /// The addresses of link `name`, `None` when there is no such link.
    async fn link_addresses(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, IpvsError>;

    /// Creates the dummy link `name` (down: its addresses are local all the same, and it
    /// answers no ARP), unless it exists.
    async fn ensure_dummy_link(&mut self, name: &str) -> Result<(), IpvsError>;

    /// Deletes link `name`; `false` when there was none.
    async fn delete_link(&mut self, name: &str) -> Result<bool, IpvsError>;

    /// Adds and removes host addresses (/32, /128) of link `name`.
    async fn change_link_addresses(
        &mut self,
        name: &str,
        add: &[IpAddr],
        remove: &[IpAddr],
    ) -> Result<(), IpvsError>;

    /// Every address of the namespace, with its link.
    async fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, IpvsError>;

    /// The ipsets whose names start with `KUBE-`, each with its members as `ipset save`
    /// prints them.
    async fn list_sets(&mut self) -> Result<BTreeMap<String, Vec<String>>, IpvsError>;

    /// Runs an `ipset restore` script (create, swap, destroy, add, del lines): whole sets at
    /// full syncs.
    async fn restore_sets(&mut self, script: &str) -> Result<(), IpvsError>;

    /// Adds and deletes single entries (partial syncs), in order; an entry added twice or
    /// deleted when absent is no error.
    async fn update_sets(&mut self, ops: &[SetOp]) -> Result<(), IpvsError>;

    /// Sets IPVS's connection timeouts (`IPVS_CMD_SET_CONFIG`).
    async fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError>;

    /// Writes `/proc/sys/…` settings of the namespace (`net.ipv4.vs.conntrack`, …).
    async fn set_sysctls(&mut self, settings: &[(&str, &str)]) -> Result<(), IpvsError>;
}
