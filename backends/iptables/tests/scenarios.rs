//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! iptables backend in network namespaces on both iptables variants, as `kproxy-scenario
//! --backend iptables` would. Needs root, iproute2 and both iptables variants; without them
//! it fails saying what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_conformance::SCENARIOS_DIR;
use kproxy_conformance::scenario::{RunOptions, run_paths};
use kproxy_core::Balancing;
use kproxy_iptables::Variant;
use kproxy_rig::netns;

mod common;
use common::Iptables;

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
