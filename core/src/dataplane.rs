//! The seam between the reconciler and whatever programs packets.

use async_trait::async_trait;

use crate::changes::ChangeSet;
use crate::state::ProxyState;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A dataplane could not apply a sync. The reconciler retries with backoff, and the next
/// attempt is a full sync.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DataplaneError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl DataplaneError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and the cause underneath it.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Programs a datapath from the desired state.
///
/// Implementations own their kernel (or userspace) objects entirely. The reconciler calls
/// [`full_sync`](Dataplane::full_sync) first, after any failed call, and periodically; in
/// between it calls [`sync`](Dataplane::sync) with the changes since the previous call.
///
/// # Contract
///
/// - A sync is all-or-nothing: when it returns an error, what was programmed before it is
///   still in place.
/// - After any sequence of successful `sync` calls the datapath equals what one `full_sync`
///   of the same final state would make.
///
/// The trait is object safe: a binary can pick one at run time as `Box<dyn Dataplane>`.
#[async_trait]
pub trait Dataplane: Send {
    /// A short name for logs and metrics (`nftables`, `iptables`, ...).
    fn name(&self) -> &str;

    /// Applies `changes`, which were drained against the state of the previous call; `state`
    /// is the full desired state after them.
    ///
    /// # Errors
    ///
    /// When the datapath refused the update; nothing of it may have been applied.
    async fn sync(&mut self, state: &ProxyState, changes: &ChangeSet)
    -> Result<(), DataplaneError>;

    /// Makes the datapath equal `state`, whatever it held before.
    ///
    /// # Errors
    ///
    /// When the datapath refused the update; nothing of it may have been applied.
    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError>;

    /// Removes everything this dataplane ever programmed.
    ///
    /// # Errors
    ///
    /// When some of it could not be removed.
    async fn cleanup(&mut self) -> Result<(), DataplaneError>;
}
