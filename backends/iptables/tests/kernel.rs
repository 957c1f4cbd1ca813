//! The iptables backend against the real kernel, in namespaces of its own, on both variants:
//! the conformance crate's kernel invariants (incremental equals full, atomicity under churn,
//! refused syncs) plus what only this backend has (the canary, the conntrack-INVALID drop).
//!
//! Needs root, iproute2 and both iptables variants; without them the tests fail saying what
//! is missing.

use std::net::IpAddr;

use kproxy_conformance::DataplaneFactory;
use kproxy_conformance::kernel::{self, KernelTarget, simple_service, simple_slice};
use kproxy_core::{
    Balancing, ConversionOptions, Integrity, IpFamily, LocalTrafficDetector, ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_iptables::{Tool, Variant, normalize};
use kproxy_rig::{NetNs, netns};
use proptest::prelude::*;

mod common;
use common::Iptables;

fn target(variant: Variant) -> Iptables {
    let target = Iptables {
        variant,
        balancing: Balancing::Random,
    };
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    if let Err(error) = target.preflight() {
        panic!("iptables-{variant} kernel tests cannot run here: {error}");
    }
    target
}

fn config() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("valid"),
            "fd00::/48".parse().expect("valid"),
        ]),
        ..ProxyConfig::default()
    }
}

fn save(variant: Variant, netns: &NetNs, family: IpFamily) -> String {
    let tool = variant.binary(family, Tool::Save);
    ["filter", "nat", "mangle"]
        .iter()
        .map(|table| {
            netns
                .exec(tool, &["-t", table], None)
                .unwrap_or_else(|e| panic!("{tool} -t {table}: {e}"))
        })
        .collect()
}

impl KernelTarget for Iptables {
    fn listing(&self, netns: &NetNs) -> kproxy_rig::Result<String> {
        Ok([IpFamily::V4, IpFamily::V6]
            .into_iter()
            .map(|family| normalize(&save(self.variant, netns, family)))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    fn obstruct(&self, netns: &NetNs, _cluster_ip: IpAddr) -> kproxy_rig::Result<()> {
        // Another agent removes nat KUBE-SERVICES (and the jumps to it): the next partial
        // sync's insert into it is refused, and the nat table is left as it was.
        let iptables = self.variant.binary(IpFamily::V4, Tool::Iptables);
        let portals = "kubernetes service portals";
        for chain in ["PREROUTING", "OUTPUT"] {
            netns.exec(
                iptables,
                &[
                    "-t",
                    "nat",
                    "-D",
                    chain,
                    "-m",
                    "comment",
                    "--comment",
                    portals,
                    "-j",
                    "KUBE-SERVICES",
                ],
                None,
            )?;
        }
        netns.exec(iptables, &["-t", "nat", "-F", "KUBE-SERVICES"], None)?;
        netns
            .exec(iptables, &["-t", "nat", "-X", "KUBE-SERVICES"], None)
            .map(drop)
    }
}

/// Invariant 3 of the design, on each variant: the rules of incremental syncs equal those of
/// one full sync (normalized `iptables-save`, counters stripped), over random steps. A fixed
/// number of cases, whatever `PROPTEST_CASES` says: each builds namespaces and lists both
/// variants' rules, so `scripts/test.sh`'s 256 would take minutes.
#[test]
fn incremental_syncs_leave_the_rules_of_a_full_sync() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(kernel::step(), 2..6), |steps| {
            for variant in Variant::ALL {
                runtime.block_on(kernel::incremental_equals_full(
                    &target(variant),
                    &config(),
                    &steps,
                ));
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_survive_hundreds_of_syncs_and_new_ones_never_fail() {
    for variant in Variant::ALL {
        kernel::syncs_are_atomic(&target(variant), &config()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_leaves_the_rules_and_the_next_sync_is_full() {
    for variant in Variant::ALL {
        let error = kernel::a_refused_sync_keeps_the_state(&target(variant), &config()).await;
        let chain = error.to_string();
        let restore = variant.binary(IpFamily::V4, Tool::Restore);
        assert!(
            chain.contains(&format!("{restore} --noflush")) && chain.contains("lines ("),
            "the error names the tool and the size of its input: {chain}"
        );
        assert!(
            chain.contains("line "),
            "and the tool's own message: {chain}"
        );
    }
}

/// A firewall reload deletes the canary; `iptables -F` keeps it (empty) but takes the jumps;
/// someone may delete one jump alone. Each is noticed by the check the reconciler runs on
/// periodic syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_and_the_jumps_tell_a_flushed_or_reloaded_table() {
    for variant in Variant::ALL {
        let target = target(variant);
        let ns = NetNs::new("canary").expect("namespace");
        let mut dataplane = target.build(&config(), ns.name()).expect("dataplane");
        let mut tracker = ServiceChangeTracker::new(kernel::node(), ConversionOptions::default());
        tracker.upsert_service(&simple_service("a", "172.30.0.1"));
        tracker.upsert_endpoint_slice(&simple_slice("a", &["10.180.0.1"]));
        tracker.drain();
        dataplane
            .full_sync(&tracker.state())
            .await
            .expect("full sync");
        assert_eq!(dataplane.verify().await.expect("verify"), Integrity::Intact);
        let iptables = variant.binary(IpFamily::V4, Tool::Iptables);
        for damage in [&["-t", "nat", "-F"][..], &["-t", "filter", "-F"][..]] {
            ns.exec(iptables, damage, None).expect("flush");
            assert!(
                matches!(
                    dataplane.verify().await.expect("verify"),
                    Integrity::Damaged(_)
                ),
                "{variant}: {damage:?} is noticed"
            );
            dataplane.full_sync(&tracker.state()).await.expect("repair");
            assert_eq!(dataplane.verify().await.expect("verify"), Integrity::Intact);
        }
        // One jump alone, deleted by hand.
        let forward = [
            "-t",
            "filter",
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "kubernetes forwarding rules",
            "-j",
            "KUBE-FORWARD",
        ];
        ns.exec(iptables, &forward, None).expect("delete one jump");
        let Integrity::Damaged(why) = dataplane.verify().await.expect("verify") else {
            panic!("{variant}: a lost jump is damage");
        };
        assert!(why.contains("FORWARD to KUBE-FORWARD"), "{why}");
        dataplane.full_sync(&tracker.state()).await.expect("repair");
        assert_eq!(dataplane.verify().await.expect("verify"), Integrity::Intact);
        ns.exec(iptables, &["-t", "mangle", "-X", "KUBE-PROXY-CANARY"], None)
            .expect("delete the canary");
        let Integrity::Damaged(why) = dataplane.verify().await.expect("verify") else {
            panic!("{variant}: a deleted canary is damage");
        };
        assert!(why.contains("KUBE-PROXY-CANARY"), "{why}");
    }
}

/// The conntrack-INVALID drop follows the namespace's `nf_conntrack_tcp_be_liberal`, as
/// upstream's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invalid_drop_is_written_unless_tcp_tracking_is_liberal() {
    let target = target(Variant::Nft);
    for (liberal, expect_rule) in [("0", true), ("1", false)] {
        let ns = NetNs::new("invalid").expect("namespace");
        // Per namespace: this changes nothing outside the test's own namespace.
        ns.exec(
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.netfilter.nf_conntrack_tcp_be_liberal={liberal}"),
            ],
            None,
        )
        .expect("sysctl in the namespace");
        let mut dataplane = target.build(&config(), ns.name()).expect("dataplane");
        let tracker = ServiceChangeTracker::new(kernel::node(), ConversionOptions::default());
        dataplane
            .full_sync(&tracker.state())
            .await
            .expect("full sync");
        let filter = ns
            .exec("iptables-nft-save", &["-t", "filter"], None)
            .expect("save");
        assert_eq!(
            filter.contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"),
            expect_rule,
            "liberal={liberal}:\n{filter}"
        );
    }
}
