//! IPVS's generic-netlink messages (linux `include/uapi/linux/ip_vs.h`): the requests of
//! [`IpvsOp`], the dumps of services and destinations, and `IPVS_CMD_SET_CONFIG`, encoded from
//! and decoded into the model's values, so that a dump of what was added compares equal to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use kproxy_core::{IpFamily, Protocol};
use kproxy_netlink::{Attributes, MessageBuffer, NLM_F_ACK, NLM_F_REQUEST, parse_attributes};

use crate::config::Timeouts;
use crate::error::IpvsError;
use crate::model::{FLAG_HASHED, IpvsOp, RealServer, RealServerStatus, ServiceKey, VirtualServer};
use crate::netlink::genl::{self, GENL_HEADER_LEN};

/// The generic-netlink family's name.
pub(crate) const FAMILY_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
const VERSION: u8 = 1;

/// `IPVS_CMD_*`.
const CMD_NEW_SERVICE: u8 = 1;
const CMD_SET_SERVICE: u8 = 2;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;
const CMD_SET_CONFIG: u8 = 12;

/// `IPVS_CMD_ATTR_*`.
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// `IPVS_SVC_ATTR_*`.
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;

/// `IPVS_DEST_ATTR_*`.
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;

/// `IP_VS_CONN_F_MASQ`: NAT forwarding, the only method this mode uses.
const CONN_F_MASQ: u32 = 0;

/// `AF_INET`, `AF_INET6`.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn address_family(family: IpFamily) -> u16 {
    match family {
        IpFamily::V4 => AF_INET,
        IpFamily::V6 => AF_INET6,
    }
}

fn protocol_number(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first 4.
fn inet_addr(addr: IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match addr {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

/// The attributes that identify a service (all a delete or a lookup needs).
fn write_service_key(w: &mut Attributes<'_>, key: &ServiceKey) {
    w.bytes(SVC_ATTR_AF, &address_family(key.family()).to_ne_bytes());
    match key {
        ServiceKey::Address {
            protocol,
            addr,
            port,
        } => {
            w.bytes(SVC_ATTR_PROTOCOL, &protocol_number(*protocol).to_ne_bytes())
                .bytes(SVC_ATTR_ADDR, &inet_addr(*addr))
                .bytes(SVC_ATTR_PORT, &port.to_be_bytes());
        }
        ServiceKey::Fwmark { mark, .. } => {
            w.bytes(SVC_ATTR_FWMARK, &mark.to_ne_bytes());
        }
    }
}

/// A whole service: the key and what the kernel requires of a new or edited one.
fn write_service(w: &mut Attributes<'_>, service: &VirtualServer) {
    write_service_key(w, &service.key);
    let mut flags = [0; 8];
    flags[..4].copy_from_slice(&(service.flags & !FLAG_HASHED).to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    w.string(SVC_ATTR_SCHED_NAME, &service.scheduler)
        .bytes(SVC_ATTR_FLAGS, &flags)
        .bytes(SVC_ATTR_TIMEOUT, &service.timeout.to_ne_bytes())
        .bytes(SVC_ATTR_NETMASK, &service.netmask().to_ne_bytes());
}

/// A destination; the kernel requires the forwarding method, weight and thresholds of a new
/// or edited one and reads only the address and port of one to delete.
fn write_dest(w: &mut Attributes<'_>, family: IpFamily, server: &RealServer) {
    w.bytes(DEST_ATTR_ADDR, &inet_addr(server.addr))
        .bytes(DEST_ATTR_PORT, &server.port.to_be_bytes())
        .bytes(DEST_ATTR_FWD_METHOD, &CONN_F_MASQ.to_ne_bytes())
        .bytes(DEST_ATTR_WEIGHT, &server.weight.to_ne_bytes())
        .bytes(DEST_ATTR_U_THRESH, &0u32.to_ne_bytes())
        .bytes(DEST_ATTR_L_THRESH, &0u32.to_ne_bytes())
        .bytes(DEST_ATTR_ADDR_FAMILY, &address_family(family).to_ne_bytes());
}

/// Appends the request of `op` (acknowledged) to `buffer`; returns its sequence number.
pub(crate) fn push_op(
    buffer: &mut MessageBuffer,
    family_id: u16,
    op: &IpvsOp,
) -> Result<u32, kproxy_netlink::NetlinkError> {
    let cmd = match op {
        IpvsOp::AddService(_) => CMD_NEW_SERVICE,
        IpvsOp::EditService(_) => CMD_SET_SERVICE,
        IpvsOp::DeleteService(_) => CMD_DEL_SERVICE,
        IpvsOp::AddServer(..) => CMD_NEW_DEST,
        IpvsOp::EditServer(..) => CMD_SET_DEST,
        IpvsOp::DeleteServer(..) => CMD_DEL_DEST,
    };
    buffer.push(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK,
        &genl::header(cmd, VERSION),
        |w| match op {
            IpvsOp::AddService(service) | IpvsOp::EditService(service) => {
                w.nest(CMD_ATTR_SERVICE, |w| write_service(w, service));
            }
            IpvsOp::DeleteService(key) => {
                w.nest(CMD_ATTR_SERVICE, |w| write_service_key(w, key));
            }
            IpvsOp::AddServer(key, server)
            | IpvsOp::EditServer(key, server)
            | IpvsOp::DeleteServer(key, server) => {
                w.nest(CMD_ATTR_SERVICE, |w| write_service_key(w, key));
                w.nest(CMD_ATTR_DEST, |w| write_dest(w, key.family(), server));
            }
        },
    )
}

/// The fixed header of a service dump (`IPVS_CMD_GET_SERVICE` with `NLM_F_DUMP`).
pub(crate) fn service_dump_header() -> [u8; GENL_HEADER_LEN] {
    genl::header(CMD_GET_SERVICE, VERSION)
}

/// The fixed header of a destination dump; its body is [`write_dest_dump`].
pub(crate) fn dest_dump_header() -> [u8; GENL_HEADER_LEN] {
    genl::header(CMD_GET_DEST, VERSION)
}

/// The body of a destination dump: the service whose destinations are listed.
pub(crate) fn write_dest_dump(w: &mut Attributes<'_>, key: &ServiceKey) {
    w.nest(CMD_ATTR_SERVICE, |w| write_service_key(w, key));
}

/// The fixed header of `IPVS_CMD_SET_CONFIG`; its body is [`write_timeouts`].
pub(crate) fn set_config_header() -> [u8; GENL_HEADER_LEN] {
    genl::header(CMD_SET_CONFIG, VERSION)
}

/// The timeouts that are set, in seconds (the kernel keeps its value for an absent one).
pub(crate) fn write_timeouts(w: &mut Attributes<'_>, timeouts: &Timeouts) {
    let seconds = |timeout: Duration| u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
    for (kind, timeout) in [
        (CMD_ATTR_TIMEOUT_TCP, timeouts.tcp),
        (CMD_ATTR_TIMEOUT_TCP_FIN, timeouts.tcp_fin),
        (CMD_ATTR_TIMEOUT_UDP, timeouts.udp),
    ] {
        if let Some(timeout) = timeout {
            w.bytes(kind, &seconds(timeout).to_ne_bytes());
        }
    }
}

fn malformed(what: &str) -> IpvsError {
    IpvsError::Malformed(format!("IPVS {what}"))
}

fn u16_ne(value: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(value.get(..2)?.try_into().ok()?))
}

fn u16_be(value: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}

fn u32_ne(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

fn family_of(af: u16) -> Option<IpFamily> {
    match af {
        AF_INET => Some(IpFamily::V4),
        AF_INET6 => Some(IpFamily::V6),
        _ => None,
    }
}

fn addr_of(family: IpFamily, value: &[u8]) -> Option<IpAddr> {
    match family {
        IpFamily::V4 => {
            let octets: [u8; 4] = value.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        IpFamily::V6 => {
            let octets: [u8; 16] = value.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
    }
}

fn protocol_of(number: u16) -> Option<Protocol> {
    match number {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The nest `kind` among the top-level attributes of a generic-netlink payload.
fn top_nest(payload: &[u8], kind: u16) -> Option<&[u8]> {
    parse_attributes(payload.get(GENL_HEADER_LEN..)?)
        .find_map(|(found, value)| (found == kind).then_some(value))
}

/// A service of a dump (the payload after the netlink header), as the model has it: flags
/// without [`FLAG_HASHED`], which the kernel sets on every listed service.
pub(crate) fn decode_service(payload: &[u8]) -> Result<VirtualServer, IpvsError> {
    let nest = top_nest(payload, CMD_ATTR_SERVICE)
        .ok_or_else(|| malformed("service without IPVS_CMD_ATTR_SERVICE"))?;
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut scheduler, mut flags, mut timeout) = (None, None, None);
    for (kind, value) in parse_attributes(nest) {
        match kind {
            SVC_ATTR_AF => af = u16_ne(value),
            SVC_ATTR_PROTOCOL => protocol = u16_ne(value),
            SVC_ATTR_ADDR => addr = Some(value),
            SVC_ATTR_PORT => port = u16_be(value),
            SVC_ATTR_FWMARK => fwmark = u32_ne(value),
            SVC_ATTR_SCHED_NAME => {
                let text = value.split(|b| *b == 0).next().unwrap_or_default();
                scheduler = Some(String::from_utf8_lossy(text).into_owned());
            }
            SVC_ATTR_FLAGS => flags = u32_ne(value),
            SVC_ATTR_TIMEOUT => timeout = u32_ne(value),
            _ => {}
        }
    }
    let family = af
        .and_then(family_of)
        .ok_or_else(|| malformed(&format!("service of address family {af:?}")))?;
    let key = match fwmark {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { family, mark },
        _ => {
            let protocol = protocol
                .and_then(protocol_of)
                .ok_or_else(|| malformed(&format!("service of protocol {protocol:?}")))?;
            let addr = addr
                .and_then(|value| addr_of(family, value))
                .ok_or_else(|| malformed("service without address"))?;
            let port = port.ok_or_else(|| malformed("service without port"))?;
            ServiceKey::Address {
                protocol,
                addr,
                port,
            }
        }
    };
    Ok(VirtualServer {
        key,
        scheduler: scheduler
            .ok_or_else(|| malformed(&format!("service {key} without scheduler")))?,
        flags: flags.unwrap_or(0) & !FLAG_HASHED,
        timeout: timeout.unwrap_or(0),
    })
}

/// A destination of a dump of the service of `family` (the payload after the netlink header).
pub(crate) fn decode_dest(payload: &[u8], family: IpFamily) -> Result<RealServerStatus, IpvsError> {
    let nest = top_nest(payload, CMD_ATTR_DEST)
        .ok_or_else(|| malformed("destination without IPVS_CMD_ATTR_DEST"))?;
    let (mut addr, mut af, mut port, mut weight) = (None, None, None, None);
    let (mut active, mut inactive) = (0, 0);
    for (kind, value) in parse_attributes(nest) {
        match kind {
            DEST_ATTR_ADDR => addr = Some(value),
            DEST_ATTR_ADDR_FAMILY => af = u16_ne(value),
            DEST_ATTR_PORT => port = u16_be(value),
            DEST_ATTR_WEIGHT => weight = u32_ne(value),
            DEST_ATTR_ACTIVE_CONNS => active = u32_ne(value).unwrap_or(0),
            DEST_ATTR_INACT_CONNS => inactive = u32_ne(value).unwrap_or(0),
            _ => {}
        }
    }
    // Kernels before 4.14 do not send the destination's own family: it is the service's.
    let family = af.and_then(family_of).unwrap_or(family);
    let server = RealServer {
        addr: addr
            .and_then(|value| addr_of(family, value))
            .ok_or_else(|| malformed("destination without address"))?,
        port: port.ok_or_else(|| malformed("destination without port"))?,
        weight: weight.ok_or_else(|| malformed("destination without weight"))?,
    };
    Ok(RealServerStatus {
        server,
        active,
        inactive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FLAG_PERSISTENT, FLAG_SCHED2};
    use kproxy_netlink::HEADER_LEN;

    const FAMILY: u16 = 0x20;

    fn encode(op: &IpvsOp) -> Vec<u8> {
        let mut buffer = MessageBuffer::new(7);
        push_op(&mut buffer, FAMILY, op).unwrap();
        buffer.bytes().to_vec()
    }

    fn tcp_v4() -> ServiceKey {
        ServiceKey::Address {
            protocol: Protocol::Tcp,
            addr: "10.96.0.10".parse().unwrap(),
            port: 80,
        }
    }

    fn udp_v6() -> ServiceKey {
        ServiceKey::Address {
            protocol: Protocol::Udp,
            addr: "fd00::10".parse().unwrap(),
            port: 53,
        }
    }

    fn service(key: ServiceKey, scheduler: &str, flags: u32, timeout: u32) -> VirtualServer {
        VirtualServer {
            key,
            scheduler: scheduler.into(),
            flags,
            timeout,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_new_ipv4_service_is_laid_out_as_ip_vs_h_says() {
        let bytes = encode(&IpvsOp::AddService(service(tcp_v4(), "rr", 0, 0)));
        let mut want = vec![104, 0, 0, 0, 0x20, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        want.extend([1, 1, 0, 0]); // IPVS_CMD_NEW_SERVICE, version 1
        want.extend([84, 0, 1, 0x80]); // IPVS_CMD_ATTR_SERVICE, nested
        want.extend([6, 0, 1, 0, 2, 0, 0, 0]); // AF_INET
        want.extend([6, 0, 2, 0, 6, 0, 0, 0]); // IPPROTO_TCP
        want.extend([20, 0, 3, 0, 10, 96, 0, 10]); // address, then 12 zero bytes
        want.extend([0; 12]);
        want.extend([6, 0, 4, 0, 0, 80, 0, 0]); // port, big endian
        want.extend([7, 0, 6, 0, b'r', b'r', 0, 0]); // scheduler
        want.extend([12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]); // flags, mask
        want.extend([8, 0, 8, 0, 0, 0, 0, 0]); // timeout
        want.extend([8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff]); // netmask
        assert_eq!(bytes, want);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_new_ipv6_destination_carries_its_service_and_masquerade() {
        let server = RealServer {
            addr: "fd00::1:5".parse().unwrap(),
            port: 5353,
            weight: 1,
        };
        let bytes = encode(&IpvsOp::AddServer(udp_v6(), server));
        let mut want = vec![140, 0, 0, 0, 0x20, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        want.extend([5, 1, 0, 0]); // IPVS_CMD_NEW_DEST
        want.extend([48, 0, 1, 0x80]);
        want.extend([6, 0, 1, 0, 10, 0, 0, 0]); // AF_INET6
        want.extend([6, 0, 2, 0, 17, 0, 0, 0]); // IPPROTO_UDP
        want.extend([
            20, 0, 3, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        want.extend([6, 0, 4, 0, 0, 53, 0, 0]);
        want.extend([72, 0, 2, 0x80]); // IPVS_CMD_ATTR_DEST
        want.extend([
            20, 0, 1, 0, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5,
        ]);
        want.extend([6, 0, 2, 0, 0x14, 0xe9, 0, 0]); // 5353
        want.extend([8, 0, 3, 0, 0, 0, 0, 0]); // IP_VS_CONN_F_MASQ
        want.extend([8, 0, 4, 0, 1, 0, 0, 0]); // weight
        want.extend([8, 0, 5, 0, 0, 0, 0, 0]); // upper threshold
        want.extend([8, 0, 6, 0, 0, 0, 0, 0]); // lower threshold
        want.extend([6, 0, 11, 0, 10, 0, 0, 0]); // the destination's family
        assert_eq!(bytes, want);
    }

    #[test]
    fn services_decode_to_what_was_encoded() {
        let services = [
            service(tcp_v4(), "rr", 0, 0),
            service(udp_v6(), "wrr", FLAG_PERSISTENT, 10800),
            service(
                ServiceKey::Fwmark {
                    family: IpFamily::V4,
                    mark: 0x4000,
                },
                "mh",
                FLAG_SCHED2,
                0,
            ),
            service(
                ServiceKey::Address {
                    protocol: Protocol::Sctp,
                    addr: "fd00::20".parse().unwrap(),
                    port: 9,
                },
                "sh",
                0,
                0,
            ),
        ];
        for vs in services {
            let bytes = encode(&IpvsOp::AddService(vs.clone()));
            assert_eq!(decode_service(&bytes[HEADER_LEN..]).unwrap(), vs);
        }
    }

    #[test]
    fn a_listed_service_loses_the_kernels_hashed_flag() {
        let mut listed = service(tcp_v4(), "rr", FLAG_PERSISTENT, 60);
        listed.flags |= FLAG_HASHED;
        let bytes = encode(&IpvsOp::EditService(listed));
        let decoded = decode_service(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(decoded, service(tcp_v4(), "rr", FLAG_PERSISTENT, 60));
    }

    #[test]
    fn destinations_decode_to_what_was_encoded() {
        for (key, addr) in [(tcp_v4(), "10.1.0.5"), (udp_v6(), "fd00::1:5")] {
            let server = RealServer {
                addr: addr.parse().unwrap(),
                port: 8080,
                weight: 0,
            };
            let bytes = encode(&IpvsOp::EditServer(key, server));
            let status = decode_dest(&bytes[HEADER_LEN..], key.family()).unwrap();
            assert_eq!(
                status,
                RealServerStatus {
                    server,
                    active: 0,
                    inactive: 0
                }
            );
        }
    }

    #[test]
    fn a_service_without_its_nest_is_malformed() {
        let error = decode_service(&[4, 1, 0, 0]).unwrap_err();
        assert!(matches!(error, IpvsError::Malformed(_)), "{error}");
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn only_the_timeouts_that_are_set_are_sent() {
        let mut buffer = MessageBuffer::new(1);
        let timeouts = Timeouts {
            tcp: Some(Duration::from_secs(900)),
            tcp_fin: None,
            udp: Some(Duration::from_secs(300)),
        };
        buffer
            .push(FAMILY, 5, &set_config_header(), |w| {
                write_timeouts(w, &timeouts)
            })
            .unwrap();
        let body = &buffer.bytes()[HEADER_LEN..];
        assert_eq!(
            body,
            [
                12, 1, 0, 0, 8, 0, 4, 0, 0x84, 3, 0, 0, 8, 0, 6, 0, 0x2c, 1, 0, 0
            ]
        );
    }
}
