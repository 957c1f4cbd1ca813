//! The scenario suite: every file in `scenarios/`, run against the nftables backend in
//! network namespaces, as `kproxy-scenario --backend nft --skip-other-backends scenarios/`
//! would. Needs root, iproute2 and nft; without them it fails saying what is missing.

use std::path::PathBuf;

use kproxy_testkit::netns;
use kproxy_testkit::scenario::{RunOptions, run_paths};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_on_nftables() {
    if let Err(error) = netns::check_environment() {
        panic!("the scenario suite cannot run here: {error}");
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let options = RunOptions {
        skip_other_backends: true,
        ..RunOptions::new("nft")
    };
    let summary = run_paths(&[dir], &options)
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
