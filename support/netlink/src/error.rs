//! What can go wrong on a netlink socket, with the system's or the kernel's own words.

use std::fmt;
use std::io;
use std::time::Duration;

/// An error answer of the kernel to one request: its errno and, where the kernel gives them
/// (extended acknowledgements), its message and the attribute it blamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The errno, positive (`ENOENT` is 2).
    pub errno: i32,
    /// The kernel's extended-ack message, if any.
    pub message: Option<String>,
    /// The offset, from the start of the refused message, of the attribute the kernel blamed.
    pub offset: Option<u32>,
}

impl KernelError {
    /// The errno as an I/O error (for its description).
    pub fn io(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.io())?;
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// A netlink request could not be made or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The named network namespace could not be entered, or the thread was not in it
    /// afterwards.
    #[error("entering network namespace {name}: {source}")]
    Namespace {
        /// The namespace's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A system call on the socket failed (`EPERM` without `CAP_NET_ADMIN`,
    /// `EPROTONOSUPPORT` without the kernel module, ...).
    #[error("netlink socket: {context}: {source}")]
    Socket {
        /// The call (`socket`, `bind`, `send`, `recv`, `setsockopt(SO_SNDBUFFORCE)`).
        context: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// No (complete) answer came within the socket's timeout.
    #[error("no answer from the kernel within {waited:?} ({context})")]
    Timeout {
        /// How long the socket waited.
        waited: Duration,
        /// What was awaited.
        context: &'static str,
    },
    /// The kernel dropped answers because the receive buffer was full (`ENOBUFS`); what the
    /// dropped answers said is unknown.
    #[error("the kernel's answers overran the socket's receive buffer (ENOBUFS)")]
    Overrun,
    /// The kernel refused a request.
    #[error("the kernel refused the request: {0}")]
    Kernel(#[source] KernelError),
    /// An attribute or nest would not fit netlink's 16-bit length; nothing was sent.
    #[error("netlink attribute {attribute} would be {len} bytes, more than a netlink length holds")]
    TooLong {
        /// The attribute type.
        attribute: u16,
        /// Its length.
        len: usize,
    },
    /// An answer could not be parsed.
    #[error("malformed netlink answer: {0}")]
    Malformed(String),
}

impl NetlinkError {
    pub(crate) fn socket(context: &'static str, source: io::Error) -> Self {
        NetlinkError::Socket { context, source }
    }
}
