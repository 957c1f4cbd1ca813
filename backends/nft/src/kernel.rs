//! Access to the kernel's nftables: a small trait, and its real implementation that drives
//! nf_tables netlink directly for incremental syncs and the `nft` command for the rest.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kproxy_core::IpFamily;
use kproxy_netlink::{
    KernelError, MessageBuffer, NETLINK_NETFILTER, Namespace, NetlinkError, NetlinkSocket, Reply,
};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::NftError;
use crate::integrity::{Probe, TableFacts};
use crate::names::{TABLE, family_keyword};
use crate::netlink::{self as nl, Batch};
use crate::transaction::{Op, Transaction};

/// How long one `nft` run may take: a full sync of 100,000 Services takes well under a
/// minute.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(300);

/// How many lines of nft's stderr an error keeps.
const STDERR_LINES: usize = 20;

/// What the backend needs from nftables.
#[async_trait]
pub trait NftKernel: Send {
    /// Applies transactions (one per table) together and atomically: on error nothing of
    /// them took effect.
    ///
    /// # Errors
    ///
    /// When nft or the kernel refused the transactions, naming what was refused.
    async fn apply_all(&mut self, transactions: &[Transaction]) -> Result<(), NftError>;

    /// The table of `family` as `nft list table` prints it; empty when there is none.
    ///
    /// # Errors
    ///
    /// When nft could not be run or failed otherwise.
    async fn list(&mut self, family: IpFamily) -> Result<String, NftError>;

    /// The ruleset's generation: a number the kernel changes at every committed batch of
    /// anyone in the namespace. `None` when the kernel access cannot tell (the drift check
    /// then inspects every time).
    ///
    /// # Errors
    ///
    /// When the kernel could not be asked.
    async fn generation(&mut self) -> Result<Option<u32>, NftError> {
        Ok(None)
    }

    /// Answers `probe` about the table of `family`; `None` when there is no such table.
    ///
    /// # Errors
    ///
    /// When the kernel could not be asked.
    async fn inspect(
        &mut self,
        family: IpFamily,
        probe: &Probe,
    ) -> Result<Option<TableFacts>, NftError>;

    /// How many incremental transactions went through `nft` because netlink could not
    /// encode them (see the debug log for why).
    fn fallbacks(&self) -> u64 {
        0
    }
}

/// The real kernel. Transactions made only of the operations incremental syncs write
/// (elements, endpoint maps, regular chains, verdict and DNAT rules) go straight to the
/// kernel as one nf_tables netlink batch; all others are one `nft -f -` run. Either way the
/// kernel applies them as one batch, all or nothing.
#[derive(Debug, Clone)]
pub struct NftCommand {
    netns: Option<String>,
    netlink: bool,
    timeout: Duration,
    nft_timeout: Duration,
    peer: Option<u32>,
    socket: Arc<Mutex<Option<NetlinkSocket>>>,
    fallbacks: Arc<AtomicU64>,
}

impl NftCommand {
    fn new(netns: Option<String>) -> Self {
        Self {
            netns,
            netlink: true,
            timeout: kproxy_netlink::DEFAULT_TIMEOUT,
            nft_timeout: NFT_TIMEOUT,
            peer: None,
            socket: Arc::new(Mutex::new(None)),
            fallbacks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Programs the network namespace this process runs in.
    pub fn current_netns() -> Self {
        Self::new(None)
    }

    /// Programs the named network namespace (`/run/netns/NAME`; `ip netns exec NAME nft`).
    pub fn in_netns(name: &str) -> Self {
        Self::new(Some(name.to_owned()))
    }

    /// Sends everything through `nft`, never netlink directly (to compare the two paths).
    pub fn nft_only(mut self) -> Self {
        self.netlink = false;
        self
    }

    /// Sets how long a netlink request waits for the kernel's answer (default
    /// [`kproxy_netlink::DEFAULT_TIMEOUT`]) and how long an `nft` run may take (default
    /// [`NFT_TIMEOUT`]).
    pub fn with_timeouts(mut self, netlink: Duration, nft: Duration) -> Self {
        self.timeout = netlink;
        self.nft_timeout = nft;
        self
    }

    /// Sends netlink requests to the netlink port `port` instead of the kernel: a test's
    /// stand-in for a kernel that never answers.
    pub fn with_netlink_peer(mut self, port: u32) -> Self {
        self.peer = Some(port);
        self
    }

    /// Runs `f` on the namespace's netlink socket, opened on first use, in tokio's blocking
    /// pool. A socket whose answers timed out or were lost is dropped, so that a late answer
    /// is never read as the answer to a later request.
    async fn on_socket<T, F>(&self, f: F) -> Result<T, NftError>
    where
        T: Send + 'static,
        F: FnOnce(&mut NetlinkSocket) -> Result<T, NftError> + Send + 'static,
    {
        let slot = Arc::clone(&self.socket);
        let namespace = Namespace::from_option(self.netns.as_deref());
        let (timeout, peer) = (self.timeout, self.peer);
        tokio::task::spawn_blocking(move || {
            let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.is_none() {
                let mut socket = NetlinkSocket::open(NETLINK_NETFILTER, &namespace)?;
                socket.set_timeout(timeout);
                if let Some(port) = peer {
                    socket.connect_to_port(port)?;
                }
                *guard = Some(socket);
            }
            let Some(socket) = guard.as_mut() else {
                unreachable!("the socket was just opened")
            };
            let result = f(socket);
            if matches!(result, Err(NftError::Netlink { .. })) {
                *guard = None;
            }
            result
        })
        .await
        .map_err(|error| NftError::Netlink {
            source: NetlinkError::Socket {
                context: "the blocking netlink task",
                source: std::io::Error::other(error.to_string()),
            },
        })?
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

    /// Runs nft with `args`, writing `input`'s commands to its standard input piece by piece
    /// as nft reads them: the whole input is never held at once (about 100 MB at 100,000
    /// Services), and rendering overlaps nft's parsing.
    async fn run(&self, args: &[&str], input: Option<&[Transaction]>) -> Result<String, NftError> {
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
        let mut sent = InputSize::default();
        let run = async {
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                let mut chunk = String::with_capacity(INPUT_CHUNK + INPUT_CHUNK / 4);
                'input: for transaction in input {
                    let mut next = 0;
                    while next < transaction.ops().len() {
                        chunk.clear();
                        next = transaction
                            .write_commands(&mut chunk, next, INPUT_CHUNK)
                            .map_err(|_| NftError::Spawn {
                                source: std::io::Error::other("rendering the nft input failed"),
                            })?;
                        sent.add(&chunk);
                        // A write error means nft stopped reading: its exit status and
                        // message below say why.
                        if stdin.write_all(chunk.as_bytes()).await.is_err() {
                            break 'input;
                        }
                    }
                }
                drop(stdin);
            }
            child
                .wait_with_output()
                .await
                .map_err(|source| NftError::Spawn { source })
        };
        // On timeout the child is dropped, which kills it.
        let output = tokio::time::timeout(self.nft_timeout, run)
            .await
            .map_err(|_| NftError::NftTimeout {
                waited: self.nft_timeout,
            })??;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let mut message: Vec<&str> = stderr.trim().lines().take(STDERR_LINES).collect();
            if stderr.trim().lines().count() > STDERR_LINES {
                message.push("…");
            }
            Err(NftError::Refused {
                command: run_summary(args, input.map(|_| sent)),
                message: message.join("\n"),
            })
        }
    }
}

/// How much of its input nft is handed at a time.
const INPUT_CHUNK: usize = 1 << 20;

/// How much input an nft run was given.
#[derive(Debug, Clone, Copy, Default)]
struct InputSize {
    lines: usize,
    bytes: usize,
}

impl InputSize {
    fn add(&mut self, text: &str) {
        self.lines += text.bytes().filter(|b| *b == b'\n').count();
        self.bytes += text.len();
    }
}

/// How an nft run is named in errors and logs: the arguments and the input's size, never the
/// input itself.
fn run_summary(args: &[&str], input: Option<InputSize>) -> String {
    match input {
        Some(size) => format!(
            "nft {} with {} lines ({} bytes) of input",
            args.join(" "),
            size.lines,
            size.bytes
        ),
        None => format!("nft {}", args.join(" ")),
    }
}

/// Sends one request and hands its answers to `on_reply` until the kernel's final word on it:
/// the acknowledgement or error, or the end of a dump. Returns that word.
fn exchange(
    socket: &mut NetlinkSocket,
    request: impl FnOnce(u32) -> MessageBuffer,
    context: &'static str,
    on_reply: impl FnMut(&Reply<'_>),
) -> Result<Result<(), KernelError>, NftError> {
    let seq = socket.reserve(1);
    exchange_built(socket, seq, &request(seq), context, on_reply)
}

/// [`exchange`] of a request already built with sequence number `seq`.
fn exchange_built(
    socket: &mut NetlinkSocket,
    seq: u32,
    request: &MessageBuffer,
    context: &'static str,
    mut on_reply: impl FnMut(&Reply<'_>),
) -> Result<Result<(), KernelError>, NftError> {
    socket.send(request.bytes())?;
    let mut outcome = Ok(());
    socket.receive_until(context, |reply| {
        if reply.seq != seq {
            return Ok(false);
        }
        if let Some(status) = reply.status() {
            outcome = status;
            return Ok(true);
        }
        if nl::is_done(&reply) {
            return Ok(true);
        }
        on_reply(&reply);
        Ok(false)
    })?;
    Ok(outcome)
}

fn generation(socket: &mut NetlinkSocket) -> Result<u32, NftError> {
    let mut generation = None;
    let outcome = exchange(
        socket,
        nl::generation_request,
        "the ruleset generation",
        |reply| {
            generation = generation.or(nl::generation_of(reply));
        },
    )?;
    outcome.map_err(|source| NftError::Kernel {
        object: "get the ruleset generation".to_owned(),
        source,
    })?;
    generation.ok_or_else(|| {
        NetlinkError::Malformed("no generation in the answer to GETGEN".to_owned()).into()
    })
}

/// Sends `batch` in one write, then a generation request as a barrier: the kernel handles
/// a batch while it is written, so once the barrier is answered every error of the batch has
/// been read. Messages carry no acknowledgement request of their own: errors are answered
/// anyway, and hundreds of thousands of acknowledgements would overrun any receive buffer.
fn send_batch(
    socket: &mut NetlinkSocket,
    batch: &Batch,
    transactions: &[Transaction],
) -> Result<(), NftError> {
    socket.send(batch.messages.bytes())?;
    let barrier = socket.reserve(1);
    socket.send(nl::generation_request(barrier).bytes())?;
    let mut first_error: Option<(u32, KernelError)> = None;
    let received = socket.receive_until("the kernel's answer to the batch", |reply| {
        if batch.contains(reply.seq) {
            if let Some(Err(error)) = reply.status()
                && first_error.is_none()
            {
                first_error = Some((reply.seq, error));
            }
            return Ok(false);
        }
        Ok(reply.seq == barrier && reply.status().is_some())
    });
    if let Some((seq, source)) = first_error {
        return Err(NftError::Kernel {
            object: refused_object(batch, transactions, seq, &source),
            source,
        });
    }
    received.map_err(NftError::from)
}

/// The operation a refused message carried, in nft syntax.
fn refused_object(
    batch: &Batch,
    transactions: &[Transaction],
    seq: u32,
    error: &KernelError,
) -> String {
    let Some(origin) = batch.origin(seq) else {
        return "the batch as a whole (its commit)".to_owned();
    };
    let Some(transaction) = transactions.get(origin.transaction) else {
        return "an unknown message".to_owned();
    };
    let family = transaction.family();
    let ops = &transaction.ops()[origin.first..origin.first + origin.count];
    if let Some(offset) = error.offset
        && let Some(index) = nl::blamed_element(transaction, origin, offset)
    {
        return nl::describe(family, std::slice::from_ref(&transaction.ops()[index]));
    }
    nl::describe(family, ops)
}

fn inspect(
    socket: &mut NetlinkSocket,
    family: IpFamily,
    probe: &Probe,
) -> Result<Option<TableFacts>, NftError> {
    let mut table = None;
    let outcome = exchange(
        socket,
        |seq| nl::table_request(seq, family),
        "the table's description",
        |reply| table = table.or(nl::table_of(reply)),
    )?;
    match outcome {
        Err(error) if nl::is_not_found(&error) => return Ok(None),
        Err(source) => {
            return Err(NftError::Kernel {
                object: format!("get table {}", nl::table_name(family)),
                source,
            });
        }
        Ok(()) => {}
    }
    let Some((handle, uses)) = table else {
        return Err(NetlinkError::Malformed("no table in the answer to GETTABLE".into()).into());
    };
    let mut facts = TableFacts {
        handle,
        uses,
        ..TableFacts::default()
    };
    for chain in &probe.chains {
        let mut rules = 0;
        let outcome = exchange(
            socket,
            |seq| nl::rules_request(seq, family, chain),
            "a chain's rules",
            |reply| rules += usize::from(nl::is_rule(reply)),
        )?;
        // A dump of a missing chain answers ENOENT on some kernels and nothing on others.
        match outcome {
            Ok(()) => facts.rules.push(rules),
            Err(error) if nl::is_not_found(&error) => facts.rules.push(0),
            Err(source) => {
                return Err(NftError::Kernel {
                    object: format!("list chain {} {chain}", nl::table_name(family)),
                    source,
                });
            }
        }
    }
    for (set, key) in &probe.elements {
        let seq = socket.reserve(1);
        let Some(request) = nl::element_request(seq, family, set, key) else {
            facts.elements.push(true);
            continue;
        };
        let outcome = exchange_built(socket, seq, &request, "an element", |_| {})?;
        match outcome {
            Ok(()) => facts.elements.push(true),
            Err(error) if nl::is_not_found(&error) => facts.elements.push(false),
            Err(source) => {
                return Err(NftError::Kernel {
                    object: format!("get element {} {set} {{ {key} }}", nl::table_name(family)),
                    source,
                });
            }
        }
    }
    Ok(Some(facts))
}

#[async_trait]
impl NftKernel for NftCommand {
    async fn apply_all(&mut self, transactions: &[Transaction]) -> Result<(), NftError> {
        if transactions.iter().all(Transaction::is_empty) {
            return Ok(());
        }
        // A transaction that replaces the table (a full sync) is nft's job by design.
        let replaces_table = transactions.iter().any(|tx| {
            tx.ops()
                .iter()
                .any(|op| matches!(op, Op::AddTable | Op::DeleteTable))
        });
        if self.netlink && !replaces_table {
            let owned = transactions.to_vec();
            let sent = self
                .on_socket(move |socket| {
                    // Sequence numbers are taken once the batch's size is known.
                    let first = socket.reserve(0);
                    let batch = match nl::encode(&owned, first) {
                        Ok(batch) => batch,
                        Err(why) => return Ok(Err(why)),
                    };
                    socket.reserve(u32::try_from(batch.messages.messages()).unwrap_or(u32::MAX));
                    send_batch(socket, &batch, &owned).map(Ok)
                })
                .await?;
            match sent {
                Ok(()) => return Ok(()),
                Err(why) => {
                    self.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        operation = %why.0,
                        "incremental sync goes through nft: netlink does not encode this operation"
                    );
                }
            }
        }
        // One `nft -f` run is one netlink batch: both tables change together or not at all.
        self.run(&["-f", "-"], Some(transactions)).await.map(drop)
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

    async fn generation(&mut self) -> Result<Option<u32>, NftError> {
        self.on_socket(|socket| generation(socket).map(Some)).await
    }

    async fn inspect(
        &mut self,
        family: IpFamily,
        probe: &Probe,
    ) -> Result<Option<TableFacts>, NftError> {
        let probe = probe.clone();
        self.on_socket(move |socket| inspect(socket, family, &probe))
            .await
    }

    fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}
