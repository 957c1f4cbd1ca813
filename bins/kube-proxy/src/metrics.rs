//! Prometheus metrics with upstream kube-proxy's `kubeproxy_` names, plus process metrics and
//! a few of our own (`kubeproxy_rs_`), served as text on the metrics address.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use kproxy_core::{ModelError, ObjectKind, ProxyState, SyncKind, SyncStatus, select_endpoints};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

/// A label set with one `traffic_policy` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TrafficPolicy {
    traffic_policy: String,
}

/// A label set with one `code` label (HTTP status).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Code {
    code: String,
}

/// A label set with one `kind` label (object kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Kind {
    kind: String,
}

/// Every metric this proxy exports.
pub(crate) struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    sync_full_duration: Histogram,
    sync_partial_duration: Histogram,
    last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub(crate) last_queued_timestamp: Gauge<f64, AtomicU64>,
    network_programming: Histogram,
    pub(crate) endpoint_changes: Counter,
    pub(crate) service_changes: Counter,
    pub(crate) changes_pending: Gauge,
    no_local_endpoints: Family<TrafficPolicy, Gauge>,
    sync_failures: Counter,
    repairs: Counter,
    healthz: Family<Code, Counter>,
    livez: Family<Code, Counter>,
    invalid_fields: Family<Kind, Counter>,
    pub(crate) watch_errors: Counter,
    trigger_times: Mutex<Vec<SystemTime>>,
    started: SystemTime,
}

fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Registers every metric.
    /// The proxy's metrics; `mode` names its mode-specific ones.
    pub(crate) fn new(mode: kproxy_dataplanes::Mode) -> Self {
        let mut registry = Registry::default();
        let network_buckets = [0.25, 0.5]
            .into_iter()
            .chain(linear_buckets(1.0, 1.0, 59))
            .chain(linear_buckets(60.0, 5.0, 12))
            .chain(linear_buckets(120.0, 30.0, 7));
        let metrics = Self {
            sync_duration: sync_buckets(),
            sync_full_duration: sync_buckets(),
            sync_partial_duration: sync_buckets(),
            last_sync_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            network_programming: Histogram::new(network_buckets),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            sync_failures: Counter::default(),
            repairs: Counter::default(),
            healthz: Family::default(),
            livez: Family::default(),
            invalid_fields: Family::default(),
            watch_errors: Counter::default(),
            trigger_times: Mutex::new(Vec::new()),
            started: SystemTime::now(),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            metrics.sync_full_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            metrics.sync_partial_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.last_sync_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            metrics.last_queued_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            metrics.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            metrics.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            metrics.changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            metrics.changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            metrics.no_local_endpoints.clone(),
        );
        let (sync_failures, help) = mode.sync_failures_metric();
        registry.register(sync_failures, help, metrics.sync_failures.clone());
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            metrics.healthz.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            metrics.livez.clone(),
        );
        registry.register(
            "kubeproxy_rs_invalid_fields",
            "Fields of Kubernetes objects that could not be used, by object kind",
            metrics.invalid_fields.clone(),
        );
        registry.register(
            "kubeproxy_rs_sync_repairs",
            "Full syncs made because the rules were found changed from outside (or could not be checked)",
            metrics.repairs.clone(),
        );
        registry.register(
            "kubeproxy_rs_watch_errors",
            "Watch failures that led to a retry",
            metrics.watch_errors.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a field that could not be used.
    pub(crate) fn record_invalid(&self, error: &ModelError) {
        let kind = match error.object().kind {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
        };
        self.invalid_fields
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Remembers an EndpointSlice's `last-change-trigger-time`, observed once programmed.
    ///
    /// Times from before this process started are ignored, as upstream does: the initial list
    /// and every re-list replay old annotations that say nothing about this proxy's latency.
    pub(crate) fn note_trigger_time(&self, value: &str) {
        if let Some(time) = parse_rfc3339(value).filter(|time| *time >= self.started) {
            self.trigger_times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(time);
        }
        self.last_queued_timestamp
            .set(unix_seconds(SystemTime::now()));
    }

    /// Counts a health-check answer.
    pub(crate) fn health_answered(&self, livez: bool, code: u16) {
        let family = if livez { &self.livez } else { &self.healthz };
        family
            .get_or_create(&Code {
                code: code.to_string(),
            })
            .inc();
    }

    /// Records what the reconciler just did, and the state it programmed.
    pub(crate) fn observe_sync(
        &self,
        previous: &SyncStatus,
        status: &SyncStatus,
        state: &ProxyState,
    ) {
        if status.failures > previous.failures {
            self.sync_failures
                .inc_by(status.failures - previous.failures);
        }
        if status.repairs > previous.repairs {
            self.repairs.inc_by(status.repairs - previous.repairs);
        }
        if status.last_success == previous.last_success {
            return;
        }
        if let Some((kind, took)) = status.last_sync {
            let seconds = took.as_secs_f64();
            match kind {
                SyncKind::Full => self.sync_full_duration.observe(seconds),
                SyncKind::Partial => self.sync_partial_duration.observe(seconds),
                SyncKind::Skipped => {}
            }
            if kind != SyncKind::Skipped {
                self.sync_duration.observe(seconds);
            }
        }
        let now = SystemTime::now();
        self.last_sync_timestamp.set(unix_seconds(now));
        let triggers = std::mem::take(
            &mut *self
                .trigger_times
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for trigger in triggers {
            if let Ok(latency) = now.duration_since(trigger) {
                self.network_programming.observe(latency.as_secs_f64());
            }
        }
        let (mut internal, mut external) = (0, 0);
        for (_, port_state) in state.iter() {
            let port = &port_state.port;
            if !(port.internal_policy_local || port.external_policy_local) {
                continue;
            }
            let selected = select_endpoints(port, &port_state.endpoints, state.node(), None);
            if selected.local.is_empty() && selected.has_any_endpoints {
                internal += i64::from(port.internal_policy_local);
                external += i64::from(port.external_policy_local);
            }
        }
        self.no_local_endpoints
            .get_or_create(&TrafficPolicy {
                traffic_policy: "internal".into(),
            })
            .set(internal);
        self.no_local_endpoints
            .get_or_create(&TrafficPolicy {
                traffic_policy: "external".into(),
            })
            .set(external);
    }

    /// The text exposition of every metric, process metrics included.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return String::new();
        }
        let process = self.process_metrics();
        match text.rfind("# EOF") {
            Some(at) => text.insert_str(at, &process),
            None => text.push_str(&process),
        }
        text
    }

    fn process_metrics(&self) -> String {
        let mut out = String::new();
        // OpenMetrics names a counter's family without `_total` and its sample with it.
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n"
            ));
        };
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            unix_seconds(self.started),
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |field: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib("VmRSS:") * 1024.0,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            kib("VmSize:") * 1024.0,
        );
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds as f64,
        );
        if let Some(cpu) = cpu_seconds() {
            metric(
                "process_cpu_seconds",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu,
            );
        }
        out
    }
}

/// User plus system CPU time from `/proc/self/stat` (fields 14 and 15, in clock ticks of
/// 1/100 s on Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parses the RFC 3339 timestamps Kubernetes writes (`2024-01-02T03:04:05Z`, optionally with
/// fractional seconds and a numeric offset).
pub(crate) fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    value
        .trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_parse() {
        let t = parse_rfc3339("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_704_164_645
        );
        let t = parse_rfc3339("2024-01-02T04:04:05.5+01:00").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_millis(),
            1_704_164_645_500
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn exposition_uses_upstream_names() {
        let metrics = Metrics::new(kproxy_dataplanes::Mode::Nftables);
        metrics.endpoint_changes.inc();
        let text = metrics.encode();
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_network_programming_duration_seconds",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "kubeproxy_rs_sync_repairs_total",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
