//! `kube-proxy --proxy-mode ipvs` on the demo world (`examples/demo`), inside the UML guest
//! (the host kernel has no IPVS): kproxy-demo builds the world, runs the real binary with
//! `--manifests`, and sends traffic to the cluster IP and the node port. Every request must
//! reach a pod, and round robin must spread one client's requests evenly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Requests per destination: a multiple of the demo's three pods.
const REQUESTS: usize = 9;

#[test]
fn the_demo_runs_in_ipvs_mode_in_the_guest() {
    kproxy_guest::run_test_in_guest("guest_demo_ipvs", Duration::from_secs(300));
}

#[test]
#[ignore = "runs inside the UML guest (see the_demo_runs_in_ipvs_mode_in_the_guest)"]
fn guest_demo_ipvs() {
    kproxy_guest::require_inside();
    let demo = Path::new(env!("CARGO_BIN_EXE_kproxy-demo"));
    let kube_proxy = demo.with_file_name("kube-proxy");
    assert!(
        kube_proxy.is_file(),
        "{} is missing: build it first (cargo build -p kube-proxy; `cargo test --workspace` does)",
        kube_proxy.display()
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let out = Command::new(demo)
        .arg("--kube-proxy")
        .arg(&kube_proxy)
        .args(["--proxy-mode", "ipvs", "--iptables-variant", "legacy"])
        .args(["--requests", &REQUESTS.to_string()])
        .arg(&examples)
        .output()
        .expect("kproxy-demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    // kube-proxy's own log, for whoever reads a failure (it lives in the guest's /run).
    if let Some(log) = stdout
        .split("(log: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
    {
        println!(
            "--- kube-proxy log\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    assert!(
        out.status.success(),
        "kproxy-demo failed: {stderr}\n{stdout}"
    );
    assert!(stdout.contains("in ipvs mode"), "{stdout}");
    // Per destination, the pods that answered and how often.
    let mut destinations: Vec<(String, BTreeMap<String, usize>)> = Vec::new();
    for line in stdout.lines() {
        if line.contains(" requests from ") {
            destinations.push((line.to_owned(), BTreeMap::new()));
        } else if let Some((count, what)) = line.trim().split_once(" × ")
            && let Some((_, hits)) = destinations.last_mut()
        {
            hits.insert(what.to_owned(), count.trim().parse().expect("a count"));
        }
    }
    assert!(
        destinations.len() >= 2,
        "cluster IP and node port: {stdout}"
    );
    for (destination, hits) in &destinations {
        assert!(
            hits.keys().all(|what| what.starts_with("pod ")),
            "{destination}: every request reaches a pod: {hits:?}"
        );
        assert_eq!(hits.len(), 3, "{destination}: all three pods: {hits:?}");
        assert!(
            hits.values().all(|count| *count == REQUESTS / 3),
            "{destination}: round robin spreads evenly: {hits:?}"
        );
    }
}
