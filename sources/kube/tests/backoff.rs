//! The watchers against an API server that refuses connections: upstream's backoff, one
//! warning per failure naming the server and the cause, and a reset once the server answers.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kproxy_apiserver::{ApiServer, Kind};
use kproxy_core::{ConversionOptions, NodeInfo, Readiness, ServiceChangeTracker, TrackerHandle};
use kproxy_kube::{KubeReady, KubeSource, READINESS_SOURCES, Sink, SourceObserver};
use tokio::time::Instant;

/// When each watch error of kind Service happened (on the test's clock).
#[derive(Default)]
struct Errors(Mutex<Vec<Instant>>);

impl Errors {
    fn times(&self) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl SourceObserver for Errors {
    fn watch_error(&self, kind: &str, _: &dyn std::error::Error) {
        if kind == "Service" {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Instant::now());
        }
    }
}

/// Log records of this crate, one line each.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("kproxy_kube=info,kproxy_manifests=info")
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then let go).
fn refusing_address() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap()
}

/// Starts the source against `url`; returns the readiness to wait on.
fn start(url: &str, errors: &Arc<Errors>) -> (Readiness, tokio::task::JoinHandle<()>) {
    let config = kube::Config::new(url.parse().unwrap());
    let source = KubeSource::from_config(config, "node-a").unwrap();
    let handle = TrackerHandle::new(ServiceChangeTracker::new(
        NodeInfo::named("node-a"),
        ConversionOptions::default(),
    ));
    let (readiness, tokens) = Readiness::with_sources(READINESS_SOURCES);
    let ready = KubeReady::from_tokens(tokens).unwrap();
    let observer: Arc<dyn SourceObserver> = errors.clone();
    let task = tokio::spawn(source.run(Sink::new(handle, observer), ready));
    (readiness, task)
}

/// Waits (at most five minutes of the paused clock) until `count` failures were told.
async fn failures_reach(errors: &Errors, count: usize) {
    let reached = async {
        while errors.count() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(300), reached)
        .await
        .unwrap_or_else(|_| panic!("{count} failures expected, {} seen", errors.count()));
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The wait before retry `n` (0-based): 0.8 s doubling to 30 s; jitter adds up to as much
/// again.
fn base_delay(n: usize) -> Duration {
    Duration::from_millis(800)
        .saturating_mul(1 << n.min(10))
        .min(Duration::from_secs(30))
}

/// Each gap lies in [base, 2 * base] (plus what an attempt itself takes).
fn assert_backoff(gaps: &[Duration]) {
    let slack = Duration::from_millis(500);
    for (n, gap) in gaps.iter().enumerate() {
        let base = base_delay(n);
        assert!(
            *gap >= base && *gap <= base * 2 + slack,
            "retry {n} after {gap:?}, expected {base:?} to twice that: {gaps:?}"
        );
    }
}

/// Regression: every watcher retried about once a second forever (kube-runtime's
/// `default_backoff()` is reset by the `Event::Init` that precedes each list attempt), with two
/// records per failure that did not name the server.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unreachable_server_is_retried_with_growing_waits_and_named_once_per_failure() {
    let captured = Captured::default();
    let _guard = captured.install();
    let url = format!("http://{}/", refusing_address());
    let errors = Arc::new(Errors::default());
    let (_readiness, task) = start(&url, &errors);
    // Three minutes on the paused clock: the waits reach the 30 s ceiling.
    tokio::time::sleep(Duration::from_secs(180)).await;
    task.abort();

    let times = errors.times();
    // 0.8 + 1.6 + 3.2 + 6.4 + 12.8 + 25.6 + 30 + 30 + 30 = 140.4 s: at most 10 attempts in
    // 180 s, at least 5 even with the most jitter (1.6 + 3.2 + 6.4 + 12.8 = 24 s, then 51.2,
    // then up to 60). Before the fix there were about 180.
    assert!((5..=10).contains(&times.len()), "{:?}", gaps(&times));
    assert_backoff(&gaps(&times));

    let records: Vec<String> = captured
        .lines()
        .into_iter()
        .filter(|line| line.contains("cannot watch Service on "))
        .collect();
    assert_eq!(
        records.len(),
        times.len(),
        "one record per failure: {records:#?}"
    );
    for record in &records {
        assert!(record.contains(" WARN "), "{record}");
        assert!(
            record.contains(&format!("on the API server {url}")),
            "{record}"
        );
        assert!(record.contains("Connection refused"), "the cause: {record}");
        assert!(record.contains("retry_in="), "{record}");
    }
}

/// After the server answered, the next failure waits the shortest time again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_backoff_is_reset_once_the_server_answers() {
    let captured = Captured::default();
    let _guard = captured.install();
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    server.stop().await;
    let errors = Arc::new(Errors::default());
    let (readiness, task) = start(&server.url(), &errors);

    // Refused five times: the last wait is at least 6.4 s.
    failures_reach(&errors, 5).await;
    let before = gaps(&errors.times());
    assert_backoff(&before);

    server.restart().await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), readiness.wait())
        .await
        .expect("the source gets ready once the server answers");
    // The Node watcher's list had no Node named node-a.
    let missing: Vec<String> = captured
        .lines()
        .into_iter()
        .filter(|line| line.contains("can't get this node's Node object"))
        .collect();
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(missing[0].contains("node=node-a"), "{}", missing[0]);

    let failures = errors.count();
    server.stop().await;
    failures_reach(&errors, failures + 3).await;
    task.abort();
    let after = gaps(&errors.times()[failures..]);
    assert_backoff(&after);
    // Still only one warning about the Node: the relists after the restart did not repeat it.
    let missing = captured
        .lines()
        .iter()
        .filter(|line| line.contains("can't get this node's Node object"))
        .count();
    assert_eq!(missing, 1);
}

/// This node's Node missing from the API server is warned about once, not at every relist,
/// and again when it goes missing after it was seen.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_missing_node_is_warned_once_until_it_goes_missing_again() {
    let captured = Captured::default();
    let _guard = captured.install();
    let missing = |captured: &Captured| -> Vec<String> {
        captured
            .lines()
            .into_iter()
            .filter(|line| line.contains("can't get this node's Node object"))
            .collect()
    };
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let errors = Arc::new(Errors::default());
    let (readiness, task) = start(&server.url(), &errors);
    tokio::time::timeout(Duration::from_secs(60), readiness.wait())
        .await
        .expect("ready");
    assert_eq!(missing(&captured).len(), 1);

    // A later version compacted and every connection cut: the watchers get 410 Gone and
    // relist, still without the Node.
    let node_lists = |server: &ApiServer| server.count_requests(|r| r.is_list_of(Kind::Node));
    let lists = node_lists(&server);
    let mut other = Node::default();
    other.metadata.name = Some("node-b".into());
    server.create(&other).unwrap();
    server.compact();
    server.stop().await;
    server.restart().await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), async {
        while node_lists(&server) == lists {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the Node watcher relists");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(missing(&captured).len(), 1, "{:#?}", missing(&captured));

    // It appears, then is deleted: warned again.
    let mut node = Node::default();
    node.metadata.name = Some("node-a".into());
    server.create(&node).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.delete::<Node>(None, "node-a").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    task.abort();
    let missing = missing(&captured);
    assert_eq!(missing.len(), 2, "{missing:#?}");
    assert!(missing[1].contains("it was deleted"), "{}", missing[1]);
}
