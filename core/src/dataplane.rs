//! The seam between the reconciler and whatever programs packets.

use async_trait::async_trait;

use crate::changes::ChangeSet;
use crate::error::with_causes;
use crate::state::ProxyState;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A dataplane could not apply a sync. The reconciler retries with backoff, and the next
/// attempt is a full sync.
///
/// Its `Display` is the whole chain of causes (`nftables transaction failed: the kernel refused
/// `add element …`: File exists`), so that a log line or a status tells the operator why;
/// [`source`](std::error::Error::source) still gives the typed cause to code that inspects it.
#[derive(Debug)]
pub struct DataplaneError {
    message: String,
    source: Option<BoxError>,
}

impl std::fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&with_causes(
            self.message.clone(),
            self.source.as_deref().map(|e| e as _),
        ))
    }
}

impl std::error::Error for DataplaneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
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

/// What [`Dataplane::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Everything the last sync programmed is in place.
    Intact,
    /// Something was changed from outside; the text says what was noticed first.
    Damaged(String),
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

    /// Checks cheaply that what the last sync programmed is still in place: firewall reloads
    /// and other agents delete or flush rules they do not own. The reconciler asks on every
    /// sync that has no changes to apply (the periodic ones) and answers
    /// [`Integrity::Damaged`] — or an error — with a full sync.
    ///
    /// The default answers [`Integrity::Intact`]: right for a datapath nobody else can touch.
    ///
    /// # Errors
    ///
    /// When the check itself could not be made.
    async fn verify(&mut self) -> Result<Integrity, DataplaneError> {
        Ok(Integrity::Intact)
    }

    /// Removes everything this dataplane ever programmed.
    ///
    /// # Errors
    ///
    /// When some of it could not be removed.
    async fn cleanup(&mut self) -> Result<(), DataplaneError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the kernel refused `add element x`: {0}")]
    struct Refused(#[source] std::io::Error);

    #[test]
    fn the_display_carries_every_cause_once() {
        let error = DataplaneError::with_source(
            "nftables transaction failed",
            Refused(std::io::Error::from_raw_os_error(17)),
        );
        let text = error.to_string();
        assert!(
            text.starts_with("nftables transaction failed: the kernel refused"),
            "{text}"
        );
        assert_eq!(text.matches("File exists").count(), 1, "{text}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
