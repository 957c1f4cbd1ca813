//! One `iptables-restore --noflush` input: per table, the chains it declares (which creates or
//! flushes them), the rules it deletes and adds, and the chains it removes, in the order the
//! tool needs them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A table this backend writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `filter`: reject, drop and accept verdicts.
    Filter,
    /// `nat`: DNAT to endpoints, masquerade marks.
    Nat,
    /// `mangle`: only the canary chain.
    Mangle,
}

impl Table {
    /// Every table, in the order a restore input writes them.
    pub const ALL: [Table; 3] = [Table::Filter, Table::Nat, Table::Mangle];

    /// The table's name (`filter`, `nat`, `mangle`), also its metric label.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one restore input does to one table.
#[derive(Debug, Clone, Default)]
struct TableInput {
    declared: Vec<String>,
    declared_set: BTreeSet<String>,
    deletions: Vec<String>,
    additions: Vec<String>,
    removed_chains: Vec<String>,
    rules_written: usize,
}

/// A restore input under construction.
#[derive(Debug, Clone, Default)]
pub struct RestoreInput {
    tables: [TableInput; 3],
}

impl RestoreInput {
    /// Declares `chain` in `table`: created when missing, flushed when present.
    pub fn declare(&mut self, table: Table, chain: &str) {
        let input = &mut self.tables[table.index()];
        if input.declared_set.insert(chain.to_owned()) {
            input.declared.push(chain.to_owned());
        }
    }

    /// Appends `rule` (the arguments after `-A CHAIN`) to `chain`.
    pub fn append(&mut self, table: Table, chain: &str, rule: &str) {
        let input = &mut self.tables[table.index()];
        input.additions.push(format!("-A {chain} {rule}"));
        input.rules_written += 1;
    }

    /// Inserts `rule` as the first rule of `chain`.
    pub fn insert_first(&mut self, table: Table, chain: &str, rule: &str) {
        let input = &mut self.tables[table.index()];
        input.additions.push(format!("-I {chain} 1 {rule}"));
        input.rules_written += 1;
    }

    /// Deletes the rule `rule` from `chain`; the restore fails when it is not there.
    pub fn delete_rule(&mut self, table: Table, chain: &str, rule: &str) {
        self.tables[table.index()]
            .deletions
            .push(format!("-D {chain} {rule}"));
    }

    /// Flushes and removes `chain`, after every other line of the table: the rules that jump
    /// to it must be gone by then.
    pub fn remove_chain(&mut self, table: Table, chain: &str) {
        self.declare(table, chain);
        self.tables[table.index()]
            .removed_chains
            .push(chain.to_owned());
    }

    /// Whether the input changes nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| {
            t.declared.is_empty()
                && t.deletions.is_empty()
                && t.additions.is_empty()
                && t.removed_chains.is_empty()
        })
    }

    /// The rules the input adds to `table` (upstream's "rules written in the last sync").
    pub fn rules_written(&self, table: Table) -> usize {
        self.tables[table.index()].rules_written
    }

    /// The chains the input removes from `table`.
    pub fn removed_chains(&self, table: Table) -> &[String] {
        &self.tables[table.index()].removed_chains
    }

    /// The input as `iptables-restore` reads it; tables without changes are left out, so
    /// their contents are not even read back by the tool.
    pub fn render(&self) -> String {
        let size: usize = self
            .tables
            .iter()
            .map(|t| {
                t.declared.iter().map(|c| c.len() + 9).sum::<usize>()
                    + t.deletions.iter().map(|l| l.len() + 1).sum::<usize>()
                    + t.additions.iter().map(|l| l.len() + 1).sum::<usize>()
                    + t.removed_chains.iter().map(|c| c.len() + 4).sum::<usize>()
                    + 20
            })
            .sum();
        let mut text = String::with_capacity(size);
        for table in Table::ALL {
            let input = &self.tables[table.index()];
            if input.declared.is_empty() && input.deletions.is_empty() && input.additions.is_empty()
            {
                continue;
            }
            let _ = writeln!(text, "*{}", table.name());
            for chain in &input.declared {
                let _ = writeln!(text, ":{chain} - [0:0]");
            }
            for line in input.deletions.iter().chain(&input.additions) {
                text.push_str(line);
                text.push('\n');
            }
            for chain in &input.removed_chains {
                let _ = writeln!(text, "-X {chain}");
            }
            text.push_str("COMMIT\n");
        }
        text
    }
}

/// Joins rule arguments the way `iptables-restore` splits them: an argument with a space is
/// quoted (only comments have them; Kubernetes names never hold quotes).
pub fn join_args(args: &[&str]) -> String {
    let mut rule = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            rule.push(' ');
        }
        if arg.contains(' ') {
            let _ = write!(rule, "\"{arg}\"");
        } else {
            rule.push_str(arg);
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lists_declarations_then_deletions_additions_and_removals() {
        let mut input = RestoreInput::default();
        input.append(Table::Nat, "KUBE-SVC-A", "-j KUBE-SEP-B");
        input.declare(Table::Nat, "KUBE-SVC-A");
        input.remove_chain(Table::Nat, "KUBE-SEP-C");
        input.delete_rule(Table::Nat, "KUBE-SERVICES", "-d 1.2.3.4/32 -j KUBE-SVC-C");
        input.insert_first(Table::Nat, "KUBE-SERVICES", "-d 1.2.3.5/32 -j KUBE-SVC-A");
        assert_eq!(
            input.render(),
            "*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-C - [0:0]\n\
             -D KUBE-SERVICES -d 1.2.3.4/32 -j KUBE-SVC-C\n\
             -A KUBE-SVC-A -j KUBE-SEP-B\n\
             -I KUBE-SERVICES 1 -d 1.2.3.5/32 -j KUBE-SVC-A\n\
             -X KUBE-SEP-C\nCOMMIT\n"
        );
        assert_eq!(input.rules_written(Table::Nat), 2);
        assert_eq!(input.rules_written(Table::Filter), 0);
        assert!(RestoreInput::default().is_empty());
    }

    #[test]
    fn arguments_with_spaces_are_quoted() {
        assert_eq!(
            join_args(&[
                "-m",
                "comment",
                "--comment",
                "ns/svc:p cluster IP",
                "-j",
                "X"
            ]),
            "-m comment --comment \"ns/svc:p cluster IP\" -j X"
        );
    }
}
