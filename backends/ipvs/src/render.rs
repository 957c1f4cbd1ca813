//! What one service port becomes in one family: virtual servers with their real servers,
//! addresses on `kube-ipvs0`, ipset entries, and (for local traffic to an
//! `externalTrafficPolicy: Local` Service) mangle rules that mark it for a firewall-mark
//! virtual server. Translated from core's [`PortPlan`], which decides routes, verdicts,
//! masquerade, firewall and hairpin; this module only spells them for IPVS. Pure: the same
//! state and context always render the same objects, which is what lets a partial sync touch
//! only the ports that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_core::plan::{
    ExternalDestination, FamilyPlan, Firewall, PlannedEndpoint, Policy, PortPlan, Route,
};
use kproxy_core::{IpFamily, Protocol, ServicePortState};

use crate::config::Scheduler;
use crate::error::IpvsError;
use crate::marks::Marks;
use crate::model::{FLAG_PERSISTENT, RealServer, ServiceKey, SetEntry, VirtualServer};
use crate::programmed::PortKey;
use crate::sets::SetId;

/// The bits of the packet mark that carry a short-circuit virtual server's mark. The low 16
/// bits stay free for the masquerade bit and other agents.
pub(crate) const MARK_MASK: u32 = 0xffff_0000;

/// A virtual server as one port wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredService {
    /// The virtual server.
    pub(crate) server: VirtualServer,
    /// Its real servers (weight 1).
    pub(crate) reals: BTreeSet<RealServer>,
    /// The protocol of its connections (decides graceful termination).
    pub(crate) protocol: Protocol,
}

/// Everything one service port contributes to one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortObjects {
    /// Its virtual servers.
    pub(crate) services: BTreeMap<ServiceKey, DesiredService>,
    /// Its addresses on `kube-ipvs0`.
    pub(crate) addresses: BTreeSet<IpAddr>,
    /// Its ipset entries.
    pub(crate) entries: BTreeSet<(SetId, SetEntry)>,
    /// Its rules in the mangle chain that marks short-circuited local traffic (the arguments
    /// after `-A KUBE-SHORT-CIRCUIT`).
    pub(crate) short_circuit: Vec<String>,
    /// The firewall mark of its short-circuit virtual servers, when it has them.
    pub(crate) mark: Option<u32>,
}

/// One family's plan with what IPVS needs besides: the node-port addresses, the scheduler,
/// the local-traffic matches.
#[derive(Debug, Clone)]
pub(crate) struct FamilyContext<'a> {
    pub(crate) plan: FamilyPlan<'a>,
    /// The addresses node ports answer on (explicit: IPVS needs one virtual server each).
    pub(crate) node_port_addresses: Vec<IpAddr>,
    pub(crate) scheduler: &'a Scheduler,
    /// Matches traffic from local pods, when the detector works in this family.
    pub(crate) if_local: Option<String>,
}

impl FamilyContext<'_> {
    pub(crate) fn family(&self) -> IpFamily {
        self.plan.family
    }
}

/// Renders one service port for one family (`None`: the port is gone). A port whose local
/// traffic short-circuits to every endpoint gets its firewall mark from `marks`; a port that
/// no longer needs one gives it back.
pub(crate) fn render_port(
    ctx: &FamilyContext<'_>,
    key: &PortKey,
    state: Option<&ServicePortState>,
    marks: &mut Marks,
) -> Result<PortObjects, IpvsError> {
    let plan = state.and_then(|state| PortPlan::new(&ctx.plan, state).map(|plan| (state, plan)));
    let needs_mark = plan.as_ref().is_some_and(|(_, plan)| {
        plan.external
            .as_ref()
            .is_some_and(|external| external.short_circuit_local_traffic)
    });
    let mark = if needs_mark {
        Some(marks.assign(key)?)
    } else {
        marks.release(key);
        None
    };
    Ok(match plan {
        Some((state, plan)) => render_plan(ctx, state, plan, mark),
        None => PortObjects::default(),
    })
}

/// Renders one planned port; `mark` is its short-circuit mark when it needs one.
fn render_plan(
    ctx: &FamilyContext<'_>,
    state: &ServicePortState,
    plan: PortPlan<'_>,
    mark: Option<u32>,
) -> PortObjects {
    let mut out = PortObjects::default();
    let protocol = plan.protocol;
    let entry = |ip: IpAddr, port: u16| SetEntry::IpPort { ip, protocol, port };
    let virtual_server = |key: ServiceKey| {
        let mut flags = ctx.scheduler.flags();
        if plan.affinity_timeout.is_some() {
            flags |= FLAG_PERSISTENT;
        }
        VirtualServer {
            key,
            scheduler: ctx.scheduler.name().to_owned(),
            flags,
            timeout: plan.affinity_timeout.unwrap_or(0),
        }
    };
    let reals = |endpoints: &[PlannedEndpoint<'_>]| -> BTreeSet<RealServer> {
        endpoints
            .iter()
            .map(|planned| RealServer {
                addr: planned.endpoint.address,
                port: planned.endpoint.port,
                weight: 1,
            })
            .collect()
    };
    let add_service = |out: &mut PortObjects, key: ServiceKey, policy: Policy| {
        out.services.insert(
            key,
            DesiredService {
                server: virtual_server(key),
                reals: reals(plan.endpoints(policy)),
                protocol,
            },
        );
    };
    // The set a destination without usable endpoints goes into.
    let verdict = |route: Route| match route {
        Route::Endpoints(_) => None,
        Route::Reject => Some(SetId::NoEndpoints),
        Route::Drop => Some(SetId::NoLocalEndpoints),
    };

    // Internal traffic.
    out.addresses.insert(plan.cluster_ip);
    out.entries
        .insert((SetId::ClusterIp, entry(plan.cluster_ip, plan.port)));
    match plan.internal {
        Route::Endpoints(policy) => {
            let key = ServiceKey::Address {
                protocol,
                addr: plan.cluster_ip,
                port: plan.port,
            };
            add_service(&mut out, key, policy);
        }
        route => {
            if let Some(set) = verdict(route) {
                out.entries.insert((set, entry(plan.cluster_ip, plan.port)));
            }
        }
    }

    // External traffic.
    if let Some(external) = &plan.external {
        let local_policy = state.port.external_policy_local;
        for &ExternalDestination { ip, load_balancer } in &external.destinations {
            out.addresses.insert(ip);
            let set = match (load_balancer, local_policy) {
                (false, false) => SetId::ExternalIp,
                (false, true) => SetId::ExternalIpLocal,
                (true, false) => SetId::LoadBalancer,
                (true, true) => SetId::LoadBalancerLocal,
            };
            out.entries.insert((set, entry(ip, plan.port)));
            if let Some(policy) = external.route.policy() {
                let key = ServiceKey::Address {
                    protocol,
                    addr: ip,
                    port: plan.port,
                };
                add_service(&mut out, key, policy);
            } else if let Some(set) = verdict(external.route) {
                out.entries.insert((set, entry(ip, plan.port)));
            }
            if load_balancer
                && external.has_chain()
                && let Some(firewall) = &plan.firewall
            {
                out.entries
                    .insert((SetId::LoadBalancerFw, entry(ip, plan.port)));
                if let Firewall::Allow { ranges, vips } = firewall {
                    for &net in ranges {
                        out.entries.insert((
                            SetId::LoadBalancerSourceCidr,
                            SetEntry::IpPortNet {
                                ip,
                                protocol,
                                port: plan.port,
                                net,
                            },
                        ));
                    }
                    for &ip2 in vips {
                        out.entries.insert((
                            SetId::LoadBalancerSourceIp,
                            SetEntry::IpPortIp {
                                ip,
                                protocol,
                                port: plan.port,
                                ip2,
                            },
                        ));
                    }
                }
            }
        }
        if let Some(node_port) = external.node_port {
            let set = match (protocol, local_policy) {
                (Protocol::Tcp, false) => SetId::NodePortTcp,
                (Protocol::Udp, false) => SetId::NodePortUdp,
                (Protocol::Sctp, false) => SetId::NodePortSctp,
                (Protocol::Tcp, true) => SetId::NodePortLocalTcp,
                (Protocol::Udp, true) => SetId::NodePortLocalUdp,
                (Protocol::Sctp, true) => SetId::NodePortLocalSctp,
            };
            out.entries.insert((set, SetEntry::Port(node_port)));
            for &addr in &ctx.node_port_addresses {
                if let Some(policy) = external.route.policy() {
                    let key = ServiceKey::Address {
                        protocol,
                        addr,
                        port: node_port,
                    };
                    add_service(&mut out, key, policy);
                } else if let Some(set) = verdict(external.route) {
                    out.entries.insert((set, entry(addr, node_port)));
                }
            }
        }
        if external.short_circuit_local_traffic
            && let Some(mark) = mark
        {
            out.mark = Some(mark);
            let masquerade = ctx.plan.masquerade_mark;
            for masquerade_bit in [0, masquerade] {
                let key = ServiceKey::Fwmark {
                    family: ctx.family(),
                    mark: mark | masquerade_bit,
                };
                add_service(&mut out, key, Policy::Cluster);
            }
            let proto = protocol.as_lower_str();
            let mut destinations: Vec<(IpAddr, u16)> = external
                .destinations
                .iter()
                .map(|d| (d.ip, plan.port))
                .collect();
            if let Some(node_port) = external.node_port {
                destinations.extend(ctx.node_port_addresses.iter().map(|&a| (a, node_port)));
            }
            for (ip, port) in destinations {
                let matched = format!("-d {ip} -p {proto} -m {proto} --dport {port}");
                if let Some(local) = &ctx.if_local {
                    out.short_circuit.push(format!(
                        "{local} {matched} -j MARK --set-xmark {mark:#x}/{MARK_MASK:#x}"
                    ));
                }
                // The node's own traffic: its source would be the destination itself, so it
                // is masqueraded too.
                out.short_circuit.push(format!(
                    "-m addrtype --src-type LOCAL {matched} -j MARK --set-xmark {:#x}/{:#x}",
                    mark | masquerade,
                    MARK_MASK | masquerade
                ));
            }
        }
    }
    if let Some(health_check) = state.port.health_check_node_port
        && state.port.external_policy_local
    {
        out.entries
            .insert((SetId::HealthCheckNodePort, SetEntry::Port(health_check)));
    }

    for planned in plan
        .cluster_endpoints
        .iter()
        .chain(&plan.local_endpoints)
        .filter(|planned| planned.hairpin)
    {
        let endpoint = planned.endpoint;
        out.entries.insert((
            SetId::LoopBack,
            SetEntry::IpPortIp {
                ip: endpoint.address,
                protocol,
                port: endpoint.port,
                ip2: endpoint.address,
            },
        ));
    }
    for &addr in &out.addresses {
        out.entries.insert((SetId::IpvsIps, SetEntry::Ip(addr)));
    }
    out
}
