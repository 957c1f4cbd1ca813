//! `kproxy-e2e-bench --kube-proxy PATH --services N --endpoints E`: the whole proxy, measured
//! through the API-server stand-in. Loads N Services × E endpoints into the stand-in inside a
//! fresh network namespace, starts the real kube-proxy there, and prints one JSON object per
//! measurement: start to first full sync, network programming latency of single endpoint
//! changes (with `minSyncPeriod: 0`), and kube-proxy's peak RSS.
//!
//! `--proxy-mode iptables` (with `--iptables-variant nft|legacy`, default `auto`) runs
//! kube-proxy in iptables mode; every line names the mode (and the variant flag).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_apiserver::ApiServer;
use kproxy_objects::synthetic::{self, service};
use kproxy_rig::process::{METRICS_ADDRESS, ProxyProcess, http_get, test_args};
use kproxy_rig::{Error, NetNs, Result};

/// Measures kube-proxy end to end against the API-server stand-in.
#[derive(Debug, Parser)]
#[command(name = "kproxy-e2e-bench")]
struct Args {
    /// The kube-proxy binary.
    #[arg(long)]
    kube_proxy: PathBuf,
    /// How many Services.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// How many single-endpoint changes to time.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// After the single changes, bulk churn through the API server: 2,000 Services created,
    /// the endpoints of 3,000 changed, 2,000 deleted; each waited for, with the peak RSS.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    bulk: bool,
    /// kube-proxy's `--proxy-mode`: nftables or iptables.
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// In iptables mode, kube-proxy's `--iptables-variant`: auto, nft or legacy.
    #[arg(long, default_value = "auto")]
    iptables_variant: String,
}

impl Args {
    /// The flags that pick kube-proxy's mode (the variant only in iptables mode, where it
    /// applies).
    fn mode_flags(&self) -> Vec<&str> {
        let mut flags = vec!["--proxy-mode", self.proxy_mode.as_str()];
        if self.proxy_mode == "iptables" {
            flags.extend(["--iptables-variant", self.iptables_variant.as_str()]);
        }
        flags
    }

    /// The JSON fields that name what was measured: the mode, and the variant flag.
    fn label(&self) -> String {
        let mut label = format!("\"proxy_mode\":\"{}\"", self.proxy_mode);
        if self.proxy_mode == "iptables" {
            label.push_str(&format!(
                ",\"iptables_variant\":\"{}\"",
                self.iptables_variant
            ));
        }
        label
    }
}

/// Waits until kube-proxy reports a sync that finished after `since` (seconds since the
/// epoch) and returns how long after `since` it finished.
async fn synced_after(ns: &NetNs, metrics: SocketAddr, since: f64, what: &str) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(done) = last_sync(ns, metrics)
            && done >= since
        {
            return Ok(done - since);
        }
        if Instant::now() > deadline {
            return Err(Error::World(format!(
                "{what} was not programmed within 120 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Bulk churn through the API server; one line per step with kube-proxy's peak RSS so far.
async fn bulk(args: &Args, ns: &NetNs, server: &ApiServer, pid: u32) -> Result<()> {
    let first_new = args.services + 1_000;
    let steps: [(&str, usize); 3] = [
        ("bulk_create_2000", 2_000),
        ("bulk_endpoints_3000", 3_000.min(args.services)),
        ("bulk_delete_2000", 2_000),
    ];
    for (measurement, count) in steps {
        let since = epoch_seconds();
        for n in 0..count {
            match measurement {
                "bulk_create_2000" => {
                    server.create(&service(first_new + n))?;
                    server.create(&slice(first_new + n, args.endpoints, 0))?;
                }
                "bulk_endpoints_3000" => {
                    server.update(&slice(n, args.endpoints, 1_001))?;
                }
                _ => {
                    let i = first_new + n;
                    let namespace = format!("ns-{}", i % 100);
                    server.delete::<Service>(Some(&namespace), &format!("svc-{i}"))?;
                    server.delete::<EndpointSlice>(Some(&namespace), &format!("svc-{i}-abcde"))?;
                }
            }
        }
        let took = synced_after(ns, METRICS_ADDRESS, epoch_seconds(), measurement).await?;
        println!(
            "{{{},\"measurement\":\"{measurement}\",\"services\":{},\"endpoints_per_service\":{},\"seconds_from_first_write\":{:.3},\"after_last_write_s\":{took:.3},\"kube_proxy_peak_rss_mb\":{}}}",
            args.label(),
            args.services,
            args.endpoints,
            epoch_seconds() - since,
            peak_rss_mb(pid)
        );
    }
    Ok(())
}

/// The synthetic slice of Service `i`, stamped with the change's trigger time as the
/// EndpointSlice controller does.
fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let mut slice = synthetic::slice(i, endpoints, generation);
    slice.metadata.annotations = Some(BTreeMap::from([(
        "endpoints.kubernetes.io/last-change-trigger-time".to_owned(),
        rfc3339_now(),
    )]));
    slice
}

/// Now, as RFC 3339 with nanoseconds (the annotation's format).
fn rfc3339_now() -> String {
    jiff::Timestamp::now().to_string()
}

/// The last successful sync's timestamp from kube-proxy's metrics, in seconds since the epoch.
fn last_sync(ns: &NetNs, metrics: SocketAddr) -> Option<f64> {
    let (_, text) = http_get(ns, metrics, "/metrics").ok()?;
    text.lines()
        .filter(|l| l.starts_with("kubeproxy_sync_proxy_rules_last_timestamp_seconds"))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
        .filter(|v: &f64| *v > 0.0)
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 * 10.0).round() / 10.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn run(args: &Args) -> Result<()> {
    let ns = NetNs::new("e2ebench")?;
    let server = ApiServer::start_in(&ns, SocketAddr::from(([127, 0, 0, 1], 6443))).await?;
    server.set_bookmark_interval(Duration::from_secs(5));
    server.create(&Node {
        metadata: ObjectMeta {
            name: Some("node-0".into()),
            ..Default::default()
        },
        ..Default::default()
    })?;
    for i in 0..args.services {
        server.create(&service(i))?;
        server.create(&slice(i, args.endpoints, 0))?;
    }
    let dir = std::env::temp_dir().join(format!("kproxy-e2e-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("temp dir", e))?;
    let kubeconfig = dir.join("kubeconfig");
    server.kubeconfig(&kubeconfig)?;
    let metrics = METRICS_ADDRESS;
    let kubeconfig_arg = kubeconfig.display().to_string();
    let mut source = vec!["--kubeconfig", kubeconfig_arg.as_str()];
    source.extend(args.mode_flags());
    let args_for_proxy = test_args("node-0", "10.0.0.0/8", &source);
    let started = Instant::now();
    let proxy = ProxyProcess::start(
        &args.kube_proxy,
        &ns,
        &args_for_proxy,
        Some(&dir.join("kube-proxy.log")),
    )?;
    let pid = proxy.id().unwrap_or(0);
    let first_sync = loop {
        if last_sync(&ns, metrics).is_some() {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(Error::World("no sync within 300 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "{{{},\"measurement\":\"start_to_first_full_sync\",\"services\":{},\"endpoints_per_service\":{},\"seconds\":{:.3}}}",
        args.label(),
        args.services,
        args.endpoints,
        first_sync.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    for round in 0..args.changes {
        let target = (round * 7_919) % args.services;
        let before = last_sync(&ns, metrics).unwrap_or(0.0);
        let changed_at = SystemTime::now();
        let at = changed_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        server.update(&slice(target, args.endpoints, round + 1))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(done) = last_sync(&ns, metrics)
                && done > before
                && done >= at
            {
                latencies.push(((done - at) * 1000.0).max(0.0));
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::World(format!(
                    "change {round} was not programmed within 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "{{{},\"measurement\":\"network_programming_latency_ms\",\"services\":{},\"endpoints_per_service\":{},\"changes\":{},\"p50\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}",
        args.label(),
        args.services,
        args.endpoints,
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!(
        "{{{},\"measurement\":\"kube_proxy_peak_rss_mb\",\"value\":{}}}",
        args.label(),
        peak_rss_mb(pid)
    );
    if args.bulk {
        bulk(args, &ns, &server, pid).await?;
    }
    proxy.stop(Duration::from_secs(10)).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kproxy-e2e-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kproxy-e2e-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
