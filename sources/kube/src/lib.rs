//! Kubernetes API source for kube-proxy-rs: kube-runtime watchers of Services, EndpointSlices,
//! ServiceCIDRs and this node's Node, feeding the change tracker, reusable by CNIs that bring
//! their own dataplane.
//!
//! - Services and EndpointSlices are watched with upstream kube-proxy's label selector
//!   ([`PROXY_SELECTOR`]: not those of alternative proxies, not headless Services).
//! - The Node is watched with a field selector on this node's name.
//! - ServiceCIDRs are optional: a cluster that does not serve them (404, before 1.33) stops
//!   that watcher, and they never hold back readiness.
//! - A watcher that loses its connection or gets `410 Gone` backs off and re-lists; the
//!   re-list replaces what it had (objects that vanished meanwhile are deleted) while the
//!   rules already programmed stay in place. The backoff is upstream's (0.8 s doubling to
//!   30 s, with jitter, reset by progress), and each failure is one warning
//!   naming the server ([`KubeSource::with_server`]) and the whole chain of causes.
//! - When this node's Node is not in a complete list (or is deleted), one warning says so
//!   ([`Sink::this_node_missing`]); again only if it goes missing again after it was seen.
//! - Each of the three required watchers marks its [`SourceReady`] token at the end of its
//!   first complete list ([`READINESS_SOURCES`] names them for
//!   [`Readiness::with_sources`](kproxy_core::Readiness::with_sources)).
//!
//! Objects reach the tracker through a [`Sink`], which tells a [`SourceObserver`] (metrics,
//! health) about changes, bad fields, watch errors and this node's Node. Both are defined in
//! the light `kproxy-manifests` crate and re-exported here, so that the two sources share them
//! without the manifests source depending on `kube`.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, handle: kproxy_core::TrackerHandle) {
//! use kproxy_kube::{KubeReady, KubeSource, READINESS_SOURCES, Sink};
//!
//! let (readiness, tokens) = kproxy_core::Readiness::with_sources(READINESS_SOURCES);
//! let source = KubeSource::new(client, "node-a").with_server("https://10.0.0.1:6443");
//! let ready = KubeReady::from_tokens(tokens).expect("three tokens");
//! tokio::spawn(source.run(Sink::unobserved(handle), ready));
//! readiness.wait().await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kproxy_core::SourceReady;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub use kproxy_manifests::sink::{LAST_CHANGE_TRIGGER_TIME, Sink, SourceObserver};

/// Upstream's label selector for Services and EndpointSlices: skip those of alternative
/// proxies (`service.kubernetes.io/service-proxy-name`) and of headless Services.
pub const PROXY_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// The names of the readiness sources [`KubeSource::run`] marks, in [`KubeReady`]'s order.
pub const READINESS_SOURCES: [&str; 3] = ["services", "endpointslices", "node"];

/// The readiness tokens of the three required watchers.
#[derive(Debug)]
pub struct KubeReady {
    /// Marked when the first list of Services is done.
    pub services: SourceReady,
    /// Marked when the first list of EndpointSlices is done.
    pub endpoint_slices: SourceReady,
    /// Marked when the first list of this node's Node is done.
    pub node: SourceReady,
}

impl KubeReady {
    /// Takes the tokens in [`READINESS_SOURCES`] order (as
    /// [`Readiness::with_sources`](kproxy_core::Readiness::with_sources) returns them); `None`
    /// unless there are exactly three.
    pub fn from_tokens(tokens: Vec<SourceReady>) -> Option<Self> {
        let [services, endpoint_slices, node]: [SourceReady; 3] = tokens.try_into().ok()?;
        Some(Self {
            services,
            endpoint_slices,
            node,
        })
    }
}

/// How one kind of object is applied to the sink.
trait Kind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    fn upsert(sink: &Sink, object: &Self, known: &mut Known);
    fn delete(sink: &Sink, namespace: &str, name: &str, known: &mut Known);
    /// Called at the end of every complete list (the first one and every re-list).
    fn list_done(sink: &Sink, known: &Known) {
        let _ = (sink, known);
    }
}

/// What a watcher has applied, to delete what a re-list no longer returns.
#[derive(Default)]
struct Known {
    keys: BTreeSet<(String, String)>,
    service_cidrs: BTreeMap<String, Vec<IpNet>>,
}

fn key<K: Resource>(object: &K) -> (String, String) {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

impl Kind for Service {
    fn upsert(sink: &Sink, object: &Self, _: &mut Known) {
        sink.upsert_service(object);
    }
    fn delete(sink: &Sink, namespace: &str, name: &str, _: &mut Known) {
        sink.delete_service(namespace, name);
    }
}

impl Kind for EndpointSlice {
    fn upsert(sink: &Sink, object: &Self, _: &mut Known) {
        sink.upsert_endpoint_slice(object);
    }
    fn delete(sink: &Sink, namespace: &str, name: &str, _: &mut Known) {
        sink.delete_endpoint_slice(namespace, name);
    }
}

impl Kind for Node {
    fn upsert(sink: &Sink, object: &Self, _: &mut Known) {
        sink.upsert_node(object);
    }
    // A deleted Node keeps its last information; the proxy keeps running as upstream does.
    fn delete(sink: &Sink, _: &str, _: &str, _: &mut Known) {
        sink.this_node_missing("it was deleted; its last information stays in use");
    }
    // The watch selects this node's Node only, so an empty list means it does not exist.
    fn list_done(sink: &Sink, known: &Known) {
        if known.keys.is_empty() {
            sink.this_node_missing("the API server lists no Node of this name");
        }
    }
}

impl Kind for ServiceCIDR {
    fn upsert(sink: &Sink, object: &Self, known: &mut Known) {
        known
            .service_cidrs
            .insert(object.name_any(), service_cidrs(object));
        sink.set_service_cidrs(known.service_cidrs.values().flatten().copied().collect());
    }
    fn delete(sink: &Sink, _: &str, name: &str, known: &mut Known) {
        known.service_cidrs.remove(name);
        sink.set_service_cidrs(known.service_cidrs.values().flatten().copied().collect());
    }
}

/// A ServiceCIDR's `spec.cidrs`, read as upstream reads every CIDR (legacy spellings
/// included, see [`kproxy_core::convert::parse_cidr`]); an invalid one is logged and left out.
fn service_cidrs(object: &ServiceCIDR) -> Vec<IpNet> {
    object
        .spec
        .as_ref()
        .and_then(|spec| spec.cidrs.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|cidr| match kproxy_core::convert::parse_cidr(cidr) {
            Ok(net) => Some(net),
            Err(_) => {
                tracing::warn!(servicecidr = object.name_any(), %cidr, "ignoring an invalid CIDR");
                None
            }
        })
        .collect()
}

/// Whether a watch error says the API server does not serve this kind at all.
fn is_not_served(error: &watcher::Error) -> bool {
    let api_error = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(e))
        | watcher::Error::WatchStartFailed(kube::Error::Api(e)) => e,
        _ => return false,
    };
    api_error.code == 404
}

/// `error` and its causes on one line, each said once (many errors print their cause
/// themselves): `failed to perform initial object list: ... client error (Connect): tcp
/// connect error: Connection refused (os error 111)`.
fn cause_chain(error: &dyn std::error::Error) -> String {
    kproxy_core::with_causes(error.to_string(), error.source())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs one watcher until its stream ends (never, in practice): applies every event and marks
/// `ready` (if any) at the end of the first complete list. An `optional` kind that the API
/// server does not serve (404) stops its watcher instead of retrying forever.
///
/// # Recovery
///
/// After a failure the watcher waits as upstream's reflector does (kube-runtime's
/// [`DefaultBackoff`](watcher::DefaultBackoff): 0.8 s doubling to 30 s, with jitter) and logs
/// one warning naming `server` and the causes. The wait is reset by progress only (an object
/// listed or watched, a list done): kube-runtime's `default_backoff()` resets on any `Ok`,
/// and the watcher yields `Event::Init` before every list attempt, so against a server that
/// refuses connections it would retry about every second forever.
async fn watch<K: Kind>(
    api: Api<K>,
    config: watcher::Config,
    sink: Sink,
    ready: Option<SourceReady>,
    optional: bool,
    server: &str,
) {
    let kind = K::kind(&()).into_owned();
    let mut ready = ready;
    let mut known = Known::default();
    let mut listing: Option<BTreeSet<(String, String)>> = None;
    let mut backoff = watcher::DefaultBackoff::default();
    let stream = watcher::watcher(api, config);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if matches!(event, Ok(ref event) if !matches!(event, Event::Init)) {
            backoff.reset();
        }
        match event {
            Ok(Event::Apply(object)) => {
                known.keys.insert(key(&object));
                K::upsert(&sink, &object, &mut known);
            }
            Ok(Event::Delete(object)) => {
                let (namespace, name) = key(&object);
                known.keys.remove(&(namespace.clone(), name.clone()));
                K::delete(&sink, &namespace, &name, &mut known);
            }
            Ok(Event::Init) => listing = Some(BTreeSet::new()),
            Ok(Event::InitApply(object)) => {
                let object_key = key(&object);
                if let Some(listed) = listing.as_mut() {
                    listed.insert(object_key.clone());
                }
                known.keys.insert(object_key);
                K::upsert(&sink, &object, &mut known);
            }
            Ok(Event::InitDone) => {
                let listed = listing.take().unwrap_or_default();
                let vanished: Vec<(String, String)> =
                    known.keys.difference(&listed).cloned().collect();
                for (namespace, name) in vanished {
                    known.keys.remove(&(namespace.clone(), name.clone()));
                    K::delete(&sink, &namespace, &name, &mut known);
                }
                K::list_done(&sink, &known);
                if let Some(ready) = ready.take() {
                    tracing::info!(%kind, objects = known.keys.len(), "initial list done");
                    ready.mark_ready();
                }
            }
            Err(error) if optional && is_not_served(&error) => {
                tracing::info!(%kind, %server, "the API server does not serve this kind; not watching it");
                return;
            }
            Err(error) => {
                // DefaultBackoff never gives up; the fallback only keeps the type honest.
                let delay = backoff.next().unwrap_or(FALLBACK_DELAY);
                tracing::warn!(
                    retry_in = %format_args!("{:.1}s", delay.as_secs_f64()),
                    error = %cause_chain(&error),
                    "cannot watch {kind} on the API server {server}; retrying with backoff, rules stay in place"
                );
                sink.observer().watch_error(&kind, &error);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The wait should the backoff ever end: its ceiling, upstream's 30 s.
const FALLBACK_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// What [`KubeSource`] calls the server when it was not told its URL.
const UNKNOWN_SERVER: &str = "(URL not given)";

/// The four watchers of one node's proxy.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    node_name: String,
    /// The API server's URL, for logs.
    server: Option<String>,
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("node_name", &self.node_name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Watches through `client` for the proxy of node `node_name`. A `Client` does not tell
    /// its server's URL: give it with [`with_server`](Self::with_server), or build the source
    /// with [`from_config`](Self::from_config), so that failed watches name the server.
    pub fn new(client: Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
            server: None,
        }
    }

    /// Watches through a client made from `config` for the proxy of node `node_name`; failed
    /// watches name `config.cluster_url`.
    ///
    /// # Errors
    ///
    /// When `config` does not make a client (e.g. its TLS settings are unusable).
    pub fn from_config(
        config: kube::Config,
        node_name: impl Into<String>,
    ) -> Result<Self, kube::Error> {
        let server = config.cluster_url.to_string();
        Ok(Self::new(Client::try_from(config)?, node_name).with_server(server))
    }

    /// Names `server` (the client's cluster URL) in the logs of failed watches.
    pub fn with_server(mut self, server: impl std::fmt::Display) -> Self {
        self.server = Some(server.to_string());
        self
    }

    /// The field selector of this node's Node watch.
    pub fn node_selector(&self) -> String {
        format!("metadata.name={}", self.node_name)
    }

    /// Runs every watcher until the future is dropped. ServiceCIDRs are optional (clusters
    /// before 1.33 may not serve them), so they have no readiness token.
    pub async fn run(self, sink: Sink, ready: KubeReady) {
        let proxied = watcher::Config::default().labels(PROXY_SELECTOR);
        let this_node = watcher::Config::default().fields(&self.node_selector());
        let server = self.server.as_deref().unwrap_or(UNKNOWN_SERVER);
        tokio::join!(
            watch(
                Api::<Service>::all(self.client.clone()),
                proxied.clone(),
                sink.clone(),
                Some(ready.services),
                false,
                server
            ),
            watch(
                Api::<EndpointSlice>::all(self.client.clone()),
                proxied,
                sink.clone(),
                Some(ready.endpoint_slices),
                false,
                server
            ),
            watch(
                Api::<Node>::all(self.client.clone()),
                this_node,
                sink.clone(),
                Some(ready.node),
                false,
                server
            ),
            watch(
                Api::<ServiceCIDR>::all(self.client),
                watcher::Config::default(),
                sink,
                None,
                true,
                server
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn service_cidrs_written_the_legacy_way_are_read_as_decimal() {
        let object = ServiceCIDR {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                ..Default::default()
            },
            spec: Some(ServiceCIDRSpec {
                cidrs: Some(vec![
                    "10.096.000.000/012".into(),
                    "fd00:0:0:0::/108".into(),
                    "not-a-cidr".into(),
                ]),
            }),
            status: None,
        };
        assert_eq!(
            super::service_cidrs(&object),
            [
                "10.96.0.0/12".parse::<ipnet::IpNet>().unwrap(),
                "fd00::/108".parse().unwrap()
            ]
        );
    }
}
