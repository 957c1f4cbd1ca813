//! The IPVS dataplane of kube-proxy-rs.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod error;
mod kernel;
pub mod model;
mod netlink;

pub use config::{IpvsConfig, SCHEDULERS, Scheduler, Timeouts, UnknownScheduler};
pub use error::IpvsError;
pub use kernel::{ApplyError, IpvsKernel, LocalAddress};
pub use netlink::NetlinkIpvs;
