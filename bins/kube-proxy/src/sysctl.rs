//! The conntrack settings upstream kube-proxy applies at start (its `conntrack` section):
//! table size from `maxPerCore`/`min`, and TCP and UDP timeouts. A zero leaves the kernel's
//! value; failures are logged, as upstream, and never stop the proxy.
//!
//! `nf_conntrack_max` and the hash size are global to the machine (writable only from the
//! initial network namespace); the timeouts belong to the namespace the proxy runs in.

use std::path::Path;
use std::time::Duration;

use crate::options::ConntrackOptions;

const CONNTRACK: &str = "/proc/sys/net/netfilter";

fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write(path: &Path, value: u64) {
    match std::fs::write(path, value.to_string()) {
        Ok(()) => tracing::info!(setting = %path.display(), value, "set"),
        Err(error) => tracing::warn!(setting = %path.display(), value, %error, "cannot set"),
    }
}

fn timeout(name: &str, value: Duration) {
    if !value.is_zero() {
        write(&Path::new(CONNTRACK).join(name), value.as_secs());
    }
}

/// Applies `options` to the kernel.
pub(crate) fn apply_conntrack(options: &ConntrackOptions) {
    if options.max_per_core > 0 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = (u64::from(options.max_per_core) * cores as u64).max(u64::from(options.min));
        let max_path = Path::new(CONNTRACK).join("nf_conntrack_max");
        // Like upstream: only ever raise it, and size the hash table for it first.
        if read(&max_path).is_none_or(|current| current < wanted) {
            let hash_path = Path::new("/sys/module/nf_conntrack/parameters/hashsize");
            if read(hash_path).is_none_or(|current| current < wanted / 4) {
                write(hash_path, wanted / 4);
            }
            write(&max_path, wanted);
        }
    }
    timeout(
        "nf_conntrack_tcp_timeout_established",
        options.tcp_established_timeout,
    );
    timeout(
        "nf_conntrack_tcp_timeout_close_wait",
        options.tcp_close_wait_timeout,
    );
    timeout("nf_conntrack_udp_timeout", options.udp_timeout);
    timeout(
        "nf_conntrack_udp_timeout_stream",
        options.udp_stream_timeout,
    );
    if options.tcp_be_liberal {
        write(&Path::new(CONNTRACK).join("nf_conntrack_tcp_be_liberal"), 1);
    }
}
