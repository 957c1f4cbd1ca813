//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! nftables backend in network namespaces, as `kproxy-scenario --backend nft
//! --skip-other-backends` would. Needs root, iproute2 and nft; without them it fails saying
//! what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_conformance::scenario::{RunOptions, run_paths};
use kproxy_conformance::{DataplaneFactory, SCENARIOS_DIR};
use kproxy_core::{Balancing, Dataplane, ProxyConfig};
use kproxy_nft::{NftCommand, NftDataplane};
use kproxy_rig::netns;

/// kproxy-nft in the scenario's node namespace, with `balancing`.
struct Nftables {
    balancing: Balancing,
}

impl DataplaneFactory for Nftables {
    fn mode(&self) -> &str {
        "nftables"
    }

    fn preflight(&self) -> kproxy_rig::Result<()> {
        netns::require_tool("nft", &["--version"])
    }

    fn build(&self, config: &ProxyConfig, node_netns: &str) -> kproxy_rig::Result<Box<dyn Dataplane>> {
        let config = ProxyConfig {
            balancing: self.balancing,
            ..config.clone()
        };
        Ok(Box::new(NftDataplane::new(
            config,
            Box::new(NftCommand::in_netns(node_netns)),
        )))
    }
}

async fn run_suite(balancing: Balancing) {
    if let Err(error) = netns::check_environment() {
        panic!("the scenario suite cannot run here: {error}");
    }
    let options = RunOptions {
        skip_other_backends: true,
        ..RunOptions::new(Arc::new(Nftables { balancing }))
    };
    let summary = run_paths(&[PathBuf::from(SCENARIOS_DIR)], &options)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    println!("{summary}");
    assert!(summary.passed > 0, "no probe ran");
    assert!(summary.success(), "{summary}: see the FAIL lines above");
    assert!(
        netns::registered().is_empty(),
        "namespaces still held: {:?}",
        netns::registered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_nftables() {
    run_suite(Balancing::Random).await;
}
