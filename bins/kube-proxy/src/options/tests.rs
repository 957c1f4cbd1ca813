//! Flags, config file, precedence and validation, against upstream's behaviour.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use kproxy_core::{Balancing, IpFamily, LocalTrafficDetector, NodePortAddresses};

use super::config::KubeProxyConfiguration;
use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kproxy-options-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn args(list: &[&str]) -> Vec<String> {
    std::iter::once("kube-proxy")
        .chain(list.iter().copied())
        .map(str::to_owned)
        .collect()
}

fn run(list: &[&str]) -> (Options, Vec<String>) {
    match load(args(list)) {
        Ok(Outcome::Run { options, warnings }) => (*options, warnings),
        Ok(other) => panic!("expected Run, got {other:?}"),
        Err(err) => panic!("{list:?} failed: {err}"),
    }
}

fn fail(list: &[&str]) -> OptionsError {
    match load(args(list)) {
        Ok(outcome) => panic!("{list:?} should fail, got {outcome:?}"),
        Err(err) => err,
    }
}

fn with_config(yaml: &str, extra: &[&str]) -> Result<Outcome, OptionsError> {
    let scratch = Scratch::new("cfg");
    let path = scratch.file("config.yaml", yaml);
    let path = path.to_str().unwrap();
    let mut list = vec!["--config", path];
    list.extend_from_slice(extra);
    load(args(&list))
}

fn config_run(yaml: &str, extra: &[&str]) -> (Options, Vec<String>) {
    match with_config(yaml, extra) {
        Ok(Outcome::Run { options, warnings }) => (*options, warnings),
        Ok(other) => panic!("expected Run, got {other:?}"),
        Err(err) => panic!("config failed: {err}"),
    }
}

fn config_err(yaml: &str) -> String {
    match with_config(yaml, &[]) {
        Ok(outcome) => panic!("config should fail, got {outcome:?}"),
        Err(err) => err.to_string(),
    }
}

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The options with no flags at all: upstream's defaults (nftables mode).
fn upstream_defaults() -> Options {
    Options {
        mode: ProxyMode::Nftables,
        cleanup: false,
        init_only: false,
        config_file: None,
        hostname_override: None,
        kubeconfig: None,
        master: None,
        bind_address: IpAddr::from([0, 0, 0, 0]),
        healthz_bind_address: Some("0.0.0.0:10256".parse().unwrap()),
        metrics_bind_address: Some("127.0.0.1:10249".parse().unwrap()),
        bind_address_hard_fail: false,
        cluster_cidrs: Vec::new(),
        detect_local_mode: DetectLocalMode::ClusterCidr,
        pod_bridge_interface: None,
        pod_interface_name_prefix: None,
        masquerade_all: false,
        masquerade_bit: 14,
        nodeport_addresses: NodePortAddresses::Primary,
        localhost_node_ports: true,
        balancing: Balancing::Random,
        sync_period: secs(30),
        min_sync_period: secs(1),
        conntrack: ConntrackOptions {
            max_per_core: 32768,
            min: 131072,
            tcp_established_timeout: secs(24 * 3600),
            tcp_close_wait_timeout: secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        },
        logging: LoggingOptions {
            format: LogFormat::Text,
            verbosity: 0,
        },
        config_sync_period: secs(15 * 60),
        oom_score_adj: -999,
        ipvs: kproxy_dataplanes::IpvsOptions::default(),
        iptables_variant: None,
        manifests: None,
        netns: None,
    }
}

#[test]
fn defaults_equal_upstreams() {
    let (options, warnings) = run(&[]);
    assert_eq!(options, upstream_defaults());
    assert!(warnings.iter().any(|w| w.contains("no proxy mode set")));
    assert!(warnings.iter().any(|w| w.contains("no cluster CIDR")));
    let proxy = options.proxy_config();
    assert_eq!(proxy.local_detector, LocalTrafficDetector::None);
    assert_eq!(proxy.masquerade_bit, 14);
    assert_eq!(proxy.node_port_addresses, NodePortAddresses::Primary);
    assert_eq!(proxy.ip_families, vec![IpFamily::V4, IpFamily::V6]);
    let reconciler = options.reconciler_config();
    assert_eq!(reconciler.sync_period, secs(30));
    assert_eq!(reconciler.min_sync_period, secs(1));
}

#[test]
fn an_empty_config_file_gives_the_same_defaults_as_no_flags() {
    let (options, _) = config_run(HEADER, &[]);
    assert_eq!(
        Options {
            config_file: None,
            ..options
        },
        upstream_defaults()
    );
}

#[test]
fn flags_override_defaults() {
    let (options, warnings) = run(&[
        "--proxy-mode=nftables",
        "--hostname-override",
        " Node-A ",
        "--kubeconfig=/etc/kube/config",
        "--master",
        "https://10.0.0.1:6443",
        "--bind-address=fd00::10",
        "--healthz-bind-address=127.0.0.1:1234",
        "--metrics-bind-address",
        "[::1]:9999",
        "--bind-address-hard-fail",
        "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
        "--masquerade-all",
        "--nodeport-addresses=10.0.0.0/8,fd00::/64",
        "--iptables-sync-period=1m",
        "--iptables-min-sync-period=0",
        "--conntrack-max-per-core=0",
        "--conntrack-min",
        "1",
        "--conntrack-tcp-timeout-established=2h",
        "--conntrack-tcp-timeout-close-wait=30s",
        "--conntrack-tcp-be-liberal=true",
        "--conntrack-udp-timeout=30s",
        "--conntrack-udp-timeout-stream=5m",
        "--config-sync-period=1m",
        "--oom-score-adj",
        "-500",
        "--logging-format=json",
        "-v=4",
        "--manifests=/tmp/m",
        "--netns=kp-dev",
        "--cleanup=false",
    ]);
    let expected = Options {
        hostname_override: Some("node-a".to_owned()),
        kubeconfig: Some("/etc/kube/config".into()),
        master: Some("https://10.0.0.1:6443".to_owned()),
        bind_address: "fd00::10".parse().unwrap(),
        healthz_bind_address: Some("127.0.0.1:1234".parse().unwrap()),
        metrics_bind_address: Some("[::1]:9999".parse().unwrap()),
        bind_address_hard_fail: true,
        cluster_cidrs: vec![net("10.244.0.0/16"), net("fd00:244::/56")],
        masquerade_all: true,
        nodeport_addresses: NodePortAddresses::Cidrs(vec![net("10.0.0.0/8"), net("fd00::/64")]),
        sync_period: secs(60),
        min_sync_period: Duration::ZERO,
        conntrack: ConntrackOptions {
            max_per_core: 0,
            min: 1,
            tcp_established_timeout: secs(7200),
            tcp_close_wait_timeout: secs(30),
            tcp_be_liberal: true,
            udp_timeout: secs(30),
            udp_stream_timeout: secs(300),
        },
        config_sync_period: secs(60),
        oom_score_adj: -500,
        logging: LoggingOptions {
            format: LogFormat::Json,
            verbosity: 4,
        },
        manifests: Some("/tmp/m".into()),
        netns: Some("kp-dev".to_owned()),
        ..upstream_defaults()
    };
    assert_eq!(options, expected);
    assert!(warnings.is_empty(), "{warnings:?}");
    let proxy = options.proxy_config();
    assert_eq!(
        proxy.local_detector,
        LocalTrafficDetector::ClusterCidr(vec![net("10.244.0.0/16"), net("fd00:244::/56")])
    );
    assert_eq!(proxy.ip_families, vec![IpFamily::V6, IpFamily::V4]);
    assert!(proxy.masquerade_all);
}

#[test]
fn detect_local_modes_map_to_core_detectors() {
    let (options, _) = run(&["--detect-local-mode=NodeCIDR"]);
    assert_eq!(
        options.proxy_config().local_detector,
        LocalTrafficDetector::NodeCidr
    );
    let (options, _) = run(&[
        "--detect-local-mode=BridgeInterface",
        "--pod-bridge-interface=cbr0",
    ]);
    assert_eq!(
        options.proxy_config().local_detector,
        LocalTrafficDetector::BridgeInterface("cbr0".to_owned())
    );
    let (options, _) = run(&[
        "--detect-local-mode",
        "InterfaceNamePrefix",
        "--pod-interface-name-prefix=veth",
    ]);
    assert_eq!(
        options.proxy_config().local_detector,
        LocalTrafficDetector::InterfaceNamePrefix("veth".to_owned())
    );
}

#[test]
fn bare_ip_bind_addresses_get_the_default_ports_and_deprecated_ports_apply() {
    let (options, warnings) = run(&["--healthz-bind-address=10.1.2.3", "--metrics-port=0"]);
    assert_eq!(
        options.healthz_bind_address,
        Some("10.1.2.3:10256".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(options.metrics_bind_address, None);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("--metrics-port has been deprecated"))
    );
    let (options, _) = run(&["--healthz-bind-address=", "--healthz-port=1"]);
    assert_eq!(options.healthz_bind_address, None);
}

#[test]
fn config_file_decodes_every_section_with_go_durations() {
    let yaml = format!(
        "{HEADER}\
bindAddress: 10.0.0.5
bindAddressHardFail: true
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 50
  burst: 100
  contentType: application/json
  acceptContentTypes: \"\"
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 1h0m0s
conntrack:
  maxPerCore: null
  min: 1000
  tcpEstablishedTimeout: 1.5h
  tcpCloseWaitTimeout: 500ms
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m0s
detectLocal:
  bridgeInterface: \"\"
  interfaceNamePrefix: \"\"
detectLocalMode: ClusterCIDR
enableProfiling: false
healthzBindAddress: 0.0.0.0
hostnameOverride: Worker-1
iptables:
  masqueradeAll: true
  masqueradeBit: 3
  syncPeriod: 10s
  minSyncPeriod: 2s
  localhostNodePorts: false
ipvs:
  excludeCIDRs: null
  scheduler: \"\"
  syncPeriod: 0s
logging:
  flushFrequency: 5000000000
  format: json
  options:
    json:
      infoBufferSize: \"0\"
    text:
      infoBufferSize: 0
  verbosity: 3
metricsBindAddress: 0.0.0.0:10249
mode: nftables
nftables:
  masqueradeAll: false
  masqueradeBit: 15
  syncPeriod: 45s
  minSyncPeriod: 250ms
nodePortAddresses: null
oomScoreAdj: -998
portRange: \"\"
showHiddenMetricsForVersion: \"\"
winkernel:
  networkName: \"\"
"
    );
    let (options, warnings) = config_run(&yaml, &[]);
    let expected = Options {
        config_file: options.config_file.clone(),
        hostname_override: Some("worker-1".to_owned()),
        kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into()),
        bind_address: "10.0.0.5".parse().unwrap(),
        healthz_bind_address: Some("0.0.0.0:10256".parse().unwrap()),
        metrics_bind_address: Some("0.0.0.0:10249".parse().unwrap()),
        bind_address_hard_fail: true,
        cluster_cidrs: vec![net("10.244.0.0/16")],
        // nftables mode reads the nftables section, not the iptables one.
        masquerade_all: false,
        masquerade_bit: 15,
        localhost_node_ports: false,
        sync_period: secs(45),
        min_sync_period: Duration::from_millis(250),
        conntrack: ConntrackOptions {
            max_per_core: 32768,
            min: 1000,
            tcp_established_timeout: secs(5400),
            tcp_close_wait_timeout: Duration::from_millis(500),
            tcp_be_liberal: true,
            udp_timeout: secs(30),
            udp_stream_timeout: secs(120),
        },
        logging: LoggingOptions {
            format: LogFormat::Json,
            verbosity: 3,
        },
        config_sync_period: secs(3600),
        oom_score_adj: -998,
        ..upstream_defaults()
    };
    assert_eq!(options, expected);
    assert!(options.config_file.is_some());
    assert!(
        !warnings.iter().any(|w| w.contains("no proxy mode")),
        "{warnings:?}"
    );
}

#[test]
fn with_config_most_flags_are_ignored_but_logging_and_hostname_override_apply() {
    let yaml = format!("{HEADER}mode: nftables\nhostnameOverride: from-file\n");
    let (options, warnings) = config_run(
        &yaml,
        &[
            "--masquerade-all",
            "--iptables-sync-period=5s",
            "--hostname-override=FromFlag",
            "-v",
            "5",
            "--logging-format=json",
            "--master=https://api:6443",
            "--cleanup",
        ],
    );
    assert!(!options.masquerade_all);
    assert_eq!(options.sync_period, secs(30));
    assert_eq!(options.hostname_override.as_deref(), Some("fromflag"));
    assert_eq!(options.logging.verbosity, 5);
    assert_eq!(options.logging.format, LogFormat::Json);
    assert_eq!(options.master.as_deref(), Some("https://api:6443"));
    assert!(options.cleanup);
    for flag in ["--masquerade-all", "--iptables-sync-period"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(flag) && w.contains("ignored because --config")),
            "{flag}: {warnings:?}"
        );
    }
    assert!(!warnings.iter().any(|w| w.contains("--hostname-override")));
}

#[test]
fn an_unknown_field_is_an_error_naming_it_and_its_line() {
    let err = config_err(&format!("{HEADER}mode: nftables\nmasqueradeAl: true\n"));
    assert!(err.contains("masqueradeAl"), "{err}");
    assert!(err.contains("line 4"), "{err}");

    // Nested, and case matters as in upstream's strict decoding.
    let err = config_err(&format!("{HEADER}conntrack:\n  maxperCore: 1\n"));
    assert!(err.contains("maxperCore"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn a_mistyped_field_is_an_error_naming_it() {
    let err = config_err(&format!("{HEADER}nftables:\n  syncPeriod: 30\n"));
    assert!(err.contains("field nftables.syncPeriod: "), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("missing unit in duration"), "{err}");

    let err = config_err(&format!("{HEADER}nftables:\n  syncPeriod: 30x\n"));
    assert!(err.contains("field nftables.syncPeriod: "), "{err}");
    assert!(err.contains("30x"), "{err}");

    let err = config_err(&format!("{HEADER}oomScoreAdj: lots\n"));
    assert!(err.contains("field oomScoreAdj: "), "{err}");
    assert!(err.contains("line 3"), "{err}");

    let err = config_err(&format!(
        "{HEADER}logging:\n  options:\n    json:\n      splitStream: [1]\n"
    ));
    assert!(
        err.contains("field logging.options.json.splitStream: "),
        "{err}"
    );

    let err = config_err(&format!("{HEADER}conntrack: 5\n"));
    assert!(err.contains("field conntrack: "), "{err}");
}

#[test]
fn wrong_api_version_or_kind_is_an_error() {
    let err = config_err("apiVersion: v1\nkind: KubeProxyConfiguration\n");
    assert!(err.contains("apiVersion \"v1\""), "{err}");
    let err = config_err("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: ConfigMap\n");
    assert!(err.contains("kind \"ConfigMap\""), "{err}");
    let err = config_err("mode: nftables\n");
    assert!(err.contains("expected apiVersion"), "{err}");
}

#[test]
fn an_unreadable_config_file_is_an_error() {
    let err = fail(&["--config=/nonexistent/kube-proxy.yaml"]);
    assert!(matches!(err, OptionsError::ReadConfig { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/kube-proxy.yaml"));
}

#[test]
fn bad_flag_values_are_errors() {
    for bad in [
        &["--masquerade-all=maybe"][..],
        &["--iptables-sync-period=5"],
        &["--iptables-sync-period=fast"],
        &["--proxy-mode=userspace"],
        &["--detect-local-mode=Everything"],
        &["--bind-address=not-an-ip"],
        &["--healthz-bind-address=localhost:1"],
        &["--conntrack-min=many"],
        &["--logging-format=xml"],
        &["--no-such-flag"],
        &["stray-argument"],
        &["--feature-gates=Foo"],
    ] {
        let err = fail(bad);
        assert!(matches!(err, OptionsError::Flags(_)), "{bad:?}: {err}");
    }
}

fn invalid(list: &[&str]) -> Vec<String> {
    match fail(list) {
        OptionsError::Invalid(problems) => problems,
        other => panic!("{list:?}: expected Invalid, got {other}"),
    }
}

#[test]
fn validation_failures_name_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["--iptables-masquerade-bit=32"], "iptables.masqueradeBit"),
        (&["--iptables-masquerade-bit=-1"], "iptables.masqueradeBit"),
        (&["--iptables-sync-period=0s"], "nftables.syncPeriod"),
        (
            &["--iptables-sync-period=1s", "--iptables-min-sync-period=2s"],
            "must be greater than or equal to nftables.minSyncPeriod",
        ),
        (
            &["--iptables-min-sync-period=-1s"],
            "nftables.minSyncPeriod",
        ),
        (
            &["--detect-local-mode=BridgeInterface"],
            "detectLocal.bridgeInterface",
        ),
        (
            &["--detect-local-mode=InterfaceNamePrefix"],
            "detectLocal.interfaceNamePrefix",
        ),
        (&["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"], "clusterCIDR"),
        (&["--cluster-cidr=10.0.0.0/33"], "clusterCIDR"),
        (
            &["--cluster-cidr=10.0.0.0/8,fd00::/8,10.1.0.0/16"],
            "clusterCIDR",
        ),
        (
            &["--nodeport-addresses=primary,10.0.0.0/8"],
            "nodePortAddresses[0]",
        ),
        (
            &["--nodeport-addresses=10.0.0.0/8,bogus"],
            "nodePortAddresses",
        ),
        (&["--oom-score-adj=1001"], "oomScoreAdj"),
        (&["--conntrack-max-per-core=-1"], "conntrack.maxPerCore"),
        (&["--conntrack-min=-1"], "conntrack.min"),
        (
            &["--conntrack-tcp-timeout-established=-1s"],
            "conntrack.tcpEstablishedTimeout",
        ),
        (&["--conntrack-udp-timeout=-1s"], "conntrack.udpTimeout"),
        (&["--config-sync-period=0s"], "configSyncPeriod"),
        (
            &["--healthz-bind-address=127.0.0.1:0"],
            "healthzBindAddress",
        ),
        (&["--kube-api-burst=-1"], "clientConnection.burst"),
        (&["--netns="], "--netns"),
    ];
    for (flags, field) in cases {
        let problems = invalid(flags);
        assert!(
            problems.iter().any(|p| p.contains(field)),
            "{flags:?}: {problems:?} should name {field}"
        );
    }
    // Several problems are all reported.
    assert_eq!(
        invalid(&["--oom-score-adj=5000", "--conntrack-min=-1"]).len(),
        2
    );
}

#[test]
fn validation_of_the_config_file() {
    let err = config_err(&format!("{HEADER}mode: userspace\n"));
    assert!(err.contains("mode"), "{err}");
    let err = config_err(&format!("{HEADER}nftables:\n  masqueradeBit: 40\n"));
    assert!(err.contains("nftables.masqueradeBit"), "{err}");
    let err = config_err(&format!("{HEADER}metricsBindAddress: nowhere:1\n"));
    assert!(err.contains("metricsBindAddress"), "{err}");
    let err = config_err(&format!("{HEADER}detectLocalMode: Magic\n"));
    assert!(err.contains("detectLocalMode"), "{err}");
    let err = config_err(&format!("{HEADER}logging:\n  format: xml\n"));
    assert!(err.contains("logging.format"), "{err}");
}

/// ipvs mode runs with upstream's `ipvs` section and flags: its own sync periods (minimum 0
/// by default, as upstream), the iptables masquerade bit, and the settings only it reads.
#[test]
fn ipvs_mode_runs_with_its_own_section_and_flags() {
    let (options, warnings) = run(&[
        "--proxy-mode=ipvs",
        "--cluster-cidr=10.244.0.0/16",
        "--ipvs-scheduler=wlc",
        "--ipvs-sync-period=45s",
        "--ipvs-min-sync-period=2s",
        "--ipvs-exclude-cidrs=10.9.0.0/16,fd00:9::/64",
        "--ipvs-strict-arp",
        "--ipvs-tcp-timeout=15m",
        "--ipvs-tcpfin-timeout=30s",
        "--ipvs-udp-timeout=0s",
        "--iptables-masquerade-bit=10",
        "--iptables-variant=legacy",
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.mode, ProxyMode::Ipvs);
    assert_eq!(options.sync_period, secs(45));
    assert_eq!(options.min_sync_period, secs(2));
    assert_eq!(options.masquerade_bit, 10);
    // No "primary" default outside nftables mode.
    assert_eq!(options.nodeport_addresses, NodePortAddresses::All);
    let expected = kproxy_dataplanes::IpvsOptions {
        scheduler: "wlc".to_owned(),
        strict_arp: true,
        tcp_timeout: Some(secs(15 * 60)),
        tcp_fin_timeout: Some(secs(30)),
        // Zero leaves the kernel's value, as upstream.
        udp_timeout: None,
        exclude_cidrs: vec![net("10.9.0.0/16"), net("fd00:9::/64")],
    };
    assert_eq!(
        options.mode_options(),
        kproxy_dataplanes::ModeOptions {
            localhost_node_ports: true,
            iptables_variant: Some(kproxy_dataplanes::IptablesVariant::Legacy),
            ipvs: expected.clone(),
        }
    );

    let yaml = format!(
        "{HEADER}mode: ipvs\nipvs:\n  scheduler: wlc\n  syncPeriod: 1m\n  minSyncPeriod: 3s\n  \
         excludeCIDRs:\n  - 10.9.0.0/16\n  - fd00:9::/64\n  strictARP: true\n  \
         tcpTimeout: 15m0s\n  tcpFinTimeout: 30s\n  udpTimeout: 0s\n\
         iptables:\n  masqueradeBit: 10\n  syncPeriod: 7s\nnftables:\n  masqueradeBit: 20\n"
    );
    let (options, _) = config_run(&yaml, &[]);
    assert_eq!(options.mode, ProxyMode::Ipvs);
    assert_eq!(
        options.sync_period,
        secs(60),
        "the ipvs section's, not iptables'"
    );
    assert_eq!(options.min_sync_period, secs(3));
    assert_eq!(options.masquerade_bit, 10, "the iptables section's");
    assert_eq!(options.ipvs, expected);

    // Upstream's defaults: sync every 30 s, no minimum, round robin, the kernel's timeouts.
    let (options, _) = run(&["--proxy-mode=ipvs"]);
    assert_eq!(options.sync_period, secs(30));
    assert_eq!(options.min_sync_period, Duration::ZERO);
    assert_eq!(options.ipvs, kproxy_dataplanes::IpvsOptions::default());
    assert_eq!(options.masquerade_bit, 14);
}

#[test]
fn an_unknown_ipvs_scheduler_is_an_error_naming_the_valid_ones() {
    let problems = invalid(&["--proxy-mode=ipvs", "--ipvs-scheduler=fastest"]);
    assert_eq!(
        problems,
        [
            "ipvs.scheduler (--ipvs-scheduler): invalid IPVS mode settings: unknown IPVS \
             scheduler \"fastest\": expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, \
             nq, mh"
        ]
    );
    let err = config_err(&format!("{HEADER}mode: ipvs\nipvs:\n  scheduler: RR\n"));
    assert!(
        err.contains("ipvs.scheduler") && err.contains("\"RR\""),
        "{err}"
    );
    // Upstream validates the ipvs section in ipvs mode only.
    let (options, _) = config_run(
        &format!("{HEADER}mode: iptables\nipvs:\n  scheduler: fastest\n"),
        &[],
    );
    assert_eq!(options.ipvs.scheduler, "fastest");
    // Every scheduler of the kernel is taken.
    for name in [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
    ] {
        let (options, _) = run(&["--proxy-mode=ipvs", &format!("--ipvs-scheduler={name}")]);
        assert_eq!(options.ipvs.scheduler, name);
    }
}

#[test]
fn the_iptables_variant_flag_applies_to_the_ipvs_modes_helper_rules() {
    let (options, warnings) = run(&[
        "--proxy-mode=ipvs",
        "--cluster-cidr=10.244.0.0/16",
        "--iptables-variant=nft",
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        options.mode_options().iptables_variant,
        Some(kproxy_dataplanes::IptablesVariant::Nft)
    );
}

#[test]
fn write_config_to_round_trips_an_ipvs_block() {
    let scratch = Scratch::new("write-ipvs");
    let out = scratch.0.join("written.yaml");
    let out_text = out.to_str().unwrap().to_owned();
    let flags = [
        "--proxy-mode=ipvs",
        "--cluster-cidr=10.244.0.0/16",
        "--ipvs-scheduler=sh",
        "--ipvs-sync-period=20s",
        "--ipvs-min-sync-period=1s",
        "--ipvs-exclude-cidrs=10.9.0.0/16",
        "--ipvs-strict-arp=true",
        "--ipvs-tcp-timeout=10m",
        "--ipvs-tcpfin-timeout=45s",
        "--ipvs-udp-timeout=20s",
    ];
    let (direct, _) = run(&flags);
    let mut write = flags.to_vec();
    write.extend(["--write-config-to", &out_text]);
    match load(args(&write)) {
        Ok(Outcome::WroteConfig { path }) => assert_eq!(path, out),
        other => panic!("expected WroteConfig, got {other:?}"),
    }
    let yaml = std::fs::read_to_string(&out).unwrap();
    for line in [
        "mode: ipvs",
        "scheduler: sh",
        "strictARP: true",
        "syncPeriod: 20s",
        "tcpTimeout: 10m0s",
        "tcpFinTimeout: 45s",
        "udpTimeout: 20s",
        "- 10.9.0.0/16",
    ] {
        assert!(yaml.contains(line), "{line} not in {yaml}");
    }
    let (reloaded, _) = run(&["--config", &out_text]);
    assert_eq!(
        Options {
            config_file: None,
            ..reloaded
        },
        direct
    );
}

/// iptables mode runs, reading upstream's iptables section and flags: the sync periods,
/// `masqueradeAll`, `masqueradeBit` and `localhostNodePorts`.
#[test]
fn iptables_mode_runs_with_its_own_section_and_flags() {
    let (options, warnings) = run(&[
        "--proxy-mode=iptables",
        "--cluster-cidr=10.244.0.0/16",
        "--masquerade-all",
        "--iptables-masquerade-bit=10",
        "--iptables-localhost-nodeports=false",
        "--iptables-sync-period=45s",
        "--iptables-min-sync-period=2s",
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.mode, ProxyMode::Iptables);
    assert!(options.masquerade_all);
    assert_eq!(options.masquerade_bit, 10);
    assert!(!options.localhost_node_ports);
    assert_eq!(options.sync_period, secs(45));
    assert_eq!(options.min_sync_period, secs(2));
    // No "primary" default outside nftables mode: every local address, as upstream.
    assert_eq!(options.nodeport_addresses, NodePortAddresses::All);
    let proxy = options.proxy_config();
    assert!(proxy.masquerade_all);
    assert_eq!(proxy.masquerade_bit, 10);
    assert_eq!(
        options.mode_options(),
        kproxy_dataplanes::ModeOptions {
            localhost_node_ports: false,
            iptables_variant: None,
            ipvs: kproxy_dataplanes::IpvsOptions::default(),
        }
    );

    let yaml = format!(
        "{HEADER}mode: iptables\niptables:\n  masqueradeAll: true\n  masqueradeBit: 5\n  \
         localhostNodePorts: false\n  syncPeriod: 1m\n  minSyncPeriod: 3s\n\
         nftables:\n  masqueradeBit: 20\n  syncPeriod: 7s\n"
    );
    let (options, _) = config_run(&yaml, &[]);
    assert_eq!(options.mode, ProxyMode::Iptables);
    assert!(options.masquerade_all);
    assert_eq!(
        options.masquerade_bit, 5,
        "the iptables section, not nftables'"
    );
    assert!(!options.localhost_node_ports);
    assert_eq!(options.sync_period, secs(60));
    assert_eq!(options.min_sync_period, secs(3));
    // localhostNodePorts defaults to true, as upstream's.
    let (options, _) = run(&["--proxy-mode=iptables"]);
    assert!(options.mode_options().localhost_node_ports);
}

#[test]
fn the_iptables_variant_flag_is_auto_nft_or_legacy_and_applies_with_a_config_file() {
    use kproxy_dataplanes::IptablesVariant;
    for (value, expected) in [
        ("auto", None),
        ("nft", Some(IptablesVariant::Nft)),
        ("legacy", Some(IptablesVariant::Legacy)),
    ] {
        let (options, warnings) = run(&[
            "--proxy-mode=iptables",
            "--cluster-cidr=10.244.0.0/16",
            &format!("--iptables-variant={value}"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(options.iptables_variant, expected);
        assert_eq!(options.mode_options().iptables_variant, expected);
    }
    assert_eq!(run(&["--proxy-mode=iptables"]).0.iptables_variant, None);
    let (options, warnings) = config_run(
        &format!("{HEADER}mode: iptables\n"),
        &["--iptables-variant", "legacy"],
    );
    assert_eq!(options.iptables_variant, Some(IptablesVariant::Legacy));
    assert!(
        !warnings.iter().any(|w| w.contains("iptables-variant")),
        "not a configuration flag: {warnings:?}"
    );
    let (_, warnings) = run(&["--iptables-variant=nft"]);
    assert!(
        warnings.iter().any(|w| w
            == "flag --iptables-variant has no effect in nftables mode (it applies to iptables and ipvs mode)"),
        "{warnings:?}"
    );
    assert!(matches!(
        fail(&["--iptables-variant=xtables"]),
        OptionsError::Flags(_)
    ));
}

#[test]
fn ipvs_sync_flags_apply_only_in_ipvs_mode() {
    let (options, warnings) = run(&["--proxy-mode=ipvs", "--ipvs-sync-period=7s"]);
    assert_eq!(options.sync_period, secs(7));
    assert_eq!(options.min_sync_period, Duration::ZERO);
    assert!(!warnings.iter().any(|w| w.contains("--ipvs-sync-period")));
    let (options, warnings) = run(&["--ipvs-sync-period=7s"]);
    assert_eq!(options.sync_period, secs(30));
    assert!(
        warnings.iter().any(|w| w
            == "flag --ipvs-sync-period has no effect in nftables mode (it applies to ipvs mode)"),
        "{warnings:?}"
    );
}

#[test]
fn write_config_to_round_trips() {
    let scratch = Scratch::new("write");
    let out = scratch.0.join("written.yaml");
    let out_text = out.to_str().unwrap().to_owned();
    let flags = [
        "--hostname-override=node-7",
        "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
        "--masquerade-all",
        "--iptables-sync-period=45s",
        "--iptables-min-sync-period=500ms",
        "--nodeport-addresses=10.0.0.0/8",
        "--conntrack-tcp-be-liberal",
        "--conntrack-udp-timeout=1m30s",
        "--metrics-bind-address=0.0.0.0:10249",
        "--oom-score-adj=-10",
        "-v=2",
        "--detect-local-mode=ClusterCIDR",
    ];
    let (direct, _) = run(&flags);
    let mut write = flags.to_vec();
    write.push("--write-config-to");
    write.push(&out_text);
    match load(args(&write)) {
        Ok(Outcome::WroteConfig { path }) => assert_eq!(path, out),
        other => panic!("expected WroteConfig, got {other:?}"),
    }
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(
        yaml.contains("apiVersion: kubeproxy.config.k8s.io/v1alpha1"),
        "{yaml}"
    );
    assert!(yaml.contains("syncPeriod: 45s"), "{yaml}");
    let (reloaded, _) = run(&["--config", &out_text]);
    assert_eq!(
        Options {
            config_file: None,
            ..reloaded
        },
        direct
    );

    // The defaults round-trip too.
    let (defaults, _) = run(&[]);
    let _ = load(args(&["--write-config-to", &out_text])).unwrap();
    let (reloaded, _) = run(&["--config", &out_text]);
    assert_eq!(
        Options {
            config_file: None,
            ..reloaded
        },
        defaults
    );
}

#[test]
fn every_no_effect_flag_warns() {
    let no_effect = [
        ("--feature-gates=Foo=true", "feature-gates"),
        (
            "--kube-api-content-type=application/json",
            "kube-api-content-type",
        ),
        ("--kube-api-burst=20", "kube-api-burst"),
        ("--kube-api-qps=20", "kube-api-qps"),
        ("--profiling", "profiling"),
        (
            "--show-hidden-metrics-for-version=1.32",
            "show-hidden-metrics-for-version",
        ),
        ("--vmodule=proxier=4", "vmodule"),
        ("--log-flush-frequency=1s", "log-flush-frequency"),
        (
            "--log-json-info-buffer-size=64Ki",
            "log-json-info-buffer-size",
        ),
        ("--log-json-split-stream", "log-json-split-stream"),
        ("--log-text-info-buffer-size=1", "log-text-info-buffer-size"),
        ("--log-text-split-stream", "log-text-split-stream"),
    ];
    for (flag, name) in no_effect {
        let (_, warnings) = run(&[flag]);
        let expected = format!("flag --{name} has no effect in kube-proxy-rs");
        assert!(warnings.contains(&expected), "{flag}: {warnings:?}");
    }
    let mode_bound = [
        ("--iptables-masquerade-bit=10", "iptables-masquerade-bit"),
        (
            "--iptables-localhost-nodeports=false",
            "iptables-localhost-nodeports",
        ),
        ("--ipvs-sync-period=1s", "ipvs-sync-period"),
        ("--ipvs-min-sync-period=1s", "ipvs-min-sync-period"),
        ("--ipvs-scheduler=rr", "ipvs-scheduler"),
        ("--ipvs-exclude-cidrs=10.0.0.0/8", "ipvs-exclude-cidrs"),
        ("--ipvs-strict-arp", "ipvs-strict-arp"),
        ("--ipvs-tcp-timeout=1s", "ipvs-tcp-timeout"),
        ("--ipvs-tcpfin-timeout=1s", "ipvs-tcpfin-timeout"),
        ("--ipvs-udp-timeout=1s", "ipvs-udp-timeout"),
    ];
    for (flag, name) in mode_bound {
        let (_, warnings) = run(&[flag]);
        let expected = format!("flag --{name} has no effect in nftables mode");
        assert!(
            warnings.iter().any(|w| w.starts_with(&expected)),
            "{flag}: {warnings:?}"
        );
    }
    let (options, warnings) = run(&["--init-only"]);
    assert!(options.init_only);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("flag --init-only has no effect"))
    );
    // The flags that do something raise no such warning.
    let (_, warnings) = run(&[
        "--proxy-mode=nftables",
        "--masquerade-all",
        "--cluster-cidr=10.0.0.0/8",
        "-v=1",
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn config_fields_with_no_effect_warn() {
    let yaml = format!(
        "{HEADER}featureGates:\n  Foo: true\nenableProfiling: true\nportRange: 30000-32767\n"
    );
    let (_, warnings) = config_run(&yaml, &[]);
    for field in ["featureGates", "enableProfiling", "portRange"] {
        let expected = format!("config field {field} has no effect in kube-proxy-rs");
        assert!(warnings.contains(&expected), "{warnings:?}");
    }
}

#[test]
fn the_decoder_reports_where() {
    // The message main prints for `--config bad.yaml`.
    let path = Path::new("bad.yaml");
    let err = KubeProxyConfiguration::decode(&format!("{HEADER}bogusField: 1\n"), path)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid config file bad.yaml (line 3, column 1): "),
        "{err}"
    );
    assert!(err.contains("bogusField"), "{err}");
}

#[test]
fn field_paths_come_from_indentation() {
    use super::config::field_path_at;
    let text = "a: 1\nb:\n  c:\n    # note\n    d: x\n  e: 2\nlist:\n- name: n\n  value: v\n";
    assert_eq!(field_path_at(text, 1).as_deref(), Some("a"));
    assert_eq!(field_path_at(text, 5).as_deref(), Some("b.c.d"));
    assert_eq!(field_path_at(text, 6).as_deref(), Some("b.e"));
    assert_eq!(field_path_at(text, 9).as_deref(), Some("list.value"));
    assert_eq!(field_path_at(text, 4), None);
    assert_eq!(field_path_at(text, 99), None);
}

#[test]
fn balancing_comes_from_the_flag_or_the_config_field() {
    let (from_flag, _) = run(&["--balancing", "round-robin"]);
    assert_eq!(from_flag.balancing, Balancing::RoundRobin);
    assert_eq!(from_flag.proxy_config().balancing, Balancing::RoundRobin);
    assert_eq!(run(&[]).0.balancing, Balancing::Random);
    let (from_config, _) = config_run(&format!("{HEADER}balancing: round-robin\n"), &[]);
    assert_eq!(from_config.balancing, Balancing::RoundRobin);
    let problems = invalid(&["--balancing", "sticky"]).join("\n");
    assert!(
        problems.contains("balancing") && problems.contains("sticky"),
        "{problems}"
    );
}

#[test]
fn an_empty_hostname_override_is_ignored_as_upstream() {
    let (options, _) = run(&["--hostname-override="]);
    assert_eq!(options.hostname_override, None);
    let (options, _) = run(&["--hostname-override", "  "]);
    assert_eq!(options.hostname_override, None);
}

/// Issue 12: addresses and CIDRs written the legacy way (leading zeros) are read as decimal,
/// as upstream's `ParseIPSloppy` / `ParseCIDRSloppy` read them, in flags and in the file.
#[test]
fn legacy_addresses_in_flags_are_read_as_decimal() {
    let (options, warnings) = run(&[
        "--proxy-mode=nftables",
        "--bind-address=010.000.000.005",
        "--healthz-bind-address=127.000.000.001:010256",
        "--metrics-bind-address=127.0.0.01",
        "--cluster-cidr=10.244.000.0/16,fd00:244::/056",
        "--nodeport-addresses=192.168.000.0/24",
    ]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.bind_address, "10.0.0.5".parse::<IpAddr>().unwrap());
    assert_eq!(
        options.healthz_bind_address,
        Some("127.0.0.1:10256".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        options.metrics_bind_address,
        Some("127.0.0.1:10249".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        options.cluster_cidrs,
        vec![net("10.244.0.0/16"), net("fd00:244::/56")]
    );
    assert_eq!(
        options.nodeport_addresses,
        NodePortAddresses::Cidrs(vec![net("192.168.0.0/24")])
    );
    // Values above 255 stay invalid however they are padded.
    assert!(matches!(
        fail(&["--bind-address=10.0.0.0256"]),
        OptionsError::Flags(_)
    ));
    let problems = invalid(&["--cluster-cidr=10.244.0.256/16"]);
    assert!(
        problems.iter().any(|p| p.contains("clusterCIDR")),
        "{problems:?}"
    );
}

#[test]
fn legacy_addresses_in_the_config_file_are_read_as_decimal() {
    let yaml = format!(
        "{HEADER}\
mode: nftables
bindAddress: 010.0.0.5
clusterCIDR: 10.244.000.0/16
healthzBindAddress: 000.000.000.000:10256
metricsBindAddress: 127.0.0.001
nodePortAddresses: [ 192.168.000.001/24 ]
"
    );
    let (options, warnings) = config_run(&yaml, &[]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.bind_address, "10.0.0.5".parse::<IpAddr>().unwrap());
    assert_eq!(
        options.healthz_bind_address,
        Some("0.0.0.0:10256".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        options.metrics_bind_address,
        Some("127.0.0.1:10249".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(options.cluster_cidrs, vec![net("10.244.0.0/16")]);
    // Host bits are cleared, as Go's ParseCIDR returns the network.
    assert_eq!(
        options.nodeport_addresses,
        NodePortAddresses::Cidrs(vec![net("192.168.0.0/24")])
    );
}
