//! Reading manifests and applying them to a tracker, through the public API.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kproxy_core::{ConversionOptions, NodeInfo, Readiness, ServiceChangeTracker, TrackerHandle};
use kproxy_manifests::{Manifests, Sink, SourceObserver, apply, read};

/// A fresh directory under the system's temporary one.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kproxy-manifests-{}-{name}", std::process::id()));
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

fn service(namespace: Option<&str>, name: &str, ip: &str) -> String {
    let namespace = namespace.map_or(String::new(), |ns| format!(", namespace: {ns}"));
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: {name}{namespace} }}\n\
         spec: {{ clusterIP: {ip}, ports: [ {{ name: http, port: 80 }} ] }}\n"
    )
}

fn slice(namespace: Option<&str>, service: &str, address: &str) -> String {
    let namespace = namespace.map_or(String::new(), |ns| format!(", namespace: {ns}"));
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{ name: {service}-x{namespace}, labels: {{ kubernetes.io/service-name: {service} }} }}\n\
         addressType: IPv4\nports: [ {{ name: http, port: 8080 }} ]\n\
         endpoints: [ {{ addresses: [\"{address}\"], nodeName: node-a }} ]\n"
    )
}

/// The state after draining: (namespace, name, endpoint count) of every service port.
fn programmed(handle: &TrackerHandle) -> Vec<(String, String, usize)> {
    let mut tracker = handle.lock();
    tracker.drain();
    tracker
        .state()
        .iter()
        .map(|(name, port)| {
            (
                name.namespace.clone(),
                name.name.clone(),
                port.endpoints.len(),
            )
        })
        .collect()
}

#[test]
fn a_file_with_5000_documents_loads() {
    let dir = temp_dir("many");
    let file = dir.join("many.yaml");
    let text: String = (0..5000)
        .map(|i| {
            service(
                Some("big"),
                &format!("svc-{i}"),
                &format!("10.96.{}.{}", i / 250, i % 250 + 1),
            )
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let manifests = read(&file).unwrap();
    assert_eq!(manifests.services.len(), 5000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn objects_without_a_namespace_are_in_default() {
    let text = service(None, "web", "10.96.0.10") + &slice(None, "web", "10.244.1.5");
    let manifests = Manifests::from_yaml(&text, "inline").unwrap();
    let key = ("default".to_owned(), "web".to_owned());
    assert_eq!(
        manifests.services[&key].metadata.namespace.as_deref(),
        Some("default")
    );
    let slice_key = ("default".to_owned(), "web-x".to_owned());
    assert_eq!(
        manifests.slices[&slice_key].metadata.namespace.as_deref(),
        Some("default")
    );
}

#[test]
fn removing_an_object_without_a_namespace_removes_its_rules() {
    let handle = handle();
    let sink = Sink::unobserved(handle.clone());
    let both = service(None, "web", "10.96.0.10") + &slice(None, "web", "10.244.1.5");
    let first = Manifests::from_yaml(&both, "first").unwrap();
    apply(&sink, &Manifests::default(), &first);
    assert_eq!(
        programmed(&handle),
        [("default".to_owned(), "web".to_owned(), 1)]
    );

    // The slice vanishes: the service has no endpoint left.
    let service_only = Manifests::from_yaml(&service(None, "web", "10.96.0.10"), "second").unwrap();
    apply(&sink, &first, &service_only);
    assert_eq!(
        programmed(&handle),
        [("default".to_owned(), "web".to_owned(), 0)]
    );

    // The service vanishes too: nothing is left.
    apply(&sink, &service_only, &Manifests::default());
    assert_eq!(programmed(&handle), []);
}

#[test]
fn the_later_of_two_equal_objects_wins() {
    let dir = temp_dir("duplicates");
    // Twice in one file, and again in a later file (files are read in name order).
    std::fs::write(
        dir.join("a.yaml"),
        service(Some("ns"), "web", "10.96.0.1") + &service(Some("ns"), "web", "10.96.0.2"),
    )
    .unwrap();
    std::fs::write(dir.join("b.yml"), service(Some("ns"), "web", "10.96.0.3")).unwrap();
    std::fs::write(dir.join("c.txt"), service(Some("ns"), "web", "10.96.0.4")).unwrap();
    let manifests = read(&dir).unwrap();
    assert_eq!(manifests.services.len(), 1);
    let web = &manifests.services[&("ns".to_owned(), "web".to_owned())];
    assert_eq!(
        web.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.3")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lists_are_unpacked_and_bad_documents_skipped() {
    let text = "\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { namespace: ns, name: a }
    spec: { clusterIP: 10.96.0.1, ports: [ { port: 80 } ] }
  - apiVersion: v1
    kind: Node
    metadata: { name: node-a }
---
apiVersion: v1
kind: Service
metadata: { namespace: ns, name: broken }
spec: { ports: \"not a list\" }
---
apiVersion: v1
kind: ConfigMap
metadata: { namespace: ns, name: other }
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: { name: kubernetes }
spec: { cidrs: [ 10.96.0.0/16, not-a-cidr ] }
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: { name: legacy }
spec: { cidrs: [ \"172.030.000.000/016\" ] }
";
    let manifests = Manifests::from_yaml(text, "mixed").unwrap();
    let services: Vec<_> = manifests.services.keys().cloned().collect();
    assert_eq!(services, [("ns".to_owned(), "a".to_owned())]);
    assert!(manifests.nodes.contains_key("node-a"));
    assert_eq!(
        manifests.service_cidr_union(),
        // A legacy spelling (leading zeros) is read as decimal, as upstream reads it.
        [
            "10.96.0.0/16".parse::<ipnet::IpNet>().unwrap(),
            "172.30.0.0/16".parse().unwrap()
        ]
    );
}

#[test]
fn invalid_yaml_is_an_error() {
    let error = Manifests::from_yaml("kind: [unclosed", "bad.yaml").unwrap_err();
    assert!(
        error.to_string().starts_with("bad.yaml: not valid YAML"),
        "{error}"
    );
}

#[derive(Default)]
struct Counting {
    services: AtomicUsize,
    slices: AtomicUsize,
    nodes: AtomicUsize,
    invalid: AtomicUsize,
    triggers: AtomicUsize,
}

impl SourceObserver for Counting {
    fn invalid_field(&self, _: &kproxy_core::ModelError) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }
    fn service_changed(&self) {
        self.services.fetch_add(1, Ordering::Relaxed);
    }
    fn endpoint_slice_changed(&self) {
        self.slices.fetch_add(1, Ordering::Relaxed);
    }
    fn endpoint_slice_trigger_time(&self, _: kproxy_core::IpFamily, _: &str) {
        self.triggers.fetch_add(1, Ordering::Relaxed);
    }
    fn this_node(&self, _: &k8s_openapi::api::core::v1::Node) {
        self.nodes.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn the_observer_hears_changes_and_bad_fields() {
    let observer = Arc::new(Counting::default());
    let sink = Sink::new(handle(), observer.clone());
    let text = "\
apiVersion: v1
kind: Service
metadata: { namespace: ns, name: a }
spec: { clusterIP: 10.96.0.1, ports: [ { port: 80, protocol: BOGUS } ] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: ns
  name: a-x
  labels: { kubernetes.io/service-name: a }
  annotations: { endpoints.kubernetes.io/last-change-trigger-time: \"2025-01-01T00:00:00Z\" }
addressType: IPv4
endpoints: [ { addresses: [ 10.244.1.5 ] } ]
---
apiVersion: v1
kind: Node
metadata: { name: node-a }
---
apiVersion: v1
kind: Node
metadata: { name: node-b }
";
    let manifests = Manifests::from_yaml(text, "observed").unwrap();
    apply(&sink, &Manifests::default(), &manifests);
    assert_eq!(observer.services.load(Ordering::Relaxed), 1);
    assert_eq!(observer.slices.load(Ordering::Relaxed), 1);
    assert_eq!(observer.triggers.load(Ordering::Relaxed), 1);
    assert_eq!(observer.nodes.load(Ordering::Relaxed), 1, "only this node");
    assert!(
        observer.invalid.load(Ordering::Relaxed) >= 1,
        "the bogus protocol"
    );
    // Applying the same read again changes nothing.
    apply(&sink, &manifests, &manifests);
    assert_eq!(observer.services.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn run_rereads_changed_files() {
    let dir = temp_dir("run");
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, service(Some("ns"), "a", "10.96.0.1")).unwrap();
    let handle = handle();
    let (readiness, mut tokens) = Readiness::with_sources(["manifests"]);
    let initial = read(&dir).unwrap();
    let source = tokio::spawn(kproxy_manifests::run(
        vec![dir.clone()],
        initial,
        Sink::unobserved(handle.clone()),
        tokens.remove(0),
    ));
    tokio::time::timeout(Duration::from_secs(5), readiness.wait())
        .await
        .unwrap();
    assert_eq!(programmed(&handle).len(), 1);

    // Replaced by another service (the size changes too, so a coarse mtime cannot hide it).
    std::fs::write(&file, service(Some("ns"), "bbbb", "10.96.0.2")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = programmed(&handle);
        if now == [("ns".to_owned(), "bbbb".to_owned(), 0)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-read: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    source.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: a re-read was applied one object at a time, so a sync running meanwhile could
/// program half of it. Another thread drains as the reconciler does, as fast as it can, while
/// a re-read replaces 2,000 Services by 2,000 others: every drain holds all 4,000 changes or
/// none.
#[test]
fn a_reread_is_synced_whole_or_not_at_all() {
    let services = |prefix: &str| -> String {
        (0..2000)
            .map(|i| {
                service(
                    Some("ns"),
                    &format!("{prefix}-{i}"),
                    &format!("10.96.{}.{}", i / 250, i % 250 + 1),
                )
            })
            .collect()
    };
    let before = Manifests::from_yaml(&services("old"), "before").unwrap();
    let after = Manifests::from_yaml(&services("new"), "after").unwrap();
    let handle = handle();
    let sink = Sink::unobserved(handle.clone());
    apply(&sink, &Manifests::default(), &before);
    assert_eq!(handle.lock().drain().len(), 2000);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let handle = handle.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut sizes = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let size = handle.lock().drain().len();
                if size != 0 {
                    sizes.push(size);
                }
                if finished {
                    return sizes;
                }
                std::thread::yield_now();
            }
        })
    };
    apply(&sink, &before, &after);
    done.store(true, Ordering::Release);
    let sizes = drainer.join().unwrap();
    assert_eq!(sizes, [4000], "drains that saw part of the re-read");
    assert_eq!(handle.lock().state().len(), 2000);
}
