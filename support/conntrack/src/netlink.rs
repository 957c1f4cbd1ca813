//! The kernel's conntrack table over `NETLINK_NETFILTER` (ctnetlink).
//!
//! Messages are built and parsed with `netlink-packet-netfilter`'s conntrack types (its 0.4
//! release has `IPCTNL_MSG_CT_GET` dumps and `IPCTNL_MSG_CT_DELETE`), framed with
//! `netlink-packet-core` and sent on a blocking `netlink-sys` socket from tokio's blocking
//! pool. Flows are dumped per family, matched against [`ConntrackFilter`]s here, and deleted
//! one by one by their original tuple (and zone), as `conntrack -D` does.
//!
//! A netlink socket belongs to the network namespace it was created in, and conntrack tables
//! are per namespace: [`Conntrack::in_netns`] creates the socket on a short-lived thread that
//! entered the named namespace, and every later request acts on that namespace's table.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kproxy_core::IpFamily;
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Status, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sched::CloneFlags;

use crate::filter::{ConntrackFilter, Flow, FlowTuple, IPPROTO_UDP};

/// `CTA_ZONE`: the conntrack zone attribute (a big-endian u16).
const CTA_ZONE: u16 = 18;

/// How long a request waits for the kernel's answer before failing with
/// [`ConntrackError::Timeout`].
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to the conntrack table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConntrackError {
    /// The netlink socket could not be created, bound, configured, written or read (e.g.
    /// `EPERM` without `CAP_NET_ADMIN`, or `EPROTONOSUPPORT` without ctnetlink).
    #[error("conntrack netlink socket: {context}: {source}")]
    Socket {
        /// What was being done.
        context: &'static str,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// The named network namespace could not be entered (missing `/run/netns/NAME`, no
    /// privilege), or the thread was not in it afterwards.
    #[error("entering network namespace {name}: {source}")]
    Namespace {
        /// The namespace's name.
        name: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error (a negative errno in an `NLMSG_ERROR`).
    #[error("conntrack {operation} failed in the kernel: {source}")]
    Kernel {
        /// The request (`dump`, `delete`).
        operation: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("malformed conntrack netlink message: {0}")]
    Decode(String),
    /// No (complete) answer came within [`REPLY_TIMEOUT`].
    #[error("no answer from conntrack netlink within {0:?}")]
    Timeout(Duration),
    /// The blocking task doing the request panicked or was cancelled (runtime shutting down).
    #[error("conntrack task failed: {0}")]
    Task(String),
}

impl ConntrackError {
    fn socket(context: &'static str, source: io::Error) -> Self {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ConntrackError::Timeout(REPLY_TIMEOUT)
        } else {
            ConntrackError::Socket { context, source }
        }
    }
}

/// A handle on one network namespace's conntrack table. Cheap to clone (clones share the
/// socket); requests are serialized.
#[derive(Debug, Clone)]
pub struct Conntrack {
    inner: Arc<Mutex<Inner>>,
    namespace: Option<String>,
}

#[derive(Debug)]
struct Inner {
    socket: Socket,
    sequence: u32,
}

impl Conntrack {
    /// Opens the conntrack table of the calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// [`ConntrackError::Socket`] when the netlink socket cannot be set up.
    pub fn new() -> Result<Self, ConntrackError> {
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner::open()?)),
            namespace: None,
        })
    }

    /// Opens the conntrack table of the named network namespace (`/run/netns/NAME`, as made
    /// by `ip netns add`). The calling thread stays where it is: the socket is made on a
    /// short-lived thread that entered the namespace, and keeps the namespace afterwards.
    ///
    /// # Errors
    ///
    /// [`ConntrackError::Namespace`] when the namespace cannot be entered,
    /// [`ConntrackError::Socket`] when the socket cannot be set up there.
    pub fn in_netns(name: &str) -> Result<Self, ConntrackError> {
        let path = format!("/run/netns/{name}");
        let namespace_error = |source: io::Error| ConntrackError::Namespace {
            name: name.to_owned(),
            source,
        };
        let inner = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<Inner, ConntrackError> {
                    let file = File::open(&path).map_err(namespace_error)?;
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| namespace_error(errno.into()))?;
                    // Go on only when this thread really is in the namespace.
                    let want = file.metadata().map_err(namespace_error)?;
                    let have =
                        std::fs::metadata("/proc/thread-self/ns/net").map_err(namespace_error)?;
                    if (want.dev(), want.ino()) != (have.dev(), have.ino()) {
                        return Err(namespace_error(io::Error::other(
                            "setns did not take effect",
                        )));
                    }
                    Inner::open()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(ConntrackError::Task(format!(
                        "the thread entering namespace {name} panicked"
                    )))
                })
        })?;
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            namespace: Some(name.to_owned()),
        })
    }

    /// The namespace given to [`in_netns`](Self::in_netns); `None` for the namespace the
    /// handle was opened in by [`new`](Self::new).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Lists every UDP flow (both families) of the table.
    ///
    /// # Errors
    ///
    /// When the dump fails ([`ConntrackError::Kernel`], [`ConntrackError::Timeout`]...).
    pub async fn list_udp(&self) -> Result<Vec<Flow>, ConntrackError> {
        let flows = self.blocking(|inner| inner.dump(None)).await?;
        Ok(flows
            .into_iter()
            .filter(|flow| flow.protocol == IPPROTO_UDP)
            .collect())
    }

    /// Deletes every flow matched by some filter and returns how many were deleted. Only the
    /// families the filters name are dumped; a flow that vanished between the dump and its
    /// deletion (expired, deleted by someone else) is not counted and is not an error. An
    /// empty filter list does nothing.
    ///
    /// # Errors
    ///
    /// When a dump or a deletion fails; flows deleted before the failure stay deleted.
    pub async fn delete(&self, filters: &[ConntrackFilter]) -> Result<usize, ConntrackError> {
        if filters.is_empty() {
            return Ok(0);
        }
        let filters = filters.to_vec();
        self.blocking(move |inner| {
            let mut families: Vec<IpFamily> = filters.iter().map(|f| f.family).collect();
            families.sort();
            families.dedup();
            let mut deleted = 0;
            for family in families {
                for flow in inner.dump(Some(family))? {
                    if filters.iter().any(|filter| filter.matches(&flow)) && inner.delete(&flow)? {
                        // One line per flow: only at trace (upstream logs them at -v=4).
                        tracing::trace!(%flow, "deleted stale conntrack entry");
                        deleted += 1;
                    }
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Deletes exactly `flows` (as listed); returns how many were still there to delete.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a deletion (other than for a flow already gone).
    pub async fn delete_flows(&self, flows: &[Flow]) -> Result<usize, ConntrackError> {
        if flows.is_empty() {
            return Ok(0);
        }
        let flows = flows.to_vec();
        self.blocking(move |inner| {
            let mut deleted = 0;
            for flow in &flows {
                if inner.delete(flow)? {
                    tracing::trace!(%flow, "deleted stale conntrack entry");
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Runs `f` on the socket in tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ConntrackError>
    where
        F: FnOnce(&mut Inner) -> Result<T, ConntrackError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave the socket inconsistent: stray
            // answers of an abandoned request are skipped by their sequence number.
            let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|error| ConntrackError::Task(error.to_string()))?
    }
}

impl Inner {
    fn open() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| ConntrackError::socket("socket(NETLINK_NETFILTER)", e))?;
        socket
            .bind_auto()
            .map_err(|e| ConntrackError::socket("bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| ConntrackError::socket("connect", e))?;
        let timeout =
            nix::sys::time::TimeVal::new(i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(5), 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|errno| ConntrackError::socket("setsockopt(SO_RCVTIMEO)", errno.into()))?;
        // Large dumps come in many datagrams; a bigger buffer makes ENOBUFS less likely. The
        // kernel caps it at net.core.rmem_max, which is left alone.
        socket
            .set_rx_buf_sz(1usize << 20)
            .map_err(|e| ConntrackError::socket("setsockopt(SO_RCVBUF)", e))?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    fn send(
        &mut self,
        flags: u16,
        family: NetfilterProtoFamily,
        message: ConntrackMessage,
    ) -> Result<u32, ConntrackError> {
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = encode(self.sequence, flags, family, message);
        self.socket
            .send(&bytes, 0)
            .map_err(|e| ConntrackError::socket("send", e))?;
        Ok(self.sequence)
    }

    /// Receives one datagram and decodes the messages it holds.
    fn receive(&mut self) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, ConntrackError> {
        let (bytes, _) = self
            .socket
            .recv_from_full()
            .map_err(|e| ConntrackError::socket("recv", e))?;
        decode_all(&bytes)
    }

    /// Dumps the table (one family, or all).
    fn dump(&mut self, family: Option<IpFamily>) -> Result<Vec<Flow>, ConntrackError> {
        let nf_family = match family {
            None => NetfilterProtoFamily::Unspec,
            Some(IpFamily::V4) => NetfilterProtoFamily::IPv4,
            Some(IpFamily::V6) => NetfilterProtoFamily::IPv6,
        };
        let sequence = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            nf_family,
            ConntrackMessage::Get(Vec::new()),
        )?;
        let mut flows = Vec::new();
        loop {
            for message in self.receive()? {
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(flows),
                    NetlinkPayload::Error(error) => {
                        if let Some(code) = error.code {
                            return Err(kernel_error("dump", code.get()));
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(ConntrackError::Decode("dump overrun".to_owned()));
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        if let Some(flow) = parse_flow(&inner)
                            && family.is_none_or(|f| f == flow.family)
                        {
                            flows.push(flow);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes one flow by its original tuple; `Ok(false)` when it was already gone.
    fn delete(&mut self, flow: &Flow) -> Result<bool, ConntrackError> {
        let (family, message) = delete_message(flow);
        let sequence = self.send(NLM_F_REQUEST | NLM_F_ACK, family, message)?;
        loop {
            for message in self.receive()? {
                if message.header.sequence_number != sequence {
                    continue;
                }
                if let NetlinkPayload::Error(error) = message.payload {
                    return match error.code.map(|code| code.get()) {
                        None => Ok(true),
                        Some(code) if -code == nix::errno::Errno::ENOENT as i32 => Ok(false),
                        Some(code) => Err(kernel_error("delete", code)),
                    };
                }
            }
        }
    }
}

fn kernel_error(operation: &'static str, code: i32) -> ConntrackError {
    ConntrackError::Kernel {
        operation,
        source: io::Error::from_raw_os_error(code.saturating_abs()),
    }
}

/// Frames a conntrack message as a netlink request.
fn encode(
    sequence: u32,
    flags: u16,
    family: NetfilterProtoFamily,
    message: ConntrackMessage,
) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            message,
        )),
    );
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// Decodes every netlink message of one datagram.
fn decode_all(mut bytes: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, ConntrackError> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
            .map_err(|error| ConntrackError::Decode(error.to_string()))?;
        // Messages are 4-byte aligned inside a datagram.
        let length = usize::try_from(message.header.length)
            .map_err(|error| ConntrackError::Decode(error.to_string()))?;
        let advance = (length + 3) & !3;
        if length == 0 {
            return Err(ConntrackError::Decode("zero-length message".to_owned()));
        }
        messages.push(message);
        bytes = bytes.get(advance..).unwrap_or_default();
    }
    Ok(messages)
}

/// The `IPCTNL_MSG_CT_DELETE` request for one flow: its original tuple, and its zone when not
/// the default one.
fn delete_message(flow: &Flow) -> (NetfilterProtoFamily, ConntrackMessage) {
    let family = match flow.family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    };
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple_attributes(
        flow.protocol,
        &flow.original,
    ))];
    if flow.zone != 0 {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            flow.zone.to_be_bytes().to_vec(),
        )));
    }
    (family, ConntrackMessage::Delete(attributes))
}

fn tuple_attributes(protocol: u8, tuple: &FlowTuple) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(tuple.src),
            IPTuple::DestinationAddress(tuple.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(protocol.into()),
            ProtoTuple::SourcePort(tuple.src_port),
            ProtoTuple::DestinationPort(tuple.dst_port),
        ]),
    ]
}

/// A flow from a conntrack message (`IPCTNL_MSG_CT_NEW`, as dumps answer); `None` for other
/// messages and entries without both tuples.
fn parse_flow(message: &NetfilterMessage) -> Option<Flow> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = &message.inner else {
        return None;
    };
    let mut original = None;
    let mut reply = None;
    let mut replied = false;
    let mut zone = 0;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuples) => original = parse_tuple(tuples),
            ConntrackAttribute::CtaTupleReply(tuples) => reply = parse_tuple(tuples),
            ConntrackAttribute::CtaStatus(status) => replied = status.contains(Status::SeenReply),
            ConntrackAttribute::Other(nla) if netlink_packet_core::Nla::kind(nla) == CTA_ZONE => {
                zone = nla_u16_be(nla).unwrap_or(0);
            }
            _ => {}
        }
    }
    let (protocol, original) = original?;
    let (_, reply) = reply?;
    let family = match message.header.family {
        NetfilterProtoFamily::IPv4 => IpFamily::V4,
        NetfilterProtoFamily::IPv6 => IpFamily::V6,
        _ => IpFamily::of(&original.src),
    };
    Some(Flow {
        family,
        protocol,
        original,
        reply,
        replied,
        zone,
    })
}

fn parse_tuple(tuples: &[Tuple]) -> Option<(u8, FlowTuple)> {
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (0, 0);
    for tuple in tuples {
        match tuple {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(addr) => src = Some(*addr),
                        IPTuple::DestinationAddress(addr) => dst = Some(*addr),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(port) => src_port = *port,
                        ProtoTuple::DestinationPort(port) => dst_port = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        FlowTuple {
            src: src?,
            dst: dst?,
            src_port,
            dst_port,
        },
    ))
}

/// The value of a u16 attribute (network byte order).
fn nla_u16_be(nla: &DefaultNla) -> Option<u16> {
    use netlink_packet_core::Emitable;
    let mut buffer = vec![0; nla.buffer_len()];
    nla.emit(&mut buffer);
    // The attribute header (length, kind) takes 4 bytes.
    let value = buffer.get(4..6)?;
    Some(u16::from_be_bytes([value[0], value[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(zone: u16) -> Flow {
        Flow {
            family: IpFamily::V4,
            protocol: IPPROTO_UDP,
            original: FlowTuple {
                src: "192.168.0.2".parse().unwrap(),
                dst: "172.30.0.10".parse().unwrap(),
                src_port: 40000,
                dst_port: 53,
            },
            reply: FlowTuple {
                src: "10.180.0.1".parse().unwrap(),
                dst: "192.168.0.2".parse().unwrap(),
                src_port: 53,
                dst_port: 40000,
            },
            replied: true,
            zone,
        }
    }

    /// What a dump answers for `flow`, as the kernel frames it.
    fn dump_entry(flow: &Flow, sequence: u32) -> Vec<u8> {
        let mut attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple_attributes(flow.protocol, &flow.original)),
            ConntrackAttribute::CtaTupleReply(tuple_attributes(flow.protocol, &flow.reply)),
            ConntrackAttribute::CtaStatus(if flow.replied {
                Status::SeenReply | Status::Confirmed
            } else {
                Status::Confirmed
            }),
            ConntrackAttribute::CtaTimeout(30),
        ];
        if flow.zone != 0 {
            attributes.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                flow.zone.to_be_bytes().to_vec(),
            )));
        }
        encode(
            sequence,
            0,
            NetfilterProtoFamily::IPv4,
            ConntrackMessage::New(attributes),
        )
    }

    #[test]
    fn dump_entries_parse_into_flows() {
        for zone in [0, 7] {
            let mut expected = flow(zone);
            for replied in [true, false] {
                expected.replied = replied;
                let bytes = dump_entry(&expected, 9);
                let messages = decode_all(&bytes).unwrap();
                assert_eq!(messages.len(), 1);
                assert_eq!(messages[0].header.sequence_number, 9);
                let NetlinkPayload::InnerMessage(inner) = &messages[0].payload else {
                    panic!("not an inner message: {:?}", messages[0].payload);
                };
                assert_eq!(parse_flow(inner), Some(expected));
            }
        }
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let mut bytes = dump_entry(&flow(0), 3);
        bytes.extend(dump_entry(&flow(5), 3));
        let messages = decode_all(&bytes).unwrap();
        assert_eq!(messages.len(), 2);
        assert!(decode_all(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn delete_request_layout() {
        let (family, message) = delete_message(&flow(0));
        let bytes = encode(42, NLM_F_REQUEST | NLM_F_ACK, family, message);
        // nlmsghdr: length, type (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE), flags,
        // sequence, port.
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(
            u16::from_ne_bytes(bytes[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 42);
        // nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0.
        assert_eq!(&bytes[16..20], &[2, 0, 0, 0]);
        // The first attribute is CTA_TUPLE_ORIG, nested.
        assert_eq!(
            u16::from_ne_bytes(bytes[22..24].try_into().unwrap()) & 0x7fff,
            1
        );
        // It decodes back to the same tuple.
        let messages = decode_all(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(inner) = &messages[0].payload else {
            panic!("not an inner message");
        };
        let NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attributes)) = &inner.inner
        else {
            panic!("not a delete: {inner:?}");
        };
        let [ConntrackAttribute::CtaTupleOrig(tuples)] = attributes.as_slice() else {
            panic!("unexpected attributes {attributes:?}");
        };
        assert_eq!(parse_tuple(tuples), Some((IPPROTO_UDP, flow(0).original)));
    }

    #[test]
    fn delete_request_carries_a_zone() {
        let (_, message) = delete_message(&flow(7));
        let ConntrackMessage::Delete(attributes) = message else {
            panic!("not a delete");
        };
        let Some(ConntrackAttribute::Other(zone)) = attributes.get(1) else {
            panic!("no zone in {attributes:?}");
        };
        assert_eq!(nla_u16_be(zone), Some(7));
    }

    #[test]
    fn ipv6_delete_uses_af_inet6() {
        let mut f = flow(0);
        f.family = IpFamily::V6;
        f.original.src = "fd00::2".parse().unwrap();
        f.original.dst = "fd00:30::10".parse().unwrap();
        let (family, message) = delete_message(&f);
        let bytes = encode(1, NLM_F_REQUEST | NLM_F_ACK, family, message);
        assert_eq!(bytes[16], 10);
    }

    #[test]
    fn kernel_errors_read_as_errno() {
        let error = kernel_error("delete", -1);
        assert!(
            error.to_string().contains("Operation not permitted"),
            "{error}"
        );
    }
}
