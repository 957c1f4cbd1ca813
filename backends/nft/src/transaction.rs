//! Transactions as values: a list of nft operations on one table, applied all or nothing.
//!
//! `Display` renders the exact `nft -f` input, one command per line, so a failed transaction
//! can be logged and replayed by hand.

use std::fmt;
use std::fmt::Write as _;

use kproxy_core::IpFamily;

use crate::names::{TABLE, family_keyword};
use crate::values::{Key, Rule, SetSpec, Value};

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter` or `nat`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output` or `postrouting`.
    pub hook: &'static str,
    /// The priority, as a number (`-100` is dstnat, `100` srcnat).
    pub priority: i32,
}

/// One operation on the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates the table if missing.
    AddTable,
    /// Deletes the table and everything in it.
    DeleteTable,
    /// Creates a chain if missing; a base chain when `base` is set.
    AddChain {
        /// The chain.
        name: String,
        /// Its hook, for a base chain.
        base: Option<BaseChain>,
    },
    /// Removes every rule of a chain.
    FlushChain {
        /// The chain.
        name: String,
    },
    /// Deletes an empty, unreferenced chain.
    DeleteChain {
        /// The chain.
        name: String,
    },
    /// Appends a rule to a chain.
    AddRule {
        /// The chain.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// Creates a set or map if missing.
    AddSet {
        /// The set.
        name: String,
        /// What kind of set it is.
        spec: SetSpec,
    },
    /// Removes every element of a set or map.
    FlushSet {
        /// `set` or `map`.
        kind: &'static str,
        /// The set.
        name: String,
    },
    /// Deletes an unreferenced set or map.
    DeleteSet {
        /// `set` or `map`.
        kind: &'static str,
        /// The set.
        name: String,
    },
    /// Adds an element to a set (no value) or map.
    AddElement {
        /// The set.
        set: String,
        /// The key.
        key: Key,
        /// The value of a map element.
        value: Option<Value>,
    },
    /// Deletes an element by key.
    DeleteElement {
        /// The set.
        set: String,
        /// The key.
        key: Key,
    },
}

/// An ordered list of operations on one family's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    family: IpFamily,
    ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction on the `family` table.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            ops: Vec::new(),
        }
    }

    /// The table's family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Appends a rule.
    pub fn rule(&mut self, chain: &str, rule: impl Into<Rule>) {
        self.push(Op::AddRule {
            chain: chain.to_owned(),
            rule: rule.into(),
        });
    }

    /// Appends a regular chain.
    pub fn chain(&mut self, name: &str) {
        self.push(Op::AddChain {
            name: name.to_owned(),
            base: None,
        });
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_commands(f, 0, usize::MAX).map(drop)
    }
}

impl Transaction {
    /// Writes the nft commands of the operations from index `start` on, stopping at the first
    /// command boundary after `budget` bytes; returns the index to go on from (the number of
    /// operations once all are written). Lets a large input go to `nft` piece by piece instead
    /// of being held whole (about 100 MB at 100,000 Services).
    ///
    /// # Errors
    ///
    /// When `out` refuses a write.
    pub fn write_commands(
        &self,
        out: &mut impl fmt::Write,
        start: usize,
        budget: usize,
    ) -> Result<usize, fmt::Error> {
        let table = format!("{} {TABLE}", family_keyword(self.family));
        let mut written = Counting { out, bytes: 0 };
        let f = &mut written;
        let mut ops = self.ops.iter().enumerate().skip(start).peekable();
        while let Some((_, op)) = ops.next() {
            match op {
                Op::AddTable => writeln!(f, "add table {table}")?,
                Op::DeleteTable => writeln!(f, "delete table {table}")?,
                Op::AddChain { name, base: None } => writeln!(f, "add chain {table} {name}")?,
                Op::AddChain {
                    name,
                    base: Some(base),
                } => writeln!(
                    f,
                    "add chain {table} {name} {{ type {} hook {} priority {} ; }}",
                    base.kind, base.hook, base.priority
                )?,
                Op::FlushChain { name } => writeln!(f, "flush chain {table} {name}")?,
                Op::DeleteChain { name } => writeln!(f, "delete chain {table} {name}")?,
                Op::AddRule { chain, rule } => writeln!(f, "add rule {table} {chain} {rule}")?,
                Op::AddSet { name, spec } => {
                    write!(
                        f,
                        "add {} {table} {name} {{ {}",
                        spec.kind(),
                        spec.body(self.family)
                    )?;
                    // Elements that follow at once are written into the declaration: nft
                    // sends an interval set's elements with the set anyway, and a separate
                    // `add element` command would make it send them a second time.
                    let mut first = true;
                    while let Some((_, next)) = ops.next_if(|(_, next)| adds_to(next, name)) {
                        f.write_str(if first { " elements = { " } else { ", " })?;
                        write_element(f, next)?;
                        first = false;
                    }
                    writeln!(f, "{} }}", if first { "" } else { " }" })?;
                }
                Op::FlushSet { kind, name } => writeln!(f, "flush {kind} {table} {name}")?,
                Op::DeleteSet { kind, name } => writeln!(f, "delete {kind} {table} {name}")?,
                Op::AddElement { set, .. } | Op::DeleteElement { set, .. } => {
                    // Consecutive element operations on one set share a command: nft parses
                    // one long command much faster than many short ones.
                    let adding = matches!(op, Op::AddElement { .. });
                    write!(
                        f,
                        "{} element {table} {set} {{ ",
                        if adding { "add" } else { "delete" }
                    )?;
                    write_element(f, op)?;
                    while let Some((_, next)) =
                        ops.next_if(|(_, next)| same_element_batch(op, next))
                    {
                        f.write_str(", ")?;
                        write_element(f, next)?;
                    }
                    writeln!(f, " }}")?;
                }
            }
            if f.bytes >= budget {
                break;
            }
        }
        Ok(ops.peek().map_or(self.ops.len(), |(index, _)| *index))
    }
}

/// A writer that counts what passes through it.
struct Counting<'a, W> {
    out: &'a mut W,
    bytes: usize,
}

impl<W: fmt::Write> fmt::Write for Counting<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes += s.len();
        self.out.write_str(s)
    }
}

/// Whether `op` adds an element to `set`.
fn adds_to(op: &Op, set: &str) -> bool {
    matches!(op, Op::AddElement { set: s, .. } if s == set)
}

fn same_element_batch(first: &Op, next: &Op) -> bool {
    match (first, next) {
        (Op::AddElement { set: a, .. }, Op::AddElement { set: b, .. })
        | (Op::DeleteElement { set: a, .. }, Op::DeleteElement { set: b, .. }) => a == b,
        _ => false,
    }
}

fn write_element(f: &mut impl fmt::Write, op: &Op) -> fmt::Result {
    match op {
        Op::AddElement {
            key,
            value: Some(value),
            ..
        } => write!(f, "{key} : {value}"),
        Op::AddElement {
            key, value: None, ..
        }
        | Op::DeleteElement { key, .. } => write!(f, "{key}"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transaction {
        let mut tx = Transaction::new(IpFamily::V4);
        tx.push(Op::AddTable);
        tx.push(Op::AddChain {
            name: "nat-output".into(),
            base: Some(BaseChain {
                kind: "nat",
                hook: "output",
                priority: -100,
            }),
        });
        tx.rule("nat-output", "jump services");
        for key in ["1.1.1.1", "2.2.2.2"] {
            tx.push(Op::AddElement {
                set: "s".into(),
                key: Key::Address(key.parse().unwrap()),
                value: None,
            });
        }
        tx.push(Op::AddSet {
            name: "e".into(),
            spec: SetSpec::Declared {
                kind: "set",
                body: "type ipv4_addr ;".into(),
            },
        });
        tx.push(Op::AddElement {
            set: "e".into(),
            key: Key::Address("4.4.4.4".parse().unwrap()),
            value: None,
        });
        tx.push(Op::DeleteElement {
            set: "m".into(),
            key: Key::Destination("3.3.3.3".parse().unwrap(), kproxy_core::Protocol::Tcp, 80),
        });
        tx
    }

    #[test]
    fn renders_nft_commands_and_batches_elements() {
        assert_eq!(
            sample().to_string(),
            "add table ip kube-proxy\n\
             add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
             add rule ip kube-proxy nat-output jump services\n\
             add element ip kube-proxy s { 1.1.1.1, 2.2.2.2 }\n\
             add set ip kube-proxy e { type ipv4_addr ; elements = { 4.4.4.4 } }\n\
             delete element ip kube-proxy m { 3.3.3.3 . tcp . 80 }\n"
        );
    }

    /// Pieces end at command boundaries: written one after the other they are the whole
    /// input, element batches and declarations with their elements included.
    #[test]
    fn the_input_written_in_pieces_is_the_whole_input() {
        let tx = sample();
        let whole = tx.to_string();
        for budget in [0, 1, 30, 60, 1000] {
            let (mut pieces, mut next, mut count) = (String::new(), 0, 0);
            while next < tx.ops().len() {
                let mut piece = String::new();
                next = tx.write_commands(&mut piece, next, budget).unwrap();
                assert!(piece.ends_with('\n'), "{piece:?}");
                pieces.push_str(&piece);
                count += 1;
            }
            assert_eq!(pieces, whole, "budget {budget}");
            if budget == 0 {
                assert_eq!(count, whole.lines().count(), "one command per piece");
            }
        }
    }
}
