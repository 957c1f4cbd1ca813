//! Shared helpers of the iptables backend's kernel tests.

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(missing_docs, unreachable_pub, reason = "test helpers")]

use kproxy_conformance::{DataplaneFactory, ModeSettings};
use kproxy_core::{Balancing, Dataplane, ProxyConfig};
use kproxy_iptables::{IptablesCommand, IptablesConfig, IptablesDataplane, Tool, Variant};
use kproxy_rig::netns;

/// Builds the iptables dataplane of one variant for a scenario's node namespace.
pub struct Iptables {
    pub variant: Variant,
    pub balancing: Balancing,
}

impl DataplaneFactory for Iptables {
    fn mode(&self) -> &str {
        "iptables"
    }

    fn preflight(&self) -> kproxy_rig::Result<()> {
        let restore = self
            .variant
            .binary(kproxy_core::IpFamily::V4, Tool::Restore);
        netns::require_tool(restore, &["--version"])
    }

    fn build(
        &self,
        config: &ProxyConfig,
        node_netns: &str,
    ) -> kproxy_rig::Result<Box<dyn Dataplane>> {
        self.build_with(config, &ModeSettings::default(), node_netns)
    }

    fn build_with(
        &self,
        config: &ProxyConfig,
        settings: &ModeSettings,
        node_netns: &str,
    ) -> kproxy_rig::Result<Box<dyn Dataplane>> {
        let config = ProxyConfig {
            balancing: self.balancing,
            ..config.clone()
        };
        let settings = IptablesConfig {
            localhost_node_ports: settings.localhost_node_ports.unwrap_or(true),
        };
        Ok(Box::new(IptablesDataplane::new(
            config,
            settings,
            Box::new(IptablesCommand::in_netns(self.variant, node_netns)),
        )))
    }
}
