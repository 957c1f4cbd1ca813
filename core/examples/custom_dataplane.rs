//! A CNI author's own dataplane on top of kproxy-core.
//!
//! The datapath here is a *userspace table*: a map from a virtual address (cluster IP, port,
//! protocol) to what a packet sent there meets: a list of backends, a drop or a reject. A real
//! userspace proxy or an eBPF program would consult a table like this one for every new
//! connection; this example only fills it and prints it.
//!
//! What the core does for us: converting Kubernetes objects, batching events into minimal
//! change sets, waiting for every source's initial list, endpoint selection (ready / serving /
//! terminating fallback, traffic policies, topology hints), every packet decision (the plan) and the bounded-frequency sync loop
//! with retries. What we write: one `impl Dataplane`.
//!
//! Run it with `cargo run -p kproxy-core --example custom_dataplane`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Node, NodeSpec, Service, ServicePort as K8sServicePort, ServiceSpec,
    SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::plan::{FamilyPlan, PortPlan, Route};
use kproxy_core::{
    ChangeSet, ConversionOptions, Dataplane, DataplaneError, IpFamily, NodeInfo, Protocol,
    ProxyConfig, ProxyState, Readiness, Reconciler, ReconcilerConfig, ServiceChangeTracker,
    ServicePort, ServicePortState, SyncStatus, TrackerHandle, async_trait,
};
use tokio::sync::{oneshot, watch};

// ---------------------------------------------------------------------------------------------
// The datapath: a table of virtual addresses.
// ---------------------------------------------------------------------------------------------

/// A virtual address that clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Vip {
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
}

/// What a new connection to a [`Vip`] meets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Balance over these backends; with `affinity`, a client sticks to the backend it got
    /// for that long after its last connection.
    Forward {
        backends: Vec<SocketAddr>,
        affinity: Option<Duration>,
    },
    /// The service has usable endpoints, but none for this traffic (e.g.
    /// `internalTrafficPolicy: Local` and none on this node): drop silently, as upstream.
    Drop,
    /// The service has no usable endpoint anywhere: reject, so clients fail fast (upstream
    /// answers with ICMP "port unreachable" or a TCP reset).
    Reject,
}

/// The table the packet path reads. It is shared: the dataplane writes it, the forwarding
/// threads (here: `main`) read it. Every update swaps in a complete new table under the lock,
/// so a reader sees either the old table or the new one, never half of a sync.
#[derive(Debug, Clone, Default)]
struct SharedTable(Arc<Mutex<BTreeMap<Vip, Verdict>>>);

impl SharedTable {
    fn snapshot(&self) -> BTreeMap<Vip, Verdict> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, table: BTreeMap<Vip, Verdict>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = table;
    }
}

// ---------------------------------------------------------------------------------------------
// The Dataplane implementation.
// ---------------------------------------------------------------------------------------------

/// Programs the [`SharedTable`] from the core's desired state.
struct UserspaceTable {
    table: SharedTable,
}

/// The virtual addresses one service port occupies: one per cluster IP (one per family).
///
/// A complete datapath would also add node ports, external IPs and load-balancer IPs here,
/// following the plan's `external` route ([`kproxy_core::plan::ExternalPlan`]); they are
/// left out to keep the example short.
fn vips(port: &ServicePort) -> impl Iterator<Item = Vip> + '_ {
    port.cluster_ips.iter().map(|&ip| Vip {
        ip,
        port: port.port,
        protocol: port.protocol(),
    })
}

/// Computes the table entries of one service port as seen from this node. Every decision
/// (which endpoints, drop or reject) comes from core's plan; this only spells it in the
/// table's terms.
fn entries(port_state: &ServicePortState, state: &ProxyState) -> Vec<(Vip, Verdict)> {
    let config = ProxyConfig::default();
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .filter_map(|family| {
            let family = FamilyPlan::new(family, &config, state);
            // `None`: no cluster IP of this family.
            let plan = PortPlan::new(&family, port_state)?;
            let vip = Vip {
                ip: plan.cluster_ip,
                port: plan.port,
                protocol: plan.protocol,
            };
            // Traffic to a cluster IP follows the plan's *internal* route.
            let verdict = match plan.internal {
                Route::Endpoints(policy) => Verdict::Forward {
                    backends: plan
                        .endpoints(policy)
                        .iter()
                        .map(|planned| {
                            SocketAddr::new(planned.endpoint.address, planned.endpoint.port)
                        })
                        .collect(),
                    affinity: plan
                        .affinity_timeout
                        .map(|seconds| Duration::from_secs(u64::from(seconds))),
                },
                Route::Drop => Verdict::Drop,
                Route::Reject => Verdict::Reject,
            };
            Some((vip, verdict))
        })
        .collect()
}

#[async_trait]
impl Dataplane for UserspaceTable {
    fn name(&self) -> &str {
        "userspace-table"
    }

    /// Applies only what changed. Each [`kproxy_core::Change`] carries the service port's state at the
    /// previous sync and now, so the entries to remove are known exactly, even when the
    /// cluster IP or the port number changed.
    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        // The node's zone or name decide which endpoints are local or in-zone, for every
        // service: rebuild everything. (The reconciler already answers a node change with a
        // full sync; a dataplane that may be driven by other code should not rely on that.)
        if changes.node().is_some() {
            return self.full_sync(state).await;
        }
        // Work on a copy and swap it in at the end: the sync is all-or-nothing, as the trait
        // contract demands. Nothing below can fail, but a kernel-backed datapath would return
        // an error here and leave the old table in place.
        let mut table = self.table.snapshot();
        // Remove every old entry before adding any new one: a Service deleted and another
        // created with the same cluster IP can both be in one change set, in either key order.
        for (_, change) in changes.iter() {
            if let Some(previous) = &change.previous {
                for vip in vips(&previous.port) {
                    table.remove(&vip);
                }
            }
        }
        for (_, change) in changes.iter() {
            if let Some(current) = &change.current {
                table.extend(entries(current, state));
            }
        }
        println!(
            "  [dataplane] sync: {} changed service port(s)",
            changes.len()
        );
        self.table.replace(table);
        Ok(())
    }

    /// Rebuilds the table from the whole desired state. The reconciler calls this first, after
    /// any failed sync, when the node changed, and every `full_sync_period`.
    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let table = state
            .iter()
            .flat_map(|(_, port)| entries(port, state))
            .collect();
        println!("  [dataplane] full sync: {} service port(s)", state.len());
        self.table.replace(table);
        Ok(())
    }

    /// Removes everything this dataplane programmed (on uninstall, or when switching modes).
    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        println!("  [dataplane] cleanup");
        self.table.replace(BTreeMap::new());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Wiring: tracker, handle, readiness, reconciler.
// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The proxy runs on node-a, in zone-a. The tracker needs the node's name from the start,
    // to tell local endpoints from remote ones; the Node object adds the rest later.
    let tracker =
        ServiceChangeTracker::new(NodeInfo::named("node-a"), ConversionOptions::default());
    let handle = TrackerHandle::new(tracker);

    // Nothing is programmed until every source has finished its initial list: a half-listed
    // cluster would briefly reject traffic to Services whose EndpointSlices are not in yet.
    // Register every source before the reconciler starts: with none registered, it is ready
    // at once.
    let readiness = Readiness::new();
    let node_listed = readiness.register("nodes");
    let services_listed = readiness.register("services");
    let slices_listed = readiness.register("endpointslices");

    let table = SharedTable::default();
    let dataplane = UserspaceTable {
        table: table.clone(),
    };
    // Short periods so the example finishes at once; a real proxy keeps the defaults
    // (upstream's minSyncPeriod 1 s, syncPeriod 30 s).
    let config = ReconcilerConfig {
        min_sync_period: Duration::from_millis(20),
        sync_period: Duration::from_secs(1),
        full_sync_period: Duration::from_secs(3600),
        retry_initial: Duration::from_millis(20),
    };
    let mut reconciler = Reconciler::new(handle.clone(), Box::new(dataplane), readiness, config);
    let mut status = reconciler.status();
    // Told of every attempt, idle ones included (the status cell keeps only the last): what a
    // metric that counts syncs needs.
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    reconciler.on_sync(move |_report| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(reconciler.run(async {
        // Either a send or a dropped sender means "stop".
        let _ = stopped.await;
    }));

    // The initial lists, as watchers would deliver them. Conversion problems come back as
    // typed errors; the object's usable parts are taken all the same.
    println!("initial list");
    let this_node = kproxy_core::convert::node(&node("node-a", "zone-a", "10.244.1.0/24"));
    report(this_node.errors);
    handle.set_node(this_node.value);
    node_listed.mark_ready();

    // web is dual-stack; cart pins each client to one backend; admin has
    // `internalTrafficPolicy: Local`, so pods reach it only through an endpoint on their own
    // node, and node-a has none; search has no endpoints at all.
    let web = service("shop", "web", &["10.96.0.10", "fd00::10"], 80);
    let mut cart = service("shop", "cart", &["10.96.0.20"], 9000);
    if let Some(spec) = cart.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(600),
            }),
        });
    }
    let mut admin = service("shop", "admin", &["10.96.0.30"], 8443);
    if let Some(spec) = admin.spec.as_mut() {
        spec.internal_traffic_policy = Some("Local".into());
    }
    let search = service("shop", "search", &["10.96.0.40"], 80);
    for service in [&web, &cart, &admin, &search] {
        report(handle.upsert_service(service));
    }
    services_listed.mark_ready();

    let web_v4 = slice(
        "web",
        "web-v4",
        8080,
        &[
            ("10.244.1.5", "node-a", Condition::Ready),
            ("10.244.2.7", "node-b", Condition::Ready),
            ("10.244.2.8", "node-b", Condition::Terminating),
        ],
    );
    let web_v6 = slice(
        "web",
        "web-v6",
        8080,
        &[("fd00:244:1::5", "node-a", Condition::Ready)],
    );
    // cart's only pod is terminating, but still serving: with nothing ready anywhere, it
    // still gets the traffic.
    let cart = slice(
        "cart",
        "cart-v4",
        9000,
        &[("10.244.2.9", "node-b", Condition::Terminating)],
    );
    let admin = slice(
        "admin",
        "admin-v4",
        8443,
        &[("10.244.2.3", "node-b", Condition::Ready)],
    );
    for slice in [&web_v4, &web_v6, &cart, &admin] {
        report(handle.upsert_endpoint_slice(slice));
    }
    slices_listed.mark_ready();

    // The first sync is a full one, of everything listed above.
    wait_until(&mut status, |s| s.full_syncs >= 1).await?;
    print_table("after the initial list", &table);

    // A rollout: web's terminating pod is gone and a new pod is ready. Only shop/web:http
    // changed, so the next sync is incremental and touches web's two entries only.
    println!("\nrollout of shop/web");
    report(handle.upsert_endpoint_slice(&slice(
        "web",
        "web-v4",
        8080,
        &[
            ("10.244.1.5", "node-a", Condition::Ready),
            ("10.244.2.7", "node-b", Condition::Ready),
            ("10.244.1.6", "node-a", Condition::Ready),
        ],
    )));
    wait_until(&mut status, |s| s.partial_syncs >= 1).await?;
    print_table("after the rollout", &table);

    // shop/cart is deleted, with its slice. Its entry goes; web's stays untouched.
    println!("\ndeletion of shop/cart");
    handle.delete_service("shop", "cart");
    handle.delete_endpoint_slice("shop", "cart-v4");
    wait_until(&mut status, |s| s.partial_syncs >= 2).await?;
    print_table("after the deletion", &table);

    // Stopping the reconciler hands the dataplane back with its table in place (a proxy that
    // restarts keeps forwarding meanwhile); `cleanup` is for uninstalling.
    let _ = stop.send(());
    let mut dataplane = running.await?;
    dataplane.cleanup().await?;
    print_table("after cleanup", &table);
    let last = status.borrow().clone();
    println!(
        "\n{} full and {} partial syncs, {} failures, {} attempts in all",
        last.full_syncs,
        last.partial_syncs,
        last.failures,
        attempts.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Waits (at most two seconds, so the example can never hang) until the reconciler's status
/// satisfies `done`.
async fn wait_until(
    status: &mut watch::Receiver<SyncStatus>,
    done: impl FnMut(&SyncStatus) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(2), status.wait_for(done)).await??;
    Ok(())
}

fn report(errors: Vec<kproxy_core::ModelError>) {
    for error in errors {
        println!("  skipped a bad field: {error}");
    }
}

fn print_table(title: &str, table: &SharedTable) {
    println!("table {title}:");
    let table = table.snapshot();
    if table.is_empty() {
        println!("  (empty)");
    }
    for (vip, verdict) in &table {
        println!("  {vip:<22} {verdict}");
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that `{:<22}` lines the table up.
        f.pad(&format!(
            "{}/{}",
            SocketAddr::new(self.ip, self.port),
            self.protocol
        ))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Forward { backends, affinity } => {
                let backends: Vec<String> = backends.iter().map(ToString::to_string).collect();
                write!(f, "→ {}", backends.join(", "))?;
                if let Some(timeout) = affinity {
                    write!(f, "  (client-IP affinity, {} s)", timeout.as_secs())?;
                }
                Ok(())
            }
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects, as a watcher would deliver them.
// ---------------------------------------------------------------------------------------------

fn node(name: &str, zone: &str, pod_cidr: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("topology.kubernetes.io/zone".into(), zone.into())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: Some(vec![pod_cidr.into()]),
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

/// A ClusterIP Service with one TCP port named `http`.
fn service(namespace: &str, name: &str, cluster_ips: &[&str], port: i32) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ips.first().map(|ip| (*ip).into()),
            cluster_ips: Some(cluster_ips.iter().map(|ip| (*ip).into()).collect()),
            ports: Some(vec![K8sServicePort {
                name: Some("http".into()),
                port,
                ..K8sServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The conditions of a slice endpoint.
#[derive(Clone, Copy)]
enum Condition {
    Ready,
    /// Shutting down but still serving: used only when nothing is ready.
    Terminating,
}

/// An EndpointSlice of the Service `shop/{service}` for its `http` port. Its address type
/// follows the endpoints' addresses (all of one family, as in a real slice).
fn slice(
    service: &str,
    name: &str,
    port: i32,
    endpoints: &[(&str, &str, Condition)],
) -> EndpointSlice {
    let ipv6 = endpoints
        .iter()
        .any(|(address, _, _)| address.contains(':'));
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some(name.into()),
            labels: Some([("kubernetes.io/service-name".into(), service.into())].into()),
            ..ObjectMeta::default()
        },
        address_type: if ipv6 { "IPv6" } else { "IPv4" }.into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: endpoints
            .iter()
            .map(|&(address, node, condition)| {
                let ready = matches!(condition, Condition::Ready);
                K8sEndpoint {
                    addresses: vec![address.into()],
                    node_name: Some(node.into()),
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(true),
                        terminating: Some(!ready),
                    }),
                    ..K8sEndpoint::default()
                }
            })
            .collect(),
    }
}
