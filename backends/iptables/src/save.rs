//! Reading `iptables-save` output: which chains a table holds and the rules of each.

use std::collections::BTreeMap;

use crate::restore::Table;

/// One table as `iptables-save -t TABLE` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Every chain, built-in or not, with its rules (the arguments after `-A CHAIN`) in order.
    pub chains: BTreeMap<String, Vec<String>>,
}

impl SavedTable {
    /// Parses one table's `iptables-save` output (comments, counters and policies are
    /// dropped).
    pub fn parse(text: &str) -> Self {
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(declaration) = line.strip_prefix(':') {
                if let Some(name) = declaration.split_whitespace().next() {
                    chains.entry(name.to_owned()).or_default();
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, args) = rule.split_once(' ').unwrap_or((rule, ""));
                chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(args.to_owned());
            }
        }
        Self { chains }
    }

    /// Whether the table holds `chain`.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains_key(chain)
    }

    /// The rules of `chain`, empty when it does not exist.
    pub fn rules(&self, chain: &str) -> &[String] {
        self.chains.get(chain).map_or(&[], Vec::as_slice)
    }
}

/// `iptables-save` output reduced to what a sync decides, so that two rule sets can be
/// compared: counters, comments and the `# Generated` lines go, only `KUBE-*` chains and
/// the jumps to them stay, and the rules of the chains shared by every service port
/// (`KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-EXTERNAL-SERVICES`, `KUBE-PROXY-FIREWALL`) are
/// sorted, since each matches its own destination and a partial sync inserts new ones first.
/// The node-port jumps stay last in `KUBE-SERVICES`; the hairpin marks that open
/// `KUBE-POSTROUTING` are sorted among themselves.
pub fn normalize(saved: &str) -> String {
    const SHARED: [&str; 4] = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
    ];
    let mut out = String::new();
    let mut table = String::new();
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let flush = |out: &mut String, table: &str, chains: &mut BTreeMap<String, Vec<String>>| {
        if table.is_empty() {
            return;
        }
        out.push_str(&format!("*{table}\n"));
        for name in chains.keys() {
            out.push_str(&format!(":{name}\n"));
        }
        for (name, rules) in chains.iter_mut() {
            if SHARED.contains(&name.as_str()) {
                rules.sort_by_key(|rule| (rule.contains("-j KUBE-NODEPORTS"), rule.clone()));
            } else if name == "KUBE-POSTROUTING" {
                // The hairpin marks, one per endpoint, before the fixed rules.
                let hairpins = rules.iter().take_while(|r| r.contains(" hairpin")).count();
                rules[..hairpins].sort();
            }
            for rule in rules.iter() {
                out.push_str(&format!("-A {name} {rule}\n"));
            }
        }
        chains.clear();
    };
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            flush(&mut out, &table, &mut chains);
            table = name.to_owned();
        } else if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split_whitespace().next().unwrap_or_default();
            if name.starts_with("KUBE-") {
                chains.entry(name.to_owned()).or_default();
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, args) = rule.split_once(' ').unwrap_or((rule, ""));
            if chain.starts_with("KUBE-") || args.contains("-j KUBE-") {
                chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(args.to_owned());
            }
        }
    }
    flush(&mut out, &table, &mut chains);
    out
}

/// The part of a whole `iptables-save` output that holds `table` (from its `*table` line to
/// its `COMMIT`), empty when the output has no such table.
pub(crate) fn table_of(saved: &str, table: Table) -> String {
    let header = format!("*{}", table.name());
    let mut out = String::new();
    let mut inside = false;
    for line in saved.lines() {
        if line == header {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line == "COMMIT" {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chains_and_rules() {
        let saved = SavedTable::parse(
            "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [4:240]\n:KUBE-SVC-A - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SVC-A -j KUBE-SEP-B\nCOMMIT\n",
        );
        assert!(saved.has_chain("KUBE-SVC-A"));
        assert_eq!(saved.rules("PREROUTING"), ["-j KUBE-SERVICES"]);
        assert!(saved.rules("KUBE-SEP-B").is_empty());
    }

    #[test]
    fn normalizing_sorts_the_shared_chains_and_keeps_the_node_port_jump_last() {
        let a = "*nat\n:KUBE-SERVICES - [0:0]\n:OTHER - [0:0]\n-A KUBE-SERVICES -d 1.1.1.2/32 -j KUBE-SVC-B\n-A KUBE-SERVICES -d 1.1.1.1/32 -j KUBE-SVC-A\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n-A OTHER -j ACCEPT\nCOMMIT\n";
        let b = "*nat\n:KUBE-SERVICES - [3:4]\n-A KUBE-SERVICES -d 1.1.1.1/32 -j KUBE-SVC-A\n-A KUBE-SERVICES -d 1.1.1.2/32 -j KUBE-SVC-B\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n";
        assert_eq!(normalize(a), normalize(b));
        assert!(normalize(a).ends_with("-j KUBE-NODEPORTS\n"));
        assert!(!normalize(a).contains("OTHER"));
    }

    #[test]
    fn one_table_of_a_whole_save() {
        let whole = "# Generated\n*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n";
        assert_eq!(
            table_of(whole, Table::Nat),
            "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n"
        );
        assert_eq!(table_of(whole, Table::Filter), "");
    }
}
