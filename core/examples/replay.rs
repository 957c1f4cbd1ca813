//! Replays Kubernetes manifests through the change tracker into the recording dataplane, and
//! prints what each file changed.
//!
//! ```text
//! cargo run -p kproxy-core --example replay -- [--node NAME] FILE_OR_DIR...
//! cargo run -p kproxy-core --example replay -- examples/manifests/initial.yaml examples/manifests/update.yaml
//! ```
//!
//! Each argument is a YAML file (several documents separated by `---`) or a directory, whose
//! `*.yaml` and `*.yml` files are read in name order (not recursively). Files are replayed in
//! the order given. In each document:
//!
//! - a `Service`, `EndpointSlice` or `Node` is an upsert (as `kubectl apply` would make it);
//! - a `List` (what `kubectl get -o yaml` prints for several objects) contributes its `items`;
//! - a watch event, `{type: ADDED | MODIFIED | DELETED, object: ...}` (what
//!   `kubectl get --watch --output-watch-events -o yaml` prints), is an upsert or a delete;
//! - anything else is reported and skipped.
//!
//! Only the Node named by `--node` is this proxy's (by default the first Node in the input):
//! its endpoints are the local ones. After each file the tracker is drained, the change set
//! printed (added `+`, changed `~` and removed `-` service ports, with the endpoints selected
//! for this node), and handed to a [`RecordingDataplane`] the way the reconciler would: the
//! first sync and any sync after a node change are full, the others incremental. Conversion
//! problems ([`ModelError`]s) are printed and the usable rest of each object is kept.
//!
//! Exits with 1 when a file cannot be read or is not YAML, or when the recording dataplane
//! refuses a change set (which would be a tracker bug), and with 2 on a usage error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde_json::{self, Value};
use kproxy_core::{
    ChangeSet, ConversionOptions, Dataplane, Endpoint, IpFamily, ModelError, NodeInfo,
    RecordedCall, RecordingDataplane, ServiceChangeTracker, ServicePort, ServicePortState,
    SessionAffinity, select_endpoints,
};

const USAGE: &str = "usage: replay [--node NAME] FILE_OR_DIR...";
const HELP: &str = "Replays Kubernetes manifests (Service, EndpointSlice, Node; List; watch events \
                    with type ADDED, MODIFIED or DELETED) through kproxy-core's change tracker \
                    into a recording dataplane, and prints the change set of each file.";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{HELP}\n{USAGE}");
        return ExitCode::SUCCESS;
    }
    // Read everything first: a file that cannot be read or parsed stops the replay before it
    // starts, rather than halfway through.
    let mut files = Vec::new();
    for path in &args.paths {
        match load(path) {
            Ok(loaded) => files.extend(loaded),
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::FAILURE;
            }
        }
    }
    let node_name = args.node.clone().or_else(|| first_node_name(&files));
    let node_name = node_name.unwrap_or_else(|| {
        println!("(no Node in the input and no --node: no endpoint counts as local)");
        String::new()
    });
    let mut replay = Replay::new(node_name);
    for file in &files {
        replay.file(file).await;
    }
    replay.summary();
    if replay.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Command line and input.
// ---------------------------------------------------------------------------------------------

struct Args {
    help: bool,
    node: Option<String>,
    paths: Vec<PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            help: false,
            node: None,
            paths: Vec::new(),
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => parsed.help = true,
                "--node" => parsed.node = Some(args.next().ok_or("--node needs a value")?),
                _ if arg.starts_with("--node=") => {
                    parsed.node = Some(arg["--node=".len()..].into())
                }
                _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
                _ => parsed.paths.push(arg.into()),
            }
        }
        if parsed.paths.is_empty() && !parsed.help {
            return Err("no file or directory given".into());
        }
        Ok(parsed)
    }
}

/// One input file, decoded.
struct File {
    path: PathBuf,
    events: Vec<Event>,
}

/// What one document (or one item of a `List`) asks for.
enum Event {
    Upsert(Object),
    Delete {
        kind: String,
        namespace: String,
        name: String,
    },
    /// A document that could not be used, with the reason.
    Skipped {
        what: String,
        reason: String,
    },
}

enum Object {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
}

/// Reads a file, or every YAML file of a directory in name order.
fn load(path: &Path) -> Result<Vec<File>, String> {
    let paths = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| format!("{}: {e}", path.display()))?
                .path();
            let yaml = entry
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            if yaml && entry.is_file() {
                paths.push(entry);
            }
        }
        paths.sort();
        paths
    } else {
        vec![path.to_owned()]
    };
    paths
        .into_iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // Every document is first read as a JSON value and then dispatched on its `kind`;
            // k8s-openapi's types are JSON-shaped, and one decoder handles all of them.
            let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|e| format!("{}: not valid YAML:\n{e}", path.display()))?;
            let mut events = Vec::new();
            for (index, document) in documents.into_iter().enumerate() {
                decode(document, &format!("document {}", index + 1), &mut events);
            }
            Ok(File { path, events })
        })
        .collect()
}

/// Turns one document into events.
fn decode(document: Value, position: &str, events: &mut Vec<Event>) {
    if document.is_null() {
        return; // an empty document, e.g. after a trailing `---`
    }
    if let (Some(kind), Some(object)) = (document.get("type"), document.get("object")) {
        let what = format!("{position} (watch event)");
        match kind.as_str() {
            Some("ADDED" | "MODIFIED") => decode(object.clone(), &what, events),
            Some("DELETED") => events.push(Event::Delete {
                kind: string_at(object, &["kind"]),
                namespace: string_at(object, &["metadata", "namespace"]),
                name: string_at(object, &["metadata", "name"]),
            }),
            _ => events.push(Event::Skipped {
                what,
                reason: format!("event type {kind}"),
            }),
        }
        return;
    }
    let kind = string_at(&document, &["kind"]);
    let what = format!(
        "{position} ({} {})",
        if kind.is_empty() { "no kind" } else { &kind },
        qualified_name(
            &string_at(&document, &["metadata", "namespace"]),
            &string_at(&document, &["metadata", "name"])
        ),
    );
    let object = match kind.as_str() {
        "List" => {
            let items = document
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (index, item) in items.into_iter().enumerate() {
                decode(item, &format!("{position}, item {}", index + 1), events);
            }
            return;
        }
        "Service" => serde_json::from_value(document).map(|o| Object::Service(Box::new(o))),
        "EndpointSlice" => {
            serde_json::from_value(document).map(|o| Object::EndpointSlice(Box::new(o)))
        }
        "Node" => serde_json::from_value(document).map(|o| Object::Node(Box::new(o))),
        _ => {
            events.push(Event::Skipped {
                what,
                reason: "not a kind kube-proxy reads".into(),
            });
            return;
        }
    };
    match object {
        Ok(object) => events.push(Event::Upsert(object)),
        Err(error) => events.push(Event::Skipped {
            what,
            reason: format!("cannot decode: {error}"),
        }),
    }
}

fn string_at(value: &Value, path: &[&str]) -> String {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn qualified_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

fn first_node_name(files: &[File]) -> Option<String> {
    files
        .iter()
        .flat_map(|file| &file.events)
        .find_map(|event| match event {
            Event::Upsert(Object::Node(node)) => node.metadata.name.clone(),
            _ => None,
        })
}

// ---------------------------------------------------------------------------------------------
// The replay: tracker → drain → print → recording dataplane.
// ---------------------------------------------------------------------------------------------

struct Replay {
    tracker: ServiceChangeTracker,
    dataplane: RecordingDataplane,
    synced_once: bool,
    objects: usize,
    model_errors: usize,
    skipped: usize,
    consistent: bool,
}

impl Replay {
    fn new(node_name: String) -> Self {
        Self {
            tracker: ServiceChangeTracker::new(
                NodeInfo::named(node_name),
                ConversionOptions::default(),
            ),
            dataplane: RecordingDataplane::new(),
            synced_once: false,
            objects: 0,
            model_errors: 0,
            skipped: 0,
            consistent: true,
        }
    }

    async fn file(&mut self, file: &File) {
        println!("== {}", file.path.display());
        for event in &file.events {
            self.event(event);
        }
        let changes = self.tracker.drain();
        print_changes(&changes, self.tracker.state().node());
        self.sync(&changes).await;
        println!();
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Upsert(object) => {
                self.objects += 1;
                let errors = match object {
                    Object::Service(service) => self.tracker.upsert_service(service),
                    Object::EndpointSlice(slice) => self.tracker.upsert_endpoint_slice(slice),
                    Object::Node(node) => self.node(node),
                };
                self.report(&errors);
            }
            Event::Delete {
                kind,
                namespace,
                name,
            } => {
                self.objects += 1;
                match kind.as_str() {
                    "Service" => self.tracker.delete_service(namespace, name),
                    "EndpointSlice" => self.tracker.delete_endpoint_slice(namespace, name),
                    // kube-proxy keeps the last known state of its own Node.
                    _ => println!(
                        "  ignored: deletion of {kind} {}",
                        qualified_name(namespace, name)
                    ),
                }
            }
            Event::Skipped { what, reason } => {
                self.skipped += 1;
                println!("  skipped {what}: {reason}");
            }
        }
    }

    /// Converts a Node; only this proxy's own Node is used, as kube-proxy watches only it.
    fn node(&mut self, node: &Node) -> Vec<ModelError> {
        let converted = kproxy_core::convert::node(node);
        if converted.value.name != self.tracker.node().name {
            println!(
                "  ignored: Node {} is not this proxy's node",
                converted.value.name
            );
            return Vec::new();
        }
        self.tracker.set_node(converted.value);
        converted.errors
    }

    fn report(&mut self, errors: &[ModelError]) {
        self.model_errors += errors.len();
        for error in errors {
            println!("  error: {error}");
        }
    }

    /// Hands the changes to the dataplane as the reconciler would.
    async fn sync(&mut self, changes: &ChangeSet) {
        let state = self.tracker.state();
        let result = if !self.synced_once || changes.node().is_some() {
            print!("dataplane: full sync of {} service port(s)", state.len());
            self.dataplane.full_sync(&state).await
        } else if changes.is_empty() {
            println!("dataplane: nothing to do");
            return;
        } else {
            print!(
                "dataplane: incremental sync of {} service port(s)",
                changes.len()
            );
            self.dataplane.sync(&state, changes).await
        };
        match result {
            Ok(()) => {
                self.synced_once = true;
                println!(": ok");
            }
            Err(error) => {
                // The recording dataplane checks that the change set leads from what it had
                // programmed to the desired state; this would be a tracker bug.
                self.consistent = false;
                println!(": FAILED: {error}");
            }
        }
    }

    fn summary(&self) {
        println!("== summary");
        let calls: Vec<String> = self
            .dataplane
            .calls()
            .iter()
            .map(|call| match call {
                RecordedCall::Sync {
                    changed, failed, ..
                } => {
                    format!(
                        "sync({}){}",
                        changed.len(),
                        if *failed { " failed" } else { "" }
                    )
                }
                RecordedCall::FullSync {
                    service_ports,
                    failed,
                } => {
                    format!(
                        "full_sync({service_ports}){}",
                        if *failed { " failed" } else { "" }
                    )
                }
                RecordedCall::Cleanup => "cleanup".into(),
            })
            .collect();
        println!(
            "{} object event(s), {} conversion error(s), {} document(s) skipped",
            self.objects, self.model_errors, self.skipped
        );
        println!("dataplane calls: {}", calls.join(", "));
        let programmed = self.dataplane.programmed();
        let matches = programmed == self.tracker.state();
        println!(
            "programmed state: {} service port(s), {} the tracker's desired state",
            programmed.len(),
            if matches {
                "equal to"
            } else {
                "DIFFERENT FROM"
            }
        );
        for (name, state) in programmed.iter() {
            println!("  {name}");
            println!("      {}", addresses(&state.port));
            println!("      {}", endpoint_counts(&state.endpoints));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Printing a change set.
// ---------------------------------------------------------------------------------------------

fn print_changes(changes: &ChangeSet, node: &NodeInfo) {
    if let Some(node) = changes.node() {
        println!("node {}: {}", node.name, describe_node(node));
    }
    // Not `is_empty()`: that is false when only the node changed.
    if changes.iter().next().is_none() {
        println!("no service port changed");
        return;
    }
    println!("{} service port(s) changed:", changes.len());
    for (name, change) in changes.iter() {
        match (&change.previous, &change.current) {
            (None, Some(current)) => {
                println!("  + {name}");
                print_port(current, node);
            }
            (Some(previous), Some(current)) => {
                let what = if change.endpoints_only() {
                    "endpoints"
                } else if previous.endpoints == current.endpoints {
                    "service"
                } else {
                    "service and endpoints"
                };
                println!("  ~ {name}  ({what} changed)");
                println!("      was: {}", endpoint_counts(&previous.endpoints));
                print_port(current, node);
            }
            (Some(previous), None) => {
                println!("  - {name}");
                println!("      was: {}", addresses(&previous.port));
                println!("      was: {}", endpoint_counts(&previous.endpoints));
            }
            (None, None) => {}
        }
    }
}

fn print_port(state: &ServicePortState, node: &NodeInfo) {
    let port = &state.port;
    println!("      {}", addresses(port));
    let policies = policies(port);
    if !policies.is_empty() {
        println!("      {policies}");
    }
    println!("      {}", endpoint_counts(&state.endpoints));
    // Endpoints are selected per family, as a backend programs them.
    let mut families: Vec<IpFamily> = port.cluster_ips.iter().map(IpFamily::of).collect();
    families.dedup();
    for family in families {
        let selected = select_endpoints(port, &state.endpoints, node, Some(family));
        let label = match family {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        };
        println!("      selected on {} ({label}):", node.name);
        if !selected.has_any_endpoints {
            println!("        none usable anywhere: traffic is rejected");
            continue;
        }
        let (cluster_users, local_users) = users(port);
        if port.uses_cluster_endpoints() {
            println!(
                "        cluster set ({cluster_users}): {}",
                list(&selected.cluster)
            );
        }
        if port.uses_local_endpoints() {
            println!(
                "        local set ({local_users}): {}",
                list(&selected.local)
            );
        }
    }
}

/// Which traffic uses the cluster-wide and the node-local endpoint set: traffic to the cluster
/// IP follows `internalTrafficPolicy`, traffic to node ports, external and load-balancer IPs
/// follows `externalTrafficPolicy`, except that with `Local` the traffic that starts on this
/// node (its pods, the host) is short-circuited to the cluster set, as upstream does.
fn users(port: &ServicePort) -> (String, String) {
    let (mut cluster, mut local) = (Vec::new(), Vec::new());
    if port.internal_policy_local {
        local.push("clusterIP traffic");
    } else {
        cluster.push("clusterIP traffic");
    }
    if port.externally_accessible() {
        if port.external_policy_local {
            cluster.push("external traffic from this node");
            local.push("external traffic");
        } else {
            cluster.push("external traffic");
        }
    }
    (cluster.join(", "), local.join(", "))
}

/// `clusterIP 10.96.0.20 port 443/TCP, nodePort 30443`: every address the port answers on.
fn addresses(port: &ServicePort) -> String {
    let mut text = format!(
        "clusterIP {} port {}/{}",
        join(&port.cluster_ips),
        port.port,
        port.protocol()
    );
    if let Some(node_port) = port.node_port {
        let _ = write!(text, ", nodePort {node_port}");
    }
    if !port.external_ips.is_empty() {
        let _ = write!(text, ", externalIPs {}", join(&port.external_ips));
    }
    if !port.load_balancer_ips.is_empty() {
        let _ = write!(text, ", load balancer {}", join(&port.load_balancer_ips));
    }
    text
}

/// Traffic policies and affinity, when not the defaults.
fn policies(port: &ServicePort) -> String {
    let mut parts = Vec::new();
    if port.external_policy_local {
        parts.push("externalTrafficPolicy Local".to_owned());
    }
    if port.internal_policy_local {
        parts.push("internalTrafficPolicy Local".to_owned());
    }
    if let SessionAffinity::ClientIp { timeout_seconds } = port.session_affinity {
        parts.push(format!("sessionAffinity ClientIP ({timeout_seconds} s)"));
    }
    if let Some(port) = port.health_check_node_port {
        parts.push(format!("healthCheckNodePort {port}"));
    }
    if !port.load_balancer_source_ranges.is_empty() {
        parts.push(format!(
            "loadBalancerSourceRanges {}",
            join(&port.load_balancer_source_ranges)
        ));
    }
    if let Some(distribution) = &port.traffic_distribution {
        parts.push(format!("trafficDistribution {distribution:?}"));
    }
    parts.join(", ")
}

/// `3 endpoints: 2 ready, 1 terminating`.
fn endpoint_counts(endpoints: &[Endpoint]) -> String {
    const CONDITIONS: [&str; 4] = [
        "ready",
        "terminating",
        "terminating and not serving",
        "not ready",
    ];
    let mut counts = [0usize; 4];
    for endpoint in endpoints {
        let condition = match (endpoint.ready, endpoint.terminating, endpoint.serving) {
            (true, _, _) => 0,
            (false, true, true) => 1,
            (false, true, false) => 2,
            (false, false, _) => 3,
        };
        counts[condition] += 1;
    }
    let counts: Vec<String> = CONDITIONS
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(condition, n)| format!("{n} {condition}"))
        .collect();
    match endpoints.len() {
        0 => "no endpoints".into(),
        1 => format!("1 endpoint: {}", counts.join(", ")),
        n => format!("{n} endpoints: {}", counts.join(", ")),
    }
}

fn describe_node(node: &NodeInfo) -> String {
    format!(
        "zone {}, pod CIDRs {}, addresses {}",
        node.zone.as_deref().unwrap_or("-"),
        join(&node.pod_cidrs),
        join(&node.addresses)
    )
}

/// The endpoints of one set. Only called when some endpoint is usable somewhere, so an empty
/// set means that traffic is dropped (rejection is for Services with no usable endpoint).
fn list(endpoints: &[&Endpoint]) -> String {
    if endpoints.is_empty() {
        return "none: this traffic is dropped".into();
    }
    let endpoints: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    endpoints.join(", ")
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
