//! Removing everything this mode made, and only that: its chains and jumps, its virtual
//! servers (upstream's `--cleanup` flushes every IPVS service of the host, another agent's
//! included), its sets and its dummy link.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::{IpFamily, Protocol};
use kproxy_iptables::{IptablesKernel, RestoreInput, SavedTable, Table};

use crate::dataplane::DUMMY_LINK;
use crate::error::IpvsError;
use crate::kernel::IpvsKernel;
use crate::model::{IpvsOp, ServiceKey};
use crate::render::MARK_MASK;
use crate::rules;
use crate::sets::{self, SetId};

/// Removes this mode's rules, virtual servers, sets and link from the namespace.
pub(crate) async fn remove_all(
    kernel: &mut dyn IpvsKernel,
    iptables: &mut dyn IptablesKernel,
    families: &[IpFamily],
    exclude_cidrs: &[IpNet],
    masquerade_bit: u32,
) -> Result<(), IpvsError> {
    for family in families {
        let mut input = RestoreInput::default();
        let tables = [Table::Nat, Table::Mangle, Table::Filter];
        let saved = iptables.save_tables(*family, &tables).await?;
        for (table, text) in tables.into_iter().zip(saved) {
            let saved = SavedTable::parse(&text);
            for (jump_table, chain, target) in rules::JUMPS.iter().chain([&rules::FORWARD_JUMP]) {
                let jump = rules::jump_rule(target);
                if *jump_table == table && saved.rules(chain).contains(&jump) {
                    input.delete_rule(table, chain, &jump);
                }
            }
            for (chain_table, chain) in rules::CHAINS {
                if chain_table == table && saved.has_chain(chain) {
                    input.remove_chain(table, chain);
                }
            }
        }
        if !input.is_empty() {
            iptables.restore(*family, &input.render()).await?;
        }
    }

    let bound: HashSet<IpAddr> = kernel
        .link_addresses(DUMMY_LINK)
        .await?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let local: HashSet<IpAddr> = kernel
        .local_addresses()
        .await?
        .into_iter()
        .map(|a| a.addr)
        .collect();
    let listed = kernel.list_sets().await?;
    let mut node_ports: HashSet<(Protocol, u16)> = HashSet::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for (set, protocol) in NODE_PORT_SETS {
            for member in listed.get(set.name(family)).into_iter().flatten() {
                if let Ok(port) = member.parse() {
                    node_ports.insert((protocol, port));
                }
            }
        }
    }
    let masquerade = 1u32 << masquerade_bit.min(31);
    let ours = |key: &ServiceKey| match key {
        ServiceKey::Address {
            protocol,
            addr,
            port,
        } => {
            !exclude_cidrs.iter().any(|cidr| cidr.contains(addr))
                && (bound.contains(addr)
                    || (local.contains(addr) && node_ports.contains(&(*protocol, *port))))
        }
        ServiceKey::Fwmark { mark, .. } => {
            mark & MARK_MASK != 0 && mark & !(MARK_MASK | masquerade) == 0
        }
    };
    let deletions: Vec<IpvsOp> = kernel
        .virtual_servers()
        .await?
        .into_iter()
        .filter(|server| ours(&server.key))
        .map(|server| IpvsOp::DeleteService(server.key))
        .collect();
    kernel.apply(&deletions).await.map_err(|e| e.error)?;
    kernel.delete_link(DUMMY_LINK).await?;

    let ours: BTreeSet<&str> = sets::all_specs().map(|spec| spec.name).collect();
    let script: String = listed
        .keys()
        .filter(|name| ours.contains(name.as_str()))
        .map(|name| format!("destroy {name}\n"))
        .collect();
    if !script.is_empty() {
        kernel.restore_sets(&script).await?;
    }
    Ok(())
}

/// The node-port sets and their protocols: what tells a node-port virtual server of this
/// mode from another agent's on the same address.
pub(crate) const NODE_PORT_SETS: [(SetId, Protocol); 6] = [
    (SetId::NodePortTcp, Protocol::Tcp),
    (SetId::NodePortLocalTcp, Protocol::Tcp),
    (SetId::NodePortUdp, Protocol::Udp),
    (SetId::NodePortLocalUdp, Protocol::Udp),
    (SetId::NodePortSctp, Protocol::Sctp),
    (SetId::NodePortLocalSctp, Protocol::Sctp),
];
