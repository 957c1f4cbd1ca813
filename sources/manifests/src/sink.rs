//! Where every source's objects go: a [`Sink`] applies them to the tracker and tells a
//! [`SourceObserver`] about changes and about what could not be used.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{IpFamily, ModelError, TrackerHandle};

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
        Self { handle, observer }
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

    fn report(&self, errors: Vec<ModelError>) {
        for error in errors {
            tracing::warn!(object = %error.object(), field = error.field(), %error, "ignoring invalid field");
            self.observer.invalid_field(&error);
        }
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&self, service: &Service) {
        self.observer.service_changed();
        let errors = self.handle.upsert_service(service);
        self.report(errors);
    }

    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.observer.service_changed();
        self.handle.delete_service(namespace, name);
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&self, slice: &EndpointSlice) {
        self.observer.endpoint_slice_changed();
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
            self.observer.endpoint_slice_trigger_time(family, trigger);
        }
        let errors = self.handle.upsert_endpoint_slice(slice);
        self.report(errors);
    }

    /// Deletes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.observer.endpoint_slice_changed();
        self.handle.delete_endpoint_slice(namespace, name);
    }

    /// Takes a Node; only this proxy's own node counts (and is told to the observer).
    pub fn upsert_node(&self, node: &Node) {
        let this_node =
            node.metadata.name.as_deref() == Some(self.handle.lock().node().name.as_str());
        if this_node {
            self.observer.this_node(node);
        }
        let errors = self.handle.upsert_node(node);
        self.report(errors);
    }

    /// Sets the cluster's service CIDRs (the union of every ServiceCIDR object's).
    pub fn set_service_cidrs(&self, cidrs: Vec<ipnet::IpNet>) {
        self.handle.set_service_cidrs(cidrs);
    }
}
