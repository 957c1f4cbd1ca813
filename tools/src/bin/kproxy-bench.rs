//! `kproxy-bench --backend nft --services N --endpoints E`: programs N Services × E endpoints
//! into a fresh network namespace with a real kernel and prints one JSON object per
//! measurement: the full sync, single-endpoint changes, single-Service additions, the size of
//! the resulting ruleset and the process's peak RSS.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use kproxy_core::{
    ConversionOptions, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig, ServiceChangeTracker,
};
use kproxy_objects::synthetic::{service, slice};
use kproxy_rig::NetNs;

/// Measures a backend's sync times at cluster scale, with a real kernel in a throwaway
/// network namespace.
#[derive(Debug, Parser)]
#[command(name = "kproxy-bench")]
struct Args {
    /// The backend to measure.
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
}

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

fn emit(args: &Args, measurement: &str, fields: &[(&str, String)]) {
    let mut line = format!(
        "{{\"backend\":\"{}\",\"services\":{},\"endpoints_per_service\":{},\"measurement\":\"{measurement}\"",
        kproxy_tools::factory(&args.backend, None)
            .map(|f| f.mode().to_owned())
            .unwrap_or_else(|_| args.backend.clone()),
        args.services,
        args.endpoints
    );
    for (key, value) in fields {
        line.push_str(&format!(",\"{key}\":{value}"));
    }
    line.push('}');
    println!("{line}");
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
    let mut dataplane = factory.build(&config, node_ns.name())?;
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
        .map_err(|e| kproxy_rig::Error::Backend(format!("full sync failed: {e:?}")))?;
    let full_sync_ms = millis(started.elapsed());
    emit(
        args,
        "full_sync",
        &[
            ("full_sync_ms", full_sync_ms.to_string()),
            ("tracker_load_ms", tracker_ms.to_string()),
            ("rss_after_tracker_mb", rss_after_tracker.to_string()),
            ("rss_after_full_sync_mb", rss_mb().to_string()),
            ("peak_rss_mb", peak_rss_mb().to_string()),
        ],
    );

    let mut endpoint_samples = Vec::new();
    for round in 0..args.repeats {
        let target = (round * 7_919) % args.services;
        tracker.upsert_endpoint_slice(&slice(target, args.endpoints, round + 1));
        let started = Instant::now();
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| kproxy_rig::Error::Backend(format!("sync failed: {e:?}")))?;
        endpoint_samples.push(millis(started.elapsed()));
        // Put it back so every round changes exactly one endpoint of a settled cluster.
        tracker.upsert_endpoint_slice(&slice(target, args.endpoints, 0));
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| kproxy_rig::Error::Backend(format!("sync failed: {e:?}")))?;
    }
    emit(
        args,
        "incremental_endpoint",
        &[
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
        ],
    );

    let mut service_samples = Vec::new();
    for round in 0..args.repeats {
        let i = args.services + round;
        tracker.upsert_service(&service(i));
        tracker.upsert_endpoint_slice(&slice(i, args.endpoints, 0));
        let started = Instant::now();
        let changes = tracker.drain();
        dataplane
            .sync(&tracker.state(), &changes)
            .await
            .map_err(|e| kproxy_rig::Error::Backend(format!("sync failed: {e:?}")))?;
        service_samples.push(millis(started.elapsed()));
    }
    emit(
        args,
        "incremental_service_add",
        &[
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
        ],
    );

    let listing = node_ns
        .exec("nft", &["list", "ruleset"], None)
        .unwrap_or_default();
    let chains = listing
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .count();
    emit(
        args,
        "ruleset",
        &[
            ("ruleset_lines", listing.lines().count().to_string()),
            ("chains", chains.to_string()),
            ("peak_rss_mb", peak_rss_mb().to_string()),
        ],
    );
    Ok(())
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
