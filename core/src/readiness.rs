//! Knows when every source has finished its initial list, so nothing is programmed from a
//! partial view of the cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

/// The set of sources that have not finished their initial list yet.
#[derive(Debug, Clone)]
pub struct Readiness {
    outstanding: Arc<watch::Sender<BTreeSet<String>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// No sources yet: ready at once until one registers.
    pub fn new() -> Self {
        Self {
            outstanding: Arc::new(watch::Sender::new(BTreeSet::new())),
        }
    }

    /// A readiness that waits for every one of `sources`, with their tokens in the same order.
    /// Prefer this to [`new`](Readiness::new) plus [`register`](Readiness::register): a
    /// reconciler started before the sources register would find nothing outstanding and
    /// program an empty state.
    pub fn with_sources<S: Into<String>>(
        sources: impl IntoIterator<Item = S>,
    ) -> (Self, Vec<SourceReady>) {
        let readiness = Self::new();
        let tokens = sources
            .into_iter()
            .map(|source| readiness.register(source))
            .collect();
        (readiness, tokens)
    }

    /// Registers a source; the proxy is not ready until the returned token is marked.
    pub fn register(&self, source: impl Into<String>) -> SourceReady {
        let source = source.into();
        self.outstanding.send_modify(|set| {
            set.insert(source.clone());
        });
        SourceReady {
            readiness: self.clone(),
            source,
        }
    }

    /// The sources still listing, in name order.
    pub fn outstanding(&self) -> Vec<String> {
        self.outstanding.borrow().iter().cloned().collect()
    }

    /// Whether every registered source has finished its initial list.
    pub fn is_ready(&self) -> bool {
        self.outstanding.borrow().is_empty()
    }

    /// Waits until every registered source has finished its initial list.
    pub async fn wait(&self) {
        let mut receiver = self.outstanding.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(BTreeSet::is_empty).await;
    }
}

/// A registered source's promise to report the end of its initial list.
#[derive(Debug)]
pub struct SourceReady {
    readiness: Readiness,
    source: String,
}

impl SourceReady {
    /// Reports that the source has finished its initial list.
    pub fn mark_ready(self) {
        self.readiness.outstanding.send_modify(|set| {
            set.remove(&self.source);
        });
    }
}
