//! Stale UDP conntrack entries are deleted after every successful sync, so that clients of a
//! UDP Service do not keep sending into a flow that points nowhere (an endpoint that went away)
//! or nowhere at all (flows created while the Service had no endpoint).
//!
//! [`ConntrackCleaning`] wraps any dataplane (a CNI author's too): the decorator sees each change set right after the dataplane
//! applied it, and after a full sync it compares with the last state it saw.

use std::collections::BTreeMap;

use crate::netlink::Conntrack;
use crate::stale::{stale_filters, stale_flows};
use async_trait::async_trait;
use kproxy_core::{Change, ChangeSet, Dataplane, DataplaneError, ProxyState};

/// A dataplane that cleans conntrack after the inner one synced.
pub struct ConntrackCleaning {
    inner: Box<dyn Dataplane>,
    conntrack: Option<Conntrack>,
    last: Option<ProxyState>,
}

impl ConntrackCleaning {
    /// Wraps `inner`; without a conntrack socket (it could not be opened) nothing is cleaned.
    pub fn new(inner: Box<dyn Dataplane>) -> Self {
        let conntrack = match Conntrack::new() {
            Ok(conntrack) => Some(conntrack),
            Err(error) => {
                tracing::warn!(%error, "cannot open conntrack; stale UDP flows will not be deleted");
                None
            }
        };
        Self {
            inner,
            conntrack,
            last: None,
        }
    }

    /// Takes the conntrack socket, not `self`: the wrapped dataplane is `Send` but not `Sync`.
    async fn clean(conntrack: Option<&Conntrack>, changes: &ChangeSet, state: &ProxyState) {
        let Some(conntrack) = conntrack else { return };
        let filters = stale_filters(changes, state.node());
        if filters.is_empty() {
            return;
        }
        match conntrack.delete(&filters).await {
            Ok(deleted) => tracing::debug!(
                filters = filters.len(),
                deleted,
                "deleted stale UDP conntrack entries"
            ),
            Err(error) => tracing::warn!(%error, "could not delete stale UDP conntrack entries"),
        }
    }
}

impl ConntrackCleaning {
    /// After the first full sync: no change set tells what went stale while the proxy was
    /// down, so the UDP flows are listed and judged against what was just programmed.
    async fn clean_at_start(conntrack: Option<&Conntrack>, state: &ProxyState) {
        let Some(conntrack) = conntrack else { return };
        let flows = match conntrack.list_udp().await {
            Ok(flows) => flows,
            Err(error) => {
                tracing::warn!(%error, "could not list UDP conntrack entries at start");
                return;
            }
        };
        let stale = stale_flows(state, &flows);
        match conntrack.delete_flows(&stale).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                "deleted UDP conntrack entries that went stale while the proxy was not running"
            ),
            Err(error) => tracing::warn!(%error, "could not delete stale UDP conntrack entries"),
        }
    }
}

/// The changes between two states, as a drain would have reported them.
fn diff(before: &ProxyState, after: &ProxyState) -> ChangeSet {
    let mut changes = BTreeMap::new();
    for (name, previous) in before.iter() {
        let current = after.get(name);
        if current.is_none_or(|current| current != previous) {
            changes.insert(
                name.clone(),
                Change {
                    previous: Some(previous.clone()),
                    current: current.cloned(),
                },
            );
        }
    }
    for (name, current) in after.iter() {
        if before.get(name).is_none() {
            changes.insert(
                name.clone(),
                Change {
                    previous: None,
                    current: Some(current.clone()),
                },
            );
        }
    }
    ChangeSet::new(changes, None)
}

#[async_trait]
impl Dataplane for ConntrackCleaning {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        self.inner.sync(state, changes).await?;
        Self::clean(self.conntrack.as_ref(), changes, state).await;
        self.last = Some(state.clone());
        Ok(())
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        self.inner.full_sync(state).await?;
        match self.last.take() {
            Some(last) => Self::clean(self.conntrack.as_ref(), &diff(&last, state), state).await,
            None => Self::clean_at_start(self.conntrack.as_ref(), state).await,
        }
        self.last = Some(state.clone());
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.inner.cleanup().await
    }
}
