//! Errors of the IPVS backend, each with the kernel's or the tool's own words.

use std::time::Duration;

use kproxy_iptables::IptablesError;
use kproxy_netlink::NetlinkError;

/// The kernel refused a request of this mode, or a tool could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpvsError {
    /// The kernel has no IPVS: the generic-netlink family `IPVS` does not resolve.
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found; load the ip_vs module): {0}"
    )]
    NoIpvs(#[source] NetlinkError),
    /// A netlink request failed; `what` names the request and the object (`add real server
    /// 10.1.0.5:8080 to TCP 172.30.0.10:80`).
    #[error("{what}: {source}")]
    Netlink {
        /// The request and its object.
        what: String,
        /// The kernel's answer (errno and extended-ack message) or the socket's error.
        #[source]
        source: NetlinkError,
    },
    /// ipset refused an entry with one of its own error codes (above 4096, which the system
    /// has no text for); `reason` is what the `ipset` tool says of the code.
    #[error("{what}: ipset error {code}: {reason}")]
    IpsetRefused {
        /// The change and its set (`add 10.0.0.1 to ipset KUBE-CLUSTER-IP`).
        what: String,
        /// ipset's error code (`IPSET_ERR_*`).
        code: i32,
        /// What it means.
        reason: String,
    },
    /// A tool (`ipset`, `sysctl`, `ip`) could not be started.
    #[error("could not run {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A tool refused.
    #[error("{command} failed: {message}")]
    Refused {
        /// What was run (never its whole input).
        command: String,
        /// What it printed on stderr.
        message: String,
    },
    /// A tool did not finish in time and was killed.
    #[error("{tool} did not finish within {waited:?}")]
    Timeout {
        /// The tool.
        tool: String,
        /// How long it ran.
        waited: Duration,
    },
    /// The kernel's answer made no sense.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The helper rules (iptables) could not be written.
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    /// The configuration cannot be programmed.
    #[error("{0}")]
    Config(String),
}
