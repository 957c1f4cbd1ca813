//! The IPVS dataplane of kube-proxy-rs: upstream kube-proxy's IPVS mode, with syncs that
//! follow the change and the traffic policies upstream's mode gets wrong.
//!
//! ```text
//!  service addresses ─► kube-ipvs0 (dummy link: local, so packets reach LOCAL_IN / LOCAL_OUT)
//!  IPVS virtual servers: cluster IP, external IP, LB IP, node port (per node address)
//!        └─ real servers (masquerade forwarding, weight 1; 0 while draining)
//!  fwmark virtual servers: local traffic to an externalTrafficPolicy: Local Service, marked in
//!        mangle, goes to every endpoint
//!  ipsets (KUBE-CLUSTER-IP, KUBE-LOOP-BACK, ...) + a fixed set of iptables rules matching them:
//!        masquerade (nat), LB firewall, REJECT / DROP without endpoints, other ports (filter)
//! ```
//!
//! Every decision comes from core's plan; this crate only spells it ([`model`] holds the
//! kernel objects as values). A full sync reads the kernel once (one dump of the virtual
//! servers, one of the sets) and sends what differs; a partial sync sends only what the
//! changed service ports need: one generic-netlink request per changed real server, ipset
//! entries over nfnetlink, no tool run. IPVS has no transactions, so every request carries its
//! undo and a refused one is answered by undoing the requests before it. Kernel access sits
//! behind [`IpvsKernel`]: [`NetlinkIpvs`] is the real kernel, [`FakeIpvs`] an in-memory
//! stand-in for unit tests; the helper rules go through [`kproxy_iptables::IptablesKernel`].

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
