//! The API-server source: kube-runtime watchers for Services, EndpointSlices, ServiceCIDRs and
//! this node's Node, with upstream kube-proxy's label selectors.
//!
//! A watcher that loses its connection or gets `410 Gone` backs off and re-lists; the re-list
//! replaces what it had (objects that vanished meanwhile are deleted) while the rules already
//! in the kernel stay in place.

use std::collections::BTreeSet;
use std::fmt::Debug;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kproxy_core::SourceReady;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Sink;

/// Upstream's selector for Services and EndpointSlices: skip those of alternative proxies and
/// of headless Services.
pub(crate) const PROXY_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// How one kind of object is applied to the sink.
trait Kind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    fn upsert(sink: &Sink, object: &Self, known: &mut Known);
    fn delete(sink: &Sink, namespace: &str, name: &str, known: &mut Known);
}

/// What a watcher has applied, to delete what a re-list no longer returns.
#[derive(Default)]
struct Known {
    keys: BTreeSet<(String, String)>,
    service_cidrs: std::collections::BTreeMap<String, Vec<IpNet>>,
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
    fn delete(_: &Sink, _: &str, name: &str, _: &mut Known) {
        tracing::warn!(node = name, "this node's Node object was deleted");
    }
}

impl Kind for ServiceCIDR {
    fn upsert(sink: &Sink, object: &Self, known: &mut Known) {
        let cidrs = object
            .spec
            .as_ref()
            .and_then(|spec| spec.cidrs.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|cidr| match cidr.parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(_) => {
                    tracing::warn!(servicecidr = object.name_any(), %cidr, "ignoring an invalid CIDR");
                    None
                }
            })
            .collect();
        known.service_cidrs.insert(object.name_any(), cidrs);
        sink.handle
            .set_service_cidrs(known.service_cidrs.values().flatten().copied().collect());
    }
    fn delete(sink: &Sink, _: &str, name: &str, known: &mut Known) {
        known.service_cidrs.remove(name);
        sink.handle
            .set_service_cidrs(known.service_cidrs.values().flatten().copied().collect());
    }
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

/// Runs one watcher until its stream ends (never, in practice): applies every event and marks
/// `ready` (if any) at the end of the first complete list. An `optional` kind that the API
/// server does not serve (404) stops its watcher instead of retrying forever.
async fn watch<K: Kind>(
    api: Api<K>,
    config: watcher::Config,
    sink: Sink,
    ready: Option<SourceReady>,
    optional: bool,
) {
    let kind = K::kind(&()).into_owned();
    let mut ready = ready;
    let mut known = Known::default();
    let mut listing: Option<BTreeSet<(String, String)>> = None;
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
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
                if let Some(ready) = ready.take() {
                    tracing::info!(%kind, objects = known.keys.len(), "initial list done");
                    ready.mark_ready();
                }
            }
            Err(error) if optional && is_not_served(&error) => {
                tracing::info!(%kind, "the API server does not serve this kind; not watching it");
                return;
            }
            Err(error) => {
                sink.metrics.watch_errors.inc();
                tracing::warn!(%kind, %error, "watch failed; retrying with backoff, rules stay in place");
            }
        }
    }
}

/// The four watchers, each registered with its readiness token.
pub(crate) struct KubeSource {
    pub(crate) client: Client,
    pub(crate) node_name: String,
}

impl KubeSource {
    /// Runs every watcher until the future is dropped. ServiceCIDRs are optional (clusters
    /// before 1.33 may not serve them), so they do not hold back the first sync.
    pub(crate) async fn run(self, sink: Sink, ready: [SourceReady; 3]) {
        let [services, slices, node] = ready;
        let proxied = watcher::Config::default().labels(PROXY_SELECTOR);
        let this_node =
            watcher::Config::default().fields(&format!("metadata.name={}", self.node_name));
        tokio::join!(
            watch(
                Api::<Service>::all(self.client.clone()),
                proxied.clone(),
                sink.clone(),
                Some(services),
                false
            ),
            watch(
                Api::<EndpointSlice>::all(self.client.clone()),
                proxied,
                sink.clone(),
                Some(slices),
                false
            ),
            watch(
                Api::<Node>::all(self.client.clone()),
                this_node,
                sink.clone(),
                Some(node),
                false
            ),
            watch(
                Api::<ServiceCIDR>::all(self.client),
                watcher::Config::default(),
                sink,
                None,
                true
            ),
        );
    }
}
