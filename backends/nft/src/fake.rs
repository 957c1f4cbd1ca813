//! An in-memory nftables for fast tests: it keeps tables, chains, rules, sets and elements,
//! checks what the kernel would refuse (missing objects, dangling references, deleting what is
//! still used), applies a batch all or nothing, and dumps its state in sorted order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use kproxy_core::IpFamily;

use crate::error::NftError;
use crate::integrity::{Probe, TableFacts};
use crate::kernel::NftKernel;
use crate::names::family_keyword;
use crate::transaction::{BaseChain, Op, Transaction};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeChain {
    base: Option<BaseChain>,
    rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeSet {
    kind: &'static str,
    spec: String,
    elements: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeTable {
    handle: u64,
    chains: BTreeMap<String, FakeChain>,
    sets: BTreeMap<String, FakeSet>,
}

#[derive(Debug, Default)]
struct FakeState {
    tables: BTreeMap<IpFamily, FakeTable>,
    failures: VecDeque<String>,
    batches: usize,
    last_batch: String,
}

/// A transactional in-memory nftables. Clones share state, so a test can keep one clone to
/// inspect while the dataplane owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeNft {
    state: Arc<Mutex<FakeState>>,
}

impl FakeNft {
    /// An empty nftables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next batch fail with `message`, leaving everything as it was.
    pub fn fail_next(&self, message: impl Into<String>) {
        self.lock().failures.push_back(message.into());
    }

    /// The nft input of the last batch applied successfully.
    pub fn last_batch(&self) -> String {
        self.lock().last_batch.clone()
    }

    /// Deletes a table as someone else would (`nft delete table`), outside any sync.
    pub fn delete_table(&self, family: IpFamily) {
        self.lock().tables.remove(&family);
    }

    /// Deletes one chain as someone else would (`nft delete chain`), leaving whatever points
    /// at it.
    pub fn delete_chain(&self, family: IpFamily, chain: &str) {
        if let Some(table) = self.lock().tables.get_mut(&family) {
            table.chains.remove(chain);
        }
    }

    /// Removes every rule of a table as someone else would (`nft flush table`).
    pub fn flush_table(&self, family: IpFamily) {
        if let Some(table) = self.lock().tables.get_mut(&family) {
            for chain in table.chains.values_mut() {
                chain.rules.clear();
            }
        }
    }

    /// How many batches were applied successfully.
    pub fn batches(&self) -> usize {
        self.lock().batches
    }

    /// The table of `family` in a stable text form: chains, then sets, each sorted by name,
    /// rules in order, elements sorted. Empty when there is no table.
    pub fn dump(&self, family: IpFamily) -> String {
        let state = self.lock();
        let Some(table) = state.tables.get(&family) else {
            return String::new();
        };
        let mut out = format!("table {} kube-proxy\n", family_keyword(family));
        for (name, chain) in &table.chains {
            match &chain.base {
                Some(base) => out.push_str(&format!(
                    "chain {name} {{ type {} hook {} priority {} }}\n",
                    base.kind, base.hook, base.priority
                )),
                None => out.push_str(&format!("chain {name}\n")),
            }
            for rule in &chain.rules {
                out.push_str(&format!("  {rule}\n"));
            }
        }
        for (name, set) in &table.sets {
            out.push_str(&format!("{} {name} {{ {} }}\n", set.kind, set.spec));
            for (key, value) in &set.elements {
                match value {
                    Some(value) => out.push_str(&format!("  {key} : {value}\n")),
                    None => out.push_str(&format!("  {key}\n")),
                }
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn refuse(transaction: &Transaction, message: String) -> NftError {
    NftError::Refused {
        command: format!("a transaction of {} operations", transaction.ops().len()),
        message,
    }
}

/// The chains and sets a rule or element value names.
fn references(text: &str) -> impl Iterator<Item = Reference<'_>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if (*word == "goto" || *word == "jump") && i + 1 < words.len() {
            found.push(Reference::Chain(words[i + 1].trim_end_matches([',', '}'])));
        } else if let Some(set) = word.strip_prefix('@') {
            found.push(Reference::Set(set.trim_end_matches([',', '}'])));
        }
    }
    found.into_iter()
}

#[derive(Debug, PartialEq, Eq)]
enum Reference<'a> {
    Chain(&'a str),
    Set(&'a str),
}

fn check_references(table: &FakeTable, text: &str) -> Result<(), String> {
    for reference in references(text) {
        match reference {
            Reference::Chain(chain) if !table.chains.contains_key(chain) => {
                return Err(format!(
                    "Could not process rule: No such file or directory: chain {chain}"
                ));
            }
            Reference::Set(set) if !table.sets.contains_key(set) => {
                return Err(format!(
                    "Could not process rule: No such file or directory: set {set}"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_referenced(table: &FakeTable, target: Reference<'_>) -> bool {
    let rules = table.chains.values().flat_map(|c| c.rules.iter());
    let values = table
        .sets
        .values()
        .flat_map(|s| s.elements.values().flatten());
    rules
        .chain(values)
        .any(|text| references(text).any(|r| r == target))
}

fn apply_op(
    tables: &mut BTreeMap<IpFamily, FakeTable>,
    family: IpFamily,
    op: &Op,
) -> Result<(), String> {
    if let Op::AddTable = op {
        let next_handle = tables.values().map(|t| t.handle).max().unwrap_or(0) + 1;
        tables.entry(family).or_insert_with(|| FakeTable {
            handle: next_handle,
            ..FakeTable::default()
        });
        return Ok(());
    }
    if let Op::DeleteTable = op {
        return tables
            .remove(&family)
            .map(drop)
            .ok_or_else(|| "No such file or directory: table".to_owned());
    }
    let table = tables
        .get_mut(&family)
        .ok_or("No such file or directory: table")?;
    match op {
        Op::AddTable | Op::DeleteTable => {}
        Op::AddChain { name, base } => {
            let chain = table
                .chains
                .entry(name.clone())
                .or_insert_with(|| FakeChain {
                    base: base.clone(),
                    rules: Vec::new(),
                });
            if chain.base != *base {
                return Err(format!(
                    "Device or resource busy: chain {name} exists with another hook"
                ));
            }
        }
        Op::FlushChain { name } => {
            table
                .chains
                .get_mut(name)
                .ok_or(format!("No such file or directory: chain {name}"))?
                .rules
                .clear();
        }
        Op::DeleteChain { name } => {
            let chain = table
                .chains
                .get(name)
                .ok_or(format!("No such file or directory: chain {name}"))?;
            if !chain.rules.is_empty() || is_referenced(table, Reference::Chain(name)) {
                return Err(format!("Device or resource busy: chain {name}"));
            }
            table.chains.remove(name);
        }
        Op::AddRule { chain, rule } => {
            let rule = rule.to_string();
            check_references(table, &rule)?;
            table
                .chains
                .get_mut(chain)
                .ok_or(format!("No such file or directory: chain {chain}"))?
                .rules
                .push(rule);
        }
        Op::AddSet { name, spec } => {
            let kind = spec.kind();
            let body = spec.body(family);
            let set = table.sets.entry(name.clone()).or_insert_with(|| FakeSet {
                kind,
                spec: body.clone(),
                elements: BTreeMap::new(),
            });
            if set.spec != body {
                return Err(format!("File exists: {kind} {name} with another type"));
            }
        }
        Op::FlushSet { name, .. } => {
            table
                .sets
                .get_mut(name)
                .ok_or(format!("No such file or directory: set {name}"))?
                .elements
                .clear();
        }
        Op::DeleteSet { name, .. } => {
            if !table.sets.contains_key(name) {
                return Err(format!("No such file or directory: set {name}"));
            }
            if is_referenced(table, Reference::Set(name)) {
                return Err(format!("Device or resource busy: set {name}"));
            }
            table.sets.remove(name);
        }
        Op::AddElement { set, key, value } => {
            let key = key.to_string();
            let value = value.as_ref().map(ToString::to_string);
            if let Some(value) = &value {
                check_references(table, value)?;
            }
            let target = table
                .sets
                .get_mut(set)
                .ok_or(format!("No such file or directory: set {set}"))?;
            if target.kind == "map" && value.is_none() {
                return Err(format!("map {set} needs a value for {key}"));
            }
            match target.elements.get(&key) {
                Some(existing) if *existing != value => {
                    return Err(format!("File exists: element {key} in {set}"));
                }
                _ => {
                    target.elements.insert(key, value);
                }
            }
        }
        Op::DeleteElement { set, key } => {
            let target = table
                .sets
                .get_mut(set)
                .ok_or(format!("No such file or directory: set {set}"))?;
            target
                .elements
                .remove(&key.to_string())
                .ok_or(format!("No such file or directory: element {key} in {set}"))?;
        }
    }
    Ok(())
}

#[async_trait]
impl NftKernel for FakeNft {
    async fn apply_all(&mut self, transactions: &[Transaction]) -> Result<(), NftError> {
        let mut state = self.lock();
        if let Some(message) = state.failures.pop_front() {
            let first = transactions
                .first()
                .cloned()
                .unwrap_or_else(|| Transaction::new(IpFamily::V4));
            return Err(refuse(&first, message));
        }
        let mut tables = state.tables.clone();
        for transaction in transactions {
            for op in transaction.ops() {
                apply_op(&mut tables, transaction.family(), op)
                    .map_err(|message| refuse(transaction, message))?;
            }
        }
        state.tables = tables;
        state.batches += 1;
        state.last_batch = transactions.iter().map(ToString::to_string).collect();
        Ok(())
    }

    async fn list(&mut self, family: IpFamily) -> Result<String, NftError> {
        Ok(self.dump(family))
    }

    async fn inspect(
        &mut self,
        family: IpFamily,
        probe: &Probe,
    ) -> Result<Option<TableFacts>, NftError> {
        let state = self.lock();
        let Some(table) = state.tables.get(&family) else {
            return Ok(None);
        };
        Ok(Some(TableFacts {
            handle: table.handle,
            uses: u32::try_from(table.chains.len() + table.sets.len()).unwrap_or(u32::MAX),
            rules: probe
                .chains
                .iter()
                .map(|chain| table.chains.get(chain).map_or(0, |c| c.rules.len()))
                .collect(),
            elements: probe
                .elements
                .iter()
                .map(|(set, key)| {
                    table
                        .sets
                        .get(set)
                        .is_some_and(|s| s.elements.contains_key(&key.to_string()))
                })
                .collect(),
        }))
    }
}
