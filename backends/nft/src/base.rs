//! The fixed part of each family's table: hooks, dispatch chains, shared maps and sets.

use kproxy_core::IpFamily;
use kproxy_core::plan::{ClusterIpMasquerade, LocalTraffic, NodePortDestinations};

use crate::names::*;
use crate::render::{FamilyContext, POD_CIDRS};
use crate::transaction::{BaseChain, Op, Transaction};
use crate::values::{Key, SetSpec};

/// The base chains, as upstream: filters run before DNAT (on pre-DNAT addresses), except the
/// post-DNAT output check.
const BASE_CHAINS: &[(&str, &str, &str, i32)] = &[
    (FILTER_PREROUTING, "filter", "prerouting", -110),
    (FILTER_INPUT, "filter", "input", -110),
    (FILTER_FORWARD, "filter", "forward", -110),
    (FILTER_OUTPUT, "filter", "output", -110),
    (FILTER_OUTPUT_POST_DNAT, "filter", "output", -90),
    (NAT_PREROUTING, "nat", "prerouting", -100),
    (NAT_OUTPUT, "nat", "output", -100),
    (NAT_POSTROUTING, "nat", "postrouting", 100),
];

/// The regular chains of the fixed part: dispatch and helpers.
const HELPER_CHAINS: [&str; 8] = [
    SERVICES,
    MASQUERADING,
    MARK_FOR_MASQUERADE,
    REJECT_CHAIN,
    FIREWALL_CHECK,
    SERVICE_ENDPOINTS_CHECK,
    NODEPORT_ENDPOINTS_CHECK,
    CLUSTER_IPS_CHECK,
];

/// Every chain of the fixed part: only a full sync writes their rules.
pub(crate) fn fixed_chains() -> impl Iterator<Item = &'static str> {
    BASE_CHAINS
        .iter()
        .map(|(name, ..)| *name)
        .chain(HELPER_CHAINS)
}

/// The shared maps and sets whose emptying the drift check notices.
pub(crate) const DISPATCH_SETS: [&str; 6] = [
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    FIREWALL_IPS,
    CLUSTER_IPS,
];

/// Which helper chain each base chain jumps to, and on what condition.
const JUMPS: &[(&str, &str, &str)] = &[
    (FILTER_INPUT, "ct state new", NODEPORT_ENDPOINTS_CHECK),
    (FILTER_INPUT, "ct state new", SERVICE_ENDPOINTS_CHECK),
    (FILTER_FORWARD, "ct state new", SERVICE_ENDPOINTS_CHECK),
    (FILTER_OUTPUT, "ct state new", SERVICE_ENDPOINTS_CHECK),
    (FILTER_PREROUTING, "ct state new", FIREWALL_CHECK),
    (FILTER_OUTPUT, "ct state new", FIREWALL_CHECK),
    (NAT_OUTPUT, "", SERVICES),
    (NAT_PREROUTING, "", SERVICES),
    (NAT_POSTROUTING, "", MASQUERADING),
    (FILTER_FORWARD, "ct state new", CLUSTER_IPS_CHECK),
    (FILTER_OUTPUT_POST_DNAT, "ct state new", CLUSTER_IPS_CHECK),
];

/// Appends the whole fixed part of the table to `tx` (which must start from an empty table).
pub(crate) fn write_base(ctx: &FamilyContext<'_>, tx: &mut Transaction) {
    let ipx = ctx.ipx;
    let plan = &ctx.plan;
    let addr = match plan.family {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    };
    for (name, kind, hook, priority) in BASE_CHAINS {
        tx.push(Op::AddChain {
            name: (*name).to_owned(),
            base: Some(BaseChain {
                kind,
                hook,
                priority: *priority,
            }),
        });
    }
    for name in HELPER_CHAINS {
        tx.chain(name);
    }
    let destination_map = format!("type {addr} . inet_proto . inet_service : verdict ;");
    let node_port_map = "type inet_proto . inet_service : verdict ;".to_owned();
    for (kind, name, spec) in [
        ("map", SERVICE_IPS, destination_map.clone()),
        ("map", SERVICE_NODEPORTS, node_port_map.clone()),
        ("map", FIREWALL_IPS, destination_map.clone()),
        ("map", NO_ENDPOINT_SERVICES, destination_map),
        ("map", NO_ENDPOINT_NODEPORTS, node_port_map),
        ("set", CLUSTER_IPS, format!("type {addr} ;")),
        ("set", HAIRPIN, format!("type {addr} . {addr} ;")),
    ] {
        tx.push(Op::AddSet {
            name: name.to_owned(),
            spec: SetSpec::Declared { kind, body: spec },
        });
    }
    if let LocalTraffic::SourceCidrs(local_cidrs) = &plan.local_traffic {
        tx.push(Op::AddSet {
            name: POD_CIDRS.to_owned(),
            spec: SetSpec::Declared {
                kind: "set",
                body: format!("type {addr} ; flags interval ;"),
            },
        });
        for cidr in local_cidrs {
            tx.push(Op::AddElement {
                set: POD_CIDRS.to_owned(),
                key: Key::Prefix(*cidr),
                value: None,
            });
        }
    }

    for (from, condition, to) in JUMPS {
        let rule = if condition.is_empty() {
            format!("jump {to}")
        } else {
            format!("{condition} jump {to}")
        };
        tx.rule(from, rule);
    }
    let mark = format!("{:#x}", plan.masquerade_mark);
    tx.rule(
        MARK_FOR_MASQUERADE,
        format!("meta mark set meta mark | {mark}"),
    );
    tx.rule(
        MASQUERADING,
        format!("ct status dnat {ipx} saddr . {ipx} daddr @{HAIRPIN} jump {MARK_FOR_MASQUERADE}"),
    );
    tx.rule(MASQUERADING, format!("meta mark & {mark} == 0 return"));
    tx.rule(MASQUERADING, format!("meta mark set meta mark ^ {mark}"));
    tx.rule(MASQUERADING, "masquerade fully-random");
    tx.rule(REJECT_CHAIN, "reject");

    // Internal traffic is masqueraded when it does not come from a local pod (it may have been
    // routed here from off the cluster), or always with masqueradeAll. Upstream writes this
    // rule once per service port, matching its cluster IP and port; one rule for every cluster
    // IP has the same effect (a packet to an unused port is rejected anyway) and halves the
    // rules per service, which nft re-reads on every sync.
    match (plan.cluster_ip_masquerade, &ctx.if_not_local) {
        (ClusterIpMasquerade::All, _) => tx.rule(
            SERVICES,
            format!("{ipx} daddr @{CLUSTER_IPS} jump {MARK_FOR_MASQUERADE}"),
        ),
        (ClusterIpMasquerade::NotFromLocalPods, Some(not_local)) => tx.rule(
            SERVICES,
            format!("{ipx} daddr @{CLUSTER_IPS} {not_local} jump {MARK_FOR_MASQUERADE}"),
        ),
        (ClusterIpMasquerade::NotFromLocalPods, None) | (ClusterIpMasquerade::Never, _) => {}
    }
    tx.rule(
        SERVICES,
        format!("{ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    if let Some(node_ports) = node_port_match(ctx) {
        tx.rule(
            SERVICES,
            format!("{node_ports} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        );
        tx.rule(
            NODEPORT_ENDPOINTS_CHECK,
            format!("{node_ports} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
        );
    }
    tx.rule(
        FIREWALL_CHECK,
        format!("{ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"),
    );
    tx.rule(
        SERVICE_ENDPOINTS_CHECK,
        format!("{ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    );
    tx.rule(
        CLUSTER_IPS_CHECK,
        format!("{ipx} daddr @{CLUSTER_IPS} reject"),
    );
    // Configured CIDRs and those of the cluster's ServiceCIDR objects.
    let service_cidrs: Vec<String> = plan.service_cidrs.iter().map(ToString::to_string).collect();
    if !service_cidrs.is_empty() {
        tx.rule(
            CLUSTER_IPS_CHECK,
            format!("{ipx} daddr {{ {} }} drop", service_cidrs.join(", ")),
        );
    }
}

/// The match for destinations that node ports answer on, or `None` when none of this family.
fn node_port_match(ctx: &FamilyContext<'_>) -> Option<String> {
    let ipx = ctx.ipx;
    let not_localhost = match ctx.family() {
        IpFamily::V4 => "ip daddr != 127.0.0.0/8",
        IpFamily::V6 => "ip6 daddr != ::1",
    };
    let list = |items: Vec<String>| items.join(", ");
    match &ctx.plan.node_ports {
        NodePortDestinations::AllLocal => Some(format!("fib daddr type local {not_localhost}")),
        NodePortDestinations::Addresses(ips) => Some(match ips.as_slice() {
            [ip] => format!("{ipx} daddr {ip}"),
            ips => format!(
                "{ipx} daddr {{ {} }}",
                list(ips.iter().map(ToString::to_string).collect())
            ),
        }),
        NodePortDestinations::LocalInCidrs(cidrs) => Some(format!(
            "fib daddr type local {not_localhost} {ipx} daddr {{ {} }}",
            list(cidrs.iter().map(ToString::to_string).collect())
        )),
        NodePortDestinations::None => None,
    }
}
