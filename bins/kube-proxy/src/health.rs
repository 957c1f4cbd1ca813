//! Health checks, as upstream serves them:
//! - `/healthz` and `/livez` on the healthz address: 200 while no change has waited longer
//!   than twice the sync period to be programmed, else 503; `/healthz` also answers 503 when
//!   this node is being deleted or drained by the cluster autoscaler;
//! - one health-check node port per LoadBalancer Service with `externalTrafficPolicy: Local`:
//!   200 with the number of local endpoints when this node has any, else 503. Listeners open
//!   and close as Services change.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Node;
use kproxy_core::{NamespacedName, ProxyState, SyncStatus, TrackerHandle, select_endpoints};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The taint the cluster autoscaler puts on nodes it is about to remove.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// What `/healthz` and `/livez` answer from.
#[derive(Clone)]
pub(crate) struct ProxyHealth {
    pub(crate) handle: TrackerHandle,
    pub(crate) status: watch::Receiver<SyncStatus>,
    pub(crate) timeout: Duration,
    pub(crate) node_eligible: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    started: SystemTime,
    started_instant: tokio::time::Instant,
}

impl ProxyHealth {
    /// Health judged with `timeout` (upstream uses twice the sync period).
    pub(crate) fn new(
        handle: TrackerHandle,
        status: watch::Receiver<SyncStatus>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            handle,
            status,
            timeout,
            node_eligible: Arc::new(AtomicBool::new(true)),
            metrics,
            started: SystemTime::now(),
            started_instant: tokio::time::Instant::now(),
        }
    }

    /// Whether the proxy keeps up: no unprogrammed change older than the timeout.
    pub(crate) fn is_healthy(&self) -> bool {
        self.handle
            .oldest_pending()
            .is_none_or(|since| since.elapsed() < self.timeout)
    }

    fn last_updated(&self) -> SystemTime {
        match self.status.borrow().last_success {
            Some(at) => self.started + at.duration_since(self.started_instant),
            None => self.started,
        }
    }

    /// Notes whether this node may receive load-balancer traffic.
    pub(crate) fn observe_node(&self, node: &Node) {
        let deleting = node.metadata.deletion_timestamp.is_some();
        let draining = node
            .spec
            .as_ref()
            .and_then(|spec| spec.taints.as_ref())
            .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
        self.node_eligible
            .store(!deleting && !draining, Ordering::Relaxed);
    }

    fn answer(&self, livez: bool) -> Response {
        let healthy = self.is_healthy();
        let eligible = self.node_eligible.load(Ordering::Relaxed);
        let ok = healthy && (livez || eligible);
        let mut body = serde_json::json!({
            "lastUpdated": rfc3339(self.last_updated()),
            "currentTime": rfc3339(SystemTime::now()),
        });
        if !livez {
            body["nodeEligible"] = serde_json::Value::Bool(eligible);
        }
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        self.metrics.health_answered(livez, code.as_u16());
        json_response(code, &body)
    }

    /// The router of the healthz address.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route(
                "/healthz",
                get(|State(h): State<ProxyHealth>| async move { h.answer(false) }),
            )
            .route(
                "/livez",
                get(|State(h): State<ProxyHealth>| async move { h.answer(true) }),
            )
            .with_state(self)
    }
}

fn json_response(code: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// RFC 3339 with nanoseconds, as Kubernetes writes timestamps.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// One Service's health-check answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceHealth {
    service: NamespacedName,
    local_endpoints: usize,
}

/// The health-check node ports: one listener per port, answering from shared counts.
pub(crate) struct ServiceHealthServers {
    bind: std::net::IpAddr,
    counts: Arc<RwLock<HashMap<u16, ServiceHealth>>>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
    proxy: ProxyHealth,
}

impl ServiceHealthServers {
    /// Listeners will bind `bind` (`::` for every address of both families).
    pub(crate) fn new(bind: std::net::IpAddr, proxy: ProxyHealth) -> Self {
        Self {
            bind,
            counts: Arc::default(),
            listeners: BTreeMap::new(),
            proxy,
        }
    }

    /// The health-check ports `state` asks for, with their local endpoint counts.
    fn desired(state: &ProxyState) -> BTreeMap<u16, ServiceHealth> {
        let mut desired = BTreeMap::new();
        for (name, port_state) in state.iter() {
            let Some(port) = port_state.port.health_check_node_port else {
                continue;
            };
            let selected =
                select_endpoints(&port_state.port, &port_state.endpoints, state.node(), None);
            let local = selected
                .local
                .iter()
                .filter(|e| e.ready && e.serving)
                .count();
            let entry = desired.entry(port).or_insert(ServiceHealth {
                service: name.service(),
                local_endpoints: 0,
            });
            entry.local_endpoints = entry.local_endpoints.max(local);
        }
        desired
    }

    /// Opens, updates and closes listeners to match `state`.
    pub(crate) async fn sync(&mut self, state: &ProxyState) {
        let desired = Self::desired(state);
        *self
            .counts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = desired
            .iter()
            .map(|(port, health)| (*port, health.clone()))
            .collect();
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(task) = self.listeners.remove(&port) {
                task.abort();
                tracing::info!(port, "closed health-check node port");
            }
        }
        for (port, health) in desired {
            if self.listeners.contains_key(&port) {
                continue;
            }
            let address = SocketAddr::new(self.bind, port);
            // `[::]` answers IPv4 too (unless the host sets bindv6only); a host without IPv6
            // falls back to `0.0.0.0`.
            let bound = match tokio::net::TcpListener::bind(address).await {
                Err(_) if self.bind == std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED) => {
                    tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
                }
                other => other,
            };
            match bound {
                Ok(listener) => {
                    let router = self.router(port);
                    self.listeners.insert(
                        port,
                        tokio::spawn(async move {
                            if let Err(error) = axum::serve(listener, router).await {
                                tracing::warn!(port, %error, "health-check node port stopped");
                            }
                        }),
                    );
                    tracing::info!(port, service = %health.service, "opened health-check node port");
                }
                Err(error) => tracing::error!(port, %error, "cannot open health-check node port"),
            }
        }
    }

    fn router(&self, port: u16) -> Router {
        let counts = Arc::clone(&self.counts);
        let proxy = self.proxy.clone();
        Router::new().fallback(move || {
            let counts = Arc::clone(&counts);
            let proxy = proxy.clone();
            async move {
                let health = counts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&port).cloned();
                let Some(health) = health else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                let healthy = proxy.is_healthy();
                let ok = health.local_endpoints > 0 && healthy;
                let body = serde_json::json!({
                    "service": { "namespace": health.service.namespace, "name": health.service.name },
                    "localEndpoints": health.local_endpoints,
                    "serviceProxyHealthy": healthy,
                });
                let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                let mut response = json_response(code, &body);
                if let Ok(weight) = HeaderValue::from_str(&health.local_endpoints.to_string()) {
                    response.headers_mut().insert("X-Load-Balancing-Endpoint-Weight", weight);
                }
                response
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        assert_eq!(rfc3339(time), "2024-01-02T03:04:05Z");
    }
}
