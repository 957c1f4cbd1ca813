//! `kproxy-bench --backend nft --services N --endpoints E`: programs N Services × E endpoints
//! into a fresh network namespace with a real kernel and prints one JSON object per
//! measurement: the full sync, single-endpoint changes, single-Service additions, bulk partial
//! syncs (`--bulk`: 2,000 Services created, the endpoints of 3,000 Services changed, 2,000
//! Services deleted, one Service with 5,000 ports; each one drain and one `sync`, reported
//! with its ratio to the full sync), the size of the resulting ruleset and the process's peak
//! RSS.
//!
//! `--backend` takes what `kproxy-scenario` takes: `nft`, `iptables` (the variant detected in
//! the fresh namespace, so nft), `iptables-nft`, `iptables-legacy`, `ipvs` (a kernel with
//! IPVS only, as the UML guest's), or `none`. Every line names the mode
//! (`"backend":"iptables"`) and, in iptables and ipvs mode, the variant measured or written
//! the helper rules with (`"iptables_variant":"legacy"`); the ruleset is listed with that
//! variant's save tool (in ipvs mode: the helper rules only).
//!
//! In ipvs mode each line of a measured sync also gives what it sent to the kernel (the
//! backend's sync report): `ipvs_requests` (netlink messages), `set_updates` (single ipset
//! entries), `address_changes` (on `kube-ipvs0`), `tool_runs` and `netlink_bytes` (every
//! netlink request written, IPVS, ipset and rtnetlink together); for the single-change
//! measurements, one value per sample, in order.
//!
//! A failed bulk sync is reported (on stderr with its whole cause chain, and as a JSON line
//! with `"ok":false`), the dataplane is brought back with a full sync as the reconciler would,
//! the remaining measurements still run, and the process exits non-zero at the end.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use kproxy_conformance::ModeSettings;
use kproxy_core::{
    ConversionOptions, Dataplane, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig,
    ServiceChangeTracker,
};
use kproxy_dataplanes::{IptablesVariant, IpvsReports, Mode};
use kproxy_objects::synthetic::{service, service_with_ports, slice, slice_with_ports};
use kproxy_rig::NetNs;

/// Measures a backend's sync times at cluster scale, with a real kernel in a throwaway
/// network namespace.
#[derive(Debug, Parser)]
#[command(name = "kproxy-bench")]
struct Args {
    /// The backend to measure: `nft`, `iptables` (variant detected: nft in a fresh
    /// namespace), `iptables-nft`, `iptables-legacy`, `ipvs` (a kernel with IPVS only), or
    /// `none`.
    #[arg(long, default_value = "nft")]
    backend: String,
    /// How many Services (one TCP port each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// How many single-change syncs to time.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Whether to time the bulk partial syncs (`--bulk=false` skips them).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    bulk: bool,
    /// Skips the final ruleset listing (`nft list ruleset`, or the variant's `iptables-save`;
    /// slow on large clusters); the final line then only reports the peak RSS.
    #[arg(
        long,
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    skip_ruleset_listing: bool,
}

/// Services created (then deleted) by the bulk measurements.
const BULK_SERVICES: usize = 2_000;
/// Services whose endpoints the bulk endpoint measurement changes (at most the cluster's).
const BULK_ENDPOINT_SERVICES: usize = 3_000;
/// Ports of the many-ports Service: `10000..15000`, named `p0` … `p4999`.
const MANY_PORTS: std::ops::Range<i32> = 10_000..15_000;

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

/// Peak resident memory so far (`VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Current resident memory (`VmRSS`), in MB.
fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 * 10.0).round() / 10.0
}

/// An error and every cause under it, `outer: inner: innermost`, each said once.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    kproxy_core::with_causes(error.to_string(), error.source())
}

fn sync_failed(what: &str, error: &kproxy_core::DataplaneError) -> kproxy_rig::Error {
    kproxy_rig::Error::Backend(format!("{what} failed: {}", chain(error)))
}

/// The namespace and name of a synthetic object.
fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Fails when the tracker could not convert a synthetic object cleanly (a bug of this tool).
fn check_converted(what: &str, errors: Vec<kproxy_core::ModelError>) -> kproxy_rig::Result<()> {
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(kproxy_rig::Error::World(format!(
            "{what}: {} conversion errors, the first: {first}",
            errors.len()
        ))),
    }
}

/// One bulk measurement: drains `tracker` once, applies the change set with one `sync` and
/// prints its time and ratio to the full sync. On failure prints the error and restores the
/// dataplane with a full sync; returns whether the sync succeeded.
async fn bulk_sync(
    args: &Args,
    measurement: &str,
    touched_services: usize,
    tracker: &mut ServiceChangeTracker,
    dataplane: &mut dyn Dataplane,
    full_sync: Duration,
) -> kproxy_rig::Result<bool> {
    let started = Instant::now();
    let changes = tracker.drain();
    let drain = started.elapsed();
    let state = tracker.state();
    let started = Instant::now();
    let result = dataplane.sync(&state, &changes).await;
    let sync = started.elapsed();
    let mut fields = vec![("ok", result.is_ok().to_string())];
    if result.is_ok() {
        let ratio = (sync.as_secs_f64() / full_sync.as_secs_f64() * 10_000.0).round() / 10_000.0;
        fields.push(("sync_ms", millis(sync).to_string()));
        // `null` if the full sync took no measurable time (the recording backend).
        let ratio = if ratio.is_finite() {
            ratio.to_string()
        } else {
            "null".to_owned()
        };
        fields.push(("ratio_to_full_sync", ratio));
    } else {
        // Not a sync time: how long the backend took to give up.
        fields.push(("failed_after_ms", millis(sync).to_string()));
    }
    fields.extend([
        ("drain_ms", millis(drain).to_string()),
        ("touched_services", touched_services.to_string()),
        ("changed_service_ports", changes.len().to_string()),
    ]);
    let Err(error) = result else {
        fields.extend(last_sync_fields());
        fields.push(("rss_mb", rss_mb().to_string()));
        emit(args, measurement, &fields);
        return Ok(true);
    };
    let message = chain(&error);
    eprintln!("kproxy-bench: {measurement}: sync failed: {message}");
    fields.push(("error", serde_json::Value::String(message).to_string()));
    emit(args, measurement, &fields);
    // What the reconciler does after a failed sync; the next measurements start from a
    // dataplane that matches the tracker again.
    dataplane
        .full_sync(&state)
        .await
        .map_err(|e| sync_failed(&format!("full sync after the failed {measurement}"), &e))?;
    Ok(false)
}

/// The bulk partial syncs, in order; returns the names of those that failed.
async fn bulk(
    args: &Args,
    tracker: &mut ServiceChangeTracker,
    dataplane: &mut dyn Dataplane,
    full_sync: Duration,
) -> kproxy_rig::Result<Vec<&'static str>> {
    let mut failed = Vec::new();
    // Beyond the cluster and the incremental_service_add Services.
    let first_new = args.services + args.repeats;
    let created = first_new..first_new + BULK_SERVICES;

    for i in created.clone() {
        check_converted("bulk_create", tracker.upsert_service(&service(i)))?;
        check_converted(
            "bulk_create",
            tracker.upsert_endpoint_slice(&slice(i, args.endpoints, 0)),
        )?;
    }
    if !bulk_sync(
        args,
        "bulk_create",
        BULK_SERVICES,
        tracker,
        dataplane,
        full_sync,
    )
    .await?
    {
        failed.push("bulk_create");
    }

    // Every Service of the cluster is at generation 0 (incremental_endpoint put them back);
    // generation 1 makes endpoint 0 of each unready.
    let changed = BULK_ENDPOINT_SERVICES.min(args.services);
    for i in 0..changed {
        check_converted(
            "bulk_endpoints",
            tracker.upsert_endpoint_slice(&slice(i, args.endpoints, 1)),
        )?;
    }
    if !bulk_sync(
        args,
        "bulk_endpoints",
        changed,
        tracker,
        dataplane,
        full_sync,
    )
    .await?
    {
        failed.push("bulk_endpoints");
    }

    for i in created.clone() {
        let (namespace, name) = key_of(&service(i).metadata);
        tracker.delete_service(&namespace, &name);
        let (namespace, name) = key_of(&slice(i, args.endpoints, 0).metadata);
        tracker.delete_endpoint_slice(&namespace, &name);
    }
    if !bulk_sync(
        args,
        "bulk_delete",
        BULK_SERVICES,
        tracker,
        dataplane,
        full_sync,
    )
    .await?
    {
        failed.push("bulk_delete");
    }

    let ports: Vec<(String, i32)> = MANY_PORTS
        .enumerate()
        .map(|(k, port)| (format!("p{k}"), port))
        .collect();
    let i = created.end;
    check_converted(
        "many_ports",
        tracker.upsert_service(&service_with_ports(i, &ports)),
    )?;
    check_converted(
        "many_ports",
        tracker.upsert_endpoint_slice(&slice_with_ports(i, args.endpoints, &ports)),
    )?;
    if !bulk_sync(args, "many_ports", 1, tracker, dataplane, full_sync).await? {
        failed.push("many_ports");
    }
    Ok(failed)
}

/// ipvs mode: the reports of the dataplane's syncs; set once it is built.
static IPVS_REPORTS: OnceLock<IpvsReports> = OnceLock::new();

/// The figures of an ipvs-mode sync report, by name.
fn report_figures(report: &kproxy_dataplanes::IpvsSyncReport) -> [(&'static str, u64); 5] {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    [
        ("ipvs_requests", count(report.ipvs_requests)),
        ("set_updates", count(report.set_updates)),
        ("address_changes", count(report.address_changes)),
        ("tool_runs", count(report.tool_runs)),
        ("netlink_bytes", report.netlink_bytes),
    ]
}

/// ipvs mode: the fields of the last sync's report (none in other modes, or when the sync
/// failed).
fn last_sync_fields() -> Vec<(&'static str, String)> {
    let Some(report) = IPVS_REPORTS.get().and_then(IpvsReports::last) else {
        return Vec::new();
    };
    report_figures(&report)
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

/// ipvs mode: the reports of several measured syncs, one JSON array per figure.
#[derive(Debug, Default)]
struct SampleReports(Vec<kproxy_dataplanes::IpvsSyncReport>);

impl SampleReports {
    /// Records the last sync's report (ipvs mode only).
    fn record(&mut self) {
        if let Some(report) = IPVS_REPORTS.get().and_then(IpvsReports::last) {
            self.0.push(report);
        }
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        (0..4)
            .map(|figure| {
                let name = report_figures(&self.0[0])[figure].0;
                let values: Vec<String> = self
                    .0
                    .iter()
                    .map(|report| report_figures(report)[figure].1.to_string())
                    .collect();
                (name, format!("[{}]", values.join(",")))
            })
            .collect()
    }
}

/// What every line names the backend by: the mode, and in iptables mode the variant the
/// dataplane drives (forced by the backend name or detected); set once it is built.
static MEASURED: OnceLock<(String, Option<IptablesVariant>)> = OnceLock::new();

fn emit(args: &Args, measurement: &str, fields: &[(&str, String)]) {
    let (backend, variant) = MEASURED
        .get()
        .cloned()
        .unwrap_or_else(|| (args.backend.clone(), None));
    let mut line = format!("{{\"backend\":\"{backend}\"");
    if let Some(variant) = variant {
        line.push_str(&format!(",\"iptables_variant\":\"{variant}\""));
    }
    line.push_str(&format!(
        ",\"services\":{},\"endpoints_per_service\":{},\"measurement\":\"{measurement}\"",
        args.services, args.endpoints
    ));
    for (key, value) in fields {
        line.push_str(&format!(",\"{key}\":{value}"));
    }
    line.push('}');
    println!("{line}");
}

/// iptables mode: what the variant's `iptables-restore --noflush` costs for the smallest change
/// of the nat table (one rule into one chain, then taken out again, untimed), at this cluster's
/// size. A partial sync cannot be cheaper: the tool (legacy: reading and writing the whole
/// table) or the kernel (nft: validating the whole table on every commit) costs that much.
fn restore_floor(
    args: &Args,
    node_ns: &NetNs,
    variant: kproxy_dataplanes::IptablesVariant,
) -> kproxy_rig::Result<()> {
    let tool = format!("iptables-{variant}-restore");
    let add = "*nat\n:KUBE-PROXY-CANARY - [0:0]\n-A KUBE-PROXY-CANARY -j RETURN\nCOMMIT\n";
    let clear = "*nat\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n";
    let mut samples = Vec::new();
    for _ in 0..args.repeats.max(1) {
        let started = Instant::now();
        node_ns.exec(&tool, &["--noflush", "-w", "5"], Some(add))?;
        samples.push(millis(started.elapsed()));
        node_ns.exec(&tool, &["--noflush", "-w", "5"], Some(clear))?;
    }
    emit(
        args,
        "restore_floor",
        &[
            ("restore_ms", median(samples.clone()).to_string()),
            ("samples", samples.len().to_string()),
            (
                "what",
                "\"one rule into one nat chain with the variant's iptables-restore --noflush\""
                    .to_owned(),
            ),
        ],
    );
    Ok(())
}

async fn run(args: &Args) -> kproxy_rig::Result<()> {
    let factory = kproxy_tools::factory(&args.backend, None)?;
    factory.preflight()?;
    let node_ns = NetNs::new("bench")?;
    let config = ProxyConfig {
        ip_families: vec![IpFamily::V4],
        local_detector: LocalTrafficDetector::ClusterCidr(vec![
            "10.0.0.0/8".parse().expect("literal CIDR"),
        ]),
        service_cidrs: vec!["172.16.0.0/12".parse().expect("literal CIDR")],
        ..ProxyConfig::default()
    };
    let (mut dataplane, variant) = match args.backend.as_str() {
        "none" | "recording" => (factory.build(&config, node_ns.name())?, None),
        name => {
            let built = kproxy_tools::ModeFactory::from_name(name, None)?.build_reporting(
                &config,
                &ModeSettings::default(),
                node_ns.name(),
            )?;
            if let Some(reports) = built.ipvs_reports {
                let _ = IPVS_REPORTS.set(reports);
            }
            (built.dataplane, built.iptables_variant)
        }
    };
    let _ = MEASURED.set((factory.mode().to_owned(), variant));
    let mut tracker =
        ServiceChangeTracker::new(NodeInfo::named("node-0"), ConversionOptions::default());

    let started = Instant::now();
    for i in 0..args.services {
        tracker.upsert_service(&service(i));
        tracker.upsert_endpoint_slice(&slice(i, args.endpoints, 0));
    }
    tracker.drain();
    let tracker_ms = millis(started.elapsed());
    let rss_after_tracker = rss_mb();

    let started = Instant::now();
    dataplane
        .full_sync(&tracker.state())
        .await
        .map_err(|e| sync_failed("full sync", &e))?;
    let full_sync = started.elapsed();
    let full_sync_ms = millis(full_sync);
    let mut fields = vec![
        ("full_sync_ms", full_sync_ms.to_string()),
        ("tracker_load_ms", tracker_ms.to_string()),
        ("rss_after_tracker_mb", rss_after_tracker.to_string()),
        ("rss_after_full_sync_mb", rss_mb().to_string()),
        ("peak_rss_mb", peak_rss_mb().to_string()),
    ];
    fields.extend(last_sync_fields());
    emit(args, "full_sync", &fields);

    // A second full sync, over the rules of the first: what a restart, a resync after a
    // failure or the periodic full sync costs.
    let started = Instant::now();
    dataplane
        .full_sync(&tracker.state())
        .await
        .map_err(|e| sync_failed("full sync over existing rules", &e))?;
    let mut fields = vec![("full_sync_ms", millis(started.elapsed()).to_string())];
    fields.extend(last_sync_fields());
    emit(args, "full_sync_over_existing", &fields);

    // The floor of an iptables-mode sync; the ipvs mode's helper rules change at full syncs
    // only.
    if let Some(variant) = variant.filter(|_| factory.mode() == Mode::Iptables.name()) {
        restore_floor(args, &node_ns, variant)?;
    }

    let mut endpoint_samples = Vec::new();
    let mut endpoint_reports = SampleReports::default();
    for round in 0..args.repeats {
        let target = (round * 7_919) % args.services;
        // Generation 1 takes the first endpoint out of the rotation (not ready); every round
        // targets another Service, so every sample is a real one-endpoint change (with
        // `round + 1` every second round was a no-op: even generations equal generation 0).
        tracker.upsert_endpoint_slice(&slice(target, args.endpoints, 1));
        let started = Instant::now();
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| sync_failed("sync", &e))?;
        endpoint_samples.push(millis(started.elapsed()));
        endpoint_reports.record();
        // Put it back so every round changes exactly one endpoint of a settled cluster.
        tracker.upsert_endpoint_slice(&slice(target, args.endpoints, 0));
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| sync_failed("sync", &e))?;
    }
    let mut fields = vec![
        (
            "incremental_sync_ms",
            median(endpoint_samples.clone()).to_string(),
        ),
        (
            "incremental_sync_max_ms",
            endpoint_samples
                .iter()
                .copied()
                .fold(0.0, f64::max)
                .to_string(),
        ),
        ("samples", endpoint_samples.len().to_string()),
    ];
    fields.extend(endpoint_reports.fields());
    emit(args, "incremental_endpoint", &fields);

    let mut service_samples = Vec::new();
    let mut service_reports = SampleReports::default();
    for round in 0..args.repeats {
        let i = args.services + round;
        tracker.upsert_service(&service(i));
        tracker.upsert_endpoint_slice(&slice(i, args.endpoints, 0));
        let started = Instant::now();
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| sync_failed("sync", &e))?;
        service_samples.push(millis(started.elapsed()));
        service_reports.record();
    }
    let mut fields = vec![
        (
            "incremental_service_add_ms",
            median(service_samples.clone()).to_string(),
        ),
        (
            "incremental_service_add_max_ms",
            service_samples
                .iter()
                .copied()
                .fold(0.0, f64::max)
                .to_string(),
        ),
        ("samples", service_samples.len().to_string()),
    ];
    fields.extend(service_reports.fields());
    emit(args, "incremental_service_add", &fields);

    let failed = if args.bulk {
        bulk(args, &mut tracker, dataplane.as_mut(), full_sync).await?
    } else {
        Vec::new()
    };

    if args.skip_ruleset_listing {
        emit(
            args,
            "peak_rss",
            &[("peak_rss_mb", peak_rss_mb().to_string())],
        );
    } else {
        // iptables: the variant's own listing (the legacy one's rules are not in nftables).
        let (tool, tool_args, chain_prefix) = match variant {
            Some(variant) => (format!("iptables-{variant}-save"), &[][..], ":"),
            None => ("nft".to_owned(), &["list", "ruleset"][..], "chain "),
        };
        let listing = node_ns.exec(&tool, tool_args, None).unwrap_or_default();
        let chains = listing
            .lines()
            .filter(|l| l.trim_start().starts_with(chain_prefix))
            .count();
        let listed_with = format!("{tool} {}", tool_args.join(" "));
        emit(
            args,
            "ruleset",
            &[
                (
                    "listed_with",
                    serde_json::Value::String(listed_with.trim().to_owned()).to_string(),
                ),
                ("ruleset_lines", listing.lines().count().to_string()),
                ("chains", chains.to_string()),
                ("peak_rss_mb", peak_rss_mb().to_string()),
            ],
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(kproxy_rig::Error::Backend(format!(
            "bulk syncs failed: {} (errors above)",
            failed.join(", ")
        )))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kproxy-bench: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kproxy-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
