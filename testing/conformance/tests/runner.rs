//! The scenario runner end to end, with backend `none` (nothing programmed) and the kit's
//! own fixtures in `tests/fixtures/`. Needs root and iproute2; without them it fails saying
//! what is missing.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_conformance::scenario::{RunOptions, run_paths};
use kproxy_conformance::{DataplaneFactory, Recording};
use kproxy_core::{Dataplane, ProxyConfig};
use kproxy_rig::{Error, netns};

/// A factory that claims a mode but never builds: a scenario it runs must have been skipped.
struct NeverBuilt(&'static str);

impl DataplaneFactory for NeverBuilt {
    fn mode(&self) -> &str {
        self.0
    }

    fn build(&self, _: &ProxyConfig, _: &str) -> kproxy_rig::Result<Box<dyn Dataplane>> {
        Err(Error::Backend(format!(
            "{} is not built in this test",
            self.0
        )))
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_scenarios_run_and_pass_untouched_expectations() {
    require_kernel();
    let summary = run_paths(
        &[fixture("kit-untouched.json")],
        &RunOptions::new(Arc::new(Recording)),
    )
    .await
    .expect("the run starts");
    assert_eq!((summary.passed, summary.failed), (8, 0), "{summary:?}");
    assert!(
        netns::registered().is_empty(),
        "namespaces still held: {:?}",
        netns::registered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expectations_fail() {
    require_kernel();
    let summary = run_paths(
        &[fixture("kit-failing.json")],
        &RunOptions::new(Arc::new(Recording)),
    )
    .await
    .expect("the run starts");
    assert_eq!((summary.passed, summary.failed), (0, 3), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_for_another_backend_can_be_skipped() {
    require_kernel();
    let dir = std::env::temp_dir().join(format!("kpt-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("iptables-only.json");
    std::fs::write(
        &file,
        r#"{"config": {"backend": "iptables"}, "probes": [{"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "expect": "DROP"}]}"#,
    )
    .expect("write");
    let options = RunOptions {
        skip_other_backends: true,
        ..RunOptions::new(Arc::new(NeverBuilt("nftables")))
    };
    let summary = run_paths(std::slice::from_ref(&dir), &options).await;
    std::fs::remove_dir_all(&dir).ok();
    let summary = match summary {
        Ok(summary) => summary,
        Err(error) => panic!("the run did not start: {error}"),
    };
    assert_eq!(
        (summary.passed, summary.failed, summary.skipped),
        (0, 0, 1),
        "{summary:?}"
    );
}
