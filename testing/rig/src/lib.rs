//! Dev-only test rig for kube-proxy-rs: worlds made of network namespaces (node, pods,
//! external clients, a gateway that owns everything else), tiny servers that say where a packet
//! arrived and from which source, probes that classify what became of a packet, and the
//! kube-proxy binary as a child process. It knows no backend: the conformance crate runs
//! dataplanes in these worlds.
//!
//! ```no_run
//! # async fn demo() -> kproxy_rig::Result<()> {
//! use kproxy_rig::{Expectation, Probe, World, WorldSpec, probe};
//!
//! let mut spec = WorldSpec::new([("eth0".to_owned(), vec!["192.168.0.2/24".parse().unwrap()])].into());
//! spec.pod_networks.push("10.0.0.0/8".parse().unwrap());
//! let to_pod = Probe::tcp("10.0.0.2".parse().unwrap(), "10.180.0.1".parse().unwrap(), 80);
//! spec.endpoint(to_pod.dst, 80, to_pod.protocol).probe(&to_pod);
//! let world = World::build(spec).await?;
//! let verdict = probe::check(&world, &to_pod, &Expectation::Untouched, Default::default()).await;
//! assert!(verdict.pass, "{}", verdict.seen);
//! # Ok(()) }
//! ```
//!
//! Everything runs in namespaces this kit creates and removes (on drop, on panic and on
//! Ctrl-C); nothing touches the machine's own network namespace.

mod error;
pub mod golden;
pub mod netns;
mod packet;
pub mod probe;
pub mod process;
pub mod world;

pub use error::{Error, Result};
pub use netns::NetNs;
pub use probe::{CheckOptions, Expectation, Outcome, Probe, Verdict};
pub use world::{PodAttachment, World, WorldSpec};
