//! The nftables backend against the real kernel, in namespaces of its own, through the
//! conformance crate's kernel invariants (incremental equals full, atomicity, refused syncs)
//! plus what only this backend has (round robin with `numgen inc`, nft's own error text).
//!
//! Needs root, iproute2 and nft; without them the tests fail saying what is missing.

use std::net::IpAddr;
use std::time::Duration;

use kproxy_conformance::DataplaneFactory;
use kproxy_conformance::kernel::{self, KernelTarget, churn_world, simple_service, simple_slice};
use kproxy_core::{
    Balancing, ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_nft::{NftCommand, NftDataplane, NftKernel};
use kproxy_rig::probe::{self, Outcome, Probe};
use kproxy_rig::{NetNs, World, netns};
use proptest::prelude::*;

mod common;
use common::Nftables;

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    if let Err(error) = Nftables::default().preflight() {
        panic!("nftables kernel tests cannot run here: {error}");
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("valid"),
            "fd00::/48".parse().expect("valid"),
        ]),
        service_cidrs: vec![
            "172.30.0.0/16".parse().expect("valid"),
            "fd00:30::/64".parse().expect("valid"),
        ],
        ..ProxyConfig::default()
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

impl KernelTarget for Nftables {
    fn listing(&self, netns: &NetNs) -> kproxy_rig::Result<String> {
        Ok(normalized_listing(netns))
    }

    fn obstruct(&self, netns: &NetNs, cluster_ip: IpAddr) -> kproxy_rig::Result<()> {
        // Someone else takes the key the next sync wants, with another value.
        netns
            .exec(
                "nft",
                &[&format!(
                    "add element ip kube-proxy service-ips {{ {cluster_ip} . tcp . 80 : drop }}"
                )],
                None,
            )
            .map(drop)
    }
}

/// `nft list table` of both families with every block sorted by name and every set's elements
/// sorted, so that listings of equal rulesets built in different orders compare equal.
fn normalized_listing(ns: &NetNs) -> String {
    let mut out = String::new();
    for family in ["ip", "ip6"] {
        let listing = ns
            .exec("nft", &["list", "table", family, "kube-proxy"], None)
            .unwrap_or_default();
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut elements: Option<Vec<String>> = None;
        for line in listing.lines() {
            let trimmed = line.trim();
            if let Some(collected) = elements.as_mut() {
                let done = trimmed.ends_with('}');
                collected.extend(
                    trimmed
                        .trim_end_matches('}')
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(String::from),
                );
                if done {
                    let mut sorted = elements.take().unwrap_or_default();
                    sorted.sort();
                    current.push(format!("elements = {{ {} }}", sorted.join(", ")));
                }
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("elements = {") {
                elements = Some(Vec::new());
                let done = rest.ends_with('}');
                if let Some(collected) = elements.as_mut() {
                    collected.extend(
                        rest.trim_end_matches('}')
                            .split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(String::from),
                    );
                }
                if done {
                    let mut sorted = elements.take().unwrap_or_default();
                    sorted.sort();
                    current.push(format!("elements = {{ {} }}", sorted.join(", ")));
                }
                continue;
            }
            if line.starts_with("\t}") || (trimmed == "}" && line.starts_with('\t')) {
                // Emptied chains wait for a later sync to be deleted; a full sync writes none.
                let empty_chain = current.len() == 1 && current[0].starts_with("chain ");
                if !empty_chain {
                    blocks.push(current.join("\n"));
                }
                current.clear();
            } else if !trimmed.is_empty() && line.starts_with('\t') {
                current.push(trimmed.to_owned());
            }
        }
        blocks.sort();
        out.push_str(&format!("table {family}\n{}\n", blocks.join("\n")));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn incremental_syncs_leave_the_ruleset_of_a_full_sync(steps in prop::collection::vec(kernel::step(), 2..6)) {
        require_kernel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(kernel::incremental_equals_full(&Nftables::default(), &config(), &steps));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_survive_hundreds_of_syncs_and_new_ones_never_fail() {
    require_kernel();
    kernel::syncs_are_atomic(&Nftables::default(), &config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_leaves_the_ruleset_and_the_next_sync_is_full() {
    require_kernel();
    let error = kernel::a_refused_sync_keeps_the_state(&Nftables::default(), &config()).await;
    let chain = error.to_string();
    assert!(
        chain.contains("File exists"),
        "the error carries nft's message: {chain}"
    );
    assert!(
        chain.contains("add element ip kube-proxy service-ips"),
        "and the refused input: {chain}"
    );
}

/// With `Balancing::RoundRobin` (`numgen inc`), successive connections of one client cycle
/// through the endpoints in order, over the netlink fast path (an endpoint added by a partial
/// sync joins the cycle) as well as after a full sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_cycles_through_the_endpoints() {
    require_kernel();
    let world = churn_world().await;
    let service = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.1"), 80);
    let mut tracker = ServiceChangeTracker::new(kernel::node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("churned", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice(
        "churned",
        &["10.180.0.1", "10.180.0.2", "10.180.0.3"],
    ));
    tracker.drain();
    let mut dataplane = NftDataplane::new(
        ProxyConfig {
            ip_families: vec![IpFamily::V4],
            balancing: Balancing::RoundRobin,
            ..config()
        },
        Box::new(NftCommand::in_netns(world.node_netns())),
    );
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");

    async fn answers(world: &World, probe: &Probe, count: usize) -> Vec<IpAddr> {
        let mut seen = Vec::with_capacity(count);
        for _ in 0..count {
            match probe::send(world, probe, Duration::from_secs(2)).await {
                Outcome::Reply(reply) if reply.kind == "endpoint" => seen.push(reply.local.ip()),
                other => panic!("{probe}: {other:?}"),
            }
        }
        seen
    }
    let assert_cycles = |seen: &[IpAddr], period: usize| {
        for (i, window) in seen.windows(period).enumerate() {
            let mut distinct = window.to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                period,
                "window {i} of {seen:?} repeats an endpoint"
            );
        }
        for (i, pair) in seen.windows(period + 1).enumerate() {
            assert_eq!(pair[0], pair[period], "the cycle breaks at {i}: {seen:?}");
        }
    };
    assert_cycles(&answers(&world, &service, 9).await, 3);

    tracker.upsert_endpoint_slice(&simple_slice(
        "churned",
        &["10.180.0.1", "10.180.0.2", "10.180.0.3", "10.180.0.4"],
    ));
    let changes = tracker.drain();
    dataplane
        .sync(&tracker.state(), &changes)
        .await
        .expect("partial sync");
    assert_cycles(&answers(&world, &service, 12).await, 4);
}

/// A change of any size is one partial sync over netlink (no failure, no fallback to nft) and
/// leaves the ruleset a full sync of the same state makes: 2,000 Services created, the
/// endpoints of 3,000 changed, 2,000 deleted, one Service with 5,000 ports added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_changes_are_partial_syncs_equal_to_full_ones() {
    use kproxy_objects::synthetic::{service, service_with_ports, slice, slice_with_ports};

    require_kernel();
    let config = ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("valid"),
        ]),
        service_cidrs: vec!["172.16.0.0/12".parse().expect("valid")],
        ..ProxyConfig::default()
    };
    let node = NetNs::new("bulk").expect("namespace");
    let reference = NetNs::new("bulk-ref").expect("namespace");
    let kernel = NftCommand::in_netns(node.name());
    let mut dataplane = NftDataplane::new(config.clone(), Box::new(kernel.clone()))
        .with_chain_deletion_delay(Duration::ZERO);
    let mut tracker = ServiceChangeTracker::new(kernel::node(), ConversionOptions::default());
    for i in 0..3_000 {
        tracker.upsert_service(&service(i));
        tracker.upsert_endpoint_slice(&slice(i, 10, 0));
    }
    tracker.drain();
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");
    let ports: Vec<(String, i32)> = (0..5_000).map(|p| (format!("p{p}"), 10_000 + p)).collect();

    type Step = Box<dyn Fn(&mut ServiceChangeTracker)>;
    let steps: Vec<(&str, Step)> = vec![
        (
            "2,000 Services created",
            Box::new(|t| {
                for i in 3_000..5_000 {
                    t.upsert_service(&service(i));
                    t.upsert_endpoint_slice(&slice(i, 10, 0));
                }
            }),
        ),
        (
            "the endpoints of 3,000 Services changed",
            Box::new(|t| {
                for i in 0..3_000 {
                    t.upsert_endpoint_slice(&slice(i, 10, 1));
                }
            }),
        ),
        (
            "2,000 Services deleted",
            Box::new(|t| {
                for i in 3_000..5_000 {
                    t.delete_service(&format!("ns-{}", i % 100), &format!("svc-{i}"));
                    t.delete_endpoint_slice(&format!("ns-{}", i % 100), &format!("svc-{i}-abcde"));
                }
            }),
        ),
        (
            "one Service with 5,000 ports added",
            Box::new(move |t| {
                t.upsert_service(&service_with_ports(9_000, &ports));
                t.upsert_endpoint_slice(&slice_with_ports(9_000, 10, &ports));
            }),
        ),
    ];
    for (what, step) in steps {
        step(&mut tracker);
        let changes = tracker.drain();
        assert!(!changes.is_empty(), "{what}: something changed");
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .unwrap_or_else(|error| panic!("{what}: the partial sync failed: {error}"));
        assert_eq!(
            kernel.fallbacks(),
            0,
            "{what}: went through nft instead of netlink"
        );
        // Emptied chains are deleted by the next sync (chain_deletion_delay is zero).
        let empty = tracker.drain();
        dataplane
            .sync(&tracker.state(), &empty)
            .await
            .expect("settling sync");
        let mut full = NftDataplane::new(
            config.clone(),
            Box::new(NftCommand::in_netns(reference.name())),
        );
        full.full_sync(&tracker.state())
            .await
            .expect("reference full sync");
        let (incremental, reference) = (normalized_listing(&node), normalized_listing(&reference));
        assert!(
            incremental == reference,
            "{what}: the partial sync's ruleset differs from a full sync's ({} vs {} bytes)",
            incremental.len(),
            reference.len()
        );
    }
}

/// A kernel that never answers (a netlink peer that swallows every batch) fails the sync
/// after the timeout, naming the wait, instead of hanging it; the next sync is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_never_answers_fails_the_sync_in_bounded_time() {
    require_kernel();
    let node = NetNs::new("mute").expect("namespace");
    let swallower = kproxy_netlink::NetlinkSocket::open_peer(kproxy_netlink::NETLINK_NETFILTER)
        .expect("a netlink socket");
    let kernel = NftCommand::in_netns(node.name())
        .with_timeouts(Duration::from_millis(500), kproxy_nft::NFT_TIMEOUT)
        .with_netlink_peer(swallower.port().expect("port"));
    let mut dataplane = NftDataplane::new(config(), Box::new(kernel));
    let mut tracker = ServiceChangeTracker::new(kernel::node(), ConversionOptions::default());
    tracker.upsert_service(&simple_service("a", "172.30.0.1"));
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1"]));
    tracker.drain();
    // Full syncs go through nft, which reaches the real kernel.
    dataplane
        .full_sync(&tracker.state())
        .await
        .expect("full sync");
    tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1", "10.180.0.2"]));
    let changes = tracker.drain();
    let started = std::time::Instant::now();
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .expect_err("nobody answered the batch");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "failed after {waited:?}");
    assert!(
        error
            .to_string()
            .contains("no answer from the kernel within"),
        "{error}"
    );
}
