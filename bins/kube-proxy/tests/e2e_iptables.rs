//! End to end in iptables mode, with the manifests source: the real binary with
//! `--proxy-mode iptables` in a node namespace programs the variant it detects (a fresh node:
//! nft) or is told (`--iptables-variant legacy`), and nothing in the other; packets reach the
//! endpoints through a cluster IP and a node port; `/metrics` serves upstream's iptables
//! metrics; `--cleanup` removes the chains. A node without the iptables tools is one clear
//! error naming the tool and its package.
//!
//! Needs root, iproute2 and both iptables variants; without them the test fails saying what
//! is missing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kproxy_core::Protocol;
use kproxy_rig::probe::{self, CheckOptions, Expectation, Probe};
use kproxy_rig::process::{METRICS_ADDRESS, ProxyProcess, http_get, test_args};
use kproxy_rig::{World, WorldSpec, netns};

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

const CLUSTER: &str = "
apiVersion: v1
kind: Node
metadata: { name: ipt-node }
status: { addresses: [ { type: InternalIP, address: 192.168.61.2 } ] }
---
apiVersion: v1
kind: Service
metadata: { namespace: e2e, name: web }
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [ { name: http, port: 80, targetPort: 8080, nodePort: 30080 } ]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { namespace: e2e, name: web-x, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [ { name: http, port: 8080 } ]
endpoints:
- { addresses: [ 10.244.1.11 ], nodeName: ipt-node }
- { addresses: [ 10.244.2.12 ], nodeName: other-node }
";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("the end-to-end test cannot run here: {error}");
    }
    for tool in ["iptables-nft-save", "iptables-legacy-save"] {
        if let Err(error) = netns::require_tool(tool, &["--version"]) {
            panic!("the iptables end-to-end test cannot run here: {error}");
        }
    }
}

/// The sample `series` of an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// One run of the proxy in a world of its own, with `variant_flag` (if any); `expected` is
/// the variant it must program.
async fn run(dir: &Path, variant_flag: Option<&str>, expected: &str) {
    let other = if expected == "nft" { "legacy" } else { "nft" };
    let mut spec = WorldSpec::new(BTreeMap::from([(
        "eth0".to_owned(),
        vec!["192.168.61.2/24".parse().expect("valid")],
    )]));
    spec.pod_networks = vec!["10.244.0.0/16".parse().expect("valid")];
    for endpoint in ["10.244.1.11", "10.244.2.12"] {
        spec.endpoint(ip(endpoint), 8080, Protocol::Tcp);
    }
    let cluster_ip = Probe::tcp(ip("10.244.1.100"), ip("10.96.0.10"), 80);
    let node_port = Probe::tcp(ip("203.0.113.7"), ip("192.168.61.2"), 30080);
    spec.probe(&cluster_ip).probe(&node_port);
    let world = World::build(spec).await.expect("world");

    let log = dir.join(format!("kube-proxy-{expected}.log"));
    let manifests = dir.display().to_string();
    let mut args = test_args("ipt-node", "10.244.0.0/16", &["--manifests", &manifests]);
    args.extend(["--proxy-mode", "iptables"].map(String::from));
    if let Some(flag) = variant_flag {
        args.push(format!("--iptables-variant={flag}"));
    }
    let proxy = ProxyProcess::start(Path::new(BIN), world.node(), &args, Some(&log))
        .expect("start kube-proxy");
    if let Err(error) = proxy
        .wait_healthy(world.node(), Duration::from_secs(30))
        .await
    {
        panic!("{error}");
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains(&format!("using the iptables-{expected} tools")),
        "the variant is logged: {log_text}"
    );

    // From a pod (local traffic) the source is kept; from outside to a node port (Cluster
    // policy) it is masqueraded, as upstream.
    let both: Expectation = "10.244.1.11:8080, 10.244.2.12:8080"
        .parse()
        .expect("expectation");
    for (probe, masq) in [(&cluster_ip, false), (&node_port, true)] {
        let options = CheckOptions {
            masq: Some(masq),
            ..CheckOptions::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let verdict = probe::check(&world, probe, &both, options).await;
            if verdict.pass {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}\n{}",
                verdict.seen,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let saved = world
        .node()
        .exec(&format!("iptables-{expected}-save"), &["-t", "nat"], None)
        .expect("save");
    assert!(
        saved.contains(":KUBE-SERVICES") && saved.contains("KUBE-SVC-"),
        "{expected}: {saved}"
    );
    let elsewhere = world
        .node()
        .exec(&format!("iptables-{other}-save"), &["-t", "nat"], None)
        .unwrap_or_default();
    assert!(
        !elsewhere.contains("KUBE-"),
        "nothing in the {other} variant: {elsewhere}"
    );

    let (code, text) = http_get(world.node(), METRICS_ADDRESS, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for table in ["nat", "filter"] {
        let total = sample(
            &text,
            &format!(
                "kubeproxy_sync_proxy_rules_iptables_total{{ip_family=\"IPv4\",table=\"{table}\"}}"
            ),
        );
        assert!(total.is_some_and(|n| n > 0.0), "{table}: {text}");
    }
    for series in [
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}: {text}");
    }
    assert!(!text.contains("nftables_sync_failures"), "{text}");

    let status = proxy
        .stop(Duration::from_secs(10))
        .await
        .expect("stops on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let cleanup = Command::new(BIN)
        .args(["--netns", world.node_netns(), "--cleanup"])
        .output()
        .expect("run --cleanup");
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let saved = world
        .node()
        .exec(&format!("iptables-{expected}-save"), &["-t", "nat"], None)
        .expect("save");
    assert!(!saved.contains("KUBE-"), "left after --cleanup: {saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_mode_programs_the_detected_or_forced_variant() {
    require_kernel();
    let dir = std::env::temp_dir().join(format!("kproxy-e2e-ipt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("cluster.yaml"), CLUSTER).expect("manifests");
    run(&dir, None, "nft").await;
    run(&dir, Some("legacy"), "legacy").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node without the iptables tools: one clear error naming the tool and its package, exit
/// 1, before anything is programmed. Runs in a namespace of its own with an empty PATH.
#[test]
fn missing_iptables_tools_are_one_clear_error_and_exit_1() {
    if let Err(error) = netns::check_environment() {
        panic!("this test cannot run here: {error}");
    }
    let ns = kproxy_rig::NetNs::new("noipt").expect("namespace");
    let empty = std::env::temp_dir().join(format!("kproxy-no-iptables-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("empty dir");
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
    let mut args = test_args("demo-node", "10.244.0.0/16", &[]);
    args.extend(
        [
            "--netns",
            ns.name(),
            "--manifests",
            manifests,
            "--proxy-mode",
            "iptables",
        ]
        .map(String::from),
    );
    let out = Command::new(BIN)
        .args(&args)
        .env("PATH", &empty)
        .output()
        .expect("run kube-proxy");
    std::fs::remove_dir_all(&empty).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`iptables-nft-save` is not installed")
            && stderr.contains("Debian package iptables"),
        "the error names the tool and its package: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one error: {stderr}"
    );
}
