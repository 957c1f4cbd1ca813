//! An in-process stand-in for the Kubernetes API server: list, watch and get of core/v1
//! Services and Nodes, discovery.k8s.io/v1 EndpointSlices and networking.k8s.io/v1
//! ServiceCIDRs over plain HTTP/JSON, enough for kube-rs clients and kube-runtime watchers.
//!
//! - One global, monotonically increasing resourceVersion; every object carries
//!   `metadata.resourceVersion`, `uid` and `creationTimestamp`.
//! - List: `labelSelector`, `fieldSelector` (any dotted path, e.g. `metadata.name=n1`),
//!   `limit`/`continue` (pages consistent at the first page's version),
//!   `resourceVersion` with `resourceVersionMatch` `NotOlderThan` or `Exact`; 410 Gone
//!   (reason `Expired`) below the compaction point.
//! - Watch (`watch=true`): `{"type":...,"object":...}` lines after `resourceVersion`
//!   (ADDED for every object first when it is unset or `0`), `allowWatchBookmarks` (a
//!   BOOKMARK every [bookmark interval](ApiServer::set_bookmark_interval) and when the
//!   stream ends), `timeoutSeconds`, `sendInitialEvents=true` (ADDED events, then a BOOKMARK
//!   annotated `k8s.io/initial-events-end`), and an ERROR event with a 410 `Expired` Status
//!   when the version is older than the compaction point. An object that starts or stops
//!   matching a watch's selectors is ADDED or DELETED for it, as with the real watch cache.
//! - Changes come from the test through [`ApiServer`]'s methods (no writes over HTTP).
//!
//! ```no_run
//! # async fn demo() -> kproxy_rig::Result<()> {
//! use k8s_openapi::api::core::v1::Service;
//! use kproxy_apiserver::ApiServer;
//!
//! let server = ApiServer::start("127.0.0.1:0".parse().unwrap()).await?;
//! server.kubeconfig("/tmp/kubeconfig")?;
//! let mut svc = Service::default();
//! svc.metadata.name = Some("web".into());
//! let created = server.create(&svc)?; // namespace "default", resourceVersion, uid...
//! server.compact(); // older versions now answer 410 Gone
//! server.stop().await; // every connection cut, nothing listening
//! server.restart().await?; // same address, same objects
//! # Ok(()) }
//! ```

mod listener;
mod routes;
mod selectors;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;

use kproxy_rig::NetNs;
use kproxy_rig::{Error, Result};
use listener::{Connections, TrackedListener};
use store::{Key, Mode, Store};

pub use store::{Kind, StoreError};

/// One HTTP request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, ...
    pub method: String,
    /// The path, e.g. `/api/v1/services`.
    pub path: String,
    /// The query parameters (empty when the query was malformed).
    pub query: BTreeMap<String, String>,
}

impl RequestRecord {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Whether this is a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }

    /// Whether this is a list (a collection GET that is not a watch) of `kind`.
    pub fn is_list_of(&self, kind: Kind) -> bool {
        !self.is_watch() && self.path.ends_with(&format!("/{}", kind.plural()))
    }

    /// Whether this is a watch of `kind`.
    pub fn is_watch_of(&self, kind: Kind) -> bool {
        self.is_watch() && self.path.ends_with(&format!("/{}", kind.plural()))
    }
}

/// State shared by the server's handlers and the test-side handle.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// The current resourceVersion, for waking watch streams.
    changed: tokio::sync::watch::Sender<u64>,
    /// Bumped by [`ApiServer::stop`]: every open watch stream ends.
    epoch: tokio::sync::watch::Sender<u64>,
    requests: Mutex<Vec<RequestRecord>>,
    bookmark_interval: Mutex<Duration>,
    active_watches: AtomicUsize,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // Every store operation leaves it consistent before anything can panic.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: RequestRecord) {
        self.requests().push(request);
    }

    fn bookmark_interval(&self) -> Duration {
        *self
            .bookmark_interval
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a change on the store and wakes the watch streams.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut store = self.store();
        let out = f(&mut store)?;
        let version = store.resource_version();
        drop(store);
        self.changed.send_replace(version);
        Ok(out)
    }
}

/// The serving part: the accept loop and the connections it opened.
struct Serving {
    task: JoinHandle<()>,
    connections: Arc<Connections>,
}

impl Serving {
    fn cut(&self) {
        self.task.abort();
        self.connections.shutdown_all();
    }
}

/// An API-server stand-in serving on one address, in one network namespace.
///
/// Dropping it stops serving (as [`stop`](Self::stop) does, without waiting).
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// `/run/netns/NAME` when serving inside a kit namespace.
    netns: Option<PathBuf>,
    serving: Mutex<Option<Serving>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts serving on `addr` (port 0 picks a free port) in the current network namespace.
    /// Only loopback addresses are accepted: the machine's own namespace must not be reachable
    /// from outside.
    ///
    /// # Errors
    ///
    /// When `addr` is not a loopback address or cannot be bound.
    pub async fn start(addr: SocketAddr) -> Result<ApiServer> {
        if !addr.ip().is_loopback() {
            return Err(Error::io(
                "starting the API-server stand-in",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{addr} is not a loopback address; use start_in with a kit namespace to serve elsewhere"
                    ),
                ),
            ));
        }
        Self::start_at(None, addr).await
    }

    /// Starts serving on `addr` (port 0 picks a free port) inside `netns`, so that a program
    /// running in that namespace reaches it, e.g. on `127.0.0.1:PORT`. The handle itself
    /// lives in the calling process; the namespace must outlive the server (and exist again
    /// for [`restart`](Self::restart)).
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or `addr` cannot be bound there.
    pub async fn start_in(netns: &NetNs, addr: SocketAddr) -> Result<ApiServer> {
        Self::start_at(
            Some(PathBuf::from(format!("/run/netns/{}", netns.name()))),
            addr,
        )
        .await
    }

    async fn start_at(netns: Option<PathBuf>, addr: SocketAddr) -> Result<ApiServer> {
        let (changed, _) = tokio::sync::watch::channel(0);
        let (epoch, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed,
            epoch,
            requests: Mutex::new(Vec::new()),
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
            active_watches: AtomicUsize::new(0),
        });
        shared
            .changed
            .send_replace(shared.store().resource_version());
        let listener = listener::bind(netns.as_deref(), addr)?;
        let addr = listener
            .local_addr()
            .map_err(|error| Error::io("reading the listener's address", error))?;
        let server = ApiServer {
            shared,
            addr,
            netns,
            serving: Mutex::new(None),
        };
        server.serve(listener);
        Ok(server)
    }

    fn serving(&self) -> MutexGuard<'_, Option<Serving>> {
        self.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let connections = Arc::new(Connections::default());
        let tracked = TrackedListener::new(listener, connections.clone());
        let router = routes::router(self.shared.clone());
        let task = tokio::spawn(async move {
            // `serve` only returns when the listener fails for good; nothing to report then.
            let _ = axum::serve(tracked, router).await;
        });
        if let Some(old) = self.serving().replace(Serving { task, connections }) {
            old.cut();
        }
    }

    /// The address served on (the real port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for `kube::Config::new` or `--master`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) pointing at [`url`](Self::url), without credentials.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kproxy-apiserver
  cluster:
    server: {}
contexts:
- name: kproxy-apiserver
  context:
    cluster: kproxy-apiserver
    user: kproxy-apiserver
    namespace: default
current-context: kproxy-apiserver
users:
- name: kproxy-apiserver
  user: {{}}
preferences: {{}}
",
            self.url()
        )
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) to `path`, for `--kubeconfig`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig_yaml())
            .map_err(|error| Error::io(format!("writing {}", path.display()), error))
    }

    /// Stops serving: closes the listener (new connections are refused) and cuts every open
    /// connection, watch streams included (waiting up to 2 s for the streams to be gone). The
    /// objects and their history are kept.
    pub async fn stop(&self) {
        let serving = self.serving().take();
        if let Some(serving) = serving {
            serving.cut();
            self.shared.epoch.send_modify(|epoch| *epoch += 1);
            let _ = serving.task.await;
            // The streams end at their next poll; give them a moment (bounded).
            for _ in 0..200 {
                if self.active_watches() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Listens again on the same address (and namespace) with the same objects and history.
    /// Does nothing when serving.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound again (or the namespace is gone).
    pub async fn restart(&self) -> Result<()> {
        if self.is_serving() {
            return Ok(());
        }
        let listener = listener::bind(self.netns.as_deref(), self.addr)?;
        self.serve(listener);
        Ok(())
    }

    /// Whether the server is listening (started or restarted and not stopped).
    pub fn is_serving(&self) -> bool {
        self.serving().is_some()
    }

    /// Creates an object from its JSON form (the kind from `apiVersion` and `kind`); fills in
    /// `namespace` (`default` when missing on namespaced kinds), `uid`, `creationTimestamp`,
    /// `generation` and `resourceVersion`. Returns the stored object.
    ///
    /// # Errors
    ///
    /// [`StoreError::AlreadyExists`], or when the object is malformed or of an unserved kind.
    pub fn create_json(&self, object: Value) -> Result<Value, StoreError> {
        self.upsert_json(object, Mode::Create)
    }

    /// Replaces an existing object (keeping its `uid` and `creationTimestamp`; the
    /// `resourceVersion` given is ignored: last write wins). Returns the stored object.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], or when the object is malformed or of an unserved kind.
    pub fn update_json(&self, object: Value) -> Result<Value, StoreError> {
        self.upsert_json(object, Mode::Update)
    }

    /// Creates the object, or replaces it when it exists. Returns the stored object.
    ///
    /// # Errors
    ///
    /// When the object is malformed or of an unserved kind.
    pub fn apply_json(&self, object: Value) -> Result<Value, StoreError> {
        self.upsert_json(object, Mode::Apply)
    }

    fn upsert_json(&self, object: Value, mode: Mode) -> Result<Value, StoreError> {
        self.shared
            .mutate(|store| store.upsert(object, mode))
            .map(|stored| (*stored).clone())
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds) and returns its
    /// last state, which watchers receive in a DELETED event.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`].
    pub fn delete_json(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, StoreError> {
        let key = key(kind, namespace, name);
        self.shared
            .mutate(|store| store.delete(&key))
            .map(|last| (*last).clone())
    }

    /// The stored object, if any.
    pub fn get_json(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(&key(kind, namespace, name))
            .map(|object| (*object).clone())
    }

    /// Every stored object of `kind`, ordered by namespace and name.
    pub fn list_json(&self, kind: Kind) -> Vec<Value> {
        self.shared
            .store()
            .snapshot(kind, None)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, object)| (*object).clone())
            .collect()
    }

    /// Creates a typed object (a k8s-openapi `Service`, `EndpointSlice`, `ServiceCIDR` or
    /// `Node`); see [`create_json`](Self::create_json).
    ///
    /// # Errors
    ///
    /// As [`create_json`](Self::create_json).
    pub fn create<K>(&self, object: &K) -> Result<K, StoreError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        typed(self.create_json(serde_json::to_value(object)?)?)
    }

    /// Replaces a typed object; see [`update_json`](Self::update_json).
    ///
    /// # Errors
    ///
    /// As [`update_json`](Self::update_json).
    pub fn update<K>(&self, object: &K) -> Result<K, StoreError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        typed(self.update_json(serde_json::to_value(object)?)?)
    }

    /// Creates or replaces a typed object; see [`apply_json`](Self::apply_json).
    ///
    /// # Errors
    ///
    /// As [`apply_json`](Self::apply_json).
    pub fn apply<K>(&self, object: &K) -> Result<K, StoreError>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        typed(self.apply_json(serde_json::to_value(object)?)?)
    }

    /// Deletes a typed object by namespace (ignored when cluster-scoped) and name, e.g.
    /// `server.delete::<Service>(Some("default"), "web")`; returns its last state.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], or [`StoreError::Unsupported`] for an unserved kind.
    pub fn delete<K>(&self, namespace: Option<&str>, name: &str) -> Result<K, StoreError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        typed(self.delete_json(kind_of::<K>()?, namespace, name)?)
    }

    /// A typed stored object, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unsupported`] for an unserved kind, [`StoreError::Json`] when the stored
    /// object does not convert.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Result<Option<K>, StoreError>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        self.get_json(kind_of::<K>()?, namespace, name)
            .map(typed)
            .transpose()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the history, as etcd compaction does: watches and exact lists from any version
    /// older than the current one get 410 Gone (reason `Expired`) from now on, so watchers
    /// re-list. Watch streams that are up to date keep running. Returns the compaction point.
    pub fn compact(&self) -> u64 {
        self.shared.store().compact()
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted_version(&self) -> u64 {
        self.shared.store().compacted()
    }

    /// Sets how often watch streams that asked for bookmarks get one (default 1 s); applies to
    /// streams opened afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self
            .shared
            .bookmark_interval
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = interval.max(Duration::from_millis(10));
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests().clone()
    }

    /// How many requests received so far satisfy `predicate`.
    pub fn count_requests(&self, predicate: impl Fn(&RequestRecord) -> bool) -> usize {
        self.shared
            .requests()
            .iter()
            .filter(|r| predicate(r))
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.requests().clear();
    }

    /// How many watch streams are open right now.
    pub fn active_watches(&self) -> usize {
        self.shared.active_watches.load(Ordering::SeqCst)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(serving) = self.serving().take() {
            serving.cut();
            self.shared.epoch.send_modify(|epoch| *epoch += 1);
        }
    }
}

fn key(kind: Kind, namespace: Option<&str>, name: &str) -> Key {
    Key {
        kind,
        namespace: if kind.namespaced() {
            namespace.unwrap_or("default").to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

fn kind_of<K: k8s_openapi::Resource>() -> Result<Kind, StoreError> {
    Kind::from_type(K::API_VERSION, K::KIND).ok_or_else(|| StoreError::Unsupported {
        api_version: K::API_VERSION.to_owned(),
        kind: K::KIND.to_owned(),
    })
}

fn typed<K: DeserializeOwned>(value: Value) -> Result<K, StoreError> {
    Ok(serde_json::from_value(value)?)
}
