//! What one service port becomes in one family's tables: its own nat chains (KUBE-SVC-,
//! KUBE-SVL-, KUBE-EXT-, KUBE-FW-; no per-endpoint KUBE-SEP-, see [`endpoint_rules`]) and its
//! rules in the shared chains, translated
//! from core's [`PortPlan`] (which decides routes, verdicts, masquerade, firewall and hairpin;
//! this module only spells them, with upstream's rule text and comments). Pure: the same
//! state and configuration always render the same rules, which is what lets a partial sync
//! rewrite only the ports that changed.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_core::plan::{ClusterIpMasquerade, Firewall, PlannedEndpoint, Policy, PortPlan, Route};
use kproxy_core::{Balancing, ServicePortState};

use crate::context::FamilyContext;
use crate::names::{
    self, EXTERNAL_SERVICES, MARK_MASQ, NODEPORTS, POSTROUTING, PROXY_FIREWALL, SERVICES,
};
use crate::restore::Table;

/// A rule of one service port in a chain shared by all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SharedRule {
    pub(crate) table: Table,
    pub(crate) chain: &'static str,
    /// The arguments after `-A CHAIN`.
    pub(crate) rule: String,
}

/// Everything one service port contributes to one family's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortRules {
    /// Its own chains (all in nat), each with its rules in order.
    pub(crate) chains: BTreeMap<String, Vec<String>>,
    /// Its rules in the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, ...), whose order
    /// among other ports' rules does not matter: each matches its own destination.
    pub(crate) shared: BTreeSet<SharedRule>,
}

impl PortRules {
    /// The rules it holds in `table`.
    pub(crate) fn rule_count(&self, table: Table) -> usize {
        let own = match table {
            Table::Nat => self.chains.values().map(Vec::len).sum(),
            Table::Filter | Table::Mangle => 0,
        };
        own + self.shared.iter().filter(|r| r.table == table).count()
    }
}

/// Renders one service port for one family.
pub(crate) fn render_port(ctx: &FamilyContext<'_>, state: &ServicePortState) -> PortRules {
    let mut out = PortRules::default();
    let Some(plan) = PortPlan::new(&ctx.plan, state) else {
        return out;
    };
    let spn = names::service_port(plan.name);
    let proto = plan.protocol.as_lower_str();
    let cluster_chain = names::cluster_chain(plan.name);
    let local_chain = names::local_chain(plan.name);
    let external_chain = names::external_chain(plan.name);
    let firewall_chain = names::firewall_chain(plan.name);
    let policy_chain = |policy: Policy| match policy {
        Policy::Cluster => cluster_chain.as_str(),
        Policy::Local => local_chain.as_str(),
    };
    let destination =
        |ip: std::net::IpAddr| format!("-m {proto} -p {proto} -d {ip} --dport {}", plan.port);
    let mut shared = |table: Table, chain: &'static str, rule: String| {
        out.shared.insert(SharedRule { table, chain, rule });
    };
    // The filter verdict of a route without usable endpoints, and its comment.
    let verdict = |route: Route| match route {
        Route::Endpoints(_) => None,
        Route::Reject => Some(("has no endpoints", "REJECT")),
        Route::Drop => Some(("has no local endpoints", "DROP")),
    };

    // Internal traffic.
    let cluster_ip = destination(plan.cluster_ip);
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match plan.internal {
        Route::Endpoints(policy) => {
            let chain = policy_chain(policy);
            shared(
                Table::Nat,
                SERVICES,
                format!("-m comment --comment \"{spn} cluster IP\" {cluster_ip} -j {chain}"),
            );
            let masquerade = match ctx.plan.cluster_ip_masquerade {
                ClusterIpMasquerade::All => Some(String::new()),
                ClusterIpMasquerade::NotFromLocalPods => {
                    ctx.if_not_local.as_ref().map(|m| format!(" {m}"))
                }
                ClusterIpMasquerade::Never => None,
            };
            if let Some(source) = masquerade {
                chains.entry(chain.to_owned()).or_default().push(format!(
                    "-m comment --comment \"{spn} cluster IP\" {cluster_ip}{source} -j {MARK_MASQ}"
                ));
            }
        }
        route => {
            if let Some((comment, target)) = verdict(route) {
                shared(
                    Table::Filter,
                    SERVICES,
                    format!("-m comment --comment \"{spn} {comment}\" {cluster_ip} -j {target}"),
                );
            }
        }
    }

    // External traffic.
    if let Some(external) = &plan.external {
        let filter_verdict = verdict(external.route);
        let uses_firewall = external.has_chain()
            && plan.firewall.is_some()
            && external.destinations.iter().any(|d| d.load_balancer);
        for target in &external.destinations {
            let matched = destination(target.ip);
            if external.has_chain() {
                let (kind, jump) = if !target.load_balancer {
                    ("external IP", external_chain.as_str())
                } else if uses_firewall {
                    ("loadbalancer IP", firewall_chain.as_str())
                } else {
                    ("loadbalancer IP", external_chain.as_str())
                };
                shared(
                    Table::Nat,
                    SERVICES,
                    format!("-m comment --comment \"{spn} {kind}\" {matched} -j {jump}"),
                );
            }
            if target.load_balancer && uses_firewall {
                shared(
                    Table::Filter,
                    PROXY_FIREWALL,
                    format!(
                        "-m comment --comment \"{spn} traffic not accepted by {firewall_chain}\" {matched} -j DROP"
                    ),
                );
            }
            if let Some((comment, verdict)) = filter_verdict {
                shared(
                    Table::Filter,
                    EXTERNAL_SERVICES,
                    format!("-m comment --comment \"{spn} {comment}\" {matched} -j {verdict}"),
                );
            }
        }
        if let Some(node_port) = external.node_port {
            if external.has_chain() {
                shared(
                    Table::Nat,
                    NODEPORTS,
                    format!(
                        "-m comment --comment {spn} -m {proto} -p {proto} --dport {node_port} -j {external_chain}"
                    ),
                );
            }
            if let Some((comment, verdict)) = filter_verdict {
                shared(
                    Table::Filter,
                    EXTERNAL_SERVICES,
                    format!(
                        "-m comment --comment \"{spn} {comment}\" -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {node_port} -j {verdict}"
                    ),
                );
            }
        }
        if external.has_chain() {
            let rules = chains.entry(external_chain.clone()).or_default();
            if external.short_circuit_local_traffic {
                if let Some(local) = &ctx.if_local {
                    rules.push(format!(
                        "-m comment --comment \"pod traffic for {spn} external destinations\" {local} -j {cluster_chain}"
                    ));
                }
                rules.push(format!(
                    "-m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ}"
                ));
                rules.push(format!(
                    "-m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {cluster_chain}"
                ));
            }
            if external.masquerade {
                rules.push(format!(
                    "-m comment --comment \"masquerade traffic for {spn} external destinations\" -j {MARK_MASQ}"
                ));
            }
            if let Some(policy) = external.route.policy() {
                rules.push(format!("-j {}", policy_chain(policy)));
            }
        }
        if uses_firewall && let Some(firewall) = &plan.firewall {
            let rules = chains.entry(firewall_chain.clone()).or_default();
            if let Firewall::Allow { ranges, vips } = firewall {
                let sources = ranges
                    .iter()
                    .map(ToString::to_string)
                    .chain(vips.iter().map(ToString::to_string));
                for source in sources {
                    rules.push(format!(
                        "-m comment --comment \"{spn} loadbalancer IP\" -s {source} -j {external_chain}"
                    ));
                }
            }
            rules.push(format!(
                "-m comment --comment \"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL\""
            ));
        }
    }
    if let Some(health_check) = state.port.health_check_node_port
        && state.port.external_policy_local
    {
        shared(
            Table::Filter,
            NODEPORTS,
            format!(
                "-m comment --comment \"{spn} health check node port\" -m tcp -p tcp --dport {health_check} -j ACCEPT"
            ),
        );
    }

    // Endpoint choice.
    for (policy, endpoints) in [
        (Policy::Cluster, &plan.cluster_endpoints),
        (Policy::Local, &plan.local_endpoints),
    ] {
        if !endpoints.is_empty() {
            let rules = chains.entry(policy_chain(policy).to_owned()).or_default();
            endpoint_rules(ctx, &plan, &spn, rules, endpoints, &mut out.shared);
        }
    }
    out.chains.extend(chains);
    out
}

/// Writes the endpoint choice of one policy chain into `rules`, and the hairpin masquerade of
/// its endpoints into `shared`.
///
/// Upstream jumps from here to a `KUBE-SEP-…` chain per endpoint that marks hairpin traffic and
/// DNATs. Here each choice DNATs itself: iptables-nft's restore costs about (rules × chains)
/// (measured with iptables 1.8.9: 120,000 rules took 2 s over 1,000 chains and 9 s over 10,000),
/// so a chain per endpoint would make the full sync of 10,000 Services × 10 endpoints take many
/// minutes. The hairpin mark moves to `KUBE-POSTROUTING`, where the endpoint is known: a
/// connection from an endpoint DNATed to itself (`-s EP -d EP -m conntrack --ctstate DNAT`) is
/// masqueraded, as upstream's `KUBE-SEP-…` chain would have marked it (the DNAT check keeps a
/// host-network endpoint's own connections to its address, the node's, unmasqueraded). Affinity keeps upstream's `recent` list
/// names (the `KUBE-SEP-…` name), so connections keep their endpoint across a migration.
fn endpoint_rules(
    ctx: &FamilyContext<'_>,
    plan: &PortPlan<'_>,
    spn: &str,
    rules: &mut Vec<String>,
    endpoints: &[PlannedEndpoint<'_>],
    shared: &mut BTreeSet<SharedRule>,
) {
    let proto = plan.protocol.as_lower_str();
    // The affinity list (upstream's `KUBE-SEP-…` name, a hash) only where there is affinity:
    // the full sync renders every endpoint.
    let named: Vec<(Option<String>, String)> = endpoints
        .iter()
        .map(|planned| {
            let endpoint = planned.endpoint;
            (
                plan.affinity_timeout
                    .map(|_| names::endpoint_chain(plan.name, endpoint.address, endpoint.port)),
                names::endpoint(endpoint.address, endpoint.port),
            )
        })
        .collect();
    let dnat = |list: &Option<String>, endpoint: &str| {
        let remember = match list {
            Some(list) => format!(" -m recent --name {list} --set"),
            None => String::new(),
        };
        format!("{remember} -m {proto} -p {proto} -j DNAT --to-destination {endpoint}")
    };
    let comment = |endpoint: &str| {
        if ctx.large_cluster {
            String::new()
        } else {
            format!("-m comment --comment \"{spn} -> {endpoint}\"")
        }
    };
    if let Some(timeout) = plan.affinity_timeout {
        for (list, endpoint) in &named {
            let name = list.as_deref().unwrap_or_default();
            let rule = format!(
                "{} -m recent --name {name} --rcheck --seconds {timeout} --reap{}",
                comment(endpoint),
                dnat(list, endpoint)
            );
            rules.push(rule.trim_start().to_owned());
        }
    }
    let count = named.len();
    for (i, (list, endpoint)) in named.iter().enumerate() {
        let remaining = count - i;
        let pick = if remaining == 1 {
            String::new()
        } else {
            match plan.balancing {
                Balancing::Random => format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / remaining as f64
                ),
                // Each rule counts the packets that reach it: the first takes every n-th of
                // all, the next every (n-1)-th of the rest, and so on, which cycles through
                // the endpoints in order.
                Balancing::RoundRobin => {
                    format!(" -m statistic --mode nth --every {remaining} --packet 0")
                }
            }
        };
        let rule = format!("{}{pick}{}", comment(endpoint), dnat(list, endpoint));
        rules.push(rule.trim_start().to_owned());
    }
    for planned in endpoints.iter().filter(|planned| planned.hairpin) {
        let address = planned.endpoint.address;
        shared.insert(SharedRule {
            table: Table::Nat,
            chain: POSTROUTING,
            rule: format!(
                "-m comment --comment \"{spn} hairpin\" -s {address} -d {address} -m conntrack --ctstate DNAT -j {MARK_MASQ}"
            ),
        });
    }
}
