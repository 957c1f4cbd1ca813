//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! nftables backend in network namespaces, as `kproxy-scenario --backend nft
//! --skip-other-backends` would. Needs root, iproute2 and nft; without them it fails saying
//! what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_conformance::SCENARIOS_DIR;
use kproxy_conformance::scenario::{RunOptions, run_paths};
use kproxy_core::Balancing;
use kproxy_rig::netns;

mod common;
use common::Nftables;

async fn run_suite(balancing: Balancing) {
    if let Err(error) = netns::check_environment() {
        panic!("the scenario suite cannot run here: {error}");
    }
    let options = RunOptions {
        skip_other_backends: true,
        ..RunOptions::new(Arc::new(Nftables {
            balancing: Some(balancing),
        }))
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

/// Both balancing modes, one after the other (each run checks that it left no namespace, so
/// they must not overlap): random (`numgen random`, upstream's) and round robin (`numgen inc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_nftables_with_either_balancing() {
    run_suite(Balancing::Random).await;
    run_suite(Balancing::RoundRobin).await;
}
