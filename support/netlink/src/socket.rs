//! [`NetlinkSocket`]: a blocking netlink socket that belongs to one network namespace.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr};
use nix::sched::CloneFlags;
use nix::sys::socket::{setsockopt, sockopt};

use crate::error::NetlinkError;

/// How long a read waits for the kernel unless told otherwise. The kernel answers a batch of
/// hundreds of thousands of messages in well under a second; only a kernel (or peer) that
/// never answers reaches this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The receive buffer asked for: room for the error answers of a large batch and for the
/// datagrams of a dump. `SO_RCVBUFFORCE` (with `CAP_NET_ADMIN`) goes past `rmem_max`, a limit of
/// this socket only; without the capability the kernel's cap applies.
const RECEIVE_BUFFER: usize = 8 << 20;

/// The largest datagram read at once (dump datagrams are at most a few pages).
const DATAGRAM: usize = 1 << 17;

/// Which network namespace a socket acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The namespace of the thread that opens the socket.
    Current,
    /// `/run/netns/NAME`, as made by `ip netns add NAME`.
    Named(String),
}

impl Namespace {
    /// `Named(name)` for `Some(name)`, `Current` otherwise.
    pub fn from_option(name: Option<&str>) -> Self {
        name.map_or(Namespace::Current, |name| Namespace::Named(name.to_owned()))
    }
}

/// A blocking netlink socket bound to one network namespace.
///
/// Every read has a deadline; writes grow the send buffer to fit, so that one write (an
/// atomic nf_tables batch) is never refused for its size.
#[derive(Debug)]
pub struct NetlinkSocket {
    socket: Socket,
    timeout: Duration,
    seq: u32,
    send_buffer: usize,
    datagram: Vec<u8>,
    bytes_sent: u64,
}

impl NetlinkSocket {
    /// Opens a socket of `protocol` (e.g. [`crate::NETLINK_NETFILTER`]) in `namespace`.
    ///
    /// For a named namespace the socket is made on a short-lived thread that entered the
    /// namespace and checked that it is there (the namespace file and the thread's
    /// `/proc/thread-self/ns/net` are the same inode): the calling thread stays where it is,
    /// and the socket keeps acting on the namespace whoever uses it later.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Namespace`] when the namespace cannot be entered,
    /// [`NetlinkError::Socket`] when the socket cannot be made or configured.
    pub fn open(protocol: isize, namespace: &Namespace) -> Result<Self, NetlinkError> {
        match namespace {
            Namespace::Current => Self::open_here(protocol),
            Namespace::Named(name) => {
                let name = name.clone();
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            enter(&name)?;
                            Self::open_here(protocol)
                        })
                        .join()
                        .unwrap_or_else(|_| {
                            Err(NetlinkError::socket(
                                "open",
                                io::Error::other("the thread entering the namespace panicked"),
                            ))
                        })
                })
            }
        }
    }

    /// Opens a socket in the calling thread's namespace that is connected to nobody: it
    /// takes datagrams from any port. A test's stand-in for a kernel that never answers:
    /// point another socket at its [`port`](Self::port).
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Socket`] when the socket cannot be made.
    pub fn open_peer(protocol: isize) -> Result<Self, NetlinkError> {
        Self::open_with(protocol, false)
    }

    fn open_here(protocol: isize) -> Result<Self, NetlinkError> {
        Self::open_with(protocol, true)
    }

    fn open_with(protocol: isize, to_kernel: bool) -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(protocol).map_err(|e| NetlinkError::socket("socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| NetlinkError::socket("bind", e))?;
        // A socket connected to the kernel takes datagrams only from the kernel.
        if to_kernel {
            socket
                .connect(&SocketAddr::new(0, 0))
                .map_err(|e| NetlinkError::socket("connect", e))?;
        }
        // Extended acks carry the kernel's own message and the blamed attribute; capped acks
        // keep an error answer small instead of echoing the whole refused message.
        socket
            .set_ext_ack(true)
            .map_err(|e| NetlinkError::socket("setsockopt(NETLINK_EXT_ACK)", e))?;
        socket
            .set_cap_ack(true)
            .map_err(|e| NetlinkError::socket("setsockopt(NETLINK_CAP_ACK)", e))?;
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER)
                .map_err(|errno| NetlinkError::socket("setsockopt(SO_RCVBUF)", errno.into()))?;
        }
        Ok(Self {
            socket,
            timeout: DEFAULT_TIMEOUT,
            seq: std::process::id().wrapping_mul(2_654_435_761),
            send_buffer: 0,
            datagram: Vec::with_capacity(DATAGRAM),
            bytes_sent: 0,
        })
    }

    /// Sets how long a read waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.max(Duration::from_millis(1));
    }

    /// How many bytes this socket wrote so far (for benchmarks: what a sync cost the wire).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// How long a read waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends to the netlink port `port` instead of the kernel (tests: a peer that never
    /// answers).
    ///
    /// # Errors
    ///
    /// When `connect` fails.
    pub fn connect_to_port(&mut self, port: u32) -> Result<(), NetlinkError> {
        self.socket
            .connect(&SocketAddr::new(port, 0))
            .map_err(|e| NetlinkError::socket("connect", e))
    }

    /// The port the kernel assigned to this socket.
    ///
    /// # Errors
    ///
    /// When `getsockname` fails.
    pub fn port(&self) -> Result<u32, NetlinkError> {
        let mut address = SocketAddr::new(0, 0);
        self.socket
            .get_address(&mut address)
            .map_err(|e| NetlinkError::socket("getsockname", e))?;
        Ok(address.port_number())
    }

    /// Reserves `count` consecutive sequence numbers and returns the first.
    pub fn reserve(&mut self, count: u32) -> u32 {
        let first = self.seq;
        self.seq = self.seq.wrapping_add(count.max(1));
        first
    }

    /// Writes `bytes` in one write (one datagram: the kernel applies an nf_tables batch only
    /// when it arrives whole), growing the send buffer first when needed.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Socket`] when the write fails.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), NetlinkError> {
        // The kernel refuses a datagram longer than the send buffer (less some overhead).
        let needed = bytes.len() + 4096;
        if needed > self.send_buffer {
            let size = needed.max(1 << 20);
            if setsockopt(&self.socket, sockopt::SndBufForce, &size).is_err() {
                setsockopt(&self.socket, sockopt::SndBuf, &size)
                    .map_err(|errno| NetlinkError::socket("setsockopt(SO_SNDBUF)", errno.into()))?;
            }
            self.send_buffer = size;
        }
        let sent = self
            .socket
            .send(bytes, 0)
            .map_err(|e| NetlinkError::socket("send", e))?;
        self.bytes_sent += sent as u64;
        if sent != bytes.len() {
            return Err(NetlinkError::socket(
                "send",
                io::Error::other(format!("wrote {sent} of {} bytes", bytes.len())),
            ));
        }
        Ok(())
    }

    /// Reads datagrams and hands each message to `on_reply` until it returns `true`, or until
    /// the timeout passes. `on_reply` sees every message, stray ones included: it matches
    /// sequence numbers.
    ///
    /// # Errors
    ///
    /// [`NetlinkError::Timeout`] when `on_reply` was not satisfied in time,
    /// [`NetlinkError::Overrun`] when the kernel dropped answers (reading can go on; what the
    /// dropped answers said is lost), [`NetlinkError::Socket`] or
    /// [`NetlinkError::Malformed`] otherwise, or what `on_reply` returned.
    pub fn receive_until(
        &mut self,
        context: &'static str,
        mut on_reply: impl FnMut(crate::Reply<'_>) -> Result<bool, NetlinkError>,
    ) -> Result<(), NetlinkError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(NetlinkError::Timeout {
                    waited: self.timeout,
                    context,
                });
            }
            let timeout = nix::sys::time::TimeVal::new(
                i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX),
                i64::from(remaining.subsec_micros()).max(1),
            );
            setsockopt(&self.socket, sockopt::ReceiveTimeout, &timeout)
                .map_err(|errno| NetlinkError::socket("setsockopt(SO_RCVTIMEO)", errno.into()))?;
            self.datagram.clear();
            match self.socket.recv(&mut self.datagram, 0) {
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(error) if error.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(NetlinkError::socket("recv", error)),
            }
            for reply in crate::parse_replies(&self.datagram)? {
                if on_reply(reply)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Moves the calling thread into `/run/netns/NAME` and checks that it is there.
fn enter(name: &str) -> Result<(), NetlinkError> {
    let namespace_error = |source: io::Error| NetlinkError::Namespace {
        name: name.to_owned(),
        source,
    };
    let file = File::open(format!("/run/netns/{name}")).map_err(namespace_error)?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|errno| namespace_error(errno.into()))?;
    let want = file.metadata().map_err(namespace_error)?;
    let have = std::fs::metadata("/proc/thread-self/ns/net").map_err(namespace_error)?;
    if (want.dev(), want.ino()) != (have.dev(), have.ino()) {
        return Err(namespace_error(io::Error::other(
            "setns did not take effect",
        )));
    }
    Ok(())
}
