//! Damage from outside, against the real kernel: while a reconciler runs the nftables
//! dataplane, someone deletes or flushes its table, deletes a service chain or flushes the
//! dispatch map — with the proxy idle and while it syncs. Within one sync period the rules are
//! whole again and packets reach their endpoints. Needs root, iproute2 and nft.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use kproxy_conformance::DataplaneFactory;
use kproxy_conformance::kernel::{churn_world, node, simple_service, simple_slice};
use kproxy_core::{
    ConversionOptions, IpFamily, LocalTrafficDetector, ProxyConfig, Readiness, Reconciler,
    ReconcilerConfig, ServiceChangeTracker, SyncStatus, TrackerHandle,
};
use kproxy_nft::{NftCommand, NftDataplane};
use kproxy_rig::probe::{self, Outcome, Probe};
use kproxy_rig::{World, netns};
use tokio::sync::{oneshot, watch};

mod common;
use common::Nftables;

const SYNC_PERIOD: Duration = Duration::from_secs(1);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("valid"),
        ]),
        service_cidrs: vec!["172.30.0.0/16".parse().expect("valid")],
        ..ProxyConfig::default()
    }
}

struct Proxy {
    handle: TrackerHandle,
    status: watch::Receiver<SyncStatus>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn start(world: &World) -> Proxy {
    let mut tracker = ServiceChangeTracker::new(node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("churned", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice("churned", &["10.180.0.1", "10.180.0.2"]));
    tracker.upsert_service(&simple_service("steady", "172.30.0.2"));
    tracker.upsert_endpoint_slice(&simple_slice("steady", &["10.180.1.1"]));
    let handle = TrackerHandle::new(tracker);
    let dataplane = NftDataplane::new(config(), Box::new(NftCommand::in_netns(world.node_netns())));
    let reconciler = Reconciler::new(
        handle.clone(),
        Box::new(dataplane),
        Readiness::new(),
        ReconcilerConfig {
            min_sync_period: Duration::from_millis(50),
            sync_period: SYNC_PERIOD,
            ..ReconcilerConfig::default()
        },
    );
    let status = reconciler.status();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(reconciler.run(async move {
        let _ = stopped.await;
    }));
    Proxy {
        handle,
        status,
        stop: Some(stop),
    }
}

fn nft(world: &World, input: &str) {
    let output = Command::new("ip")
        .args(["netns", "exec", world.node_netns(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())?;
            child.wait_with_output()
        })
        .expect("nft runs");
    assert!(
        output.status.success(),
        "tampering with `{input}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The table's listing with its lines sorted: equal rulesets list equal whatever order their
/// elements were added in.
fn listing(world: &World) -> Vec<String> {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            world.node_netns(),
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ])
        .output()
        .expect("nft runs");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

async fn reaches(world: &World, cluster_ip: &str) -> bool {
    let probe = Probe::tcp(ip("10.0.0.2"), ip(cluster_ip), 80);
    matches!(
        probe::send(world, &probe, Duration::from_millis(500)).await,
        Outcome::Reply(reply) if reply.kind == "endpoint"
    )
}

/// Waits until both services answer and the table lists as `whole`; returns how long it took.
async fn wait_whole(world: &World, whole: &[String], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if listing(world) == whole
            && reaches(world, "172.30.0.1").await
            && reaches(world, "172.30.0.2").await
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the rules were not whole again within {within:?}:\n{}",
            listing(world).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn churned_chain(world: &World) -> String {
    listing(world)
        .iter()
        .find_map(|line| {
            line.strip_prefix("chain ")
                .filter(|name| name.starts_with("service-") && name.contains("/churned/"))
                .map(|name| name.trim_end_matches(" {").to_owned())
        })
        .expect("the churned service's chain is listed")
}

/// Each kind of damage, as the operator's command.
fn tampering(world: &World) -> Vec<(&'static str, String)> {
    let chain = churned_chain(world);
    vec![
        ("delete the table", "delete table ip kube-proxy".to_owned()),
        ("flush the table", "flush table ip kube-proxy".to_owned()),
        (
            "delete one service chain",
            format!(
                "delete element ip kube-proxy service-ips {{ 172.30.0.1 . tcp . 80 }}\n\
                 delete chain ip kube-proxy {chain}\n"
            ),
        ),
        (
            "flush the dispatch map",
            "flush map ip kube-proxy service-ips".to_owned(),
        ),
    ]
}

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    if let Err(error) = Nftables::default().preflight() {
        panic!("nftables kernel tests cannot run here: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_an_idle_proxy_is_repaired_within_one_sync_period() {
    require_kernel();
    let world = churn_world().await;
    let proxy = start(&world);
    let whole = {
        // The first full sync.
        let started = Instant::now();
        while proxy.status.borrow().full_syncs == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "no first sync");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        listing(&world)
    };
    assert!(
        reaches(&world, "172.30.0.1").await,
        "the service answers before any damage"
    );
    // Another agent's commit changes the ruleset's generation but not our table: the check
    // looks closer and finds nothing to repair.
    nft(&world, "add table ip bystander\nadd chain ip bystander c\n");
    tokio::time::sleep(SYNC_PERIOD * 2 + Duration::from_millis(500)).await;
    assert_eq!(
        proxy.status.borrow().repairs,
        0,
        "a commit to another table is not damage"
    );
    for (what, command) in tampering(&world) {
        let repairs = proxy.status.borrow().repairs;
        nft(&world, &command);
        assert!(
            !reaches(&world, "172.30.0.1").await || listing(&world) != whole,
            "{what}: the damage took effect"
        );
        let took = wait_whole(&world, &whole, SYNC_PERIOD + Duration::from_secs(2)).await;
        assert!(
            proxy.status.borrow().repairs > repairs,
            "{what}: repaired, and counted as a repair"
        );
        eprintln!("{what}: whole again after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_while_the_proxy_syncs_is_repaired_within_one_sync_period() {
    require_kernel();
    let world = churn_world().await;
    let proxy = start(&world);
    let started = Instant::now();
    while proxy.status.borrow().full_syncs == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no first sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let whole = listing(&world);
    for (what, command) in tampering(&world) {
        // Endpoints change every 20 ms while the damage is done, then settle as they were.
        for round in 0..20 {
            let endpoints: &[&str] = if round % 2 == 0 {
                &["10.180.0.1", "10.180.0.2", "10.180.0.3"]
            } else {
                &["10.180.0.2"]
            };
            proxy
                .handle
                .upsert_endpoint_slice(&simple_slice("churned", endpoints));
            if round == 10 {
                nft(&world, &command);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
            .handle
            .upsert_endpoint_slice(&simple_slice("churned", &["10.180.0.1", "10.180.0.2"]));
        let took = wait_whole(&world, &whole, SYNC_PERIOD + Duration::from_secs(2)).await;
        eprintln!("{what} during churn: whole again after {took:?}");
    }
}
