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

    /// Builds the dataplane for a scenario whose configuration also sets `settings`, the
    /// settings of one mode only (upstream's `iptables.localhostNodePorts`, ...). The default
    /// ignores them: right for a dataplane without such settings.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    fn build_with(
        &self,
        config: &ProxyConfig,
        settings: &ModeSettings,
        node_netns: &str,
    ) -> Result<Box<dyn Dataplane>> {
        let _ = settings;
        self.build(config, node_netns)
    }
}

/// A scenario's settings that belong to one mode only; `None` means the mode's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModeSettings {
    /// `localhostNodePorts`: node ports also answer on 127.0.0.1 (iptables mode, IPv4;
    /// upstream's default `true`).
    pub localhost_node_ports: Option<bool>,
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
