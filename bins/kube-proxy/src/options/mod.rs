//! Upstream-compatible flags and config file, resolved into one [`Options`].
//!
//! # Precedence (as upstream's `Options.Complete`)
//!
//! * Without `--config`: upstream's defaults, then every flag given on the command line.
//! * With `--config`: upstream's defaults, then the file. **Flags that map into the
//!   configuration are ignored** (each one given produces a warning saying so), except:
//!   the logging flags (`-v`, `--logging-format`, `--vmodule`, `--log-*`), which override the
//!   file, and `--hostname-override`, which overrides the file's `hostnameOverride`.
//! * Flags outside the configuration always apply: `--master`, `--cleanup`, `--init-only`,
//!   `--write-config-to`, and ours, `--manifests`, `--iptables-variant` and `--netns`.
//! * Then the mode-dependent defaults (upstream's `platformApplyDefaults`): a blank mode
//!   becomes **nftables** (upstream: iptables; a warning says so), an unset
//!   `nodePortAddresses` becomes `primary` in nftables mode, and a blank `detectLocalMode`
//!   becomes `ClusterCIDR`.
//! * The sync periods, `masqueradeAll` and `masqueradeBit` come from the section of the
//!   selected mode (`nftables.syncPeriod` in nftables mode). `--iptables-sync-period` and
//!   `--iptables-min-sync-period` set them in every mode but ipvs, as upstream;
//!   `--iptables-masquerade-bit` only sets `iptables.masqueradeBit`, which nftables mode does
//!   not use (upstream reads `nftables.masqueradeBit`, settable only in the config file).
//!
//! Then everything is validated as upstream's `validation.Validate` does, and all problems are
//! reported at once.
//!
//! # Differences from upstream
//!
//! * Decoding is strict only: upstream retries a v1alpha1 file leniently and merely logs the
//!   strict error; we fail, naming the field and line.
//! * The default mode is nftables (see above). ipvs mode runs, with upstream's `ipvs`
//!   section and flags; its scheduler is validated against the kernel's schedulers (upstream
//!   only finds out when the first virtual server is added).
//! * Upstream's image picks the iptables variant with its `iptables-wrapper`; here the
//!   dataplanes facade detects it the same way, or `--iptables-variant` forces it.
//! * `metricsBindAddress: ""` disables the metrics server (upstream's validation rejects it).
//! * Feature gates are accepted whatever their names and have no effect.

mod config;
mod duration;
mod flags;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use kproxy_core::{
    Balancing, IpFamily, LocalTrafficDetector, NodePortAddresses, ProxyConfig, ReconcilerConfig,
};

use config::KubeProxyConfiguration;
use flags::Flags;

/// The proxy modes upstream offers on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProxyMode {
    /// `nftables`: our default.
    Nftables,
    /// `iptables`: upstream's default.
    Iptables,
    /// `ipvs`: deprecated upstream since 1.35 (nftables is recommended), still supported.
    Ipvs,
}

impl ProxyMode {
    /// Upstream's spelling.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
            Self::Ipvs => "ipvs",
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nftables" => Ok(Self::Nftables),
            "iptables" => Ok(Self::Iptables),
            "ipvs" => Ok(Self::Ipvs),
            _ => Err(format!("unknown proxy mode {s:?}")),
        }
    }
}

/// How local traffic is told apart (upstream's `detectLocalMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DetectLocalMode {
    /// Source inside the cluster CIDRs (`--cluster-cidr`); the default.
    ClusterCidr,
    /// Source inside this node's pod CIDRs, from the Node object.
    NodeCidr,
    /// Arrived on the bridge `--pod-bridge-interface`.
    BridgeInterface,
    /// Arrived on an interface named with the prefix `--pod-interface-name-prefix`.
    InterfaceNamePrefix,
}

impl DetectLocalMode {
    /// Upstream's spelling.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::ClusterCidr => "ClusterCIDR",
            Self::NodeCidr => "NodeCIDR",
            Self::BridgeInterface => "BridgeInterface",
            Self::InterfaceNamePrefix => "InterfaceNamePrefix",
        }
    }
}

impl fmt::Display for DetectLocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DetectLocalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ClusterCIDR" => Ok(Self::ClusterCidr),
            "NodeCIDR" => Ok(Self::NodeCidr),
            "BridgeInterface" => Ok(Self::BridgeInterface),
            "InterfaceNamePrefix" => Ok(Self::InterfaceNamePrefix),
            _ => Err(format!("unknown local-traffic detection mode {s:?}")),
        }
    }
}

/// Conntrack settings (upstream's `conntrack` section). A zero leaves the kernel's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConntrackOptions {
    /// Maximum tracked connections per CPU core (`maxPerCore`, default 32768; 0 leaves
    /// `nf_conntrack_max` as it is and ignores `min`).
    pub(crate) max_per_core: u32,
    /// Minimum `nf_conntrack_max` regardless of `max_per_core` (`min`, default 131072).
    pub(crate) min: u32,
    /// Idle timeout of established TCP connections (`tcpEstablishedTimeout`, default 24 h).
    pub(crate) tcp_established_timeout: Duration,
    /// Timeout of TCP connections in CLOSE_WAIT (`tcpCloseWaitTimeout`, default 1 h).
    pub(crate) tcp_close_wait_timeout: Duration,
    /// Set `nf_conntrack_tcp_be_liberal` (`tcpBeLiberal`).
    pub(crate) tcp_be_liberal: bool,
    /// Idle timeout of unreplied UDP flows (`udpTimeout`, default 0).
    pub(crate) udp_timeout: Duration,
    /// Idle timeout of assured UDP flows (`udpStreamTimeout`, default 0).
    pub(crate) udp_stream_timeout: Duration,
}

/// Log output format (`--logging-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LoggingOptions {
    /// Output format.
    pub(crate) format: LogFormat,
    /// klog verbosity (`-v`): 0 is info, 2 adds debug, 4 and above add trace.
    pub(crate) verbosity: u32,
}

/// Every setting, resolved: defaults, then the config file or the flags (see the module
/// documentation for the precedence), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// The proxy mode.
    pub(crate) mode: ProxyMode,
    /// `--cleanup`: remove everything any mode programmed, then exit.
    pub(crate) cleanup: bool,
    /// `--init-only`: there is nothing to initialise separately; exit 0 at once.
    pub(crate) init_only: bool,
    /// The config file given with `--config` (upstream exits when it changes).
    pub(crate) config_file: Option<PathBuf>,
    /// The node name to use instead of the hostname, trimmed and lower-cased.
    pub(crate) hostname_override: Option<String>,
    /// `clientConnection.kubeconfig` / `--kubeconfig`.
    pub(crate) kubeconfig: Option<PathBuf>,
    /// `--master`: the API server URL, overriding the kubeconfig's.
    pub(crate) master: Option<String>,
    /// `bindAddress`: overrides the node's primary IP (and so the primary family) when not
    /// unspecified; no socket is bound to it.
    pub(crate) bind_address: IpAddr,
    /// Where `/healthz` and `/livez` are served; `None` disables them.
    pub(crate) healthz_bind_address: Option<SocketAddr>,
    /// Where `/metrics` is served; `None` disables it.
    pub(crate) metrics_bind_address: Option<SocketAddr>,
    /// Failing to bind the health or metrics port is fatal.
    pub(crate) bind_address_hard_fail: bool,
    /// `clusterCIDR` / `--cluster-cidr`: one CIDR or a dual-stack pair.
    pub(crate) cluster_cidrs: Vec<IpNet>,
    /// How local traffic is detected.
    pub(crate) detect_local_mode: DetectLocalMode,
    /// `--pod-bridge-interface` (set when the mode is `BridgeInterface`).
    pub(crate) pod_bridge_interface: Option<String>,
    /// `--pod-interface-name-prefix` (set when the mode is `InterfaceNamePrefix`).
    pub(crate) pod_interface_name_prefix: Option<String>,
    /// SNAT all traffic to service IPs.
    pub(crate) masquerade_all: bool,
    /// The fwmark bit for masquerading, 0..=31 (default 14).
    pub(crate) masquerade_bit: u8,
    /// Where node ports answer.
    pub(crate) nodeport_addresses: NodePortAddresses,
    /// Node ports answer on 127.0.0.1 (`iptables.localhostNodePorts`; iptables mode only, IPv4
    /// only).
    pub(crate) localhost_node_ports: bool,
    /// How connections are spread over endpoints (`--balancing`, a kube-proxy-rs option).
    pub(crate) balancing: Balancing,
    /// The longest time between syncs (default 30 s).
    pub(crate) sync_period: Duration,
    /// The shortest time between syncs (default 1 s).
    pub(crate) min_sync_period: Duration,
    /// Conntrack settings.
    pub(crate) conntrack: ConntrackOptions,
    /// Logging settings.
    pub(crate) logging: LoggingOptions,
    /// `configSyncPeriod`: how often informers re-list (default 15 min).
    pub(crate) config_sync_period: Duration,
    /// `oomScoreAdj` for this process, -1000..=1000 (default -999).
    pub(crate) oom_score_adj: i32,
    /// `--manifests`: read objects from these YAML files instead of an API server.
    pub(crate) manifests: Option<PathBuf>,
    /// The `ipvs` section but its sync periods (ipvs mode only): scheduler, strict ARP,
    /// timeouts (zero is `None`: the kernel's), excluded CIDRs.
    pub(crate) ipvs: kproxy_dataplanes::IpvsOptions,
    /// `--iptables-variant`: the iptables variant to drive in iptables mode (and for the ipvs
    /// mode's helper rules); `None` (`auto`, the default) detects it.
    pub(crate) iptables_variant: Option<kproxy_dataplanes::IptablesVariant>,
    /// `--netns`: program this network namespace instead of our own.
    pub(crate) netns: Option<String>,
}

/// What [`load`] decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Run (or clean up, or init-only) with these options; log the warnings once tracing is
    /// set up.
    Run {
        /// The resolved options.
        options: Box<Options>,
        /// Flags with no effect, flags ignored because of `--config`, and other notes.
        warnings: Vec<String>,
    },
    /// `--write-config-to` wrote the effective configuration here; exit 0.
    WroteConfig {
        /// The file written.
        path: PathBuf,
    },
    /// `--version`: print this (to standard output) and exit 0.
    Version(String),
}

/// What `--version` prints: upstream prints `Kubernetes vX.Y.Z`, and its raw form the parts
/// of its version record.
fn version_text(flag: flags::VersionFlag) -> Option<String> {
    let version = env!("CARGO_PKG_VERSION");
    match flag {
        flags::VersionFlag::Off => None,
        flags::VersionFlag::Print => Some(format!("kube-proxy-rs v{version}\n")),
        flags::VersionFlag::Raw => {
            let mut parts = version.split('.');
            let major = parts.next().unwrap_or_default();
            let minor = parts.next().unwrap_or_default();
            Some(format!(
                "version.Info{{Major:\"{major}\", Minor:\"{minor}\", GitVersion:\"v{version}\", \
                 Compiler:\"rustc\", Platform:\"{}/{}\"}}\n",
                std::env::consts::OS,
                std::env::consts::ARCH
            ))
        }
    }
}

/// Why the options could not be loaded. The binary prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OptionsError {
    /// An unknown flag, a bad flag value or a stray argument; clap's message (with usage).
    #[error("{0}")]
    Flags(#[source] clap::Error),
    /// The config file could not be read.
    #[error("failed to read config file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML, or has an unknown or mistyped field.
    #[error(
        "invalid config file {}{}: {message}",
        path.display(),
        match (line, column) {
            (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
            (Some(l), None) => format!(" (line {l})"),
            _ => String::new(),
        }
    )]
    DecodeConfig {
        /// The file.
        path: PathBuf,
        /// The line of the problem, when known.
        line: Option<u64>,
        /// The column of the problem, when known.
        column: Option<u64>,
        /// The decoder's message, naming the field.
        message: String,
    },
    /// The config file is not a `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`.
    #[error(
        "config file {} has apiVersion {api_version:?} and kind {kind:?}: expected apiVersion \
         \"kubeproxy.config.k8s.io/v1alpha1\" and kind \"KubeProxyConfiguration\"",
        path.display()
    )]
    ConfigKind {
        /// The file.
        path: PathBuf,
        /// Its `apiVersion` (empty when missing).
        api_version: String,
        /// Its `kind` (empty when missing).
        kind: String,
    },
    /// The resolved configuration breaks upstream's validation rules; every problem, one per
    /// item, each naming the field.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// The effective configuration could not be rendered as YAML.
    #[error("failed to encode the configuration: {0}")]
    EncodeConfig(String),
    /// `--write-config-to` could not write its file.
    #[error("failed to write config file {path}: {source}")]
    WriteConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The warning given when no proxy mode is set.
const DEFAULT_MODE_WARNING: &str = "no proxy mode set: using nftables (upstream kube-proxy \
     defaults to iptables; set --proxy-mode=iptables or mode: iptables for that)";

/// Parses the command line (`args` includes the program name, like [`std::env::args_os`]),
/// reads the config file if any, and resolves and validates the options.
///
/// `--help` and `--version` print and exit the process with status 0 (clap).
///
/// # Errors
///
/// Every [`OptionsError`]: bad flags, an unreadable or invalid config file, invalid settings,
/// or a failure to write `--write-config-to`.
pub(crate) fn load<I, T>(args: I) -> Result<Outcome, OptionsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let flags = match Flags::try_parse_from(args) {
        Ok(flags) => flags,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => return Err(OptionsError::Flags(err)),
    };
    if let Some(text) = flags.version.and_then(version_text) {
        return Ok(Outcome::Version(text));
    }
    resolve(&flags)
}

/// The proxy mode a configuration's `mode` selects; blank is our default. `None` for an
/// unknown mode (reported by validation).
fn effective_mode(mode: Option<&str>) -> Option<ProxyMode> {
    match mode.unwrap_or_default() {
        "" => Some(ProxyMode::Nftables),
        other => other.parse().ok(),
    }
}

/// Everything after parsing: merge, default, validate, then write or return.
fn resolve(flags: &Flags) -> Result<Outcome, OptionsError> {
    let mut warnings = Vec::new();
    let mut config = if let Some(path) = &flags.config {
        let mut config = KubeProxyConfiguration::read(path)?;
        config.set_defaults();
        for name in flags.config_flags_set() {
            warnings.push(format!(
                "flag --{name} is ignored because --config is given (as upstream kube-proxy \
                 does): set it in the config file"
            ));
        }
        warnings.extend(config_no_effect_warnings(&config));
        flags.apply_logging(&mut config);
        config
    } else {
        let mut config = KubeProxyConfiguration::default();
        config.set_defaults();
        let mode = flags
            .proxy_mode
            .as_deref()
            .and_then(|m| effective_mode(Some(m)))
            .unwrap_or(ProxyMode::Nftables);
        flags.apply(&mut config, mode);
        flags.apply_deprecated_ports(&mut config);
        config
    };
    if config.mode.as_deref().is_none_or(str::is_empty) {
        warnings.push(DEFAULT_MODE_WARNING.to_owned());
    }
    apply_platform_defaults(&mut config);
    // processHostnameOverrideFlag: a non-empty flag wins over the file; an empty one is
    // ignored, as upstream does.
    if let Some(name) = &flags.hostname_override {
        let name = name.trim();
        if !name.is_empty() {
            config.hostname_override = Some(name.to_lowercase());
        }
    }

    let options = validate::resolve(&config, flags)?;
    warnings.extend(flags.no_effect_warnings(options.mode, flags.config.is_some()));
    if options.detect_local_mode == DetectLocalMode::ClusterCidr && options.cluster_cidrs.is_empty()
    {
        warnings.push(
            "detect-local-mode is ClusterCIDR but no cluster CIDR is set (--cluster-cidr or \
             clusterCIDR): no traffic is treated as local"
                .to_owned(),
        );
    }

    if let Some(path) = &flags.write_config_to {
        let yaml = config.to_yaml()?;
        std::fs::write(path, yaml).map_err(|source| OptionsError::WriteConfig {
            path: path.clone(),
            source,
        })?;
        return Ok(Outcome::WroteConfig { path: path.clone() });
    }
    Ok(Outcome::Run {
        options: Box::new(options),
        warnings,
    })
}

/// Upstream's `platformApplyDefaults` (Linux), with nftables as the blank mode.
fn apply_platform_defaults(config: &mut KubeProxyConfiguration) {
    if config.mode.as_deref().is_none_or(str::is_empty) {
        config.mode = Some(ProxyMode::Nftables.as_str().to_owned());
    }
    if config.mode.as_deref() == Some(ProxyMode::Nftables.as_str())
        && config
            .node_port_addresses
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        config.node_port_addresses = Some(vec!["primary".to_owned()]);
    }
    if config
        .detect_local_mode
        .as_deref()
        .is_none_or(str::is_empty)
    {
        config.detect_local_mode = Some(DetectLocalMode::ClusterCidr.as_str().to_owned());
    }
}

/// Warnings for config-file fields that kube-proxy-rs does not act on.
fn config_no_effect_warnings(config: &KubeProxyConfiguration) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut field = |name: &str, set: bool| {
        if set {
            warnings.push(format!(
                "config field {name} has no effect in kube-proxy-rs"
            ));
        }
    };
    field(
        "featureGates",
        config.feature_gates.as_ref().is_some_and(|g| !g.is_empty()),
    );
    field("enableProfiling", config.enable_profiling == Some(true));
    field(
        "showHiddenMetricsForVersion",
        config
            .show_hidden_metrics_for_version
            .as_deref()
            .is_some_and(|v| !v.is_empty()),
    );
    field(
        "portRange",
        config.port_range.as_deref().is_some_and(|v| !v.is_empty()),
    );
    warnings
}

impl Options {
    /// The dataplane settings.
    ///
    /// `ip_families` lists both families, the primary one (the family of `bind_address`)
    /// first; the binary narrows it to what the kernel supports. `service_cidrs` is empty: it
    /// comes from ServiceCIDR objects. A `ClusterCIDR` detector without a cluster CIDR means
    /// no local detection, as upstream (a warning from [`load`] says so).
    pub(crate) fn proxy_config(&self) -> ProxyConfig {
        let ip_families = if self.bind_address.is_ipv6() {
            vec![IpFamily::V6, IpFamily::V4]
        } else {
            vec![IpFamily::V4, IpFamily::V6]
        };
        let local_detector = match self.detect_local_mode {
            DetectLocalMode::ClusterCidr if self.cluster_cidrs.is_empty() => {
                LocalTrafficDetector::None
            }
            DetectLocalMode::ClusterCidr => {
                LocalTrafficDetector::ClusterCidr(self.cluster_cidrs.clone())
            }
            DetectLocalMode::NodeCidr => LocalTrafficDetector::NodeCidr,
            DetectLocalMode::BridgeInterface => LocalTrafficDetector::BridgeInterface(
                self.pod_bridge_interface.clone().unwrap_or_default(),
            ),
            DetectLocalMode::InterfaceNamePrefix => LocalTrafficDetector::InterfaceNamePrefix(
                self.pod_interface_name_prefix.clone().unwrap_or_default(),
            ),
        };
        ProxyConfig {
            ip_families,
            local_detector,
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.masquerade_bit,
            node_port_addresses: self.nodeport_addresses.clone(),
            service_cidrs: Vec::new(),
            balancing: self.balancing,
        }
    }

    /// The settings of one mode only, for the dataplanes facade: `localhostNodePorts`
    /// (iptables mode), the iptables variant (iptables mode, and the ipvs mode's helper
    /// rules) and the `ipvs` section (ipvs mode).
    pub(crate) fn mode_options(&self) -> kproxy_dataplanes::ModeOptions {
        kproxy_dataplanes::ModeOptions {
            localhost_node_ports: self.localhost_node_ports,
            iptables_variant: self.iptables_variant,
            ipvs: self.ipvs.clone(),
        }
    }

    /// The sync loop's settings: the sync periods; the rest at the core's defaults.
    pub(crate) fn reconciler_config(&self) -> ReconcilerConfig {
        ReconcilerConfig {
            min_sync_period: self.min_sync_period,
            sync_period: self.sync_period,
            ..ReconcilerConfig::default()
        }
    }
}
