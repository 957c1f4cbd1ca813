//! Upstream's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`): strict YAML
//! decoding, upstream's defaults, and the YAML `--write-config-to` writes.
//!
//! Field names are exactly upstream's JSON names; every struct denies unknown fields, so a
//! misspelt or mis-cased field is an error naming it and its line. Upstream falls back to a
//! lenient decoding (logging the strict error) for v1alpha1; we do not, on purpose: a typo in
//! a config file should stop the proxy before it programs anything, not be ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::OptionsError;
use super::duration::{GoDuration, TimeOrDuration};

/// The only `apiVersion` accepted.
pub(crate) const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only `kind` accepted.
pub(crate) const KIND: &str = "KubeProxyConfiguration";

/// Upstream's default health-check port (`ports.ProxyHealthzPort`).
pub(crate) const HEALTHZ_PORT: u16 = 10256;
/// Upstream's default metrics port (`ports.ProxyStatusPort`).
pub(crate) const METRICS_PORT: u16 = 10249;
/// Upstream's default `oomScoreAdj` (`qos.KubeProxyOOMScoreAdj`).
pub(crate) const OOM_SCORE_ADJ: i32 = -999;

/// A `null` value decodes like an absent field (Go leaves the zero value for both).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `KubeProxyConfiguration`, v1alpha1. Fields are in upstream's (alphabetical) output order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KubeProxyConfiguration {
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub(crate) api_version: Option<String>,
    /// (kube-proxy-rs extension) `random` or `round-robin`; upstream's strict decoder would
    /// reject this field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) balancing: Option<String>,
    #[serde(rename = "bindAddress", skip_serializing_if = "Option::is_none")]
    pub(crate) bind_address: Option<String>,
    #[serde(
        rename = "bindAddressHardFail",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) bind_address_hard_fail: Option<bool>,
    #[serde(rename = "clientConnection", deserialize_with = "nullable")]
    pub(crate) client_connection: ClientConnection,
    #[serde(rename = "clusterCIDR", skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_cidr: Option<String>,
    #[serde(rename = "configSyncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) config_sync_period: Option<GoDuration>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) conntrack: Conntrack,
    #[serde(rename = "detectLocal", deserialize_with = "nullable")]
    pub(crate) detect_local: DetectLocal,
    #[serde(rename = "detectLocalMode", skip_serializing_if = "Option::is_none")]
    pub(crate) detect_local_mode: Option<String>,
    #[serde(rename = "enableProfiling", skip_serializing_if = "Option::is_none")]
    pub(crate) enable_profiling: Option<bool>,
    #[serde(rename = "featureGates", skip_serializing_if = "Option::is_none")]
    pub(crate) feature_gates: Option<BTreeMap<String, bool>>,
    #[serde(rename = "healthzBindAddress", skip_serializing_if = "Option::is_none")]
    pub(crate) healthz_bind_address: Option<String>,
    #[serde(rename = "hostnameOverride", skip_serializing_if = "Option::is_none")]
    pub(crate) hostname_override: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) iptables: Iptables,
    #[serde(deserialize_with = "nullable")]
    pub(crate) ipvs: Ipvs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) logging: Logging,
    #[serde(rename = "metricsBindAddress", skip_serializing_if = "Option::is_none")]
    pub(crate) metrics_bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mode: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) nftables: Nftables,
    #[serde(rename = "nodePortAddresses", skip_serializing_if = "Option::is_none")]
    pub(crate) node_port_addresses: Option<Vec<String>>,
    #[serde(rename = "oomScoreAdj", skip_serializing_if = "Option::is_none")]
    pub(crate) oom_score_adj: Option<i32>,
    #[serde(rename = "portRange", skip_serializing_if = "Option::is_none")]
    pub(crate) port_range: Option<String>,
    #[serde(
        rename = "showHiddenMetricsForVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) show_hidden_metrics_for_version: Option<String>,
    #[serde(
        rename = "windowsRunAsService",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) windows_run_as_service: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) winkernel: Winkernel,
}

/// `clientConnection` (component-base's `ClientConnectionConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClientConnection {
    #[serde(rename = "acceptContentTypes", skip_serializing_if = "Option::is_none")]
    pub(crate) accept_content_types: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) burst: Option<i32>,
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    pub(crate) content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kubeconfig: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) qps: Option<f32>,
}

/// `conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Conntrack {
    #[serde(rename = "maxPerCore", skip_serializing_if = "Option::is_none")]
    pub(crate) max_per_core: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<i32>,
    #[serde(rename = "tcpBeLiberal", skip_serializing_if = "Option::is_none")]
    pub(crate) tcp_be_liberal: Option<bool>,
    #[serde(
        rename = "tcpCloseWaitTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) tcp_close_wait_timeout: Option<GoDuration>,
    #[serde(
        rename = "tcpEstablishedTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) tcp_established_timeout: Option<GoDuration>,
    #[serde(rename = "udpStreamTimeout", skip_serializing_if = "Option::is_none")]
    pub(crate) udp_stream_timeout: Option<GoDuration>,
    #[serde(rename = "udpTimeout", skip_serializing_if = "Option::is_none")]
    pub(crate) udp_timeout: Option<GoDuration>,
}

/// `detectLocal`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DetectLocal {
    #[serde(rename = "bridgeInterface", skip_serializing_if = "Option::is_none")]
    pub(crate) bridge_interface: Option<String>,
    #[serde(
        rename = "interfaceNamePrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) interface_name_prefix: Option<String>,
}

/// `iptables`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Iptables {
    #[serde(rename = "localhostNodePorts", skip_serializing_if = "Option::is_none")]
    pub(crate) localhost_node_ports: Option<bool>,
    #[serde(rename = "masqueradeAll", skip_serializing_if = "Option::is_none")]
    pub(crate) masquerade_all: Option<bool>,
    #[serde(rename = "masqueradeBit", skip_serializing_if = "Option::is_none")]
    pub(crate) masquerade_bit: Option<i32>,
    #[serde(rename = "minSyncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) min_sync_period: Option<GoDuration>,
    #[serde(rename = "snatNodeInternalIP", skip_serializing_if = "Option::is_none")]
    pub(crate) snat_node_internal_ip: Option<bool>,
    #[serde(rename = "syncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) sync_period: Option<GoDuration>,
}

/// `ipvs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Ipvs {
    #[serde(rename = "excludeCIDRs", skip_serializing_if = "Option::is_none")]
    pub(crate) exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "minSyncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) min_sync_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scheduler: Option<String>,
    #[serde(rename = "strictARP", skip_serializing_if = "Option::is_none")]
    pub(crate) strict_arp: Option<bool>,
    #[serde(rename = "syncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) sync_period: Option<GoDuration>,
    #[serde(rename = "tcpFinTimeout", skip_serializing_if = "Option::is_none")]
    pub(crate) tcp_fin_timeout: Option<GoDuration>,
    #[serde(rename = "tcpTimeout", skip_serializing_if = "Option::is_none")]
    pub(crate) tcp_timeout: Option<GoDuration>,
    #[serde(rename = "udpTimeout", skip_serializing_if = "Option::is_none")]
    pub(crate) udp_timeout: Option<GoDuration>,
}

/// `nftables`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Nftables {
    #[serde(rename = "masqueradeAll", skip_serializing_if = "Option::is_none")]
    pub(crate) masquerade_all: Option<bool>,
    #[serde(rename = "masqueradeBit", skip_serializing_if = "Option::is_none")]
    pub(crate) masquerade_bit: Option<i32>,
    #[serde(rename = "minSyncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) min_sync_period: Option<GoDuration>,
    #[serde(rename = "syncPeriod", skip_serializing_if = "Option::is_none")]
    pub(crate) sync_period: Option<GoDuration>,
}

/// `winkernel`: Windows only; accepted so that a shared config file decodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Winkernel {
    #[serde(rename = "enableDSR", skip_serializing_if = "Option::is_none")]
    pub(crate) enable_dsr: Option<bool>,
    #[serde(
        rename = "forwardHealthCheckVip",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) forward_health_check_vip: Option<bool>,
    #[serde(rename = "networkName", skip_serializing_if = "Option::is_none")]
    pub(crate) network_name: Option<String>,
    #[serde(
        rename = "rootHnsEndpointName",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) root_hns_endpoint_name: Option<String>,
    #[serde(rename = "sourceVip", skip_serializing_if = "Option::is_none")]
    pub(crate) source_vip: Option<String>,
}

/// `logging` (component-base's `LoggingConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Logging {
    #[serde(rename = "flushFrequency", skip_serializing_if = "Option::is_none")]
    pub(crate) flush_frequency: Option<TimeOrDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub(crate) options: LoggingFormatOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) verbosity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vmodule: Option<Vec<VModuleItem>>,
}

/// `logging.options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LoggingFormatOptions {
    #[serde(deserialize_with = "nullable")]
    pub(crate) json: LogStreamOptions,
    #[serde(deserialize_with = "nullable")]
    pub(crate) text: LogStreamOptions,
}

/// `logging.options.json` and `logging.options.text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogStreamOptions {
    #[serde(rename = "infoBufferSize", skip_serializing_if = "Option::is_none")]
    pub(crate) info_buffer_size: Option<Quantity>,
    #[serde(rename = "splitStream", skip_serializing_if = "Option::is_none")]
    pub(crate) split_stream: Option<bool>,
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct VModuleItem {
    #[serde(rename = "filePattern")]
    pub(crate) file_pattern: String,
    pub(crate) verbosity: u32,
}

/// A Kubernetes quantity (`"0"`, `"64Ki"`, or a bare number), kept as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Quantity(pub(crate) String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"0\" or \"64Ki\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Fills `slot` with `value` when it is unset.
fn default_to<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

/// Fills `slot` with `value` when it is unset or zero (Go defaults zero durations).
fn default_duration(slot: &mut Option<GoDuration>, value: GoDuration) {
    if slot.is_none_or(|d| d.0 == 0) {
        *slot = Some(value);
    }
}

/// Fills a string with `value` when it is unset or empty.
fn default_string(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().is_none_or(str::is_empty) {
        *slot = Some(value.to_owned());
    }
}

/// Appends `:port` to an address that has none (upstream's `AppendPortIfNeeded`).
pub(crate) fn append_port_if_needed(addr: &str, port: u16) -> String {
    if kproxy_core::convert::parse_ip_port(addr).is_ok() {
        return addr.to_owned();
    }
    match kproxy_core::convert::parse_ip(addr) {
        Ok(std::net::IpAddr::V4(ip)) => format!("{ip}:{port}"),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        // Not an IP: left for validation to report.
        Err(_) => addr.to_owned(),
    }
}

impl KubeProxyConfiguration {
    /// Upstream's `SetDefaults_KubeProxyConfiguration` (v1alpha1) plus the recommended
    /// logging configuration. Mode-dependent defaults (the proxy mode itself,
    /// `nodePortAddresses`, `detectLocalMode`) are applied later, as upstream's
    /// `platformApplyDefaults` does.
    pub(crate) fn set_defaults(&mut self) {
        default_string(&mut self.api_version, API_VERSION);
        default_string(&mut self.kind, KIND);
        default_string(&mut self.bind_address, "0.0.0.0");
        let ipv4 = self
            .bind_address
            .as_deref()
            .and_then(|a| kproxy_core::convert::parse_ip(a.trim()).ok())
            .is_none_or(|ip| ip.is_ipv4());
        let (healthz_host, metrics_host) = if ipv4 {
            ("0.0.0.0", "127.0.0.1")
        } else {
            ("[::]", "[::1]")
        };
        match self.healthz_bind_address.as_deref() {
            None | Some("") => {
                self.healthz_bind_address = Some(format!("{healthz_host}:{HEALTHZ_PORT}"));
            }
            Some(addr) => {
                self.healthz_bind_address = Some(append_port_if_needed(addr, HEALTHZ_PORT));
            }
        }
        match self.metrics_bind_address.as_deref() {
            None | Some("") => {
                self.metrics_bind_address = Some(format!("{metrics_host}:{METRICS_PORT}"));
            }
            Some(addr) => {
                self.metrics_bind_address = Some(append_port_if_needed(addr, METRICS_PORT));
            }
        }
        default_to(&mut self.oom_score_adj, OOM_SCORE_ADJ);
        default_to(&mut self.bind_address_hard_fail, false);
        default_to(&mut self.enable_profiling, false);
        default_to(&mut self.show_hidden_metrics_for_version, String::new());
        default_to(&mut self.hostname_override, String::new());
        default_to(&mut self.cluster_cidr, String::new());
        default_to(&mut self.port_range, String::new());
        default_to(&mut self.mode, String::new());
        default_to(&mut self.detect_local_mode, String::new());

        let ipt = &mut self.iptables;
        default_duration(&mut ipt.sync_period, GoDuration::from_secs(30));
        default_duration(&mut ipt.min_sync_period, GoDuration::from_secs(1));
        default_to(&mut ipt.localhost_node_ports, true);
        default_to(&mut ipt.masquerade_bit, 14);
        default_to(&mut ipt.masquerade_all, false);
        let ipvs = &mut self.ipvs;
        default_duration(&mut ipvs.sync_period, GoDuration::from_secs(30));
        // Upstream leaves ipvs.minSyncPeriod at 0.
        default_to(&mut ipvs.min_sync_period, GoDuration(0));
        default_to(&mut ipvs.scheduler, String::new());
        default_to(&mut ipvs.strict_arp, false);
        default_to(&mut ipvs.tcp_timeout, GoDuration(0));
        default_to(&mut ipvs.tcp_fin_timeout, GoDuration(0));
        default_to(&mut ipvs.udp_timeout, GoDuration(0));
        let nft = &mut self.nftables;
        default_duration(&mut nft.sync_period, GoDuration::from_secs(30));
        default_duration(&mut nft.min_sync_period, GoDuration::from_secs(1));
        default_to(&mut nft.masquerade_bit, 14);
        default_to(&mut nft.masquerade_all, false);

        let ct = &mut self.conntrack;
        default_to(&mut ct.max_per_core, 32 * 1024);
        default_to(&mut ct.min, 128 * 1024);
        default_to(
            &mut ct.tcp_established_timeout,
            GoDuration::from_secs(24 * 3600),
        );
        default_to(&mut ct.tcp_close_wait_timeout, GoDuration::from_secs(3600));
        default_to(&mut ct.tcp_be_liberal, false);
        default_to(&mut ct.udp_timeout, GoDuration(0));
        default_to(&mut ct.udp_stream_timeout, GoDuration(0));

        default_duration(&mut self.config_sync_period, GoDuration::from_secs(15 * 60));

        let cc = &mut self.client_connection;
        default_string(&mut cc.content_type, "application/vnd.kubernetes.protobuf");
        if cc.qps.is_none_or(|q| q == 0.0) {
            cc.qps = Some(5.0);
        }
        if cc.burst.is_none_or(|b| b == 0) {
            cc.burst = Some(10);
        }
        default_to(&mut cc.kubeconfig, String::new());
        default_to(&mut cc.accept_content_types, String::new());

        // logsapi.SetRecommendedLoggingConfiguration.
        let log = &mut self.logging;
        default_string(&mut log.format, "text");
        if log.flush_frequency.is_none_or(|f| f.0.0 == 0) {
            log.flush_frequency = Some(TimeOrDuration(GoDuration::from_secs(5)));
        }
        default_to(&mut log.verbosity, 0);
        for stream in [&mut log.options.json, &mut log.options.text] {
            default_to(&mut stream.info_buffer_size, Quantity("0".to_owned()));
        }
    }

    /// Reads and strictly decodes a config file, checking `apiVersion` and `kind`.
    ///
    /// # Errors
    ///
    /// [`OptionsError::ReadConfig`] when the file cannot be read,
    /// [`OptionsError::DecodeConfig`] for bad YAML or an unknown or mistyped field, and
    /// [`OptionsError::ConfigKind`] for a wrong `apiVersion` or `kind`.
    pub(crate) fn read(path: &Path) -> Result<Self, OptionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| OptionsError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::decode(&text, path)
    }

    /// Strictly decodes a config file's text; `path` only names it in errors.
    pub(crate) fn decode(text: &str, path: &Path) -> Result<Self, OptionsError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|err| {
            let location = err.location().filter(|l| l.line() > 0);
            let mut message = err.without_snippet().to_string();
            if let Some(l) = location {
                // The line goes in front; saphyr's own suffix would repeat it.
                let suffix = format!(" at line {}, column {}", l.line(), l.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
                // serde names an unknown field but not a mistyped one: name it from the text.
                if let Some(field) = field_path_at(text, l.line())
                    && !message.contains(&format!("`{}`", field.rsplit('.').next().unwrap_or("")))
                {
                    message = format!("field {field}: {message}");
                }
            }
            OptionsError::DecodeConfig {
                path: path.to_owned(),
                line: location.map(|l| l.line()),
                column: location.map(|l| l.column()),
                message,
            }
        })?;
        let api_version = config.api_version.clone().unwrap_or_default();
        let kind = config.kind.clone().unwrap_or_default();
        if api_version != API_VERSION || kind != KIND {
            return Err(OptionsError::ConfigKind {
                path: path.to_owned(),
                api_version,
                kind,
            });
        }
        Ok(config)
    }

    /// The YAML `--write-config-to` writes.
    pub(crate) fn to_yaml(&self) -> Result<String, OptionsError> {
        serde_saphyr::to_string(self).map_err(|err| OptionsError::EncodeConfig(err.to_string()))
    }
}

/// The dotted path of the mapping key on `line` (1-based) of block-style YAML, found from the
/// indentation of the lines above it: `nftables.syncPeriod`. `None` when the line holds no key.
pub(crate) fn field_path_at(text: &str, line: u64) -> Option<String> {
    /// A line's indentation and mapping key, if it has one.
    fn key_of(line: &str) -> Option<(usize, &str)> {
        let body = line.trim_start_matches(' ');
        let mut indent = line.len() - body.len();
        let mut body = body;
        while let Some(rest) = body.strip_prefix("- ") {
            indent += 2;
            body = rest.trim_start_matches(' ');
        }
        if body.starts_with('#') {
            return None;
        }
        let end = body
            .find(": ")
            .or_else(|| body.strip_suffix(':').map(str::len))?;
        let key = body[..end].trim().trim_matches(|c| c == '"' || c == '\'');
        (!key.is_empty() && !key.contains(['{', '[', ' '])).then_some((indent, key))
    }
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let (mut indent, key) = key_of(lines.get(index)?)?;
    let mut path = vec![key];
    for above in lines[..index].iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((parent_indent, parent)) = key_of(above)
            && parent_indent < indent
        {
            path.push(parent);
            indent = parent_indent;
        }
    }
    path.reverse();
    Some(path.join("."))
}
