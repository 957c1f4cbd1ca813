use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep};

use super::*;
use crate::ConversionOptions;
use crate::model::NodeInfo;
use crate::recording::{RecordedCall, RecordingDataplane};
use crate::test_objects::{ready, service, slice};
use crate::tracker::ServiceChangeTracker;

struct Rig {
    handle: TrackerHandle,
    dataplane: RecordingDataplane,
    readiness: Readiness,
    status: watch::Receiver<SyncStatus>,
    /// Every attempt the `on_sync` callback was told of: its kind and whether it succeeded.
    reports: std::sync::Arc<std::sync::Mutex<Vec<(SyncKind, bool)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Box<dyn Dataplane>>,
}

fn config() -> ReconcilerConfig {
    ReconcilerConfig {
        min_sync_period: Duration::from_secs(1),
        sync_period: Duration::from_secs(30),
        full_sync_period: Duration::from_secs(3600),
        retry_initial: Duration::from_secs(1),
    }
}

fn start(config: ReconcilerConfig, sources: &[&str]) -> (Rig, Vec<crate::SourceReady>) {
    let handle = TrackerHandle::new(ServiceChangeTracker::new(
        NodeInfo::named("node-a"),
        ConversionOptions::default(),
    ));
    let dataplane = RecordingDataplane::new();
    let readiness = Readiness::new();
    let tokens = sources.iter().map(|s| readiness.register(*s)).collect();
    let mut reconciler = Reconciler::new(
        handle.clone(),
        Box::new(dataplane.clone()),
        readiness.clone(),
        config,
    );
    let status = reconciler.status();
    let reports: std::sync::Arc<std::sync::Mutex<Vec<(SyncKind, bool)>>> =
        std::sync::Arc::default();
    let told = std::sync::Arc::clone(&reports);
    reconciler.on_sync(move |report| {
        told.lock()
            .unwrap()
            .push((report.kind, report.outcome.is_ok()));
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(reconciler.run(async move {
        let _ = stopped.await;
    }));
    (
        Rig {
            handle,
            dataplane,
            readiness,
            status,
            reports,
            stop: Some(stop),
            task,
        },
        tokens,
    )
}

impl Rig {
    fn add_service(&self, name: &str, ip: &str) {
        self.handle
            .upsert_service(&service("ns", name, ip, &[("http", 80)]));
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.dataplane
            .calls()
            .iter()
            .map(|call| match call {
                RecordedCall::FullSync { failed: false, .. } => "full",
                RecordedCall::FullSync { failed: true, .. } => "full-failed",
                RecordedCall::Sync { failed: false, .. } => "partial",
                RecordedCall::Sync { failed: true, .. } => "partial-failed",
                RecordedCall::Cleanup => "cleanup",
            })
            .collect()
    }

    fn reports(&self) -> Vec<(SyncKind, bool)> {
        self.reports.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        let _ = self.task.await;
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_programmed_before_every_source_listed() {
    let (rig, mut tokens) = start(config(), &["services", "endpointslices", "node"]);
    rig.add_service("web", "172.30.0.1");
    sleep(Duration::from_secs(60)).await;
    assert!(rig.kinds().is_empty());
    tokens.pop().unwrap().mark_ready();
    tokens.pop().unwrap().mark_ready();
    sleep(Duration::from_secs(60)).await;
    assert!(rig.kinds().is_empty());
    assert_eq!(rig.readiness.outstanding(), ["services"]);
    tokens.pop().unwrap().mark_ready();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(rig.kinds(), ["full"]);
    assert_eq!(rig.dataplane.programmed().len(), 1);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bursts_are_coalesced_and_rate_limited() {
    let (rig, _) = start(config(), &[]);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.kinds(), ["full"]);
    let first = Instant::now();
    for i in 0..5 {
        rig.add_service(&format!("svc-{i}"), &format!("172.30.0.{}", i + 1));
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rig.kinds(), ["full"], "no sync before min_sync_period");
    sleep(Duration::from_millis(600)).await;
    assert_eq!(rig.kinds(), ["full", "partial"]);
    let synced_at = rig.status.borrow().last_success.unwrap();
    assert!(synced_at - first >= Duration::from_secs(1) - Duration::from_millis(20));
    assert_eq!(rig.status.borrow().last_changed, 5);
    assert_eq!(rig.dataplane.programmed().len(), 5);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn quiet_periods_sync_every_sync_period_without_calling_the_dataplane() {
    let (rig, _) = start(config(), &[]);
    sleep(Duration::from_millis(10)).await;
    let first = rig.status.borrow().last_success.unwrap();
    sleep(Duration::from_secs(31)).await;
    let second = rig.status.borrow().last_success.unwrap();
    assert_eq!(second - first, Duration::from_secs(30));
    assert_eq!(
        rig.status.borrow().last_sync.map(|(kind, _)| kind),
        Some(SyncKind::Skipped)
    );
    assert_eq!(rig.kinds(), ["full"]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failure_retries_with_backoff_and_forces_a_full_sync() {
    let (rig, _) = start(config(), &[]);
    sleep(Duration::from_millis(10)).await;
    rig.dataplane.fail_next("kernel said no");
    rig.dataplane.fail_next("kernel said no again");
    rig.add_service("web", "172.30.0.1");
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(rig.kinds(), ["full", "partial-failed"]);
    let failed_at = rig.status.borrow().last_attempt.unwrap();
    // First retry after 1 s, fails (full); the second after 2 s succeeds (full).
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(rig.kinds(), ["full", "partial-failed", "full-failed"]);
    assert_eq!(rig.status.borrow().consecutive_failures, 2);
    sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        rig.kinds(),
        ["full", "partial-failed", "full-failed", "full"]
    );
    let status = rig.status.borrow().clone();
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.failures, 2);
    assert_eq!(
        status.last_success.unwrap() - failed_at,
        Duration::from_secs(3)
    );
    assert_eq!(
        rig.dataplane.programmed().len(),
        1,
        "the lost change is covered"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn full_sync_period_forces_a_full_sync() {
    let config = ReconcilerConfig {
        full_sync_period: Duration::from_secs(60),
        ..config()
    };
    let (rig, _) = start(config, &[]);
    sleep(Duration::from_millis(10)).await;
    rig.add_service("web", "172.30.0.1");
    sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.kinds(), ["full", "partial"]);
    sleep(Duration::from_secs(60)).await;
    assert_eq!(rig.kinds(), ["full", "partial", "full"]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn node_change_forces_a_full_sync() {
    let (rig, _) = start(config(), &[]);
    sleep(Duration::from_millis(10)).await;
    rig.handle.set_node(NodeInfo {
        zone: Some("zone-b".into()),
        ..NodeInfo::named("node-a")
    });
    sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.kinds(), ["full", "full"]);
    assert_eq!(
        rig.dataplane.programmed().node().zone.as_deref(),
        Some("zone-b")
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn endpoint_change_reaches_the_dataplane_as_a_partial_sync() {
    let config = ReconcilerConfig {
        min_sync_period: Duration::ZERO,
        ..config()
    };
    let (rig, _) = start(config, &[]);
    rig.add_service("web", "172.30.0.1");
    sleep(Duration::from_millis(10)).await;
    rig.handle.upsert_endpoint_slice(&slice(
        "ns",
        "web-1",
        "web",
        &[("http", 80)],
        &[ready("10.0.0.1")],
    ));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(rig.kinds(), ["full", "partial"]);
    let programmed = rig.dataplane.programmed();
    let (_, state) = programmed.iter().next().unwrap();
    assert_eq!(state.endpoints.len(), 1);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_before_readiness_returns_the_dataplane_untouched() {
    let (rig, _tokens) = start(config(), &["services"]);
    let dataplane = rig.dataplane.clone();
    rig.stop().await;
    assert!(dataplane.calls().is_empty());
}

/// The reconciler's future must stay `Send` so it can be spawned on a multi-threaded runtime.
#[allow(dead_code, reason = "compile-time check only")]
fn run_future_is_send(reconciler: Reconciler) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(reconciler.run(std::future::pending()));
}

#[tokio::test(start_paused = true)]
async fn readiness_with_sources_waits_for_each_of_them() {
    let (readiness, tokens) = Readiness::with_sources(["services", "node"]);
    assert_eq!(readiness.outstanding(), ["node", "services"]);
    assert!(!readiness.is_ready());
    for token in tokens {
        token.mark_ready();
    }
    readiness.wait().await;
    assert!(readiness.is_ready());
}

#[tokio::test(start_paused = true)]
async fn pending_events_are_marked_until_a_sync_succeeds() {
    let (rig, _) = start(config(), &[]);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.handle.oldest_pending(), None);
    rig.dataplane.fail_next("no");
    rig.add_service("web", "172.30.0.1");
    let queued = rig.handle.oldest_pending().expect("marked");
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.kinds(), ["full", "partial-failed"]);
    assert_eq!(
        rig.handle.oldest_pending(),
        Some(queued),
        "a failed sync keeps the mark"
    );
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.handle.oldest_pending(),
        None,
        "a successful sync clears it"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_reported_first_idle_failed_and_back_to_back_ones_included() {
    let config = ReconcilerConfig {
        min_sync_period: Duration::ZERO,
        ..config()
    };
    let (rig, _) = start(config, &[]);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(rig.reports(), [(SyncKind::Full, true)], "the first sync");
    // Two changes with a sync between them: two partial syncs, each reported.
    rig.add_service("web", "172.30.0.1");
    sleep(Duration::from_millis(1)).await;
    rig.add_service("api", "172.30.0.2");
    sleep(Duration::from_millis(1)).await;
    rig.dataplane.fail_next("kernel said no");
    rig.add_service("db", "172.30.0.3");
    sleep(Duration::from_millis(1)).await;
    // The retry after the failure is full; then an idle sync period passes.
    sleep(Duration::from_secs(1)).await;
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        rig.reports(),
        [
            (SyncKind::Full, true),
            (SyncKind::Partial, true),
            (SyncKind::Partial, true),
            (SyncKind::Partial, false),
            (SyncKind::Full, true),
            (SyncKind::Skipped, true),
        ]
    );
    assert_eq!(
        rig.kinds(),
        ["full", "partial", "partial", "partial-failed", "full"]
    );
    rig.stop().await;
}
