//! The IPVS dataplane of kube-proxy-rs.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cleanup;
mod config;
mod dataplane;
mod error;
mod fake;
mod kernel;
mod marks;
pub mod model;
mod netlink;
mod ops;
mod programmed;
mod render;
mod rules;
mod sets;

pub use config::{IpvsConfig, SCHEDULERS, Scheduler, Timeouts, UnknownScheduler};
pub use dataplane::{DUMMY_LINK, IpvsDataplane, SyncReport};
pub use error::IpvsError;
pub use fake::FakeIpvs;
pub use kernel::{ApplyError, IpvsKernel, LocalAddress};
pub use netlink::NetlinkIpvs;
