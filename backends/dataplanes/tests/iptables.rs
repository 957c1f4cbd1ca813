//! The iptables mode through the facade, against the real kernel, each test in namespaces of
//! its own: the preflight passes where the tools answer and names the namespace where they
//! cannot, the variant is detected as upstream's image detects it (kubelet's hint chain wins)
//! or taken as forced, and the dataplane built programs the variant it reports, with its
//! stats. Needs root and the tools `scripts/install-deps.sh` installs; without them it fails
//! saying what is missing.

#![cfg(feature = "iptables")]

use kproxy_core::{IpFamily, ProxyConfig, ProxyState};
use kproxy_dataplanes::{
    Error, IptablesTable, IptablesVariant, Mode, ModeOptions, Target, build_with, preflight,
    preflight_with,
};
use kproxy_rig::{NetNs, netns};

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    for tool in [
        "iptables-nft-restore",
        "iptables-legacy-restore",
        "ip6tables-nft-restore",
        "ip6tables-legacy-restore",
        "sysctl",
    ] {
        if let Err(error) = netns::require_tool(tool, &["--version"]) {
            panic!("iptables facade tests cannot run here: {error}");
        }
    }
}

fn forced(variant: IptablesVariant) -> ModeOptions {
    ModeOptions {
        iptables_variant: Some(variant),
        ..ModeOptions::default()
    }
}

fn v4_only() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        ..ProxyConfig::default()
    }
}

#[test]
fn preflight_passes_where_the_tools_answer_and_names_the_namespace_where_not() {
    require_kernel();
    let ns = NetNs::new("iptpre").expect("namespace");
    let target = Target::Netns(ns.name().to_owned());
    preflight(Mode::Iptables, &target).expect("auto-detected variant");
    for variant in IptablesVariant::ALL {
        preflight_with(Mode::Iptables, &forced(variant), &target)
            .unwrap_or_else(|error| panic!("{variant}: {error}"));
    }
    let error = preflight_with(
        Mode::Iptables,
        &forced(IptablesVariant::Nft),
        &Target::Netns("kpt-no-such-namespace".into()),
    )
    .expect_err("no such namespace");
    assert!(
        matches!(&error, Error::Kernel { command, stderr, .. }
            if command.starts_with("iptables-nft-save") && stderr.contains("kpt-no-such-namespace")),
        "the tool's own message: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detected_variant_is_programmed_with_its_stats() {
    require_kernel();
    // A fresh node: nothing either way, nft.
    let fresh = NetNs::new("iptnew").expect("namespace");
    let target = Target::Netns(fresh.name().to_owned());
    let built =
        build_with(Mode::Iptables, &v4_only(), &ModeOptions::default(), &target).expect("build");
    assert_eq!(built.iptables_variant, Some(IptablesVariant::Nft));
    // Neither the detection nor the preflight of nft created a legacy table there.
    let legacy_tables = fresh
        .exec("cat", &["/proc/net/ip_tables_names"], None)
        .unwrap_or_default();
    assert_eq!(legacy_tables.trim(), "", "legacy tables created");

    // A node whose kubelet uses legacy iptables: its hint chain in legacy's mangle table.
    let legacy = NetNs::new("iptleg").expect("namespace");
    legacy
        .exec(
            "iptables-legacy-restore",
            &["--noflush"],
            Some("*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"),
        )
        .expect("hint chain");
    let target = Target::Netns(legacy.name().to_owned());
    let mut built =
        build_with(Mode::Iptables, &v4_only(), &ModeOptions::default(), &target).expect("build");
    assert_eq!(built.iptables_variant, Some(IptablesVariant::Legacy));
    let stats = built.iptables_stats.clone().expect("iptables stats");
    assert_eq!(built.dataplane.name(), "iptables");
    built
        .dataplane
        .full_sync(&ProxyState::default())
        .await
        .expect("full sync");
    let saved = legacy
        .exec("iptables-legacy-save", &["-t", "nat"], None)
        .expect("save");
    assert!(saved.contains(":KUBE-SERVICES"), "legacy nat: {saved}");
    let nft_saved = legacy
        .exec("iptables-nft-save", &["-t", "nat"], None)
        .unwrap_or_default();
    assert!(
        !nft_saved.contains("KUBE-SERVICES"),
        "nothing in the other variant: {nft_saved}"
    );
    assert!(
        stats.rules_total(IpFamily::V4, IptablesTable::Nat) > 0,
        "the stats count the fixed rules"
    );
    // localhostNodePorts (the default) set route_localnet in that namespace only.
    let localnet = legacy
        .exec("sysctl", &["-n", "net.ipv4.conf.all.route_localnet"], None)
        .expect("sysctl");
    assert_eq!(localnet.trim(), "1");

    // Forced: nft, even here.
    let built = build_with(
        Mode::Iptables,
        &v4_only(),
        &forced(IptablesVariant::Nft),
        &target,
    )
    .expect("build");
    assert_eq!(built.iptables_variant, Some(IptablesVariant::Nft));

    let report = kproxy_dataplanes::cleanup(&target).await.expect("cleanup");
    assert!(
        report.removed.iter().any(|r| r.contains("KUBE-SERVICES")),
        "{report:?}"
    );
}
