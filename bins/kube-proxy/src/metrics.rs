//! Prometheus metrics with upstream kube-proxy's `kubeproxy_` names, plus process metrics and
//! a few of our own (`kubeproxy_rs_`), served as text on the metrics address. The
//! mode-specific ones are those of the mode that runs: its sync-failure counter, and in
//! iptables mode the rule counts and partial restore failures, read from the dataplane's
//! [`IptablesStats`] at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use kproxy_core::{
    IpFamily, ModelError, ObjectKind, ProxyState, SyncKind, SyncReport, select_endpoints,
};
use kproxy_dataplanes::{IptablesStats, IptablesTable};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

/// Upstream's `ip_family` label (`IPv4`, `IPv6`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FamilyLabel {
    ip_family: &'static str,
}

impl FamilyLabel {
    fn of(family: IpFamily) -> Self {
        Self {
            ip_family: match family {
                IpFamily::V4 => "IPv4",
                IpFamily::V6 => "IPv6",
            },
        }
    }
}

/// The `traffic_policy` and `ip_family` labels of the no-local-endpoints gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TrafficPolicy {
    traffic_policy: &'static str,
    ip_family: &'static str,
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

/// Upstream's `ip_family` and `table` labels of the iptables rule counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyTableLabel {
    ip_family: &'static str,
    table: &'static str,
}

/// The tables upstream counts rules in (`mangle` holds only the canary).
const COUNTED_TABLES: [IptablesTable; 2] = [IptablesTable::Filter, IptablesTable::Nat];

/// Upstream's iptables-mode metrics, read from the dataplane's counters at each scrape:
/// `kubeproxy_sync_proxy_rules_iptables_total{ip_family,table}` and
/// `..._iptables_last{ip_family,table}` (gauges) and
/// `..._iptables_partial_restore_failures_total{ip_family}` (a counter), for each family this
/// proxy programs. The restore failures counter is the mode's sync-failure counter, counted
/// per attempt with the others.
#[derive(Debug)]
struct IptablesCollector {
    stats: Arc<IptablesStats>,
    families: Vec<IpFamily>,
}

impl Collector for IptablesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        type Read = fn(&IptablesStats, IpFamily, IptablesTable) -> u64;
        let gauges: [(&str, &str, Read); 2] = [
            (
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy.",
                IptablesStats::rules_total,
            ),
            (
                "kubeproxy_sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync.",
                IptablesStats::rules_last,
            ),
        ];
        for (name, help, read) in gauges {
            let gauge = ConstGauge::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for &ip_family in &self.families {
                for table in COUNTED_TABLES {
                    ConstGauge::new(read(&self.stats, ip_family, table)).encode(
                        family.encode_family(&FamilyTableLabel {
                            ip_family: FamilyLabel::of(ip_family).ip_family,
                            table: table.name(),
                        })?,
                    )?;
                }
            }
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures.",
            None,
            counter.metric_type(),
        )?;
        for &ip_family in &self.families {
            ConstCounter::new(self.stats.partial_restore_failures(ip_family))
                .encode(family.encode_family(&FamilyLabel::of(ip_family))?)?;
        }
        Ok(())
    }
}

type ByFamily<M> = Family<FamilyLabel, M, fn() -> M>;

/// Every metric this proxy exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// The families this proxy programs: every sync programs all of them in one attempt, so
    /// each attempt is observed once per family, as upstream's per-family proxiers do.
    families: Vec<IpFamily>,
    sync_duration: ByFamily<Histogram>,
    sync_full_duration: ByFamily<Histogram>,
    sync_partial_duration: ByFamily<Histogram>,
    last_sync_timestamp: ByFamily<Gauge<f64, AtomicU64>>,
    last_queued_timestamp: ByFamily<Gauge<f64, AtomicU64>>,
    network_programming: ByFamily<Histogram>,
    pub(crate) endpoint_changes: Counter,
    pub(crate) service_changes: Counter,
    pub(crate) changes_pending: Gauge,
    no_local_endpoints: Family<TrafficPolicy, Gauge>,
    sync_failures: ByFamily<Counter>,
    repairs: Counter,
    healthz: Family<Code, Counter>,
    livez: Family<Code, Counter>,
    invalid_fields: Family<Kind, Counter>,
    pub(crate) watch_errors: Counter,
    trigger_times: Mutex<Vec<(IpFamily, SystemTime)>>,
    started: SystemTime,
}

fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Upstream's buckets: 0.25 s and 0.5 s, then every second to a minute, every 5 s to two
/// minutes, every 30 s to five.
fn network_programming_buckets() -> Histogram {
    Histogram::new(
        [0.25, 0.5]
            .into_iter()
            .chain(linear_buckets(1.0, 1.0, 59))
            .chain(linear_buckets(60.0, 5.0, 12))
            .chain(linear_buckets(120.0, 30.0, 7)),
    )
}

impl Metrics {
    /// The proxy's metrics; `mode` names its mode-specific ones, `families` are the ones it
    /// programs (each gets its `ip_family` series from the start), and `iptables` are the
    /// iptables dataplane's counters (in iptables mode), served at each scrape.
    pub(crate) fn new(
        mode: kproxy_dataplanes::Mode,
        families: &[IpFamily],
        iptables: Option<Arc<IptablesStats>>,
    ) -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            families: families.to_vec(),
            sync_duration: ByFamily::new_with_constructor(sync_buckets),
            sync_full_duration: ByFamily::new_with_constructor(sync_buckets),
            sync_partial_duration: ByFamily::new_with_constructor(sync_buckets),
            last_sync_timestamp: ByFamily::new_with_constructor(Gauge::default),
            last_queued_timestamp: ByFamily::new_with_constructor(Gauge::default),
            network_programming: ByFamily::new_with_constructor(network_programming_buckets),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            sync_failures: ByFamily::new_with_constructor(Counter::default),
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
        if let Some(stats) = iptables {
            registry.register_collector(Box::new(IptablesCollector {
                stats,
                families: families.to_vec(),
            }));
        }
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
        for family in families {
            let label = FamilyLabel::of(*family);
            // Present from the start, with zero counts, so a dashboard sees every series.
            for histogram in [
                &metrics.sync_duration,
                &metrics.sync_full_duration,
                &metrics.sync_partial_duration,
                &metrics.network_programming,
            ] {
                let _ = histogram.get_or_create(&label);
            }
            let _ = metrics.sync_failures.get_or_create(&label);
        }
        // As upstream at start: the first sync is queued.
        metrics.sync_queued();
        Self {
            registry,
            ..metrics
        }
    }

    /// Sets the last-queued timestamp: a change is waiting for a sync.
    pub(crate) fn sync_queued(&self) {
        let now = unix_seconds(SystemTime::now());
        for family in &self.families {
            self.last_queued_timestamp
                .get_or_create(&FamilyLabel::of(*family))
                .set(now);
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

    /// Remembers an EndpointSlice's `last-change-trigger-time`, observed under the slice's
    /// family once a sync has programmed it.
    ///
    /// Times from before this process started are ignored, as upstream does: the initial list
    /// and every re-list replay old annotations that say nothing about this proxy's latency.
    pub(crate) fn note_trigger_time(&self, family: IpFamily, value: &str) {
        if let Some(time) = parse_rfc3339(value).filter(|time| *time >= self.started) {
            self.trigger_times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((family, time));
        }
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

    /// Records one sync attempt, as upstream does for each: its duration (failed and idle
    /// attempts included; an idle one counts as partial, as upstream's periodic syncs do),
    /// a failure, or the time of a success and the programming latency of what it programmed.
    pub(crate) fn observe_attempt(&self, report: &SyncReport<'_>) {
        let seconds = report.took.as_secs_f64();
        let now = SystemTime::now();
        let triggers = match report.outcome {
            Ok(()) => std::mem::take(
                &mut *self
                    .trigger_times
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            ),
            Err(_) => Vec::new(),
        };
        if report.repair {
            self.repairs.inc();
        }
        for family in &self.families {
            let label = FamilyLabel::of(*family);
            self.sync_duration.get_or_create(&label).observe(seconds);
            match report.kind {
                SyncKind::Full => &self.sync_full_duration,
                SyncKind::Partial | SyncKind::Skipped => &self.sync_partial_duration,
            }
            .get_or_create(&label)
            .observe(seconds);
            match report.outcome {
                Ok(()) => {
                    self.last_sync_timestamp
                        .get_or_create(&label)
                        .set(unix_seconds(now));
                }
                Err(_) => {
                    self.sync_failures.get_or_create(&label).inc();
                }
            }
        }
        for (family, trigger) in triggers {
            if let Ok(latency) = now.duration_since(trigger) {
                self.network_programming
                    .get_or_create(&FamilyLabel::of(family))
                    .observe(latency.as_secs_f64());
            }
        }
    }

    /// Sets the gauges that describe the programmed state: services with a Local traffic
    /// policy whose endpoints are all elsewhere, per policy and family.
    pub(crate) fn observe_state(&self, state: &ProxyState) {
        for family in &self.families {
            let (mut internal, mut external) = (0, 0);
            for (_, port_state) in state.iter() {
                let port = &port_state.port;
                if !(port.internal_policy_local || port.external_policy_local)
                    || port.cluster_ip_of(*family).is_none()
                {
                    continue;
                }
                let selected =
                    select_endpoints(port, &port_state.endpoints, state.node(), Some(*family));
                if selected.local.is_empty() && selected.has_any_endpoints {
                    internal += i64::from(port.internal_policy_local);
                    external += i64::from(port.external_policy_local);
                }
            }
            let ip_family = FamilyLabel::of(*family).ip_family;
            for (traffic_policy, count) in [("internal", internal), ("external", external)] {
                self.no_local_endpoints
                    .get_or_create(&TrafficPolicy {
                        traffic_policy,
                        ip_family,
                    })
                    .set(count);
            }
        }
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

    /// The value of the sample `name{labels}` in an exposition.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    }

    #[test]
    fn every_attempt_is_observed_per_family_first_idle_failed_and_back_to_back() {
        let metrics = Metrics::new(
            kproxy_dataplanes::Mode::Nftables,
            &[IpFamily::V4, IpFamily::V6],
            None,
        );
        let before = metrics.encode();
        assert_eq!(
            sample(
                &before,
                "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"
            ),
            0.0,
            "every family's series exists before the first sync"
        );
        let refused = kproxy_core::DataplaneError::new("the kernel said no");
        let attempt = |kind, outcome| SyncReport {
            kind,
            took: std::time::Duration::from_millis(3),
            changed: 1,
            repair: false,
            outcome,
        };
        metrics.observe_attempt(&attempt(SyncKind::Full, Ok(())));
        metrics.observe_attempt(&attempt(SyncKind::Partial, Ok(())));
        metrics.observe_attempt(&attempt(SyncKind::Partial, Ok(())));
        metrics.observe_attempt(&attempt(SyncKind::Skipped, Ok(())));
        metrics.observe_attempt(&attempt(SyncKind::Partial, Err(&refused)));
        let text = metrics.encode();
        for family in ["IPv4", "IPv6"] {
            let series = |name: &str| format!("{name}{{ip_family=\"{family}\"}}");
            assert_eq!(
                sample(
                    &text,
                    &series("kubeproxy_sync_proxy_rules_duration_seconds_count")
                ),
                5.0
            );
            assert_eq!(
                sample(
                    &text,
                    &series("kubeproxy_sync_full_proxy_rules_duration_seconds_count")
                ),
                1.0
            );
            assert_eq!(
                sample(
                    &text,
                    &series("kubeproxy_sync_partial_proxy_rules_duration_seconds_count")
                ),
                4.0
            );
            assert_eq!(
                sample(
                    &text,
                    &series("kubeproxy_sync_proxy_rules_nftables_sync_failures_total")
                ),
                1.0
            );
            assert!(
                sample(
                    &text,
                    &series("kubeproxy_sync_proxy_rules_last_timestamp_seconds")
                ) > 0.0
            );
        }
    }

    #[test]
    fn programming_latency_is_observed_under_the_slice_family_once_synced() {
        let metrics = Metrics::new(
            kproxy_dataplanes::Mode::Nftables,
            &[IpFamily::V4, IpFamily::V6],
            None,
        );
        let just_now = jiff::Timestamp::now().to_string();
        metrics.note_trigger_time(IpFamily::V6, &just_now);
        metrics.note_trigger_time(IpFamily::V6, "2001-01-01T00:00:00Z");
        let count = "kubeproxy_network_programming_duration_seconds_count";
        let refused = kproxy_core::DataplaneError::new("no");
        let mut attempt = SyncReport {
            kind: SyncKind::Partial,
            took: std::time::Duration::from_millis(1),
            changed: 1,
            repair: false,
            outcome: Err(&refused),
        };
        metrics.observe_attempt(&attempt);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, &format!("{count}{{ip_family=\"IPv6\"}}")),
            0.0,
            "not programmed yet"
        );
        attempt.outcome = Ok(());
        metrics.observe_attempt(&attempt);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, &format!("{count}{{ip_family=\"IPv6\"}}")),
            1.0,
            "one observation: the old trigger time predates the process"
        );
        assert_eq!(
            sample(&text, &format!("{count}{{ip_family=\"IPv4\"}}")),
            0.0
        );
    }

    /// The metric names a book page mentions: words that start like ours or upstream's.
    fn names_in(text: &str) -> Vec<&str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("kubeproxy_") || word.starts_with("process_"))
            // A prefix that stands for a group (`kubeproxy_rs_*`).
            .filter(|word| !word.ends_with('_'))
            .collect()
    }

    /// The metric families (name, type) served in `mode`, every labelled one with a sample.
    fn families_served(mode: kproxy_dataplanes::Mode) -> Vec<(String, String)> {
        let stats = (mode == kproxy_dataplanes::Mode::Iptables).then(Arc::default);
        let metrics = Metrics::new(mode, &[IpFamily::V4], stats);
        metrics.observe_attempt(&SyncReport {
            kind: SyncKind::Full,
            took: std::time::Duration::from_millis(1),
            changed: 0,
            repair: false,
            outcome: Ok(()),
        });
        metrics.health_answered(false, 200);
        metrics.health_answered(true, 200);
        metrics.observe_state(&ProxyState::default());
        metrics
            .invalid_fields
            .get_or_create(&Kind {
                kind: "Service".to_owned(),
            })
            .inc();
        metrics
            .encode()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }

    /// Every name the book's pages give is served in some mode, with the suffixes the
    /// exposition gives it; the names the metrics chapter lists as not exported are served in
    /// no mode; and every family served in any mode is in the metrics chapter.
    #[test]
    fn the_book_names_exactly_the_metrics_served() {
        let mut families: Vec<(String, String)> = kproxy_dataplanes::Mode::ALL
            .iter()
            .flat_map(|mode| families_served(*mode))
            .collect();
        families.sort();
        families.dedup();
        let served = |name: &str| {
            families.iter().any(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["", "_total"],
                    "histogram" => &["", "_bucket", "_count", "_sum"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
            })
        };
        let book = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book/src");
        let mut pages = vec![book.join("introduction.md")];
        for dir in ["operators", "cni-authors"] {
            for entry in std::fs::read_dir(book.join(dir)).expect("the book's pages") {
                pages.push(entry.expect("a page").path());
            }
        }
        let chapter = std::fs::read_to_string(book.join("operators/metrics.md")).unwrap();
        let (exported, missing) = chapter
            .split_once("## Not exported yet")
            .expect("the metrics chapter lists what is not exported");
        for page in &pages {
            let content = std::fs::read_to_string(page).unwrap();
            let content = if page.ends_with("operators/metrics.md") {
                exported
            } else {
                content.as_str()
            };
            for name in names_in(content) {
                assert!(
                    served(name),
                    "{} names {name}, which is not served",
                    page.display()
                );
            }
        }
        for name in names_in(missing) {
            assert!(!served(name), "{name} is served but listed as not exported");
        }
        for (family, _) in &families {
            assert!(
                exported.contains(family.as_str()),
                "{family} is served but the metrics chapter does not name it"
            );
        }
    }

    /// The value of the sample `series` in `text`, `None` when it is not there.
    fn sample_of(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// iptables mode serves upstream's iptables metrics with upstream's names, types and
    /// labels, read from the dataplane's counters at each scrape; nftables mode does not.
    #[tokio::test]
    async fn iptables_mode_serves_upstreams_iptables_metrics() {
        use kproxy_core::{
            ConversionOptions, Dataplane, NodeInfo, ProxyConfig, ServiceChangeTracker,
        };
        use kproxy_iptables::{FakeIptables, IptablesConfig, IptablesDataplane};
        use kproxy_objects::synthetic::{service, slice};

        let kernel = FakeIptables::new();
        let mut dataplane = IptablesDataplane::new(
            ProxyConfig {
                ip_families: vec![IpFamily::V4],
                ..ProxyConfig::default()
            },
            IptablesConfig::default(),
            Box::new(kernel.clone()),
        );
        let metrics = Metrics::new(
            kproxy_dataplanes::Mode::Iptables,
            &[IpFamily::V4],
            Some(dataplane.stats()),
        );
        let before = metrics.encode();
        for (family, kind) in [
            ("kubeproxy_sync_proxy_rules_iptables_total", "gauge"),
            ("kubeproxy_sync_proxy_rules_iptables_last", "gauge"),
            (
                "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_iptables_restore_failures",
                "counter",
            ),
        ] {
            assert!(
                before.contains(&format!("# TYPE {family} {kind}\n")),
                "{family} {kind} in:\n{before}"
            );
        }
        assert!(before.contains(
            "# HELP kubeproxy_sync_proxy_rules_iptables_total Total number of iptables rules owned by kube-proxy."
        ));
        assert!(before.contains(
            "# HELP kubeproxy_sync_proxy_rules_iptables_restore_failures Cumulative proxy iptables restore failures."
        ));
        assert!(!before.contains("nftables"), "{before}");
        assert!(!before.contains("table=\"mangle\""), "{before}");
        let total = |table: &str| {
            sample_of(
                &metrics.encode(),
                &format!(
                    "kubeproxy_sync_proxy_rules_iptables_total{{ip_family=\"IPv4\",table=\"{table}\"}}"
                ),
            )
        };
        let last = |table: &str| {
            sample_of(
                &metrics.encode(),
                &format!(
                    "kubeproxy_sync_proxy_rules_iptables_last{{ip_family=\"IPv4\",table=\"{table}\"}}"
                ),
            )
        };
        assert_eq!(total("nat"), Some(0.0), "served before the first sync");
        assert_eq!(last("filter"), Some(0.0));

        let mut tracker =
            ServiceChangeTracker::new(NodeInfo::named("node-0"), ConversionOptions::default());
        tracker.upsert_service(&service(0));
        tracker.upsert_endpoint_slice(&slice(0, 3, 0));
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .expect("the first sync (full)");
        let nat = total("nat").expect("nat");
        assert!(nat > 0.0, "read at scrape time: {nat}");
        assert!(total("filter").expect("filter") > 0.0);
        assert!(
            last("nat").expect("nat") >= nat,
            "a full sync writes every rule it owns (and the jumps to them)"
        );

        // A partial restore the kernel refuses: one partial failure, one restore failure.
        tracker.upsert_endpoint_slice(&slice(0, 3, 1));
        let changes = tracker.drain();
        kernel.refuse_next_restore();
        let error = dataplane
            .sync(&tracker.state(), &changes)
            .await
            .expect_err("refused");
        metrics.observe_attempt(&SyncReport {
            kind: SyncKind::Partial,
            took: std::time::Duration::from_millis(1),
            changed: changes.len(),
            repair: false,
            outcome: Err(&error),
        });
        let text = metrics.encode();
        assert_eq!(
            sample_of(
                &text,
                "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample_of(
                &text,
                "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"}"
            ),
            Some(1.0),
            "{text}"
        );

        let nftables = Metrics::new(kproxy_dataplanes::Mode::Nftables, &[IpFamily::V4], None);
        let text = nftables.encode();
        assert!(!text.contains("iptables"), "{text}");
    }

    #[test]
    fn exposition_uses_upstream_names() {
        let metrics = Metrics::new(kproxy_dataplanes::Mode::Nftables, &[IpFamily::V4], None);
        metrics.endpoint_changes.inc();
        let text = metrics.encode();
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
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
