//! Worlds: a node and everything around it, built out of network namespaces.
//!
//! ```text
//!                      ┌──────────── lan (bridges b0, b1, ...) ───────────┐
//!   external clients ──┤ c0, c1 ...         n0, n1 ...            g0    ├── gateway
//!   (src/32, default   └───────────────────────┬───────────────────────────┘   (owns every other
//!    route via node)                           │ eth0, eth1 ...                 probe destination
//!                                        ┌─────┴─────┐                        on its lo: cluster
//!                                        │   node    │  default route ──►     IPs, LB IPs, ...)
//!                                        │ (proxy)   │
//!                                        └─┬──┬──┬───┘
//!                          veth0 / cni0 ...│  │  │   /32 routes, default via 169.254.1.1, fe80::1
//!                                        pod pod pod  (endpoints and pod sources)
//! ```
//!
//! - The **node** namespace has the scenario node's links and addresses (`eth0` is a veth into
//!   the `lan` namespace's bridge) and is where the dataplane under test programs its rules.
//! - Every **pod** address (endpoint, or probe source inside the cluster CIDR) gets its own
//!   namespace, attached as a CNI would: a veth per pod (node side named `<prefix><n>`, or a
//!   port of a bridge), a /32 (/128) route on the node, a default route in the pod via
//!   169.254.1.1 / fe80::1 on the node side.
//! - Every **external client** (a probe source that is neither a node address nor a pod)
//!   gets a namespace on the bridge of the node link whose subnet holds it (else the primary
//!   link), holding its address as /32 (/128), with its default route via the node: whatever
//!   it sends meets the node first, as traffic to a node port, external IP or load-balancer IP
//!   would.
//! - The **gateway** sits on the primary link's bridge; the node's default routes point at it
//!   and it owns (on its `lo`) every probe destination that is not a node, pod or client
//!   address. A packet the proxy leaves alone therefore reaches a listener that answers
//!   "bystander".
//!
//! Servers answer one line, `kpt <namespace-role> <endpoint|bystander> <local> <peer>`: the
//! address and port the packet arrived at and the source it arrived from.
//!
//! Nothing here is connected to the root namespace; `ip_forward` and friends are set only
//! inside these namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use kproxy_core::Protocol;
use nix::sys::socket::{Backlog, SockProtocol, SockType};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::netns::{self, NetNs, address_line};
use crate::packet::{Probe, answer};

static STALE: std::sync::Once = std::sync::Once::new();

/// The node-side address of every pod link (IPv4): pods route everything via it.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The node-side address of every pod link (IPv6).
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The node's link-local address on each of its LAN links (external clients' IPv6 next hop).
pub const NODE_LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfffe);
/// The gateway's link-local address on the primary LAN (the node's IPv6 default route).
pub const GATEWAY_LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xffff);

/// How pods are attached to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAttachment {
    /// One routed veth per pod; the node-side names are `<prefix><n>` (e.g. `veth0`), so an
    /// `InterfaceNamePrefix` local-traffic detector with this prefix recognises pods.
    Veth {
        /// The node-side name prefix.
        prefix: String,
    },
    /// Pod veths are ports of this bridge in the node, which carries the pod routes, so a
    /// `BridgeInterface` detector with this name recognises pods.
    Bridge {
        /// The bridge's name (e.g. `cni0`).
        name: String,
    },
}

impl Default for PodAttachment {
    fn default() -> Self {
        PodAttachment::Veth {
            prefix: "veth".to_owned(),
        }
    }
}

/// An address, port and protocol something listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    /// The address.
    pub addr: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl Listener {
    /// The address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.socket_addr())
    }
}

/// What a world is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldSpec {
    /// The node's links and their addresses with prefixes (`lo` included or not; 127.0.0.1/8
    /// and ::1/128 are always there). Every other link becomes a veth into the LAN.
    pub interfaces: BTreeMap<String, Vec<IpNet>>,
    /// The link the gateway hangs off and the node's default routes use; defaults to the link
    /// holding the first address, or `eth0`.
    pub primary_interface: Option<String>,
    /// How pods attach to the node.
    pub pod_attachment: PodAttachment,
    /// Probe sources inside these networks are pods (cluster CIDRs and the node's pod CIDRs).
    pub pod_networks: Vec<IpNet>,
    /// Endpoint servers: each address gets a pod namespace (unless it is the node's own).
    pub endpoints: BTreeSet<Listener>,
    /// Addresses that send probes.
    pub sources: BTreeSet<IpAddr>,
    /// Probe destinations: each gets a bystander listener in whatever namespace owns it.
    pub bystanders: BTreeSet<Listener>,
}

impl WorldSpec {
    /// A world for a node with these links and addresses and nothing else yet.
    pub fn new(interfaces: BTreeMap<String, Vec<IpNet>>) -> Self {
        Self {
            interfaces,
            primary_interface: None,
            pod_attachment: PodAttachment::default(),
            pod_networks: Vec::new(),
            endpoints: BTreeSet::new(),
            sources: BTreeSet::new(),
            bystanders: BTreeSet::new(),
        }
    }

    /// Adds an endpoint server.
    pub fn endpoint(&mut self, addr: IpAddr, port: u16, protocol: Protocol) -> &mut Self {
        self.endpoints.insert(Listener {
            addr,
            port,
            protocol,
        });
        self
    }

    /// Adds what a probe needs: its source and a bystander at its destination.
    pub fn probe(&mut self, probe: &Probe) -> &mut Self {
        self.sources.insert(probe.src);
        self.bystanders.insert(Listener {
            addr: probe.dst,
            port: probe.dport,
            protocol: probe.protocol,
        });
        self
    }

    fn primary(&self) -> Result<String> {
        if let Some(name) = &self.primary_interface {
            return if self.interfaces.contains_key(name) && name != "lo" {
                Ok(name.clone())
            } else {
                Err(Error::World(format!(
                    "primary interface {name} is not a non-loopback node link"
                )))
            };
        }
        if self.interfaces.contains_key("eth0") {
            return Ok("eth0".to_owned());
        }
        self.interfaces
            .keys()
            .find(|name| *name != "lo")
            .cloned()
            .ok_or_else(|| Error::World("the node has no link besides lo".to_owned()))
    }

    fn is_node_address(&self, addr: IpAddr) -> bool {
        addr.is_loopback()
            || self.interfaces.iter().any(|(name, nets)| {
                nets.iter()
                    .any(|net| net.addr() == addr || (name == "lo" && net.contains(&addr)))
            })
    }
}

/// Which namespace owns an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The node.
    Node,
    /// A pod.
    Pod(IpAddr),
    /// An external client.
    Client(IpAddr),
    /// The gateway (everything else).
    Gateway,
}

impl Owner {
    /// The role word servers in this namespace answer with.
    pub fn role(&self) -> &'static str {
        match self {
            Owner::Node => "node",
            Owner::Pod(_) => "pod",
            Owner::Client(_) => "client",
            Owner::Gateway => "gateway",
        }
    }
}

/// A built world. Dropping it stops its servers and removes every namespace it made.
#[derive(Debug)]
pub struct World {
    // Declared first so it drops first: servers stop before their namespaces go.
    servers: JoinSet<()>,
    spec: WorldSpec,
    sctp_error: Option<String>,
    clients: BTreeMap<IpAddr, NetNs>,
    pods: BTreeMap<IpAddr, NetNs>,
    gateway: NetNs,
    lan: NetNs,
    node: NetNs,
}

impl World {
    /// Builds the world. Must run inside a tokio runtime (its servers are tasks of it).
    ///
    /// # Errors
    ///
    /// When this machine cannot build worlds (not root, `ip` missing) or a step fails; what
    /// was created so far is removed.
    pub async fn build(spec: WorldSpec) -> Result<World> {
        netns::check_environment()?;
        STALE.call_once(|| {
            // Namespaces of kit processes killed outright (SIGKILL) would pile up otherwise.
            if let Err(error) = netns::remove_stale() {
                eprintln!("kproxy-rig: could not look for stale namespaces: {error}");
            }
        });
        let primary = spec.primary()?;
        let node = NetNs::new("node")?;
        let lan = NetNs::new("lan")?;
        let gateway = NetNs::new("gw")?;
        let mut world = World {
            servers: JoinSet::new(),
            sctp_error: None,
            clients: BTreeMap::new(),
            pods: BTreeMap::new(),
            gateway,
            lan,
            node,
            spec,
        };
        world.build_node()?;
        let (pod_addrs, client_addrs) = world.classify_addresses();
        world.build_gateway(&primary, &pod_addrs, &client_addrs)?;
        world.build_pods(&pod_addrs)?;
        world.build_clients(&primary, &client_addrs)?;
        world.start_servers()?;
        Ok(world)
    }

    /// The node namespace, where the dataplane under test programs its rules.
    pub fn node(&self) -> &NetNs {
        &self.node
    }

    /// The node namespace's name (what a backend's `in_netns` takes).
    pub fn node_netns(&self) -> &str {
        self.node.name()
    }

    /// The gateway namespace.
    pub fn gateway(&self) -> &NetNs {
        &self.gateway
    }

    /// The namespace of a pod address.
    pub fn pod(&self, addr: IpAddr) -> Option<&NetNs> {
        self.pods.get(&addr)
    }

    /// The namespace of an external client address.
    pub fn client(&self, addr: IpAddr) -> Option<&NetNs> {
        self.clients.get(&addr)
    }

    /// The spec the world was built from.
    pub fn spec(&self) -> &WorldSpec {
        &self.spec
    }

    /// Why SCTP servers could not be started, when the kernel lacks SCTP.
    pub fn sctp_error(&self) -> Option<&str> {
        self.sctp_error.as_deref()
    }

    /// Which namespace owns `addr`.
    pub fn owner(&self, addr: IpAddr) -> Owner {
        if self.spec.is_node_address(addr) {
            Owner::Node
        } else if self.pods.contains_key(&addr) {
            Owner::Pod(addr)
        } else if self.clients.contains_key(&addr) {
            Owner::Client(addr)
        } else {
            Owner::Gateway
        }
    }

    /// The namespace of an owner.
    pub fn netns(&self, owner: Owner) -> Option<&NetNs> {
        match owner {
            Owner::Node => Some(&self.node),
            Owner::Pod(addr) => self.pods.get(&addr),
            Owner::Client(addr) => self.clients.get(&addr),
            Owner::Gateway => Some(&self.gateway),
        }
    }

    /// The namespace a probe from `src` is sent from: the node for node addresses, 127.0.0.1
    /// and ::1, the pod or client namespace otherwise.
    ///
    /// # Errors
    ///
    /// When `src` was not among the world's sources.
    pub fn source_netns(&self, src: IpAddr) -> Result<&NetNs> {
        match self.owner(src) {
            Owner::Gateway => Err(Error::World(format!(
                "{src} is not a source of this world (add it with WorldSpec::probe)"
            ))),
            owner => self
                .netns(owner)
                .ok_or_else(|| Error::World(format!("no namespace for {src}"))),
        }
    }

    /// Every namespace of the world, node first.
    pub fn namespaces(&self) -> Vec<&NetNs> {
        let mut all = vec![&self.node, &self.lan, &self.gateway];
        all.extend(self.pods.values());
        all.extend(self.clients.values());
        all
    }

    fn lan_links(&self) -> Vec<(usize, &String, &Vec<IpNet>)> {
        self.spec
            .interfaces
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .enumerate()
            .map(|(i, (name, nets))| (i, name, nets))
            .collect()
    }

    fn lan_index(&self, link: &str) -> usize {
        self.lan_links()
            .iter()
            .find(|(_, name, _)| name.as_str() == link)
            .map_or(0, |(i, _, _)| *i)
    }

    /// The node's links, addresses, bridges in the LAN and forwarding.
    fn build_node(&mut self) -> Result<()> {
        self.node.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
            // nft's `reject` answers with ICMP errors; the default rate limit would turn the
            // seventh refusal in a row into silence, i.e. a false DROP.
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
        ])?;
        self.gateway.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ])?;
        let mut node_lines = Vec::new();
        let mut lan_lines = Vec::new();
        for (i, name, nets) in self.lan_links() {
            if name.len() > 15 {
                return Err(Error::World(format!(
                    "link name {name} is longer than 15 characters"
                )));
            }
            netns::veth(&self.node, name, &self.lan, &format!("n{i}"))?;
            lan_lines.push(format!("link add b{i} type bridge"));
            lan_lines.push(format!("link set b{i} up"));
            lan_lines.push(format!("link set n{i} master b{i}"));
            node_lines.extend(nets.iter().map(|net| address_line(name, *net)));
            node_lines.push(address_line(
                name,
                IpNet::new(IpAddr::V6(NODE_LAN_V6), 64).expect("valid prefix"),
            ));
        }
        let defaults: [IpNet; 2] = [
            "127.0.0.1/8".parse().expect("valid"),
            "::1/128".parse().expect("valid"),
        ];
        if let Some(nets) = self.spec.interfaces.get("lo") {
            node_lines.extend(
                nets.iter()
                    .filter(|net| !defaults.contains(net))
                    .map(|net| address_line("lo", *net)),
            );
        }
        self.lan.ip_batch(&lan_lines)?;
        self.node.ip_batch(&node_lines)
    }

    /// Splits the non-node addresses into pods and external clients.
    fn classify_addresses(&self) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
        let mut pods: BTreeSet<IpAddr> = self
            .spec
            .endpoints
            .iter()
            .map(|listener| listener.addr)
            .filter(|addr| !self.spec.is_node_address(*addr))
            .collect();
        let mut clients = BTreeSet::new();
        for src in &self.spec.sources {
            if self.spec.is_node_address(*src) || pods.contains(src) {
                continue;
            }
            if self.spec.pod_networks.iter().any(|net| net.contains(src)) {
                pods.insert(*src);
            } else {
                clients.insert(*src);
            }
        }
        (pods, clients)
    }

    /// The gateway: on the primary LAN, the node's default route, owner of every other probe
    /// destination.
    fn build_gateway(
        &mut self,
        primary: &str,
        pods: &BTreeSet<IpAddr>,
        clients: &BTreeSet<IpAddr>,
    ) -> Result<()> {
        let index = self.lan_index(primary);
        netns::veth(&self.gateway, "lan0", &self.lan, "g0")?;
        self.lan
            .ip(&["link", "set", "g0", "master", &format!("b{index}")])?;
        let primary_nets = self
            .spec
            .interfaces
            .get(primary)
            .cloned()
            .unwrap_or_default();

        let mut taken: BTreeSet<IpAddr> = self.spec.sources.clone();
        taken.extend(self.spec.bystanders.iter().map(|l| l.addr));
        taken.extend(self.spec.endpoints.iter().map(|l| l.addr));
        taken.extend(self.spec.interfaces.values().flatten().map(IpNet::addr));

        let mut gateway_lines = vec![address_line(
            "lan0",
            IpNet::new(IpAddr::V6(GATEWAY_LAN_V6), 64).expect("valid"),
        )];
        let mut node_lines = vec![format!(
            "route replace ::/0 via {GATEWAY_LAN_V6} dev {primary}"
        )];
        let mut gateway_v4 = None;
        for net in primary_nets.iter().filter(|net| !is_link_local(net.addr())) {
            let Some(addr) = free_host(net, &taken) else {
                continue;
            };
            taken.insert(addr);
            gateway_lines.push(address_line(
                "lan0",
                IpNet::new(addr, net.prefix_len()).expect("valid"),
            ));
            if addr.is_ipv4() && gateway_v4.is_none() {
                gateway_v4 = Some(addr);
            }
        }
        if let Some(addr) = gateway_v4 {
            node_lines.push(format!("route replace default via {addr} dev {primary}"));
        }

        // Routes back to everything behind the node.
        let node_v4 = primary_nets.iter().map(IpNet::addr).find(IpAddr::is_ipv4);
        let mut behind_node: BTreeSet<IpAddr> = pods.clone();
        behind_node.extend(clients.iter().copied());
        behind_node.extend(
            self.spec
                .interfaces
                .iter()
                .filter(|(name, _)| name.as_str() != primary)
                .flat_map(|(_, nets)| nets.iter().map(IpNet::addr))
                .filter(|addr| !addr.is_loopback() && !is_link_local(*addr)),
        );
        for addr in behind_node {
            if primary_nets.iter().any(|net| net.contains(&addr)) && clients.contains(&addr) {
                continue; // on the LAN itself
            }
            match addr {
                IpAddr::V4(_) => {
                    if let Some(via) = node_v4 {
                        gateway_lines
                            .push(format!("route replace {addr}/32 via {via} dev lan0 onlink"));
                    }
                }
                IpAddr::V6(_) => {
                    gateway_lines.push(format!(
                        "route replace {addr}/128 via {NODE_LAN_V6} dev lan0"
                    ));
                }
            }
        }

        // Every probe destination nobody else owns lives on the gateway's lo.
        let owned: BTreeSet<IpAddr> = self
            .spec
            .bystanders
            .iter()
            .map(|l| l.addr)
            .filter(|addr| {
                !self.spec.is_node_address(*addr) && !pods.contains(addr) && !clients.contains(addr)
            })
            .collect();
        for addr in owned {
            gateway_lines.push(address_line("lo", IpNet::from(addr)));
        }
        self.gateway.ip_batch(&gateway_lines)?;
        self.node.ip_batch(&node_lines)
    }

    /// A namespace per pod, attached to the node as a CNI would.
    fn build_pods(&mut self, pods: &BTreeSet<IpAddr>) -> Result<()> {
        let gw4 = IpNet::new(IpAddr::V4(POD_GATEWAY_V4), 32).expect("valid");
        let gw6 = IpNet::new(IpAddr::V6(POD_GATEWAY_V6), 64).expect("valid");
        let mut node_lines = Vec::new();
        if let PodAttachment::Bridge { name } = &self.spec.pod_attachment {
            self.node.ip_batch(&[
                format!("link add {name} type bridge"),
                format!("link set {name} up"),
                format!("{} scope link", address_line(name, gw4)),
                address_line(name, gw6),
            ])?;
        }
        for (i, addr) in pods.iter().enumerate() {
            let pod = NetNs::new("pod")?;
            let link = match &self.spec.pod_attachment {
                PodAttachment::Veth { prefix } => {
                    let mut link = format!("{prefix}{i}");
                    if link.len() > 15 {
                        link = format!("{}{i}", &prefix[..15 - i.to_string().len()]);
                    }
                    netns::veth(&self.node, &link, &pod, "eth0")?;
                    node_lines.push(format!("{} scope link", address_line(&link, gw4)));
                    node_lines.push(address_line(&link, gw6));
                    link
                }
                PodAttachment::Bridge { name } => {
                    let port = format!("kp{i}");
                    netns::veth(&self.node, &port, &pod, "eth0")?;
                    node_lines.push(format!("link set {port} master {name}"));
                    // As CNIs' bridge plugin with hairpinMode: a pod may reach itself through
                    // a service, which sends the frame back out the port it came in on.
                    node_lines.push(format!("link set {port} type bridge_slave hairpin on"));
                    name.clone()
                }
            };
            node_lines.push(format!("route replace {} dev {link}", IpNet::from(*addr)));
            pod.ip_batch(&[
                address_line("eth0", IpNet::from(*addr)),
                format!("route add {POD_GATEWAY_V4} dev eth0 scope link"),
                format!("route add default via {POD_GATEWAY_V4} dev eth0"),
                format!("route add ::/0 via {POD_GATEWAY_V6} dev eth0"),
            ])?;
            self.pods.insert(*addr, pod);
        }
        self.node.ip_batch(&node_lines)
    }

    /// A namespace per external client, on the LAN, routing via the node.
    fn build_clients(&mut self, primary: &str, clients: &BTreeSet<IpAddr>) -> Result<()> {
        let mut node_lines = Vec::new();
        let mut lan_lines = Vec::new();
        for (i, addr) in clients.iter().enumerate() {
            let link = self
                .spec
                .interfaces
                .iter()
                .find(|(name, nets)| {
                    name.as_str() != "lo" && nets.iter().any(|net| net.contains(addr))
                })
                .map_or(primary, |(name, _)| name.as_str())
                .to_owned();
            let nets = self.spec.interfaces.get(&link).cloned().unwrap_or_default();
            let index = self.lan_index(&link);
            let client = NetNs::new("client")?;
            netns::veth(&client, "eth0", &self.lan, &format!("c{i}"))?;
            lan_lines.push(format!("link set c{i} master b{index}"));
            let mut lines = vec![address_line("eth0", IpNet::from(*addr))];
            match addr {
                IpAddr::V4(_) => {
                    let via = nets.iter().map(IpNet::addr).find(IpAddr::is_ipv4).ok_or_else(|| {
                        Error::World(format!(
                            "external client {addr} cannot reach the node: link {link} has no IPv4 address"
                        ))
                    })?;
                    lines.push(format!("route add default via {via} dev eth0 onlink"));
                }
                IpAddr::V6(_) => lines.push(format!("route add ::/0 via {NODE_LAN_V6} dev eth0")),
            }
            client.ip_batch(&lines)?;
            if !nets.iter().any(|net| net.contains(addr)) {
                node_lines.push(format!("route replace {} dev {link}", IpNet::from(*addr)));
            }
            self.clients.insert(*addr, client);
        }
        self.lan.ip_batch(&lan_lines)?;
        self.node.ip_batch(&node_lines)
    }

    /// Endpoint servers and bystanders, one per (namespace, address, port, protocol).
    fn start_servers(&mut self) -> Result<()> {
        let mut servers: BTreeMap<(Owner, Listener), &'static str> = BTreeMap::new();
        for listener in &self.spec.bystanders {
            servers.insert((self.owner(listener.addr), *listener), "bystander");
        }
        for listener in &self.spec.endpoints {
            servers.insert((self.owner(listener.addr), *listener), "endpoint");
        }
        for ((owner, listener), kind) in servers {
            let ns = self
                .netns(owner)
                .ok_or_else(|| Error::World(format!("no namespace for {listener}")))?;
            let role = owner.role();
            let addr = listener.socket_addr();
            match listener.protocol {
                Protocol::Udp => {
                    let fd = ns.bound_socket(addr, SockType::Datagram, SockProtocol::Udp)?;
                    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
                        .map_err(|error| Error::io(format!("UDP server on {addr}"), error))?;
                    self.servers.spawn(serve_udp(socket, role, kind, addr));
                }
                Protocol::Tcp | Protocol::Sctp => {
                    let protocol = if listener.protocol == Protocol::Tcp {
                        SockProtocol::Tcp
                    } else {
                        SockProtocol::Sctp
                    };
                    let fd = match ns.bound_socket(addr, SockType::Stream, protocol) {
                        Err(Error::SctpUnsupported(message)) => {
                            self.sctp_error = Some(message);
                            continue;
                        }
                        other => other?,
                    };
                    nix::sys::socket::listen(&fd, Backlog::new(128).expect("valid backlog"))
                        .map_err(|errno| Error::io(format!("listen({addr})"), errno.into()))?;
                    let listener =
                        tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))
                            .map_err(|error| Error::io(format!("server on {addr}"), error))?;
                    self.servers.spawn(serve_stream(listener, role, kind, addr));
                }
            }
        }
        Ok(())
    }
}

async fn serve_stream(
    listener: tokio::net::TcpListener,
    role: &'static str,
    kind: &'static str,
    local: SocketAddr,
) {
    // Connections live in this task's own set, so stopping the server stops them too.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        connections.spawn(serve_connection(stream, answer(role, kind, local, peer)));
    }
}

/// Writes the answer line, then echoes whatever the client sends until it closes, so a test
/// can keep a connection open across syncs and check it still carries data.
async fn serve_connection(mut stream: tokio::net::TcpStream, line: String) {
    // A client that went away is its own problem; the server goes on.
    if stream.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

async fn serve_udp(
    socket: tokio::net::UdpSocket,
    role: &'static str,
    kind: &'static str,
    local: SocketAddr,
) {
    let mut buffer = [0u8; 512];
    loop {
        let Ok((_, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        let line = answer(role, kind, local, peer);
        let _ = socket.send_to(line.as_bytes(), peer).await;
    }
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// A host address of `net` that is not taken, counting down from the top.
fn free_host(net: &IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    net.hosts()
        .rev()
        .take(1024)
        .find(|addr| !taken.contains(addr) && *addr != net.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_host_counts_down_and_skips_taken() {
        let net: IpNet = "192.168.0.2/24".parse().unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(
            free_host(&net, &taken),
            Some("192.168.0.254".parse().unwrap())
        );
        taken.insert("192.168.0.254".parse().unwrap());
        assert_eq!(
            free_host(&net, &taken),
            Some("192.168.0.253".parse().unwrap())
        );
        let host: IpNet = "192.168.0.2/32".parse().unwrap();
        assert_eq!(free_host(&host, &BTreeSet::new()), None);
    }

    #[test]
    fn node_addresses_include_loopback_ranges() {
        let mut interfaces = BTreeMap::new();
        interfaces.insert("eth0".to_owned(), vec!["192.168.0.2/24".parse().unwrap()]);
        interfaces.insert("lo".to_owned(), vec!["127.0.0.1/8".parse().unwrap()]);
        let spec = WorldSpec::new(interfaces);
        assert!(spec.is_node_address("192.168.0.2".parse().unwrap()));
        assert!(spec.is_node_address("127.0.0.5".parse().unwrap()));
        assert!(spec.is_node_address("::1".parse().unwrap()));
        assert!(!spec.is_node_address("192.168.0.3".parse().unwrap()));
        assert_eq!(spec.primary().unwrap(), "eth0");
    }
}
