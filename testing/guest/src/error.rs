//! The guest kit's error type: every reason a guest cannot start or did not finish, naming what
//! is missing and how to get it.

use std::path::PathBuf;
use std::time::Duration;

/// How to get the guest's kernel and modules.
pub(crate) const INSTALL_UML: &str = "run scripts/install-deps.sh (it unpacks Debian's \
     user-mode-linux package into the build area, target/uml/), or `apt-get install -y \
     user-mode-linux`, or point KPROXY_UML_ROOT at a folder where the package was unpacked \
     with `dpkg -x`";

/// Everything that can go wrong preparing or running a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `linux.uml` was found.
    #[error("the User-Mode Linux kernel linux.uml is missing (looked for {}): {INSTALL_UML}", list(.searched))]
    MissingKernel {
        /// Every path that was tried.
        searched: Vec<PathBuf>,
    },
    /// The kernel was found but not the modules of its version.
    #[error(
        "the modules of the UML kernel {version} are missing (no {}): {INSTALL_UML}",
        .dir.display()
    )]
    MissingModules {
        /// The kernel's version (`linux.uml --version`).
        version: String,
        /// The folder that should hold them (`.../usr/lib/uml/modules/VERSION`).
        dir: PathBuf,
    },
    /// A host program the kit needs is not installed.
    #[error("`{tool}` is missing (not found on PATH): {hint}")]
    MissingTool {
        /// The program.
        tool: String,
        /// Where it comes from, e.g. `apt-get install -y kmod`.
        hint: String,
    },
    /// A path the guest must see cannot be used (e.g. it is under /tmp, which the guest covers
    /// with its own tmpfs, or it cannot be written on a kernel command line).
    #[error("{} cannot be used by the guest: {reason}", .path.display())]
    UnusablePath {
        /// The path.
        path: PathBuf,
        /// Why not, and what to do.
        reason: String,
    },
    /// An argument cannot be passed on the kernel command line.
    #[error("argument {arg:?} cannot be passed to the guest: {reason}")]
    InvalidArgument {
        /// The argument.
        arg: String,
        /// Why not.
        reason: String,
    },
    /// A host command the kit runs failed (building the ptrace shim, asking the kernel's
    /// version).
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The guest did not power off in time and was killed.
    #[error(
        "the guest did not finish within {timeout:?} and was killed; its results folder {} \
         is kept; program stdout so far:\n{stdout}\nconsole (last lines):\n{console}",
        .run_dir.display()
    )]
    TimedOut {
        /// The time it had.
        timeout: Duration,
        /// The run's results folder (kept for inspection).
        run_dir: PathBuf,
        /// What the program had written to its stdout (last lines).
        stdout: String,
        /// The guest's console (last lines).
        console: String,
    },
    /// The guest stopped without writing the program's exit status: it did not boot, its init
    /// failed, or it crashed.
    #[error(
        "the guest stopped ({exit}) without writing the program's exit status to {}: it did \
         not boot or its init failed; console (last lines):\n{console}",
        .run_dir.display()
    )]
    NoStatus {
        /// How linux.uml ended.
        exit: String,
        /// The run's results folder (kept for inspection).
        run_dir: PathBuf,
        /// The guest's console, stdout and stderr of linux.uml (last lines).
        console: String,
    },
}

/// The result type of the kit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
