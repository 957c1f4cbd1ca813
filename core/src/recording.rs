//! An in-memory [`Dataplane`] that records what it was asked to do, for tests and examples.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::changes::ChangeSet;
use crate::dataplane::{Dataplane, DataplaneError};
use crate::model::ServicePortName;
use crate::state::ProxyState;

/// One call a [`RecordingDataplane`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedCall {
    /// An incremental sync, with the keys of the changed service ports.
    Sync {
        /// The changed service ports, in key order.
        changed: Vec<ServicePortName>,
        /// Whether the change set carried new node information.
        node_changed: bool,
        /// Whether the call failed (because a failure was injected).
        failed: bool,
    },
    /// A full sync of a state with this many service ports.
    FullSync {
        /// The number of service ports in the state.
        service_ports: usize,
        /// Whether the call failed (because a failure was injected).
        failed: bool,
    },
    /// A cleanup.
    Cleanup,
}

#[derive(Debug, Default)]
struct Recording {
    calls: Vec<RecordedCall>,
    programmed: ProxyState,
    failures: VecDeque<String>,
}

/// A dataplane that keeps the last successfully programmed state and a log of calls. Clones
/// share the same recording, so a test can keep one clone and hand the other to a reconciler.
///
/// Failures can be injected with [`fail_next`](RecordingDataplane::fail_next); a failed call
/// leaves the programmed state untouched, as the [`Dataplane`] contract demands.
#[derive(Debug, Clone, Default)]
pub struct RecordingDataplane {
    inner: Arc<Mutex<Recording>>,
}

impl RecordingDataplane {
    /// A dataplane with nothing programmed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call fail with `message` (calls queue up).
    pub fn fail_next(&self, message: impl Into<String>) {
        self.lock().failures.push_back(message.into());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// The state as programmed by the successful calls.
    pub fn programmed(&self) -> ProxyState {
        self.lock().programmed.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Dataplane for RecordingDataplane {
    fn name(&self) -> &str {
        "recording"
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        let mut recording = self.lock();
        let failure = recording.failures.pop_front();
        recording.calls.push(RecordedCall::Sync {
            changed: changes.iter().map(|(name, _)| name.clone()).collect(),
            node_changed: changes.node().is_some(),
            failed: failure.is_some(),
        });
        if let Some(message) = failure {
            return Err(DataplaneError::new(message));
        }
        let mut programmed = recording.programmed.clone();
        programmed.apply(changes);
        if programmed != *state {
            return Err(DataplaneError::new(
                "change set does not lead from the programmed state to the desired one",
            ));
        }
        recording.programmed = programmed;
        Ok(())
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let mut recording = self.lock();
        let failure = recording.failures.pop_front();
        recording.calls.push(RecordedCall::FullSync {
            service_ports: state.len(),
            failed: failure.is_some(),
        });
        if let Some(message) = failure {
            return Err(DataplaneError::new(message));
        }
        recording.programmed = state.clone();
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        let mut recording = self.lock();
        recording.calls.push(RecordedCall::Cleanup);
        recording.programmed = ProxyState::default();
        Ok(())
    }
}
