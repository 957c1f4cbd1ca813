//! Kernel tests: real UDP flows in namespaces made by kproxy-rig, listed and deleted over
//! netlink with the filters `stale_filters` computes.
//!
//! Everything happens in the node namespace of a test world (conntrack tables are per network
//! namespace); the machine's own conntrack table and global sysctls are never touched. Needs
//! root, `ip` and `nft`; fails (never skips) without them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kproxy_conntrack::{Conntrack, ConntrackFilter, Flow, stale_filters, stale_flows};
use kproxy_core::{
    Change, ChangeSet, Endpoint, NodeInfo, Protocol, ServicePort, ServicePortName, ServicePortState,
};
use kproxy_rig::{NetNs, Probe, World, WorldSpec, netns, probe};
use tokio::net::UdpSocket;

const NODE: &str = "192.168.0.2";
/// Service S: two endpoints, one of which goes away.
const SVC_S: &str = "172.30.0.10";
/// Service U: scaled to zero and back.
const SVC_U: &str = "172.30.0.20";
const EP1: &str = "10.180.0.1";
const EP2: &str = "10.180.0.2";
const EP3: &str = "10.180.0.3";
const ANSWER_TIMEOUT: Duration = Duration::from_millis(1500);
const SILENCE_TIMEOUT: Duration = Duration::from_millis(700);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(self::ip(ip), port)
}

/// Fails with a clear message when this process cannot run kernel tests.
fn require_environment() {
    if let Err(error) = netns::check_environment() {
        panic!("the conntrack kernel tests need root and iproute2: {error}");
    }
    if let Err(error) = netns::require_tool("nft", &["--version"]) {
        panic!("the conntrack kernel tests need nft: {error}");
    }
}

async fn world(endpoints: &[(&str, u16)]) -> World {
    let mut spec = WorldSpec::new(BTreeMap::from([(
        "eth0".to_owned(),
        vec![format!("{NODE}/24").parse().unwrap()],
    )]));
    spec.pod_networks.push("10.180.0.0/16".parse().unwrap());
    for (addr, port) in endpoints {
        spec.endpoint(ip(addr), *port, Protocol::Udp);
    }
    World::build(spec).await.expect("building the test world")
}

fn nft(ns: &NetNs, script: &str) {
    ns.exec("nft", &["-f", "-"], Some(script))
        .unwrap_or_else(|error| panic!("nft in {ns}: {error}\n{script}"));
}

/// The node's DNAT rules: `rules` are nft rule bodies for chain `t c` (nat, output hook), the
/// chain being flushed first, as a dataplane sync would replace them.
fn set_dnat(world: &World, rules: &[String]) {
    let mut script = String::from(
        "table ip t {\n chain c {\n  type nat hook output priority -100;\n }\n}\nflush chain ip t c\n",
    );
    for rule in rules {
        script.push_str(&format!("add rule ip t c {rule}\n"));
    }
    nft(world.node(), &script);
}

/// A UDP session from the node to `dst:port` (a bound, connected socket: one flow).
async fn session(world: &World, dst: &str, port: u16) -> UdpSocket {
    probe::udp_session(world, &Probe::udp(ip(NODE), ip(dst), port))
        .await
        .expect("opening a UDP session")
}

/// Sends one datagram and returns the endpoint that answered (its `local` address as the
/// server reports it), or `None` after `timeout` of silence (or an ICMP error).
async fn exchange(socket: &UdpSocket, timeout: Duration) -> Option<SocketAddr> {
    socket.send(b"ping\n").await.ok()?;
    let mut buffer = [0u8; 512];
    let n = tokio::time::timeout(timeout, socket.recv(&mut buffer))
        .await
        .ok()?
        .ok()?;
    let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
    // `kpt <role> endpoint <local> <peer>`
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(
        fields.get(2),
        Some(&"endpoint"),
        "unexpected answer {answer:?}"
    );
    Some(fields[3].parse().expect("the answer's local address"))
}

fn local_port(socket: &UdpSocket) -> u16 {
    socket.local_addr().unwrap().port()
}

/// The node's UDP flows from the given sessions (by source port), keyed by that port.
async fn flows_of(conntrack: &Conntrack, sockets: &[&UdpSocket]) -> BTreeMap<u16, Flow> {
    let ports: BTreeSet<u16> = sockets.iter().map(|s| local_port(s)).collect();
    conntrack
        .list_udp()
        .await
        .expect("listing UDP flows")
        .into_iter()
        .filter(|f| f.original.src == ip(NODE) && ports.contains(&f.original.src_port))
        .map(|f| (f.original.src_port, f))
        .collect()
}

/// `conntrack -L -p udp` inside the namespace, when the CLI is installed.
fn conntrack_cli(ns: &NetNs) -> Option<String> {
    if netns::require_tool("conntrack", &["--version"]).is_err() {
        eprintln!("conntrack CLI not installed (apt-get install -y conntrack): CLI check skipped");
        return None;
    }
    let out = ns
        .exec_output("conntrack", &["-L", "-p", "udp"], None)
        .expect("running conntrack -L");
    assert!(
        out.status.success(),
        "conntrack -L failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The CLI line of the flow from the node's source port `port`.
fn cli_line(listing: &str, port: u16) -> Option<&str> {
    let needle = format!("src={NODE} ");
    let sport = format!(" sport={port} ");
    listing
        .lines()
        .find(|line| line.contains(&needle) && line.contains(&sport))
}

fn service(name: &str, cluster_ip: &str, port: u16) -> ServicePort {
    ServicePort::cluster_ip(
        ServicePortName::new("default", name, "p", Protocol::Udp),
        ip(cluster_ip),
        port,
    )
}

fn state(port: &ServicePort, endpoints: &[SocketAddr]) -> Option<Arc<ServicePortState>> {
    Some(Arc::new(ServicePortState {
        port: port.clone(),
        endpoints: endpoints
            .iter()
            .map(|e| Endpoint::ready(e.ip(), e.port()))
            .collect(),
    }))
}

fn change_set(
    port: &ServicePort,
    previous: Option<Arc<ServicePortState>>,
    current: Option<Arc<ServicePortState>>,
) -> ChangeSet {
    ChangeSet::new(
        BTreeMap::from([(port.name.clone(), Change { previous, current })]),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_removed_deletes_exactly_its_flows() {
    require_environment();
    let world = world(&[(EP1, 53), (EP2, 53), (EP3, 5353)]).await;
    set_dnat(
        &world,
        &[
            format!(
                "ip daddr {SVC_S} udp dport 53 dnat to numgen inc mod 2 map {{ 0 : {EP1}, 1 : {EP2} }}"
            ),
            format!("ip daddr {SVC_U} udp dport 5353 dnat to {EP3}:5353"),
        ],
    );
    let conntrack = Conntrack::in_netns(world.node_netns()).expect("opening conntrack");
    assert_eq!(conntrack.namespace(), Some(world.node_netns()));

    // Four flows to S, balanced over EP1 and EP2, and one to U.
    let mut to_s = Vec::new();
    for _ in 0..4 {
        to_s.push(session(&world, SVC_S, 53).await);
    }
    let to_u = session(&world, SVC_U, 5353).await;
    let mut on_ep1 = BTreeSet::new();
    for socket in &to_s {
        let answered = exchange(socket, ANSWER_TIMEOUT).await.expect("S answers");
        if answered == sock(EP1, 53) {
            on_ep1.insert(local_port(socket));
        } else {
            assert_eq!(answered, sock(EP2, 53));
        }
    }
    assert_eq!(on_ep1.len(), 2, "numgen inc alternates between EP1 and EP2");
    assert_eq!(exchange(&to_u, ANSWER_TIMEOUT).await, Some(sock(EP3, 5353)));

    let all: Vec<&UdpSocket> = to_s.iter().chain([&to_u]).collect();
    let before = flows_of(&conntrack, &all).await;
    assert_eq!(before.len(), 5, "one flow per session: {before:#?}");
    for (port, flow) in &before {
        assert!(flow.replied && flow.is_dnat(), "{flow}");
        let expected_reply = if flow.original.dst == ip(SVC_U) {
            sock(EP3, 5353)
        } else if on_ep1.contains(port) {
            sock(EP1, 53)
        } else {
            sock(EP2, 53)
        };
        assert_eq!(flow.reply.source(), expected_reply, "{flow}");
    }

    // EP1 goes away: the dataplane drops it from the rules, and the change set says so.
    set_dnat(
        &world,
        &[
            format!("ip daddr {SVC_S} udp dport 53 dnat to {EP2}"),
            format!("ip daddr {SVC_U} udp dport 5353 dnat to {EP3}:5353"),
        ],
    );
    let s = service("s", SVC_S, 53);
    let changes = change_set(
        &s,
        state(&s, &[sock(EP1, 53), sock(EP2, 53)]),
        state(&s, &[sock(EP2, 53)]),
    );
    let filters = stale_filters(&changes, &NodeInfo::named("node"));
    assert_eq!(
        filters,
        vec![ConntrackFilter::to_service(Protocol::Udp, ip(SVC_S), 53).via_endpoint(sock(EP1, 53))]
    );
    let deleted = conntrack.delete(&filters).await.expect("deleting");
    assert_eq!(deleted, 2);

    // Exactly EP1's flows are gone; the others are untouched.
    let after = flows_of(&conntrack, &all).await;
    let expected: BTreeMap<u16, Flow> = before
        .iter()
        .filter(|(port, _)| !on_ep1.contains(port))
        .map(|(port, flow)| (*port, *flow))
        .collect();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (port, flow) in &after {
        assert_eq!(flow.original, expected[port].original);
        assert_eq!(flow.reply, expected[port].reply);
    }
    if let Some(listing) = conntrack_cli(world.node()) {
        for socket in &all {
            let port = local_port(socket);
            let line = cli_line(&listing, port);
            assert_eq!(
                line.is_some(),
                !on_ep1.contains(&port),
                "sport {port}:\n{listing}"
            );
        }
        assert!(!listing.contains(&format!("src={EP1} ")), "{listing}");
    }
    // Deleting again finds nothing.
    assert_eq!(conntrack.delete(&filters).await.expect("deleting again"), 0);

    // The sessions that were on EP1 are NATed afresh, to EP2; the others stay where they were.
    for socket in &to_s {
        assert_eq!(exchange(socket, ANSWER_TIMEOUT).await, Some(sock(EP2, 53)));
    }
    assert_eq!(exchange(&to_u, ANSWER_TIMEOUT).await, Some(sock(EP3, 5353)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_scaled_to_zero_and_back_gets_its_undnated_flows_deleted() {
    require_environment();
    let world = world(&[(EP1, 53), (EP3, 5353)]).await;
    // The gateway (which owns every other address) drops what reaches U's address, so flows
    // to U that are not DNATed stay UNREPLIED.
    nft(
        world.gateway(),
        &format!(
            "table ip g {{\n chain c {{\n  type filter hook prerouting priority 0;\n  ip daddr {SVC_U} drop\n }}\n}}\n"
        ),
    );
    let s_rule = format!("ip daddr {SVC_S} udp dport 53 dnat to {EP1}");
    let u_rule = format!("ip daddr {SVC_U} udp dport 5353 dnat to {EP3}:5353");
    set_dnat(&world, &[s_rule.clone(), u_rule.clone()]);
    let conntrack = Conntrack::in_netns(world.node_netns()).expect("opening conntrack");
    let node = NodeInfo::named("node");
    let u = service("u", SVC_U, 5353);

    let to_s = session(&world, SVC_S, 53).await;
    let first = session(&world, SVC_U, 5353).await;
    assert_eq!(exchange(&to_s, ANSWER_TIMEOUT).await, Some(sock(EP1, 53)));
    assert_eq!(
        exchange(&first, ANSWER_TIMEOUT).await,
        Some(sock(EP3, 5353))
    );

    // Scaled to zero: U's rule goes, and its flow DNATed to EP3 is deleted.
    set_dnat(&world, std::slice::from_ref(&s_rule));
    let down = stale_filters(
        &change_set(&u, state(&u, &[sock(EP3, 5353)]), state(&u, &[])),
        &node,
    );
    assert_eq!(
        down,
        vec![
            ConntrackFilter::to_service(Protocol::Udp, ip(SVC_U), 5353)
                .via_endpoint(sock(EP3, 5353))
        ]
    );
    assert_eq!(conntrack.delete(&down).await.expect("deleting"), 1);

    // While U has no endpoints, clients keep sending: flows to U's address, not DNATed,
    // UNREPLIED.
    let second = session(&world, SVC_U, 5353).await;
    assert_eq!(exchange(&first, SILENCE_TIMEOUT).await, None);
    assert_eq!(exchange(&second, SILENCE_TIMEOUT).await, None);
    let all = [&to_s, &first, &second];
    let before = flows_of(&conntrack, &all).await;
    assert_eq!(before.len(), 3, "{before:#?}");
    for socket in [&first, &second] {
        let flow = &before[&local_port(socket)];
        assert!(!flow.replied, "{flow}");
        assert!(!flow.is_dnat(), "{flow}");
        assert_eq!(flow.original.destination(), sock(SVC_U, 5353));
    }
    if let Some(listing) = conntrack_cli(world.node()) {
        let line = cli_line(&listing, local_port(&first)).expect("the CLI lists the flow");
        assert!(line.contains("[UNREPLIED]"), "{line}");
    }

    // Scaled back up: the rule is back, but the old flows bypass it (the regression).
    set_dnat(&world, &[s_rule, u_rule]);
    assert_eq!(
        exchange(&first, SILENCE_TIMEOUT).await,
        None,
        "the stale flow bypasses DNAT"
    );

    let up = stale_filters(
        &change_set(&u, state(&u, &[]), state(&u, &[sock(EP3, 5353)])),
        &node,
    );
    assert_eq!(
        up,
        vec![ConntrackFilter::to_service(Protocol::Udp, ip(SVC_U), 5353)]
    );
    assert_eq!(conntrack.delete(&up).await.expect("deleting"), 2);

    // U's flows are gone, S's is untouched.
    let after = flows_of(&conntrack, &all).await;
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        vec![local_port(&to_s)],
        "{after:#?}"
    );
    assert_eq!(
        after[&local_port(&to_s)].original,
        before[&local_port(&to_s)].original
    );
    assert_eq!(
        after[&local_port(&to_s)].reply,
        before[&local_port(&to_s)].reply
    );
    if let Some(listing) = conntrack_cli(world.node()) {
        assert!(cli_line(&listing, local_port(&to_s)).is_some(), "{listing}");
        assert!(
            cli_line(&listing, local_port(&first)).is_none(),
            "{listing}"
        );
        assert!(
            cli_line(&listing, local_port(&second)).is_none(),
            "{listing}"
        );
    }

    // Now both sessions reach the endpoint.
    assert_eq!(
        exchange(&first, ANSWER_TIMEOUT).await,
        Some(sock(EP3, 5353))
    );
    assert_eq!(
        exchange(&second, ANSWER_TIMEOUT).await,
        Some(sock(EP3, 5353))
    );
    assert_eq!(exchange(&to_s, ANSWER_TIMEOUT).await, Some(sock(EP1, 53)));
}

/// After a restart no change set says what went stale while the proxy was down: the listing
/// taken after the first full sync finds the flows DNATed to an endpoint that is gone and the
/// ones never DNATed to a port that has endpoints now, and only those are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_the_listing_finds_the_flows_that_went_stale_while_down() {
    require_environment();
    let world = world(&[(EP1, 53), (EP2, 53), (EP3, 5353)]).await;
    // The gateway drops what reaches U's address: U's flows, not DNATed, stay UNREPLIED.
    nft(
        world.gateway(),
        &format!(
            "table ip g {{\n chain c {{\n  type filter hook prerouting priority 0;\n  ip daddr {SVC_U} drop\n }}\n}}\n"
        ),
    );
    // Before the "restart": S balanced over EP1 and EP2, U without endpoints (no rule).
    set_dnat(
        &world,
        &[format!(
            "ip daddr {SVC_S} udp dport 53 dnat to numgen inc mod 2 map {{ 0 : {EP1}, 1 : {EP2} }}"
        )],
    );
    let conntrack = Conntrack::in_netns(world.node_netns()).expect("opening conntrack");
    let mut to_s = Vec::new();
    let mut on_ep1 = BTreeSet::new();
    for _ in 0..4 {
        let socket = session(&world, SVC_S, 53).await;
        if exchange(&socket, ANSWER_TIMEOUT).await == Some(sock(EP1, 53)) {
            on_ep1.insert(local_port(&socket));
        }
        to_s.push(socket);
    }
    assert_eq!(on_ep1.len(), 2, "numgen inc alternates between EP1 and EP2");
    let to_u = session(&world, SVC_U, 5353).await;
    assert_eq!(exchange(&to_u, SILENCE_TIMEOUT).await, None);

    // While the proxy was down EP1 went away and U got EP3; the first full sync programs that.
    set_dnat(
        &world,
        &[
            format!("ip daddr {SVC_S} udp dport 53 dnat to {EP2}"),
            format!("ip daddr {SVC_U} udp dport 5353 dnat to {EP3}:5353"),
        ],
    );
    let (s, u) = (service("s", SVC_S, 53), service("u", SVC_U, 5353));
    let mut programmed = kproxy_core::ProxyState::default();
    programmed.apply(&ChangeSet::new(
        BTreeMap::from([
            (
                s.name.clone(),
                Change {
                    previous: None,
                    current: state(&s, &[sock(EP2, 53)]),
                },
            ),
            (
                u.name.clone(),
                Change {
                    previous: None,
                    current: state(&u, &[sock(EP3, 5353)]),
                },
            ),
        ]),
        None,
    ));
    let all: Vec<&UdpSocket> = to_s.iter().chain([&to_u]).collect();
    let before = flows_of(&conntrack, &all).await;
    assert_eq!(before.len(), 5, "{before:#?}");
    let listed = conntrack.list_udp().await.expect("listing");
    let stale = stale_flows(&programmed, &listed);
    let mut stale_ports: Vec<u16> = stale
        .iter()
        .filter(|flow| flow.original.src == ip(NODE))
        .map(|flow| flow.original.src_port)
        .collect();
    stale_ports.sort();
    let mut expected: Vec<u16> = on_ep1.iter().copied().chain([local_port(&to_u)]).collect();
    expected.sort();
    assert_eq!(
        stale_ports, expected,
        "EP1's flows and U's undnated one: {stale:#?}"
    );
    assert_eq!(
        conntrack.delete_flows(&stale).await.expect("deleting"),
        stale.len()
    );
    let after = flows_of(&conntrack, &all).await;
    let kept: Vec<u16> = after.keys().copied().collect();
    let mut on_ep2: Vec<u16> = to_s
        .iter()
        .map(local_port)
        .filter(|port| !on_ep1.contains(port))
        .collect();
    on_ep2.sort();
    assert_eq!(kept, on_ep2, "the flows on EP2 stay");

    // Every session now reaches a current endpoint.
    for socket in &to_s {
        assert_eq!(exchange(socket, ANSWER_TIMEOUT).await, Some(sock(EP2, 53)));
    }
    assert_eq!(exchange(&to_u, ANSWER_TIMEOUT).await, Some(sock(EP3, 5353)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_missing_namespace_fails_clearly() {
    require_environment();
    let error = Conntrack::in_netns("kpt-no-such-namespace").expect_err("no such namespace");
    assert!(
        error.to_string().contains("kpt-no-such-namespace"),
        "{error}"
    );
}
