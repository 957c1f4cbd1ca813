//! Which conntrack flows a change set makes stale (upstream's `CleanStaleEntries`, computed
//! from what changed rather than from a full listing).
//!
//! Only UDP service ports are considered: TCP and SCTP flows end on their own (a reset or an
//! abort), UDP ones live as long as datagrams keep coming. For each UDP service port in the
//! change set, and for each IP family on its own:
//!
//! 1. **Newly active**: when the port had no usable endpoint of the family before (it is new,
//!    or was scaled to zero, or none was ready) and has some now, every flow to its service
//!    addresses of the family (cluster IP, external IPs, load-balancer IPs) at the service port
//!    and every flow to its node port is stale: it was created while nothing DNATed it and
//!    would keep bypassing the new rules (upstream's regression #139628).
//! 2. **Endpoint gone**: for each endpoint that was usable before and is not now (deleted,
//!    no longer ready, or no longer selected for this node), flows to the port's service
//!    addresses and node port *that were DNATed to that endpoint* are stale.
//! 3. **Address gone**: a service address the port no longer has (the Service was deleted or
//!    the address removed) leaves flows to it that were never DNATed (sent while the port had
//!    no endpoint); they are stale too. (Those that were DNATed are covered by rule 2.)
//!
//! "Usable" means selected by [`select_endpoints`] for this node: the endpoints some traffic
//! may reach (`all_reachable`). Both the previous and the current state are judged against the
//! node given, so a change of the node itself (its zone) is treated as if it had always been.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use kproxy_core::{
    ChangeSet, IpFamily, NodeInfo, Protocol, ProxyState, ServicePort, ServicePortState,
    select_endpoints,
};

use crate::filter::{ConntrackFilter, Flow, IPPROTO_UDP};

/// Computes the filters selecting the flows that `changes` made stale, for the proxy running
/// on `node`. The result is sorted and has no duplicates; it is empty when no UDP service port
/// changed in a way that leaves stale flows.
pub fn stale_filters(changes: &ChangeSet, node: &NodeInfo) -> Vec<ConntrackFilter> {
    let mut filters = BTreeSet::new();
    for (name, change) in changes.iter() {
        if name.protocol != Protocol::Udp {
            continue;
        }
        let previous = change.previous.as_deref();
        let current = change.current.as_deref();
        for family in [IpFamily::V4, IpFamily::V6] {
            let before = usable(previous, node, family);
            let after = usable(current, node, family);
            if let Some(current) = current
                && before.is_empty()
                && !after.is_empty()
            {
                service_filters(&current.port, family, &mut filters);
            }
            if let Some(previous) = previous {
                for endpoint in before.difference(&after) {
                    let mut via = BTreeSet::new();
                    service_filters(&previous.port, family, &mut via);
                    filters.extend(via.into_iter().map(|f| f.via_endpoint(*endpoint)));
                }
                let kept = current
                    .map(|c| service_ips(&c.port, family))
                    .unwrap_or_default();
                for ip in service_ips(&previous.port, family).difference(&kept) {
                    let port = previous.port.port;
                    // Flows to the address that were never DNATed: their reply comes from the
                    // address itself.
                    let filter = ConntrackFilter::to_service(Protocol::Udp, *ip, port)
                        .via_endpoint(SocketAddr::new(*ip, port));
                    filters.insert(filter);
                }
            }
        }
    }
    filters.into_iter().collect()
}

/// The UDP flows among `flows` that the programmed `state` leaves stale: what a proxy finds at
/// start, when flows went stale while it was down (an endpoint removed, a Service scaled to
/// zero and back) and no change set can tell it (upstream's conntrack reconciler does the same
/// from a listing).
///
/// A flow to a service address at its port, or to a node port, is stale when it was DNATed to
/// something that is not a usable endpoint of that port now, or when it was never DNATed and
/// the port has usable endpoints now (it was created while the port had none, and would keep
/// bypassing the rules). Flows to addresses no Service has are left alone: nothing says they
/// were ever a Service's.
pub fn stale_flows(state: &ProxyState, flows: &[Flow]) -> Vec<Flow> {
    let mut by_address: HashMap<(IpAddr, u16), BTreeSet<SocketAddr>> = HashMap::new();
    let mut by_node_port: HashMap<(IpFamily, u16), BTreeSet<SocketAddr>> = HashMap::new();
    for (name, port_state) in state.iter() {
        if name.protocol != Protocol::Udp {
            continue;
        }
        for family in [IpFamily::V4, IpFamily::V6] {
            let usable = usable(Some(port_state), state.node(), family);
            for ip in service_ips(&port_state.port, family) {
                by_address
                    .entry((ip, port_state.port.port))
                    .or_default()
                    .extend(usable.iter().copied());
            }
            if let Some(node_port) = port_state.port.node_port {
                by_node_port
                    .entry((family, node_port))
                    .or_default()
                    .extend(usable.iter().copied());
            }
        }
    }
    flows
        .iter()
        .filter(|flow| flow.protocol == IPPROTO_UDP)
        .filter(|flow| {
            let original = &flow.original;
            let Some(usable) = by_address
                .get(&(original.dst, original.dst_port))
                .or_else(|| by_node_port.get(&(flow.family, original.dst_port)))
            else {
                return false;
            };
            if flow.is_dnat() {
                !usable.contains(&flow.reply.source())
            } else {
                !usable.is_empty()
            }
        })
        .copied()
        .collect()
}

/// The usable endpoints of a service port state, of one family, as socket addresses.
fn usable(
    state: Option<&ServicePortState>,
    node: &NodeInfo,
    family: IpFamily,
) -> BTreeSet<SocketAddr> {
    let Some(state) = state else {
        return BTreeSet::new();
    };
    select_endpoints(&state.port, &state.endpoints, node, Some(family))
        .all_reachable
        .into_iter()
        .map(|e| SocketAddr::new(e.address, e.port))
        .collect()
}

/// Every address of the service port of one family: cluster IPs, external IPs and
/// load-balancer IPs.
fn service_ips(port: &ServicePort, family: IpFamily) -> BTreeSet<IpAddr> {
    port.cluster_ips
        .iter()
        .chain(&port.external_ips)
        .chain(&port.load_balancer_ips)
        .copied()
        .filter(|ip| IpFamily::of(ip) == family)
        .collect()
}

/// The filters for every flow to the service port of one family: its addresses at the
/// service port, and its node port.
fn service_filters(port: &ServicePort, family: IpFamily, out: &mut BTreeSet<ConntrackFilter>) {
    for ip in service_ips(port, family) {
        out.insert(ConntrackFilter::to_service(Protocol::Udp, ip, port.port));
    }
    if let Some(node_port) = port.node_port {
        out.insert(ConntrackFilter::to_node_port(
            family,
            Protocol::Udp,
            node_port,
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kproxy_core::{Change, Endpoint, ServicePortName};

    use super::*;

    fn name(protocol: Protocol) -> ServicePortName {
        ServicePortName::new("default", "dns", "dns", protocol)
    }

    fn port(protocol: Protocol) -> ServicePort {
        ServicePort::cluster_ip(name(protocol), "172.30.0.10".parse().unwrap(), 53)
    }

    fn state(port: &ServicePort, endpoints: &[&str]) -> Option<Arc<ServicePortState>> {
        Some(Arc::new(ServicePortState {
            port: port.clone(),
            endpoints: endpoints
                .iter()
                .map(|e| {
                    let e: SocketAddr = e.parse().unwrap();
                    Endpoint::ready(e.ip(), e.port())
                })
                .collect(),
        }))
    }

    fn changes(
        port: &ServicePort,
        previous: Option<Arc<ServicePortState>>,
        current: Option<Arc<ServicePortState>>,
    ) -> ChangeSet {
        ChangeSet::new(
            BTreeMap::from([(port.name.clone(), Change { previous, current })]),
            None,
        )
    }

    fn node() -> NodeInfo {
        NodeInfo::named("node-a")
    }

    fn to_service(ip: &str, port: u16) -> ConntrackFilter {
        ConntrackFilter::to_service(Protocol::Udp, ip.parse().unwrap(), port)
    }

    fn via(filter: ConntrackFilter, endpoint: &str) -> ConntrackFilter {
        filter.via_endpoint(endpoint.parse().unwrap())
    }

    #[test]
    fn new_port_with_endpoints_flushes_its_addresses() {
        let p = port(Protocol::Udp);
        let set = changes(&p, None, state(&p, &["10.0.0.1:5353"]));
        assert_eq!(
            stale_filters(&set, &node()),
            vec![to_service("172.30.0.10", 53)]
        );
    }

    #[test]
    fn new_port_without_endpoints_flushes_nothing() {
        let p = port(Protocol::Udp);
        let set = changes(&p, None, state(&p, &[]));
        assert!(stale_filters(&set, &node()).is_empty());
    }

    #[test]
    fn scaled_to_zero_then_back_up_flushes_on_the_way_up() {
        let p = port(Protocol::Udp);
        let one = state(&p, &["10.0.0.1:5353"]);
        let zero = state(&p, &[]);
        // Down to zero: the endpoint's flows are stale.
        let down = changes(&p, one.clone(), zero.clone());
        assert_eq!(
            stale_filters(&down, &node()),
            vec![via(to_service("172.30.0.10", 53), "10.0.0.1:5353")]
        );
        // Back up (another pod): whatever was sent meanwhile went un-DNATed.
        let up = changes(&p, zero, state(&p, &["10.0.0.2:5353"]));
        assert_eq!(
            stale_filters(&up, &node()),
            vec![to_service("172.30.0.10", 53)]
        );
    }

    #[test]
    fn not_ready_to_ready_counts_as_newly_active() {
        let p = port(Protocol::Udp);
        let mut not_ready = Endpoint::ready("10.0.0.1".parse().unwrap(), 5353);
        not_ready.ready = false;
        let previous = Some(Arc::new(ServicePortState {
            port: p.clone(),
            endpoints: vec![not_ready],
        }));
        let set = changes(&p, previous, state(&p, &["10.0.0.1:5353"]));
        assert_eq!(
            stale_filters(&set, &node()),
            vec![to_service("172.30.0.10", 53)]
        );
    }

    #[test]
    fn endpoint_removed_flushes_only_its_flows() {
        let mut p = port(Protocol::Udp);
        p.node_port = Some(30053);
        p.external_ips = vec!["192.168.0.100".parse().unwrap()];
        p.load_balancer_ips = vec!["192.168.0.200".parse().unwrap()];
        let set = changes(
            &p,
            state(&p, &["10.0.0.1:5353", "10.0.0.2:5353"]),
            state(&p, &["10.0.0.2:5353"]),
        );
        let ep = "10.0.0.1:5353";
        assert_eq!(
            stale_filters(&set, &node()),
            vec![
                via(
                    ConntrackFilter::to_node_port(IpFamily::V4, Protocol::Udp, 30053),
                    ep
                ),
                via(to_service("172.30.0.10", 53), ep),
                via(to_service("192.168.0.100", 53), ep),
                via(to_service("192.168.0.200", 53), ep),
            ]
        );
    }

    #[test]
    fn endpoint_port_change_flushes_the_old_one() {
        let p = port(Protocol::Udp);
        let set = changes(
            &p,
            state(&p, &["10.0.0.1:5353"]),
            state(&p, &["10.0.0.1:5454"]),
        );
        assert_eq!(
            stale_filters(&set, &node()),
            vec![via(to_service("172.30.0.10", 53), "10.0.0.1:5353")]
        );
    }

    #[test]
    fn endpoint_no_longer_ready_is_gone() {
        let p = port(Protocol::Udp);
        let mut current = (*state(&p, &["10.0.0.1:5353", "10.0.0.2:5353"]).unwrap()).clone();
        current.endpoints[0].ready = false;
        let set = changes(
            &p,
            state(&p, &["10.0.0.1:5353", "10.0.0.2:5353"]),
            Some(Arc::new(current)),
        );
        assert_eq!(
            stale_filters(&set, &node()),
            vec![via(to_service("172.30.0.10", 53), "10.0.0.1:5353")]
        );
    }

    #[test]
    fn service_deleted_flushes_endpoint_flows_and_undnated_ones() {
        let p = port(Protocol::Udp);
        let set = changes(&p, state(&p, &["10.0.0.1:5353"]), None);
        assert_eq!(
            stale_filters(&set, &node()),
            vec![
                via(to_service("172.30.0.10", 53), "10.0.0.1:5353"),
                via(to_service("172.30.0.10", 53), "172.30.0.10:53"),
            ]
        );
    }

    #[test]
    fn tcp_and_sctp_are_ignored() {
        for protocol in [Protocol::Tcp, Protocol::Sctp] {
            let p = port(protocol);
            let up = changes(&p, state(&p, &[]), state(&p, &["10.0.0.1:5353"]));
            assert!(stale_filters(&up, &node()).is_empty());
            let removed = changes(&p, state(&p, &["10.0.0.1:5353"]), state(&p, &[]));
            assert!(stale_filters(&removed, &node()).is_empty());
        }
    }

    #[test]
    fn unchanged_endpoints_flush_nothing() {
        let p = port(Protocol::Udp);
        // Endpoint added to a port that already had one: nothing is stale.
        let added = changes(
            &p,
            state(&p, &["10.0.0.1:5353"]),
            state(&p, &["10.0.0.1:5353", "10.0.0.2:5353"]),
        );
        assert!(stale_filters(&added, &node()).is_empty());
        // Only the service changed (session affinity), same endpoints.
        let mut sticky = p.clone();
        sticky.session_affinity = kproxy_core::SessionAffinity::ClientIp {
            timeout_seconds: 10,
        };
        let affinity = changes(
            &p,
            state(&p, &["10.0.0.1:5353"]),
            state(&sticky, &["10.0.0.1:5353"]),
        );
        assert!(stale_filters(&affinity, &node()).is_empty());
        assert!(stale_filters(&ChangeSet::default(), &node()).is_empty());
    }

    #[test]
    fn dual_stack_is_judged_per_family() {
        let mut p = port(Protocol::Udp);
        p.cluster_ips.push("fd00:30::10".parse().unwrap());
        p.node_port = Some(30053);
        // IPv4 already had an endpoint; IPv6 gets its first one.
        let set = changes(
            &p,
            state(&p, &["10.0.0.1:5353"]),
            state(&p, &["10.0.0.1:5353", "[fd00::1]:5353"]),
        );
        assert_eq!(
            stale_filters(&set, &node()),
            vec![
                ConntrackFilter::to_node_port(IpFamily::V6, Protocol::Udp, 30053),
                to_service("fd00:30::10", 53),
            ]
        );
        // IPv6 endpoint removed, IPv4 one unchanged.
        let set = changes(
            &p,
            state(&p, &["10.0.0.1:5353", "[fd00::1]:5353"]),
            state(&p, &["10.0.0.1:5353"]),
        );
        assert_eq!(
            stale_filters(&set, &node()),
            vec![
                via(
                    ConntrackFilter::to_node_port(IpFamily::V6, Protocol::Udp, 30053),
                    "[fd00::1]:5353"
                ),
                via(to_service("fd00:30::10", 53), "[fd00::1]:5353"),
            ]
        );
    }

    #[test]
    fn local_policy_uses_this_nodes_endpoints() {
        let mut p = port(Protocol::Udp);
        p.internal_policy_local = true;
        let mut remote = Endpoint::ready("10.0.0.1".parse().unwrap(), 5353);
        remote.node_name = Some("node-b".into());
        let mut local = Endpoint::ready("10.0.0.2".parse().unwrap(), 5353);
        local.node_name = Some("node-a".into());
        let previous = Some(Arc::new(ServicePortState {
            port: p.clone(),
            endpoints: vec![remote.clone()],
        }));
        let current = Some(Arc::new(ServicePortState {
            port: p.clone(),
            endpoints: vec![remote, local],
        }));
        // Only a remote endpoint before: nothing reachable from node-a; now a local one.
        let set = changes(&p, previous, current);
        assert_eq!(
            stale_filters(&set, &node()),
            vec![to_service("172.30.0.10", 53)]
        );
    }

    #[test]
    fn several_ports_are_independent() {
        let a = port(Protocol::Udp);
        let mut b = ServicePort::cluster_ip(
            ServicePortName::new("default", "other", "x", Protocol::Udp),
            "172.30.0.20".parse().unwrap(),
            5353,
        );
        b.node_port = None;
        let set = ChangeSet::new(
            BTreeMap::from([
                (
                    a.name.clone(),
                    Change {
                        previous: state(&a, &[]),
                        current: state(&a, &["10.0.0.1:5353"]),
                    },
                ),
                (
                    b.name.clone(),
                    Change {
                        previous: state(&b, &["10.0.0.3:5353"]),
                        current: state(&b, &[]),
                    },
                ),
            ]),
            None,
        );
        assert_eq!(
            stale_filters(&set, &node()),
            vec![
                to_service("172.30.0.10", 53),
                via(to_service("172.30.0.20", 5353), "10.0.0.3:5353"),
            ]
        );
    }

    /// The state a sync programmed: `port` with `endpoints`.
    fn programmed(port: &ServicePort, endpoints: &[&str]) -> ProxyState {
        let mut programmed = ProxyState::default();
        programmed.apply(&ChangeSet::new(
            BTreeMap::from([(
                port.name.clone(),
                Change {
                    previous: None,
                    current: state(port, endpoints),
                },
            )]),
            None,
        ));
        programmed
    }

    fn flow(dst: &str, reply_src: &str, protocol: u8) -> Flow {
        let dst: SocketAddr = dst.parse().unwrap();
        let reply_src: SocketAddr = reply_src.parse().unwrap();
        let client: SocketAddr = "10.180.9.9:40000".parse().unwrap();
        Flow {
            family: IpFamily::of(&dst.ip()),
            protocol,
            original: crate::filter::FlowTuple {
                src: client.ip(),
                dst: dst.ip(),
                src_port: client.port(),
                dst_port: dst.port(),
            },
            reply: crate::filter::FlowTuple {
                src: reply_src.ip(),
                dst: client.ip(),
                src_port: reply_src.port(),
                dst_port: client.port(),
            },
            replied: true,
            zone: 0,
        }
    }

    #[test]
    fn at_start_flows_to_gone_endpoints_and_undnated_ones_are_stale() {
        let mut dns = port(Protocol::Udp);
        dns.node_port = Some(30053);
        let programmed = programmed(&dns, &["10.180.0.2:53"]);
        let to_gone = flow("172.30.0.10:53", "10.180.0.1:53", IPPROTO_UDP);
        let to_kept = flow("172.30.0.10:53", "10.180.0.2:53", IPPROTO_UDP);
        let undnated = flow("172.30.0.10:53", "172.30.0.10:53", IPPROTO_UDP);
        let node_port_to_gone = flow("192.168.0.2:30053", "10.180.0.1:53", IPPROTO_UDP);
        let elsewhere = flow("8.8.8.8:53", "8.8.8.8:53", IPPROTO_UDP);
        let tcp = flow(
            "172.30.0.10:53",
            "10.180.0.1:53",
            crate::filter::IPPROTO_TCP,
        );
        let flows = [
            to_gone,
            to_kept,
            undnated,
            node_port_to_gone,
            elsewhere,
            tcp,
        ];
        assert_eq!(
            stale_flows(&programmed, &flows),
            vec![to_gone, undnated, node_port_to_gone]
        );
    }

    #[test]
    fn at_start_an_undnated_flow_to_a_port_without_endpoints_stays() {
        let dns = port(Protocol::Udp);
        let programmed = programmed(&dns, &[]);
        let undnated = flow("172.30.0.10:53", "172.30.0.10:53", IPPROTO_UDP);
        assert!(
            stale_flows(&programmed, &[undnated]).is_empty(),
            "nothing to send it to yet"
        );
    }
}
