//! [`IpvsDataplane`]: full syncs that converge the kernel on the desired state from one dump,
//! partial syncs that send only what the changed ports need.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use async_trait::async_trait;
use kproxy_core::plan::FamilyPlan;
use kproxy_core::{
    ChangeSet, Dataplane, DataplaneError, Integrity, IpFamily, Protocol, ProxyConfig, ProxyState,
};
use kproxy_iptables::{IptablesKernel, RestoreInput, SavedTable, Table};
use tracing::{debug, warn};

use crate::cleanup::NODE_PORT_SETS;
use crate::config::IpvsConfig;
use crate::error::IpvsError;
use crate::kernel::{IpvsKernel, LocalAddress};
use crate::marks::Marks;
use crate::model::{IpvsOp, ServiceKey, SetEntry, SetOp};
use crate::ops::{self, Draining, Plan};
use crate::programmed::{Delta, FamilyEntry, Programmed};
use crate::render::{self, FamilyContext, MARK_MASK};
use crate::rules;
use crate::sets;

/// The dummy link the service addresses are bound to (upstream's name).
pub const DUMMY_LINK: &str = "kube-ipvs0";

/// What one sync sent to the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether it was a full sync.
    pub full: bool,
    /// IPVS requests (one netlink message each).
    pub ipvs_requests: usize,
    /// Single ipset entries added or deleted over netlink.
    pub set_updates: usize,
    /// Addresses added to or removed from `kube-ipvs0`.
    pub address_changes: usize,
    /// Tool runs (`ipset restore`, `iptables-restore`, `iptables-save`).
    pub tool_runs: usize,
    /// Bytes of netlink requests written (IPVS, ipset and rtnetlink together).
    pub netlink_bytes: u64,
}

/// The IPVS dataplane. See the crate documentation.
pub struct IpvsDataplane {
    config: ProxyConfig,
    settings: IpvsConfig,
    kernel: Box<dyn IpvsKernel>,
    iptables: Box<dyn IptablesKernel>,
    /// `None` until a full sync succeeded, and after any failure: the next sync is full.
    programmed: Option<Programmed>,
    marks: Marks,
    draining: Draining,
    prepared: bool,
    last: SyncReport,
    /// The state of the last successful sync (the drift check recomputes the node-port
    /// addresses with it).
    synced: ProxyState,
}

impl std::fmt::Debug for IpvsDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsDataplane")
            .field("settings", &self.settings)
            .field("programmed", &self.programmed.is_some())
            .field("draining", &self.draining.len())
            .finish_non_exhaustive()
    }
}

fn failed(message: &str, error: impl Into<kproxy_core::BoxError>) -> DataplaneError {
    DataplaneError::with_source(message.to_owned(), error)
}

impl IpvsDataplane {
    /// A dataplane that programs IPVS through `kernel` and its helper rules through
    /// `iptables`, for the families of `config`.
    ///
    /// # Errors
    ///
    /// [`IpvsError::Config`] when the masquerade bit falls into the bits the short-circuit
    /// marks use (16 and above).
    pub fn new(
        config: ProxyConfig,
        settings: IpvsConfig,
        kernel: Box<dyn IpvsKernel>,
        iptables: Box<dyn IptablesKernel>,
    ) -> Result<Self, IpvsError> {
        if (1u32 << u32::from(config.masquerade_bit).min(31)) & MARK_MASK != 0 {
            return Err(IpvsError::Config(format!(
                "masqueradeBit {} is taken by the IPVS mode's short-circuit marks (bits 16-31); \
                 use a bit below 16 (upstream's default is 14)",
                config.masquerade_bit
            )));
        }
        Ok(Self {
            config,
            settings,
            kernel,
            iptables,
            programmed: None,
            marks: Marks::default(),
            draining: Draining::new(),
            prepared: false,
            last: SyncReport::default(),
            synced: ProxyState::default(),
        })
    }

    /// What the last sync sent.
    pub fn last_sync(&self) -> SyncReport {
        self.last
    }

    fn families(&self) -> Vec<IpFamily> {
        self.config.ip_families.clone()
    }

    /// The namespace's settings this mode needs, once.
    async fn prepare(&mut self) -> Result<(), IpvsError> {
        if self.prepared {
            return Ok(());
        }
        self.kernel.check().await?;
        let mut sysctls = vec![
            // IPVS connections must show in conntrack for the masquerade rules to see them.
            ("net.ipv4.vs.conntrack", "1"),
            // Connections to a deleted real server fail fast instead of hanging.
            ("net.ipv4.vs.expire_nodest_conn", "1"),
            ("net.ipv4.vs.expire_quiescent_template", "1"),
            ("net.ipv4.ip_forward", "1"),
        ];
        if self.families().contains(&IpFamily::V6) {
            sysctls.push(("net.ipv6.conf.all.forwarding", "1"));
        }
        if self.settings.strict_arp {
            sysctls.push(("net.ipv4.conf.all.arp_ignore", "1"));
            sysctls.push(("net.ipv4.conf.all.arp_announce", "2"));
        }
        self.kernel.set_sysctls(&sysctls).await?;
        if self.settings.timeouts.any() {
            self.kernel.set_timeouts(&self.settings.timeouts).await?;
        }
        self.prepared = true;
        Ok(())
    }

    /// The addresses node ports answer on, per family, from the namespace's addresses.
    async fn node_port_addresses(
        &mut self,
        state: &ProxyState,
    ) -> Result<BTreeMap<IpFamily, Vec<IpAddr>>, IpvsError> {
        let local = self.kernel.local_addresses().await?;
        let mut out = BTreeMap::new();
        for family in self.families() {
            let plan = FamilyPlan::new(family, &self.config, state);
            out.insert(family, node_port_addresses(&plan, &local));
        }
        Ok(out)
    }

    async fn full(&mut self, state: &ProxyState) -> Result<(), IpvsError> {
        self.programmed = None;
        let mut report = SyncReport {
            full: true,
            ..SyncReport::default()
        };
        self.prepare().await?;
        self.kernel.ensure_dummy_link(DUMMY_LINK).await?;
        // One dump of the namespace's addresses serves both: those on kube-ipvs0 and the
        // node's own (it lists every service address, so a second dump would double the cost).
        let local = self.kernel.local_addresses().await?;
        let bound: BTreeSet<IpAddr> = local
            .iter()
            .filter(|a| a.link == DUMMY_LINK)
            .map(|a| a.addr)
            .collect();
        let local_set: HashSet<IpAddr> = local.iter().map(|a| a.addr).collect();
        let mut programmed = Programmed::with_capacity(state.len());
        for family in self.families() {
            let plan = FamilyPlan::new(family, &self.config, state);
            programmed
                .node_port_addresses
                .insert(family, node_port_addresses(&plan, &local));
        }
        let mut delta = Delta::ignoring();
        for family in self.families() {
            let addresses = programmed.node_port_addresses[&family].clone();
            let ctx = family_context(&self.config, &self.settings, family, state, addresses);
            for (name, port) in state.iter() {
                let key = (name.clone(), family);
                let objects = render::render_port(&ctx, &key, Some(port), &mut self.marks)?;
                programmed.replace(key, objects, &mut delta);
            }
        }

        // Sets first: the rules match them.
        let listed = self.kernel.list_sets().await?;
        let mut node_ports = previous_node_ports(&listed);
        node_ports.extend(programmed_node_ports(&programmed));
        let (script, set_ops) = sets_update(&programmed, &listed);
        self.kernel.restore_sets(&script).await?;
        report.tool_runs += 1;
        self.kernel.update_sets(&set_ops).await?;
        report.set_updates = set_ops.len();

        for family in self.families() {
            let ctx = family_context(&self.config, &self.settings, family, state, Vec::new());
            let mut input = RestoreInput::default();
            rules::fixed_rules(&ctx, &mut input);
            rules::short_circuit_rules(&mut input, programmed.short_circuit_rules(family));
            let tables = [Table::Nat, Table::Mangle, Table::Filter];
            let saved = self.iptables.save_tables(family, &tables).await?;
            report.tool_runs += 1;
            for (table, text) in tables.into_iter().zip(saved) {
                add_missing_jumps(table, &SavedTable::parse(&text), &mut input);
            }
            self.iptables.restore(family, &input.render()).await?;
            report.tool_runs += 1;
        }

        // IPVS: one dump, then what differs.
        let existing = self.kernel.virtual_servers().await?;
        let mut plan = Plan::default();
        let mut draining = Draining::new();
        let mut seen = HashSet::new();
        for server in &existing {
            let key = server.key;
            seen.insert(key);
            match programmed.service(&key) {
                Some(wanted) => {
                    let reals = self.kernel.real_servers(&key).await?;
                    ops::converge_existing(&mut plan, server, &reals, wanted, &mut draining);
                }
                None => {
                    if self.owns(&key, &bound, &local_set, &node_ports) {
                        let reals: Vec<_> = self
                            .kernel
                            .real_servers(&key)
                            .await?
                            .iter()
                            .map(|s| s.server)
                            .collect();
                        plan.delete_service(server, &reals);
                    }
                }
            }
        }
        for (key, wanted) in programmed.services() {
            if !seen.contains(key) {
                ops::add_missing(&mut plan, wanted);
            }
        }
        self.send(&plan, &mut report).await?;
        self.draining = draining;

        let wanted: BTreeSet<IpAddr> = programmed.addresses().collect();
        let add: Vec<IpAddr> = wanted.difference(&bound).copied().collect();
        let remove: Vec<IpAddr> = bound.difference(&wanted).copied().collect();
        if !add.is_empty() || !remove.is_empty() {
            self.kernel
                .change_link_addresses(DUMMY_LINK, &add, &remove)
                .await?;
        }
        report.address_changes = add.len() + remove.len();
        self.programmed = Some(programmed);
        self.last = report;
        self.synced = state.clone();
        Ok(())
    }

    /// Whether a virtual server the kernel lists is this mode's: on `kube-ipvs0`, a node
    /// port (a local address and a port of the node-port sets), or a short-circuit mark.
    fn owns(
        &self,
        key: &ServiceKey,
        bound: &BTreeSet<IpAddr>,
        local: &HashSet<IpAddr>,
        node_ports: &HashSet<(Protocol, u16)>,
    ) -> bool {
        match key {
            ServiceKey::Address {
                protocol,
                addr,
                port,
            } => {
                let excluded = self
                    .settings
                    .exclude_cidrs
                    .iter()
                    .any(|cidr| cidr.contains(addr));
                let node_port = local.contains(addr) && node_ports.contains(&(*protocol, *port));
                !excluded && (bound.contains(addr) || node_port)
            }
            ServiceKey::Fwmark { mark, .. } => {
                let masquerade = 1u32 << u32::from(self.config.masquerade_bit).min(31);
                mark & MARK_MASK != 0 && mark & !(MARK_MASK | masquerade) == 0
            }
        }
    }

    /// Sends `plan`; when the kernel refuses a request, undoes the ones before it.
    async fn send(&mut self, plan: &Plan, report: &mut SyncReport) -> Result<(), IpvsError> {
        if plan.ops.is_empty() {
            return Ok(());
        }
        match self.kernel.apply(&plan.ops).await {
            Ok(()) => {
                report.ipvs_requests += plan.ops.len();
                Ok(())
            }
            Err(refused) => {
                report.ipvs_requests += refused.applied + 1 + refused.applied_after.len();
                self.undo(&plan.undo(refused.applied, &refused.applied_after))
                    .await;
                Err(refused.error)
            }
        }
    }

    /// Sends undo requests; a failure among them leaves the next full sync to repair.
    async fn undo(&mut self, ops: &[IpvsOp]) {
        if ops.is_empty() {
            return;
        }
        if let Err(error) = self.kernel.apply(ops).await {
            warn!(%error, "could not undo a partly applied IPVS update; the next full sync repairs it");
        }
    }

    async fn partial(&mut self, state: &ProxyState, changes: &ChangeSet) -> Result<(), IpvsError> {
        let Some(mut programmed) = self.programmed.take() else {
            return self.full(state).await;
        };
        let mut report = SyncReport::default();
        if changes.context_changed() {
            debug!("the node or the service CIDRs changed: full sync");
            return self.full(state).await;
        }
        // The node's addresses are read at full syncs and checked by every drift check
        // (`verify`), not here: the dump lists every service address too, which would make
        // each partial sync cost as much as the cluster is large.
        let node_ports = programmed.node_port_addresses.clone();
        self.reap_drained(&mut report).await?;
        let mut delta = Delta::default();
        for family in self.families() {
            let addresses = node_ports[&family].clone();
            let ctx = family_context(&self.config, &self.settings, family, state, addresses);
            for (name, change) in changes.iter() {
                let key = (name.clone(), family);
                let objects =
                    render::render_port(&ctx, &key, change.current.as_deref(), &mut self.marks)?;
                programmed.replace(key, objects, &mut delta);
            }
        }

        let mut plan = Plan::default();
        for (key, before, after) in programmed.service_changes(&delta) {
            ops::change_service(&mut plan, key, before, after, &mut self.draining);
        }
        self.send(&plan, &mut report).await?;

        let (entries_added, entries_removed) = programmed.entry_changes(&delta);
        let (addresses_added, addresses_removed) = programmed.address_changes(&delta);
        let set_ops = set_ops(&entries_added, true)
            .chain(set_ops(&entries_removed, false))
            .collect::<Vec<_>>();
        let undo_sets: Vec<SetOp> = set_ops
            .iter()
            .rev()
            .map(|op| SetOp {
                add: !op.add,
                ..op.clone()
            })
            .collect();
        if let Err(error) = self.kernel.update_sets(&set_ops).await {
            let _ = self.kernel.update_sets(&undo_sets).await;
            self.undo(&plan.undo(plan.ops.len(), &[])).await;
            return Err(error);
        }
        report.set_updates = set_ops.len();
        if !addresses_added.is_empty() || !addresses_removed.is_empty() {
            if let Err(error) = self
                .kernel
                .change_link_addresses(DUMMY_LINK, &addresses_added, &addresses_removed)
                .await
            {
                let _ = self.kernel.update_sets(&undo_sets).await;
                self.undo(&plan.undo(plan.ops.len(), &[])).await;
                return Err(error);
            }
            report.address_changes = addresses_added.len() + addresses_removed.len();
        }
        for family in &delta.short_circuit {
            let mut input = RestoreInput::default();
            rules::short_circuit_rules(&mut input, programmed.short_circuit_rules(*family));
            self.iptables.restore(*family, &input.render()).await?;
            report.tool_runs += 1;
        }
        self.programmed = Some(programmed);
        self.last = report;
        self.synced = state.clone();
        Ok(())
    }

    /// Deletes the draining real servers whose connections ended.
    async fn reap_drained(&mut self, report: &mut SyncReport) -> Result<(), IpvsError> {
        let keys: Vec<ServiceKey> = self.draining.keys().copied().collect();
        let mut plan = Plan::default();
        for key in keys {
            let listed = self.kernel.real_servers(&key).await.unwrap_or_default();
            ops::reap(&mut plan, key, &listed, &mut self.draining);
        }
        self.send(&plan, report).await
    }

    async fn check_integrity(&mut self) -> Result<Integrity, IpvsError> {
        let state = self.synced.clone();
        let node_ports = self.node_port_addresses(&state).await?;
        let Some(programmed) = &self.programmed else {
            return Ok(Integrity::Damaged("nothing programmed yet".to_owned()));
        };
        let Some(bound) = self.kernel.link_addresses(DUMMY_LINK).await? else {
            return Ok(Integrity::Damaged(format!("link {DUMMY_LINK} is gone")));
        };
        let bound: HashSet<IpAddr> = bound.into_iter().collect();
        if let Some(missing) = programmed.addresses().find(|addr| !bound.contains(addr)) {
            return Ok(Integrity::Damaged(format!(
                "address {missing} is missing from {DUMMY_LINK}"
            )));
        }
        if node_ports != programmed.node_port_addresses {
            return Ok(Integrity::Damaged(
                "the node's addresses changed (node ports answer on them)".to_owned(),
            ));
        }
        let listed = self.kernel.virtual_servers().await?;
        let listed: BTreeMap<ServiceKey, _> = listed.into_iter().map(|s| (s.key, s)).collect();
        for (key, wanted) in programmed.services() {
            match listed.get(key) {
                None => return Ok(Integrity::Damaged(format!("virtual server {key} is gone"))),
                Some(server) if *server != wanted.server => {
                    return Ok(Integrity::Damaged(format!(
                        "virtual server {key} was changed"
                    )));
                }
                Some(_) => {}
            }
        }
        for family in self.families() {
            for (table, chain, target) in rules::JUMPS.iter().chain([&rules::FORWARD_JUMP]) {
                let found = self
                    .iptables
                    .chains(family, *table, &[chain, target])
                    .await?;
                let jump = rules::jump_rule(target);
                let has_jump = found[0].as_ref().is_some_and(|rules| rules.contains(&jump));
                if !has_jump || found[1].is_none() {
                    return Ok(Integrity::Damaged(format!(
                        "{family} {} {chain} no longer jumps to {target}",
                        table.name()
                    )));
                }
            }
        }
        Ok(Integrity::Intact)
    }
}

/// One family's plan and what rendering needs besides, once per sync and family.
fn family_context<'a>(
    config: &ProxyConfig,
    settings: &'a IpvsConfig,
    family: IpFamily,
    state: &'a ProxyState,
    node_port_addresses: Vec<IpAddr>,
) -> FamilyContext<'a> {
    let plan = FamilyPlan::new(family, config, state);
    let (if_local, _) = kproxy_iptables::local_traffic_matches(&plan.local_traffic);
    FamilyContext {
        plan,
        node_port_addresses,
        scheduler: &settings.scheduler,
        if_local,
    }
}

/// Node ports this mode programmed before (a restart): the ports of its node-port sets.
fn previous_node_ports(listed: &BTreeMap<String, Vec<String>>) -> HashSet<(Protocol, u16)> {
    let mut ports = HashSet::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for (set, protocol) in NODE_PORT_SETS {
            for member in listed.get(set.name(family)).into_iter().flatten() {
                if let Ok(port) = member.parse() {
                    ports.insert((protocol, port));
                }
            }
        }
    }
    ports
}

/// The node ports `programmed` holds.
fn programmed_node_ports(programmed: &Programmed) -> Vec<(Protocol, u16)> {
    programmed
        .entries()
        .filter_map(|(_, set, entry)| {
            let protocol = NODE_PORT_SETS.iter().find(|(s, _)| s == set)?.1;
            match entry {
                SetEntry::Port(port) => Some((protocol, *port)),
                _ => None,
            }
        })
        .collect()
}

/// How a full sync makes the sets what is wanted: an `ipset restore` script that creates
/// every set (the tool knows which revision of each type the kernel offers) and deletes
/// members it cannot read back, and the member changes, sent over netlink in batches (one
/// `ipset restore` line costs the tool a round trip to the kernel).
fn sets_update(
    programmed: &Programmed,
    listed: &BTreeMap<String, Vec<String>>,
) -> (String, Vec<SetOp>) {
    let mut wanted: BTreeMap<&'static str, BTreeSet<SetEntry>> = BTreeMap::new();
    for (family, set, entry) in programmed.entries() {
        wanted.entry(set.name(*family)).or_default().insert(*entry);
    }
    let mut script = String::new();
    let mut ops = Vec::new();
    for spec in sets::all_specs() {
        script.push_str(&format!(
            "create {} {} comment -exist\n",
            spec.name,
            spec.create_args()
        ));
        let mut have = BTreeSet::new();
        for member in listed.get(spec.name).into_iter().flatten() {
            match SetEntry::parse(spec.kind, member) {
                Ok(entry) => {
                    have.insert(entry);
                }
                Err(_) => script.push_str(&format!("del {} {member} -exist\n", spec.name)),
            }
        }
        let want = wanted.remove(spec.name).unwrap_or_default();
        ops.extend(want.difference(&have).map(|entry| SetOp {
            set: spec,
            entry: *entry,
            add: true,
        }));
        ops.extend(have.difference(&want).map(|entry| SetOp {
            set: spec,
            entry: *entry,
            add: false,
        }));
    }
    (script, ops)
}

fn set_ops(entries: &[FamilyEntry], add: bool) -> impl Iterator<Item = SetOp> + '_ {
    entries.iter().map(move |(family, set, entry)| SetOp {
        set: set.spec(*family),
        entry: *entry,
        add,
    })
}

/// Adds to `input` the jumps of `table` that `saved` lacks (first in their chain).
fn add_missing_jumps(table: Table, saved: &SavedTable, input: &mut RestoreInput) {
    // Each missing jump goes first in its chain: inserting in reverse keeps `JUMPS`' order
    // (the firewall before the verdicts).
    for (jump_table, chain, target) in rules::JUMPS.iter().rev().chain([&rules::FORWARD_JUMP]) {
        if *jump_table != table {
            continue;
        }
        let jump = rules::jump_rule(target);
        if !saved.rules(chain).contains(&jump) {
            if *chain == "FORWARD" {
                input.append(table, chain, &jump);
            } else {
                input.insert_first(table, chain, &jump);
            }
        }
    }
}

/// The addresses node ports answer on in `plan`'s family, from the namespace's addresses:
/// never loopback, link-local IPv6 or the service addresses on `kube-ipvs0`.
pub(crate) fn node_port_addresses(plan: &FamilyPlan<'_>, local: &[LocalAddress]) -> Vec<IpAddr> {
    use kproxy_core::plan::NodePortDestinations;
    let usable = |addr: &IpAddr| {
        IpFamily::of(addr) == plan.family
            && !addr.is_loopback()
            && !matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
    };
    let candidates: BTreeSet<IpAddr> = local
        .iter()
        .filter(|a| a.link != DUMMY_LINK && usable(&a.addr))
        .map(|a| a.addr)
        .collect();
    let chosen: BTreeSet<IpAddr> = match &plan.node_ports {
        NodePortDestinations::AllLocal => candidates,
        NodePortDestinations::Addresses(ips) => ips.iter().copied().filter(usable).collect(),
        NodePortDestinations::LocalInCidrs(cidrs) => candidates
            .into_iter()
            .filter(|addr| cidrs.iter().any(|cidr| cidr.contains(addr)))
            .collect(),
        NodePortDestinations::None => BTreeSet::new(),
    };
    chosen.into_iter().collect()
}

#[async_trait]
impl Dataplane for IpvsDataplane {
    fn name(&self) -> &str {
        "ipvs"
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        let before = self.kernel.bytes_sent();
        let result = self.partial(state, changes).await;
        self.last.netlink_bytes = self.kernel.bytes_sent() - before;
        result.map_err(|error| {
            self.programmed = None;
            failed("IPVS sync failed", error)
        })
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let before = self.kernel.bytes_sent();
        let result = self.full(state).await;
        self.last.netlink_bytes = self.kernel.bytes_sent() - before;
        result.map_err(|error| {
            self.programmed = None;
            failed("IPVS full sync failed", error)
        })
    }

    async fn verify(&mut self) -> Result<Integrity, DataplaneError> {
        let mut report = SyncReport::default();
        self.reap_drained(&mut report)
            .await
            .map_err(|error| failed("IPVS: deleting drained real servers failed", error))?;
        self.check_integrity()
            .await
            .map_err(|error| failed("IPVS drift check failed", error))
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        crate::cleanup::remove_all(
            self.kernel.as_mut(),
            self.iptables.as_mut(),
            &self.config.ip_families,
            &self.settings.exclude_cidrs,
            u32::from(self.config.masquerade_bit),
        )
        .await
        .map_err(|error| failed("IPVS cleanup failed", error))?;
        self.programmed = None;
        self.draining.clear();
        Ok(())
    }
}
