//! Manifests source for kube-proxy-rs: Services, EndpointSlices, Nodes and ServiceCIDRs read
//! from YAML files instead of an API server (the binary's `--manifests`, the examples and the
//! demo).
//!
//! - [`read`] / [`read_paths`] / [`Manifests::from_yaml`] read files, directories (their
//!   `*.yaml` and `*.yml` files in name order) or text: multi-document YAML, `List` kinds, and
//!   the kinds Service, EndpointSlice, Node and ServiceCIDR (others are skipped). Namespaced
//!   objects without a namespace get `default`, as `kubectl apply` would. A document that does
//!   not decode (or has no kind) is skipped with one warning naming its file, its index, its
//!   kind, namespace and name when known, and why; an invalid file is an error of one line
//!   with its line and column. An object (kind, namespace, name) defined twice is warned
//!   about, naming both places, and the later definition wins: paths in the order given, a
//!   directory's files in name order, a file's documents in order.
//! - [`apply`] applies a new read on top of the previous one as a diff, under one lock of the
//!   tracker so that no sync sees half of it: what vanished from the files is deleted.
//! - [`run`] applies a first read, marks the source ready, then re-reads the files whenever
//!   they change. When a read holds no Node named like this node, one warning says so, and
//!   again only if it goes missing again after it was seen.
//!
//! Every source feeds the tracker through a [`Sink`] and reports to a [`SourceObserver`];
//! both live here rather than in `kproxy-kube` so that this light crate (no `kube` dependency)
//! and the API-server source (which depends on it and re-exports them) share one definition.
//!
//! ```no_run
//! # async fn demo(handle: kproxy_core::TrackerHandle, ready: kproxy_core::SourceReady)
//! #     -> Result<(), kproxy_manifests::ManifestError> {
//! let path = std::path::PathBuf::from("examples/manifests/initial.yaml");
//! let initial = kproxy_manifests::read(&path)?;
//! let sink = kproxy_manifests::Sink::unobserved(handle);
//! kproxy_manifests::run(vec![path], initial, sink, ready).await;
//! # Ok(()) }
//! ```

pub mod sink;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::SourceReady;
use serde_json::Value;

pub use sink::{LAST_CHANGE_TRIGGER_TIME, Sink, SourceObserver};

/// How often [`run`] checks the files for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The namespace of namespaced objects that name none, as `kubectl` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A problem reading the manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("{path}: not valid YAML: {message}")]
    Yaml {
        /// The path.
        path: PathBuf,
        /// The parser's message on one line, with the line and column in the file (a log
        /// record or an exit message stays one line; the parser's source snippet is left out).
        message: String,
    },
}

/// Every object the manifests hold.
#[derive(Debug, Default, Clone, PartialEq)]
#[non_exhaustive]
pub struct Manifests {
    /// Services by namespace and name.
    pub services: BTreeMap<(String, String), Service>,
    /// EndpointSlices by namespace and name.
    pub slices: BTreeMap<(String, String), EndpointSlice>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// The valid `spec.cidrs` of every ServiceCIDR object, by the object's name.
    pub service_cidrs: BTreeMap<String, Vec<IpNet>>,
}

impl Manifests {
    /// Reads YAML text (`origin` names it in logs, e.g. a file name).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let mut reader = Reader::default();
        reader.add_text(text, Path::new(origin))?;
        Ok(reader.manifests)
    }

    /// The cluster's service CIDRs: every ServiceCIDR object's, in name order.
    pub fn service_cidr_union(&self) -> Vec<IpNet> {
        self.service_cidrs.values().flatten().copied().collect()
    }
}

/// The YAML files under `path`: the file itself, or a directory's `*.yaml` and `*.yml` files in
/// name order.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let read = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read)? {
        let entry = entry.map_err(read)?.path();
        if entry.is_file()
            && entry
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(entry);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every object under `path` (a file or a directory).
pub fn read(path: &Path) -> Result<Manifests, ManifestError> {
    read_paths(&[path])
}

/// Reads every object under `paths` (files or directories), in order: an object that appears
/// again replaces the earlier one.
pub fn read_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Manifests, ManifestError> {
    let mut reader = Reader::default();
    for path in paths {
        for file in yaml_files(path.as_ref())? {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })?;
            reader.add_text(&text, &file)?;
        }
    }
    Ok(reader.manifests)
}

/// The parser's options: the default budget allows only 1,024 documents (and 250,000 nodes),
/// far less than a cluster dump holds. The files are the operator's own input, so the limits
/// are raised well beyond any real cluster while alias and depth limits stay.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1 << 24;
    budget.max_nodes = 1 << 30;
    budget.max_events = 1 << 31;
    budget.max_total_scalar_bytes = 1 << 31;
    serde_saphyr::options! { budget: Some(budget) }
}

/// Where a document was found, for logs.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    /// 1-based among the file's non-empty documents.
    document: usize,
    /// 0-based index in a List's `items`.
    item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// Accumulates objects over files, remembering where each came from to name duplicates.
#[derive(Default)]
struct Reader {
    manifests: Manifests,
    seen: BTreeMap<(&'static str, String, String), Origin>,
}

impl Reader {
    fn add_text(&mut self, text: &str, file: &Path) -> Result<(), ManifestError> {
        let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, yaml_options())
            .map_err(|e| ManifestError::Yaml {
                path: file.to_owned(),
                message: one_line(&e.without_snippet().to_string()),
            })?;
        for (index, document) in documents.into_iter().enumerate() {
            let origin = Origin {
                file: file.to_owned(),
                document: index + 1,
                item: None,
            };
            self.add_document(document, origin);
        }
        Ok(())
    }

    /// Notes `kind/namespace/name` as found at `origin`, warning if it was found before.
    fn note(&mut self, kind: &'static str, meta: &ObjectMeta, origin: &Origin) {
        let key = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        if let Some(first) = self.seen.insert(key, origin.clone()) {
            tracing::warn!(
                kind,
                namespace = meta.namespace.as_deref().unwrap_or_default(),
                name = meta.name.as_deref().unwrap_or_default(),
                kept = %origin,
                replaced = %first,
                "the same object is defined twice; the later definition ({origin}) replaces \
                 the earlier one ({first})"
            );
        }
    }

    fn add_document(&mut self, document: Value, origin: Origin) {
        // An empty document (`---` twice, a trailing `---`) holds nothing to skip.
        if document.is_null() {
            return;
        }
        let text = |pointer: &str| {
            document
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let skipped = Skipped {
            origin: &origin,
            kind: text("/kind"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
        };
        let decoded = match skipped.kind.as_str() {
            "List" | "ServiceList" | "EndpointSliceList" | "NodeList" | "ServiceCIDRList" => {
                if origin.item.is_some() {
                    skipped.warn("a List nested in a List");
                    return;
                }
                if let Some(Value::Array(items)) = document.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        let origin = Origin {
                            item: Some(index),
                            ..origin.clone()
                        };
                        self.add_document(item.clone(), origin);
                    }
                }
                return;
            }
            "Service" => serde_json::from_value::<Service>(document).map(|mut service| {
                default_namespace(&mut service.metadata);
                self.note("Service", &service.metadata, &origin);
                self.manifests
                    .services
                    .insert(key(&service.metadata), service);
            }),
            "EndpointSlice" => serde_json::from_value::<EndpointSlice>(document).map(|mut slice| {
                default_namespace(&mut slice.metadata);
                self.note("EndpointSlice", &slice.metadata, &origin);
                self.manifests.slices.insert(key(&slice.metadata), slice);
            }),
            "Node" => serde_json::from_value::<Node>(document).map(|node| {
                self.note("Node", &node.metadata, &origin);
                let name = node.metadata.name.clone().unwrap_or_default();
                self.manifests.nodes.insert(name, node);
            }),
            "ServiceCIDR" => serde_json::from_value::<ServiceCIDR>(document).map(|cidr| {
                self.note("ServiceCIDR", &cidr.metadata, &origin);
                let name = cidr.metadata.name.clone().unwrap_or_default();
                let values = cidr.spec.and_then(|spec| spec.cidrs).unwrap_or_default();
                let nets = values
                    .into_iter()
                    .filter_map(|value| match kproxy_core::convert::parse_cidr(&value) {
                        Ok(net) => Some(net),
                        Err(_) => {
                            tracing::warn!(origin = %origin, servicecidr = %name, %value, "ignoring an invalid ServiceCIDR");
                            None
                        }
                    })
                    .collect();
                self.manifests.service_cidrs.insert(name, nets);
            }),
            "" => {
                skipped.warn("it has no kind");
                return;
            }
            _ => {
                // Other kinds are expected in a directory of manifests; not worth a warning.
                tracing::debug!(origin = %origin, kind = %skipped.kind, namespace = %skipped.namespace, name = %skipped.name, "skipping a document of a kind the proxy does not read");
                return;
            }
        };
        if let Err(error) = decoded {
            skipped.warn(&format!(
                "it does not decode: {}",
                one_line(&error.to_string())
            ));
        }
    }
}

/// A document left out, named for its warning.
struct Skipped<'a> {
    origin: &'a Origin,
    kind: String,
    namespace: String,
    name: String,
}

impl Skipped<'_> {
    /// Warns that the document is skipped, naming its file, index, kind, namespace and name
    /// (empty when the document does not say) and `why`.
    fn warn(&self, why: &str) {
        tracing::warn!(
            origin = %self.origin,
            kind = %self.kind,
            namespace = %self.namespace,
            name = %self.name,
            "skipping {} ({}): {why}",
            self.origin,
            self.describe(),
        );
    }

    /// `Service ns/web`, `Node node-a`, `(no kind) ns/web`, `Service without a name`.
    fn describe(&self) -> String {
        let kind = if self.kind.is_empty() {
            "(no kind)"
        } else {
            &self.kind
        };
        match (self.namespace.as_str(), self.name.as_str()) {
            (_, "") => format!("{kind} without a name"),
            ("", name) => format!("{kind} {name}"),
            (namespace, name) => format!("{kind} {namespace}/{name}"),
        }
    }
}

/// `text` on one line: each line trimmed, joined by spaces, so that a log record never spans
/// several lines.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Gives a namespaced object without a namespace the default one, as `kubectl` would; the
/// tracker keys and programs it under that namespace.
fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}

fn key(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Applies `next` on top of `previous` through the sink: what changed is upserted, what
/// vanished is deleted, what stayed the same is left alone. All of it is applied under one
/// lock of the tracker ([`Sink::batch`]), so a sync programs the whole new read or none of it.
pub fn apply(sink: &Sink, previous: &Manifests, next: &Manifests) {
    // A batch asks for a sync even when it changes nothing.
    if previous == next {
        return;
    }
    sink.batch(|batch| {
        for (key, service) in &next.services {
            if previous.services.get(key) != Some(service) {
                batch.upsert_service(service);
            }
        }
        for key in previous
            .services
            .keys()
            .filter(|k| !next.services.contains_key(*k))
        {
            batch.delete_service(&key.0, &key.1);
        }
        for (key, slice) in &next.slices {
            if previous.slices.get(key) != Some(slice) {
                batch.upsert_endpoint_slice(slice);
            }
        }
        for key in previous
            .slices
            .keys()
            .filter(|k| !next.slices.contains_key(*k))
        {
            batch.delete_endpoint_slice(&key.0, &key.1);
        }
        // A Node that vanished keeps its last information, as with the API server.
        for (name, node) in &next.nodes {
            if previous.nodes.get(name) != Some(node) {
                batch.upsert_node(node);
            }
        }
        let cidrs = next.service_cidr_union();
        if cidrs != previous.service_cidr_union() {
            batch.set_service_cidrs(cidrs);
        }
    });
}

/// Warns (once, see [`Sink::this_node_missing`]) when `manifests` hold no Node named like
/// this node.
fn check_this_node(sink: &Sink, manifests: &Manifests) {
    let node = sink.handle().lock().node().name.clone();
    if !manifests.nodes.contains_key(&node) {
        sink.this_node_missing("the manifests hold no Node of this name");
    }
}

/// The files' paths, modification times and sizes, to notice changes.
fn fingerprint(paths: &[PathBuf]) -> BTreeSet<(PathBuf, Option<SystemTime>, u64)> {
    paths
        .iter()
        .flat_map(|path| yaml_files(path).unwrap_or_default())
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (file, modified, len)
        })
        .collect()
}

/// Applies the manifests read first (`initial`, read from `paths` by the caller so that
/// unreadable files are an error before anything starts), marks the source ready, then
/// re-reads `paths` every [`POLL_INTERVAL`] they changed, until the future is dropped. A
/// re-read that fails keeps what the last good one programmed.
pub async fn run(paths: Vec<PathBuf>, initial: Manifests, sink: Sink, ready: SourceReady) {
    let mut current = initial;
    apply(&sink, &Manifests::default(), &current);
    check_this_node(&sink, &current);
    ready.mark_ready();
    tracing::info!(paths = ?paths, services = current.services.len(), slices = current.slices.len(), "manifests loaded");
    let mut seen = fingerprint(&paths);
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let now = fingerprint(&paths);
        if now == seen {
            continue;
        }
        seen = now;
        match read_paths(&paths) {
            Ok(next) => {
                apply(&sink, &current, &next);
                check_this_node(&sink, &next);
                current = next;
                tracing::info!(paths = ?paths, services = current.services.len(), slices = current.slices.len(), "manifests changed; re-read");
            }
            Err(error) => {
                tracing::error!(%error, "cannot re-read manifests; keeping the previous ones");
            }
        }
    }
}
