//! The object store: current objects, the history of changes, resourceVersions and compaction.
//!
//! Every change bumps one global resourceVersion (like etcd's revision). The history keeps
//! every change after the compaction point, each with the object before and after, so that a
//! watch can resume from any version at or after that point and a list can be answered at an
//! exact past version (for `resourceVersionMatch=Exact` and `continue` tokens).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

/// A kind of object the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Service (namespaced).
    Service,
    /// discovery.k8s.io/v1 EndpointSlice (namespaced).
    EndpointSlice,
    /// networking.k8s.io/v1 ServiceCIDR (cluster-scoped).
    ServiceCidr,
    /// core/v1 Node (cluster-scoped).
    Node,
}

impl Kind {
    /// Every kind served.
    pub const ALL: [Kind; 4] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::ServiceCidr,
        Kind::Node,
    ];

    /// The `kind` field, e.g. `ServiceCIDR`.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ServiceCidr => "ServiceCIDR",
            Kind::Node => "Node",
        }
    }

    /// The API group (empty for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::ServiceCidr => "networking.k8s.io",
        }
    }

    /// The `apiVersion` field, e.g. `v1` or `discovery.k8s.io/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceCidr => "networking.k8s.io/v1",
        }
    }

    /// The resource name in URLs, e.g. `endpointslices`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::ServiceCidr => "servicecidrs",
            Kind::Node => "nodes",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Service | Kind::EndpointSlice)
    }

    /// The kind with this `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
    }

    /// The kind served under `/api/v1/PLURAL` (group empty) or `/apis/GROUP/VERSION/PLURAL`.
    pub(crate) fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && version == "v1" && k.plural() == plural)
    }
}

/// Why the test-side API refused a change.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object's `apiVersion`/`kind` is not one the stand-in serves.
    #[error(
        "the API-server stand-in does not serve {api_version:?} {kind:?} (only Services, EndpointSlices, ServiceCIDRs and Nodes)"
    )]
    Unsupported {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },
    /// The object is malformed (not a JSON object, no name...).
    #[error("invalid object: {0}")]
    Invalid(String),
    /// `create` of an object that exists.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// The kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// `update` or `delete` of an object that does not exist.
    #[error("{kind} {key} not found")]
    NotFound {
        /// The kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// The typed object could not be converted to or from JSON.
    #[error("JSON conversion: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<StoreError> for crate::Error {
    fn from(error: StoreError) -> Self {
        let kind = match &error {
            StoreError::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
            StoreError::NotFound { .. } => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::InvalidInput,
        };
        crate::Error::io("API-server stand-in", std::io::Error::new(kind, error))
    }
}

/// Where an object lives: kind, namespace (empty when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Key {
    /// `namespace/name`, or `name` when cluster-scoped.
    pub(crate) fn display(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change in the history.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The resourceVersion this change created.
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) event: EventType,
    /// The object before the change (none for `Added`).
    pub(crate) previous: Option<Arc<Value>>,
    /// The object after the change; for `Deleted`, its last state carrying the deletion's
    /// resourceVersion (as the real API server sends it).
    pub(crate) object: Arc<Value>,
}

/// How `upsert` treats an existing or missing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Create,
    Update,
    Apply,
}

/// A requested version is not servable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionError {
    /// Older than the compaction point: 410 Gone (reason Expired).
    Expired {
        /// The version asked for.
        requested: u64,
        /// The oldest version still servable.
        oldest: u64,
    },
    /// Newer than the current version (the real server waits, then answers 504).
    TooLarge {
        /// The version asked for.
        requested: u64,
        /// The current version.
        current: u64,
    },
}

/// Objects, history and versions.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    /// The history holds every change with a version above this one.
    compacted: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Change>,
    uids: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: 1,
            compacted: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            uids: 0,
        }
    }
}

impl Store {
    /// The current resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets the history: versions older than the current one become 410 Gone.
    pub(crate) fn compact(&mut self) -> u64 {
        self.history.clear();
        self.compacted = self.rv;
        self.rv
    }

    /// The current object at `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.objects.get(key).cloned()
    }

    /// Creates or updates an object (kind from its `apiVersion`/`kind`), filling in metadata.
    pub(crate) fn upsert(&mut self, object: Value, mode: Mode) -> Result<Arc<Value>, StoreError> {
        let Value::Object(mut object) = object else {
            return Err(StoreError::Invalid("not a JSON object".into()));
        };
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (api_version, kind_name) = (field("apiVersion"), field("kind"));
        let kind = Kind::from_type(&api_version, &kind_name).ok_or(StoreError::Unsupported {
            api_version,
            kind: kind_name,
        })?;
        let mut meta = match object.remove("metadata") {
            Some(Value::Object(meta)) => meta,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(StoreError::Invalid("metadata is not an object".into())),
        };
        let mut name = string(&meta, "name");
        if name.is_empty() {
            let prefix = string(&meta, "generateName");
            if prefix.is_empty() || mode == Mode::Update {
                return Err(StoreError::Invalid(format!(
                    "{} without metadata.name",
                    kind.kind()
                )));
            }
            name = format!("{prefix}{:05x}", self.uids + 1);
        }
        let namespace = if kind.namespaced() {
            let namespace = string(&meta, "namespace");
            if namespace.is_empty() {
                "default".to_owned()
            } else {
                namespace
            }
        } else {
            String::new()
        };
        let key = Key {
            kind,
            namespace,
            name,
        };
        let previous = self.objects.get(&key).cloned();
        match (&previous, mode) {
            (Some(_), Mode::Create) => {
                return Err(StoreError::AlreadyExists {
                    kind: kind.kind(),
                    key: key.display(),
                });
            }
            (None, Mode::Update) => {
                return Err(StoreError::NotFound {
                    kind: kind.kind(),
                    key: key.display(),
                });
            }
            _ => {}
        }
        let rv = self.rv + 1;
        meta.insert("name".into(), Value::String(key.name.clone()));
        if kind.namespaced() {
            meta.insert("namespace".into(), Value::String(key.namespace.clone()));
        } else {
            meta.remove("namespace");
        }
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        let previous_meta = previous
            .as_deref()
            .and_then(|p| p.get("metadata"))
            .and_then(Value::as_object);
        match previous_meta {
            Some(old) => {
                for field in ["uid", "creationTimestamp"] {
                    if let Some(value) = old.get(field) {
                        meta.insert(field.into(), value.clone());
                    }
                }
                let generation = old.get("generation").and_then(Value::as_u64).unwrap_or(1);
                meta.insert("generation".into(), Value::from(generation + 1));
            }
            None => {
                self.uids += 1;
                meta.insert(
                    "uid".into(),
                    Value::String(format!("5eed0000-0000-4000-8000-{:012x}", self.uids)),
                );
                meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
                meta.insert("generation".into(), Value::from(1));
            }
        }
        let mut out = Map::new();
        out.insert("apiVersion".into(), Value::from(kind.api_version()));
        out.insert("kind".into(), Value::from(kind.kind()));
        out.insert("metadata".into(), Value::Object(meta));
        out.extend(
            object
                .into_iter()
                .filter(|(k, _)| k != "apiVersion" && k != "kind"),
        );
        let stored = Arc::new(Value::Object(out));
        self.rv = rv;
        self.objects.insert(key.clone(), stored.clone());
        self.history.push_back(Change {
            rv,
            key,
            event: if previous.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            previous,
            object: stored.clone(),
        });
        Ok(stored)
    }

    /// Deletes the object at `key` and returns its last state (with the deletion's version).
    pub(crate) fn delete(&mut self, key: &Key) -> Result<Arc<Value>, StoreError> {
        let previous = self.objects.remove(key).ok_or(StoreError::NotFound {
            kind: key.kind.kind(),
            key: key.display(),
        })?;
        self.rv += 1;
        let mut last = (*previous).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        }
        let last = Arc::new(last);
        self.history.push_back(Change {
            rv: self.rv,
            key: key.clone(),
            event: EventType::Deleted,
            previous: Some(previous),
            object: last.clone(),
        });
        Ok(last)
    }

    /// Every change after version `cursor`, oldest first.
    pub(crate) fn changes_since(
        &self,
        cursor: u64,
    ) -> Result<impl Iterator<Item = &Change>, VersionError> {
        if cursor < self.compacted {
            return Err(VersionError::Expired {
                requested: cursor,
                oldest: self.compacted,
            });
        }
        let start = self.history.partition_point(|change| change.rv <= cursor);
        Ok(self.history.range(start..))
    }

    /// The objects of `kind` as they were at version `at` (the current ones when `None`),
    /// ordered by namespace and name.
    pub(crate) fn snapshot(
        &self,
        kind: Kind,
        at: Option<u64>,
    ) -> Result<Vec<(Key, Arc<Value>)>, VersionError> {
        let mut objects: BTreeMap<Key, Arc<Value>> = self
            .objects
            .iter()
            .filter(|(key, _)| key.kind == kind)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if let Some(at) = at {
            if at > self.rv {
                return Err(VersionError::TooLarge {
                    requested: at,
                    current: self.rv,
                });
            }
            // Undo, newest first, every change made after `at`.
            for change in self
                .changes_since(at)?
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if change.key.kind != kind {
                    continue;
                }
                match &change.previous {
                    Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                    None => objects.remove(&change.key),
                };
            }
        }
        Ok(objects.into_iter().collect())
    }
}

fn string(meta: &Map<String, Value>, field: &str) -> String {
    meta.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The current time as RFC 3339 in UTC with second precision, as Kubernetes writes it.
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, port: u16) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": port}]}})
    }

    #[test]
    fn timestamps_have_second_precision() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
        assert!(now.parse::<jiff::Timestamp>().is_ok(), "{now}");
    }

    #[test]
    fn versions_history_and_snapshots() {
        let mut store = Store::default();
        let a = store.upsert(svc("a", 80), Mode::Create).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        assert_eq!(a["metadata"]["namespace"], "default");
        assert!(store.upsert(svc("a", 80), Mode::Create).is_err());
        assert!(store.upsert(svc("b", 80), Mode::Update).is_err());
        let a2 = store.upsert(svc("a", 81), Mode::Apply).unwrap();
        assert_eq!(a2["metadata"]["uid"], a["metadata"]["uid"]);
        let key = Key {
            kind: Kind::Service,
            namespace: "default".into(),
            name: "a".into(),
        };
        let gone = store.delete(&key).unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "4");
        assert_eq!(store.snapshot(Kind::Service, None).unwrap().len(), 0);
        let at2 = store.snapshot(Kind::Service, Some(2)).unwrap();
        assert_eq!(at2[0].1["spec"]["ports"][0]["port"], 80);
        assert_eq!(store.snapshot(Kind::Service, Some(1)).unwrap().len(), 0);
        assert_eq!(store.changes_since(2).unwrap().count(), 2);
        store.compact();
        assert_eq!(
            store.changes_since(3).err(),
            Some(VersionError::Expired {
                requested: 3,
                oldest: 4
            })
        );
        assert!(store.snapshot(Kind::Service, Some(5)).is_err());
    }
}
