//! The iptables backend against the in-memory kernel: upstream's golden rules, incremental
//! syncs equal to full ones under random changes, refused restores, the canary check.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{
    ChangeSet, ConversionOptions, Dataplane, Integrity, IpFamily, LocalTrafficDetector, NodeInfo,
    ProxyConfig, ServiceChangeTracker,
};
use kproxy_iptables::{FakeIptables, IptablesConfig, IptablesDataplane, Table, normalize};
use kproxy_objects as objects;
use kproxy_objects::edits::{apply_edit, edit};
use proptest::prelude::*;

const NODE: &str = "test-hostname";

fn node() -> NodeInfo {
    NodeInfo {
        name: NODE.into(),
        zone: None,
        pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        addresses: vec!["192.168.0.2".parse().unwrap()],
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()]),
        ..ProxyConfig::default()
    }
}

fn dataplane() -> (IptablesDataplane, FakeIptables) {
    let fake = FakeIptables::new();
    let dataplane =
        IptablesDataplane::new(config(), IptablesConfig::default(), Box::new(fake.clone()));
    (dataplane, fake)
}

fn tracker() -> ServiceChangeTracker {
    ServiceChangeTracker::new(node(), ConversionOptions::default())
}

fn one_endpoint_slice(
    namespace: &str,
    service: &str,
    endpoints: &[(&str, Option<&str>)],
) -> EndpointSlice {
    endpoints
        .iter()
        .fold(
            objects::slice(namespace, service, &format!("{service}-1")).port("p80", 80, "TCP"),
            |slice, (address, node)| {
                let endpoint = objects::endpoint(address);
                slice.endpoint(match node {
                    Some(node) => endpoint.node(node),
                    None => endpoint,
                })
            },
        )
        .build()
}

/// Upstream's TestOverallIPTablesRulesWithMultipleServices cluster.
fn upstream_cluster(tracker: &mut ServiceChangeTracker) {
    let services: Vec<Service> = vec![
        objects::service("ns1", "svc1")
            .cluster_ip("172.30.0.41")
            .port("p80", 80, "TCP")
            .build(),
        objects::service("ns2", "svc2")
            .type_("LoadBalancer")
            .cluster_ip("172.30.0.42")
            .port("p80", 80, "TCP")
            .node_port(3001)
            .load_balancer_ip("1.2.3.4")
            .external_ip("192.168.99.22")
            .external_policy_local()
            .health_check_node_port(30000)
            .build(),
        objects::service("ns3", "svc3")
            .type_("NodePort")
            .cluster_ip("172.30.0.43")
            .port("p80", 80, "TCP")
            .node_port(3003)
            .build(),
        objects::service("ns4", "svc4")
            .type_("NodePort")
            .cluster_ip("172.30.0.44")
            .external_ip("192.168.99.33")
            .port("p80", 80, "TCP")
            .build(),
        objects::service("ns5", "svc5")
            .type_("LoadBalancer")
            .cluster_ip("172.30.0.45")
            .port("p80", 80, "TCP")
            .node_port(3002)
            .load_balancer_ip("5.6.7.8")
            .health_check_node_port(30000)
            .source_range("203.0.113.0/25")
            .build(),
        objects::service("ns6", "svc6")
            .cluster_ip("172.30.0.46")
            .port("p80", 80, "TCP")
            .build(),
    ];
    for service in &services {
        tracker.upsert_service(service);
    }
    for slice in [
        one_endpoint_slice("ns1", "svc1", &[("10.180.0.1", None)]),
        one_endpoint_slice("ns2", "svc2", &[("10.180.0.2", None)]),
        one_endpoint_slice("ns3", "svc3", &[("10.180.0.3", None)]),
        one_endpoint_slice(
            "ns4",
            "svc4",
            &[("10.180.0.4", None), ("10.180.0.5", Some(NODE))],
        ),
        one_endpoint_slice("ns5", "svc5", &[("10.180.0.3", None)]),
    ] {
        tracker.upsert_endpoint_slice(&slice);
    }
}

/// The chains of a restore input or save output, table by table, leaving out the built-in
/// chains (whose jumps upstream's golden does not hold) and the canary. The rules of the
/// shared chains are sorted: their order among service ports does not matter.
fn chains_of(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    const SHARED: [&str; 4] = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
    ];
    let mut table = String::new();
    let mut chains: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line
            .strip_prefix("-I KUBE-POSTROUTING 1 ")
            .map_or(line.to_owned(), |rule| {
                format!("-A KUBE-POSTROUTING {rule}")
            });
        let line = line.as_str();
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
        } else if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split_whitespace().next().unwrap();
            if name.starts_with("KUBE-") && name != "KUBE-PROXY-CANARY" {
                chains.entry((table.clone(), name.to_owned())).or_default();
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, args) = rule.split_once(' ').unwrap();
            if chain.starts_with("KUBE-") {
                chains
                    .entry((table.clone(), chain.to_owned()))
                    .or_default()
                    .push(args.to_owned());
            }
        }
    }
    for ((_, name), rules) in chains.iter_mut() {
        if SHARED.contains(&name.as_str()) {
            rules.sort_by_key(|rule| (rule.contains("-j KUBE-NODEPORTS"), rule.clone()));
        } else if name == "KUBE-POSTROUTING" {
            // The hairpin marks first, sorted; the fixed rules after them in their order.
            rules.sort_by_key(|rule| match rule.contains(" hairpin") {
                true => (0, rule.clone()),
                false => (1, String::new()),
            });
        }
    }
    chains
}

/// Upstream's rules in this backend's shape, which has no chain per endpoint (see
/// `render::endpoint_rules`): each jump from a service chain to a `KUBE-SEP-…` chain becomes
/// that chain's DNAT, and its hairpin mark (`-s EP -j KUBE-MARK-MASQ`) becomes a mark in
/// `KUBE-POSTROUTING` for connections from the endpoint to itself (`-s EP -d EP`).
fn without_endpoint_chains(upstream: &str) -> String {
    let mut dnat: BTreeMap<&str, &str> = BTreeMap::new();
    let mut hairpin: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for line in upstream.lines() {
        let Some(rule) = line.strip_prefix("-A KUBE-SEP-") else {
            continue;
        };
        let (hash, args) = rule.split_once(' ').unwrap();
        let (comment, rest) = args
            .strip_prefix("-m comment --comment ")
            .unwrap()
            .split_once(' ')
            .unwrap();
        if let Some(source) = rest.strip_prefix("-s ") {
            hairpin.insert(hash, (comment, source.split_once(' ').unwrap().0));
        } else {
            dnat.insert(hash, rest);
        }
    }
    let mut out = String::new();
    for line in upstream.lines() {
        if line.starts_with(":KUBE-SEP-") || line.starts_with("-A KUBE-SEP-") {
            continue;
        }
        if line.starts_with("-A KUBE-POSTROUTING") && !out.contains(" hairpin\"") {
            for (comment, address) in hairpin.values() {
                out.push_str(&format!(
                    "-A KUBE-POSTROUTING -m comment --comment \"{comment} hairpin\" -s {address} -d {address} -m conntrack --ctstate DNAT -j KUBE-MARK-MASQ\n"
                ));
            }
        }
        match line.split_once(" -j KUBE-SEP-") {
            Some((head, hash)) => out.push_str(&format!("{head} {}\n", dnat[hash])),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

#[tokio::test]
async fn a_full_sync_writes_upstreams_rules_for_its_overall_test_cluster() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let input = &fake.inputs()[0];
    let expected = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/upstream-overall.txt"),
    )
    .unwrap();
    // Upstream's real proxier masquerades fully-random; its fake iptables cannot say so.
    let ours = input.replace("-j MASQUERADE --random-fully", "-j MASQUERADE");
    let (ours, expected) = (
        chains_of(&ours),
        chains_of(&without_endpoint_chains(&expected)),
    );
    for (key, rules) in &expected {
        assert_eq!(ours.get(key), Some(rules), "chain {key:?} differs");
    }
    let extra: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "chains upstream does not write: {extra:?}"
    );
    // And the jumps from the built-in chains, as upstream ensures them.
    assert!(input.contains(
        "-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    ));
    assert!(input.contains("-I INPUT 1 -j KUBE-FIREWALL"));
    assert!(
        fake.route_localnet(),
        "localhost node ports need route_localnet"
    );
}

#[tokio::test]
async fn a_second_full_sync_changes_nothing_and_removes_stale_chains_of_upstream() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    // Leftovers of upstream's iptables mode: a service chain nobody wants, and its jump.
    fake.apply(
        IpFamily::V4,
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLDOLDOLDOLDOLD0 - [0:0]\n-A KUBE-SERVICES -d 172.30.9.9/32 -j KUBE-SVC-OLDOLDOLDOLDOLD0\nCOMMIT\n",
    )
    .unwrap();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let first = saved(&fake);
    assert!(!first.contains("OLDOLD"), "{first}");
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert_eq!(saved(&fake), first);
    let second_input = fake.inputs().last().unwrap().clone();
    assert!(
        !second_input.contains("-I PREROUTING"),
        "jumps already in place are left alone:\n{second_input}"
    );
}

fn saved(fake: &FakeIptables) -> String {
    Table::ALL
        .into_iter()
        .map(|table| fake.saved(IpFamily::V4, table))
        .collect()
}

async fn full_of(state: &kproxy_core::ProxyState) -> String {
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(state).await.unwrap();
    normalize(&saved(&fake))
}

#[tokio::test]
async fn an_endpoint_change_rewrites_only_that_ports_chains() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    tracker.upsert_endpoint_slice(&one_endpoint_slice(
        "ns1",
        "svc1",
        &[("10.180.0.1", None), ("10.180.0.9", None)],
    ));
    let changes = tracker.drain();
    dataplane.sync(&tracker.state(), &changes).await.unwrap();
    let input = fake.inputs().last().unwrap().clone();
    assert_eq!(
        input
            .lines()
            .filter(|l| l.starts_with("-A") || l.starts_with("-I"))
            .count(),
        1 + 2 + 1,
        "the service chain (masquerade + 2 endpoints) and the new endpoint's hairpin mark:\n{input}"
    );
    assert!(!input.contains("KUBE-SERVICES"), "{input}");
    assert!(!input.contains("*filter"), "{input}");
    assert_eq!(normalize(&saved(&fake)), full_of(&tracker.state()).await);
}

#[tokio::test]
async fn a_refused_restore_keeps_the_rules_and_forces_a_full_sync() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    let before = saved(&fake);
    tracker.delete_service("ns1", "svc1");
    let changes = tracker.drain();
    fake.refuse_next_restore();
    let error = dataplane
        .sync(&tracker.state(), &changes)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("refused on request"), "{error}");
    assert_eq!(saved(&fake), before);
    assert_eq!(dataplane.stats().partial_restore_failures(IpFamily::V4), 1);
    // The reconciler answers a failure with a full sync, which repairs everything.
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert_eq!(normalize(&saved(&fake)), full_of(&tracker.state()).await);
}

#[tokio::test]
async fn the_canary_and_the_jumps_tell_a_flushed_or_reloaded_table() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
    // `iptables -t nat -F`: every rule goes, the empty canary stays.
    let nat = fake.saved(IpFamily::V4, Table::Nat);
    let flush: String = nat
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|d| format!("-F {}\n", d.split_whitespace().next().unwrap()))
        .collect();
    fake.apply(IpFamily::V4, &format!("*nat\n{flush}COMMIT\n"))
        .unwrap();
    assert!(matches!(
        dataplane.verify().await.unwrap(),
        Integrity::Damaged(_)
    ));
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert_eq!(dataplane.verify().await.unwrap(), Integrity::Intact);
    // A firewall reload that deletes the canary.
    fake.apply(IpFamily::V4, "*mangle\n-X KUBE-PROXY-CANARY\nCOMMIT\n")
        .unwrap();
    let Integrity::Damaged(why) = dataplane.verify().await.unwrap() else {
        panic!("a deleted canary is damage");
    };
    assert!(why.contains("KUBE-PROXY-CANARY"), "{why}");
}

#[tokio::test]
async fn liberal_tcp_tracking_drops_the_invalid_rule_and_cleanup_removes_everything() {
    let mut tracker = tracker();
    upstream_cluster(&mut tracker);
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    fake.set_tcp_be_liberal(true);
    fake.apply(
        IpFamily::V4,
        "*filter\n:USER - [0:0]\n-A USER -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert!(!fake.inputs()[0].contains("INVALID"));
    dataplane.cleanup().await.unwrap();
    let left = saved(&fake);
    // Kubelet's KUBE-FIREWALL stays, as upstream's cleanup leaves it.
    let ours: Vec<&str> = left
        .lines()
        .filter(|l| l.contains("KUBE-") && !l.contains("KUBE-FIREWALL"))
        .collect();
    assert!(ours.is_empty(), "{left}");
    assert!(
        left.contains("-A USER -j ACCEPT"),
        "other rules stay: {left}"
    );
}

/// Above 1,000 endpoints the endpoint rules lose their comments, as in upstream's
/// large-cluster mode; crossing the threshold either way rewrites every rule.
#[tokio::test]
async fn crossing_the_large_cluster_threshold_rewrites_every_endpoint_rule() {
    let mut tracker = tracker();
    for i in 0..99 {
        tracker.upsert_service(&kproxy_objects::synthetic::service(i));
        tracker.upsert_endpoint_slice(&kproxy_objects::synthetic::slice(i, 10, 0));
    }
    tracker.drain();
    let (mut dataplane, fake) = dataplane();
    dataplane.full_sync(&tracker.state()).await.unwrap();
    assert!(saved(&fake).contains("-> "), "990 endpoints: commented");
    for (i, large) in [(99, true), (99, false)] {
        if large {
            tracker.upsert_service(&kproxy_objects::synthetic::service(i));
            tracker.upsert_endpoint_slice(&kproxy_objects::synthetic::slice(i, 11, 0));
        } else {
            tracker.delete_service(&format!("ns-{}", i % 100), &format!("svc-{i}"));
        }
        let changes = tracker.drain();
        dataplane.sync(&tracker.state(), &changes).await.unwrap();
        let now = saved(&fake);
        assert_eq!(!now.contains("-> "), large, "large={large}");
        assert_eq!(normalize(&now), full_of(&tracker.state()).await);
    }
}

proptest! {
    /// Invariant 3 of the design: after any sequence of changes, the rules of incremental
    /// syncs equal those of one full sync of the final state.
    #[test]
    fn incremental_syncs_equal_a_full_sync(steps in proptest::collection::vec(
        proptest::collection::vec(edit(), 1..4), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut tracker = tracker();
            let (mut dataplane, fake) = dataplane();
            dataplane.full_sync(&tracker.state()).await.unwrap();
            for edits in &steps {
                for edit in edits {
                    apply_edit(&mut tracker, edit);
                }
                let changes: ChangeSet = tracker.drain();
                dataplane.sync(&tracker.state(), &changes).await.unwrap();
                prop_assert_eq!(normalize(&saved(&fake)), full_of(&tracker.state()).await);
            }
            Ok(())
        })?;
    }
}
