//! The bounded-frequency sync loop between the tracker and a dataplane.
//!
//! ```text
//!  event ──► TrackerHandle ──wake──► Reconciler ──drain──► ChangeSet ──► dyn Dataplane
//!                                       │
//!            runs at most every min_sync_period, at least every sync_period,
//!            retries with backoff after an error; full sync at start, after any
//!            failure, when the node changed, and every full_sync_period
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::dataplane::{Dataplane, DataplaneError, Integrity};
use crate::handle::TrackerHandle;
use crate::readiness::Readiness;

/// How often the reconciler syncs. Defaults are upstream kube-proxy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// The shortest time between two syncs (`minSyncPeriod`, default 1 s); events arriving
    /// sooner are coalesced into the next sync.
    pub min_sync_period: Duration,
    /// The longest time between two syncs (`syncPeriod`, default 30 s).
    pub sync_period: Duration,
    /// How often a sync is full even when nothing failed (default 1 h, as upstream).
    pub full_sync_period: Duration,
    /// The wait before the first retry after a failed sync; it doubles per consecutive
    /// failure up to `sync_period`.
    pub retry_initial: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            full_sync_period: Duration::from_secs(3600),
            retry_initial: Duration::from_secs(1),
        }
    }
}

/// Which kind of sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// A full sync.
    Full,
    /// An incremental sync of the drained changes.
    Partial,
    /// Nothing had changed, so the dataplane was not called.
    Skipped,
}

/// What the reconciler has done so far; published after every attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// When the last attempt finished.
    pub last_attempt: Option<Instant>,
    /// When the last successful attempt finished.
    pub last_success: Option<Instant>,
    /// The kind and duration of the last successful attempt.
    pub last_sync: Option<(SyncKind, Duration)>,
    /// The number of service ports changed by the last successful partial sync.
    pub last_changed: usize,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Successful full syncs.
    pub full_syncs: u64,
    /// Successful partial syncs.
    pub partial_syncs: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Full syncs made because [`Dataplane::verify`] found the rules damaged from outside (or
    /// could not check them).
    pub repairs: u64,
    /// The message of the last failure.
    pub last_error: Option<String>,
}

/// What one sync attempt did, handed to every [`Reconciler::on_sync`] callback after each
/// attempt: full, partial, skipped (nothing to apply) and failed ones alike, so that metrics
/// count every attempt the way upstream's do.
#[derive(Debug)]
pub struct SyncReport<'a> {
    /// The kind of sync this attempt was.
    pub kind: SyncKind,
    /// How long the attempt took, the integrity check before it included.
    pub took: Duration,
    /// The number of service ports the attempt applied (the drained change set's size).
    pub changed: usize,
    /// The attempt was made full because [`Dataplane::verify`] found the rules damaged (or
    /// could not check them).
    pub repair: bool,
    /// How it ended; the error is the dataplane's, with its causes.
    pub outcome: Result<(), &'a DataplaneError>,
}

/// A callback told about every sync attempt.
type SyncCallback = Box<dyn FnMut(&SyncReport<'_>) + Send>;

/// Drives a [`Dataplane`] from a [`TrackerHandle`].
pub struct Reconciler {
    handle: TrackerHandle,
    dataplane: Box<dyn Dataplane>,
    readiness: Readiness,
    config: ReconcilerConfig,
    status: watch::Sender<SyncStatus>,
    needs_full: bool,
    last_full: Option<Instant>,
    last_verified: Option<Instant>,
    callbacks: Vec<SyncCallback>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("dataplane", &self.dataplane.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler that waits for `readiness` before its first sync.
    pub fn new(
        handle: TrackerHandle,
        dataplane: Box<dyn Dataplane>,
        readiness: Readiness,
        config: ReconcilerConfig,
    ) -> Self {
        Self {
            handle,
            dataplane,
            readiness,
            config,
            status: watch::Sender::new(SyncStatus::default()),
            needs_full: true,
            last_full: None,
            last_verified: None,
            callbacks: Vec::new(),
        }
    }

    /// Calls `callback` after every sync attempt, from the sync loop itself, so that no
    /// attempt goes unreported (the [`status`](Reconciler::status) cell keeps only the last).
    /// It must be quick: the next sync waits for it. Hand slow work to a task through a channel.
    pub fn on_sync(&mut self, callback: impl FnMut(&SyncReport<'_>) + Send + 'static) {
        self.callbacks.push(Box::new(callback));
    }

    /// A receiver of the status published after every attempt (for health checks and
    /// metrics).
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes, then returns the dataplane (with its rules left in
    /// place). Never panics on a dataplane error: errors become retries and status.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Box<dyn Dataplane> {
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            () = self.readiness.wait() => {}
            () = &mut shutdown => return self.dataplane,
        }
        let mut last_run: Option<Instant> = None;
        let mut requested = true;
        let mut retry_at: Option<Instant> = None;
        loop {
            if let Some(deadline) = self.next_run(last_run, requested, retry_at) {
                tokio::select! {
                    () = self.handle.sync_requested() => {
                        requested = true;
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline) => {}
                    () = &mut shutdown => return self.dataplane,
                }
            }
            last_run = Some(Instant::now());
            requested = false;
            // Shutdown does not wait for a sync in flight: the kernel applies a batch all or
            // nothing, so abandoning it leaves either the old rules or the new ones.
            let outcome = tokio::select! {
                outcome = self.sync_once() => outcome,
                () = &mut shutdown => return self.dataplane,
            };
            retry_at = match outcome {
                Ok(_) => None,
                Err(_) => Some(Instant::now() + self.backoff()),
            };
        }
    }

    /// When the next sync is due; `None` means now.
    fn next_run(
        &self,
        last_run: Option<Instant>,
        requested: bool,
        retry_at: Option<Instant>,
    ) -> Option<Instant> {
        let last_run = last_run?;
        let earliest = last_run + self.config.min_sync_period;
        let mut due = last_run + self.config.sync_period;
        if requested {
            due = due.min(earliest);
        }
        if let Some(retry_at) = retry_at {
            due = due.min(retry_at.max(earliest));
        }
        (due > Instant::now()).then_some(due)
    }

    fn backoff(&self) -> Duration {
        let failures = self.status.borrow().consecutive_failures.max(1);
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.config
            .retry_initial
            .saturating_mul(factor)
            .min(self.config.sync_period)
    }

    /// Asks the dataplane whether its rules are intact; `true` when they must be rewritten.
    async fn rules_need_repair(&mut self) -> bool {
        match self.dataplane.verify().await {
            Ok(Integrity::Intact) => false,
            Ok(Integrity::Damaged(found)) => {
                tracing::warn!(dataplane = self.dataplane.name(), %found, "rules were changed from outside; repairing them with a full sync");
                true
            }
            Err(error) => {
                tracing::warn!(dataplane = self.dataplane.name(), %error, "could not check the rules; rewriting them with a full sync");
                true
            }
        }
    }

    /// Drains the tracker and applies the changes, fully when required.
    ///
    /// # Errors
    ///
    /// When the dataplane refused; the drained changes are then covered by the next sync,
    /// which is full.
    pub async fn sync_once(&mut self) -> Result<SyncKind, DataplaneError> {
        let (changes, state, pending_since) = {
            let mut tracker = self.handle.lock();
            let changes = tracker.drain();
            (changes, tracker.state(), self.handle.take_pending())
        };
        let full_due = self
            .last_full
            .is_none_or(|at| at.elapsed() >= self.config.full_sync_period);
        let mut kind = if self.needs_full || full_due || changes.context_changed() {
            SyncKind::Full
        } else if changes.is_empty() {
            SyncKind::Skipped
        } else {
            SyncKind::Partial
        };
        let started = Instant::now();
        // Every sync with nothing to apply checks the rules, and so does a busy one when the
        // last check is a sync period old: churn must not hide damage.
        let verify_due = self
            .last_verified
            .is_none_or(|at| at.elapsed() >= self.config.sync_period);
        let mut repair = false;
        if kind != SyncKind::Full && (kind == SyncKind::Skipped || verify_due) {
            self.last_verified = Some(Instant::now());
            if self.rules_need_repair().await {
                kind = SyncKind::Full;
                repair = true;
                self.status.send_modify(|status| status.repairs += 1);
            }
        }
        let result = match kind {
            SyncKind::Full => self.dataplane.full_sync(&state).await,
            SyncKind::Partial => self.dataplane.sync(&state, &changes).await,
            SyncKind::Skipped => Ok(()),
        };
        let finished = Instant::now();
        let report = SyncReport {
            kind,
            took: finished - started,
            changed: changes.len(),
            repair,
            outcome: result.as_ref().map(|_| ()),
        };
        for callback in &mut self.callbacks {
            callback(&report);
        }
        match result {
            Ok(()) => {
                if kind == SyncKind::Full {
                    self.needs_full = false;
                    self.last_full = Some(finished);
                }
                self.status.send_modify(|status| {
                    status.last_attempt = Some(finished);
                    status.last_success = Some(finished);
                    status.last_sync = Some((kind, finished - started));
                    status.last_changed = changes.len();
                    status.consecutive_failures = 0;
                    match kind {
                        SyncKind::Full => status.full_syncs += 1,
                        SyncKind::Partial => status.partial_syncs += 1,
                        SyncKind::Skipped => {}
                    }
                });
                tracing::debug!(dataplane = self.dataplane.name(), ?kind, changed = changes.len(), elapsed = ?(finished - started), "synced");
                Ok(kind)
            }
            Err(error) => {
                // The drained changes are gone from the tracker; only a full sync can be sure
                // to cover them.
                self.needs_full = true;
                self.handle.restore_pending(pending_since);
                self.status.send_modify(|status| {
                    status.last_attempt = Some(finished);
                    status.consecutive_failures += 1;
                    status.failures += 1;
                    status.last_error = Some(error.to_string());
                });
                tracing::warn!(dataplane = self.dataplane.name(), ?kind, %error, "sync failed; next sync is full");
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests;
