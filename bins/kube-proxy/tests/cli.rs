//! The built binary's command line: `--help` lists upstream's flags, and a bad config file
//! fails with exit code 1 (upstream's) before anything is programmed, naming the bad field.

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
        "--iptables-variant",
        "--netns",
        "-v",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
}

#[test]
fn a_bad_config_file_exits_1_naming_the_field() {
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
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("syncPeriodd"), "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
}

#[test]
fn an_unknown_flag_exits_1() {
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
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

/// SIGTERM stops the proxy within a few seconds even while a sync hangs (here an `nft` that
/// never returns). Runs in a namespace of its own, with a PATH whose `nft` sleeps on `-f`.
#[test]
// A plain test thread polling a child process: there is no runtime to block.
#[allow(clippy::disallowed_methods)]
fn sigterm_stops_the_proxy_during_a_hanging_sync() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    if let Err(error) = kproxy_rig::netns::check_environment() {
        panic!("this test cannot run here: {error}");
    }
    let ns = kproxy_rig::NetNs::new("hang").expect("namespace");
    let dir = std::env::temp_dir().join(format!("kproxy-hanging-nft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("syncing");
    let real_nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nft is installed (scripts/install-deps.sh)");
    let script = dir.join("nft");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = -f ]; then touch {}; exec sleep 600; fi\nexec {real_nft} \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
    let mut args = kproxy_rig::process::test_args("demo-node", "10.244.0.0/16", &[]);
    args.extend(["--netns", ns.name(), "--manifests", manifests].map(String::from));
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", dir.display());
    let mut child = Command::new(BIN)
        .args(&args)
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first sync never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM failed");
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(5) {
            child.kill().ok();
            panic!("the proxy did not stop within 5 s of SIGTERM during a hanging sync");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        signalled.elapsed()
    );
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    assert!(
        status.success() || status.code().is_some(),
        "{status:?}: {stderr}"
    );
}

#[test]
fn version_prints_plain_and_raw_and_false_runs_on() {
    for (flag, expected) in [
        ("--version", "kube-proxy-rs v"),
        ("--version=true", "kube-proxy-rs v"),
        ("--version=raw", "version.Info{Major:"),
    ] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with(expected), "{flag}: {stdout}");
    }
    // `false` does not print: the bad flag after it is what stops the run.
    let out = Command::new(BIN)
        .args(["--version=false", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(BIN).arg("--version=maybe").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("true, false or raw"));
}
