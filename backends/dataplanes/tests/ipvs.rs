//! The ipvs mode through the facade, in namespaces of its own. This host's kernel has no
//! IPVS: the preflight and the build then fail with the backend's clear message, after the
//! tools were found; a kernel with IPVS (the UML guest) builds. Settings the mode cannot
//! program are refused before any kernel is asked. Needs root and the tools
//! `scripts/install-deps.sh` installs; without them it fails saying what is missing.

#![cfg(feature = "ipvs")]

use kproxy_core::{IpFamily, ProxyConfig};
use kproxy_dataplanes::{
    Error, IpvsOptions, Mode, ModeOptions, Target, build_with, preflight, require_tools,
};
use kproxy_rig::{NetNs, netns};

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
    for tool in ["iptables-nft-restore", "ip6tables-nft-restore", "sysctl"] {
        if let Err(error) = netns::require_tool(tool, &["--version"]) {
            panic!("ipvs facade tests cannot run here: {error}");
        }
    }
    if let Err(error) = netns::require_tool("ipset", &["version"]) {
        panic!("ipvs facade tests cannot run here: {error}");
    }
}

/// Whether this kernel has IPVS (the module makes `/proc/net/ip_vs`).
fn kernel_has_ipvs() -> bool {
    std::path::Path::new("/proc/net/ip_vs").exists()
}

fn v4_only() -> ProxyConfig {
    ProxyConfig {
        ip_families: vec![IpFamily::V4],
        ..ProxyConfig::default()
    }
}

#[test]
fn without_ipvs_the_preflight_and_the_build_say_so() {
    require_kernel();
    require_tools(Mode::Ipvs, &ModeOptions::default()).expect("the tools are installed");
    let ns = NetNs::new("ipvspre").expect("namespace");
    let target = Target::Netns(ns.name().to_owned());
    let built = build_with(Mode::Ipvs, &v4_only(), &ModeOptions::default(), &target);
    let checked = preflight(Mode::Ipvs, &target);
    if kernel_has_ipvs() {
        let built = built.expect("a kernel with IPVS");
        assert_eq!(built.dataplane.name(), "ipvs");
        assert!(built.iptables_variant.is_some());
        assert!(built.ipvs_reports.expect("reports").last().is_none());
        checked.expect("a kernel with IPVS");
        return;
    }
    for error in [
        built.expect_err("no IPVS here"),
        checked.expect_err("no IPVS"),
    ] {
        assert!(matches!(error, Error::IpvsKernel(_)), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("the kernel has no IPVS") && text.contains("ip_vs"),
            "{text}"
        );
    }
}

#[test]
fn settings_the_mode_cannot_program_are_refused_first() {
    require_kernel();
    let ns = NetNs::new("ipvsset").expect("namespace");
    let target = Target::Netns(ns.name().to_owned());
    let options = ModeOptions {
        ipvs: IpvsOptions {
            scheduler: "fastest".to_owned(),
            ..IpvsOptions::default()
        },
        ..ModeOptions::default()
    };
    let error = build_with(Mode::Ipvs, &v4_only(), &options, &target).expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "invalid IPVS mode settings: unknown IPVS scheduler \"fastest\": expected one of rr, \
         wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh"
    );
    let config = ProxyConfig {
        masquerade_bit: 20,
        ..v4_only()
    };
    let error =
        build_with(Mode::Ipvs, &config, &ModeOptions::default(), &target).expect_err("bit 20");
    assert!(
        matches!(&error, Error::IpvsSettings(text) if text.contains("masqueradeBit 20")),
        "{error}"
    );
}
