//! One netlink socket, bound to one network namespace, for every kube-proxy-rs crate that
//! talks netlink (nf_tables, conntrack, IPVS).
//!
//! ```text
//!  MessageBuffer ──(one write: atomic batches stay whole)──► NetlinkSocket ──► kernel
//!        ▲  Attributes (lengths checked, never clamped)          │
//!        │                                                      ▼
//!   encoder of a protocol               Replies, matched by sequence number, with a deadline
//! ```
//!
//! What this crate guarantees, because each of these went wrong once:
//! - the socket is made on a thread that entered the namespace and checked that it did, so it
//!   acts on that namespace whatever thread uses it later ([`NetlinkSocket::open`]);
//! - a write larger than the socket's send buffer grows the buffer first (`SO_SNDBUFFORCE`),
//!   instead of failing with `EMSGSIZE`; the receive buffer is large enough for the answers;
//! - every read has a deadline ([`NetlinkError::Timeout`]): a kernel that never answers fails
//!   the request, it does not hang the caller;
//! - answers are matched by sequence number; stray answers of an earlier, abandoned request
//!   are skipped;
//! - an attribute or nest that would not fit netlink's 16-bit length is an error
//!   ([`NetlinkError::TooLong`]), never a silently truncated length: encoders split instead;
//! - the kernel's errors keep their errno, its extended-ack message and the offset of the
//!   attribute it blamed ([`KernelError`]).
//!
//! No crate on crates.io offers this for nf_tables (see `DEPENDENCIES.md`): `netlink-sys`
//! gives the socket, the rest is here, small and tested.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod attributes;
mod error;
mod messages;
mod socket;

pub use attributes::{Attributes, MAX_ATTRIBUTE_LEN, iter as parse_attributes};
pub use error::{KernelError, NetlinkError};
pub use messages::{HEADER_LEN, MessageBuffer, Reply, parse_replies};
pub use socket::{DEFAULT_TIMEOUT, Namespace, NetlinkSocket};

/// `NLM_F_REQUEST`: a request to the kernel.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: one part of a multi-part answer (a dump).
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`: the kernel acknowledges the message even when it succeeds.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP`: a dump request (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_CREATE`: create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_EXCL`: fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_APPEND`: add at the end of a list (rules).
pub const NLM_F_APPEND: u16 = 0x800;
/// `NLMSG_ERROR`: an error or an acknowledgement.
pub const NLMSG_ERROR: u16 = 0x2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 0x3;
/// `NETLINK_ROUTE`: links, addresses, routes.
pub const NETLINK_ROUTE: isize = 0;
/// `NETLINK_NETFILTER`: nf_tables, conntrack, ipset.
pub const NETLINK_NETFILTER: isize = 12;
/// `NETLINK_GENERIC`: IPVS and other generic-netlink families.
pub const NETLINK_GENERIC: isize = 16;
