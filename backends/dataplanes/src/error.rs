//! The facade's error type.

/// Why a mode cannot be built, or leftovers cannot be removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mode is not one this proxy knows.
    #[error("unknown proxy mode {0:?}: must be nftables, iptables or ipvs")]
    UnknownMode(String),
    /// The mode exists upstream but not in this build.
    #[error(
        "proxy mode {0} is not built into this binary (not implemented yet, or its Cargo feature is off)"
    )]
    NotBuilt(String),
    /// A tool the mode drives is not installed.
    #[error("`{tool}` is not installed (not found on PATH): install the Debian package {package}")]
    MissingTool {
        /// The program.
        tool: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A tool ran and failed; the message is its own.
    #[error("`{command}` failed ({status}): {stderr}")]
    Kernel {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A tool could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The nftables backend's own cleanup failed.
    #[error("removing the nftables tables failed: {0}")]
    Nftables(String),
    /// The IPVS mode's settings cannot be programmed (an unknown scheduler, a masquerade bit
    /// its marks use); nothing was touched.
    #[error("invalid IPVS mode settings: {0}")]
    IpvsSettings(String),
    /// The kernel cannot run the IPVS mode (no IPVS: the `ip_vs` module is not loaded or not
    /// built), or its IPVS answered with an error; the message is the backend's, with its
    /// causes.
    #[error("{0}")]
    IpvsKernel(String),
    /// The IPVS mode's own cleanup failed.
    #[error("removing the IPVS mode's leftovers failed: {0}")]
    Ipvs(String),
}

impl Error {
    /// Whether a tool is missing (on this host that kind of object cannot exist through it).
    pub fn is_missing_tool(&self) -> bool {
        matches!(self, Error::MissingTool { .. })
    }
}
