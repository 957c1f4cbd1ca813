//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! nftables backend in network namespaces, as `kproxy-scenario --backend nft
//! --skip-other-backends` would. Needs root, iproute2 and nft; without them it fails saying
//! what is missing.

use std::sync::Arc;

use kproxy_conformance::scenario::{RunOptions, assert_suite_passes};
use kproxy_core::Balancing;

mod common;
use common::Nftables;

async fn run_suite(balancing: Balancing) {
    let options = RunOptions {
        skip_other_backends: true,
        ..RunOptions::new(Arc::new(Nftables {
            balancing: Some(balancing),
        }))
    };
    assert_suite_passes(&options, &format!("nftables, {balancing:?}")).await;
}

/// Both balancing modes, one after the other (each run checks that it left no namespace, so
/// they must not overlap): random (`numgen random`, upstream's) and round robin (`numgen inc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_nftables_with_either_balancing() {
    run_suite(Balancing::Random).await;
    run_suite(Balancing::RoundRobin).await;
}
