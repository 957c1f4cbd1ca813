//! Errors of the iptables backend, each with the tool's own words.

use std::time::Duration;

/// An iptables tool could not be run, or refused its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IptablesError {
    /// The tool (or `ip`, for another namespace) could not be started.
    #[error("could not run {tool} (is the iptables package installed?): {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The tool refused; for a restore, nothing of the refused table was applied.
    #[error("{command} failed: {message}")]
    Refused {
        /// What was run: the tool, its arguments and the size of its input, never the input
        /// itself (tens of megabytes at 10,000 Services). The tool's message names the line
        /// it refused.
        command: String,
        /// What it printed on stderr (its first lines).
        message: String,
    },
    /// The tool did not finish in time and was killed.
    #[error("{tool} did not finish within {waited:?}")]
    Timeout {
        /// The tool.
        tool: String,
        /// How long it ran.
        waited: Duration,
    },
}
