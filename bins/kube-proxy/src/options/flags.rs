//! Upstream kube-proxy's Linux command-line flags (names, value syntax and help), plus ours
//! (`--manifests`, `--balancing`, `--iptables-variant`, `--netns`).
//!
//! Every field is an `Option` so that "set on the command line" can be told from "left at its
//! default" (pflag's `Changed`): upstream applies flags over the defaults only when they were
//! given, and ignores most of them when `--config` is given.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};
use kproxy_core::convert::parse_ip;
use kproxy_dataplanes::IptablesVariant;

use super::ProxyMode;
use super::config::{KubeProxyConfiguration, Quantity, append_port_if_needed};
use super::duration::{GoDuration, TimeOrDuration};

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

/// What `--version` asks for (upstream's `verflag` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionFlag {
    /// `--version` or `--version=true`: print the version and exit.
    Print,
    /// `--version=raw`: print the version's parts and exit.
    Raw,
    /// `--version=false`: run as usual.
    Off,
}

fn parse_version(s: &str) -> Result<VersionFlag, String> {
    if s == "raw" {
        return Ok(VersionFlag::Raw);
    }
    match parse_bool(s) {
        Ok(true) => Ok(VersionFlag::Print),
        Ok(false) => Ok(VersionFlag::Off),
        Err(_) => Err(format!(
            "{s:?} is not a version request (use true, false or raw)"
        )),
    }
}

fn parse_duration(s: &str) -> Result<GoDuration, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// `--proxy-mode`: one of upstream's Linux modes, or blank for the default.
fn parse_proxy_mode(s: &str) -> Result<String, String> {
    if s.is_empty() || s.parse::<ProxyMode>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown proxy mode {s:?}: must be iptables, ipvs, nftables or blank"
        ))
    }
}

/// The value of `--iptables-variant`: the variant to drive, `None` for `auto` (detect it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VariantChoice(pub(crate) Option<IptablesVariant>);

/// `--iptables-variant`: `auto`, `nft` or `legacy`.
fn parse_iptables_variant(s: &str) -> Result<VariantChoice, String> {
    match s {
        "auto" => Ok(VariantChoice(None)),
        other => other.parse().map(|v| VariantChoice(Some(v))).map_err(|_| {
            format!("unknown iptables variant {other:?}: must be auto, nft or legacy")
        }),
    }
}

/// `--detect-local-mode`: one of upstream's modes, or blank for the default.
fn parse_local_mode(s: &str) -> Result<String, String> {
    if s.is_empty() || s.parse::<super::DetectLocalMode>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown local-traffic detection mode {s:?}: must be ClusterCIDR, NodeCIDR, \
             BridgeInterface, InterfaceNamePrefix or blank"
        ))
    }
}

/// `--healthz-bind-address` / `--metrics-bind-address` (upstream's `IPPortVar`): an IP, an
/// `IP:port`, or empty.
fn parse_ip_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    // Legacy spellings (leading zeros) are taken, as upstream's ParseIPSloppy takes them.
    if s.is_empty() || parse_ip(s).is_ok() || kproxy_core::convert::parse_ip_port(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must be an IP or IP:port"))
    }
}

/// `--bind-address` (upstream's `IPVar`, which reads with `ParseIPSloppy`: leading zeros are
/// decimal).
fn parse_bind_address(s: &str) -> Result<IpAddr, String> {
    parse_ip(s).map_err(|e| e.to_string())
}

/// `--logging-format`.
fn parse_log_format(s: &str) -> Result<String, String> {
    match s {
        "text" | "json" => Ok(s.to_owned()),
        _ => Err(format!(
            "unsupported log format {s:?}: must be text or json"
        )),
    }
}

/// `--feature-gates`: `Name=true,Other=false`.
fn parse_feature_gates(s: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut gates = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("missing bool value for {item}"))?;
        let value =
            parse_bool(value.trim()).map_err(|e| format!("invalid value of {name}: {e}"))?;
        gates.insert(name.trim().to_owned(), value);
    }
    Ok(gates)
}

/// The command line.
#[derive(Debug, Default, Parser)]
#[command(
    name = "kube-proxy",
    disable_version_flag = true,
    about = "kube-proxy-rs: the Kubernetes network proxy, a drop-in replacement for kube-proxy",
    long_about = "The Kubernetes network proxy runs on each node. It watches Services and \
                  EndpointSlices and programs the node's kernel (nftables or iptables) so that \
                  traffic to a Service reaches one of its endpoints.\n\nFlags and the --config file \
                  (KubeProxyConfiguration, kubeproxy.config.k8s.io/v1alpha1) are upstream \
                  kube-proxy's; when --config is given, most flags are ignored, as upstream."
)]
pub(crate) struct Flags {
    /// --version, --version=raw prints version information and quits.
    #[arg(long, value_name = "true|false|raw", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_version)]
    pub(crate) version: Option<VersionFlag>,
    /// The path to the configuration file.
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// If set, write the default configuration values to this file and exit.
    #[arg(long, value_name = "PATH")]
    pub(crate) write_config_to: Option<PathBuf>,
    /// If true, remove the rules any proxy mode programmed (the `kube-proxy` nftables tables,
    /// the KUBE-* iptables chains of both variants, KUBE-* ipsets, IPVS services) and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) cleanup: Option<bool>,
    /// A set of key=value pairs that describe feature gates for alpha/experimental features.
    /// This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "KEY=BOOL,...", value_parser = parse_feature_gates)]
    pub(crate) feature_gates: Option<BTreeMap<String, bool>>,
    /// Path to kubeconfig file with authorization information (the master location can be
    /// overridden by the master flag).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<String>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig)
    #[arg(long, value_name = "URL")]
    pub(crate) master: Option<String>,
    /// Content type of requests sent to apiserver.
    #[arg(long, value_name = "TYPE")]
    pub(crate) kube_api_content_type: Option<String>,
    /// Burst to use while talking with kubernetes apiserver
    #[arg(long, value_name = "INT", allow_negative_numbers = true)]
    pub(crate) kube_api_burst: Option<i32>,
    /// QPS to use while talking with kubernetes apiserver
    #[arg(long, value_name = "FLOAT", allow_negative_numbers = true)]
    pub(crate) kube_api_qps: Option<f32>,
    /// If non-empty, will be used as the name of the Node that kube-proxy is running on. If
    /// unset, the node name is assumed to be the same as the node's hostname.
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname_override: Option<String>,
    /// Overrides kube-proxy's idea of what its node's primary IP is. Note that the name is a
    /// historical artifact, and kube-proxy does not actually bind any sockets to this IP. This
    /// parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "IP", value_parser = parse_bind_address)]
    pub(crate) bind_address: Option<IpAddr>,
    /// The IP address and port for the health check server to serve on, defaulting to
    /// "0.0.0.0:10256". This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_ip_port)]
    pub(crate) healthz_bind_address: Option<String>,
    /// The IP address and port for the metrics server to serve on, defaulting to
    /// "127.0.0.1:10249". (Set to "0.0.0.0:10249" / `[::]:10249` to bind on all interfaces.)
    /// Set empty to disable. This parameter is ignored if a config file is specified by
    /// --config.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_ip_port)]
    pub(crate) metrics_bind_address: Option<String>,
    /// If true kube-proxy will treat failure to bind to a port as fatal and exit
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) bind_address_hard_fail: Option<bool>,
    /// If true enables profiling via web interface on /debug/pprof handler. This parameter is
    /// ignored if a config file is specified by --config.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) profiling: Option<bool>,
    /// The previous version for which you want to show hidden metrics.
    #[arg(long, value_name = "VERSION")]
    pub(crate) show_hidden_metrics_for_version: Option<String>,
    /// If true, perform any initialization steps that must be done with full root privileges,
    /// and then exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) init_only: Option<bool>,
    /// Which proxy mode to use: 'nftables' (the default here), 'iptables' (upstream's default)
    /// or 'ipvs' (deprecated upstream; nftables is recommended). This parameter is ignored if
    /// a config file is specified by --config.
    #[arg(long, value_name = "MODE", value_parser = parse_proxy_mode)]
    pub(crate) proxy_mode: Option<String>,
    /// If using the iptables or ipvs proxy mode, the bit of the fwmark space to mark packets
    /// requiring SNAT with. Must be within the range [0, 31].
    #[arg(long, value_name = "INT", allow_negative_numbers = true)]
    pub(crate) iptables_masquerade_bit: Option<i32>,
    /// SNAT all traffic sent via Service cluster IPs. This may be required with some CNI
    /// plugins.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) masquerade_all: Option<bool>,
    /// If false, kube-proxy will disable the legacy behavior of allowing NodePort services to be
    /// accessed via localhost. (Applies only to iptables mode and IPv4.)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) iptables_localhost_nodeports: Option<bool>,
    /// An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various
    /// re-synchronizing and cleanup operations are performed. Must be greater than 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) iptables_sync_period: Option<GoDuration>,
    /// The minimum period between rule resyncs (e.g. '5s', '1m', '2h22m'). A value of 0 means
    /// every Service or EndpointSlice change will result in an immediate resync.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) iptables_min_sync_period: Option<GoDuration>,
    /// An interval indicating how frequently IPVS re-synchronizing and cleanup operations are
    /// performed. Must be greater than 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ipvs_sync_period: Option<GoDuration>,
    /// The minimum period between IPVS rule resyncs.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ipvs_min_sync_period: Option<GoDuration>,
    /// The ipvs scheduler type when proxy mode is ipvs
    #[arg(long, value_name = "NAME")]
    pub(crate) ipvs_scheduler: Option<String>,
    /// A comma-separated list of CIDRs which the ipvs proxier should not touch when cleaning up
    /// IPVS rules.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',', action = ArgAction::Append)]
    pub(crate) ipvs_exclude_cidrs: Option<Vec<String>>,
    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) ipvs_strict_arp: Option<bool>,
    /// The timeout for idle IPVS TCP connections, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ipvs_tcp_timeout: Option<GoDuration>,
    /// The timeout for IPVS TCP connections after receiving a FIN packet, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ipvs_tcpfin_timeout: Option<GoDuration>,
    /// The timeout for IPVS UDP packets, 0 to leave as-is.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ipvs_udp_timeout: Option<GoDuration>,
    /// Mode to use to detect local traffic: ClusterCIDR (default), NodeCIDR, BridgeInterface or
    /// InterfaceNamePrefix. This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "MODE", value_parser = parse_local_mode)]
    pub(crate) detect_local_mode: Option<String>,
    /// A bridge interface name. When --detect-local-mode is set to BridgeInterface, kube-proxy
    /// will consider traffic to be local if it originates from this bridge.
    #[arg(long, value_name = "NAME")]
    pub(crate) pod_bridge_interface: Option<String>,
    /// An interface name prefix. When --detect-local-mode is set to InterfaceNamePrefix,
    /// kube-proxy will consider traffic to be local if it originates from any interface whose
    /// name begins with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) pod_interface_name_prefix: Option<String>,
    /// The CIDR range of the pods in the cluster. (For dual-stack clusters, this can be a
    /// comma-separated dual-stack pair of CIDR ranges.) When --detect-local-mode is set to
    /// ClusterCIDR, kube-proxy will consider traffic to be local if its source IP is in this
    /// range. This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "CIDRS")]
    pub(crate) cluster_cidr: Option<String>,
    /// A list of CIDR ranges that contain valid node IPs, or alternatively, the single string
    /// 'primary'. If set to a list of CIDRs, connections to NodePort services will only be
    /// accepted on node IPs in one of the indicated ranges. If set to 'primary', NodePort
    /// services will only be accepted on the node's primary IP(s) according to the Node object.
    /// If unset, nftables mode uses 'primary' and other modes accept NodePort connections on
    /// all local IPs. This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',', action = ArgAction::Append)]
    pub(crate) nodeport_addresses: Option<Vec<String>>,
    /// The oom-score-adj value for kube-proxy process. Values must be within the range
    /// [-1000, 1000]. This parameter is ignored if a config file is specified by --config.
    #[arg(long, value_name = "INT", allow_negative_numbers = true)]
    pub(crate) oom_score_adj: Option<i32>,
    /// Maximum number of NAT connections to track per CPU core (0 to leave the limit as-is and
    /// ignore conntrack-min).
    #[arg(long, value_name = "INT", allow_negative_numbers = true)]
    pub(crate) conntrack_max_per_core: Option<i32>,
    /// Minimum number of conntrack entries to allocate, regardless of conntrack-max-per-core
    /// (set conntrack-max-per-core=0 to leave the limit as-is).
    #[arg(long, value_name = "INT", allow_negative_numbers = true)]
    pub(crate) conntrack_min: Option<i32>,
    /// Idle timeout for established TCP connections (0 to leave as-is)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) conntrack_tcp_timeout_established: Option<GoDuration>,
    /// NAT timeout for TCP connections in the CLOSE_WAIT state
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) conntrack_tcp_timeout_close_wait: Option<GoDuration>,
    /// Enable liberal mode for tracking TCP packets by setting nf_conntrack_tcp_be_liberal to 1
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout for UNREPLIED UDP connections (0 to leave as-is)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) conntrack_udp_timeout: Option<GoDuration>,
    /// Idle timeout for ASSURED UDP connections (0 to leave as-is)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) conntrack_udp_timeout_stream: Option<GoDuration>,
    /// How often configuration from the apiserver is refreshed. Must be greater than 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) config_sync_period: Option<GoDuration>,
    /// The port to bind the health check server. Use 0 to disable. (Deprecated: use
    /// --healthz-bind-address.)
    #[arg(long, value_name = "PORT", hide = true, allow_negative_numbers = true)]
    pub(crate) healthz_port: Option<i32>,
    /// The port to bind the metrics server. Use 0 to disable. (Deprecated: use
    /// --metrics-bind-address.)
    #[arg(long, value_name = "PORT", hide = true, allow_negative_numbers = true)]
    pub(crate) metrics_port: Option<i32>,
    /// Sets the log format. Permitted formats: "json", "text".
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub(crate) logging_format: Option<String>,
    /// Maximum number of seconds between log flushes
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) log_flush_frequency: Option<GoDuration>,
    /// number for the log level verbosity
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub(crate) verbosity: Option<u32>,
    /// comma-separated list of pattern=N settings for file-filtered logging (only works for
    /// text log format)
    #[arg(long, value_name = "PATTERN=N,...")]
    pub(crate) vmodule: Option<String>,
    /// (Alpha) In JSON format with split output streams, the info messages can be buffered for
    /// a while to increase performance.
    #[arg(long, value_name = "QUANTITY")]
    pub(crate) log_json_info_buffer_size: Option<String>,
    /// (Alpha) In JSON format, write error messages to stderr and info messages to stdout.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) log_json_split_stream: Option<bool>,
    /// (Alpha) In text format with split output streams, the info messages can be buffered for
    /// a while to increase performance.
    #[arg(long, value_name = "QUANTITY")]
    pub(crate) log_text_info_buffer_size: Option<String>,
    /// (Alpha) In text format, write error messages to stderr and info messages to stdout.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub(crate) log_text_split_stream: Option<bool>,
    /// (kube-proxy-rs) Read Services, EndpointSlices and the Node from the YAML files at PATH
    /// (a file or a directory) instead of an API server, re-reading them when they change.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifests: Option<PathBuf>,
    /// (kube-proxy-rs) How new connections are spread over a service's endpoints: 'random'
    /// (upstream's iptables and nftables modes) or 'round-robin' (as upstream's IPVS 'rr').
    #[arg(long, value_name = "MODE")]
    pub(crate) balancing: Option<String>,
    /// (kube-proxy-rs) Which iptables the node uses, in iptables mode and for the ipvs mode's
    /// helper rules: 'auto' (the default:
    /// detected as upstream's kube-proxy image does: kubelet's hint chains, else the variant
    /// holding more rules, else nft), 'nft' (iptables-nft) or 'legacy' (iptables-legacy).
    /// Applies with or without --config.
    #[arg(long, value_name = "auto|nft|legacy", value_parser = parse_iptables_variant)]
    pub(crate) iptables_variant: Option<VariantChoice>,
    /// (kube-proxy-rs) Program the network namespace NAME (as `ip netns` names it) instead of
    /// the one kube-proxy runs in; for development machines.
    #[arg(long, value_name = "NAME")]
    pub(crate) netns: Option<String>,
}

/// What a flag does in kube-proxy-rs, for the warnings.
enum Effect {
    /// Nothing, in any mode.
    None,
    /// Only in these modes.
    OnlyIn(&'static [ProxyMode]),
}

impl Flags {
    /// The names of the flags given on the command line that map into
    /// `KubeProxyConfiguration`, which upstream ignores when `--config` is given.
    pub(crate) fn config_flags_set(&self) -> Vec<&'static str> {
        let set = [
            ("feature-gates", self.feature_gates.is_some()),
            ("kubeconfig", self.kubeconfig.is_some()),
            (
                "kube-api-content-type",
                self.kube_api_content_type.is_some(),
            ),
            ("kube-api-burst", self.kube_api_burst.is_some()),
            ("kube-api-qps", self.kube_api_qps.is_some()),
            ("bind-address", self.bind_address.is_some()),
            ("healthz-bind-address", self.healthz_bind_address.is_some()),
            ("metrics-bind-address", self.metrics_bind_address.is_some()),
            (
                "bind-address-hard-fail",
                self.bind_address_hard_fail.is_some(),
            ),
            ("profiling", self.profiling.is_some()),
            (
                "show-hidden-metrics-for-version",
                self.show_hidden_metrics_for_version.is_some(),
            ),
            ("proxy-mode", self.proxy_mode.is_some()),
            (
                "iptables-masquerade-bit",
                self.iptables_masquerade_bit.is_some(),
            ),
            ("masquerade-all", self.masquerade_all.is_some()),
            (
                "iptables-localhost-nodeports",
                self.iptables_localhost_nodeports.is_some(),
            ),
            ("iptables-sync-period", self.iptables_sync_period.is_some()),
            (
                "iptables-min-sync-period",
                self.iptables_min_sync_period.is_some(),
            ),
            ("ipvs-sync-period", self.ipvs_sync_period.is_some()),
            ("ipvs-min-sync-period", self.ipvs_min_sync_period.is_some()),
            ("ipvs-scheduler", self.ipvs_scheduler.is_some()),
            ("ipvs-exclude-cidrs", self.ipvs_exclude_cidrs.is_some()),
            ("ipvs-strict-arp", self.ipvs_strict_arp.is_some()),
            ("ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some()),
            ("ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some()),
            ("ipvs-udp-timeout", self.ipvs_udp_timeout.is_some()),
            ("detect-local-mode", self.detect_local_mode.is_some()),
            ("pod-bridge-interface", self.pod_bridge_interface.is_some()),
            (
                "pod-interface-name-prefix",
                self.pod_interface_name_prefix.is_some(),
            ),
            ("cluster-cidr", self.cluster_cidr.is_some()),
            ("nodeport-addresses", self.nodeport_addresses.is_some()),
            ("oom-score-adj", self.oom_score_adj.is_some()),
            (
                "conntrack-max-per-core",
                self.conntrack_max_per_core.is_some(),
            ),
            ("conntrack-min", self.conntrack_min.is_some()),
            (
                "conntrack-tcp-timeout-established",
                self.conntrack_tcp_timeout_established.is_some(),
            ),
            (
                "conntrack-tcp-timeout-close-wait",
                self.conntrack_tcp_timeout_close_wait.is_some(),
            ),
            (
                "conntrack-tcp-be-liberal",
                self.conntrack_tcp_be_liberal.is_some(),
            ),
            (
                "conntrack-udp-timeout",
                self.conntrack_udp_timeout.is_some(),
            ),
            (
                "conntrack-udp-timeout-stream",
                self.conntrack_udp_timeout_stream.is_some(),
            ),
            ("config-sync-period", self.config_sync_period.is_some()),
            ("healthz-port", self.healthz_port.is_some()),
            ("metrics-port", self.metrics_port.is_some()),
        ];
        set.into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }

    /// The flags given whose setting kube-proxy-rs does not act on, with what they do here.
    fn effects(&self) -> Vec<(&'static str, Effect)> {
        const IPVS: &[ProxyMode] = &[ProxyMode::Ipvs];
        const IPTABLES: &[ProxyMode] = &[ProxyMode::Iptables];
        const IPTABLES_IPVS: &[ProxyMode] = &[ProxyMode::Iptables, ProxyMode::Ipvs];
        let all = [
            ("feature-gates", self.feature_gates.is_some(), Effect::None),
            (
                "kube-api-content-type",
                self.kube_api_content_type.is_some(),
                Effect::None,
            ),
            (
                "kube-api-burst",
                self.kube_api_burst.is_some(),
                Effect::None,
            ),
            ("kube-api-qps", self.kube_api_qps.is_some(), Effect::None),
            ("profiling", self.profiling.is_some(), Effect::None),
            (
                "show-hidden-metrics-for-version",
                self.show_hidden_metrics_for_version.is_some(),
                Effect::None,
            ),
            (
                "iptables-masquerade-bit",
                self.iptables_masquerade_bit.is_some(),
                Effect::OnlyIn(IPTABLES_IPVS),
            ),
            (
                "iptables-localhost-nodeports",
                self.iptables_localhost_nodeports.is_some(),
                Effect::OnlyIn(IPTABLES),
            ),
            (
                "ipvs-sync-period",
                self.ipvs_sync_period.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-min-sync-period",
                self.ipvs_min_sync_period.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-scheduler",
                self.ipvs_scheduler.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-exclude-cidrs",
                self.ipvs_exclude_cidrs.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-strict-arp",
                self.ipvs_strict_arp.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-tcp-timeout",
                self.ipvs_tcp_timeout.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-tcpfin-timeout",
                self.ipvs_tcpfin_timeout.is_some(),
                Effect::OnlyIn(IPVS),
            ),
            (
                "ipvs-udp-timeout",
                self.ipvs_udp_timeout.is_some(),
                Effect::OnlyIn(IPVS),
            ),
        ];
        all.into_iter()
            .filter_map(|(name, given, effect)| given.then_some((name, effect)))
            .collect()
    }

    /// The logging flags kube-proxy-rs does not act on (they apply with or without
    /// `--config`).
    fn logging_no_effect(&self) -> Vec<&'static str> {
        let all = [
            ("vmodule", self.vmodule.is_some()),
            ("log-flush-frequency", self.log_flush_frequency.is_some()),
            (
                "log-json-info-buffer-size",
                self.log_json_info_buffer_size.is_some(),
            ),
            (
                "log-json-split-stream",
                self.log_json_split_stream.is_some(),
            ),
            (
                "log-text-info-buffer-size",
                self.log_text_info_buffer_size.is_some(),
            ),
            (
                "log-text-split-stream",
                self.log_text_split_stream.is_some(),
            ),
        ];
        all.into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect()
    }

    /// Warnings for the flags given that do nothing here, in `mode`. `config_given` leaves out
    /// the ones already reported as ignored because of `--config`.
    pub(crate) fn no_effect_warnings(&self, mode: ProxyMode, config_given: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        if !config_given {
            for (name, effect) in self.effects() {
                match effect {
                    Effect::None => warnings.push(no_effect(name)),
                    Effect::OnlyIn(modes) if !modes.contains(&mode) => warnings.push(format!(
                        "flag --{name} has no effect in {mode} mode (it applies to {} mode)",
                        modes
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )),
                    Effect::OnlyIn(_) => {}
                }
            }
            for (name, given) in [
                ("healthz-port", self.healthz_port.is_some()),
                ("metrics-port", self.metrics_port.is_some()),
            ] {
                if given {
                    let replacement = name.replace("-port", "-bind-address");
                    warnings.push(format!(
                        "flag --{name} has been deprecated, this flag is deprecated and will be \
                         removed in a future release. Please use --{replacement} instead."
                    ));
                }
            }
        }
        // Ours, outside the configuration: it applies with or without --config.
        // The ipvs mode writes its helper rules with it too.
        if self.iptables_variant.is_some() && mode == ProxyMode::Nftables {
            warnings.push(format!(
                "flag --iptables-variant has no effect in {mode} mode (it applies to iptables \
                 and ipvs mode)"
            ));
        }
        warnings.extend(self.logging_no_effect().into_iter().map(no_effect));
        if self.init_only == Some(true) {
            warnings.push(
                "flag --init-only has no effect in kube-proxy-rs: there is no separate \
                 privileged initialisation step, so kube-proxy exits without doing anything"
                    .to_owned(),
            );
        }
        warnings
    }

    /// Copies the logging flags given onto `config` (upstream's `copyLogsFromFlags`: they
    /// override the config file too).
    pub(crate) fn apply_logging(&self, config: &mut KubeProxyConfiguration) {
        let log = &mut config.logging;
        set(&mut log.format, self.logging_format.clone());
        set(&mut log.verbosity, self.verbosity);
        set(
            &mut log.flush_frequency,
            self.log_flush_frequency.map(TimeOrDuration),
        );
        set(
            &mut log.options.json.info_buffer_size,
            self.log_json_info_buffer_size.clone().map(Quantity),
        );
        set(
            &mut log.options.json.split_stream,
            self.log_json_split_stream,
        );
        set(
            &mut log.options.text.info_buffer_size,
            self.log_text_info_buffer_size.clone().map(Quantity),
        );
        set(
            &mut log.options.text.split_stream,
            self.log_text_split_stream,
        );
        if let Some(vmodule) = &self.vmodule {
            let mut items = log.vmodule.take().unwrap_or_default();
            for entry in vmodule.split(',').filter(|e| !e.is_empty()) {
                let (pattern, level) = entry.split_once('=').unwrap_or((entry, "0"));
                items.push(super::config::VModuleItem {
                    file_pattern: pattern.to_owned(),
                    verbosity: level.parse().unwrap_or(0),
                });
            }
            log.vmodule = Some(items);
        }
    }

    /// Applies every flag given over a defaulted `config` (the path without `--config`),
    /// as upstream's flag bindings and `processV1Alpha1Flags` do. `mode` is the effective
    /// proxy mode (blank already resolved to our default), which decides the section that
    /// the mode-neutral flags (sync periods, `--masquerade-all`) land in.
    pub(crate) fn apply(&self, config: &mut KubeProxyConfiguration, mode: ProxyMode) {
        set(&mut config.feature_gates, self.feature_gates.clone());
        let cc = &mut config.client_connection;
        set(&mut cc.kubeconfig, self.kubeconfig.clone());
        set(&mut cc.content_type, self.kube_api_content_type.clone());
        set(&mut cc.burst, self.kube_api_burst);
        set(&mut cc.qps, self.kube_api_qps);
        set(
            &mut config.bind_address,
            self.bind_address.map(|ip| ip.to_string()),
        );
        set(
            &mut config.healthz_bind_address,
            self.healthz_bind_address.clone(),
        );
        set(
            &mut config.metrics_bind_address,
            self.metrics_bind_address.clone(),
        );
        set(
            &mut config.bind_address_hard_fail,
            self.bind_address_hard_fail,
        );
        set(&mut config.enable_profiling, self.profiling);
        set(
            &mut config.show_hidden_metrics_for_version,
            self.show_hidden_metrics_for_version.clone(),
        );
        set(&mut config.mode, self.proxy_mode.clone());
        set(&mut config.balancing, self.balancing.clone());
        set(
            &mut config.iptables.masquerade_bit,
            self.iptables_masquerade_bit,
        );
        if let Some(all) = self.masquerade_all {
            match mode {
                ProxyMode::Nftables => config.nftables.masquerade_all = Some(all),
                _ => config.iptables.masquerade_all = Some(all),
            }
        }
        set(
            &mut config.iptables.localhost_node_ports,
            self.iptables_localhost_nodeports,
        );
        // processV1Alpha1Flags: the iptables flags set the (mode-neutral) sync periods unless
        // the mode is ipvs, and the ipvs flags only in ipvs mode.
        let (sync, min_sync) = match mode {
            ProxyMode::Nftables => (
                &mut config.nftables.sync_period,
                &mut config.nftables.min_sync_period,
            ),
            ProxyMode::Iptables => (
                &mut config.iptables.sync_period,
                &mut config.iptables.min_sync_period,
            ),
            ProxyMode::Ipvs => (
                &mut config.ipvs.sync_period,
                &mut config.ipvs.min_sync_period,
            ),
        };
        if mode == ProxyMode::Ipvs {
            set(sync, self.ipvs_sync_period);
            set(min_sync, self.ipvs_min_sync_period);
        } else {
            set(sync, self.iptables_sync_period);
            set(min_sync, self.iptables_min_sync_period);
        }
        let ipvs = &mut config.ipvs;
        set(&mut ipvs.scheduler, self.ipvs_scheduler.clone());
        set(&mut ipvs.exclude_cidrs, non_empty(&self.ipvs_exclude_cidrs));
        set(&mut ipvs.strict_arp, self.ipvs_strict_arp);
        set(&mut ipvs.tcp_timeout, self.ipvs_tcp_timeout);
        set(&mut ipvs.tcp_fin_timeout, self.ipvs_tcpfin_timeout);
        set(&mut ipvs.udp_timeout, self.ipvs_udp_timeout);
        set(
            &mut config.detect_local_mode,
            self.detect_local_mode.clone(),
        );
        set(
            &mut config.detect_local.bridge_interface,
            self.pod_bridge_interface.clone(),
        );
        set(
            &mut config.detect_local.interface_name_prefix,
            self.pod_interface_name_prefix.clone(),
        );
        set(&mut config.cluster_cidr, self.cluster_cidr.clone());
        set(
            &mut config.node_port_addresses,
            non_empty(&self.nodeport_addresses),
        );
        set(&mut config.oom_score_adj, self.oom_score_adj);
        let ct = &mut config.conntrack;
        set(&mut ct.max_per_core, self.conntrack_max_per_core);
        set(&mut ct.min, self.conntrack_min);
        set(
            &mut ct.tcp_established_timeout,
            self.conntrack_tcp_timeout_established,
        );
        set(
            &mut ct.tcp_close_wait_timeout,
            self.conntrack_tcp_timeout_close_wait,
        );
        set(&mut ct.tcp_be_liberal, self.conntrack_tcp_be_liberal);
        set(&mut ct.udp_timeout, self.conntrack_udp_timeout);
        set(
            &mut ct.udp_stream_timeout,
            self.conntrack_udp_timeout_stream,
        );
        set(&mut config.config_sync_period, self.config_sync_period);
        self.apply_logging(config);
    }

    /// The deprecated `--healthz-port` / `--metrics-port` (upstream's
    /// `addressFromDeprecatedFlags`, only without `--config` and `--write-config-to`): port 0
    /// disables the server, another port is added to an address that has none. Their defaults
    /// are the usual ports, so this also completes an `IP`-only bind address flag.
    pub(crate) fn apply_deprecated_ports(&self, config: &mut KubeProxyConfiguration) {
        let pairs = [
            (
                &mut config.healthz_bind_address,
                self.healthz_port,
                super::config::HEALTHZ_PORT,
            ),
            (
                &mut config.metrics_bind_address,
                self.metrics_port,
                super::config::METRICS_PORT,
            ),
        ];
        for (addr, port, default) in pairs {
            let port = port.unwrap_or(i32::from(default));
            let current = addr.clone().unwrap_or_default();
            *addr = Some(match u16::try_from(port) {
                Ok(0) => String::new(),
                Ok(port) if !current.is_empty() => append_port_if_needed(&current, port),
                // An out-of-range port leaves the address for validation to judge.
                _ => current,
            });
        }
    }
}

/// `flag --NAME has no effect in kube-proxy-rs`.
fn no_effect(name: &str) -> String {
    format!("flag --{name} has no effect in kube-proxy-rs")
}

/// Overwrites `slot` when the flag was given.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// A comma-list flag with its empty items dropped (`--nodeport-addresses=""` is an empty
/// list, as pflag's `StringSlice` makes it).
fn non_empty(list: &Option<Vec<String>>) -> Option<Vec<String>> {
    list.as_ref().map(|items| {
        items
            .iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect()
    })
}
