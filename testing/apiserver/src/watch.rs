//! Watch streams: newline-delimited JSON events after a resourceVersion, with bookmarks,
//! initial events, a timeout, and a 410 ERROR event for versions older than the compaction
//! point.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shared;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Change, EventType, Key, Kind, Store, VersionError};

/// Which objects a list or watch is about.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) kind: Kind,
    /// `None`: every namespace.
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    /// Whether the object at `key` passes the filter.
    pub(crate) fn matches(&self, key: &Key, object: &Value) -> bool {
        key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the current version; first an ADDED event per existing object when
    /// `initial_events` (resourceVersion unset or "0", or `sendInitialEvents=true`).
    Now {
        /// Send the current objects first.
        initial_events: bool,
        /// Then a BOOKMARK annotated `k8s.io/initial-events-end` (`sendInitialEvents=true`).
        end_marker: bool,
    },
    /// Every change after this version.
    From(u64),
}

/// A parsed watch request.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    pub(crate) filter: Filter,
    pub(crate) start: Start,
    /// `allowWatchBookmarks`.
    pub(crate) bookmarks: bool,
    /// `timeoutSeconds`: the stream ends then.
    pub(crate) timeout: Duration,
}

/// Counts a live watch stream in [`Shared::active_watches`] while it exists.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchState {
    shared: Arc<Shared>,
    filter: Filter,
    bookmarks: bool,
    interval: Duration,
    /// Every change up to this version has been queued (or filtered out).
    cursor: u64,
    pending: VecDeque<Bytes>,
    rx: tokio::sync::watch::Receiver<u64>,
    /// Changes when the server stops: the stream ends.
    epoch: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    done: bool,
    _active: ActiveGuard,
}

/// One event line: `{"type":TYPE,"object":OBJECT}\n`.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// The event a watcher with `filter` sees for `change`, if any: an object entering the
/// filter is ADDED, one leaving it DELETED (as the API server's watch cache does).
fn translate<'a>(filter: &Filter, change: &'a Change) -> Option<(&'static str, &'a Value)> {
    let now = filter.matches(&change.key, &change.object);
    let before = change
        .previous
        .as_deref()
        .is_some_and(|previous| filter.matches(&change.key, previous));
    let event = match (change.event, before, now) {
        (EventType::Added, _, true) | (EventType::Modified, false, true) => "ADDED",
        (EventType::Modified, true, true) => "MODIFIED",
        (EventType::Modified, true, false) | (EventType::Deleted, true, _) => "DELETED",
        _ => return None,
    };
    Some((event, &change.object))
}

/// The Status of a 410 Gone for `requested` older than `oldest`.
pub(crate) fn expired_status(requested: u64, oldest: u64) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    })
}

impl WatchState {
    fn bookmark(&mut self, end_marker: bool) {
        let mut metadata = json!({"resourceVersion": self.cursor.to_string()});
        if end_marker {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.filter.kind.kind(),
            "apiVersion": self.filter.kind.api_version(),
            "metadata": metadata,
        });
        self.pending.push_back(line("BOOKMARK", &object));
    }

    /// Queues every change after the cursor that the filter lets through.
    fn collect(&mut self, store: &Store) {
        match store.changes_since(self.cursor) {
            Ok(changes) => {
                for change in changes {
                    if let Some((event, object)) = translate(&self.filter, change) {
                        self.pending.push_back(line(event, object));
                    }
                }
                self.cursor = self.cursor.max(store.resource_version());
            }
            Err(VersionError::Expired { requested, oldest }) => {
                self.pending
                    .push_back(line("ERROR", &expired_status(requested, oldest)));
                self.done = true;
            }
            Err(VersionError::TooLarge { .. }) => {}
        }
    }

    fn collect_now(&mut self) {
        let shared = self.shared.clone();
        let store = shared.store();
        self.collect(&store);
    }

    async fn step(mut self) -> Option<(Result<Bytes, Infallible>, WatchState)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(line), self));
            }
            if self.done {
                return None;
            }
            let (deadline, next_bookmark) = (self.deadline, self.next_bookmark);
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    self.collect_now();
                    if !self.done && self.bookmarks {
                        self.bookmark(false);
                    }
                    self.done = true;
                }
                () = tokio::time::sleep_until(next_bookmark), if self.bookmarks => {
                    self.collect_now();
                    if !self.done {
                        self.bookmark(false);
                    }
                    self.next_bookmark = Instant::now() + self.interval;
                }
                _ = self.epoch.changed() => {
                    self.pending.clear();
                    self.done = true;
                }
                changed = self.rx.changed() => match changed {
                    Ok(()) => self.collect_now(),
                    Err(_) => self.done = true,
                },
            }
        }
    }
}

/// The event stream for one watch request.
pub(crate) fn events(
    shared: Arc<Shared>,
    request: WatchRequest,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    shared.active_watches.fetch_add(1, Ordering::SeqCst);
    let interval = shared.bookmark_interval();
    // Subscribe before reading the store, so that no change slips between the two.
    let rx = shared.changed.subscribe();
    let epoch = shared.epoch.subscribe();
    let now = Instant::now();
    let mut state = WatchState {
        shared: shared.clone(),
        filter: request.filter,
        bookmarks: request.bookmarks,
        interval,
        cursor: 0,
        pending: VecDeque::new(),
        rx,
        epoch,
        deadline: now + request.timeout,
        next_bookmark: now + interval,
        done: false,
        _active: ActiveGuard(shared.clone()),
    };
    {
        let store = shared.store();
        match request.start {
            Start::Now {
                initial_events,
                end_marker,
            } => {
                state.cursor = store.resource_version();
                if initial_events {
                    for (key, object) in store.snapshot(state.filter.kind, None).unwrap_or_default()
                    {
                        if state.filter.matches(&key, &object) {
                            state.pending.push_back(line("ADDED", &object));
                        }
                    }
                }
                if end_marker {
                    state.bookmark(true);
                }
            }
            Start::From(version) => {
                state.cursor = version;
                state.collect(&store);
            }
        }
    }
    futures::stream::unfold(state, WatchState::step)
}
