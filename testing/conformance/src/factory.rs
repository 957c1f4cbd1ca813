//! What the conformance kit needs of a dataplane under test: a factory that builds it for a
//! scenario's node namespace. Every backend's own tests implement it for their dataplane, the
//! tools implement it over the dataplanes facade, and a CNI author implements it for theirs.

use kproxy_core::{Dataplane, ProxyConfig, RecordingDataplane};
use kproxy_rig::Result;

/// Builds the dataplane under test, once per scenario.
pub trait DataplaneFactory: Send + Sync {
    /// The mode whose expectations apply (`nftables`, `iptables`, `ipvs`, or a name of your
    /// own): a scenario file's `config.backend` and a probe's `expectBy` keys are matched
    /// against it (see [`canonical_mode`]).
    fn mode(&self) -> &str;

    /// Checks that the tools and kernel features the dataplane needs are there, before any
    /// world is built.
    ///
    /// # Errors
    ///
    /// Naming what is missing.
    fn preflight(&self) -> Result<()> {
        Ok(())
    }

    /// Builds the dataplane that programs the network namespace `node_netns`.
    ///
    /// # Errors
    ///
    /// When it cannot be built (the message says why).
    fn build(&self, config: &ProxyConfig, node_netns: &str) -> Result<Box<dyn Dataplane>>;
}

/// The canonical spelling of a mode name in scenario files (`nft` is `nftables`).
pub fn canonical_mode(name: &str) -> &str {
    match name {
        "nft" => "nftables",
        other => other,
    }
}

/// Whether two mode names mean the same mode.
pub fn same_mode(a: &str, b: &str) -> bool {
    canonical_mode(a) == canonical_mode(b)
}

/// A dataplane that programs nothing ([`RecordingDataplane`]): runs the kit itself, where
/// only untouched packets can pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recording;

impl DataplaneFactory for Recording {
    fn mode(&self) -> &str {
        "none"
    }

    fn build(&self, _: &ProxyConfig, _: &str) -> Result<Box<dyn Dataplane>> {
        Ok(Box::new(RecordingDataplane::new()))
    }
}
