//! The conntrack settings upstream kube-proxy applies at start (its `conntrack` section):
//! table size from `maxPerCore`/`min`, and TCP and UDP timeouts. A zero leaves the kernel's
//! value; failures are logged, as upstream, and never stop the proxy.
//!
//! `nf_conntrack_max` and the hash size are global to the machine (writable only from the
//! initial network namespace); the timeouts and `tcp_be_liberal` belong to the namespace the
//! proxy runs in. Under `--netns` the proxy programs a namespace that is not the machine's,
//! so it leaves the global ones alone.

use std::path::{Path, PathBuf};

use crate::options::ConntrackOptions;

const CONNTRACK: &str = "/proc/sys/net/netfilter";
const HASH_SIZE: &str = "/sys/module/nf_conntrack/parameters/hashsize";

/// Whose settings the proxy may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The proxy runs in the node's own namespace: the machine is its node.
    Machine,
    /// `--netns`: only the settings that belong to that namespace.
    NamespaceOnly,
}

fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The writes `options` ask for, given the current values `read` reports: the table size
/// only ever grows, and the hash table is sized for it first, as upstream does.
fn plan(
    options: &ConntrackOptions,
    scope: Scope,
    cores: usize,
    read: impl Fn(&Path) -> Option<u64>,
) -> Vec<(PathBuf, u64)> {
    let conntrack = Path::new(CONNTRACK);
    let mut writes = Vec::new();
    if scope == Scope::Machine && options.max_per_core > 0 {
        let wanted = (u64::from(options.max_per_core) * cores as u64).max(u64::from(options.min));
        let max_path = conntrack.join("nf_conntrack_max");
        if read(&max_path).is_none_or(|current| current < wanted) {
            let hash_path = Path::new(HASH_SIZE);
            if read(hash_path).is_none_or(|current| current < wanted / 4) {
                writes.push((hash_path.to_owned(), wanted / 4));
            }
            writes.push((max_path, wanted));
        }
    }
    for (name, value) in [
        (
            "nf_conntrack_tcp_timeout_established",
            options.tcp_established_timeout,
        ),
        (
            "nf_conntrack_tcp_timeout_close_wait",
            options.tcp_close_wait_timeout,
        ),
        ("nf_conntrack_udp_timeout", options.udp_timeout),
        (
            "nf_conntrack_udp_timeout_stream",
            options.udp_stream_timeout,
        ),
    ] {
        if !value.is_zero() {
            writes.push((conntrack.join(name), value.as_secs()));
        }
    }
    if options.tcp_be_liberal {
        writes.push((conntrack.join("nf_conntrack_tcp_be_liberal"), 1));
    }
    writes
}

/// Applies `options` to the kernel, within `scope`.
pub(crate) fn apply_conntrack(options: &ConntrackOptions, scope: Scope) {
    if scope == Scope::NamespaceOnly && options.max_per_core > 0 {
        tracing::info!(
            "--netns: leaving the machine-wide conntrack table and hash sizes alone (conntrack.maxPerCore and min have no effect)"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (path, value) in plan(options, scope, cores, read) {
        match std::fs::write(&path, value.to_string()) {
            Ok(()) => tracing::info!(setting = %path.display(), value, "set"),
            Err(error) => tracing::warn!(setting = %path.display(), value, %error, "cannot set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn options() -> ConntrackOptions {
        ConntrackOptions {
            max_per_core: 32768,
            min: 131_072,
            tcp_established_timeout: Duration::from_secs(86_400),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: true,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }

    #[test]
    fn the_node_namespace_raises_the_table_and_sizes_the_hash_first() {
        let writes = plan(&options(), Scope::Machine, 8, |_| Some(1000));
        let paths: Vec<_> = writes
            .iter()
            .map(|(p, v)| (p.to_str().unwrap(), *v))
            .collect();
        assert_eq!(
            paths[..2],
            [
                (HASH_SIZE, 65_536),
                ("/proc/sys/net/netfilter/nf_conntrack_max", 262_144)
            ]
        );
    }

    #[test]
    fn under_netns_nothing_machine_wide_is_written() {
        let writes = plan(&options(), Scope::NamespaceOnly, 8, |_| Some(1000));
        assert!(
            !writes.is_empty(),
            "the namespace's own settings are applied"
        );
        for (path, _) in &writes {
            let path = path.to_str().unwrap();
            assert!(
                !path.starts_with("/sys/") && !path.ends_with("nf_conntrack_max"),
                "{path} is machine-wide"
            );
        }
    }

    #[test]
    fn a_big_enough_table_is_left_as_it_is() {
        let writes = plan(&options(), Scope::Machine, 8, |_| Some(1 << 20));
        assert!(writes.iter().all(|(p, _)| !p.ends_with("nf_conntrack_max")));
    }
}
