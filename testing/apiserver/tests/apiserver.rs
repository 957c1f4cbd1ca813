//! The API-server stand-in against a real kube 5.0 client and kube-runtime watchers, on
//! 127.0.0.1 in the current namespace (plus one test inside a kit namespace). Every test is
//! bounded by a timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_apiserver::{ApiServer, Kind};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const CONVERGE: Duration = Duration::from_secs(30);

/// Runs a test body with a hard timeout.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test timed out");
}

async fn server() -> ApiServer {
    ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("starting the stand-in")
}

fn client(server: &ApiServer) -> Client {
    let url: axum::http::Uri = server.url().parse().unwrap();
    Client::try_from(kube::Config::new(url)).expect("a kube client")
}

fn service(name: &str, port: i32, labels: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(vec![ServicePort {
                port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "topology.kubernetes.io/zone".to_owned(),
                "zone-a".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// A watcher (default config unless given) feeding a reflector store, its events as short
/// strings (`init`, `init-apply NAME`, `init-done`, `apply NAME`, `delete NAME`, `error ...`).
struct Watch<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    store: Store<K>,
    events: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl<K> Watch<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let (tx, events) = mpsc::unbounded_channel();
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let text = match item {
                    Ok(watcher::Event::Init) => "init".to_owned(),
                    Ok(watcher::Event::InitApply(o)) => format!("init-apply {}", o.name_any()),
                    Ok(watcher::Event::InitDone) => "init-done".to_owned(),
                    Ok(watcher::Event::Apply(o)) => format!("apply {}", o.name_any()),
                    Ok(watcher::Event::Delete(o)) => format!("delete {}", o.name_any()),
                    Err(error) => format!("error {error}"),
                };
                if tx.send(text).is_err() {
                    break;
                }
            }
        });
        Watch {
            store,
            events,
            task,
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    /// Waits until the store holds exactly `names` and `check` holds on it.
    async fn converge(&self, names: &[&str], check: impl Fn(&[Arc<K>]) -> bool) {
        let want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let result = tokio::time::timeout(CONVERGE, async {
            loop {
                if self.names() == want && check(&self.store.state()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            result.is_ok(),
            "the watcher did not converge on {want:?}; it has {:?}",
            self.names()
        );
    }

    /// Every event received so far.
    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }
}

impl<K: Resource + Clone + 'static> Drop for Watch<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn port_of(service: &Service) -> i32 {
    service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_list_then_added_modified_deleted_reach_the_watcher() {
    bounded(async {
        let server = server().await;
        server.create(&service("a", 80, &[])).unwrap();
        server.create(&service("b", 80, &[])).unwrap();
        let mut watch = Watch::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        watch.converge(&["a", "b"], |_| true).await;

        server.create(&service("c", 80, &[])).unwrap();
        watch.converge(&["a", "b", "c"], |_| true).await;
        server.update(&service("a", 8080, &[])).unwrap();
        watch
            .converge(&["a", "b", "c"], |all| {
                all.iter()
                    .any(|s| s.name_any() == "a" && port_of(s) == 8080)
            })
            .await;
        server.delete::<Service>(Some("default"), "b").unwrap();
        watch.converge(&["a", "c"], |_| true).await;

        let events = watch.drain();
        let expected_prefix = ["init", "init-apply a", "init-apply b", "init-done"];
        assert_eq!(&events[..4], expected_prefix, "{events:?}");
        for event in ["apply c", "apply a", "delete b"] {
            assert!(
                events.contains(&event.to_owned()),
                "{event} missing in {events:?}"
            );
        }
        assert!(!events.iter().any(|e| e.starts_with("error")), "{events:?}");

        // The default watcher lists (paged, no resourceVersion) and then watches from the
        // list's version with bookmarks.
        let requests = server.requests();
        let list = requests
            .iter()
            .find(|r| r.is_list_of(Kind::Service))
            .unwrap();
        assert_eq!(list.path, "/api/v1/services");
        assert_eq!(list.param("limit"), Some("500"));
        assert_eq!(list.param("resourceVersion"), None);
        let watch_request = requests
            .iter()
            .find(|r| r.is_watch_of(Kind::Service))
            .unwrap();
        assert_eq!(watch_request.param("allowWatchBookmarks"), Some("true"));
        assert_eq!(watch_request.param("resourceVersion"), Some("3"));
        assert_eq!(watch_request.param("sendInitialEvents"), None);
        assert_eq!(server.count_requests(|r| r.is_list_of(Kind::Service)), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_carry_metadata_and_typed_gets_work() {
    bounded(async {
        let server = server().await;
        let created = server.create(&service("web", 80, &[])).unwrap();
        let meta = &created.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
        assert!(meta.creation_timestamp.is_some());
        assert_eq!(meta.resource_version.as_deref(), Some("2"));
        assert!(server.create(&service("web", 80, &[])).is_err());
        assert!(server.update(&service("nope", 80, &[])).is_err());
        let updated = server.apply(&service("web", 81, &[])).unwrap();
        assert_eq!(updated.metadata.uid, created.metadata.uid);
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("3"));

        let api = Api::<Service>::namespaced(client(&server), "default");
        let got = api.get("web").await.unwrap();
        assert_eq!(port_of(&got), 81);
        let missing = api.get("nope").await.unwrap_err();
        assert!(
            matches!(&missing, kube::Error::Api(status) if status.code == 404),
            "{missing:?}"
        );
        let list = Api::<Service>::namespaced(client(&server), "other")
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(list.items.is_empty());
        assert_eq!(list.metadata.resource_version.as_deref(), Some("3"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_filters_services_like_kube_proxy() {
    bounded(async {
        let server = server().await;
        server.create(&service("plain", 80, &[])).unwrap();
        server
            .create(&service(
                "headless",
                80,
                &[("service.kubernetes.io/headless", "")],
            ))
            .unwrap();
        server
            .create(&service(
                "other-proxy",
                80,
                &[("service.kubernetes.io/service-proxy-name", "other")],
            ))
            .unwrap();
        let selector = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
        let watch = Watch::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default().labels(selector),
        );
        watch.converge(&["plain"], |_| true).await;
        // Leaving the selector is a DELETED for this watcher; entering it an ADDED.
        server
            .update(&service(
                "plain",
                80,
                &[("service.kubernetes.io/headless", "")],
            ))
            .unwrap();
        watch.converge(&[], |_| true).await;
        server.update(&service("headless", 80, &[])).unwrap();
        watch.converge(&["headless"], |_| true).await;

        let list = Api::<Service>::all(client(&server))
            .list(&ListParams::default().labels("service.kubernetes.io/headless"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].name_any(), "plain");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_field_selector_and_cluster_scoped_get() {
    bounded(async {
        let server = server().await;
        server.create(&node("node-1")).unwrap();
        server.create(&node("node-2")).unwrap();
        let api = Api::<Node>::all(client(&server));
        let watch = Watch::start(
            api.clone(),
            watcher::Config::default().fields("metadata.name=node-1"),
        );
        watch.converge(&["node-1"], |_| true).await;
        let mut changed = node("node-1");
        changed
            .metadata
            .labels
            .get_or_insert_default()
            .insert("topology.kubernetes.io/zone".into(), "zone-b".into());
        server.update(&changed).unwrap();
        server.delete::<Node>(None, "node-2").unwrap();
        watch
            .converge(&["node-1"], |all| {
                all[0]
                    .labels()
                    .get("topology.kubernetes.io/zone")
                    .map(String::as_str)
                    == Some("zone-b")
            })
            .await;
        assert_eq!(api.get("node-1").await.unwrap().name_any(), "node-1");
        assert!(api.get("node-2").await.is_err());
        let list = api
            .list(&ListParams::default().fields("metadata.name=node-1"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_and_service_cidrs_are_watched() {
    bounded(async {
        let server = server().await;
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("prod".into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_owned(),
                    "web".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.0.0.2".into()],
                ..Endpoint::default()
            }],
            ports: None,
        };
        server.create(&slice).unwrap();
        let cidr = ServiceCIDR {
            metadata: ObjectMeta {
                name: Some("kubernetes".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceCIDRSpec {
                cidrs: Some(vec!["10.96.0.0/16".into()]),
            }),
            status: None,
        };
        server.create(&cidr).unwrap();
        let slices = Watch::start(
            Api::<EndpointSlice>::all(client(&server)),
            watcher::Config::default(),
        );
        let cidrs = Watch::start(
            Api::<ServiceCIDR>::all(client(&server)),
            watcher::Config::default(),
        );
        slices.converge(&["web-abc"], |_| true).await;
        cidrs.converge(&["kubernetes"], |_| true).await;
        let mut second = slice.clone();
        second.metadata.name = Some("web-def".into());
        server.create(&second).unwrap();
        server.delete::<ServiceCIDR>(None, "kubernetes").unwrap();
        slices.converge(&["web-abc", "web-def"], |_| true).await;
        cidrs.converge(&[], |_| true).await;
        let in_prod = Api::<EndpointSlice>::namespaced(client(&server), "prod")
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(in_prod.items.len(), 2);
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.path == "/apis/networking.k8s.io/v1/servicecidrs" && r.is_watch())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_strategy_converges() {
    bounded(async {
        let server = server().await;
        server.create(&service("a", 80, &[])).unwrap();
        let watch = Watch::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default().streaming_lists(),
        );
        watch.converge(&["a"], |_| true).await;
        server.create(&service("b", 80, &[])).unwrap();
        watch.converge(&["a", "b"], |_| true).await;
        let requests = server.requests();
        let first = requests.iter().find(|r| r.is_watch()).unwrap();
        assert_eq!(first.param("sendInitialEvents"), Some("true"));
        assert_eq!(server.count_requests(|r| r.is_list_of(Kind::Service)), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_resumes_the_watch_without_relisting() {
    bounded(async {
        let server = server().await;
        server.set_bookmark_interval(Duration::from_millis(200));
        server.create(&service("a", 80, &[])).unwrap();
        let watch = Watch::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        watch.converge(&["a"], |_| true).await;
        wait_for(|| server.active_watches() == 1).await;

        server.stop().await;
        assert!(!server.is_serving());
        assert_eq!(server.active_watches(), 0);
        assert!(
            tokio::net::TcpStream::connect(server.addr()).await.is_err(),
            "nothing listens while stopped"
        );
        server.create(&service("b", 80, &[])).unwrap();
        server.delete::<Service>(None, "a").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart().await.unwrap();
        watch.converge(&["b"], |_| true).await;
        // The watch resumed from its last version: the history had it all.
        assert_eq!(server.count_requests(|r| r.is_list_of(Kind::Service)), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_makes_the_watcher_relist_and_converge() {
    bounded(async {
        let server = server().await;
        server.create(&service("a", 80, &[])).unwrap();
        let mut watch = Watch::start(
            Api::<Service>::all(client(&server)),
            watcher::Config::default(),
        );
        watch.converge(&["a"], |_| true).await;
        wait_for(|| server.active_watches() == 1).await;

        server.stop().await;
        server.create(&service("b", 80, &[])).unwrap();
        server.delete::<Service>(None, "a").unwrap();
        let compacted = server.compact();
        server.restart().await.unwrap();
        watch.converge(&["b"], |_| true).await;

        // The watcher came back with its old version, got a 410 ERROR event, and listed again.
        let requests = server.requests();
        let resumed = requests
            .iter()
            .filter(|r| r.is_watch())
            .filter_map(|r| r.param("resourceVersion")?.parse::<u64>().ok())
            .any(|version| version < compacted);
        assert!(resumed, "no watch from an expired version in {requests:?}");
        assert_eq!(server.count_requests(|r| r.is_list_of(Kind::Service)), 2);
        let events = watch.drain();
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("error") && e.contains("Expired")),
            "{events:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_details_over_raw_http() {
    bounded(async {
        let server = server().await;
        for name in ["a", "b", "c"] {
            server.create(&service(name, 80, &[])).unwrap();
        }
        let client = client(&server);
        let get = |path: String| {
            let client = client.clone();
            async move {
                client
                    .request_text(axum::http::Request::get(path).body(Vec::new()).unwrap())
                    .await
            }
        };

        // Paging: consistent at the first page's version even when things change meanwhile.
        let api = Api::<Service>::all(client.clone());
        let first = api.list(&ListParams::default().limit(2)).await.unwrap();
        assert_eq!(first.items.len(), 2);
        let token = first.metadata.continue_.clone().expect("a continue token");
        server.delete::<Service>(None, "c").unwrap();
        let second = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(second.items.len(), 1, "the snapshot still has c");
        assert_eq!(second.items[0].name_any(), "c");
        assert_eq!(second.metadata.continue_, None);

        // A watch from version 2 replays later changes; the DELETED carries the last state
        // with the deletion's version; timeoutSeconds ends the stream with a bookmark.
        let text = get("/api/v1/services?watch=true&resourceVersion=2&timeoutSeconds=1&allowWatchBookmarks=true".into())
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(types[..3], ["ADDED", "ADDED", "DELETED"], "{text}");
        assert_eq!(lines[2]["object"]["metadata"]["resourceVersion"], "5");
        assert_eq!(lines[2]["object"]["spec"]["ports"][0]["port"], 80);
        let last = lines.last().unwrap();
        assert_eq!(last["type"], "BOOKMARK");
        assert_eq!(last["object"]["metadata"]["resourceVersion"], "5");
        assert_eq!(last["object"]["kind"], "Service");

        // sendInitialEvents: the current objects, then the end-of-initial-events bookmark.
        let text = get("/api/v1/services?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1".into())
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[2]["type"], "BOOKMARK");
        assert_eq!(
            lines[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );

        // After compaction: 410 on an exact list and on a continue, an ERROR event on a watch.
        server.compact();
        let gone = api
            .list(
                &ListParams::default()
                    .at("2")
                    .matching(kube::api::VersionMatch::Exact),
            )
            .await
            .unwrap_err();
        assert!(matches!(&gone, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"), "{gone:?}");
        let gone = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err();
        assert!(matches!(&gone, kube::Error::Api(s) if s.code == 410), "{gone:?}");
        let text = get("/api/v1/services?watch=true&resourceVersion=2".into())
            .await
            .unwrap();
        let error: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(error["type"], "ERROR");
        assert_eq!(error["object"]["code"], 410);
        assert_eq!(error["object"]["reason"], "Expired");

        // Lists at newer-or-equal versions are fine; errors are Status objects.
        let list = api
            .list(&ListParams::default().at("5").matching(kube::api::VersionMatch::NotOlderThan))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 2);
        let bad = api.list(&ListParams::default().labels("a in (b")).await.unwrap_err();
        assert!(matches!(&bad, kube::Error::Api(s) if s.code == 400), "{bad:?}");
        let missing = get("/apis/apps/v1/deployments".into()).await.unwrap_err();
        assert!(matches!(&missing, kube::Error::Api(s) if s.code == 404), "{missing:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_is_accepted_by_kube() {
    bounded(async {
        let server = server().await;
        server.create(&node("node-1")).unwrap();
        let path = std::env::temp_dir().join(format!("kpt-kubeconfig-{}", std::process::id()));
        server.kubeconfig(&path).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        assert!(config.cluster_url.to_string().starts_with(&server.url()));
        let client = Client::try_from(config).unwrap();
        let nodes = Api::<Node>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(nodes.items.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_inside_a_kit_namespace() {
    bounded(async {
        kproxy_rig::netns::check_environment().expect("root and iproute2");
        let ns = kproxy_rig::NetNs::new("apiserver").unwrap();
        let server = ApiServer::start_in(&ns, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.addr();
        let fetch = || {
            ns.run_in(move || {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            })
        };
        let answer = tokio::task::block_in_place(fetch).unwrap();
        assert!(answer.contains("gitVersion"), "{answer}");
        server.stop().await;
        assert!(tokio::task::block_in_place(fetch).is_err());
        server.restart().await.unwrap();
        let answer = tokio::task::block_in_place(fetch).unwrap();
        assert!(answer.contains("gitVersion"), "{answer}");
        assert_eq!(server.count_requests(|r| r.path == "/version"), 2);
    })
    .await;
}

/// Waits (bounded) until `condition` holds.
async fn wait_for(condition: impl Fn() -> bool) {
    let result = tokio::time::timeout(CONVERGE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "condition not reached in time");
}
