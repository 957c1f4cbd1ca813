//! The nftables dataplane of kube-proxy-rs: programs the `ip kube-proxy` and `ip6 kube-proxy`
//! tables, owned wholly by this backend, with one atomic transaction per sync.
//!
//! ```text
//!  nat-prerouting / nat-output ─► services ─ vmap @service-ips / @service-nodeports ─►
//!      service-…   (cluster policy)  ─ numgen → @endpoints-NNN ─► dnat
//!      local-…     (local policy)    ─ numgen → @endpoints-NNN ─► dnat
//!      external-…  (node port, external and load-balancer IPs) ─► masquerade mark, policy
//!  filter-* (before DNAT) ─► reject/drop for no endpoints, firewall, unused cluster-IP ports
//!  nat-postrouting ─► masquerading (marked packets and hairpin connections)
//! ```
//!
//! Kernel access sits behind [`NftKernel`]: [`NftCommand`] drives the `nft` binary, [`FakeNft`]
//! is an in-memory, transactional stand-in for unit tests.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod base;
mod dataplane;
mod error;
mod fake;
mod integrity;
mod kernel;
pub mod names;
mod netlink;
mod render;
mod slots;
mod transaction;
mod values;

pub use dataplane::{CHAIN_DELETION_DELAY, NftDataplane};
pub use error::NftError;
pub use fake::FakeNft;
pub use integrity::{Probe, TableFacts};
pub use kernel::{NFT_TIMEOUT, NftCommand, NftKernel};
pub use transaction::{BaseChain, Op, Transaction};
pub use values::{DnatRule, Key, Rule, SetSpec, Value, Verdict};
