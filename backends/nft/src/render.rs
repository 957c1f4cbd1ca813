//! What one service port becomes in one family's table: its chains, its sets, and the
//! elements it owns in the shared maps, translated from core's [`PortPlan`] (which decides
//! routes, verdicts, masquerade, firewall and hairpin; this module only spells them). Pure: the same state, configuration and slots always
//! render the same rules, which is what makes incremental syncs equal full ones.
//!
//! The shape follows upstream kube-proxy's nftables mode, with one difference: the choice of
//! endpoint is a `numgen` lookup in a shared map instead of a chain per endpoint, which keeps
//! the kernel's work per sync proportional to what changed (see [`names::endpoint_map`]).
//! Services with session affinity keep upstream's per-endpoint chains and affinity sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_core::plan::{
    FamilyPlan, Firewall, LocalTraffic, PlannedEndpoint, Policy, PortPlan, Route,
};
use kproxy_core::{Balancing, IpFamily, ProxyConfig, ProxyState, ServicePortState};

use crate::names::{self, ENDPOINT_MAP_SHARDS, MARK_FOR_MASQUERADE, REJECT_CHAIN};
use crate::slots::Slots;
use crate::values::{DnatRule, Key, RANDOM_MODULUS, Rule, SetSpec, Value, Verdict};

/// An element a service port wants in a shared set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Element {
    pub(crate) set: String,
    pub(crate) key: Key,
    pub(crate) value: Option<Value>,
}

/// Everything one service port contributes to one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PortRules {
    pub(crate) chains: BTreeMap<String, Vec<Rule>>,
    pub(crate) sets: BTreeMap<String, SetSpec>,
    pub(crate) elements: BTreeSet<Element>,
    /// The chains that hold a slot in the endpoint maps.
    pub(crate) slotted: BTreeSet<String>,
}

/// One family's plan, with the nft spellings the rules need.
#[derive(Debug, Clone)]
pub(crate) struct FamilyContext<'a> {
    pub(crate) plan: FamilyPlan<'a>,
    /// `ip` or `ip6`.
    pub(crate) ipx: &'static str,
    /// Matches traffic from local pods, when the detector works for this family.
    pub(crate) if_local: Option<String>,
    /// Matches traffic not from local pods.
    pub(crate) if_not_local: Option<String>,
}

/// The named set the CIDR-based local-traffic detectors match against.
pub(crate) const POD_CIDRS: &str = "pod-cidrs";

impl<'a> FamilyContext<'a> {
    pub(crate) fn new(family: IpFamily, config: &ProxyConfig, state: &'a ProxyState) -> Self {
        let plan = FamilyPlan::new(family, config, state);
        let ipx = names::family_keyword(family);
        let (if_local, if_not_local) = match &plan.local_traffic {
            LocalTraffic::SourceCidrs(_) => (
                Some(format!("{ipx} saddr @{POD_CIDRS}")),
                Some(format!("{ipx} saddr != @{POD_CIDRS}")),
            ),
            LocalTraffic::InterfacePrefix(prefix) => (
                Some(format!("iifname \"{prefix}*\"")),
                Some(format!("iifname != \"{prefix}*\"")),
            ),
            LocalTraffic::Bridge(bridge) => (
                Some(format!("iifname \"{bridge}\"")),
                Some(format!("iifname != \"{bridge}\"")),
            ),
            LocalTraffic::Undetectable => (None, None),
        };
        Self {
            plan,
            ipx,
            if_local,
            if_not_local,
        }
    }

    /// The family.
    pub(crate) fn family(&self) -> IpFamily {
        self.plan.family
    }
}

/// The `numgen` generator of a balancing mode (for the affinity chains' inline vmap).
fn numgen(balancing: Balancing) -> &'static str {
    match balancing {
        Balancing::Random => "random",
        Balancing::RoundRobin => "inc",
    }
}

fn goto(chain: &str) -> Option<Value> {
    Some(Value::Verdict(Verdict::Goto(chain.to_owned())))
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
    let mut out = PortRules::default();
    let Some(plan) = PortPlan::new(&ctx.plan, state) else {
        return out;
    };
    let name = plan.name;
    let cluster_chain = names::cluster_chain(name);
    let local_chain = names::local_chain(name);
    let external_chain = names::external_chain(name);
    let policy_chain = |policy: Policy| match policy {
        Policy::Cluster => &cluster_chain,
        Policy::Local => &local_chain,
    };
    let no_endpoints_verdict = |route: Route| -> Option<Value> {
        match route {
            Route::Endpoints(_) => None,
            Route::Drop => Some(Value::Verdict(Verdict::Drop)),
            Route::Reject => goto(REJECT_CHAIN),
        }
    };
    let mut element = |set: &str, key: Key, value: Option<Value>| {
        out.elements.insert(Element {
            set: set.to_owned(),
            key,
            value,
        });
    };

    // Destinations.
    let cluster_key = Key::Destination(plan.cluster_ip, plan.protocol, plan.port);
    element(names::CLUSTER_IPS, Key::Address(plan.cluster_ip), None);
    match plan.internal {
        Route::Endpoints(policy) => {
            element(names::SERVICE_IPS, cluster_key, goto(policy_chain(policy)))
        }
        route => element(
            names::NO_ENDPOINT_SERVICES,
            cluster_key,
            no_endpoints_verdict(route),
        ),
    }
    let firewall = plan.firewall.as_ref().map(|f| firewall_rule(ctx, f));
    let firewall_chain = names::firewall_chain(name);
    if let Some(external) = &plan.external {
        let external_verdict = no_endpoints_verdict(external.route);
        for destination in &external.destinations {
            let key = Key::Destination(destination.ip, plan.protocol, plan.port);
            if external.has_chain() {
                element(names::SERVICE_IPS, key.clone(), goto(&external_chain));
            }
            if destination.load_balancer && firewall.is_some() {
                element(names::FIREWALL_IPS, key.clone(), goto(&firewall_chain));
            }
            if let Some(verdict) = &external_verdict {
                element(names::NO_ENDPOINT_SERVICES, key, Some(verdict.clone()));
            }
        }
        if let Some(node_port) = external.node_port {
            let key = Key::NodePort(plan.protocol, node_port);
            if external.has_chain() {
                element(names::SERVICE_NODEPORTS, key.clone(), goto(&external_chain));
            }
            if let Some(verdict) = &external_verdict {
                element(names::NO_ENDPOINT_NODEPORTS, key, Some(verdict.clone()));
            }
        }
        if external.has_chain() {
            let rules = out.chains.entry(external_chain.clone()).or_default();
            if external.short_circuit_local_traffic {
                if let Some(local) = &ctx.if_local {
                    rules.push(Rule::Text(format!("{local} goto {cluster_chain}")));
                }
                rules.push(Rule::Text(format!(
                    "fib saddr type local jump {MARK_FOR_MASQUERADE}"
                )));
                rules.push(Rule::Text(format!(
                    "fib saddr type local goto {cluster_chain}"
                )));
            }
            if external.masquerade {
                rules.push(Rule::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.to_owned())));
            }
            if let Some(policy) = external.route.policy() {
                rules.push(Rule::Verdict(Verdict::Goto(policy_chain(policy).clone())));
            }
        }
    }
    if let Some(rule) = firewall {
        out.chains.insert(firewall_chain, vec![rule]);
    }

    for (policy, endpoints) in [
        (Policy::Cluster, &plan.cluster_endpoints),
        (Policy::Local, &plan.local_endpoints),
    ] {
        if !endpoints.is_empty() {
            endpoint_rules(ctx, &plan, policy_chain(policy), endpoints, slots, &mut out);
        }
    }
    out
}

/// The firewall rule of a load-balancer port with source ranges.
fn firewall_rule(ctx: &FamilyContext<'_>, firewall: &Firewall) -> Rule {
    match firewall {
        Firewall::DropAll => Rule::Verdict(Verdict::Drop),
        Firewall::Allow { ranges, vips } => {
            let allowed: Vec<String> = ranges
                .iter()
                .map(ToString::to_string)
                .chain(vips.iter().map(ToString::to_string))
                .collect();
            Rule::Text(format!(
                "{} saddr != {{ {} }} drop",
                ctx.ipx,
                allowed.join(", ")
            ))
        }
    }
}

/// Writes the endpoint choice of one policy chain.
fn endpoint_rules(
    ctx: &FamilyContext<'_>,
    plan: &PortPlan<'_>,
    chain: &str,
    endpoints: &[PlannedEndpoint<'_>],
    slots: &mut Slots,
    out: &mut PortRules,
) {
    let ipx = ctx.ipx;
    let proto = plan.protocol.as_lower_str();
    let numgen = numgen(plan.balancing);
    if let Some(timeout_seconds) = plan.affinity_timeout {
        let mut verdicts = Vec::with_capacity(endpoints.len());
        for (i, planned) in endpoints.iter().enumerate() {
            let endpoint = planned.endpoint;
            let endpoint_chain = names::endpoint_chain(plan.name, endpoint.address, endpoint.port);
            let affinity_set = names::affinity_set(plan.name, endpoint.address, endpoint.port);
            out.sets.insert(
                affinity_set.clone(),
                SetSpec::Declared {
                    kind: "set",
                    body: format!(
                        "type {}_addr ; flags dynamic,timeout ; timeout {timeout_seconds}s ;",
                        if ctx.family() == IpFamily::V4 {
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
                .push(Rule::Text(format!(
                    "{ipx} saddr @{affinity_set} goto {endpoint_chain}"
                )));
            out.chains.insert(
                endpoint_chain.clone(),
                vec![
                    Rule::Text(format!(
                        "{ipx} saddr {} jump {MARK_FOR_MASQUERADE}",
                        endpoint.address
                    )),
                    Rule::Text(format!("update @{affinity_set} {{ {ipx} saddr }}")),
                    Rule::Text(format!(
                        "meta l4proto {proto} dnat {ipx} to {}",
                        socket(endpoint.address, endpoint.port)
                    )),
                ],
            );
            verdicts.push(format!("{i} : goto {endpoint_chain}"));
        }
        out.chains
            .entry(chain.to_owned())
            .or_default()
            .push(Rule::Text(format!(
                "numgen {numgen} mod {} vmap {{ {} }}",
                endpoints.len(),
                verdicts.join(", ")
            )));
        return;
    }

    let slot = slots.slot_for(chain);
    out.slotted.insert(chain.to_owned());
    let shard = slot % ENDPOINT_MAP_SHARDS;
    let base = (slot / ENDPOINT_MAP_SHARDS) << 16;
    let map = names::endpoint_map(plan.protocol, shard);
    // Random balancing spreads RANDOM_MODULUS keys over the endpoints; round robin counts
    // through one key per endpoint. An endpoint set larger than the keys is cut, never wrapped
    // into another service's keys.
    let modulus = match plan.balancing {
        Balancing::Random => RANDOM_MODULUS,
        Balancing::RoundRobin => u32::try_from(endpoints.len())
            .unwrap_or(u32::MAX)
            .min(RANDOM_MODULUS),
    };
    let count = endpoints.len().min(modulus as usize);
    for (i, planned) in endpoints.iter().take(count).enumerate() {
        let endpoint = planned.endpoint;
        let (first, last) = key_range(i, count, modulus);
        out.elements.insert(Element {
            set: map.clone(),
            key: Key::Slots {
                first: base + first,
                last: base + last,
            },
            value: Some(Value::Endpoint(endpoint.address, endpoint.port)),
        });
        if planned.hairpin {
            out.elements.insert(Element {
                set: names::HAIRPIN.to_owned(),
                key: Key::AddressPair(endpoint.address, endpoint.address),
                value: None,
            });
        }
    }
    out.chains
        .entry(chain.to_owned())
        .or_default()
        .push(Rule::Dnat(DnatRule {
            family: ctx.family(),
            protocol: plan.protocol,
            balancing: plan.balancing,
            modulus,
            offset: base,
            map,
        }));
}

/// The keys (first, last, from 0) of endpoint `index` of `count` when `modulus` keys are split
/// into `count` ranges whose widths differ by at most one.
fn key_range(index: usize, count: usize, modulus: u32) -> (u32, u32) {
    let bound = |i: usize| -> u32 {
        // i <= count <= modulus < 2^16, so the product fits a u64 and the quotient a u32.
        u32::try_from(i as u64 * u64::from(modulus) / count as u64).unwrap_or(modulus)
    };
    (bound(index), bound(index + 1) - 1)
}

#[cfg(test)]
mod tests {
    use super::key_range;

    #[test]
    fn key_ranges_cover_the_modulus_without_gaps_and_nearly_evenly() {
        for (count, modulus) in [
            (1, 65_535),
            (3, 65_535),
            (10, 65_535),
            (7, 7),
            (1_000, 65_535),
        ] {
            let ranges: Vec<_> = (0..count).map(|i| key_range(i, count, modulus)).collect();
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[count - 1].1, modulus - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "{count} of {modulus}");
            }
            let widths: Vec<u32> = ranges.iter().map(|(a, b)| b - a + 1).collect();
            let (min, max) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
            assert!(max - min <= 1, "{count} of {modulus}: {min}..{max}");
        }
    }
}
