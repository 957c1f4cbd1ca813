//! kube-proxy-rs: watches Services, EndpointSlices and this node, and programs the kernel.
//! Thin: parse options, set up logging, wire, and map errors to exit codes: 1 for any error
//! (bad flags and configuration too, before anything is programmed), as upstream's.

mod app;
mod console;
mod health;
mod instance;
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
    console::ensure_standard_descriptors();
    let (options, warnings) = match options::load(std::env::args_os()) {
        Ok(Outcome::Run { options, warnings }) => (options, warnings),
        Ok(Outcome::WroteConfig { path }) => {
            // Not on standard output: `--write-config-to /dev/stdout > file` must give a file
            // that loads.
            console::say(format_args!(
                "kube-proxy: wrote the configuration to {}",
                path.display()
            ));
            return ExitCode::SUCCESS;
        }
        Ok(Outcome::Version(text)) => {
            console::print(&text);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            console::say(format_args!("kube-proxy: {error}"));
            return ExitCode::FAILURE;
        }
    };
    // Before any thread exists, so every thread, socket and `nft` child lives there.
    if let Some(netns) = &options.netns
        && let Err(error) = netns::enter(netns)
    {
        console::say(format_args!(
            "kube-proxy: cannot enter network namespace {netns}: {error}"
        ));
        return ExitCode::FAILURE;
    }
    init_logging(&options);
    let _instance = match instance::lock() {
        Ok(lock) => lock,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // Mode warnings say nothing about removing rules.
    if !options.cleanup {
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
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
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    // Every mode validation accepts is one of the facade's; a build without its feature says
    // so here.
    let mode = match options.mode.as_str().parse::<Mode>() {
        Ok(mode) => mode,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let settings = settings(&options, mode);
    if !options.cleanup {
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
            // Once, as upstream does when it creates the mode's proxier.
            if let Some(notice) = settings.mode.deprecation() {
                tracing::warn!(mode = %settings.mode, "{notice}");
            }
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

/// This proxy's own log targets: `-v` sets their level. Libraries (kube, hyper, rustls...)
/// stay at `warn`, as upstream's `-v` levels are its own; `RUST_LOG` replaces the whole filter.
const OWN_TARGETS: [&str; 10] = [
    "kube_proxy",
    "kproxy_core",
    "kproxy_kube",
    "kproxy_manifests",
    "kproxy_nft",
    "kproxy_iptables",
    "kproxy_ipvs",
    "kproxy_dataplanes",
    "kproxy_netlink",
    "kproxy_conntrack",
];

/// The log filter for `-v=verbosity`: 0-1 info, 2-3 debug, 4 and more trace.
fn log_filter(verbosity: u32) -> String {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    std::iter::once("warn".to_owned())
        // kube's HTTP layer logs every failed request at `error` ("failed with error client
        // error (Connect)", no server, no cause); the watchers log the same failure once,
        // naming the server and the cause, so it would be a second record per retry.
        .chain(std::iter::once(
            "kube_client::client::builder=off".to_owned(),
        ))
        .chain(OWN_TARGETS.iter().map(|target| format!("{target}={level}")))
        .collect::<Vec<_>>()
        .join(",")
}

fn init_logging(options: &Options) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(log_filter(options.logging.verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only for a person at a terminal: `kubectl logs` shows escape codes raw.
        .with_ansi(std::io::stderr().is_terminal())
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
        conntrack: options.conntrack.clone(),
        settings_scope: if options.netns.is_some() {
            sysctl::Scope::NamespaceOnly
        } else {
            sysctl::Scope::Machine
        },
        mode,
        mode_options: options.mode_options(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_raises_only_this_proxys_own_targets() {
        let filter = log_filter(2);
        assert!(filter.starts_with("warn,"), "{filter}");
        for target in OWN_TARGETS {
            assert!(filter.contains(&format!("{target}=debug")), "{filter}");
        }
        assert!(!filter.contains(",kube="), "{filter}");
        assert!(!filter.contains("hyper"), "{filter}");
        assert!(
            filter.contains(",kube_client::client::builder=off,"),
            "{filter}"
        );
        assert!(log_filter(0).contains("kproxy_nft=info"));
        assert!(log_filter(5).contains("kproxy_nft=trace"));
        assert!(log_filter(0).contains("kproxy_iptables=info"));
        // Every crate's target in this workspace is listed: a new crate must be added here.
        EnvFilter::try_new(log_filter(4)).expect("a valid filter");
    }
}
