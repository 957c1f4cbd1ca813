//! Upstream's `validation.Validate`, on the merged configuration, producing [`Options`].
//!
//! Every problem is collected (upstream aggregates them too) and named by its config-file
//! field, with the flag that sets it in brackets.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use kproxy_core::{Balancing, NodePortAddresses};

use super::config::KubeProxyConfiguration;
use super::duration::GoDuration;
use super::flags::Flags;
use super::{
    ConntrackOptions, DetectLocalMode, LogFormat, LoggingOptions, Options, OptionsError, ProxyMode,
};

/// Collects validation errors.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn invalid(&mut self, field: &str, value: impl std::fmt::Display, why: &str) {
        self.0
            .push(format!("{field}: invalid value \"{value}\": {why}"));
    }

    /// A non-negative duration, as [`Duration`]; zero when invalid (the error is recorded).
    fn non_negative(&mut self, field: &str, value: Option<GoDuration>) -> Duration {
        let value = value.unwrap_or_default();
        value.to_std().unwrap_or_else(|| {
            self.invalid(field, value, "must be greater than or equal to 0");
            Duration::ZERO
        })
    }

    /// A count that must not be negative.
    fn count(&mut self, field: &str, value: Option<i32>) -> u32 {
        let value = value.unwrap_or_default();
        u32::try_from(value).unwrap_or_else(|_| {
            self.invalid(field, value, "must be greater than or equal to 0");
            0
        })
    }
}

/// A CIDR as upstream's `ParseCIDRSloppy` takes it: host bits allowed (the network is kept),
/// leading zeros read as decimal.
fn parse_cidr(text: &str) -> Option<IpNet> {
    kproxy_core::convert::parse_cidr(text.trim()).ok()
}

/// `IP:port` with a port in 1..=65535 (upstream's `validateHostPort`, the IP read with
/// `ParseIPSloppy`); empty is `None`.
fn host_port(errors: &mut Errors, field: &str, value: Option<&str>) -> Option<SocketAddr> {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        return None;
    }
    match kproxy_core::convert::parse_ip_port(value) {
        Ok(addr) if addr.port() != 0 => Some(addr),
        Ok(addr) => {
            errors.invalid(field, addr.port(), "must be a valid port");
            None
        }
        Err(_) => {
            errors.invalid(field, value, "must be IP:port");
            None
        }
    }
}

/// The cluster CIDRs: one CIDR or a dual-stack pair (upstream's
/// `validateDualStackCIDRStrings`).
fn cluster_cidrs(errors: &mut Errors, text: &str) -> Vec<IpNet> {
    const FIELD: &str = "clusterCIDR (--cluster-cidr)";
    if text.trim().is_empty() {
        return Vec::new();
    }
    let items: Vec<&str> = text.split(',').collect();
    if items.len() > 2 {
        errors.invalid(
            FIELD,
            text,
            "must be a either a single CIDR or dual-stack pair of CIDRs (e.g. \
             10.100.0.0/16,fde4:8dba:82e1::/48)",
        );
        return Vec::new();
    }
    let mut cidrs = Vec::new();
    for item in items {
        match parse_cidr(item) {
            Some(net) => cidrs.push(net),
            None => errors.invalid(
                FIELD,
                item,
                "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
            ),
        }
    }
    if let [a, b] = cidrs.as_slice()
        && matches!(a, IpNet::V4(_)) == matches!(b, IpNet::V4(_))
    {
        errors.invalid(
            FIELD,
            text,
            "must be a either a single CIDR or dual-stack pair of CIDRs (e.g. \
             10.100.0.0/16,fde4:8dba:82e1::/48)",
        );
    }
    cidrs
}

/// `nodePortAddresses`: `primary` alone, or CIDRs.
fn node_port_addresses(errors: &mut Errors, items: &[String]) -> NodePortAddresses {
    const FIELD: &str = "nodePortAddresses (--nodeport-addresses)";
    if items.is_empty() {
        return NodePortAddresses::All;
    }
    let mut cidrs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item == "primary" {
            if items.len() != 1 {
                errors.invalid(
                    &format!("nodePortAddresses[{i}]"),
                    item,
                    "can't use both 'primary' and CIDRs",
                );
            }
            return NodePortAddresses::Primary;
        }
        match parse_cidr(item) {
            Some(net) => cidrs.push(net),
            None => errors.invalid(
                &format!("{FIELD}[{i}]"),
                item,
                "must be a valid CIDR or 'primary'",
            ),
        }
    }
    NodePortAddresses::Cidrs(cidrs)
}

/// `masqueradeBit`: 0..=31.
fn masquerade_bit(errors: &mut Errors, field: &str, value: Option<i32>) -> u8 {
    let value = value.unwrap_or(14);
    match u8::try_from(value) {
        Ok(bit) if bit <= 31 => bit,
        _ => {
            errors.invalid(field, value, "must be within the range [0, 31]");
            14
        }
    }
}

/// A non-empty string as `Some`.
fn some_non_empty(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

/// The `ipvs` section as the facade takes it: a zero (or negative, reported in ipvs mode)
/// timeout leaves the kernel's, CIDRs that do not parse (reported in ipvs mode) are left out.
fn ipvs_options(config: &KubeProxyConfiguration) -> kproxy_dataplanes::IpvsOptions {
    let section = &config.ipvs;
    let timeout = |value: Option<GoDuration>| {
        value
            .and_then(GoDuration::to_std)
            .filter(|timeout| !timeout.is_zero())
    };
    kproxy_dataplanes::IpvsOptions {
        scheduler: section.scheduler.clone().unwrap_or_default(),
        strict_arp: section.strict_arp.unwrap_or_default(),
        tcp_timeout: timeout(section.tcp_timeout),
        tcp_fin_timeout: timeout(section.tcp_fin_timeout),
        udp_timeout: timeout(section.udp_timeout),
        exclude_cidrs: section
            .exclude_cidrs
            .iter()
            .flatten()
            .filter_map(|cidr| parse_cidr(cidr))
            .collect(),
    }
}

/// Validates the merged, defaulted configuration and resolves it into [`Options`].
///
/// # Errors
///
/// [`OptionsError::Invalid`] listing every problem.
pub(super) fn resolve(
    config: &KubeProxyConfiguration,
    flags: &Flags,
) -> Result<Options, OptionsError> {
    let mut errors = Errors::default();

    let mode_text = config.mode.clone().unwrap_or_default();
    let mode = match super::effective_mode(Some(&mode_text)) {
        Some(mode) => mode,
        None => {
            errors.invalid(
                "mode (--proxy-mode)",
                &mode_text,
                "must be iptables, ipvs, nftables or blank",
            );
            ProxyMode::Nftables
        }
    };

    // upstream validates iptables.masqueradeBit in every mode.
    let iptables_bit = masquerade_bit(
        &mut errors,
        "iptables.masqueradeBit (--iptables-masquerade-bit)",
        config.iptables.masquerade_bit,
    );
    let (masquerade_bit, masquerade_all, section, sync, min_sync) = match mode {
        ProxyMode::Nftables => (
            masquerade_bit(
                &mut errors,
                "nftables.masqueradeBit",
                config.nftables.masquerade_bit,
            ),
            config.nftables.masquerade_all,
            "nftables",
            config.nftables.sync_period,
            config.nftables.min_sync_period,
        ),
        ProxyMode::Iptables => (
            iptables_bit,
            config.iptables.masquerade_all,
            "iptables",
            config.iptables.sync_period,
            config.iptables.min_sync_period,
        ),
        ProxyMode::Ipvs => (
            iptables_bit,
            config.iptables.masquerade_all,
            "ipvs",
            config.ipvs.sync_period,
            config.ipvs.min_sync_period,
        ),
    };
    let flag_prefix = if mode == ProxyMode::Ipvs {
        "ipvs"
    } else {
        "iptables"
    };
    let sync = sync.unwrap_or_default();
    let min_sync = min_sync.unwrap_or_default();
    let sync_field = format!("{section}.syncPeriod (--{flag_prefix}-sync-period)");
    let min_sync_field = format!("{section}.minSyncPeriod (--{flag_prefix}-min-sync-period)");
    if sync.0 <= 0 {
        errors.invalid(&sync_field, sync, "must be greater than 0");
    }
    if min_sync.is_negative() {
        errors.invalid(
            &min_sync_field,
            min_sync,
            "must be greater than or equal to 0",
        );
    } else if min_sync > sync && sync.0 > 0 {
        errors.invalid(
            &sync_field,
            sync,
            &format!("must be greater than or equal to {section}.minSyncPeriod ({min_sync})"),
        );
    }

    let ipvs = ipvs_options(config);
    if mode == ProxyMode::Ipvs {
        // Upstream's validateIPVSSchedulerMethod; the error names the valid schedulers.
        if let Err(error) = ipvs.check() {
            errors
                .0
                .push(format!("ipvs.scheduler (--ipvs-scheduler): {error}"));
        }
        for (field, value) in [
            (
                "ipvs.tcpTimeout (--ipvs-tcp-timeout)",
                config.ipvs.tcp_timeout,
            ),
            (
                "ipvs.tcpFinTimeout (--ipvs-tcpfin-timeout)",
                config.ipvs.tcp_fin_timeout,
            ),
            (
                "ipvs.udpTimeout (--ipvs-udp-timeout)",
                config.ipvs.udp_timeout,
            ),
        ] {
            errors.non_negative(field, value);
        }
        for (i, cidr) in config.ipvs.exclude_cidrs.iter().flatten().enumerate() {
            if parse_cidr(cidr).is_none() {
                errors.invalid(
                    &format!("ipvs.excludeCIDRs[{i}] (--ipvs-exclude-cidrs)"),
                    cidr,
                    "must be a valid CIDR",
                );
            }
        }
    }

    let ct = &config.conntrack;
    let conntrack = ConntrackOptions {
        max_per_core: errors.count(
            "conntrack.maxPerCore (--conntrack-max-per-core)",
            ct.max_per_core,
        ),
        min: errors.count("conntrack.min (--conntrack-min)", ct.min),
        tcp_established_timeout: errors.non_negative(
            "conntrack.tcpEstablishedTimeout (--conntrack-tcp-timeout-established)",
            ct.tcp_established_timeout,
        ),
        tcp_close_wait_timeout: errors.non_negative(
            "conntrack.tcpCloseWaitTimeout (--conntrack-tcp-timeout-close-wait)",
            ct.tcp_close_wait_timeout,
        ),
        tcp_be_liberal: ct.tcp_be_liberal.unwrap_or_default(),
        udp_timeout: errors.non_negative(
            "conntrack.udpTimeout (--conntrack-udp-timeout)",
            ct.udp_timeout,
        ),
        udp_stream_timeout: errors.non_negative(
            "conntrack.udpStreamTimeout (--conntrack-udp-timeout-stream)",
            ct.udp_stream_timeout,
        ),
    };

    let oom_score_adj = config.oom_score_adj.unwrap_or(super::config::OOM_SCORE_ADJ);
    if !(-1000..=1000).contains(&oom_score_adj) {
        errors.invalid(
            "oomScoreAdj (--oom-score-adj)",
            oom_score_adj,
            "must be within the range [-1000, 1000]",
        );
    }

    if config.client_connection.burst.is_some_and(|b| b < 0) {
        errors.invalid(
            "clientConnection.burst (--kube-api-burst)",
            config.client_connection.burst.unwrap_or_default(),
            "must be greater than or equal to 0",
        );
    }

    let config_sync_period = config.config_sync_period.unwrap_or_default();
    if config_sync_period.0 <= 0 {
        errors.invalid(
            "configSyncPeriod (--config-sync-period)",
            config_sync_period,
            "must be greater than 0",
        );
    }

    let bind_text = config.bind_address.clone().unwrap_or_default();
    let bind_address = kproxy_core::convert::parse_ip(bind_text.trim()).unwrap_or_else(|_| {
        errors.invalid(
            "bindAddress (--bind-address)",
            &bind_text,
            "not a valid textual representation of an IP address",
        );
        IpAddr::from([0, 0, 0, 0])
    });
    let healthz_bind_address = host_port(
        &mut errors,
        "healthzBindAddress (--healthz-bind-address)",
        config.healthz_bind_address.as_deref(),
    );
    let metrics_bind_address = host_port(
        &mut errors,
        "metricsBindAddress (--metrics-bind-address)",
        config.metrics_bind_address.as_deref(),
    );

    if let Some(range) = config.port_range.as_deref().filter(|r| !r.is_empty()) {
        let ok = range
            .split_once(['-', '+'])
            .map_or(range.parse::<u16>().is_ok(), |(a, b)| {
                a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok()
            });
        if !ok {
            errors.invalid(
                "portRange",
                range,
                "must be a valid port range (e.g. 300-2000)",
            );
        }
    }

    let nodeport_addresses = node_port_addresses(
        &mut errors,
        config.node_port_addresses.as_deref().unwrap_or_default(),
    );

    let local_text = config.detect_local_mode.clone().unwrap_or_default();
    let detect_local_mode = if local_text.is_empty() {
        DetectLocalMode::ClusterCidr
    } else {
        local_text.parse().unwrap_or_else(|_| {
            errors.invalid(
                "detectLocalMode (--detect-local-mode)",
                &local_text,
                "supported values: \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \
                 \"InterfaceNamePrefix\"",
            );
            DetectLocalMode::ClusterCidr
        })
    };
    let pod_bridge_interface = some_non_empty(config.detect_local.bridge_interface.as_ref());
    let pod_interface_name_prefix =
        some_non_empty(config.detect_local.interface_name_prefix.as_ref());
    match detect_local_mode {
        DetectLocalMode::BridgeInterface if pod_bridge_interface.is_none() => errors.invalid(
            "detectLocal.bridgeInterface (--pod-bridge-interface)",
            "",
            "must not be empty when detectLocalMode is BridgeInterface",
        ),
        DetectLocalMode::InterfaceNamePrefix if pod_interface_name_prefix.is_none() => errors
            .invalid(
                "detectLocal.interfaceNamePrefix (--pod-interface-name-prefix)",
                "",
                "must not be empty when detectLocalMode is InterfaceNamePrefix",
            ),
        _ => {}
    }
    // Upstream validates the cluster CIDRs only in ClusterCIDR mode; in the others they are
    // kept when they parse (the binary may use them for IP-family checks) and never an error.
    let cluster_text = config.cluster_cidr.clone().unwrap_or_default();
    let cluster_cidrs = if detect_local_mode == DetectLocalMode::ClusterCidr {
        cluster_cidrs(&mut errors, &cluster_text)
    } else {
        cluster_cidrs(&mut Errors::default(), &cluster_text)
    };

    let format = match config.logging.format.as_deref().unwrap_or("text") {
        "text" | "" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errors.invalid(
                "logging.format (--logging-format)",
                other,
                "unsupported log format: must be text or json",
            );
            LogFormat::Text
        }
    };

    let hostname_override = match config.hostname_override.as_deref() {
        None | Some("") => None,
        Some(name) if name.trim().is_empty() => {
            errors.invalid(
                "hostnameOverride (--hostname-override)",
                name,
                "an empty hostname is invalid",
            );
            None
        }
        Some(name) => Some(name.trim().to_lowercase()),
    };

    let balancing = match config.balancing.as_deref() {
        None | Some("random") => Balancing::Random,
        Some("round-robin") => Balancing::RoundRobin,
        Some(other) => {
            errors.invalid("balancing", other, "must be random or round-robin");
            Balancing::Random
        }
    };

    if flags.netns.as_deref().is_some_and(str::is_empty) {
        errors.invalid("--netns", "", "must name a network namespace");
    }

    if !errors.0.is_empty() {
        return Err(OptionsError::Invalid(errors.0));
    }

    Ok(Options {
        mode,
        cleanup: flags.cleanup.unwrap_or_default(),
        init_only: flags.init_only.unwrap_or_default(),
        config_file: flags.config.clone(),
        hostname_override,
        kubeconfig: some_non_empty(config.client_connection.kubeconfig.as_ref()).map(PathBuf::from),
        master: flags.master.clone().filter(|m| !m.is_empty()),
        bind_address,
        healthz_bind_address,
        metrics_bind_address,
        bind_address_hard_fail: config.bind_address_hard_fail.unwrap_or_default(),
        cluster_cidrs,
        detect_local_mode,
        pod_bridge_interface,
        pod_interface_name_prefix,
        masquerade_all: masquerade_all.unwrap_or_default(),
        masquerade_bit,
        nodeport_addresses,
        localhost_node_ports: config.iptables.localhost_node_ports.unwrap_or(true),
        balancing,
        sync_period: sync.to_std().unwrap_or_default(),
        min_sync_period: min_sync.to_std().unwrap_or_default(),
        conntrack,
        logging: LoggingOptions {
            format,
            verbosity: config.logging.verbosity.unwrap_or_default(),
        },
        config_sync_period: config_sync_period.to_std().unwrap_or_default(),
        oom_score_adj,
        ipvs,
        iptables_variant: flags.iptables_variant.and_then(|choice| choice.0),
        manifests: flags.manifests.clone(),
        netns: flags.netns.clone(),
    })
}
