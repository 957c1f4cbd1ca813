//! What one service port becomes in one family's table: its chains, its sets, and the
//! elements it owns in the shared maps. Pure: the same state, configuration and slots always
//! render the same rules, which is what makes incremental syncs equal full ones.
//!
//! The shape follows upstream kube-proxy's nftables mode, with one difference: the choice of
//! endpoint is a `numgen` lookup in a shared map instead of a chain per endpoint, which keeps
//! the kernel's work per sync proportional to what changed (see [`names::endpoint_map`]).
//! Services with session affinity keep upstream's per-endpoint chains and affinity sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::{
    Endpoint, IpFamily, LocalTrafficDetector, NodeInfo, ProxyConfig, ProxyState, ServicePortState,
    SessionAffinity, select_endpoints,
};

use crate::names::{self, ENDPOINT_MAP_SHARDS, MARK_FOR_MASQUERADE, REJECT_CHAIN};
use crate::slots::Slots;

/// An element a service port wants in a shared set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Element {
    pub(crate) set: String,
    pub(crate) key: String,
    pub(crate) value: Option<String>,
}

/// A set owned by one service port (`kind` is `set` or `map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedSet {
    pub(crate) kind: &'static str,
    pub(crate) spec: String,
}

/// Everything one service port contributes to one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortRules {
    pub(crate) chains: BTreeMap<String, Vec<String>>,
    pub(crate) sets: BTreeMap<String, OwnedSet>,
    pub(crate) elements: BTreeSet<Element>,
    /// The chains that hold a slot in the endpoint maps.
    pub(crate) slotted: BTreeSet<String>,
}

/// The parts of the configuration and node that rules depend on, resolved for one family.
#[derive(Debug, Clone)]
pub(crate) struct FamilyContext<'a> {
    pub(crate) family: IpFamily,
    pub(crate) config: &'a ProxyConfig,
    pub(crate) node: &'a NodeInfo,
    /// `ip` or `ip6`.
    pub(crate) ipx: &'static str,
    /// Matches traffic from local pods, when the detector works for this family.
    pub(crate) if_local: Option<String>,
    /// Matches traffic not from local pods.
    pub(crate) if_not_local: Option<String>,
    /// Service CIDRs from the cluster's ServiceCIDR objects.
    pub(crate) cluster_service_cidrs: &'a [IpNet],
}

/// The named set the CIDR-based local-traffic detectors match against.
pub(crate) const POD_CIDRS: &str = "pod-cidrs";

impl<'a> FamilyContext<'a> {
    pub(crate) fn new(family: IpFamily, config: &'a ProxyConfig, state: &'a ProxyState) -> Self {
        let node = state.node();
        let ipx = names::family_keyword(family);
        let (if_local, if_not_local) = match &config.local_detector {
            LocalTrafficDetector::ClusterCidr(_) | LocalTrafficDetector::NodeCidr => {
                if Self::local_cidrs_of(config, node, family).is_empty() {
                    (None, None)
                } else {
                    (
                        Some(format!("{ipx} saddr @{POD_CIDRS}")),
                        Some(format!("{ipx} saddr != @{POD_CIDRS}")),
                    )
                }
            }
            LocalTrafficDetector::InterfaceNamePrefix(prefix) => (
                Some(format!("iifname \"{prefix}*\"")),
                Some(format!("iifname != \"{prefix}*\"")),
            ),
            LocalTrafficDetector::BridgeInterface(bridge) => (
                Some(format!("iifname \"{bridge}\"")),
                Some(format!("iifname != \"{bridge}\"")),
            ),
            LocalTrafficDetector::None => (None, None),
        };
        Self {
            family,
            config,
            node,
            ipx,
            if_local,
            if_not_local,
            cluster_service_cidrs: state.service_cidrs(),
        }
    }

    /// The CIDRs of this family the local-traffic detector matches sources against.
    pub(crate) fn local_cidrs(&self) -> Vec<IpNet> {
        Self::local_cidrs_of(self.config, self.node, self.family)
    }

    fn local_cidrs_of(config: &ProxyConfig, node: &NodeInfo, family: IpFamily) -> Vec<IpNet> {
        let cidrs = match &config.local_detector {
            LocalTrafficDetector::ClusterCidr(cidrs) => cidrs.as_slice(),
            LocalTrafficDetector::NodeCidr => node.pod_cidrs.as_slice(),
            _ => &[],
        };
        cidrs
            .iter()
            .copied()
            .filter(|cidr| IpFamily::of_net(cidr) == family)
            .collect()
    }

    fn of_family<'b>(&self, ips: &'b [IpAddr]) -> impl Iterator<Item = IpAddr> + 'b {
        let family = self.family;
        ips.iter()
            .copied()
            .filter(move |ip| IpFamily::of(ip) == family)
    }

    /// The node's primary address of this family.
    pub(crate) fn primary_ip(&self) -> Option<IpAddr> {
        self.of_family(&self.node.addresses).next()
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
fn socket(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Renders one service port for one family. Policy chains that pick endpoints from a shared
/// map take their slot from `slots`.
pub(crate) fn render_port(
    ctx: &FamilyContext<'_>,
    state: &ServicePortState,
    slots: &mut Slots,
) -> PortRules {
    let port = &state.port;
    let mut out = PortRules::default();
    let Some(cluster_ip) = port.cluster_ip_of(ctx.family) else {
        return out;
    };
    let selected = select_endpoints(port, &state.endpoints, ctx.node, Some(ctx.family));
    let name = &port.name;
    let proto = port.protocol().as_lower_str();
    let cluster_chain = names::cluster_chain(name);
    let local_chain = names::local_chain(name);
    let external_chain = names::external_chain(name);

    let has_endpoints = selected.has_any_endpoints;
    let has_local = !selected.local.is_empty();
    let (internal_chain, has_internal) = if port.internal_policy_local {
        (&local_chain, has_local)
    } else {
        (&cluster_chain, has_endpoints)
    };
    let (external_policy_chain, has_external) = if port.external_policy_local {
        (&local_chain, has_local)
    } else {
        (&cluster_chain, has_endpoints)
    };
    let external_ips: Vec<IpAddr> = ctx.of_family(&port.external_ips).collect();
    let load_balancer_ips: Vec<IpAddr> = ctx.of_family(&port.load_balancer_ips).collect();
    let externally_accessible =
        port.node_port.is_some() || !external_ips.is_empty() || !load_balancer_ips.is_empty();
    let uses_external_chain = has_endpoints && externally_accessible;
    let no_endpoints_verdict = |has: bool| -> Option<String> {
        if has {
            None
        } else if has_endpoints {
            Some("drop".to_owned())
        } else {
            Some(format!("goto {REJECT_CHAIN}"))
        }
    };
    let mut element = |set: &str, key: String, value: Option<String>| {
        out.elements.insert(Element {
            set: set.to_owned(),
            key,
            value,
        });
    };

    // Destinations.
    let cluster_key = format!("{cluster_ip} . {proto} . {}", port.port);
    element(names::CLUSTER_IPS, cluster_ip.to_string(), None);
    if has_internal {
        element(
            names::SERVICE_IPS,
            cluster_key,
            Some(format!("goto {internal_chain}")),
        );
    } else if let Some(verdict) = no_endpoints_verdict(false) {
        element(names::NO_ENDPOINT_SERVICES, cluster_key, Some(verdict));
    }
    let external_verdict = no_endpoints_verdict(has_external);
    let firewall = firewall_rule(ctx, port, &load_balancer_ips);
    let firewall_chain = names::firewall_chain(name);
    // External IPs and load-balancer IPs are handled alike; only the latter are firewalled.
    let external_destinations = external_ips
        .iter()
        .map(|ip| (ip, false))
        .chain(load_balancer_ips.iter().map(|ip| (ip, true)));
    for (ip, load_balancer) in external_destinations {
        let key = format!("{ip} . {proto} . {}", port.port);
        if uses_external_chain {
            element(
                names::SERVICE_IPS,
                key.clone(),
                Some(format!("goto {external_chain}")),
            );
        }
        if load_balancer && firewall.is_some() {
            element(
                names::FIREWALL_IPS,
                key.clone(),
                Some(format!("goto {firewall_chain}")),
            );
        }
        if let Some(verdict) = &external_verdict {
            element(names::NO_ENDPOINT_SERVICES, key, Some(verdict.clone()));
        }
    }
    if let Some(node_port) = port.node_port {
        let key = format!("{proto} . {node_port}");
        if uses_external_chain {
            element(
                names::SERVICE_NODEPORTS,
                key.clone(),
                Some(format!("goto {external_chain}")),
            );
        }
        if let Some(verdict) = &external_verdict {
            element(names::NO_ENDPOINT_NODEPORTS, key, Some(verdict.clone()));
        }
    }

    if uses_external_chain {
        let rules = out.chains.entry(external_chain.clone()).or_default();
        if port.external_policy_local {
            // Pods and the node itself reach external addresses as if through the load
            // balancer: they get every endpoint, and the node's traffic is masqueraded since
            // its source would be the external address itself.
            if let Some(local) = &ctx.if_local {
                rules.push(format!("{local} goto {cluster_chain}"));
            }
            rules.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
            rules.push(format!("fib saddr type local goto {cluster_chain}"));
        } else {
            // Cluster-policy external traffic may leave the node; replies must come back here.
            rules.push(format!("jump {MARK_FOR_MASQUERADE}"));
        }
        if has_external {
            rules.push(format!("goto {external_policy_chain}"));
        }
    }
    if let Some(rule) = firewall {
        out.chains.insert(firewall_chain, vec![rule]);
    }

    if !selected.cluster.is_empty() && port.uses_cluster_endpoints() {
        endpoint_rules(
            ctx,
            state,
            &cluster_chain,
            &selected.cluster,
            slots,
            &mut out,
        );
    }
    if has_local && port.uses_local_endpoints() {
        endpoint_rules(ctx, state, &local_chain, &selected.local, slots, &mut out);
    }
    out
}

/// The firewall rule of a load-balancer port with source ranges. Ranges that exist only in
/// the other family close this family entirely rather than leave it open.
fn firewall_rule(
    ctx: &FamilyContext<'_>,
    port: &kproxy_core::ServicePort,
    load_balancer_ips: &[IpAddr],
) -> Option<String> {
    if load_balancer_ips.is_empty() || port.load_balancer_source_ranges.is_empty() {
        return None;
    }
    let ranges: Vec<IpNet> = port
        .load_balancer_source_ranges
        .iter()
        .copied()
        .filter(|range| IpFamily::of_net(range) == ctx.family)
        .collect();
    if ranges.is_empty() {
        return Some("drop".to_owned());
    }
    let mut allowed: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    // A node that owns the VIP reaches it with the VIP as source; let that through when the
    // ranges admit the node.
    if ctx
        .primary_ip()
        .is_some_and(|node_ip| ranges.iter().any(|range| range.contains(&node_ip)))
    {
        allowed.extend(load_balancer_ips.iter().map(ToString::to_string));
    }
    Some(format!(
        "{} saddr != {{ {} }} drop",
        ctx.ipx,
        allowed.join(", ")
    ))
}

/// Writes the endpoint choice of one policy chain.
fn endpoint_rules(
    ctx: &FamilyContext<'_>,
    state: &ServicePortState,
    chain: &str,
    endpoints: &[&Endpoint],
    slots: &mut Slots,
    out: &mut PortRules,
) {
    let port = &state.port;
    let ipx = ctx.ipx;
    let proto = port.protocol().as_lower_str();
    if let SessionAffinity::ClientIp { timeout_seconds } = port.session_affinity {
        let mut verdicts = Vec::with_capacity(endpoints.len());
        for (i, endpoint) in endpoints.iter().enumerate() {
            let endpoint_chain = names::endpoint_chain(&port.name, endpoint.address, endpoint.port);
            let affinity_set = names::affinity_set(&port.name, endpoint.address, endpoint.port);
            out.sets.insert(
                affinity_set.clone(),
                OwnedSet {
                    kind: "set",
                    spec: format!(
                        "type {}_addr ; flags dynamic,timeout ; timeout {timeout_seconds}s ;",
                        if ctx.family == IpFamily::V4 {
                            "ipv4"
                        } else {
                            "ipv6"
                        }
                    ),
                },
            );
            out.chains
                .entry(chain.to_owned())
                .or_default()
                .push(format!("{ipx} saddr @{affinity_set} goto {endpoint_chain}"));
            out.chains.insert(
                endpoint_chain.clone(),
                vec![
                    format!(
                        "{ipx} saddr {} jump {MARK_FOR_MASQUERADE}",
                        endpoint.address
                    ),
                    format!("update @{affinity_set} {{ {ipx} saddr }}"),
                    format!(
                        "meta l4proto {proto} dnat {ipx} to {}",
                        socket(endpoint.address, endpoint.port)
                    ),
                ],
            );
            verdicts.push(format!("{i} : goto {endpoint_chain}"));
        }
        out.chains
            .entry(chain.to_owned())
            .or_default()
            .push(format!(
                "numgen random mod {} vmap {{ {} }}",
                endpoints.len(),
                verdicts.join(", ")
            ));
        return;
    }

    let slot = slots.slot_for(chain);
    out.slotted.insert(chain.to_owned());
    let shard = slot % ENDPOINT_MAP_SHARDS;
    let base = (slot / ENDPOINT_MAP_SHARDS) << 16;
    let map = names::endpoint_map(port.protocol(), shard);
    // A slot holds 65,536 keys; an endpoint set larger than that is cut, never wrapped into
    // another service's keys.
    let count = endpoints.len().min(1 << 16);
    for (i, endpoint) in endpoints.iter().take(count).enumerate() {
        let key = base + u32::try_from(i).unwrap_or(u32::MAX);
        out.elements.insert(Element {
            set: map.clone(),
            key: key.to_string(),
            value: Some(format!("{} . {}", endpoint.address, endpoint.port)),
        });
        // Only endpoints on this node can send their own connections through this node's
        // DNAT; an endpoint of unknown node is treated as possibly local.
        if endpoint.node_name.is_none() || endpoint.is_local_to(&ctx.node.name) {
            out.elements.insert(Element {
                set: names::HAIRPIN.to_owned(),
                key: format!("{} . {}", endpoint.address, endpoint.address),
                value: None,
            });
        }
    }
    out.chains
        .entry(chain.to_owned())
        .or_default()
        .push(format!(
            "meta l4proto {proto} dnat {ipx} to numgen random mod {count} offset {base} map @{map}"
        ));
}
