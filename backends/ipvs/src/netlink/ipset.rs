//! ipset's nfnetlink protocol (linux `include/uapi/linux/netfilter/ipset/ip_set.h`) for adding
//! and deleting single entries, and the reading of `ipset save`'s output. Creating,
//! swapping and destroying whole sets goes through `ipset restore` (see `super::tool`): it
//! is rare, and the tool knows every type's creation options.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kproxy_core::{IpFamily, Protocol};
use kproxy_netlink::{Attributes, MessageBuffer, NLM_F_ACK, NLM_F_REQUEST, NetlinkError};

use crate::model::{SetEntry, SetKind, SetOp};

/// `NFNL_SUBSYS_IPSET`: the high byte of an ipset message's type.
const NFNL_SUBSYS_IPSET: u16 = 6;
/// `IPSET_CMD_ADD`, `IPSET_CMD_DEL`.
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
/// The protocol version sent: `IPSET_PROTOCOL_MIN` of kernels that speak version 7, and the
/// only version older kernels (before 5.7, `IPSET_PROTOCOL` 6) accept.
const PROTOCOL_VERSION: u8 = 6;

/// Command attributes (`IPSET_ATTR_*`).
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_DATA: u16 = 7;
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

/// The sets named `KUBE-*` of an `ipset save` output, each with its members as printed
/// (a set without members is there with none).
pub(crate) fn parse_save(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("create"), Some(name), _) if name.starts_with("KUBE-") => {
                sets.entry(name.to_owned()).or_default();
            }
            (Some("add"), Some(name), Some(member)) if name.starts_with("KUBE-") => {
                sets.entry(name.to_owned())
                    .or_default()
                    .push(member.to_owned());
            }
            _ => {}
        }
    }
    sets
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

    #[test]
    fn a_save_is_read_into_the_kube_sets_and_their_members() {
        let saved = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n\
                     add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n\
                     add KUBE-CLUSTER-IP 10.96.0.10,udp:53\n\
                     create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024\n\
                     create OTHER hash:ip family inet\n\
                     add OTHER 1.2.3.4\n";
        let sets = parse_save(saved);
        assert_eq!(sets.len(), 2);
        assert_eq!(
            sets["KUBE-CLUSTER-IP"],
            ["10.96.0.1,tcp:443", "10.96.0.10,udp:53"]
        );
        assert!(sets["KUBE-LOOP-BACK"].is_empty());
    }
}
