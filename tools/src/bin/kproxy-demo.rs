//! `kproxy-demo --kube-proxy PATH MANIFESTS`: builds a throwaway world of network namespaces
//! from example manifests (a node, the Services' endpoint pods, a client pod and an external
//! client), runs kube-proxy on the node with `--manifests`, sends traffic to every Service's
//! cluster IP and node port, prints how it spread over the pods, then stops kube-proxy with
//! SIGTERM and removes everything. `--proxy-mode iptables` (with `--iptables-variant`) runs
//! kube-proxy in iptables mode, `--proxy-mode ipvs` in IPVS mode (its helper rules take the
//! same variant flag; it needs a kernel with IPVS, e.g. the test guest); the default is
//! nftables.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::Protocol;
// The demo reads the objects as the proxy does, legacy spellings included, so its pods and
// probes sit at the addresses the proxy programs.
use kproxy_core::convert::parse_ip;
use kproxy_rig::probe::{self, Outcome, Probe};
use kproxy_rig::process::{METRICS_ADDRESS, ProxyProcess, http_get, test_args};
use kproxy_rig::{Error, Result, World, WorldSpec};

/// Runs kube-proxy on example manifests in a world of network namespaces.
#[derive(Debug, Parser)]
#[command(name = "kproxy-demo")]
struct Args {
    /// The kube-proxy binary.
    #[arg(long)]
    kube_proxy: PathBuf,
    /// Requests per destination.
    #[arg(long, default_value_t = 60)]
    requests: usize,
    /// kube-proxy's `--proxy-mode`: nftables, iptables or ipvs.
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// In iptables and IPVS mode, kube-proxy's `--iptables-variant`: auto, nft or legacy.
    #[arg(long, default_value = "auto")]
    iptables_variant: String,
    /// A manifests file or directory (Services, EndpointSlices, a Node).
    manifests: PathBuf,
}

const CLIENT_POD: &str = "10.244.1.100";
const EXTERNAL_CLIENT: &str = "203.0.113.7";

#[derive(Debug, Default)]
struct Cluster {
    node_name: String,
    node_ip: Option<IpAddr>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

/// The demo's cluster, read by the same reader as the binary's `--manifests`.
fn read(path: &Path) -> Result<Cluster> {
    let manifests = kproxy_manifests::read(path)
        .map_err(|e| Error::World(format!("{}: {e}", path.display())))?;
    let mut cluster = Cluster {
        services: manifests.services.into_values().collect(),
        slices: manifests.slices.into_values().collect(),
        ..Cluster::default()
    };
    if let Some((name, node)) = manifests.nodes.into_iter().next() {
        cluster.node_name = name;
        cluster.node_ip = node
            .status
            .and_then(|s| s.addresses)
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| parse_ip(&a.address).ok());
    }
    Ok(cluster)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

async fn run(args: &Args) -> Result<()> {
    let cluster = read(&args.manifests)?;
    let node_ip = cluster
        .node_ip
        .ok_or_else(|| Error::World("the manifests need a Node with an InternalIP".into()))?;
    let mut spec = WorldSpec::new(BTreeMap::from([(
        "eth0".to_owned(),
        vec![ipnet::IpNet::new(node_ip, 24).map_err(|e| Error::World(e.to_string()))?],
    )]));
    spec.pod_networks = vec![
        "10.244.0.0/16"
            .parse()
            .map_err(|_| Error::World("bad CIDR".into()))?,
    ];
    for slice in &cluster.slices {
        for port in slice.ports.iter().flatten() {
            let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if let Some(address) = endpoint.addresses.first().and_then(|a| parse_ip(a).ok()) {
                    spec.endpoint(address, number, Protocol::Tcp);
                }
            }
        }
    }
    let mut destinations = Vec::new();
    for service in &cluster.services {
        let name = format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref().unwrap_or_default()
        );
        let Some(spec_) = &service.spec else { continue };
        for port in spec_.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            if let Some(cluster_ip) = spec_.cluster_ip.as_deref().and_then(|ip| parse_ip(ip).ok()) {
                destinations.push((
                    format!("{name} cluster IP"),
                    Probe::tcp(ip(CLIENT_POD), cluster_ip, number),
                ));
            }
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                destinations.push((
                    format!("{name} node port"),
                    Probe::tcp(ip(EXTERNAL_CLIENT), node_ip, node_port),
                ));
            }
        }
    }
    for (_, probe) in &destinations {
        spec.probe(probe);
    }
    println!(
        "building the world: node {} ({node_ip}), {} endpoint pods, a client pod, an external client",
        cluster.node_name,
        spec.endpoints.len()
    );
    let world = World::build(spec).await?;
    let log = std::env::temp_dir().join(format!("kproxy-demo-{}.log", std::process::id()));
    let manifests = args.manifests.display().to_string();
    let mut source = vec![
        "--manifests",
        manifests.as_str(),
        "--proxy-mode",
        args.proxy_mode.as_str(),
    ];
    if args.proxy_mode == "iptables" || args.proxy_mode == "ipvs" {
        source.extend(["--iptables-variant", args.iptables_variant.as_str()]);
    }
    let proxy = ProxyProcess::start(
        &args.kube_proxy,
        world.node(),
        &test_args(&cluster.node_name, "10.244.0.0/16", &source),
        Some(&log),
    )?;
    println!(
        "kube-proxy running in {} mode in namespace {} (log: {})",
        args.proxy_mode,
        world.node_netns(),
        log.display()
    );
    proxy
        .wait_healthy(world.node(), Duration::from_secs(20))
        .await?;
    println!("healthz: 200");
    proxy
        .wait_synced(world.node(), Duration::from_secs(30))
        .await?;
    if let Ok(text) = std::fs::read_to_string(&log)
        && let Some(line) = text.lines().find(|l| l.contains("iptables mode: using"))
    {
        // The variant kube-proxy picked, and why.
        let why = line
            .split_once("iptables mode: ")
            .map_or(line, |(_, rest)| rest);
        // Without the structured field that follows the message.
        let why = why
            .rsplit_once(" variant=")
            .map_or(why, |(message, _)| message);
        println!("kube-proxy: {why}");
    }
    println!();
    for (what, probe) in &destinations {
        let mut hits: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..args.requests {
            let outcome = probe::send(&world, probe, Duration::from_secs(2)).await;
            let label = match outcome {
                Outcome::Reply(reply) if reply.kind == "endpoint" => {
                    let masq = if reply.peer.ip() == probe.src {
                        "source kept"
                    } else {
                        "masqueraded"
                    };
                    format!("pod {} ({masq})", reply.local)
                }
                Outcome::Reply(reply) => format!("{} {} (not proxied)", reply.role, reply.local),
                Outcome::Refused(why) => format!("REJECT ({why})"),
                Outcome::Dropped(why) => format!("DROP ({why})"),
                Outcome::Error(why) => format!("error: {why}"),
            };
            *hits.entry(label).or_default() += 1;
        }
        println!(
            "{what}: {} requests from {} to {}:{}",
            args.requests, probe.src, probe.dst, probe.dport
        );
        for (label, count) in hits {
            println!("  {count:>4} × {label}");
        }
    }
    if let Ok((_, metrics)) = http_get(world.node(), METRICS_ADDRESS, "/metrics") {
        let syncs: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_count")
                    || l.starts_with("kubeproxy_sync_proxy_rules_iptables_total")
            })
            .collect();
        println!("\nmetrics: {}", syncs.join(", "));
    }
    let status = proxy.stop(Duration::from_secs(10)).await?;
    println!("kube-proxy stopped on SIGTERM: {status}; removing the namespaces");
    drop(world);
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
            eprintln!("kproxy-demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kproxy-demo: {error}");
            ExitCode::FAILURE
        }
    }
}
