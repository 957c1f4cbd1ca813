//! A shared, thread-safe front to the tracker that wakes the reconciler on every event.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::ModelError;
use crate::model::NodeInfo;
use crate::tracker::ServiceChangeTracker;

/// A cloneable handle that sources feed events through. Each event updates the tracker and
/// asks the reconciler for a sync; requests coalesce, so a burst of events costs one sync.
#[derive(Debug, Clone)]
pub struct TrackerHandle {
    tracker: Arc<Mutex<ServiceChangeTracker>>,
    wake: Arc<Notify>,
    /// When the oldest event not yet programmed arrived (upstream's "queued update").
    oldest_pending: Arc<Mutex<Option<Instant>>>,
}

impl TrackerHandle {
    /// Wraps a tracker.
    pub fn new(tracker: ServiceChangeTracker) -> Self {
        Self {
            tracker: Arc::new(Mutex::new(tracker)),
            wake: Arc::new(Notify::new()),
            oldest_pending: Arc::new(Mutex::new(None)),
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

    /// Sets the cluster's service CIDRs.
    pub fn set_service_cidrs(&self, cidrs: Vec<ipnet::IpNet>) {
        self.update(|t| t.set_service_cidrs(cidrs));
    }

    /// Sets this node's information.
    pub fn set_node(&self, node: NodeInfo) {
        self.update(|t| t.set_node(node));
    }

    /// Runs `f` on the tracker and asks for a sync.
    pub fn update<T>(&self, f: impl FnOnce(&mut ServiceChangeTracker) -> T) -> T {
        let result = f(&mut self.lock());
        self.pending_slot().get_or_insert_with(Instant::now);
        self.wake.notify_one();
        result
    }

    /// When the oldest event that no successful sync has covered yet arrived; `None` when
    /// everything is programmed. Health checks call the proxy unhealthy when this gets old.
    pub fn oldest_pending(&self) -> Option<Instant> {
        *self.pending_slot()
    }

    /// Takes the pending mark at a drain; hand it back with [`restore_pending`] when the sync
    /// that follows fails.
    ///
    /// [`restore_pending`]: TrackerHandle::restore_pending
    pub(crate) fn take_pending(&self) -> Option<Instant> {
        self.pending_slot().take()
    }

    /// Puts back the mark of events a failed sync did not program.
    pub(crate) fn restore_pending(&self, since: Option<Instant>) {
        if let Some(since) = since {
            let mut slot = self.pending_slot();
            *slot = Some(slot.map_or(since, |current| current.min(since)));
        }
    }

    fn pending_slot(&self) -> MutexGuard<'_, Option<Instant>> {
        self.oldest_pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
