//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! iptables backend in network namespaces on both iptables variants, as `kproxy-scenario
//! --backend iptables` would. Needs root, iproute2 and both iptables variants; without them
//! it fails saying what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_conformance::scenario::{RunOptions, run_paths};
use kproxy_conformance::{DataplaneFactory, ModeSettings, SCENARIOS_DIR};
use kproxy_core::{Balancing, Dataplane, ProxyConfig};
use kproxy_iptables::{IptablesCommand, IptablesConfig, IptablesDataplane, Tool, Variant};
use kproxy_rig::netns;

/// Builds the iptables dataplane of one variant for a scenario's node namespace.
struct Iptables {
    variant: Variant,
    balancing: Balancing,
}

impl DataplaneFactory for Iptables {
    fn mode(&self) -> &str {
        "iptables"
    }

    fn preflight(&self) -> kproxy_rig::Result<()> {
        let restore = self.variant.binary(kproxy_core::IpFamily::V4, Tool::Restore);
        netns::require_tool(restore, &["--version"])
    }

    fn build(&self, config: &ProxyConfig, node_netns: &str) -> kproxy_rig::Result<Box<dyn Dataplane>> {
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

async fn run_suite(variant: Variant, balancing: Balancing) {
    if let Err(error) = netns::check_environment() {
        panic!("the scenario suite cannot run here: {error}");
    }
    // The files describe nftables mode; this one runs them all, with `expectBy` where
    // upstream's iptables mode differs.
    let options = RunOptions::new(Arc::new(Iptables { variant, balancing }));
    let summary = run_paths(&[PathBuf::from(SCENARIOS_DIR)], &options)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    println!("iptables-{variant}, {balancing:?}: {summary}");
    assert!(summary.passed > 0, "no probe ran");
    assert!(summary.success(), "{summary}: see the FAIL lines above");
    assert!(
        netns::registered().is_empty(),
        "namespaces still held: {:?}",
        netns::registered()
    );
}

/// Both variants, one after the other (each run checks that it left no namespace, so they
/// must not overlap); the nft variant also with round robin (`-m statistic --mode nth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_both_iptables_variants() {
    run_suite(Variant::Nft, Balancing::Random).await;
    run_suite(Variant::Legacy, Balancing::Random).await;
    run_suite(Variant::Nft, Balancing::RoundRobin).await;
}
