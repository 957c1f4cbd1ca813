//! ipset's nfnetlink protocol (linux `include/uapi/linux/netfilter/ipset/ip_set.h`) for adding
//! and deleting single entries and for listing every set with its members. Creating,
//! swapping and destroying whole sets goes through `ipset restore` (see `super::tool`): it
//! is rare, and the tool knows every type's creation options.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::{IpFamily, Protocol};
use kproxy_netlink::{
    Attributes, MessageBuffer, NLM_F_ACK, NLM_F_REQUEST, NetlinkError, parse_attributes,
};

use crate::error::IpvsError;
use crate::model::{SetEntry, SetKind, SetOp};

/// `NFNL_SUBSYS_IPSET`: the high byte of an ipset message's type.
const NFNL_SUBSYS_IPSET: u16 = 6;
/// `IPSET_CMD_LIST`, `IPSET_CMD_ADD`, `IPSET_CMD_DEL`.
const IPSET_CMD_LIST: u16 = 7;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
/// The protocol version sent: `IPSET_PROTOCOL_MIN` of kernels that speak version 7, and the
/// only version older kernels (before 5.7, `IPSET_PROTOCOL` 6) accept.
const PROTOCOL_VERSION: u8 = 6;

/// Command attributes (`IPSET_ATTR_*`).
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_DATA: u16 = 7;
/// `IPSET_ATTR_ADT`: the members of a listed set, each an `IPSET_ATTR_DATA` nest.
const ATTR_ADT: u16 = 8;
/// Data attributes.
const ATTR_IP: u16 = 1;
const ATTR_PORT: u16 = 4;
const ATTR_PROTO: u16 = 7;
const ATTR_IP2: u16 = 20;
const ATTR_CIDR2: u16 = 21;
/// `IPSET_ATTR_IPADDR_IPV4`, `IPSET_ATTR_IPADDR_IPV6`.
const ATTR_IPADDR_IPV4: u16 = 1;
const ATTR_IPADDR_IPV6: u16 = 2;
/// `NLA_F_NET_BYTEORDER`: ipset refuses addresses and ports without it.
const NLA_F_NET_BYTEORDER: u16 = 0x4000;

/// `IPSET_ERR_EXIST`: the entry is there (add) or is not (delete). Without `NLM_F_EXCL` the
/// kernel already ignores it (`IPSET_FLAG_EXIST`); it is matched too in case a kernel does not.
pub(crate) const IPSET_ERR_EXIST: i32 = 4103;

/// `NFPROTO_IPV4`, `NFPROTO_IPV6`.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// `struct nfgenmsg`: family, version `NFNETLINK_V0`, resource id 0 (big endian).
fn nfgenmsg(family: IpFamily) -> [u8; 4] {
    let family = match family {
        IpFamily::V4 => NFPROTO_IPV4,
        IpFamily::V6 => NFPROTO_IPV6,
    };
    [family, 0, 0, 0]
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn write_addr(w: &mut Attributes<'_>, kind: u16, addr: IpAddr) {
    w.nest(kind, |w| match addr {
        IpAddr::V4(v4) => {
            w.bytes(ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &v4.octets());
        }
        IpAddr::V6(v6) => {
            w.bytes(ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER, &v6.octets());
        }
    });
}

fn write_proto_port(w: &mut Attributes<'_>, protocol: Protocol, port: u16) {
    w.bytes(ATTR_PORT | NLA_F_NET_BYTEORDER, &port.to_be_bytes())
        .bytes(ATTR_PROTO, &[protocol_number(protocol)]);
}

/// The `IPSET_ATTR_DATA` content of one entry.
fn write_entry(w: &mut Attributes<'_>, entry: &SetEntry) {
    match *entry {
        SetEntry::Ip(ip) => write_addr(w, ATTR_IP, ip),
        SetEntry::Port(port) => {
            w.bytes(ATTR_PORT | NLA_F_NET_BYTEORDER, &port.to_be_bytes());
        }
        SetEntry::IpPort { ip, protocol, port } => {
            write_addr(w, ATTR_IP, ip);
            write_proto_port(w, protocol, port);
        }
        SetEntry::IpPortIp {
            ip,
            protocol,
            port,
            ip2,
        } => {
            write_addr(w, ATTR_IP, ip);
            write_proto_port(w, protocol, port);
            write_addr(w, ATTR_IP2, ip2);
        }
        SetEntry::IpPortNet {
            ip,
            protocol,
            port,
            net,
        } => {
            write_addr(w, ATTR_IP, ip);
            write_proto_port(w, protocol, port);
            write_addr(w, ATTR_IP2, net.network());
            w.bytes(ATTR_CIDR2, &[net.prefix_len()]);
        }
    }
}

/// Appends the request of `op` (acknowledged; without `NLM_F_EXCL`, so an entry that is
/// already there or already gone is no error) to `buffer`; returns its sequence number.
pub(crate) fn push_op(buffer: &mut MessageBuffer, op: &SetOp) -> Result<u32, NetlinkError> {
    let cmd = if op.add { IPSET_CMD_ADD } else { IPSET_CMD_DEL };
    let family = match op.set.kind {
        // bitmap:port has no family; the tool sends IPv4's.
        SetKind::BitmapPort => IpFamily::V4,
        _ => op.set.family,
    };
    buffer.push(
        (NFNL_SUBSYS_IPSET << 8) | cmd,
        NLM_F_REQUEST | NLM_F_ACK,
        &nfgenmsg(family),
        |w| {
            w.bytes(ATTR_PROTOCOL, &[PROTOCOL_VERSION])
                .string(ATTR_SETNAME, op.set.name)
                .nest(ATTR_DATA, |w| write_entry(w, &op.entry));
        },
    )
}

/// The message type of a dump of every set (`IPSET_CMD_LIST`, with `NLM_F_DUMP`).
pub(crate) fn list_kind() -> u16 {
    (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST
}

/// The `struct nfgenmsg` of the dump request (the family is not looked at: every set is
/// listed, bitmap ones included).
pub(crate) fn list_header() -> [u8; 4] {
    nfgenmsg(IpFamily::V4)
}

/// The dump request's attributes: the protocol version alone (no set name: every set).
pub(crate) fn write_list_request(w: &mut Attributes<'_>) {
    w.bytes(ATTR_PROTOCOL, &[PROTOCOL_VERSION]);
}

/// What a set's type name says of the kind of its members; `None` for a type this mode does
/// not use.
fn kind_of_type(name: &str) -> Option<SetKind> {
    [
        SetKind::HashIp,
        SetKind::HashIpPort,
        SetKind::HashIpPortIp,
        SetKind::HashIpPortNet,
        SetKind::BitmapPort,
    ]
    .into_iter()
    .find(|kind| kind.type_name() == name)
}

/// A string attribute's text, without its NUL.
fn text(payload: &[u8]) -> String {
    let text = payload.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// An `IPSET_ATTR_IP`/`IPSET_ATTR_IP2` nest: one `IPSET_ATTR_IPADDR_IPV4` (4 bytes) or
/// `IPSET_ATTR_IPADDR_IPV6` (16 bytes), in network byte order.
fn decode_addr(nest: &[u8]) -> Result<IpAddr, String> {
    for (kind, payload) in parse_attributes(nest) {
        match kind {
            ATTR_IPADDR_IPV4 => {
                let octets: [u8; 4] = payload
                    .try_into()
                    .map_err(|_| format!("an IPv4 address of {} bytes", payload.len()))?;
                return Ok(IpAddr::from(octets));
            }
            ATTR_IPADDR_IPV6 => {
                let octets: [u8; 16] = payload
                    .try_into()
                    .map_err(|_| format!("an IPv6 address of {} bytes", payload.len()))?;
                return Ok(IpAddr::from(octets));
            }
            _ => {}
        }
    }
    Err("an address attribute without an address".to_owned())
}

fn decode_protocol(number: u8) -> Result<Protocol, String> {
    match number {
        6 => Ok(Protocol::Tcp),
        17 => Ok(Protocol::Udp),
        132 => Ok(Protocol::Sctp),
        other => Err(format!("protocol {other}, which is none of tcp, udp, sctp")),
    }
}

/// One member: the content of an `IPSET_ATTR_DATA` nest of a dump's `IPSET_ATTR_ADT`, for a
/// set of `kind`. Extensions (timeout, counters, comment, skbinfo) and flags are not read.
fn decode_entry(kind: SetKind, data: &[u8]) -> Result<SetEntry, String> {
    let (mut ip, mut ip2, mut port, mut proto, mut cidr2) = (None, None, None, None, None);
    for (attr, payload) in parse_attributes(data) {
        match attr {
            ATTR_IP => ip = Some(decode_addr(payload)?),
            ATTR_IP2 => ip2 = Some(decode_addr(payload)?),
            ATTR_PORT => {
                let bytes: [u8; 2] = payload
                    .try_into()
                    .map_err(|_| format!("a port of {} bytes", payload.len()))?;
                port = Some(u16::from_be_bytes(bytes));
            }
            ATTR_PROTO => proto = Some(*payload.first().ok_or("an empty protocol")?),
            ATTR_CIDR2 => cidr2 = Some(*payload.first().ok_or("an empty prefix length")?),
            _ => {}
        }
    }
    let ip = || ip.ok_or("no address (IPSET_ATTR_IP)");
    let ip2 = || ip2.ok_or("no second address (IPSET_ATTR_IP2)");
    let port = || port.ok_or("no port (IPSET_ATTR_PORT)");
    let protocol = || decode_protocol(proto.ok_or("no protocol (IPSET_ATTR_PROTO)")?);
    Ok(match kind {
        SetKind::HashIp => SetEntry::Ip(ip()?),
        SetKind::BitmapPort => SetEntry::Port(port()?),
        SetKind::HashIpPort => SetEntry::IpPort {
            ip: ip()?,
            protocol: protocol()?,
            port: port()?,
        },
        SetKind::HashIpPortIp => SetEntry::IpPortIp {
            ip: ip()?,
            protocol: protocol()?,
            port: port()?,
            ip2: ip2()?,
        },
        SetKind::HashIpPortNet => {
            let prefix = cidr2.ok_or("no prefix length (IPSET_ATTR_CIDR2)")?;
            let addr = ip2()?;
            SetEntry::IpPortNet {
                ip: ip()?,
                protocol: protocol()?,
                port: port()?,
                net: IpNet::new(addr, prefix)
                    .map_err(|_| format!("the network {addr}/{prefix}"))?,
            }
        }
    })
}

/// The sets named `KUBE-*` of an `IPSET_CMD_LIST` dump (the payloads of its messages, each
/// after its `struct nfgenmsg`), each with its members as `ipset save` prints them (a set
/// without members is there with none), in the dump's order.
///
/// A set's first message carries its header (type name, family, revision, `IPSET_ATTR_DATA`
/// with the creation options) and the first members in `IPSET_ATTR_ADT`; a set too large for
/// one message goes on in further messages with its name and more members only. Other sets
/// are passed over whatever their type.
///
/// # Errors
///
/// [`IpvsError::Malformed`], naming the set, for a `KUBE-*` set of a type this mode does not
/// use, a member that does not decode as its type's, or members before their set's header.
pub(crate) fn decode_list(
    payloads: &[Vec<u8>],
) -> Result<BTreeMap<String, Vec<String>>, IpvsError> {
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut kinds: HashMap<String, SetKind> = HashMap::new();
    for payload in payloads {
        let attributes = payload.get(4..).unwrap_or_default();
        let (mut name, mut type_name, mut members) = (None, None, None);
        for (kind, value) in parse_attributes(attributes) {
            match kind {
                ATTR_SETNAME => name = Some(text(value)),
                ATTR_TYPENAME => type_name = Some(text(value)),
                ATTR_ADT => members = Some(value),
                _ => {}
            }
        }
        let name = name.ok_or_else(|| {
            IpvsError::Malformed("an ipset list message without a set name".to_owned())
        })?;
        if !name.starts_with("KUBE-") {
            continue;
        }
        let kind = match type_name {
            Some(type_name) => {
                let kind = kind_of_type(&type_name).ok_or_else(|| {
                    IpvsError::Malformed(format!(
                        "ipset {name} is of type {type_name}, which this mode does not use"
                    ))
                })?;
                kinds.insert(name.clone(), kind);
                kind
            }
            None => *kinds.get(&name).ok_or_else(|| {
                IpvsError::Malformed(format!(
                    "ipset {name}: members listed before the set's header"
                ))
            })?,
        };
        let listed = sets.entry(name.clone()).or_default();
        for (attr, data) in parse_attributes(members.unwrap_or_default()) {
            if attr != ATTR_DATA {
                continue;
            }
            let entry = decode_entry(kind, data).map_err(|problem| {
                IpvsError::Malformed(format!(
                    "member {} of ipset {} ({}) does not decode: {problem}",
                    listed.len() + 1,
                    name,
                    kind.type_name()
                ))
            })?;
            listed.push(entry.to_string());
        }
    }
    Ok(sets)
}
#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_netlink::HEADER_LEN;

    fn encode(op: &SetOp) -> Vec<u8> {
        let mut buffer = MessageBuffer::new(1);
        push_op(&mut buffer, op).unwrap();
        buffer.bytes().to_vec()
    }

    fn spec(name: &'static str, kind: SetKind, family: IpFamily) -> SetSpec {
        SetSpec {
            name,
            kind,
            family,
            comment: "",
        }
    }

    use crate::model::SetSpec;

    #[test]
    #[cfg(target_endian = "little")]
    fn an_ipv4_ip_port_entry_is_laid_out_as_ip_set_h_says() {
        let op = SetOp {
            set: spec("KUBE-CLUSTER-IP", SetKind::HashIpPort, IpFamily::V4),
            entry: SetEntry::parse(SetKind::HashIpPort, "172.30.0.1,tcp:80").unwrap(),
            add: true,
        };
        let bytes = encode(&op);
        let mut want = vec![80, 0, 0, 0, 9, 6, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        want.extend([2, 0, 0, 0]); // NFPROTO_IPV4, NFNETLINK_V0, res_id
        want.extend([5, 0, 1, 0, 6, 0, 0, 0]); // IPSET_ATTR_PROTOCOL
        want.extend([20, 0, 2, 0]);
        want.extend(b"KUBE-CLUSTER-IP\0");
        want.extend([32, 0, 7, 0x80]); // IPSET_ATTR_DATA
        want.extend([12, 0, 1, 0x80, 8, 0, 1, 0x40, 172, 30, 0, 1]); // IP { IPV4 }
        want.extend([6, 0, 4, 0x40, 0, 80, 0, 0]); // port, network byte order
        want.extend([5, 0, 7, 0, 6, 0, 0, 0]); // IPPROTO_TCP
        assert_eq!(bytes, want);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn an_ipv6_ip_port_net_entry_carries_the_network_and_its_prefix() {
        let op = SetOp {
            set: spec("KUBE-6-LB-SRC", SetKind::HashIpPortNet, IpFamily::V6),
            entry: SetEntry::parse(SetKind::HashIpPortNet, "fd00::4,udp:53,fd01::/64").unwrap(),
            add: false,
        };
        let bytes = encode(&op);
        assert_eq!(&bytes[4..6], &[10, 6]); // IPSET_CMD_DEL
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 4], &[10, 0, 0, 0]); // NFPROTO_IPV6
        let data = &bytes[HEADER_LEN + 4 + 8 + 20..];
        let mut want = vec![76, 0, 7, 0x80];
        want.extend([24, 0, 1, 0x80, 20, 0, 2, 0x40, 0xfd, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([0, 0, 0, 0, 0, 0, 0, 4]);
        want.extend([6, 0, 4, 0x40, 0, 53, 0, 0]);
        want.extend([5, 0, 7, 0, 17, 0, 0, 0]);
        want.extend([24, 0, 20, 0x80, 20, 0, 2, 0x40, 0xfd, 1, 0, 0, 0, 0, 0, 0]);
        want.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([5, 0, 21, 0, 64, 0, 0, 0]); // IPSET_ATTR_CIDR2
        assert_eq!(data, want);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_port_entry_is_a_port_alone() {
        let op = SetOp {
            set: spec("KUBE-NODE-PORT-TCP", SetKind::BitmapPort, IpFamily::V6),
            entry: SetEntry::Port(30080),
            add: true,
        };
        let bytes = encode(&op);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 4], &[2, 0, 0, 0]);
        assert!(bytes.ends_with(&[12, 0, 7, 0x80, 6, 0, 4, 0x40, 0x75, 0x80, 0, 0]));
    }

    /// `NLA_F_NET_BYTEORDER`, as the kernel flags addresses and ports.
    const NET: u16 = 0x4000;

    type Member<'a> = &'a dyn Fn(&mut Attributes<'_>);

    fn addr(w: &mut Attributes<'_>, kind: u16, text: &str) {
        let addr: IpAddr = text.parse().unwrap();
        w.nest(kind, |w| match addr {
            IpAddr::V4(v4) => {
                w.bytes(1 | NET, &v4.octets());
            }
            IpAddr::V6(v6) => {
                w.bytes(2 | NET, &v6.octets());
            }
        });
    }

    fn port(w: &mut Attributes<'_>, port: u16) {
        w.bytes(4 | NET, &port.to_be_bytes());
    }

    fn members(w: &mut Attributes<'_>, list: &[Member<'_>]) {
        // IPSET_ATTR_ADT of IPSET_ATTR_DATA nests
        w.nest(8, |w| {
            for member in list {
                w.nest(7, |w| member(w));
            }
        });
    }

    /// A set's first message as `ip_set_dump_do` writes it: nfgenmsg (`AF_INET` whatever the
    /// set), protocol, name, type, family, revision, the header's `IPSET_ATTR_DATA`, then the
    /// members.
    fn first(name: &str, type_name: &str, family: u8, list: &[Member<'_>]) -> Vec<u8> {
        let mut buf = vec![2, 0, 0, 0];
        let mut w = Attributes::new(&mut buf);
        w.bytes(1, &[6])
            .string(2, name)
            .string(3, type_name)
            .bytes(5, &[family])
            .bytes(4, &[3])
            .nest(7, |w| {
                w.u32_be(18, 1024).u32_be(19, 1 << 30).u32_be(24, 1);
            });
        members(&mut w, list);
        w.finish().unwrap();
        buf
    }

    /// A further message of a large set: protocol, name and more members only.
    fn more(name: &str, list: &[Member<'_>]) -> Vec<u8> {
        let mut buf = vec![2, 0, 0, 0];
        let mut w = Attributes::new(&mut buf);
        w.bytes(1, &[6]).string(2, name);
        members(&mut w, list);
        w.finish().unwrap();
        buf
    }

    fn listed(payloads: &[Vec<u8>]) -> BTreeMap<String, Vec<String>> {
        decode_list(payloads).unwrap()
    }

    fn error_of(payloads: &[Vec<u8>]) -> String {
        decode_list(payloads).unwrap_err().to_string()
    }

    #[test]
    fn the_list_request_asks_a_dump_of_every_set() {
        let mut buffer = MessageBuffer::new(1);
        buffer
            .push(
                list_kind(),
                NLM_F_REQUEST | kproxy_netlink::NLM_F_DUMP,
                &list_header(),
                write_list_request,
            )
            .unwrap();
        let bytes = buffer.bytes();
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), (6 << 8) | 7);
        assert_eq!(&bytes[HEADER_LEN..], [2, 0, 0, 0, 5, 0, 1, 0, 6, 0, 0, 0]);
    }

    #[test]
    fn hash_ip_members_of_both_families() {
        let sets = listed(&[
            first(
                "KUBE-LOOP",
                "hash:ip",
                2,
                &[
                    &|w| {
                        addr(w, 1, "10.0.0.1");
                        w.u32_be(6, 300); // a timeout extension
                    },
                    &|w| addr(w, 1, "10.0.0.2"),
                ],
            ),
            first(
                "KUBE-6-LOOP",
                "hash:ip",
                10,
                &[
                    &|w| {
                        addr(w, 1, "fd00::1");
                        w.string(26, "a comment"); // IPSET_ATTR_COMMENT
                    },
                    &|w| addr(w, 1, "fd00::a:2"),
                ],
            ),
        ]);
        assert_eq!(sets["KUBE-LOOP"], ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(sets["KUBE-6-LOOP"], ["fd00::1", "fd00::a:2"]);
    }

    #[test]
    fn hash_ip_port_members_of_both_families() {
        let sets = listed(&[
            first(
                "KUBE-CLUSTER-IP",
                "hash:ip,port",
                2,
                &[
                    &|w| {
                        addr(w, 1, "172.30.0.1");
                        port(w, 80);
                        w.bytes(7, &[6]);
                    },
                    &|w| {
                        addr(w, 1, "172.30.0.2");
                        port(w, 53);
                        w.bytes(7, &[17]);
                    },
                ],
            ),
            first(
                "KUBE-6-CLUSTER-IP",
                "hash:ip,port",
                10,
                &[&|w| {
                    addr(w, 1, "fd00::1");
                    port(w, 8080);
                    w.bytes(7, &[132]);
                }],
            ),
        ]);
        assert_eq!(
            sets["KUBE-CLUSTER-IP"],
            ["172.30.0.1,tcp:80", "172.30.0.2,udp:53"]
        );
        assert_eq!(sets["KUBE-6-CLUSTER-IP"], ["fd00::1,sctp:8080"]);
    }

    #[test]
    fn hash_ip_port_ip_members_of_both_families() {
        // hash_ipportip*_data_list: IP, IP2, PORT, PROTO
        let sets = listed(&[
            first(
                "KUBE-LOOP-BACK",
                "hash:ip,port,ip",
                2,
                &[&|w| {
                    addr(w, 1, "10.1.0.5");
                    addr(w, 20, "10.1.0.6");
                    port(w, 8080);
                    w.bytes(7, &[6]);
                }],
            ),
            first(
                "KUBE-6-LOOP-BACK",
                "hash:ip,port,ip",
                10,
                &[&|w| {
                    addr(w, 1, "fd00::5");
                    addr(w, 20, "fd00::5");
                    port(w, 53);
                    w.bytes(7, &[17]);
                }],
            ),
        ]);
        assert_eq!(sets["KUBE-LOOP-BACK"], ["10.1.0.5,tcp:8080,10.1.0.6"]);
        assert_eq!(sets["KUBE-6-LOOP-BACK"], ["fd00::5,udp:53,fd00::5"]);
    }

    #[test]
    fn hash_ip_port_net_members_of_both_families() {
        // hash_ipportnet*_data_list: IP, IP2, PORT, CIDR2, PROTO, CADT_FLAGS
        let sets = listed(&[
            first(
                "KUBE-LB-SRC",
                "hash:ip,port,net",
                2,
                &[
                    &|w| {
                        addr(w, 1, "1.2.3.4");
                        addr(w, 20, "10.0.0.0");
                        port(w, 80);
                        w.bytes(21, &[8]).bytes(7, &[6]).u32_be(8, 0);
                    },
                    &|w| {
                        addr(w, 1, "1.2.3.4");
                        addr(w, 20, "192.168.0.2");
                        port(w, 80);
                        w.bytes(21, &[32]).bytes(7, &[6]);
                    },
                ],
            ),
            first(
                "KUBE-6-LB-SRC",
                "hash:ip,port,net",
                10,
                &[
                    &|w| {
                        addr(w, 1, "fd00::4");
                        addr(w, 20, "fd01::");
                        port(w, 80);
                        w.bytes(21, &[64]).bytes(7, &[17]);
                    },
                    &|w| {
                        addr(w, 1, "fd00::4");
                        addr(w, 20, "fd02::9");
                        port(w, 80);
                        w.bytes(21, &[128]).bytes(7, &[6]);
                    },
                ],
            ),
        ]);
        assert_eq!(
            sets["KUBE-LB-SRC"],
            ["1.2.3.4,tcp:80,10.0.0.0/8", "1.2.3.4,tcp:80,192.168.0.2"]
        );
        assert_eq!(
            sets["KUBE-6-LB-SRC"],
            ["fd00::4,udp:80,fd01::/64", "fd00::4,tcp:80,fd02::9"]
        );
    }

    #[test]
    fn bitmap_port_members_have_no_family() {
        let sets = listed(&[first(
            "KUBE-NODE-PORT-TCP",
            "bitmap:port",
            0,
            &[&|w| port(w, 30080), &|w| port(w, 30081)],
        )]);
        assert_eq!(sets["KUBE-NODE-PORT-TCP"], ["30080", "30081"]);
    }

    #[test]
    fn a_large_set_goes_on_over_several_messages() {
        let ip_port = |ip: &'static str, p: u16| {
            move |w: &mut Attributes<'_>| {
                addr(w, 1, ip);
                port(w, p);
                w.bytes(7, &[6]);
            }
        };
        let (a, b, c, d) = (
            ip_port("10.0.0.1", 1),
            ip_port("10.0.0.2", 2),
            ip_port("fd00::3", 3),
            ip_port("fd00::4", 4),
        );
        let sets = listed(&[
            first("KUBE-A", "hash:ip,port", 2, &[&a, &b]),
            more("KUBE-A", &[&b, &a]),
            more("KUBE-A", &[]),
            first("KUBE-6-B", "hash:ip,port", 10, &[&c]),
            more("KUBE-6-B", &[&d]),
        ]);
        assert_eq!(
            sets["KUBE-A"],
            [
                "10.0.0.1,tcp:1",
                "10.0.0.2,tcp:2",
                "10.0.0.2,tcp:2",
                "10.0.0.1,tcp:1"
            ]
        );
        assert_eq!(sets["KUBE-6-B"], ["fd00::3,tcp:3", "fd00::4,tcp:4"]);
        let error = error_of(&[more("KUBE-A", &[&a])]);
        assert!(error.contains("KUBE-A"), "{error}");
    }

    #[test]
    fn sets_of_others_are_passed_over_and_empty_sets_are_kept() {
        let mut header_only = vec![2, 0, 0, 0];
        let mut w = Attributes::new(&mut header_only);
        w.bytes(1, &[6])
            .string(2, "KUBE-EMPTY")
            .string(3, "hash:ip")
            .bytes(5, &[2]);
        w.finish().unwrap();
        let sets = listed(&[
            first(
                "OTHER",
                "list:set",
                0,
                &[&|w| {
                    w.string(17, "x");
                }],
            ),
            header_only,
            first("KUBE-EMPTY-6", "hash:ip,port,net", 10, &[]),
        ]);
        assert_eq!(sets.len(), 2, "{sets:?}");
        assert!(sets["KUBE-EMPTY"].is_empty());
        assert!(sets["KUBE-EMPTY-6"].is_empty());
        assert!(listed(&[]).is_empty());
    }

    #[test]
    fn a_kube_set_of_a_type_this_mode_does_not_use_is_an_error_naming_it() {
        let error = error_of(&[first("KUBE-NETS", "hash:net", 2, &[])]);
        assert!(
            error.contains("KUBE-NETS") && error.contains("hash:net"),
            "{error}"
        );
    }

    #[test]
    fn a_member_that_does_not_decode_is_an_error_naming_its_set() {
        let cases: [(&str, Member<'_>, &str); 5] = [
            (
                "hash:ip,port",
                &|w| {
                    addr(w, 1, "10.0.0.1");
                    port(w, 8);
                    w.bytes(7, &[1]); // icmp
                },
                "protocol 1",
            ),
            (
                "hash:ip,port",
                &|w| {
                    addr(w, 1, "10.0.0.1");
                    w.bytes(7, &[6]);
                },
                "no port",
            ),
            (
                "hash:ip",
                &|w| {
                    w.nest(1, |w| {
                        w.bytes(1 | NET, &[10, 0, 0]);
                    });
                },
                "3 bytes",
            ),
            (
                "hash:ip,port,net",
                &|w| {
                    addr(w, 1, "1.2.3.4");
                    addr(w, 20, "10.0.0.0");
                    port(w, 80);
                    w.bytes(21, &[33]).bytes(7, &[6]);
                },
                "10.0.0.0/33",
            ),
            ("bitmap:port", &|w| addr(w, 1, "10.0.0.1"), "no port"),
        ];
        for (type_name, member, problem) in cases {
            let ok: Member<'_> = &|w| port(w, 1);
            let payload = match type_name {
                "bitmap:port" => first("KUBE-BAD", type_name, 0, &[ok, member]),
                _ => first("KUBE-BAD", type_name, 2, &[member]),
            };
            let error = error_of(&[payload]);
            assert!(
                error.contains("ipset KUBE-BAD") && error.contains(problem),
                "{type_name}: {error}"
            );
        }
    }
}
