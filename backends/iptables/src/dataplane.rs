//! [`IptablesDataplane`]: full syncs that rewrite every chain, partial syncs that rewrite only
//! what the change set touches, and the canary check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kproxy_core::{
    ChangeSet, Dataplane, DataplaneError, Integrity, IpFamily, ProxyConfig, ProxyState,
    ServicePortName,
};

use crate::IptablesConfig;
use crate::base::{Jump, fixed_chains, jumps};
use crate::context::FamilyContext;
use crate::error::IptablesError;
use crate::kernel::IptablesKernel;
use crate::names::{self, CANARY, POSTROUTING, SERVICES};
use crate::render::{PortRules, SharedRule, render_port};
use crate::restore::{RestoreInput, Table};
use crate::save::SavedTable;
use crate::stats::IptablesStats;

/// What one family's tables hold after the last successful sync.
#[derive(Debug, Default)]
struct Programmed {
    ports: HashMap<ServicePortName, PortRules>,
    /// Rules per table ([`Table`] order), fixed ones included.
    rules: [usize; 3],
    /// The jumps the drift check looks for.
    jumps: Vec<Jump>,
    /// Whether the rules were written in large-cluster mode.
    large_cluster: bool,
}

/// The iptables dataplane: upstream's chain layout in the `filter` and `nat` tables (and the
/// canary in `mangle`) of each family, one `iptables-restore --noflush` per family and sync.
pub struct IptablesDataplane {
    config: ProxyConfig,
    settings: IptablesConfig,
    kernel: Box<dyn IptablesKernel>,
    programmed: HashMap<IpFamily, Programmed>,
    stats: Arc<IptablesStats>,
    tcp_be_liberal: Option<bool>,
    route_localnet: bool,
}

impl std::fmt::Debug for IptablesDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesDataplane")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, family: IpFamily, error: IptablesError) -> DataplaneError {
    DataplaneError::with_source(format!("{what} ({family})"), error)
}

impl IptablesDataplane {
    /// A dataplane programming `kernel` for `config` and this mode's own `settings`.
    pub fn new(
        config: ProxyConfig,
        settings: IptablesConfig,
        kernel: Box<dyn IptablesKernel>,
    ) -> Self {
        Self {
            config,
            settings,
            kernel,
            programmed: HashMap::new(),
            stats: Arc::default(),
            tcp_be_liberal: None,
            route_localnet: false,
        }
    }

    /// The counters behind upstream's iptables metrics.
    pub fn stats(&self) -> Arc<IptablesStats> {
        Arc::clone(&self.stats)
    }

    /// The kernel, for tests that inspect or damage it.
    pub fn kernel(&mut self) -> &mut dyn IptablesKernel {
        self.kernel.as_mut()
    }

    async fn context<'a>(
        &mut self,
        family: IpFamily,
        state: &'a ProxyState,
        large_cluster: bool,
    ) -> FamilyContext<'a> {
        let liberal = match self.tcp_be_liberal {
            Some(liberal) => liberal,
            None => {
                let liberal = self.kernel.tcp_be_liberal().await;
                self.tcp_be_liberal = Some(liberal);
                liberal
            }
        };
        FamilyContext::new(
            family,
            &self.config,
            &self.settings,
            liberal,
            large_cluster,
            state,
        )
    }

    /// Publishes `family`'s rule counts after a successful sync that wrote `written`.
    fn publish(&self, family: IpFamily, written: [usize; 3]) {
        let total = self
            .programmed
            .get(&family)
            .map_or([0; 3], |programmed| programmed.rules);
        for table in Table::ALL {
            let i = table as usize;
            self.stats
                .set_rules(family, table, total[i] as u64, written[i] as u64);
        }
    }

    async fn full_family(
        &mut self,
        family: IpFamily,
        state: &ProxyState,
        large_cluster: bool,
    ) -> Result<[usize; 3], DataplaneError> {
        let ctx = self.context(family, state, large_cluster).await;
        if ctx.localhost_node_ports && !self.route_localnet {
            self.kernel
                .enable_route_localnet()
                .await
                .map_err(|e| failed("could not enable route_localnet", family, e))?;
            self.route_localnet = true;
        }
        let mut saved = [SavedTable::default(), SavedTable::default()];
        for (slot, table) in saved.iter_mut().zip([Table::Filter, Table::Nat]) {
            let text = self
                .kernel
                .save(family, table)
                .await
                .map_err(|e| failed("could not read the rules", family, e))?;
            *slot = SavedTable::parse(&text);
        }
        let ports: HashMap<ServicePortName, PortRules> = state
            .iter()
            .map(|(name, port)| (name.clone(), render_port(&ctx, port)))
            .filter(|(_, rules)| *rules != PortRules::default())
            .collect();
        let jumps = jumps(&ctx);
        let mut input = RestoreInput::default();
        let mut rules = [0usize; 3];
        let fixed: Vec<_> = Table::ALL
            .into_iter()
            .map(|table| (table, fixed_chains(&ctx, table)))
            .collect();
        for (table, chains) in &fixed {
            for (chain, chain_rules) in chains {
                input.declare(*table, chain);
                rules[*table as usize] += chain_rules.len();
            }
        }
        let mut names: Vec<&ServicePortName> = ports.keys().collect();
        names.sort();
        for name in &names {
            for chain in ports[*name].chains.keys() {
                input.declare(Table::Nat, chain);
            }
        }
        // Chains of ports that are gone, and of upstream's iptables mode before us.
        let wanted: HashSet<&str> = ports
            .values()
            .flat_map(|port| port.chains.keys().map(String::as_str))
            .collect();
        for chain in saved[1].chains.keys() {
            if names::is_service_chain(chain) && !wanted.contains(chain.as_str()) {
                input.remove_chain(Table::Nat, chain);
            }
        }
        fix_jumps(&saved, &jumps, &mut input);
        for name in &names {
            let port = &ports[*name];
            for (chain, chain_rules) in &port.chains {
                for rule in chain_rules {
                    input.append(Table::Nat, chain, rule);
                }
            }
            for shared in &port.shared {
                input.append(shared.table, shared.chain, &shared.rule);
            }
            for table in Table::ALL {
                rules[table as usize] += port.rule_count(table);
            }
        }
        // After the ports' rules: the node-port jumps must end KUBE-SERVICES, and the hairpin
        // marks come before KUBE-POSTROUTING's masquerade.
        for (table, chains) in &fixed {
            for (chain, chain_rules) in chains {
                for rule in chain_rules {
                    input.append(*table, chain, rule);
                }
            }
        }
        let written = Table::ALL.map(|t| input.rules_written(t));
        let text = input.render();
        drop(input);
        if let Err(error) = self.kernel.restore(family, &text).await {
            self.stats.count_failure(family, false);
            self.programmed.remove(&family);
            return Err(failed("iptables-restore failed", family, error));
        }
        self.programmed.insert(
            family,
            Programmed {
                ports,
                rules,
                jumps,
                large_cluster: ctx.large_cluster,
            },
        );
        Ok(written)
    }

    async fn partial_family(
        &mut self,
        family: IpFamily,
        state: &ProxyState,
        changes: &ChangeSet,
        large_cluster: bool,
    ) -> Result<[usize; 3], DataplaneError> {
        let ctx = self.context(family, state, large_cluster).await;
        let programmed = self.programmed.entry(family).or_default();
        let mut input = RestoreInput::default();
        let mut updates: Vec<(ServicePortName, Option<PortRules>)> =
            Vec::with_capacity(changes.len());
        for (name, change) in changes.iter() {
            let new = change
                .current
                .as_ref()
                .map(|port| render_port(&ctx, port))
                .filter(|rules| *rules != PortRules::default());
            let old = programmed.ports.get(name);
            if old != new.as_ref() {
                diff(old, new.as_ref(), &mut input);
                updates.push((name.clone(), new));
            }
        }
        if input.is_empty() {
            return Ok([0; 3]);
        }
        let written = Table::ALL.map(|t| input.rules_written(t));
        let text = input.render();
        drop(input);
        if let Err(error) = self.kernel.restore(family, &text).await {
            self.stats.count_failure(family, true);
            // What the kernel holds is no longer known for sure: the next sync is full.
            self.programmed.clear();
            return Err(failed("partial iptables-restore failed", family, error));
        }
        let programmed = self.programmed.entry(family).or_default();
        for (name, new) in updates {
            for table in Table::ALL {
                programmed.rules[table as usize] += new.as_ref().map_or(0, |r| r.rule_count(table));
            }
            let old = match new {
                Some(rules) => programmed.ports.insert(name, rules),
                None => programmed.ports.remove(&name),
            };
            for table in Table::ALL {
                programmed.rules[table as usize] -= old.as_ref().map_or(0, |r| r.rule_count(table));
            }
        }
        Ok(written)
    }

    /// Syncs every family, one restore each: partially with `changes`, else fully, with the
    /// endpoint rules in large-cluster mode when `large_cluster`.
    async fn sync_families(
        &mut self,
        state: &ProxyState,
        changes: Option<&ChangeSet>,
        large_cluster: bool,
    ) -> Result<(), DataplaneError> {
        let started = Instant::now();
        let mut written = [0usize; 3];
        for family in self.config.ip_families.clone() {
            let family_written = match changes {
                Some(changes) => {
                    self.partial_family(family, state, changes, large_cluster)
                        .await?
                }
                None => self.full_family(family, state, large_cluster).await?,
            };
            self.publish(family, family_written);
            for (total, n) in written.iter_mut().zip(family_written) {
                *total += n;
            }
        }
        tracing::debug!(
            full = changes.is_none(),
            changed = changes.map_or(state.len(), ChangeSet::len),
            nat_rules_written = written[Table::Nat as usize],
            filter_rules_written = written[Table::Filter as usize],
            took = ?started.elapsed(),
            "iptables sync"
        );
        Ok(())
    }
}

/// The built-in chains of the filter and nat tables.
const BUILT_IN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Makes the jumps from the built-in chains equal `jumps`: where a built-in chain's jumps to
/// our chains differ from the wanted ones (missing, in another order, from an older version),
/// they are deleted as saved and the wanted ones inserted first.
fn fix_jumps(saved: &[SavedTable; 2], jumps: &[Jump], input: &mut RestoreInput) {
    // Only jumps from the built-in chains to the chains jumped to from there: other
    // software's rules that jump to ours (a CNI's portmap chains to KUBE-MARK-MASQ) stay.
    let targets: Vec<&str> = jumps.iter().map(|j| j.to).collect();
    let ours = |rule: &str| {
        let words: Vec<&str> = rule.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| w[0] == "-j" && targets.contains(&w[1]))
    };
    for (saved, table) in saved.iter().zip([Table::Filter, Table::Nat]) {
        let mut chains: Vec<&str> = jumps
            .iter()
            .filter(|j| j.table == table)
            .map(|j| j.from)
            .collect();
        chains.extend(
            saved
                .chains
                .iter()
                .filter(|(name, rules)| {
                    BUILT_IN.contains(&name.as_str()) && rules.iter().any(|r| ours(r))
                })
                .map(|(name, _)| name.as_str()),
        );
        chains.sort_unstable();
        chains.dedup();
        for chain in chains {
            let present: Vec<&String> = saved.rules(chain).iter().filter(|r| ours(r)).collect();
            let wanted: Vec<String> = jumps
                .iter()
                .filter(|j| j.table == table && j.from == chain)
                .map(Jump::rule)
                .collect();
            if present
                .iter()
                .map(|s| s.as_str())
                .eq(wanted.iter().map(String::as_str))
            {
                continue;
            }
            for rule in present {
                input.delete_rule(table, chain, rule);
            }
            for rule in wanted.iter().rev() {
                input.insert_first(table, chain, rule);
            }
        }
    }
}

/// Adds to `input` what turns one port's rules from `old` into `new`.
fn diff(old: Option<&PortRules>, new: Option<&PortRules>, input: &mut RestoreInput) {
    let empty = PortRules::default();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    for (chain, rules) in &new.chains {
        if old.chains.get(chain) != Some(rules) {
            input.declare(Table::Nat, chain);
            for rule in rules {
                input.append(Table::Nat, chain, rule);
            }
        }
    }
    for shared in old.shared.difference(&new.shared) {
        input.delete_rule(shared.table, shared.chain, &shared.rule);
    }
    for SharedRule { table, chain, rule } in new.shared.difference(&old.shared) {
        // Before the node-port jumps, which must end KUBE-SERVICES, and before the
        // masquerade of KUBE-POSTROUTING, which the hairpin marks feed.
        if *table == Table::Nat && (*chain == SERVICES || *chain == POSTROUTING) {
            input.insert_first(*table, chain, rule);
        } else {
            input.append(*table, chain, rule);
        }
    }
    for chain in old.chains.keys() {
        if !new.chains.contains_key(chain) {
            input.remove_chain(Table::Nat, chain);
        }
    }
}

#[async_trait]
impl Dataplane for IptablesDataplane {
    fn name(&self) -> &str {
        "iptables"
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        // The node's addresses, CIDRs and name decide every port's locality: rewrite all.
        // (Service CIDRs are not written in this mode: traffic to an unallocated address is
        // left alone, as upstream's iptables mode leaves it.)
        // Crossing the large-cluster threshold changes every endpoint rule: rewrite all.
        let large_cluster = crate::context::is_large_cluster(state);
        if changes.node().is_some()
            || self.programmed.len() != self.config.ip_families.len()
            || self
                .programmed
                .values()
                .any(|p| p.large_cluster != large_cluster)
        {
            return self.sync_families(state, None, large_cluster).await;
        }
        self.sync_families(state, Some(changes), large_cluster)
            .await
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let large_cluster = crate::context::is_large_cluster(state);
        self.sync_families(state, None, large_cluster).await
    }

    async fn verify(&mut self) -> Result<Integrity, DataplaneError> {
        let mut families: Vec<IpFamily> = self.programmed.keys().copied().collect();
        families.sort();
        for family in families {
            let jumps = self.programmed[&family].jumps.clone();
            for table in Table::ALL {
                // The canary goes with a firewall reload that deletes chains; a flushed table
                // keeps its (empty) canary, but the jumps from the built-in chains go.
                let mut chains: Vec<&str> = vec![CANARY];
                for jump in jumps.iter().filter(|j| j.table == table) {
                    if !chains.contains(&jump.from) {
                        chains.push(jump.from);
                    }
                }
                let listed = self
                    .kernel
                    .chains(family, table, &chains)
                    .await
                    .map_err(|e| failed("could not list the chains", family, e))?;
                if listed[0].is_none() {
                    return Ok(Integrity::Damaged(format!(
                        "the {CANARY} chain of the {family} {} table is gone",
                        table.name()
                    )));
                }
                for jump in jumps.iter().filter(|j| j.table == table) {
                    let at = chains.iter().position(|c| *c == jump.from).unwrap_or(0);
                    let rule = jump.rule();
                    if !listed[at]
                        .as_ref()
                        .is_some_and(|rules| rules.contains(&rule))
                    {
                        return Ok(Integrity::Damaged(format!(
                            "the jump from {} {} to {} ({family}) is gone",
                            table.name(),
                            jump.from,
                            jump.to
                        )));
                    }
                }
            }
        }
        Ok(Integrity::Intact)
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        for family in self.config.ip_families.clone() {
            let mut input = RestoreInput::default();
            for table in Table::ALL {
                let text = self
                    .kernel
                    .save(family, table)
                    .await
                    .map_err(|e| failed("could not read the rules", family, e))?;
                crate::cleanup::removal(table, &SavedTable::parse(&text), &mut input);
            }
            if !input.is_empty() {
                self.kernel
                    .restore(family, &input.render())
                    .await
                    .map_err(|e| failed("could not remove the rules", family, e))?;
            }
            self.programmed.remove(&family);
        }
        Ok(())
    }
}
