//! HTTP routes: list, watch and get for the served kinds, plus `/version` and health paths.
//! Errors are `Status` objects with the real API server's codes and reasons.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Key, Kind, VersionError};
use super::watch::{self, Filter, Start, WatchRequest};
use super::{RequestRecord, Shared};

/// How long a watch lasts when the client gives no `timeoutSeconds` (the real server picks
/// 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The router serving everything from one handler.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

type Params = HashMap<String, String>;

/// A Status object as the API server sends it.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, json_body(&body)).into_response()
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A JSON response body with its content type.
fn json_body<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    query: Result<Query<Params>, QueryRejection>,
) -> Response {
    let params = query.map(|Query(params)| params);
    shared.record(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: params
            .as_ref()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    });
    let params = match params {
        Ok(params) => params,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "the API-server stand-in only serves GET (got {method} {})",
                uri.path()
            ),
        );
    }
    match segments.as_slice() {
        ["version"] => json_body(&json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-kproxy-apiserver",
            "platform": "linux/amd64",
        })),
        ["healthz" | "livez" | "readyz"] => "ok".into_response(),
        ["api", "v1", rest @ ..] => resource(&shared, "", "v1", rest, &params),
        ["apis", group, version, rest @ ..] => resource(&shared, group, version, rest, &params),
        _ => not_found_path(&uri),
    }
}

fn not_found_path(uri: &Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "the server could not find the requested resource ({})",
            uri.path()
        ),
    )
}

fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    params: &Params,
) -> Response {
    let kind = |plural: &str| Kind::from_path(group, version, plural);
    let missing = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource (/{group}/{version}/{})",
                rest.join("/")
            ),
        )
    };
    match rest {
        [plural] => match kind(plural) {
            Some(kind) => collection(shared, kind, None, params),
            None => missing(),
        },
        [plural, name] => match kind(plural) {
            Some(kind) if !kind.namespaced() => get(shared, kind, "", name),
            _ => missing(),
        },
        ["namespaces", namespace, plural] => match kind(plural) {
            Some(kind) if kind.namespaced() => {
                collection(shared, kind, Some((*namespace).to_owned()), params)
            }
            _ => missing(),
        },
        ["namespaces", namespace, plural, name] => match kind(plural) {
            Some(kind) if kind.namespaced() => get(shared, kind, namespace, name),
            _ => missing(),
        },
        _ => missing(),
    }
}

fn get(shared: &Shared, kind: Kind, namespace: &str, name: &str) -> Response {
    let key = Key {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let found = shared.store().get(&key);
    match found {
        Some(object) => json_body(&*object),
        None => {
            let body = json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("{} \"{name}\" not found", kind.plural()),
                "reason": "NotFound",
                "details": {"name": name, "group": kind.group(), "kind": kind.plural()},
                "code": 404,
            });
            (StatusCode::NOT_FOUND, json_body(&body)).into_response()
        }
    }
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn flag(params: &Params, name: &str) -> Option<bool> {
    param(params, name).map(|v| v == "true" || v == "1")
}

fn collection(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    params: &Params,
) -> Response {
    let labels = match LabelSelector::parse(param(params, "labelSelector").unwrap_or_default()) {
        Ok(labels) => labels,
        Err(message) => return bad_request(format!("labelSelector: {message}")),
    };
    let fields = match FieldSelector::parse(param(params, "fieldSelector").unwrap_or_default()) {
        Ok(fields) => fields,
        Err(message) => return bad_request(format!("fieldSelector: {message}")),
    };
    let filter = Filter {
        kind,
        namespace,
        labels,
        fields,
    };
    let version = match param(params, "resourceVersion").map(str::parse::<u64>) {
        None => None,
        Some(Ok(version)) => Some(version),
        Some(Err(_)) => return bad_request("resourceVersion: not a number".into()),
    };
    if flag(params, "watch") == Some(true) {
        watch(shared, filter, version, params)
    } else {
        list(shared, filter, version, params)
    }
}

fn watch(shared: &Arc<Shared>, filter: Filter, version: Option<u64>, params: &Params) -> Response {
    let send_initial_events = flag(params, "sendInitialEvents");
    let start = match (version, send_initial_events) {
        (_, Some(true)) => Start::Now {
            initial_events: true,
            end_marker: true,
        },
        (None | Some(0), initial) => Start::Now {
            initial_events: initial.unwrap_or(true),
            end_marker: false,
        },
        (Some(version), _) => Start::From(version),
    };
    let timeout = param(params, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let request = WatchRequest {
        filter,
        start,
        bookmarks: flag(params, "allowWatchBookmarks") == Some(true),
        timeout,
    };
    let mut response = Response::new(Body::from_stream(watch::events(shared.clone(), request)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Serialize)]
struct List<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

/// A continue token: the list's version and the last key returned.
fn continue_token(version: u64, key: &Key) -> String {
    format!("{version}/{}/{}", key.namespace, key.name)
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, '/');
    let version = parts.next()?.parse().ok()?;
    Some((version, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

fn list(shared: &Shared, filter: Filter, version: Option<u64>, params: &Params) -> Response {
    let limit = param(params, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let version_match = param(params, "resourceVersionMatch");
    let store = shared.store();
    let current = store.resource_version();
    // (the version to list at, None = current; the key after which to continue)
    let (at, after) = if let Some(token) = param(params, "continue") {
        match parse_continue(token) {
            Some((at, namespace, name)) => (
                Some(at),
                Some(Key {
                    kind: filter.kind,
                    namespace,
                    name,
                }),
            ),
            None => return bad_request(format!("continue: invalid token {token:?}")),
        }
    } else {
        match (version, version_match) {
            (None, Some(_)) => {
                return bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                );
            }
            (None, None) | (Some(0), None | Some("NotOlderThan")) => (None, None),
            (Some(v), Some("Exact")) if v > 0 => (Some(v), None),
            (Some(v), None | Some("NotOlderThan")) if v <= current => (None, None),
            (Some(v), None | Some("NotOlderThan")) => (Some(v), None),
            (Some(v), Some(other)) => {
                return bad_request(format!(
                    "resourceVersionMatch {other:?} is not valid with resourceVersion {v:?}"
                ));
            }
        }
    };
    let snapshot = match store.snapshot(filter.kind, at) {
        Ok(snapshot) => snapshot,
        Err(VersionError::Expired { requested, oldest }) => {
            let message = if after.is_some() {
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .to_owned()
            } else {
                format!("too old resource version: {requested} ({oldest})")
            };
            return status(StatusCode::GONE, "Expired", message);
        }
        Err(VersionError::TooLarge { requested, current }) => {
            return status(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            );
        }
    };
    drop(store);
    let list_version = at.unwrap_or(current);
    let matching: Vec<&(Key, Arc<Value>)> = snapshot
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after))
        .filter(|(key, object)| filter.matches(key, object))
        .collect();
    let page = limit.map_or(matching.len(), |limit| limit.min(matching.len()));
    let remaining = matching.len() - page;
    let items: Vec<&Value> = matching[..page]
        .iter()
        .map(|(_, object)| &**object)
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("resourceVersion", Value::String(list_version.to_string()));
    if remaining > 0
        && let Some((last, _)) = matching[..page].last()
    {
        metadata.insert(
            "continue",
            Value::String(continue_token(list_version, last)),
        );
        metadata.insert("remainingItemCount", Value::from(remaining));
    }
    json_body(&List {
        api_version: filter.kind.api_version(),
        kind: format!("{}List", filter.kind.kind()),
        metadata: json!(metadata),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens() {
        let key = Key {
            kind: Kind::Service,
            namespace: "ns".into(),
            name: "a".into(),
        };
        let token = continue_token(7, &key);
        assert_eq!(
            parse_continue(&token),
            Some((7, "ns".to_owned(), "a".to_owned()))
        );
        let node = Key {
            kind: Kind::Node,
            namespace: String::new(),
            name: "n1".into(),
        };
        assert_eq!(
            parse_continue(&continue_token(3, &node)),
            Some((3, String::new(), "n1".to_owned()))
        );
    }
}
