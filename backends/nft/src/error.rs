//! Errors of the nftables backend, each with the kernel's or nft's own words.

use std::time::Duration;

use kproxy_netlink::{KernelError, NetlinkError};

/// nft or the kernel could not be reached, or refused a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The `nft` (or `ip`) binary could not be started or talked to.
    #[error("could not run nft (is the nftables package installed?): {source}")]
    Spawn {
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// nft refused the input; nothing of it was applied.
    #[error("nft refused the transaction: {message}")]
    Refused {
        /// What nft was run with: its arguments and the size of its input, never the input
        /// itself (a full sync's is about 100 MB at 100,000 Services). nft's own message
        /// quotes the line it refused.
        command: String,
        /// What nft printed on stderr (its first lines).
        message: String,
    },
    /// nft did not finish in time; it was killed, and the kernel applied nothing of it
    /// unless nft had already sent its batch.
    #[error("nft did not finish within {waited:?}")]
    NftTimeout {
        /// How long it ran.
        waited: Duration,
    },
    /// The kernel refused one object of a netlink batch; nothing of the batch was applied.
    #[error("the kernel refused `{object}`: {source}")]
    Kernel {
        /// The refused operation, in nft syntax.
        object: String,
        /// The kernel's errno and message.
        #[source]
        source: KernelError,
    },
    /// The netlink socket failed: it could not be opened in the namespace, a write failed,
    /// the kernel did not answer in time or its answers were lost.
    #[error("nf_tables netlink: {source}")]
    Netlink {
        /// What went wrong.
        #[source]
        source: NetlinkError,
    },
}

impl NftError {
    /// Whether the error says a table, chain, set or element does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            NftError::Refused { message, .. } => message.contains("No such file or directory"),
            NftError::Kernel { source, .. } => crate::netlink::is_not_found(source),
            _ => false,
        }
    }

    /// What nft was run with when it refused (arguments and input size), if it refused.
    pub fn command(&self) -> Option<&str> {
        match self {
            NftError::Refused { command, .. } => Some(command),
            _ => None,
        }
    }
}

impl From<NetlinkError> for NftError {
    fn from(source: NetlinkError) -> Self {
        NftError::Netlink { source }
    }
}
