//! Kernel tests of the kit itself: a small world with no dataplane (backend `none`), real
//! packets between namespaces. They need root and iproute2; without them they fail saying
//! what is missing, they never skip.
//!
//! Address conventions: node 192.168.0.2/24 and 2001:db8::1/64 on eth0; pods in 10.0.0.0/8
//! and fd00::/48; service-like addresses (owned by the gateway) in 172.30.0.0/16 and
//! fd00:30::/64; external clients 203.0.113.0/24, 2001:db8:1::/64 and 192.168.0.50 on the LAN.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kproxy_core::Protocol;
use kproxy_rig::probe::{self, CheckOptions, Expectation, Outcome, Probe};
use kproxy_rig::{World, WorldSpec, netns};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn require_kernel() {
    if let Err(error) = netns::check_environment() {
        panic!("kernel tests cannot run here: {error}");
    }
}

fn spec() -> WorldSpec {
    let mut interfaces = BTreeMap::new();
    interfaces.insert(
        "eth0".to_owned(),
        vec![
            "192.168.0.2/24".parse().expect("valid"),
            "2001:db8::1/64".parse().expect("valid"),
        ],
    );
    let mut spec = WorldSpec::new(interfaces);
    spec.pod_networks = vec![
        "10.0.0.0/8".parse().expect("valid"),
        "fd00::/48".parse().expect("valid"),
    ];
    spec.endpoint(ip("10.180.0.1"), 80, Protocol::Tcp)
        .endpoint(ip("10.180.0.1"), 53, Protocol::Udp)
        .endpoint(ip("fd00::1"), 80, Protocol::Tcp);
    spec
}

async fn expect(world: &World, probe: &Probe, expectation: &str) -> String {
    let expectation: Expectation = expectation.parse().expect("valid expectation");
    let verdict = probe::check(world, probe, &expectation, CheckOptions::default()).await;
    assert!(
        verdict.pass,
        "{probe}: expected {expectation}, saw {}",
        verdict.seen
    );
    verdict.seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_packets_reach_pods_bystanders_and_the_node() {
    require_kernel();
    let probes = [
        Probe::tcp(ip("10.0.0.2"), ip("10.180.0.1"), 80),
        Probe::udp(ip("10.0.0.2"), ip("10.180.0.1"), 53),
        Probe::tcp(ip("10.0.0.2"), ip("172.30.0.41"), 80),
        Probe::udp(ip("192.168.0.2"), ip("172.30.0.41"), 80),
        Probe::tcp(ip("203.0.113.2"), ip("192.168.0.2"), 3001),
        Probe::tcp(ip("203.0.113.2"), ip("172.30.0.41"), 80),
        Probe::tcp(ip("192.168.0.50"), ip("172.30.0.42"), 80),
        Probe::tcp(ip("127.0.0.1"), ip("127.0.0.1"), 3001),
        Probe::tcp(ip("fd00::2"), ip("fd00::1"), 80),
        Probe::tcp(ip("fd00::2"), ip("fd00:30::41"), 80),
        Probe::udp(ip("2001:db8:1::2"), ip("2001:db8::1"), 3001),
        Probe::tcp(ip("2001:db8:1::2"), ip("fd00:30::41"), 80),
    ];
    let mut spec = spec();
    for probe in &probes {
        spec.probe(probe);
    }
    let world = World::build(spec).await.expect("world builds");
    let names: Vec<String> = world
        .namespaces()
        .iter()
        .map(|ns| ns.name().to_owned())
        .collect();

    // A pod reaches an endpoint pod directly, with its own source.
    let seen = expect(&world, &probes[0], "").await;
    assert!(
        seen.contains("endpoint in pod") && seen.contains("source kept"),
        "{seen}"
    );
    expect(&world, &probes[0], "10.180.0.1:80").await;
    expect(&world, &probes[1], "10.180.0.1:53").await;
    // Nothing programmed: service addresses end at the gateway's bystander.
    let seen = expect(&world, &probes[2], "").await;
    assert!(seen.contains("bystander in gateway"), "{seen}");
    expect(&world, &probes[3], "").await;
    // External clients reach the node itself and, through it, the gateway.
    expect(&world, &probes[4], "ACCEPT").await;
    let seen = expect(&world, &probes[5], "").await;
    assert!(
        seen.contains("bystander in gateway") && seen.contains("source kept"),
        "{seen}"
    );
    expect(&world, &probes[6], "").await;
    expect(&world, &probes[7], "ACCEPT").await;
    // IPv6 alike.
    expect(&world, &probes[8], "[fd00::1]:80").await;
    expect(&world, &probes[9], "").await;
    expect(&world, &probes[10], "ACCEPT").await;
    expect(&world, &probes[11], "").await;
    // Expectations that do not hold fail.
    let verdict = probe::check(
        &world,
        &probes[2],
        &Expectation::Reject,
        CheckOptions::default(),
    )
    .await;
    assert!(!verdict.pass, "{}", verdict.seen);
    let verdict = probe::check(
        &world,
        &probes[2],
        &"10.180.0.1:80".parse().unwrap(),
        CheckOptions::default(),
    )
    .await;
    assert!(!verdict.pass, "{}", verdict.seen);

    drop(world);
    let left = netns::list_kit_namespaces().unwrap();
    for name in names {
        assert!(!left.contains(&name), "namespace {name} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewalled_ports_classify_as_drop_and_reject() {
    require_kernel();
    netns::require_tool("nft", &["--version"]).expect("nft is needed for this test");
    let drop_probe = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.99"), 9);
    let reject_probe = Probe::tcp(ip("10.0.0.2"), ip("172.30.0.99"), 10);
    let udp_drop = Probe::udp(ip("10.0.0.2"), ip("172.30.0.99"), 9);
    let udp_reject = Probe::udp(ip("10.0.0.2"), ip("172.30.0.99"), 10);
    let local_drop = Probe::udp(ip("192.168.0.2"), ip("172.30.0.99"), 11);
    let mut spec = spec();
    for probe in [
        &drop_probe,
        &reject_probe,
        &udp_drop,
        &udp_reject,
        &local_drop,
    ] {
        spec.probe(probe);
    }
    let world = World::build(spec).await.expect("world builds");
    // A firewall in the gateway (a namespace of the world, never the root one).
    world
        .gateway()
        .exec(
            "nft",
            &["-f", "-"],
            Some(
                "table inet kpt {\n chain input {\n  type filter hook input priority 0;\n  \
                 meta l4proto { tcp, udp } th dport 9 drop\n  \
                 meta l4proto { tcp, udp } th dport 10 reject\n }\n}\n",
            ),
        )
        .expect("nft in the gateway");
    // And one on the node's output path, which fails the send itself.
    world
        .node()
        .exec(
            "nft",
            &["-f", "-"],
            Some(
                "table inet kpt {\n chain output {\n  type filter hook output priority 0;\n  \
                 udp dport 11 drop\n }\n}\n",
            ),
        )
        .expect("nft in the node");
    let started = std::time::Instant::now();
    expect(&world, &drop_probe, "DROP").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "DROP took too long"
    );
    expect(&world, &reject_probe, "REJECT").await;
    expect(&world, &udp_drop, "DROP").await;
    expect(&world, &udp_reject, "REJECT").await;
    expect(&world, &local_drop, "DROP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sctp_probes_fail_clearly_without_kernel_support() {
    require_kernel();
    let sctp = Probe {
        protocol: Protocol::Sctp,
        ..Probe::tcp(ip("10.0.0.2"), ip("10.180.0.1"), 80)
    };
    let mut spec = spec();
    spec.endpoint(ip("10.180.0.1"), 80, Protocol::Sctp)
        .probe(&sctp);
    let world = World::build(spec)
        .await
        .expect("world builds even without SCTP");
    let outcome = probe::send(&world, &sctp, probe::DEFAULT_TIMEOUT).await;
    match world.sctp_error() {
        Some(_) => match outcome {
            Outcome::Error(message) => assert!(message.contains("lacks SCTP"), "{message}"),
            other => panic!("SCTP probe without kernel support gave {other:?}"),
        },
        None => assert!(matches!(outcome, Outcome::Reply(_)), "{outcome:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_connections_echo_and_udp_flows_answer_every_datagram() {
    require_kernel();
    let tcp = Probe::tcp(ip("10.0.0.2"), ip("10.180.0.1"), 80);
    let udp = Probe::udp(ip("203.0.113.2"), ip("172.30.0.41"), 53);
    let mut spec = spec();
    spec.probe(&tcp).probe(&udp);
    let world = World::build(spec).await.expect("world builds");

    let (reply, mut stream) = probe::open_stream(&world, &tcp, probe::DEFAULT_TIMEOUT)
        .await
        .expect("connects");
    assert_eq!(reply.kind, "endpoint");
    assert_eq!(reply.local, tcp.destination());
    for round in 0..5u8 {
        probe::echo(&mut stream, &[round; 100], probe::DEFAULT_TIMEOUT)
            .await
            .expect("echoes");
    }

    let session = probe::udp_session(&world, &udp).await.expect("socket");
    let mut buffer = [0u8; 256];
    for _ in 0..3 {
        session.send(b"ping").await.expect("send");
        let n = tokio::time::timeout(probe::DEFAULT_TIMEOUT, session.recv(&mut buffer))
            .await
            .expect("answer in time")
            .expect("recv");
        let reply: probe::Reply = String::from_utf8_lossy(&buffer[..n])
            .trim()
            .parse()
            .expect("an answer line");
        assert_eq!(reply.role, "gateway");
        assert_eq!(reply.peer.ip(), udp.src);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_bridge_reach_each_other_and_the_gateway() {
    require_kernel();
    let probes = [
        Probe::tcp(ip("10.0.0.2"), ip("10.180.0.1"), 80),
        Probe::tcp(ip("10.0.0.2"), ip("172.30.0.41"), 80),
        Probe::tcp(ip("fd00::2"), ip("fd00::1"), 80),
        Probe::tcp(ip("203.0.113.2"), ip("10.180.0.1"), 80),
    ];
    let mut spec = spec();
    spec.pod_attachment = kproxy_rig::PodAttachment::Bridge {
        name: "cni0".to_owned(),
    };
    for probe in &probes {
        spec.probe(probe);
    }
    let world = World::build(spec).await.expect("world builds");
    let links = world
        .node()
        .ip(&["-o", "link", "show", "master", "cni0"])
        .expect("ip link");
    assert_eq!(
        links.lines().count(),
        4,
        "four pods (two sources, two endpoints) on the bridge: {links}"
    );
    expect(&world, &probes[0], "10.180.0.1:80").await;
    expect(&world, &probes[1], "").await;
    expect(&world, &probes[2], "[fd00::1]:80").await;
    expect(&world, &probes[3], "10.180.0.1:80").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_links_carry_the_configured_prefix() {
    require_kernel();
    let probe = Probe::tcp(ip("10.0.0.2"), ip("10.180.0.1"), 80);
    let mut spec = spec();
    spec.pod_attachment = kproxy_rig::PodAttachment::Veth {
        prefix: "cali".to_owned(),
    };
    spec.probe(&probe);
    let world = World::build(spec).await.expect("world builds");
    let links = world.node().ip(&["-o", "link", "show"]).expect("ip link");
    assert!(
        links.contains("cali0@") && links.contains("cali1@"),
        "{links}"
    );
    expect(&world, &probe, "10.180.0.1:80").await;
}
