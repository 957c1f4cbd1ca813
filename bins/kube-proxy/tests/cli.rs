//! The built binary's command line: `--help` lists upstream's flags, and a bad config file
//! fails with exit code 2 before anything is programmed, naming the bad field.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");

#[test]
fn help_lists_the_flags_and_exits_0() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--write-config-to",
        "--proxy-mode",
        "--cleanup",
        "--hostname-override",
        "--kubeconfig",
        "--master",
        "--cluster-cidr",
        "--masquerade-all",
        "--nodeport-addresses",
        "--detect-local-mode",
        "--healthz-bind-address",
        "--metrics-bind-address",
        "--iptables-sync-period",
        "--conntrack-max-per-core",
        "--manifests",
        "--netns",
        "-v",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
}

#[test]
fn a_bad_config_file_exits_2_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("kproxy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         mode: nftables\n\
         nftables:\n\
         \x20 syncPeriodd: 30s\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("syncPeriodd"), "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
}

#[test]
fn an_unknown_flag_exits_2() {
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

/// A node without `nft`: one clear error naming the tool and its package, exit 1, before
/// anything is programmed or served (no loop of failed syncs). Runs in a namespace of its own
/// with a PATH that has no `nft`.
#[test]
fn a_missing_nft_is_one_clear_error_and_exit_1() {
    if let Err(error) = kproxy_rig::netns::check_environment() {
        panic!("this test cannot run here: {error}");
    }
    let ns = kproxy_rig::NetNs::new("nonft").expect("namespace");
    let empty = std::env::temp_dir().join(format!("kproxy-no-nft-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
    let mut args = kproxy_rig::process::test_args("demo-node", "10.244.0.0/16", &[]);
    args.extend(["--netns", ns.name(), "--manifests", manifests].map(String::from));
    let out = Command::new(BIN)
        .args(&args)
        .env("PATH", &empty)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&empty).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`nft` is not installed") && stderr.contains("nftables"),
        "the error names the tool and its package: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one error: {stderr}"
    );
    assert!(
        !stderr.contains("sync failed"),
        "no sync was attempted: {stderr}"
    );
}
