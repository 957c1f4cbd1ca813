//! An in-memory, per-table transactional stand-in for iptables, for fast tests without root.
//! It reads restore inputs as `iptables-restore --noflush` does and refuses what the real
//! tool refuses: a jump to a missing chain, deleting a missing rule, removing a chain that
//! is missing or still referenced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kproxy_core::IpFamily;

use crate::error::IptablesError;
use crate::kernel::IptablesKernel;
use crate::restore::Table;

/// Targets that are not chains.
const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "MARK",
    "MASQUERADE",
    "DNAT",
    "SNAT",
];

const BUILT_IN: &[(&str, &[&str])] = &[
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
];

type Chains = BTreeMap<String, Vec<String>>;

/// The fake kernel's contents.
#[derive(Debug, Default)]
struct Kernel {
    tables: BTreeMap<(IpFamily, String), Chains>,
    inputs: Vec<String>,
    refuse_next_restore: bool,
    tcp_be_liberal: bool,
    route_localnet: bool,
}

/// The fake kernel: every family's tables, and what it was asked. Clones share one kernel,
/// so a test keeps a handle while the dataplane owns another.
#[derive(Debug, Clone, Default)]
pub struct FakeIptables {
    kernel: Arc<Mutex<Kernel>>,
}

impl FakeIptables {
    /// An empty kernel.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.kernel
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Every restore input it applied or refused, in order.
    pub fn inputs(&self) -> Vec<String> {
        self.lock().inputs.clone()
    }

    /// Refuses the next restore, as a kernel refusing a rule would.
    pub fn refuse_next_restore(&self) {
        self.lock().refuse_next_restore = true;
    }

    /// Sets what `tcp_be_liberal` answers.
    pub fn set_tcp_be_liberal(&self, liberal: bool) {
        self.lock().tcp_be_liberal = liberal;
    }

    /// Whether `enable_route_localnet` was called.
    pub fn route_localnet(&self) -> bool {
        self.lock().route_localnet
    }

    /// Runs `text` as `iptables-restore --noflush` would, from the outside (damage in tests).
    ///
    /// # Errors
    ///
    /// As the real tool: the first refused line, naming it.
    pub fn apply(&self, family: IpFamily, text: &str) -> Result<(), String> {
        self.lock().apply(family, text)
    }

    /// One table's contents in `iptables-save` form.
    pub fn saved(&self, family: IpFamily, table: Table) -> String {
        self.lock().saved(family, table)
    }
}

impl Kernel {
    fn table(&self, family: IpFamily, table: &str) -> Chains {
        self.tables
            .get(&(family, table.to_owned()))
            .cloned()
            .unwrap_or_else(|| {
                BUILT_IN
                    .iter()
                    .find(|(name, _)| *name == table)
                    .map(|(_, chains)| {
                        chains
                            .iter()
                            .map(|c| ((*c).to_owned(), Vec::new()))
                            .collect()
                    })
                    .unwrap_or_default()
            })
    }

    fn apply(&mut self, family: IpFamily, text: &str) -> Result<(), String> {
        let mut current: Option<(String, Chains)> = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            let refuse = |why: &str| format!("line {}: {why}: {line}", number + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                current = Some((name.to_owned(), self.table(family, name)));
                continue;
            }
            if line == "COMMIT" {
                let (name, chains) = current
                    .take()
                    .ok_or_else(|| refuse("COMMIT outside a table"))?;
                self.tables.insert((family, name), chains);
                continue;
            }
            let (_, chains) = current.as_mut().ok_or_else(|| refuse("no table"))?;
            if let Some(declaration) = line.strip_prefix(':') {
                let name = declaration.split_whitespace().next().unwrap_or_default();
                chains.insert(name.to_owned(), Vec::new());
                continue;
            }
            let (command, rest) = line.split_once(' ').ok_or_else(|| refuse("no chain"))?;
            let (chain, args) = rest.split_once(' ').unwrap_or((rest, ""));
            if !chains.contains_key(chain) {
                return Err(refuse("no such chain"));
            }
            match command {
                "-A" | "-I" => {
                    let (position, args) = match (command, args.split_once(' ')) {
                        ("-I", Some((n, rule))) if n.parse::<usize>().is_ok() => {
                            (n.parse::<usize>().unwrap_or(1) - 1, rule)
                        }
                        ("-I", _) => (0, args),
                        _ => (usize::MAX, args),
                    };
                    let words: Vec<&str> = args.split_whitespace().collect();
                    if let Some(target) = words
                        .windows(2)
                        .find(|w| w[0] == "-j" || w[0] == "-g")
                        .map(|w| w[1])
                        && !TARGETS.contains(&target)
                        && !chains.contains_key(target)
                    {
                        return Err(refuse("jump to a missing chain"));
                    }
                    let rules = chains.get_mut(chain).expect("checked");
                    let position = position.min(rules.len());
                    rules.insert(position, args.to_owned());
                }
                "-D" => {
                    let rules = chains.get_mut(chain).expect("checked");
                    let at = rules.iter().position(|r| r == args).ok_or_else(|| {
                        refuse("Bad rule (does a matching rule exist in that chain?)")
                    })?;
                    rules.remove(at);
                }
                "-F" => chains.get_mut(chain).expect("checked").clear(),
                "-X" => {
                    let referenced = chains.values().flatten().any(|rule| {
                        rule.split_whitespace()
                            .collect::<Vec<_>>()
                            .windows(2)
                            .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == chain)
                    });
                    if referenced || !chains[chain].is_empty() {
                        return Err(refuse("chain is in use or not empty"));
                    }
                    chains.remove(chain);
                }
                _ => return Err(refuse("unknown command")),
            }
        }
        if current.is_some() {
            return Err("no COMMIT line".to_owned());
        }
        Ok(())
    }

    fn saved(&self, family: IpFamily, table: Table) -> String {
        let chains = self.table(family, table.name());
        let mut text = format!("*{}\n", table.name());
        for name in chains.keys() {
            text.push_str(&format!(":{name} - [0:0]\n"));
        }
        for (name, rules) in &chains {
            for rule in rules {
                text.push_str(&format!("-A {name} {rule}\n"));
            }
        }
        text.push_str("COMMIT\n");
        text
    }
}

#[async_trait]
impl IptablesKernel for FakeIptables {
    async fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), IptablesError> {
        let mut kernel = self.lock();
        kernel.inputs.push(input.to_owned());
        let refused = |message: String| IptablesError::Refused {
            command: "fake iptables-restore --noflush".to_owned(),
            message,
        };
        if std::mem::take(&mut kernel.refuse_next_restore) {
            return Err(refused("refused on request".to_owned()));
        }
        kernel.apply(family, input).map_err(refused)
    }

    async fn save(&mut self, family: IpFamily, table: Table) -> Result<String, IptablesError> {
        Ok(self.saved(family, table))
    }

    async fn chains(
        &mut self,
        family: IpFamily,
        table: Table,
        chains: &[&str],
    ) -> Result<Vec<Option<Vec<String>>>, IptablesError> {
        let contents = self.lock().table(family, table.name());
        Ok(chains
            .iter()
            .map(|chain| contents.get(*chain).cloned())
            .collect())
    }

    async fn tcp_be_liberal(&mut self) -> bool {
        self.lock().tcp_be_liberal
    }

    async fn enable_route_localnet(&mut self) -> Result<(), IptablesError> {
        self.lock().route_localnet = true;
        Ok(())
    }
}
