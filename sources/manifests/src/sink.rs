//! Where every source's objects go: a [`Sink`] applies them to the tracker and tells a
//! [`SourceObserver`] about changes and about what could not be used.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{IpFamily, ModelError, ServiceChangeTracker, TrackerHandle};

/// Annotation carrying when the change that produced an EndpointSlice happened.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Told what a source does, for metrics and health. Every method has a no-op default, so an
/// implementation picks only what it cares about; `()` observes nothing.
pub trait SourceObserver: Send + Sync {
    /// A field of an object could not be used (the rest of the object still is); already
    /// logged at `warn`.
    fn invalid_field(&self, error: &ModelError) {
        let _ = error;
    }

    /// A Service was added, changed or deleted.
    fn service_changed(&self) {}

    /// An EndpointSlice was added, changed or deleted.
    fn endpoint_slice_changed(&self) {}

    /// An applied EndpointSlice of `family` carries [`LAST_CHANGE_TRIGGER_TIME`] with this
    /// (RFC 3339) value. FQDN slices, which no proxy programs, are not told.
    fn endpoint_slice_trigger_time(&self, family: IpFamily, value: &str) {
        let _ = (family, value);
    }

    /// A watch of `kind` failed and will be retried with backoff; already logged at `warn`.
    fn watch_error(&self, kind: &str, error: &dyn std::error::Error) {
        let _ = (kind, error);
    }

    /// This proxy's own Node object was seen (added or changed).
    fn this_node(&self, node: &Node) {
        let _ = node;
    }
}

/// Observes nothing.
impl SourceObserver for () {}

/// Applies objects to the tracker, logging bad fields and telling the observer.
#[derive(Clone)]
pub struct Sink {
    handle: TrackerHandle,
    observer: Arc<dyn SourceObserver>,
    /// Whether the missing Node was warned about since this node's Node was last seen; shared
    /// by every clone so that several watchers or re-reads warn once between them.
    node_missing_told: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Feeds `handle`, telling `observer`.
    pub fn new(handle: TrackerHandle, observer: Arc<dyn SourceObserver>) -> Self {
        Self {
            handle,
            observer,
            node_missing_told: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Feeds `handle`, telling no one.
    pub fn unobserved(handle: TrackerHandle) -> Self {
        Self::new(handle, Arc::new(()))
    }

    /// The tracker this sink feeds.
    pub fn handle(&self) -> &TrackerHandle {
        &self.handle
    }

    /// The observer told about what this sink does.
    pub fn observer(&self) -> &dyn SourceObserver {
        self.observer.as_ref()
    }

    /// Applies every change `f` makes to the [`Batch`] under one lock of the tracker, so that
    /// a sync sees all of them or none (a manifests re-read is never programmed half-applied).
    /// Bad fields are logged and the observer is told once the lock is released.
    pub fn batch<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> T) -> T {
        let (result, told) = self.handle.update(|tracker| {
            let mut batch = Batch {
                tracker,
                told: Vec::new(),
            };
            let result = f(&mut batch);
            (result, batch.told)
        });
        for told in told {
            match told {
                Told::ServiceChanged => self.observer.service_changed(),
                Told::EndpointSliceChanged => self.observer.endpoint_slice_changed(),
                Told::TriggerTime(family, value) => {
                    self.observer.endpoint_slice_trigger_time(family, &value);
                }
                Told::ThisNode(node) => {
                    self.node_missing_told.store(false, Ordering::Relaxed);
                    self.observer.this_node(&node);
                }
                Told::Invalid(error) => {
                    tracing::warn!(object = %error.object(), field = error.field(), %error, "ignoring invalid field");
                    self.observer.invalid_field(&error);
                }
            }
        }
        result
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&self, service: &Service) {
        self.batch(|batch| batch.upsert_service(service));
    }

    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.batch(|batch| batch.delete_service(namespace, name));
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&self, slice: &EndpointSlice) {
        self.batch(|batch| batch.upsert_endpoint_slice(slice));
    }

    /// Deletes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.batch(|batch| batch.delete_endpoint_slice(namespace, name));
    }

    /// Takes a Node; only this proxy's own node counts (and is told to the observer).
    pub fn upsert_node(&self, node: &Node) {
        self.batch(|batch| batch.upsert_node(node));
    }

    /// Sets the cluster's service CIDRs (the union of every ServiceCIDR object's).
    pub fn set_service_cidrs(&self, cidrs: Vec<ipnet::IpNet>) {
        self.batch(|batch| batch.set_service_cidrs(cidrs));
    }

    /// Says that this node's Node object is missing: a complete list or read did not have it,
    /// or it was deleted (`why` says which). Warns once, naming the node, and again only if it
    /// goes missing again after it was seen. Upstream warns likewise ("Can't get Node").
    ///
    /// Without it the node's addresses, pod CIDRs and zone stay unknown (or keep their last
    /// values): node ports on the primary address (`--nodeport-addresses primary`), the
    /// `NodeCIDR` local-traffic detector and zone hints cannot work.
    pub fn this_node_missing(&self, why: &str) {
        if self.node_missing_told.swap(true, Ordering::Relaxed) {
            return;
        }
        let node = self.handle.lock().node().name.clone();
        tracing::warn!(
            %node,
            why,
            "can't get this node's Node object; its addresses, pod CIDRs and zone are unknown \
             (node ports on the primary address, NodeCIDR local-traffic detection and zone \
             hints need them) until it appears"
        );
    }
}

/// What the observer is told after a batch, outside the tracker's lock.
enum Told {
    ServiceChanged,
    EndpointSliceChanged,
    TriggerTime(IpFamily, String),
    ThisNode(Box<Node>),
    Invalid(ModelError),
}

/// Changes applied under one tracker lock (see [`Sink::batch`]).
pub struct Batch<'a> {
    tracker: &'a mut ServiceChangeTracker,
    told: Vec<Told>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch<'_> {
    fn report(&mut self, errors: Vec<ModelError>) {
        self.told.extend(errors.into_iter().map(Told::Invalid));
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, service: &Service) {
        self.told.push(Told::ServiceChanged);
        let errors = self.tracker.upsert_service(service);
        self.report(errors);
    }

    /// Deletes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.told.push(Told::ServiceChanged);
        self.tracker.delete_service(namespace, name);
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&mut self, slice: &EndpointSlice) {
        self.told.push(Told::EndpointSliceChanged);
        let family = match slice.address_type.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        };
        if let Some(family) = family
            && let Some(trigger) = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        {
            self.told.push(Told::TriggerTime(family, trigger.clone()));
        }
        let errors = self.tracker.upsert_endpoint_slice(slice);
        self.report(errors);
    }

    /// Deletes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        self.told.push(Told::EndpointSliceChanged);
        self.tracker.delete_endpoint_slice(namespace, name);
    }

    /// Takes a Node; only this proxy's own node counts (and is told to the observer).
    pub fn upsert_node(&mut self, node: &Node) {
        if node.metadata.name.as_deref() == Some(self.tracker.node().name.as_str()) {
            self.told.push(Told::ThisNode(Box::new(node.clone())));
        }
        let errors = self.tracker.upsert_node(node);
        self.report(errors);
    }

    /// Sets the cluster's service CIDRs (the union of every ServiceCIDR object's).
    pub fn set_service_cidrs(&mut self, cidrs: Vec<ipnet::IpNet>) {
        self.tracker.set_service_cidrs(cidrs);
    }
}
