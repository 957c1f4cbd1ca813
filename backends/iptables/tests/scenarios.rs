//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! iptables backend in network namespaces on both iptables variants, as `kproxy-scenario
//! --backend iptables` would. Needs root, iproute2 and both iptables variants; without them
//! it fails saying what is missing.

use std::sync::Arc;

use kproxy_conformance::scenario::{RunOptions, assert_suite_passes};
use kproxy_core::Balancing;
use kproxy_iptables::Variant;

mod common;
use common::Iptables;

async fn run_suite(variant: Variant, balancing: Balancing) {
    // The files describe nftables mode; this one runs them all, with `expectBy` where
    // upstream's iptables mode differs.
    let options = RunOptions::new(Arc::new(Iptables { variant, balancing }));
    assert_suite_passes(&options, &format!("iptables-{variant}, {balancing:?}")).await;
}

/// Both variants, one after the other (each run checks that it left no namespace, so they
/// must not overlap); the nft variant also with round robin (`-m statistic --mode nth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_both_iptables_variants() {
    run_suite(Variant::Nft, Balancing::Random).await;
    run_suite(Variant::Legacy, Balancing::Random).await;
    run_suite(Variant::Nft, Balancing::RoundRobin).await;
}
