//! The test kit's error type.

use std::path::PathBuf;

/// Everything that can go wrong building a world, probing it or reading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kit needs root to create network namespaces.
    #[error("not running as root (euid {euid}): network namespaces need root; run as root")]
    NotRoot {
        /// The effective user id.
        euid: u32,
    },
    /// A program the kit runs is not installed.
    #[error("`{tool}` is missing (not found on PATH): install it ({hint})")]
    MissingTool {
        /// The program.
        tool: String,
        /// Where it comes from, e.g. `apt-get install -y iproute2`.
        hint: String,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel has no SCTP support, so SCTP servers and probes cannot exist.
    #[error(
        "the kernel lacks SCTP support (socket(..., IPPROTO_SCTP) failed: {0}); SCTP probes cannot run on this machine"
    )]
    SctpUnsupported(String),
    /// A scenario file could not be read or is malformed.
    #[error("{}: {message}", path.display())]
    Scenario {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A world cannot be built as asked.
    #[error("cannot build the world: {0}")]
    World(String),
    /// The backend is unknown or not built into this binary.
    #[error("backend {0}")]
    Backend(String),
    /// The runner was asked to stop (Ctrl-C) while it was creating namespaces.
    #[error("shutting down: no new namespaces are created")]
    ShuttingDown,
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the error means this machine cannot run kernel tests at all (not root, a tool
    /// missing), as opposed to a failure of the thing under test.
    pub fn is_environment(&self) -> bool {
        matches!(self, Error::NotRoot { .. } | Error::MissingTool { .. })
    }
}

/// The kit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
