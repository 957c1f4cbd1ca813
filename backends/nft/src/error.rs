//! Errors of the nftables backend.

/// nft could not be run, or refused a transaction.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` (or `ip`) binary could not be started or talked to.
    #[error("could not run nft (is the nftables package installed?): {source}")]
    Spawn {
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// nft or the kernel refused the input; nothing of it was applied.
    #[error("nft refused the transaction: {message}")]
    Refused {
        /// The exact input nft was given.
        command: String,
        /// What nft printed on stderr.
        message: String,
    },
}

impl NftError {
    /// Whether the error says a table, chain, set or element does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NftError::Refused { message, .. } if message.contains("No such file or directory"))
    }

    /// The input that was refused, if any.
    pub fn command(&self) -> Option<&str> {
        match self {
            NftError::Refused { command, .. } => Some(command),
            NftError::Spawn { .. } => None,
        }
    }
}
