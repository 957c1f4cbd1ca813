//! The fixed part of each family's tables: upstream's top-level chains, their own rules, and
//! the jumps to them from the built-in chains.

use crate::context::FamilyContext;
use crate::names::*;
use crate::restore::{Table, join_args};

/// A jump from a built-in chain to one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jump {
    pub(crate) table: Table,
    /// The built-in chain (`PREROUTING`, `INPUT`, ...).
    pub(crate) from: &'static str,
    /// Our chain it jumps to.
    pub(crate) to: &'static str,
    /// The rule's arguments, one per item, as `iptables -C` takes them.
    pub(crate) args: Vec<&'static str>,
}

impl Jump {
    /// The rule as a restore line's arguments.
    pub(crate) fn rule(&self) -> String {
        join_args(&self.args)
    }
}

/// Upstream's jumps, in the order they stand in each built-in chain (upstream prepends them,
/// so they run before rules of other software).
pub(crate) fn jumps(ctx: &FamilyContext<'_>) -> Vec<Jump> {
    const NEW: [&str; 4] = ["-m", "conntrack", "--ctstate", "NEW"];
    let jump = |table, from, new: bool, comment: &'static str, to: &'static str| {
        let mut args: Vec<&'static str> = Vec::new();
        if new {
            args.extend(NEW);
        }
        if !comment.is_empty() {
            args.extend(["-m", "comment", "--comment", comment]);
        }
        args.extend(["-j", to]);
        Jump {
            table,
            from,
            to,
            args,
        }
    };
    let firewall = "kubernetes load balancer firewall";
    let portals = "kubernetes service portals";
    let external = "kubernetes externally-visible service portals";
    let mut jumps = vec![
        jump(Table::Filter, "INPUT", true, firewall, PROXY_FIREWALL),
        jump(
            Table::Filter,
            "INPUT",
            false,
            "kubernetes health check service ports",
            NODEPORTS,
        ),
        jump(Table::Filter, "INPUT", true, external, EXTERNAL_SERVICES),
        jump(Table::Filter, "FORWARD", true, firewall, PROXY_FIREWALL),
        jump(
            Table::Filter,
            "FORWARD",
            false,
            "kubernetes forwarding rules",
            FORWARD,
        ),
        jump(Table::Filter, "FORWARD", true, portals, SERVICES),
        jump(Table::Filter, "FORWARD", true, external, EXTERNAL_SERVICES),
        jump(Table::Filter, "OUTPUT", true, firewall, PROXY_FIREWALL),
        jump(Table::Filter, "OUTPUT", true, portals, SERVICES),
        jump(Table::Nat, "PREROUTING", false, portals, SERVICES),
        jump(Table::Nat, "OUTPUT", false, portals, SERVICES),
        jump(
            Table::Nat,
            "POSTROUTING",
            false,
            "kubernetes postrouting rules",
            POSTROUTING,
        ),
    ];
    if ctx.localhost_node_ports {
        jumps.push(jump(Table::Filter, "INPUT", false, "", LOCALNET_FIREWALL));
        jumps.push(jump(Table::Filter, "OUTPUT", false, "", LOCALNET_FIREWALL));
    }
    jumps
}

/// The fixed chains of `table` with their rules, in the order a full sync writes them. The
/// rules of `nat KUBE-SERVICES` listed here (the node-port jumps) must stay its last ones.
pub(crate) fn fixed_chains(
    ctx: &FamilyContext<'_>,
    table: Table,
) -> Vec<(&'static str, Vec<String>)> {
    let mark = ctx.mark();
    match table {
        Table::Nat => vec![
            (NODEPORTS, Vec::new()),
            (
                SERVICES,
                ctx.node_port_destinations()
                    .into_iter()
                    .map(|destination| {
                        format!(
                            "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" {destination} -j {NODEPORTS}"
                        )
                    })
                    .collect(),
            ),
            (MARK_MASQ, vec![format!("-j MARK --or-mark {mark}")]),
            (
                POSTROUTING,
                vec![
                    format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
                    format!("-j MARK --xor-mark {mark}"),
                    "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                        .to_owned(),
                ],
            ),
            (CANARY, Vec::new()),
        ],
        Table::Filter => {
            let mut forward = Vec::new();
            // Without a liberal TCP tracker, a packet conntrack calls INVALID (an
            // out-of-window segment of a DNATed connection) would reach the endpoint
            // un-NATed and be answered with a reset that kills the connection.
            if !ctx.tcp_be_liberal {
                forward.push("-m conntrack --ctstate INVALID -j DROP".to_owned());
            }
            forward.push(format!(
                "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
            ));
            forward.push(
                "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                    .to_owned(),
            );
            let mut chains = vec![
                (NODEPORTS, Vec::new()),
                (SERVICES, Vec::new()),
                (EXTERNAL_SERVICES, Vec::new()),
                (FORWARD, forward),
                (PROXY_FIREWALL, Vec::new()),
                (CANARY, Vec::new()),
            ];
            if ctx.localhost_node_ports {
                chains.push((
                    LOCALNET_FIREWALL,
                    vec![
                        "-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
                            .to_owned(),
                    ],
                ));
            }
            chains
        }
        Table::Mangle => vec![(CANARY, Vec::new())],
    }
}
