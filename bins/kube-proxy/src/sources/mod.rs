//! Where Services, EndpointSlices and this node come from: the API server (kube-runtime
//! watchers) or manifests on disk. Every source feeds the same [`TrackerHandle`], reports the
//! end of its initial list through a [`SourceReady`](kproxy_core::SourceReady) token, and counts and logs bad objects.

pub(crate) mod kube;
pub(crate) mod manifests;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::{ModelError, TrackerHandle};

use crate::metrics::Metrics;

/// Annotation carrying when the change that produced an EndpointSlice happened.
pub(crate) const LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";

/// Applies objects to the tracker, logging and counting what could not be used.
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) handle: TrackerHandle,
    pub(crate) metrics: Arc<Metrics>,
    /// Told about this node's Node object (for health checks' node eligibility).
    pub(crate) on_node: Arc<dyn Fn(&Node) + Send + Sync>,
}

impl Sink {
    fn report(&self, errors: Vec<ModelError>) {
        for error in errors {
            tracing::warn!(object = %error.object(), field = error.field(), %error, "ignoring invalid field");
            self.metrics.record_invalid(&error);
        }
    }

    pub(crate) fn upsert_service(&self, service: &Service) {
        self.metrics.service_changes.inc();
        let errors = self.handle.upsert_service(service);
        self.report(errors);
    }

    pub(crate) fn delete_service(&self, namespace: &str, name: &str) {
        self.metrics.service_changes.inc();
        self.handle.delete_service(namespace, name);
    }

    pub(crate) fn upsert_endpoint_slice(&self, slice: &EndpointSlice) {
        self.metrics.endpoint_changes.inc();
        if let Some(trigger) = slice
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        {
            self.metrics.note_trigger_time(trigger);
        }
        let errors = self.handle.upsert_endpoint_slice(slice);
        self.report(errors);
    }

    pub(crate) fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.metrics.endpoint_changes.inc();
        self.handle.delete_endpoint_slice(namespace, name);
    }

    pub(crate) fn upsert_node(&self, node: &Node) {
        if node.metadata.name.as_deref() == Some(self.handle.lock().node().name.as_str()) {
            (self.on_node)(node);
        }
        let errors = self.handle.upsert_node(node);
        self.report(errors);
    }
}
