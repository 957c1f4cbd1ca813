//! What the manifests source logs: one record per problem, naming the file, the document and
//! the object, and the missing Node once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kproxy_core::{ConversionOptions, NodeInfo, Readiness, ServiceChangeTracker, TrackerHandle};
use kproxy_manifests::{Manifests, POLL_INTERVAL, Sink, read};

/// Log records written by the code under test, one line each.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Sets a subscriber writing into this capture for the current thread.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
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

    fn warnings(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(" WARN "))
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

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kproxy-manifests-logs-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn handle() -> TrackerHandle {
    TrackerHandle::new(ServiceChangeTracker::new(
        NodeInfo::named("node-a"),
        ConversionOptions::default(),
    ))
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: ns }}\n\
         spec: {{ clusterIP: {ip}, ports: [ {{ port: 80 }} ] }}\n"
    )
}

const NODE_A: &str = "---\napiVersion: v1\nkind: Node\nmetadata: { name: node-a }\n";

#[test]
fn a_yaml_error_is_one_line_with_its_line_and_column() {
    let text = "apiVersion: v1\n---\nkind: Service\nmetadata:\n  name: x\n   bad: indent\n";
    let error = Manifests::from_yaml(text, "bad.yaml").unwrap_err();
    let message = error.to_string();
    assert!(!message.contains('\n'), "{message:?}");
    assert!(
        message.starts_with("bad.yaml: not valid YAML: "),
        "{message}"
    );
    assert!(message.contains("line 6, column 7"), "{message}");
}

#[test]
fn a_skipped_document_is_named_in_one_record() {
    let captured = Captured::default();
    let _guard = captured.install();
    let text = "\
apiVersion: v1
kind: Service
metadata: { namespace: ns, name: good }
spec: { clusterIP: 10.96.0.1, ports: [ { port: 80 } ] }
---
apiVersion: v1
kind: Service
metadata: { namespace: ns, name: broken }
spec: { ports: \"not a list\" }
---
apiVersion: v1
knd: Service
metadata: { namespace: ns, name: typo }
---
---
apiVersion: v1
kind: ConfigMap
metadata: { namespace: ns, name: other }
";
    let manifests = Manifests::from_yaml(text, "cluster.yaml").unwrap();
    assert_eq!(manifests.services.len(), 1);
    let warnings = captured.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains(
            "skipping cluster.yaml document 2 (Service ns/broken): it does not decode: invalid type"
        ),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1]
            .contains("skipping cluster.yaml document 3 ((no kind) ns/typo): it has no kind"),
        "{}",
        warnings[1]
    );
    // Every record is one line: each starts with the timestamp and level.
    assert!(captured.lines().iter().all(|line| line.contains(" WARN ")));
}

#[test]
fn an_object_in_two_files_is_warned_naming_both_and_the_later_wins() {
    let dir = temp_dir("twice");
    std::fs::write(dir.join("a.yaml"), service("web", "10.96.0.1")).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        service("other", "10.96.0.9") + &service("web", "10.96.0.2"),
    )
    .unwrap();
    let captured = Captured::default();
    let _guard = captured.install();
    let manifests = read(&dir).unwrap();
    let web = &manifests.services[&("ns".to_owned(), "web".to_owned())];
    assert_eq!(
        web.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.2")
    );
    let warnings = captured.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let a = dir.join("a.yaml").display().to_string();
    let b = dir.join("b.yaml").display().to_string();
    assert!(
        warnings[0].contains(&format!(
            "the later definition ({b} document 2) replaces the earlier one ({a} document 1)"
        )),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("kind=\"Service\"") || warnings[0].contains("kind=Service"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `text` and waits until [`kproxy_manifests::run`] has re-read it (paused clock).
async fn rewrite(file: &PathBuf, text: &str) {
    std::fs::write(file, text).unwrap();
    tokio::time::sleep(POLL_INTERVAL * 2 + Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_missing_node_is_warned_once_until_it_goes_missing_again() {
    let captured = Captured::default();
    let _guard = captured.install();
    let missing = |captured: &Captured| {
        captured
            .warnings()
            .iter()
            .filter(|line| line.contains("can't get this node's Node object"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let dir = temp_dir("node");
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, service("a", "10.96.0.1")).unwrap();
    let (readiness, mut tokens) = Readiness::with_sources(["manifests"]);
    let source = tokio::spawn(kproxy_manifests::run(
        vec![dir.clone()],
        read(&dir).unwrap(),
        Sink::unobserved(handle()),
        tokens.remove(0),
    ));
    readiness.wait().await;
    let first = missing(&captured);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0].contains("node=node-a"), "{}", first[0]);
    assert!(
        first[0].contains("the manifests hold no Node"),
        "{}",
        first[0]
    );

    // Re-read, still no Node: no second warning.
    rewrite(
        &file,
        &(service("a", "10.96.0.1") + &service("bb", "10.96.0.2")),
    )
    .await;
    assert_eq!(missing(&captured).len(), 1);
    // The Node appears, then goes missing again: warned again, once.
    rewrite(&file, &(service("a", "10.96.0.1") + NODE_A)).await;
    assert_eq!(missing(&captured).len(), 1);
    rewrite(&file, &service("ccc", "10.96.0.3")).await;
    assert_eq!(missing(&captured).len(), 2);
    rewrite(&file, &service("dddd", "10.96.0.4")).await;
    assert_eq!(missing(&captured).len(), 2);
    source.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
