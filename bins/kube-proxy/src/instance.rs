//! One proxy per network namespace. Two proxies programming the same namespace would each
//! undo the other's rules on every sync without a word; the second one refuses to start.
//!
//! The lock is an abstract Unix socket: abstract socket names belong to the network namespace,
//! and the kernel releases one when its process dies, however it dies (no stale lock files
//! after a SIGKILL).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

/// The abstract socket name this proxy holds in its namespace.
const NAME: &[u8] = b"kube-proxy-rs";

/// Held for as long as the proxy runs.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _listener: UnixListener,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another proxy holds it.
    #[error(
        "another kube-proxy-rs already runs in this network namespace{}; two would overwrite each other's rules, so this one stops",
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Held {
        /// The other proxy's process, when the kernel tells.
        pid: Option<i32>,
    },
    /// The socket could not be made.
    #[error("cannot take the per-namespace lock (abstract socket @kube-proxy-rs): {0}")]
    Io(#[from] std::io::Error),
}

/// Takes this namespace's lock.
///
/// # Errors
///
/// [`LockError::Held`] when another proxy runs here.
pub(crate) fn lock() -> Result<InstanceLock, LockError> {
    let address = SocketAddr::from_abstract_name(NAME)?;
    match UnixListener::bind_addr(&address) {
        Ok(listener) => Ok(InstanceLock {
            _listener: listener,
        }),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(LockError::Held {
            pid: holder(&address),
        }),
        Err(error) => Err(error.into()),
    }
}

/// The process listening on `address`, from the kernel's peer credentials.
fn holder(address: &SocketAddr) -> Option<i32> {
    let stream = UnixStream::connect_addr(address).ok()?;
    nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|credentials| credentials.pid())
}
