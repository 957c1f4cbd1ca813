//! Access to the kernel's nftables: a small trait, and its real implementation that drives
//! the `nft` command.

use std::process::Stdio;

use async_trait::async_trait;
use kproxy_core::IpFamily;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::NftError;
use crate::names::{TABLE, family_keyword};
use crate::transaction::Transaction;

/// What the backend needs from nftables.
#[async_trait]
pub trait NftKernel: Send {
    /// Applies transactions (one per table) together and atomically: on error nothing of
    /// them took effect.
    ///
    /// # Errors
    ///
    /// When nft or the kernel refused the transactions.
    async fn apply_all(&mut self, transactions: &[Transaction]) -> Result<(), NftError>;

    /// The table of `family` as `nft list table` prints it; empty when there is none.
    ///
    /// # Errors
    ///
    /// When nft could not be run or failed otherwise.
    async fn list(&mut self, family: IpFamily) -> Result<String, NftError>;
}

/// The real kernel. Transactions made only of element, chain and DNAT-rule operations (what
/// incremental syncs write) go straight to the kernel as one nf_tables netlink batch; all
/// others are one `nft -f -` run. Either way the kernel applies them as one batch, all or
/// nothing.
#[derive(Debug, Clone)]
pub struct NftCommand {
    netns: Option<String>,
    netlink: bool,
}

impl NftCommand {
    /// Programs the network namespace this process runs in.
    pub fn current_netns() -> Self {
        Self {
            netns: None,
            netlink: true,
        }
    }

    /// Programs the named network namespace (`ip netns exec NAME nft ...`).
    pub fn in_netns(name: &str) -> Self {
        Self {
            netns: Some(name.to_owned()),
            netlink: true,
        }
    }

    /// Sends everything through `nft`, never netlink directly (to compare the two paths).
    pub fn nft_only(mut self) -> Self {
        self.netlink = false;
        self
    }

    /// Sends a batch over an nf_tables netlink socket opened in the target namespace, on a
    /// thread of its own so that entering the namespace affects nothing else.
    async fn send_netlink(
        &self,
        batch: Vec<u8>,
        acks: usize,
        text: String,
    ) -> Result<(), NftError> {
        let netns = self.netns.clone();
        let result = tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                scope
                    .spawn(move || -> std::io::Result<()> {
                        if let Some(netns) = netns {
                            let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
                            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                                .map_err(std::io::Error::from)?;
                        }
                        let mut socket =
                            netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
                        socket.bind_auto()?;
                        socket.send(&batch, 0)?;
                        crate::netlink::read_acks(&socket, acks)
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("netlink thread panicked")))
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        result.map_err(|error| match error.raw_os_error() {
            Some(_) => NftError::Refused {
                command: text,
                message: format!("netlink: {error}"),
            },
            None => NftError::Spawn { source: error },
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "nft"]);
                command
            }
            None => Command::new("nft"),
        };
        command.args(args).kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str], input: Option<String>) -> Result<String, NftError> {
        let mut command = self.command(args);
        command.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|source| NftError::Spawn { source })?;
        if let (Some(input), Some(mut stdin)) = (input.as_ref(), child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|source| NftError::Spawn { source })?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| NftError::Spawn { source })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(NftError::Refused {
                command: input.unwrap_or_else(|| format!("nft {}", args.join(" "))),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

#[async_trait]
impl NftKernel for NftCommand {
    async fn apply_all(&mut self, transactions: &[Transaction]) -> Result<(), NftError> {
        let input: String = transactions.iter().map(ToString::to_string).collect();
        if input.is_empty() {
            return Ok(());
        }
        if self.netlink
            && let Some((batch, acks)) = crate::netlink::encode(transactions, 1)
        {
            return self.send_netlink(batch, acks, input).await;
        }
        // One `nft -f` run is one netlink batch: both tables change together or not at all.
        self.run(&["-f", "-"], Some(input)).await.map(drop)
    }

    async fn list(&mut self, family: IpFamily) -> Result<String, NftError> {
        match self
            .run(&["list", "table", family_keyword(family), TABLE], None)
            .await
        {
            Ok(listing) => Ok(listing),
            Err(error) if error.is_not_found() => Ok(String::new()),
            Err(error) => Err(error),
        }
    }
}
