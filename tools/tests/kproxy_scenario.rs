//! The `kproxy-scenario` binary: report lines, the closing line, exit codes, and clean-up of
//! its namespaces. Needs root and iproute2; without them it fails saying what is missing.

use std::path::PathBuf;
use std::process::Command;

use kproxy_rig::netns;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(kproxy_conformance::SCENARIOS_DIR)
        .join("../tests/fixtures")
        .join(name)
}

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
}

#[test]
fn the_binary_prints_one_line_per_probe_and_a_closing_line() {
    require_kernel();
    let output = Command::new(env!("CARGO_BIN_EXE_kproxy-scenario"))
        .args(["--backend", "none"])
        .arg(fixture("kit-untouched.json"))
        .arg(fixture("kit-failing.json"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        8,
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("FAIL ")).count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("lacks SCTP"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("8 passed, 3 failed"),
        "{stdout}"
    );

    let pid_prefix = format!("{}{}-", netns::PREFIX, std::process::id());
    let left: Vec<String> = netns::list_kit_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|name| !name.starts_with(&pid_prefix))
        .filter(|name| {
            name.split('-')
                .nth(1)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(
        left.is_empty(),
        "left behind by a finished process: {left:?}"
    );
}

#[test]
fn malformed_files_stop_the_binary_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("kpt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.json");
    std::fs::write(&file, "{\"probes\": [{\"src\": \"10.0.0.2\", \"dst\": \"10.0.0.3\", \"dport\": 80, \"expct\": \"\"}]}")
        .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_kproxy-scenario"))
        .args(["--backend", "none"])
        .arg(&file)
        .output()
        .expect("runs");
    let check = Command::new(env!("CARGO_BIN_EXE_kproxy-scenario"))
        .args(["--backend", "none", "--check"])
        .arg(&dir)
        .output()
        .expect("runs");
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.json") && stderr.contains("`expct`"),
        "{stderr}"
    );
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains("`expct`"));
}

/// `--backend ipvs` builds through the facade; on a kernel without IPVS (this host's; the
/// UML guest has it) nothing can run: exit 2 with the backend's clear message, at once.
#[test]
fn the_ipvs_backend_on_a_kernel_without_ipvs_says_so_and_exits_2() {
    require_kernel();
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        eprintln!("this kernel has IPVS: nothing to check here");
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_kproxy-scenario"))
        .args(["--backend", "ipvs"])
        .arg(fixture("kit-untouched.json"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the kernel has no IPVS"), "{stderr}");
}
