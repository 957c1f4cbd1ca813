//! The few iptables rules this mode keeps, per family: masquerade (nat), the load-balancer
//! firewall, the verdicts for destinations without endpoints and the REJECT of other ports
//! on service addresses (filter), and the short-circuit marks (mangle). Every rule but the
//! short-circuit ones matches ipsets, so the rules are the same for any cluster and are
//! written at full syncs only.
//!
//! Hook order decides where a rule goes: IPVS takes packets at `LOCAL_IN` after the filter
//! table's INPUT chain, and at `LOCAL_OUT` after nat OUTPUT but before filter OUTPUT. A
//! verdict on a packet IPVS would forward is therefore in filter INPUT, and for the node's
//! own packets in mangle OUTPUT (the firewall) or filter OUTPUT (destinations IPVS leaves
//! alone: no endpoints).

use kproxy_core::plan::ClusterIpMasquerade;
use kproxy_iptables::{RestoreInput, Table};

use crate::render::{FamilyContext, MARK_MASK};
use crate::sets::SetId;

/// nat: the entry of service traffic, from PREROUTING and OUTPUT.
pub(crate) const SERVICES: &str = "KUBE-SERVICES";
/// nat: masquerade of node-port traffic.
pub(crate) const NODE_PORT: &str = "KUBE-NODE-PORT";
/// nat: sets the masquerade mark.
pub(crate) const MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// nat: masquerades marked and hairpin traffic.
pub(crate) const POSTROUTING: &str = "KUBE-POSTROUTING";
/// filter and mangle: the load-balancer source-range firewall.
pub(crate) const FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// filter: verdicts for service addresses.
pub(crate) const IPVS_FILTER: &str = "KUBE-IPVS-FILTER";
/// filter: accepts forwarded service traffic.
pub(crate) const FORWARD: &str = "KUBE-FORWARD";
/// mangle: marks local traffic to `externalTrafficPolicy: Local` destinations for the
/// short-circuit virtual servers.
pub(crate) const SHORT_CIRCUIT: &str = "KUBE-SHORT-CIRCUIT";

/// The jumps from built-in chains to this mode's chains: (table, built-in chain, target).
pub(crate) const JUMPS: [(Table, &str, &str); 9] = [
    (Table::Nat, "PREROUTING", SERVICES),
    (Table::Nat, "OUTPUT", SERVICES),
    (Table::Nat, "POSTROUTING", POSTROUTING),
    (Table::Mangle, "PREROUTING", SHORT_CIRCUIT),
    (Table::Mangle, "OUTPUT", SHORT_CIRCUIT),
    (Table::Mangle, "OUTPUT", FIREWALL),
    (Table::Filter, "INPUT", FIREWALL),
    (Table::Filter, "INPUT", IPVS_FILTER),
    (Table::Filter, "OUTPUT", IPVS_FILTER),
];

/// The one jump of this mode from FORWARD (last: the others' order within a table matters).
pub(crate) const FORWARD_JUMP: (Table, &str, &str) = (Table::Filter, "FORWARD", FORWARD);

/// Every chain of this mode, per table.
pub(crate) const CHAINS: [(Table, &str); 9] = [
    (Table::Nat, SERVICES),
    (Table::Nat, NODE_PORT),
    (Table::Nat, MARK_MASQ),
    (Table::Nat, POSTROUTING),
    (Table::Mangle, SHORT_CIRCUIT),
    (Table::Mangle, FIREWALL),
    (Table::Filter, FIREWALL),
    (Table::Filter, IPVS_FILTER),
    (Table::Filter, FORWARD),
];

fn set_match(ctx: &FamilyContext<'_>, set: SetId, dims: &str) -> String {
    format!("-m set --match-set {} {dims}", set.name(ctx.family()))
}

/// Declares (flushes) every chain of this mode except the short-circuit one and writes its
/// fixed rules.
pub(crate) fn fixed_rules(ctx: &FamilyContext<'_>, input: &mut RestoreInput) {
    for (table, chain) in CHAINS {
        if chain != SHORT_CIRCUIT {
            input.declare(table, chain);
        }
    }
    let mark = format!("{:#x}", ctx.plan.masquerade_mark);
    let mut nat = |chain: &str, rule: String| input.append(Table::Nat, chain, &rule);
    nat(MARK_MASQ, format!("-j MARK --or-mark {mark}"));
    nat(
        POSTROUTING,
        format!(
            "-m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" {} -j MASQUERADE --random-fully",
            set_match(ctx, SetId::LoopBack, "dst,dst,src")
        ),
    );
    nat(
        POSTROUTING,
        format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
    );
    nat(POSTROUTING, format!("-j MARK --xor-mark {mark}"));
    nat(
        POSTROUTING,
        "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
            .to_owned(),
    );
    let (_, if_not_local) = kproxy_iptables::local_traffic_matches(&ctx.plan.local_traffic);
    let cluster_ip = set_match(ctx, SetId::ClusterIp, "dst,dst");
    match ctx.plan.cluster_ip_masquerade {
        ClusterIpMasquerade::All => nat(
            SERVICES,
            format!(
                "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" {cluster_ip} -j {MARK_MASQ}"
            ),
        ),
        ClusterIpMasquerade::NotFromLocalPods => {
            if let Some(not_local) = &if_not_local {
                nat(
                    SERVICES,
                    format!(
                        "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" {not_local} {cluster_ip} -j {MARK_MASQ}"
                    ),
                );
            }
        }
        ClusterIpMasquerade::Never => {}
    }
    for (set, what) in [
        (SetId::ExternalIp, "external ip"),
        (SetId::LoadBalancer, "load balancer ip"),
    ] {
        nat(
            SERVICES,
            format!(
                "-m comment --comment \"Kubernetes service {what} + port for masquerade purpose\" {} -j {MARK_MASQ}",
                set_match(ctx, set, "dst,dst")
            ),
        );
    }
    nat(
        SERVICES,
        format!("-m addrtype --dst-type LOCAL -j {NODE_PORT}"),
    );
    for (set, proto) in [
        (SetId::NodePortTcp, "tcp"),
        (SetId::NodePortUdp, "udp"),
        (SetId::NodePortSctp, "sctp"),
    ] {
        nat(
            NODE_PORT,
            format!(
                "-p {proto} -m comment --comment \"Kubernetes nodeport {} port for masquerade purpose\" {} -j {MARK_MASQ}",
                proto.to_uppercase(),
                set_match(ctx, set, "dst")
            ),
        );
    }

    let firewall = format!(
        "-m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" {} -m set ! --match-set {} dst,dst,src -m set ! --match-set {} dst,dst,src -j DROP",
        set_match(ctx, SetId::LoadBalancerFw, "dst,dst"),
        SetId::LoadBalancerSourceCidr.name(ctx.family()),
        SetId::LoadBalancerSourceIp.name(ctx.family()),
    );
    input.append(Table::Filter, FIREWALL, &firewall);
    input.append(Table::Mangle, FIREWALL, &firewall);

    let mut filter = |chain: &str, rule: String| input.append(Table::Filter, chain, &rule);
    filter(
        IPVS_FILTER,
        format!(
            "-m comment --comment \"service destinations without endpoints\" {} -j REJECT",
            set_match(ctx, SetId::NoEndpoints, "dst,dst")
        ),
    );
    // Local traffic that short-circuits to every endpoint carries its mark: not dropped.
    filter(
        IPVS_FILTER,
        format!(
            "-m comment --comment \"service destinations without local endpoints\" -m mark --mark 0x0/{MARK_MASK:#x} {} -j DROP",
            set_match(ctx, SetId::NoLocalEndpoints, "dst,dst")
        ),
    );
    filter(
        IPVS_FILTER,
        format!(
            "-p tcp -m comment --comment \"Kubernetes health check node port\" {} -j ACCEPT",
            set_match(ctx, SetId::HealthCheckNodePort, "dst")
        ),
    );
    for set in [
        SetId::ClusterIp,
        SetId::ExternalIp,
        SetId::ExternalIpLocal,
        SetId::LoadBalancer,
        SetId::LoadBalancerLocal,
    ] {
        filter(
            IPVS_FILTER,
            format!("{} -j RETURN", set_match(ctx, set, "dst,dst")),
        );
    }
    filter(
        IPVS_FILTER,
        format!(
            "-m comment --comment \"other ports on service addresses\" -m conntrack --ctstate NEW {} -j REJECT",
            set_match(ctx, SetId::IpvsIps, "dst")
        ),
    );
    filter(
        FORWARD,
        format!(
            "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
        ),
    );
    filter(
        FORWARD,
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .to_owned(),
    );
}

/// Declares (flushes) the short-circuit chain and writes `rules` into it.
pub(crate) fn short_circuit_rules<'r>(
    input: &mut RestoreInput,
    rules: impl IntoIterator<Item = &'r String>,
) {
    input.declare(Table::Mangle, SHORT_CIRCUIT);
    for rule in rules {
        input.append(Table::Mangle, SHORT_CIRCUIT, rule);
    }
}

/// The jump rule text as `iptables-save` prints it (arguments after `-A CHAIN`).
pub(crate) fn jump_rule(target: &str) -> String {
    format!("-j {target}")
}
