//! The binary as an operator meets it, each in a network namespace of its own: the
//! configuration it writes loads again, its logs in a pipe are plain text, a busy health port
//! is taken once it frees, a second proxy on one namespace refuses to start, and under
//! `--netns` nothing machine-wide is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_rig::NetNs;
use kproxy_rig::process::{HEALTHZ_ADDRESS, ProxyProcess, test_args, wait_for_ok};

const BIN: &str = env!("CARGO_BIN_EXE_kube-proxy");
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");

fn namespace(role: &str) -> NetNs {
    if let Err(error) = kproxy_rig::netns::check_environment() {
        panic!("this test cannot run here: {error}");
    }
    NetNs::new(role).expect("namespace")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kproxy-operator-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo_args() -> Vec<String> {
    test_args("demo-node", "10.244.0.0/16", &["--manifests", DEMO])
}

/// Waits until `log` contains `text`.
async fn wait_for_log(log: &Path, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never appeared in the log:\n{content}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn write_config_to_stdout_gives_yaml_that_loads_again() {
    let scratch = Scratch::new("config");
    let flags = [
        "--cluster-cidr=10.244.0.0/16",
        "--iptables-sync-period=45s",
        "--conntrack-max-per-core=0",
        "-v=2",
    ];
    let first = Command::new(BIN)
        .args(flags)
        .args(["--write-config-to", "/dev/stdout"])
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let yaml = String::from_utf8(first.stdout).unwrap();
    assert!(
        yaml.starts_with("apiVersion: kubeproxy.config.k8s.io/v1alpha1"),
        "{yaml}"
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("wrote the configuration"),
        "the notice goes to stderr"
    );
    let file = scratch.path("config.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let second = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["--write-config-to", "/dev/stdout"])
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "the written configuration does not load: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        String::from_utf8(second.stdout).unwrap(),
        yaml,
        "a fixed point"
    );
}

#[test]
// A plain test thread waiting for a child process: there is no runtime to block.
#[allow(clippy::disallowed_methods)]
fn logs_to_a_pipe_are_plain_and_a_closed_stderr_is_no_panic() {
    let ns = namespace("pipe");
    let mut args = demo_args();
    args.extend(["--netns", ns.name()].map(String::from));
    let child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting kube-proxy-rs"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a pipe:\n{stderr}"
    );

    // Standard error closed: the proxy runs (and stops on SIGTERM) instead of panicking.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$0" "$@" 2>&-"#)
        .arg(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the proxy died with stderr closed"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_busy_health_port_is_taken_once_it_frees() {
    let ns = namespace("busy");
    let holder = ns
        .run_in(|| std::net::TcpListener::bind(HEALTHZ_ADDRESS))
        .expect("occupy the health port");
    let scratch = Scratch::new("busy");
    let log = scratch.path("proxy.log");
    let proxy = ProxyProcess::start(Path::new(BIN), &ns, &demo_args(), Some(&log)).unwrap();
    wait_for_log(
        &log,
        "cannot listen for health checks",
        Duration::from_secs(20),
    )
    .await;
    drop(holder);
    let answered = wait_for_ok(&ns, HEALTHZ_ADDRESS, "/healthz", Duration::from_secs(15)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(answered.is_ok(), "{answered:?}\n{text}");
    assert!(text.contains("listening for health checks"), "{text}");
    let status = proxy.stop(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_second_proxy_on_one_namespace_refuses_naming_the_first() {
    let ns = namespace("twice");
    let scratch = Scratch::new("twice");
    let log = scratch.path("first.log");
    let first = ProxyProcess::start(Path::new(BIN), &ns, &demo_args(), Some(&log)).unwrap();
    first
        .wait_healthy(&ns, Duration::from_secs(20))
        .await
        .unwrap();
    let pid = first.id().unwrap();
    let second = Command::new(BIN)
        .args(["--netns", ns.name(), "--manifests", DEMO])
        .args(["--healthz-bind-address", "127.0.0.1:10266"])
        .args(["--metrics-bind-address", "127.0.0.1:10259"])
        .args(["--conntrack-max-per-core", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another kube-proxy-rs already runs in this network namespace (pid {pid})"
        )),
        "{stderr}"
    );
    let status = first.stop(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
}

/// The machine-wide files the proxy would write outside `--netns`.
const HASH_SIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";
const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const ESTABLISHED: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";

fn read_value(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
        .trim()
        .to_owned()
}

/// Under `--netns` the proxy leaves every machine-wide setting alone, even when asked for a
/// conntrack table bigger than the machine's. strace watches the hash-size file and refuses
/// (EACCES) any open of it, so the machine stays untouched even should the proxy try; the
/// test fails on the attempt itself, and on any change in the root namespace's values.
#[tokio::test]
async fn under_netns_nothing_machine_wide_is_written() {
    kproxy_rig::netns::require_tool("strace", &["-V"]).expect("strace (scripts/install-deps.sh)");
    let ns = namespace("global");
    let scratch = Scratch::new("global");
    let before = [HASH_SIZE, CONNTRACK_MAX, ESTABLISHED].map(read_value);
    let current_max: u64 = before[1].parse().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    // Enough per core to want a bigger table than the machine has.
    let per_core = (current_max / cores + 1024).to_string();
    let trace = scratch.path("strace.txt");
    let log = scratch.path("proxy.log");
    let mut args = test_args("demo-node", "10.244.0.0/16", &["--manifests", DEMO]);
    let at = args
        .iter()
        .position(|a| a == "--conntrack-max-per-core")
        .unwrap();
    args[at + 1] = per_core;
    args.extend(["--conntrack-tcp-timeout-established", "12345s"].map(String::from));
    let strace_args: Vec<String> = [
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-e",
        "signal=none",
        "-e",
        "trace=openat,open,creat,truncate",
        "-e",
        "inject=openat,open,creat,truncate:error=EACCES",
        "-P",
        HASH_SIZE,
        "-o",
        trace.to_str().unwrap(),
        BIN,
    ]
    .into_iter()
    .map(String::from)
    .chain(["--netns".to_owned(), ns.name().to_owned()])
    .chain(args)
    .collect();
    let file = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new("strace")
        .args(&strace_args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let healthy = wait_for_ok(&ns, HEALTHZ_ADDRESS, "/healthz", Duration::from_secs(30)).await;
    let pid = child.id().unwrap();
    // Stop the proxy itself: strace, told to stop, detaches and leaves it running (it was seen
    // outliving the test, reparented to init). strace exits once its tracee has.
    let proxy = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("\n");
    for target in proxy.lines().chain([pid.to_string().as_str()]) {
        let _ = Command::new("kill").args(["-TERM", target]).status();
        if target != pid.to_string() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
    for target in proxy.lines() {
        let _ = Command::new("kill").args(["-KILL", target]).status();
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy.is_ok(), "{healthy:?}\n{text}");
    let attempts = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        attempts.trim().is_empty(),
        "the proxy opened a machine-wide setting:\n{attempts}"
    );
    assert_eq!(
        [HASH_SIZE, CONNTRACK_MAX, ESTABLISHED].map(read_value),
        before
    );
    assert!(
        text.contains("leaving the machine-wide conntrack"),
        "said once in the log:\n{text}"
    );
    let inside = ns.exec("cat", &[ESTABLISHED], None).unwrap();
    assert_eq!(
        inside.trim(),
        "12345",
        "the namespace's own timeout is applied"
    );
}

#[test]
fn cleanup_says_nothing_about_modes() {
    let ns = namespace("clean");
    let out = Command::new(BIN)
        .args(["--netns", ns.name(), "--cleanup"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cleanup done"), "{stderr}");
    assert!(
        !stderr.contains("proxy mode"),
        "a mode warning under --cleanup:\n{stderr}"
    );
}

/// Runs the binary in ipvs mode on the namespace `ns` with the demo manifests and `extra`.
fn run_ipvs(ns: &NetNs, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = demo_args();
    args.extend(["--netns", ns.name(), "--proxy-mode", "ipvs"].map(String::from));
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let out = Command::new(BIN).args(&args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// This host's kernel has no IPVS: ipvs mode stops at start with one clear error naming it
/// (exit 1), before anything is programmed; upstream's deprecation notice is logged first.
#[test]
fn ipvs_mode_without_ipvs_in_the_kernel_is_one_clear_error_and_exit_1() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        eprintln!("this kernel has IPVS: the UML guest's tests cover the mode running");
        return;
    }
    let ns = namespace("noipvs");
    let (code, stderr) = run_ipvs(&ns, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot run the ipvs mode") && stderr.contains("the kernel has no IPVS"),
        "the error names IPVS: {stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one error: {stderr}"
    );
    assert_eq!(
        stderr
            .matches("The ipvs proxier is now deprecated and may be removed in a future release. Please use 'nftables' instead.")
            .count(),
        1,
        "upstream's notice, once: {stderr}"
    );
    let link = ns.exec("ip", &["link", "show", "kube-ipvs0"], None);
    assert!(link.is_err(), "nothing was programmed: {link:?}");
}

/// Settings the ipvs mode cannot program stop it at start with exit 1, whatever the kernel:
/// an unknown scheduler (naming the valid ones) and a masquerade bit its marks use.
#[test]
fn ipvs_settings_it_cannot_program_exit_1_with_a_clear_error() {
    let ns = namespace("ipvsbad");
    let (code, stderr) = run_ipvs(&ns, &["--ipvs-scheduler", "fastest"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown IPVS scheduler \"fastest\": expected one of rr, wrr"),
        "{stderr}"
    );
    let (code, stderr) = run_ipvs(&ns, &["--iptables-masquerade-bit", "16"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot run the ipvs mode")
            && stderr.contains("masqueradeBit 16 is taken by the IPVS mode"),
        "{stderr}"
    );
}
