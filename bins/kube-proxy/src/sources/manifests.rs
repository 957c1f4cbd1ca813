//! The manifests source: Services, EndpointSlices and a Node read from YAML files instead of
//! an API server, re-read whenever a file changes. Each read is the complete desired state:
//! objects that disappeared from the files are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kproxy_core::SourceReady;
use serde_json::Value;

use super::Sink;

/// How often the files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// A problem reading the manifests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
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
        /// The parser's message.
        message: String,
    },
}

/// Every object the files hold, keyed by namespace and name.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Manifests {
    pub(crate) services: BTreeMap<(String, String), Service>,
    pub(crate) slices: BTreeMap<(String, String), EndpointSlice>,
    pub(crate) nodes: Vec<Node>,
    /// `spec.cidrs` of every ServiceCIDR object.
    pub(crate) service_cidrs: Vec<ipnet::IpNet>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The YAML files under `path` (a file, or a directory's `*.yaml`/`*.yml` in name order).
fn files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
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

/// Reads every object; documents of other kinds are skipped, undecodable ones logged.
pub(crate) fn read(path: &Path) -> Result<Manifests, ManifestError> {
    let mut manifests = Manifests::default();
    for file in files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| ManifestError::Yaml {
                path: file.clone(),
                message: e.to_string(),
            })?;
        for document in documents {
            add_document(&mut manifests, document, &file);
        }
    }
    Ok(manifests)
}

fn add_document(manifests: &mut Manifests, document: Value, file: &Path) {
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let decoded = match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" => {
            if let Some(Value::Array(items)) = document.get("items") {
                for item in items.clone() {
                    add_document(manifests, item, file);
                }
            }
            return;
        }
        "Service" => serde_json::from_value::<Service>(document).map(|s| {
            manifests.services.insert(key(&s.metadata), s);
        }),
        "EndpointSlice" => serde_json::from_value::<EndpointSlice>(document).map(|s| {
            manifests.slices.insert(key(&s.metadata), s);
        }),
        "Node" => serde_json::from_value::<Node>(document).map(|n| manifests.nodes.push(n)),
        "ServiceCIDR" => serde_json::from_value::<ServiceCIDR>(document).map(|cidr| {
            let cidrs = cidr.spec.and_then(|spec| spec.cidrs).unwrap_or_default();
            for value in cidrs {
                match value.parse() {
                    Ok(net) => manifests.service_cidrs.push(net),
                    Err(_) => tracing::warn!(file = %file.display(), %value, "ignoring an invalid ServiceCIDR"),
                }
            }
        }),
        _ => return,
    };
    if let Err(error) = decoded {
        tracing::warn!(file = %file.display(), %kind, %error, "skipping a document that does not decode");
    }
}

/// Applies `next` on top of `previous` (deleting what vanished) through the sink.
pub(crate) fn apply(sink: &Sink, previous: &Manifests, next: &Manifests) {
    for (key, service) in &next.services {
        if previous.services.get(key) != Some(service) {
            sink.upsert_service(service);
        }
    }
    for key in previous
        .services
        .keys()
        .filter(|k| !next.services.contains_key(*k))
    {
        sink.delete_service(&key.0, &key.1);
    }
    for (key, slice) in &next.slices {
        if previous.slices.get(key) != Some(slice) {
            sink.upsert_endpoint_slice(slice);
        }
    }
    for key in previous
        .slices
        .keys()
        .filter(|k| !next.slices.contains_key(*k))
    {
        sink.delete_endpoint_slice(&key.0, &key.1);
    }
    for node in &next.nodes {
        sink.upsert_node(node);
    }
    if next.service_cidrs != previous.service_cidrs {
        sink.handle.set_service_cidrs(next.service_cidrs.clone());
    }
}

/// The modification times of the files, to notice changes.
fn fingerprint(path: &Path) -> BTreeSet<(PathBuf, Option<SystemTime>, u64)> {
    files(path)
        .unwrap_or_default()
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (file, modified, len)
        })
        .collect()
}

/// Applies the manifests read first (`initial`), marks the source ready, then re-reads them
/// whenever they change, until the future is dropped.
pub(crate) async fn run(path: PathBuf, initial: Manifests, sink: Sink, ready: SourceReady) {
    let mut current = initial;
    apply(&sink, &Manifests::default(), &current);
    ready.mark_ready();
    tracing::info!(path = %path.display(), services = current.services.len(), slices = current.slices.len(), "manifests loaded");
    let mut seen = fingerprint(&path);
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read(&path) {
            Ok(next) => {
                apply(&sink, &current, &next);
                current = next;
                tracing::info!(path = %path.display(), "manifests changed; re-read");
            }
            // Keep what was programmed from the last good read.
            Err(error) => {
                tracing::error!(%error, "cannot re-read manifests; keeping the previous ones")
            }
        }
    }
}
