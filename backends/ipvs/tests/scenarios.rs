//! The scenario suite: every file of the conformance crate's `scenarios/`, run against the
//! IPVS backend with real packets, inside the UML guest (the host kernel has no IPVS), as
//! `kproxy-scenario --backend ipvs` would. The guest boots from the host's files, runs this
//! test binary's guest-side test, and reports; a guest that cannot start fails the test,
//! saying why.

use std::sync::Arc;
use std::time::Duration;

use kproxy_conformance::scenario::{RunOptions, assert_suite_passes};

mod common;
use common::Ipvs;

#[test]
fn every_scenario_passes_in_the_guest() {
    kproxy_guest::run_test_in_guest("guest_every_scenario_passes", Duration::from_secs(1200));
}

#[test]
#[ignore = "runs inside the UML guest (see every_scenario_passes_in_the_guest)"]
fn guest_every_scenario_passes() {
    kproxy_guest::require_inside();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let options = RunOptions::new(Arc::new(Ipvs { scheduler: "rr" }));
        assert_suite_passes(&options, "ipvs, rr").await;
    });
}
