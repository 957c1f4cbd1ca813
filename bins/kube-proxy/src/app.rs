//! Wires the proxy together: a source feeds the tracker, the reconciler drives the mode's
//! dataplane (built through the facade), and the health and metrics servers report on both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kproxy_core::{
    ConversionOptions, NodeInfo, ProxyConfig, Readiness, Reconciler, ReconcilerConfig,
    ServiceChangeTracker, SyncStatus, TrackerHandle,
};
use kproxy_dataplanes::{Mode, ModeOptions, Target};

use crate::health::{ProxyHealth, ServiceHealthServers};
use crate::metrics::Metrics;
use kproxy_conntrack::ConntrackCleaning;
use kproxy_kube::{KubeReady, KubeSource, READINESS_SOURCES};
use kproxy_manifests::{Sink, SourceObserver};

/// Everything the proxy needs to run, resolved from flags and the config file.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    /// This node's name (`--hostname-override` or the host name).
    pub(crate) node_name: String,
    /// `--kubeconfig`.
    pub(crate) kubeconfig: Option<PathBuf>,
    /// `--master`.
    pub(crate) master: Option<String>,
    /// `--manifests`: read objects from files instead of an API server.
    pub(crate) manifests: Option<PathBuf>,
    /// Where `/healthz` and `/livez` listen; `None` disables them.
    pub(crate) healthz: Option<SocketAddr>,
    /// Where `/metrics` listens; `None` disables it.
    pub(crate) metrics: Option<SocketAddr>,
    /// Fail when a server cannot bind, instead of logging it.
    pub(crate) bind_address_hard_fail: bool,
    /// The conntrack settings to apply once the inputs are known to be usable.
    pub(crate) conntrack: crate::options::ConntrackOptions,
    /// Whose kernel settings the proxy may change (`--netns`: only that namespace's).
    pub(crate) settings_scope: crate::sysctl::Scope,
    /// The proxy mode.
    pub(crate) mode: Mode,
    /// The settings of that mode only (`localhostNodePorts`, the iptables variant).
    pub(crate) mode_options: ModeOptions,
    /// The dataplane's settings.
    pub(crate) proxy: ProxyConfig,
    /// The sync loop's settings.
    pub(crate) reconciler: ReconcilerConfig,
}

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// No usable Kubernetes client configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(String),
    /// A server could not bind its address (with `--bind-address-hard-fail`).
    #[error("cannot listen on {address} for {what}: {source}")]
    Bind {
        /// The server.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifests could not be read.
    #[error(transparent)]
    Manifests(#[from] kproxy_manifests::ManifestError),
    /// `--cleanup` could not remove everything.
    #[error("cleanup failed: {0}")]
    Cleanup(#[source] kproxy_dataplanes::Error),
    /// The mode's dataplane cannot run here (its preflight check failed); nothing was
    /// programmed.
    #[error("cannot run the {mode} mode: {source}")]
    Dataplane {
        /// The mode.
        mode: Mode,
        /// Why.
        #[source]
        source: kproxy_dataplanes::Error,
    },
}

/// Removes everything any mode of this proxy (or upstream's) left in this namespace.
pub(crate) async fn cleanup() -> Result<(), AppError> {
    let report = kproxy_dataplanes::cleanup(&Target::Current)
        .await
        .map_err(AppError::Cleanup)?;
    for removed in &report.removed {
        tracing::info!("removed {removed}");
    }
    for skipped in &report.skipped {
        tracing::debug!("skipped {skipped}");
    }
    tracing::info!("cleanup done: {report}");
    Ok(())
}

/// How long a server waits before it tries its address again, as upstream's health and
/// metrics servers do.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// Serves `router` on `address` for as long as the proxy runs. When the address is busy (or
/// the server stops) it tries again every [`BIND_RETRY`], as upstream does; with
/// `--bind-address-hard-fail` a first bind failure is an error instead.
async fn serve(
    what: &'static str,
    address: SocketAddr,
    router: Router,
    hard_fail: bool,
) -> Result<(), AppError> {
    let first = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => Some(listener),
        Err(source) if hard_fail => {
            return Err(AppError::Bind {
                what,
                address,
                source,
            });
        }
        Err(error) => {
            tracing::error!(%address, %error, "cannot listen for {what}; trying again every {} s", BIND_RETRY.as_secs());
            None
        }
    };
    tokio::spawn(async move {
        let mut listener = first;
        loop {
            let bound = match listener.take() {
                Some(bound) => bound,
                None => {
                    tokio::time::sleep(BIND_RETRY).await;
                    match tokio::net::TcpListener::bind(address).await {
                        Ok(bound) => {
                            tracing::info!(%address, "listening for {what}");
                            bound
                        }
                        Err(error) => {
                            tracing::debug!(%address, %error, "still cannot listen for {what}");
                            continue;
                        }
                    }
                }
            };
            if let Err(error) = axum::serve(bound, router.clone()).await {
                tracing::error!(%address, %error, "the {what} server stopped; starting it again in {} s", BIND_RETRY.as_secs());
            }
        }
    });
    Ok(())
}

/// The client and its server's URL (for the source's logs).
async fn kube_client(settings: &RunSettings) -> Result<(kube::Client, String), AppError> {
    let error = |e: &dyn std::fmt::Display| AppError::KubeConfig(e.to_string());
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| error(&e))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| error(&e))?
        }
        None if settings.master.is_some() => {
            kube::Config::new("http://localhost".parse().map_err(|e| error(&e))?)
        }
        None => kube::Config::infer().await.map_err(|e| error(&e))?,
    };
    if let Some(master) = &settings.master {
        config.cluster_url = master.parse().map_err(|e| error(&e))?;
    }
    let server = config.cluster_url.to_string();
    Ok((
        kube::Client::try_from(config).map_err(|e| error(&e))?,
        server,
    ))
}

/// Runs the proxy until `shutdown` completes; the rules stay in place afterwards.
pub(crate) async fn run(
    settings: RunSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    // Before any source or server starts: a mode that cannot run here stops the proxy with
    // one clear error instead of a loop of failed syncs.
    let built = kproxy_dataplanes::build_with(
        settings.mode,
        &settings.proxy,
        &settings.mode_options,
        &Target::Current,
    )
    .map_err(|source| AppError::Dataplane {
        mode: settings.mode,
        source,
    })?;
    let metrics = Arc::new(Metrics::new(
        settings.mode,
        &settings.proxy.ip_families,
        built.iptables_stats.clone(),
    ));
    let dataplane = built.dataplane;
    let handle = TrackerHandle::new(ServiceChangeTracker::new(
        NodeInfo::named(settings.node_name.clone()),
        ConversionOptions::default(),
    ));
    let kube = match &settings.manifests {
        Some(_) => None,
        None => Some(kube_client(&settings).await?),
    };
    // The manifests are read once before anything starts: unreadable ones are an error, not
    // an empty cluster.
    let manifests = match &settings.manifests {
        Some(path) => Some((path.clone(), kproxy_manifests::read(path)?)),
        None => None,
    };
    // Only now that the mode can run and the inputs are readable, as upstream: a proxy that
    // cannot start changes nothing.
    crate::sysctl::apply_conntrack(&settings.conntrack, settings.settings_scope);
    let source_names: &[&str] = if manifests.is_some() {
        &["manifests"]
    } else {
        &READINESS_SOURCES
    };
    let (readiness, mut tokens) = Readiness::with_sources(source_names.iter().copied());
    let dataplane = ConntrackCleaning::new(dataplane);
    let mut reconciler = Reconciler::new(
        handle.clone(),
        Box::new(dataplane),
        readiness,
        settings.reconciler.clone(),
    );
    {
        let metrics = Arc::clone(&metrics);
        reconciler.on_sync(move |report| metrics.observe_attempt(report));
    }
    let status = reconciler.status();
    let health = ProxyHealth::new(
        handle.clone(),
        status.clone(),
        settings.reconciler.sync_period * 2,
        Arc::clone(&metrics),
    );

    if let Some(address) = settings.healthz {
        serve(
            "health checks",
            address,
            health.clone().router(),
            settings.bind_address_hard_fail,
        )
        .await?;
    }
    if let Some(address) = settings.metrics {
        let metrics = Arc::clone(&metrics);
        let router = Router::new().route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        );
        serve("metrics", address, router, settings.bind_address_hard_fail).await?;
    }

    let sink = Sink::new(
        handle.clone(),
        Arc::new(Observer {
            metrics: Arc::clone(&metrics),
            health: health.clone(),
        }),
    );
    let source = match (manifests, kube) {
        (Some((path, initial)), _) => {
            let ready = tokens.remove(0);
            tokio::spawn(
                async move { kproxy_manifests::run(vec![path], initial, sink, ready).await },
            )
        }
        (None, Some((client, server))) => {
            let Some(ready) = KubeReady::from_tokens(tokens) else {
                return Err(AppError::KubeConfig(
                    "the API-server source needs three readiness tokens".into(),
                ));
            };
            let source = KubeSource::new(client, settings.node_name.clone()).with_server(server);
            tokio::spawn(async move { source.run(sink, ready).await })
        }
        (None, None) => {
            return Err(AppError::KubeConfig(
                "no manifests and no API server".into(),
            ));
        }
    };

    let observer = tokio::spawn(observe(
        status,
        handle,
        Arc::clone(&metrics),
        ServiceHealthServers::new(std::net::Ipv6Addr::UNSPECIFIED.into(), health),
    ));
    let dataplane = reconciler.run(shutdown).await;
    source.abort();
    observer.abort();
    tracing::info!(
        dataplane = dataplane.name(),
        "shutting down; rules stay in place"
    );
    Ok(())
}

/// What the sources tell the binary: metrics, and this node's Node for the health checks.
struct Observer {
    metrics: Arc<Metrics>,
    health: ProxyHealth,
}

impl SourceObserver for Observer {
    fn invalid_field(&self, error: &kproxy_core::ModelError) {
        self.metrics.record_invalid(error);
    }

    fn service_changed(&self) {
        self.metrics.service_changes.inc();
        self.metrics.sync_queued();
    }

    fn endpoint_slice_changed(&self) {
        self.metrics.endpoint_changes.inc();
        self.metrics.sync_queued();
    }

    fn endpoint_slice_trigger_time(&self, family: kproxy_core::IpFamily, value: &str) {
        self.metrics.note_trigger_time(family, value);
    }

    fn watch_error(&self, _: &str, _: &dyn std::error::Error) {
        self.metrics.watch_errors.inc();
    }

    fn this_node(&self, node: &k8s_openapi::api::core::v1::Node) {
        self.health.observe_node(node);
    }
}

/// After sync attempts: the gauges of the programmed state, and health-check node ports for
/// it. Coalescing is right here (each describes the latest state); the per-attempt metrics are
/// counted by the reconciler's `on_sync` callback, which sees every attempt.
async fn observe(
    mut status: tokio::sync::watch::Receiver<SyncStatus>,
    handle: TrackerHandle,
    metrics: Arc<Metrics>,
    mut service_health: ServiceHealthServers,
) {
    let mut previous = status.borrow().clone();
    loop {
        if status.changed().await.is_err() {
            return;
        }
        let current = status.borrow_and_update().clone();
        let state = handle.lock().state();
        metrics
            .changes_pending
            .set(i64::try_from(handle.lock().pending()).unwrap_or(i64::MAX));
        if current.last_success != previous.last_success {
            metrics.observe_state(&state);
            service_health.sync(&state).await;
        }
        previous = current;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
