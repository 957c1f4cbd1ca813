//! End to end, against the API-server stand-in: the real binary in a node namespace watches
//! Services, EndpointSlices and its Node over HTTP, programs real nftables, follows creates,
//! updates and deletes, keeps its rules while the API server is down, and converges after it
//! comes back with an expired history (410 Gone → re-list). A malformed field is counted in
//! the metrics and the rest of the object is still used.
//!
//! Needs root, iproute2 and nft; without them the test fails saying what is missing.
//!
//! Address conventions: node 192.168.70.2/24; pods 10.244.0.0/16 (client 10.244.1.100);
//! services 10.96.0.0/16; the API server on the node's 127.0.0.1:6443.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_apiserver::ApiServer;
use kproxy_core::Protocol;
use kproxy_objects as objects;
use kproxy_rig::probe::{self, Probe};
use kproxy_rig::process::{METRICS_ADDRESS, ProxyProcess, http_get, test_args};
use kproxy_rig::{World, WorldSpec, netns};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn node() -> Node {
    objects::node("e2e-node")
        .pod_cidr("10.244.1.0/24")
        .internal_ip("192.168.70.2")
        .build()
}

fn service(name: &str, cluster_ip: &str, external_ips: &[&str]) -> Service {
    external_ips
        .iter()
        .fold(
            objects::service("e2e", name).cluster_ip(cluster_ip),
            |service, ip| service.external_ip(ip),
        )
        .port("http", 80, "TCP")
        .build()
}

fn slice(service: &str, addresses: &[&str]) -> EndpointSlice {
    objects::slice("e2e", service, &format!("{service}-x"))
        .port("http", 8080, "TCP")
        .ready_on("e2e-node", addresses)
        .build()
}

async fn expect(world: &World, probe: &Probe, expectation: &str, timeout: Duration) {
    if let Err(seen) = probe::wait_for(world, probe, expectation, timeout).await {
        panic!("{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_the_api_server_and_survives_its_restarts() {
    if let Err(error) = netns::check_environment() {
        panic!("the end-to-end test cannot run here: {error}");
    }
    let mut spec = WorldSpec::new(BTreeMap::from([(
        "eth0".to_owned(),
        vec!["192.168.70.2/24".parse().expect("valid")],
    )]));
    spec.pod_networks = vec!["10.244.0.0/16".parse().expect("valid")];
    for endpoint in ["10.244.1.11", "10.244.2.12", "10.244.1.13"] {
        spec.endpoint(ip(endpoint), 8080, Protocol::Tcp);
    }
    let to_web = Probe::tcp(ip("10.244.1.100"), ip("10.96.0.10"), 80);
    let to_api = Probe::tcp(ip("10.244.1.100"), ip("10.96.0.20"), 80);
    spec.probe(&to_web).probe(&to_api);
    let world = World::build(spec).await.expect("world");

    let server = ApiServer::start_in(world.node(), SocketAddr::from(([127, 0, 0, 1], 6443)))
        .await
        .expect("api server");
    server.create(&node()).expect("node");
    server
        .create(&service("web", "10.96.0.10", &[]))
        .expect("web");
    server
        .create(&slice("web", &["10.244.1.11", "10.244.2.12"]))
        .expect("web slice");
    // A malformed external IP: counted and skipped, the Service itself still works.
    server
        .create(&service("api", "10.96.0.20", &["not-an-ip"]))
        .expect("api");
    server
        .create(&slice("api", &["10.244.1.13"]))
        .expect("api slice");

    let dir = std::env::temp_dir().join(format!("kproxy-e2e-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    server.kubeconfig(&kubeconfig).expect("kubeconfig");
    let metrics = METRICS_ADDRESS;
    let log = dir.join("kube-proxy.log");
    let kubeconfig_arg = kubeconfig.display().to_string();
    let args = test_args(
        "e2e-node",
        "10.244.0.0/16",
        &["--kubeconfig", &kubeconfig_arg],
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_kube-proxy"));
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
        Duration::from_secs(10),
    )
    .await;
    expect(&world, &to_api, "10.244.1.13:8080", Duration::from_secs(10)).await;
    let (_, text) = http_get(world.node(), metrics, "/metrics").expect("metrics");
    assert!(
        text.contains("kubeproxy_rs_invalid_fields_total{kind=\"Service\"} 1"),
        "{text}"
    );

    // Updates and deletes flow through the watch.
    server
        .update(&slice("web", &["10.244.2.12"]))
        .expect("scale down");
    expect(&world, &to_web, "10.244.2.12:8080", Duration::from_secs(10)).await;

    // The API server goes away: the rules stay.
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    expect(&world, &to_web, "10.244.2.12:8080", Duration::from_secs(2)).await;
    expect(&world, &to_api, "10.244.1.13:8080", Duration::from_secs(2)).await;

    // Meanwhile the cluster changes and the history is compacted: the watchers get 410 Gone,
    // re-list, and converge — including the deletion they never saw as an event.
    server
        .update(&slice("web", &["10.244.1.11"]))
        .expect("move web");
    server
        .delete::<Service>(Some("e2e"), "api")
        .expect("delete api");
    server.compact();
    server.restart().await.expect("restart");
    expect(&world, &to_web, "10.244.1.11:8080", Duration::from_secs(30)).await;
    expect(&world, &to_api, "", Duration::from_secs(30)).await;

    let status = proxy
        .stop(Duration::from_secs(10))
        .await
        .expect("stops on SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", log_tail());
    let _ = std::fs::remove_dir_all(&dir);
}
