//! [`NftDataplane`]: the `Dataplane` that programs the `ip`/`ip6 kube-proxy` tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kproxy_core::{
    ChangeSet, Dataplane, DataplaneError, Integrity, IpFamily, Protocol, ProxyConfig, ProxyState,
    ServicePortName,
};

use crate::base::{DISPATCH_SETS, fixed_chains, write_base};
use crate::error::NftError;
use crate::integrity::{Probe, TableFacts};
use crate::kernel::NftKernel;
use crate::names;
use crate::render::{Element, FamilyContext, PortRules, render_port};
use crate::slots::Slots;
use crate::transaction::{Op, Transaction};
use crate::values::{Key, SetSpec, Value};

/// The service ports that want one shared element, with the value each wants.
type Owners = Vec<(Arc<ServicePortName>, Option<Value>)>;

/// What this dataplane believes one family's table holds.
#[derive(Debug, Default)]
struct FamilyTable {
    ports: HashMap<ServicePortName, PortRules>,
    /// Every service port that wants a shared element, with the value it wants, sorted by
    /// port; the first owner's value is the one programmed. A short vector, not a map: nearly
    /// every element has one owner, and a map node per element would dominate memory.
    owners: HashMap<(String, Key), Owners>,
    endpoint_maps: BTreeSet<String>,
    /// How many keys each shared set holds, to drop endpoint maps that emptied.
    set_sizes: HashMap<String, usize>,
    slots: Slots,
    /// Chains flushed because their service port no longer needs them, and when. They are
    /// deleted by a later sync: kernels before 6.2 notice only some time after a batch that a
    /// map element pointing at a chain is gone, and refuse to delete the chain meanwhile
    /// (upstream defers deletion for the same reason).
    stale_chains: BTreeMap<String, Instant>,
}

/// Whether only one service port can ever want `element`: an endpoint map's elements lie in the
/// slot range of one chain. Such elements need no owner list (a million of them at 100,000
/// Services, about 180 MB of owner entries); the port's own rules are their record.
fn is_private(element: &Element) -> bool {
    element.set.starts_with(names::ENDPOINT_MAP_PREFIX)
}

impl FamilyTable {
    fn effective(&self, set: &str, key: &Key) -> Option<Option<Value>> {
        self.owners
            .get(&(set.to_owned(), key.clone()))
            .and_then(|owners| owners.first())
            .map(|(_, value)| value.clone())
    }

    fn own(&mut self, owner: &Arc<ServicePortName>, element: &Element) {
        if is_private(element) {
            *self.set_sizes.entry(element.set.clone()).or_default() += 1;
            return;
        }
        let owners = self
            .owners
            .entry((element.set.clone(), element.key.clone()))
            .or_default();
        if owners.is_empty() {
            *self.set_sizes.entry(element.set.clone()).or_default() += 1;
        }
        match owners.binary_search_by(|(name, _)| name.as_ref().cmp(owner)) {
            Ok(at) => owners[at].1 = element.value.clone(),
            Err(at) => owners.insert(at, (Arc::clone(owner), element.value.clone())),
        }
    }

    fn disown(&mut self, owner: &ServicePortName, element: &Element) {
        if is_private(element) {
            if let Some(size) = self.set_sizes.get_mut(&element.set) {
                *size -= 1;
            }
            return;
        }
        let key = (element.set.clone(), element.key.clone());
        if let Some(owners) = self.owners.get_mut(&key) {
            owners.retain(|(name, _)| name.as_ref() != owner);
            if owners.is_empty() {
                self.owners.remove(&key);
                if let Some(size) = self.set_sizes.get_mut(&element.set) {
                    *size -= 1;
                }
            }
        }
    }
}

/// Programs nftables: one table per IP family, rewritten atomically by every sync.
///
/// A full sync replaces each table whole in one transaction. An incremental sync rewrites only
/// the chains of the changed service ports and adds or deletes only their map elements, so its
/// cost follows the change, not the cluster.
///
/// Session-affinity state (the per-endpoint client sets) starts afresh at every full sync.
pub struct NftDataplane {
    config: ProxyConfig,
    kernel: Box<dyn NftKernel>,
    tables: BTreeMap<IpFamily, FamilyTable>,
    needs_full: bool,
    chain_deletion_delay: Duration,
    seen: Seen,
}

/// What the drift check compares the kernel with, recorded after every sync.
#[derive(Debug, Default)]
struct Seen {
    /// The ruleset generation after this backend's last commit, when nobody else committed
    /// since the state was last known intact: the kernel at this generation needs no check.
    generation: Option<u32>,
    /// Per family: the table's handle and use count after the last sync.
    tables: BTreeMap<IpFamily, (u64, u32)>,
    /// Per family: the fixed chains and how many rules the last full sync gave each.
    fixed_rules: BTreeMap<IpFamily, Vec<(String, usize)>>,
    /// Damage found by a partial sync's own look before it committed, or a commit of someone
    /// else that landed inside a sync (so its outcome is unconfirmed): told by the next
    /// [`Dataplane::verify`], which answers it with a full sync.
    pending_damage: Option<String>,
}

/// How long an emptied chain waits before a sync deletes it (see `FamilyTable::stale_chains`).
pub const CHAIN_DELETION_DELAY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for NftDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftDataplane")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NftDataplane {
    /// A dataplane that programs `kernel` according to `config`.
    pub fn new(config: ProxyConfig, kernel: Box<dyn NftKernel>) -> Self {
        Self {
            config,
            kernel,
            tables: BTreeMap::new(),
            needs_full: true,
            chain_deletion_delay: CHAIN_DELETION_DELAY,
            seen: Seen::default(),
        }
    }

    /// Changes how long emptied chains wait before deletion (tests use zero: deleted by the
    /// next sync).
    pub fn with_chain_deletion_delay(mut self, delay: Duration) -> Self {
        self.chain_deletion_delay = delay;
        self
    }

    /// The kernel access this dataplane uses.
    pub fn kernel(&mut self) -> &mut dyn NftKernel {
        self.kernel.as_mut()
    }

    /// Renders the full-sync transactions of `state` without applying them.
    pub fn render_full(&self, state: &ProxyState) -> Vec<Transaction> {
        self.config
            .ip_families
            .iter()
            .map(|family| full_table(&self.config, state, *family).0)
            .collect()
    }

    /// Before a partial sync commits: when anyone committed since the state was last known
    /// intact, checks the table now. The baseline [`record`](Self::record) takes after the
    /// commit is read from the kernel, so damage done before it would otherwise become the
    /// baseline and go unnoticed. Returns the generation the commit starts from.
    async fn look_before_commit(&mut self) -> Option<u32> {
        let generation = self.kernel.generation().await.ok().flatten();
        if generation.is_none() || generation != self.seen.generation {
            let damage = match self.find_damage().await {
                Ok(damage) => damage,
                Err(error) => Some(format!("the table could not be checked: {error}")),
            };
            self.seen.pending_damage = self.seen.pending_damage.take().or(damage);
        }
        generation
    }

    /// Inspects each family's table and says what differs from what the last sync left (the
    /// first difference found), if anything.
    async fn find_damage(&mut self) -> Result<Option<String>, NftError> {
        for family in self.config.ip_families.clone() {
            let probe = self.probe(family);
            let facts = self.kernel.inspect(family, &probe).await?;
            if let Some(damage) = self.damage(family, &probe, facts.as_ref()) {
                return Ok(Some(damage));
            }
        }
        Ok(None)
    }

    /// Records what the drift check compares with, after a successful sync that started from
    /// generation `before` (`None`: a full sync, which needs no earlier state). The generation
    /// is trusted only when this sync's commit is the one commit since the last trusted state
    /// (or the sync was full); otherwise the next check inspects. A commit of someone else
    /// inside the sync makes the baseline itself doubtful: the next check repairs.
    async fn record(&mut self, full: bool, before: Option<u32>) {
        let previous = self.seen.generation.take();
        let generation = self.kernel.generation().await.ok().flatten();
        if !full
            && before.is_some()
            && generation.is_some()
            && generation != before.map(|g| g.wrapping_add(1))
        {
            self.seen.pending_damage.get_or_insert_with(|| {
                "another program committed to nftables during the last sync, so its outcome is unconfirmed".to_owned()
            });
        }
        self.seen.tables.clear();
        for family in self.config.ip_families.clone() {
            if let Ok(Some(facts)) = self.kernel.inspect(family, &Probe::default()).await {
                self.seen.tables.insert(family, (facts.handle, facts.uses));
            }
        }
        let after = self.kernel.generation().await.ok().flatten();
        let consistent = generation.is_some() && generation == after;
        let ours_only = full || previous.is_some_and(|p| generation == Some(p.wrapping_add(1)));
        self.seen.generation = if consistent && ours_only {
            generation
        } else {
            None
        };
    }

    /// The questions the drift check asks about `family`'s table.
    fn probe(&self, family: IpFamily) -> Probe {
        let chains = self
            .seen
            .fixed_rules
            .get(&family)
            .map(|rules| rules.iter().map(|(chain, _)| chain.clone()).collect())
            .unwrap_or_default();
        let mut elements = Vec::new();
        if let Some(table) = self.tables.get(&family) {
            for set in DISPATCH_SETS {
                let sample = table
                    .ports
                    .values()
                    .flat_map(|rules| rules.elements.iter())
                    .find(|element| element.set == set);
                if let Some(element) = sample {
                    elements.push((element.set.clone(), element.key.clone()));
                }
            }
        }
        Probe { chains, elements }
    }

    /// What differs between the kernel's answers and what the last sync left, if anything.
    fn damage(
        &self,
        family: IpFamily,
        probe: &Probe,
        facts: Option<&TableFacts>,
    ) -> Option<String> {
        let table = format!("table {} {}", names::family_keyword(family), names::TABLE);
        let Some(facts) = facts else {
            return Some(format!("{table} is gone"));
        };
        if let Some((handle, uses)) = self.seen.tables.get(&family) {
            if facts.handle != *handle {
                return Some(format!("{table} was deleted and made again"));
            }
            if facts.uses != *uses {
                return Some(format!(
                    "{table} holds {} chains and sets, the last sync left {uses}",
                    facts.uses
                ));
            }
        }
        let expected = self.seen.fixed_rules.get(&family).into_iter().flatten();
        for ((chain, want), have) in expected.zip(&facts.rules) {
            if want != have {
                return Some(format!(
                    "chain {chain} of {table} holds {have} rules, the last full sync wrote {want}"
                ));
            }
        }
        for ((set, key), present) in probe.elements.iter().zip(&facts.elements) {
            if !present {
                return Some(format!("element {key} is missing from {set} of {table}"));
            }
        }
        None
    }

    async fn apply(&mut self, transactions: &[Transaction]) -> Result<(), DataplaneError> {
        let result = self.kernel.apply_all(transactions).await;
        result.map_err(|error| {
            self.needs_full = true;
            if let Some(command) = error.command() {
                tracing::debug!(%command, "nft refused its input");
            }
            DataplaneError::with_source("nftables transaction failed", error)
        })
    }
}

/// Renders one family's whole table.
fn full_table(
    config: &ProxyConfig,
    state: &ProxyState,
    family: IpFamily,
) -> (Transaction, FamilyTable) {
    let ctx = FamilyContext::new(family, config, state);
    let mut table = FamilyTable::default();
    let mut tx = Transaction::new(family);
    tx.push(Op::AddTable);
    tx.push(Op::DeleteTable);
    tx.push(Op::AddTable);
    write_base(&ctx, &mut tx);
    for (name, port_state) in state.iter() {
        let rules = render_port(&ctx, port_state, &mut table.slots);
        if rules == PortRules::default() {
            continue;
        }
        let owner = Arc::new(name.clone());
        for element in &rules.elements {
            table.own(&owner, element);
        }
        table.ports.insert(name.clone(), rules);
    }
    let mut ports: Vec<(&ServicePortName, &PortRules)> = table.ports.iter().collect();
    ports.sort_by(|a, b| a.0.cmp(b.0));
    for (_, rules) in &ports {
        for (name, spec) in &rules.sets {
            tx.push(Op::AddSet {
                name: name.clone(),
                spec: spec.clone(),
            });
        }
    }
    let mut other_elements: Vec<(&(String, Key), Option<Value>)> = table
        .owners
        .iter()
        .filter_map(|(key, owners)| owners.first().map(|(_, value)| (key, value.clone())))
        .collect();
    other_elements.sort();
    let mut endpoint_elements: Vec<&Element> = ports
        .iter()
        .flat_map(|(_, rules)| rules.elements.iter().filter(|e| is_private(e)))
        .collect();
    endpoint_elements.sort();
    // An endpoint map's elements follow its declaration (and so are written into it): see
    // `Transaction`'s rendering of `AddSet`.
    let mut endpoint_maps = BTreeSet::new();
    for element in endpoint_elements {
        if endpoint_maps.insert(element.set.clone()) {
            tx.push(endpoint_map_op(&element.set));
        }
        tx.push(Op::AddElement {
            set: element.set.clone(),
            key: element.key.clone(),
            value: element.value.clone(),
        });
    }
    for (_, rules) in &ports {
        for chain in rules.chains.keys() {
            tx.chain(chain);
        }
    }
    for (_, rules) in &ports {
        for (chain, chain_rules) in &rules.chains {
            for rule in chain_rules {
                tx.rule(chain, rule.clone());
            }
        }
    }
    for ((set, key), value) in other_elements {
        tx.push(Op::AddElement {
            set: set.clone(),
            key: key.clone(),
            value,
        });
    }
    table.endpoint_maps = endpoint_maps;
    (tx, table)
}

/// How many rules a full-sync transaction writes into each fixed chain.
fn fixed_rule_counts(tx: &Transaction) -> Vec<(String, usize)> {
    fixed_chains()
        .map(|chain| {
            let rules = tx
                .ops()
                .iter()
                .filter(|op| matches!(op, Op::AddRule { chain: c, .. } if c == chain))
                .count();
            (chain.to_owned(), rules)
        })
        .collect()
}

/// Declares an endpoint map; its name carries its protocol (see [`names::endpoint_map`]).
fn endpoint_map_op(name: &str) -> Op {
    let protocol = names::endpoint_map_protocol(name).unwrap_or(Protocol::Tcp);
    Op::AddSet {
        name: name.to_owned(),
        spec: SetSpec::EndpointMap(protocol),
    }
}

/// Renders the changed ports of one family into `table` and returns the transaction that takes
/// the kernel from the old table to the new one.
fn partial_table(
    config: &ProxyConfig,
    state: &ProxyState,
    changes: &ChangeSet,
    family: IpFamily,
    table: &mut FamilyTable,
    chain_deletion_delay: Duration,
) -> Transaction {
    let ctx = FamilyContext::new(family, config, state);
    let now = Instant::now();
    let due: Vec<String> = table
        .stale_chains
        .iter()
        .filter(|(_, since)| now.duration_since(**since) >= chain_deletion_delay)
        .map(|(chain, _)| chain.clone())
        .collect();
    let mut add_sets = Vec::new();
    let mut add_chains = Vec::new();
    let mut chain_rules = Vec::new();
    let mut removed_chains = Vec::new();
    let mut removed_sets = Vec::new();
    let mut prior: BTreeMap<(String, Key), Option<Option<Value>>> = BTreeMap::new();
    let mut delete_elements = Vec::new();
    let mut add_elements = Vec::new();

    for (name, change) in changes.iter() {
        let old = table.ports.remove(name).unwrap_or_default();
        let new = change
            .current
            .as_ref()
            .map(|current| render_port(&ctx, current, &mut table.slots))
            .unwrap_or_default();
        for chain in old.slotted.difference(&new.slotted) {
            table.slots.release(chain);
        }
        for (chain, rules) in &new.chains {
            match old.chains.get(chain) {
                Some(old_rules) if old_rules == rules => continue,
                Some(_) => chain_rules.push(Op::FlushChain {
                    name: chain.clone(),
                }),
                None => add_chains.push(Op::AddChain {
                    name: chain.clone(),
                    base: None,
                }),
            }
            for rule in rules {
                chain_rules.push(Op::AddRule {
                    chain: chain.clone(),
                    rule: rule.clone(),
                });
            }
        }
        removed_chains.extend(
            old.chains
                .keys()
                .filter(|c| !new.chains.contains_key(*c))
                .cloned(),
        );
        for chain in new.chains.keys() {
            table.stale_chains.remove(chain);
        }
        for (set, spec) in &new.sets {
            if !old.sets.contains_key(set) {
                add_sets.push(Op::AddSet {
                    name: set.clone(),
                    spec: spec.clone(),
                });
            }
        }
        for (set, spec) in &old.sets {
            if !new.sets.contains_key(set) {
                removed_sets.push(Op::DeleteSet {
                    kind: spec.kind(),
                    name: set.clone(),
                });
            }
        }
        for element in old.elements.difference(&new.elements) {
            if is_private(element) {
                // Its one owner let it go (another port may take its key in this sync: every
                // delete of the transaction comes before every add).
                delete_elements.push(Op::DeleteElement {
                    set: element.set.clone(),
                    key: element.key.clone(),
                });
                table.disown(name, element);
                continue;
            }
            let key = (element.set.clone(), element.key.clone());
            prior
                .entry(key)
                .or_insert_with(|| table.effective(&element.set, &element.key));
            table.disown(name, element);
        }
        let owner = Arc::new(name.clone());
        for element in new.elements.difference(&old.elements) {
            if is_private(element) {
                if table.endpoint_maps.insert(element.set.clone()) {
                    add_sets.push(endpoint_map_op(&element.set));
                }
                add_elements.push(Op::AddElement {
                    set: element.set.clone(),
                    key: element.key.clone(),
                    value: element.value.clone(),
                });
                table.own(&owner, element);
                continue;
            }
            let key = (element.set.clone(), element.key.clone());
            prior
                .entry(key)
                .or_insert_with(|| table.effective(&element.set, &element.key));
            table.own(&owner, element);
        }
        if new != PortRules::default() {
            table.ports.insert(name.clone(), new);
        }
    }

    for ((set, key), before) in prior {
        let after = table.effective(&set, &key);
        if before == after {
            continue;
        }
        if before.is_some() {
            delete_elements.push(Op::DeleteElement {
                set: set.clone(),
                key: key.clone(),
            });
        }
        // Only shared elements pass through here; endpoint-map elements (private ones) and
        // their maps were handled above.
        if let Some(value) = after {
            add_elements.push(Op::AddElement { set, key, value });
        }
    }

    // Element operations sorted by set: the kernel looks a set up by name (a walk over the
    // table's sets) once per message, and one message carries the consecutive elements of one
    // set.
    fn element(op: &Op) -> Option<(&str, &Key)> {
        match op {
            Op::AddElement { set, key, .. } | Op::DeleteElement { set, key } => {
                Some((set.as_str(), key))
            }
            _ => None,
        }
    }
    delete_elements.sort_by(|a, b| element(a).cmp(&element(b)));
    add_elements.sort_by(|a, b| element(a).cmp(&element(b)));

    // An endpoint map that lost its last element is no longer referenced by any rule.
    let emptied: Vec<String> = table
        .endpoint_maps
        .iter()
        .filter(|map| table.set_sizes.get(*map).copied().unwrap_or(0) == 0)
        .cloned()
        .collect();
    for map in &emptied {
        table.endpoint_maps.remove(map);
        table.set_sizes.remove(map);
        removed_sets.push(Op::DeleteSet {
            kind: "map",
            name: map.clone(),
        });
    }

    // Chains flushed by an earlier sync and not needed again since are deleted now; the ones
    // this sync empties wait for a later one.
    let delete_chains: Vec<Op> = due
        .into_iter()
        .filter(|chain| table.stale_chains.remove(chain).is_some())
        .map(|name| Op::DeleteChain { name })
        .collect();
    for chain in &removed_chains {
        table.stale_chains.insert(chain.clone(), now);
    }

    let mut tx = Transaction::new(family);
    let ops = add_sets
        .into_iter()
        .chain(delete_elements)
        .chain(add_chains)
        .chain(chain_rules)
        .chain(add_elements)
        .chain(
            removed_chains
                .iter()
                .map(|name| Op::FlushChain { name: name.clone() }),
        )
        .chain(delete_chains)
        .chain(removed_sets);
    for op in ops {
        tx.push(op);
    }
    tx
}

#[async_trait]
impl Dataplane for NftDataplane {
    fn name(&self) -> &str {
        "nftables"
    }

    async fn sync(
        &mut self,
        state: &ProxyState,
        changes: &ChangeSet,
    ) -> Result<(), DataplaneError> {
        if self.needs_full || changes.context_changed() {
            return self.full_sync(state).await;
        }
        let mut transactions = Vec::new();
        for family in self.config.ip_families.clone() {
            let table = self.tables.entry(family).or_default();
            let delay = self.chain_deletion_delay;
            let tx = partial_table(&self.config, state, changes, family, table, delay);
            if !tx.is_empty() {
                transactions.push(tx);
            }
        }
        // On failure the model above is ahead of the kernel; `apply` marks the next sync full.
        let before = if transactions.is_empty() {
            None
        } else {
            self.look_before_commit().await
        };
        self.apply(&transactions).await?;
        if !transactions.is_empty() {
            self.record(false, before).await;
        }
        Ok(())
    }

    async fn full_sync(&mut self, state: &ProxyState) -> Result<(), DataplaneError> {
        let mut transactions = Vec::new();
        let mut tables = BTreeMap::new();
        for family in &self.config.ip_families {
            let (tx, table) = full_table(&self.config, state, *family);
            transactions.push(tx);
            tables.insert(*family, table);
        }
        self.apply(&transactions).await?;
        self.seen.fixed_rules = transactions
            .iter()
            .map(|tx| (tx.family(), fixed_rule_counts(tx)))
            .collect();
        self.tables = tables;
        self.needs_full = false;
        self.seen.pending_damage = None;
        self.record(true, None).await;
        Ok(())
    }

    async fn verify(&mut self) -> Result<Integrity, DataplaneError> {
        let failed =
            |error: NftError| DataplaneError::with_source("nftables drift check failed", error);
        if let Some(damage) = self.seen.pending_damage.take() {
            return Ok(Integrity::Damaged(damage));
        }
        let generation = self.kernel.generation().await.map_err(failed)?;
        if generation.is_some() && generation == self.seen.generation {
            return Ok(Integrity::Intact);
        }
        if let Some(damage) = self.find_damage().await.map_err(failed)? {
            return Ok(Integrity::Damaged(damage));
        }
        // Someone else committed, but not to this table.
        self.seen.generation = generation;
        Ok(Integrity::Intact)
    }

    async fn cleanup(&mut self) -> Result<(), DataplaneError> {
        let mut transactions = Vec::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let mut tx = Transaction::new(family);
            tx.push(Op::AddTable);
            tx.push(Op::DeleteTable);
            transactions.push(tx);
        }
        self.tables.clear();
        self.needs_full = true;
        self.kernel
            .apply_all(&transactions)
            .await
            .map_err(|error: NftError| {
                DataplaneError::with_source("nftables cleanup failed", error)
            })
    }
}
