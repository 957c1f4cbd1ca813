//! kube-proxy-rs: watches Services, EndpointSlices and this node, and programs the kernel.
//! Thin: parse options, set up logging, wire, and map errors to exit codes (2 for bad flags or
//! configuration, before anything is programmed; 1 for failures at run time).

mod app;
mod health;
mod metrics;
mod netns;
mod options;
mod sysctl;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::app::RunSettings;
use kproxy_dataplanes::Mode;

use crate::options::{LogFormat, Options, Outcome};

fn main() -> ExitCode {
    let (options, warnings) = match options::load(std::env::args_os()) {
        Ok(Outcome::Run { options, warnings }) => (options, warnings),
        Ok(Outcome::WroteConfig { path }) => {
            println!("wrote the configuration to {}", path.display());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("kube-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    // Before any thread exists, so every thread, socket and `nft` child lives there.
    if let Some(netns) = &options.netns
        && let Err(error) = netns::enter(netns)
    {
        eprintln!("kube-proxy: cannot enter network namespace {netns}: {error}");
        return ExitCode::FAILURE;
    }
    init_logging(&options);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    if options.init_only {
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kube-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Validation already refused the modes this build lacks; the facade says so again here.
    let mode = match options.mode.as_str().parse::<Mode>() {
        Ok(mode) => mode,
        Err(error) => {
            eprintln!("kube-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    let settings = settings(&options, mode);
    if !options.cleanup {
        sysctl::apply_conntrack(&options.conntrack);
        // Like upstream: the proxy is among the last processes the OOM killer picks.
        if let Err(error) = std::fs::write(
            "/proc/self/oom_score_adj",
            options.oom_score_adj.to_string(),
        ) {
            tracing::warn!(%error, "cannot set oom_score_adj");
        }
    }
    let result = runtime.block_on(async {
        if options.cleanup {
            app::cleanup().await
        } else {
            tracing::info!(node = %settings.node_name, mode = %settings.mode, "starting kube-proxy-rs");
            app::run(settings, shutdown_signal()).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kube-proxy failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(options: &Options) {
    let level = match options.logging.verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match options.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The node name: `--hostname-override`, else the host name, lower-cased as upstream does.
fn node_name(options: &Options) -> String {
    options.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    })
}

fn settings(options: &Options, mode: Mode) -> RunSettings {
    RunSettings {
        node_name: node_name(options),
        kubeconfig: options.kubeconfig.clone(),
        master: options.master.clone(),
        manifests: options.manifests.clone(),
        healthz: options.healthz_bind_address,
        metrics: options.metrics_bind_address,
        bind_address_hard_fail: options.bind_address_hard_fail,
        mode,
        proxy: options.proxy_config(),
        reconciler: options.reconciler_config(),
    }
}

/// Completes on SIGTERM or SIGINT; the rules stay in place.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
