//! Stale UDP conntrack cleanup for kube-proxy-rs.
//!
//! UDP has no connection teardown, so the kernel's connection tracker keeps a UDP "flow" alive
//! as long as datagrams keep coming. Two situations leave flows that send traffic to the wrong
//! place, and both are fixed by deleting the flows so the next datagram is NATed afresh:
//!
//! - an endpoint goes away: flows DNATed to it keep sending datagrams into the void;
//! - a service goes from no usable endpoints to some (new, or scaled back up from zero):
//!   datagrams sent while it had none created flows that were not DNATed at all, and they keep
//!   bypassing the new DNAT rules (upstream's regression #139628).
//!
//! The crate has three parts:
//!
//! - [`stale`]: pure logic: from a drained [`ChangeSet`](kproxy_core::ChangeSet) compute the
//!   [`ConntrackFilter`]s that select the stale flows (upstream's `CleanStaleEntries`);
//! - [`filter`]: the filter and flow types and the matching rule between them;
//! - [`netlink`]: [`Conntrack`], which lists and deletes flows of the kernel's conntrack
//!   table over `NETLINK_NETFILTER`, in this network namespace or a named one;
//! - [`cleaning`]: [`ConntrackCleaning`], a decorator dataplane that does all of it after
//!   every successful sync of the dataplane it wraps.
//!
//! ```no_run
//! # async fn demo(changes: &kproxy_core::ChangeSet, node: &kproxy_core::NodeInfo)
//! #     -> Result<(), kproxy_conntrack::ConntrackError> {
//! let filters = kproxy_conntrack::stale_filters(changes, node);
//! let conntrack = kproxy_conntrack::Conntrack::new()?;
//! let deleted = conntrack.delete(&filters).await?;
//! # let _ = deleted; Ok(()) }
//! ```

pub mod cleaning;
pub mod filter;
pub mod netlink;
pub mod stale;

pub use cleaning::ConntrackCleaning;
pub use filter::{ConntrackFilter, Flow, FlowTuple};
pub use netlink::{Conntrack, ConntrackError};
pub use stale::{stale_filters, stale_flows};
