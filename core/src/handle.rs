//! A shared, thread-safe front to the tracker that wakes the reconciler on every event.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;

use crate::error::ModelError;
use crate::model::NodeInfo;
use crate::tracker::ServiceChangeTracker;

/// A cloneable handle that sources feed events through. Each event updates the tracker and
/// asks the reconciler for a sync; requests coalesce, so a burst of events costs one sync.
#[derive(Debug, Clone)]
pub struct TrackerHandle {
    tracker: Arc<Mutex<ServiceChangeTracker>>,
    wake: Arc<Notify>,
}

impl TrackerHandle {
    /// Wraps a tracker.
    pub fn new(tracker: ServiceChangeTracker) -> Self {
        Self {
            tracker: Arc::new(Mutex::new(tracker)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds or replaces a Service; returns the problems met converting it.
    pub fn upsert_service(&self, service: &Service) -> Vec<ModelError> {
        self.update(|t| t.upsert_service(service))
    }

    /// Removes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.update(|t| t.delete_service(namespace, name));
    }

    /// Adds or replaces an EndpointSlice; returns the problems met converting it.
    pub fn upsert_endpoint_slice(&self, slice: &EndpointSlice) -> Vec<ModelError> {
        self.update(|t| t.upsert_endpoint_slice(slice))
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        self.update(|t| t.delete_endpoint_slice(namespace, name));
    }

    /// Takes a Node object; only this proxy's own node counts. Returns conversion problems.
    pub fn upsert_node(&self, node: &Node) -> Vec<ModelError> {
        self.update(|t| t.upsert_node(node))
    }

    /// Sets this node's information.
    pub fn set_node(&self, node: NodeInfo) {
        self.update(|t| t.set_node(node));
    }

    /// Runs `f` on the tracker and asks for a sync.
    pub fn update<T>(&self, f: impl FnOnce(&mut ServiceChangeTracker) -> T) -> T {
        let result = f(&mut self.lock());
        self.wake.notify_one();
        result
    }

    /// Locks the tracker without asking for a sync.
    ///
    /// ## Warning
    ///
    /// This is a blocking lock: never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, ServiceChangeTracker> {
        // A panic while holding the lock cannot leave the tracker half-updated in a way that
        // matters more than stopping the proxy would, so a poisoned lock is used as is.
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until some event asked for a sync since the last wait.
    pub(crate) async fn sync_requested(&self) {
        self.wake.notified().await;
    }
}
