//! End to end, with the manifests source: the real binary in a node namespace programs real
//! nftables, packets flow, files change, a malformed object is counted and skipped, health and
//! metrics answer, SIGTERM leaves the rules and `--cleanup` removes them.
//!
//! Needs root, iproute2 and nft; without them the test fails saying what is missing.
//!
//! Address conventions: node 192.168.60.2/24; pods 10.244.0.0/16 (client 10.244.1.100,
//! endpoints 10.244.1.x and 10.244.2.x); services 10.96.0.0/16.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use kproxy_core::Protocol;
use kproxy_rig::probe::{self, Probe};
use kproxy_rig::process::{HEALTHZ_ADDRESS, METRICS_ADDRESS, ProxyProcess, http_get, test_args};
use kproxy_rig::{World, WorldSpec, netns};

const NODE: &str = "
apiVersion: v1
kind: Node
metadata: { name: e2e-node }
spec: { podCIDR: 10.244.1.0/24 }
status: { addresses: [ { type: InternalIP, address: 192.168.60.2 } ] }
";

fn service(name: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{ namespace: e2e, name: {name} }}\n\
         spec: {{ clusterIP: {ip}, ports: [ {{ name: http, port: 80 }} ] }}\n"
    )
}

fn slice(service: &str, addresses: &[&str]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!("{{ addresses: [\"{a}\"], nodeName: e2e-node }}"))
        .collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{ namespace: e2e, name: {service}-x, labels: {{ kubernetes.io/service-name: {service} }} }}\n\
         addressType: IPv4\nports: [ {{ name: http, port: 8080 }} ]\nendpoints: [ {} ]\n",
        endpoints.join(", ")
    )
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` and a health-check node port.
const LOCAL_LB: &str = "---
apiVersion: v1
kind: Service
metadata: { namespace: e2e, name: local-lb }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.30
  externalTrafficPolicy: Local
  healthCheckNodePort: 30999
  ports: [ { name: http, port: 80, nodePort: 30080 } ]
";

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).expect("write manifests");
    std::fs::rename(&tmp, dir.join("cluster.yaml")).expect("replace manifests");
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

async fn expect(world: &World, probe: &Probe, expectation: &str, timeout: Duration) {
    if let Err(seen) = probe::wait_for(world, probe, expectation, timeout).await {
        panic!("{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_drive_real_rules_health_metrics_and_lifecycle() {
    if let Err(error) = netns::check_environment() {
        panic!("the end-to-end test cannot run here: {error}");
    }
    let dir = std::env::temp_dir().join(format!("kproxy-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    write(
        &dir,
        &format!(
            "{NODE}{}{}{}{}{LOCAL_LB}{}",
            service("web", "10.96.0.10"),
            slice("web", &["10.244.1.11", "10.244.2.12"]),
            service("broken", "10.96.0.20"),
            // The second address is not an IP: that endpoint is skipped, the first one used.
            slice("broken", &["10.244.1.21", "10.244.1.not-an-ip"]),
            slice("local-lb", &["10.244.1.11"]),
        ),
    );

    let mut spec = WorldSpec::new(BTreeMap::from([(
        "eth0".to_owned(),
        vec!["192.168.60.2/24".parse().expect("valid")],
    )]));
    spec.pod_networks = vec!["10.244.0.0/16".parse().expect("valid")];
    for endpoint in ["10.244.1.11", "10.244.2.12", "10.244.1.21"] {
        spec.endpoint(ip(endpoint), 8080, Protocol::Tcp);
    }
    let to_web = Probe::tcp(ip("10.244.1.100"), ip("10.96.0.10"), 80);
    let to_broken = Probe::tcp(ip("10.244.1.100"), ip("10.96.0.20"), 80);
    spec.probe(&to_web).probe(&to_broken);
    let world = World::build(spec).await.expect("world");

    let (healthz, metrics) = (HEALTHZ_ADDRESS, METRICS_ADDRESS);
    let binary = Path::new(env!("CARGO_BIN_EXE_kube-proxy"));
    let log = dir.join("kube-proxy.log");
    let manifests = dir.display().to_string();
    let args = test_args("e2e-node", "10.244.0.0/16", &["--manifests", &manifests]);
    let proxy =
        ProxyProcess::start(binary, world.node(), &args, Some(&log)).expect("start kube-proxy");
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(error) = proxy
        .wait_healthy(world.node(), Duration::from_secs(30))
        .await
    {
        panic!("{error}");
    }

    expect(
        &world,
        &to_web,
        "10.244.1.11:8080, 10.244.2.12:8080",
        Duration::from_secs(5),
    )
    .await;
    expect(
        &world,
        &to_broken,
        "10.244.1.21:8080",
        Duration::from_secs(5),
    )
    .await;

    let (code, body) = http_get(world.node(), healthz, "/healthz").expect("healthz");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("healthz answers JSON");
    assert!(
        json.get("lastUpdated").is_some() && json.get("currentTime").is_some(),
        "{body}"
    );
    assert_eq!(json["nodeEligible"], serde_json::Value::Bool(true));
    let (code, _) = http_get(world.node(), healthz, "/livez").expect("livez");
    assert_eq!(code, 200);
    let (code, text) = http_get(world.node(), metrics, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_rs_invalid_fields_total{kind=\"EndpointSlice\"} 1",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // With `minSyncPeriod: 0s` the first full sync is counted too, under upstream's family
    // label.
    let full_syncs = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} ",
            )
        })
        .and_then(|count| count.trim().parse::<f64>().ok());
    assert!(
        full_syncs.is_some_and(|count| count >= 1.0),
        "the first full sync is not counted:\n{text}"
    );

    // The health-check node port of the Local-policy LoadBalancer answers with its local
    // endpoint count.
    let health_port = SocketAddr::from(([127, 0, 0, 1], 30999));
    let (code, body) = http_get(world.node(), health_port, "/").expect("health-check node port");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["localEndpoints"], 1, "{body}");
    assert_eq!(json["service"]["name"], "local-lb", "{body}");

    // Scale web down to one pod: the rules follow the file.
    write(
        &dir,
        &format!(
            "{NODE}{}{}",
            service("web", "10.96.0.10"),
            slice("web", &["10.244.2.12"])
        ),
    );
    expect(&world, &to_web, "10.244.2.12:8080", Duration::from_secs(10)).await;
    // The listener closes right after the sync that removed its Service.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while http_get(world.node(), health_port, "/").is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the health-check port stays open after its Service is gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // broken is gone and no ServiceCIDR is known: its address is left alone.
    expect(&world, &to_broken, "", Duration::from_secs(10)).await;

    // SIGTERM: exit 0, rules stay.
    let status = proxy
        .stop(Duration::from_secs(10))
        .await
        .expect("stops on SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", log_tail());
    expect(&world, &to_web, "10.244.2.12:8080", Duration::from_secs(2)).await;

    // --cleanup removes everything and exits 0.
    let cleanup = std::process::Command::new(binary)
        .args(["--netns", world.node_netns(), "--cleanup"])
        .output()
        .expect("run --cleanup");
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let tables = world
        .node()
        .exec("nft", &["list", "tables"], None)
        .expect("nft list tables");
    assert!(
        !tables.contains("kube-proxy"),
        "tables left after --cleanup: {tables}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
