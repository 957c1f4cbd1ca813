//! The kernel objects this mode programs, as values: IPVS virtual and real servers, ipset
//! entries. The same values are rendered from plans, diffed, sent over netlink, and read back
//! from the kernel's dumps, so what was meant and what is there compare directly.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use kproxy_core::{IpFamily, Protocol};

/// What identifies an IPVS virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    /// An address, protocol and port (cluster IP, external IP, load-balancer IP, node port).
    Address {
        /// The protocol.
        protocol: Protocol,
        /// The virtual address.
        addr: IpAddr,
        /// The virtual port.
        port: u16,
    },
    /// A firewall mark set by this mode's mangle rules (local traffic to an
    /// `externalTrafficPolicy: Local` Service, which goes to every endpoint).
    Fwmark {
        /// The family of the packets it takes.
        family: IpFamily,
        /// The mark.
        mark: u32,
    },
}

impl ServiceKey {
    /// The family of the packets it takes.
    pub fn family(&self) -> IpFamily {
        match self {
            ServiceKey::Address { addr, .. } => IpFamily::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Address {
                protocol,
                addr: IpAddr::V6(addr),
                port,
            } => write!(
                f,
                "{} [{addr}]:{port}",
                protocol.as_lower_str().to_uppercase()
            ),
            ServiceKey::Address {
                protocol,
                addr,
                port,
            } => write!(
                f,
                "{} {addr}:{port}",
                protocol.as_lower_str().to_uppercase()
            ),
            ServiceKey::Fwmark { family, mark } => write!(f, "FWM {mark:#x} {family}"),
        }
    }
}

/// `IP_VS_SVC_F_PERSISTENT`: connections of one client stick to one real server.
pub const FLAG_PERSISTENT: u32 = 0x1;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service it lists; never sent.
pub const FLAG_HASHED: u32 = 0x2;
/// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
pub const FLAG_SCHED1: u32 = 0x8;
/// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port`.
pub const FLAG_SCHED2: u32 = 0x10;
/// `IP_VS_SVC_F_SCHED3`: scheduler flag 3.
pub const FLAG_SCHED3: u32 = 0x20;

/// One IPVS virtual server as this mode wants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualServer {
    /// What identifies it.
    pub key: ServiceKey,
    /// The scheduler's name (`rr`, `wrr`, ...).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags, without [`FLAG_HASHED`].
    pub flags: u32,
    /// The persistence timeout in seconds, with [`FLAG_PERSISTENT`] (ClientIP affinity);
    /// 0 without persistence.
    pub timeout: u32,
}

impl VirtualServer {
    /// The netmask sent and listed with it: the whole address (`255.255.255.255` as a prefix
    /// length of 32 for IPv4, 128 for IPv6), so persistence is per client address.
    pub fn netmask(&self) -> u32 {
        match self.key.family() {
            IpFamily::V4 => u32::MAX,
            IpFamily::V6 => 128,
        }
    }
}

/// One real server (an endpoint) of a virtual server, always in masquerade (NAT) forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    /// The endpoint's address.
    pub addr: IpAddr,
    /// The endpoint's port.
    pub port: u16,
    /// Its weight: 1 while it takes new connections, 0 while it drains.
    pub weight: u32,
}

impl RealServer {
    /// What identifies it within its virtual server.
    pub fn key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }
}

impl fmt::Display for RealServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V6(addr) => write!(f, "[{addr}]:{}", self.port),
            addr => write!(f, "{addr}:{}", self.port),
        }
    }
}

/// A real server as the kernel lists it, with its connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealServerStatus {
    /// The real server.
    pub server: RealServer,
    /// Established connections.
    pub active: u32,
    /// Other connections (closing, UDP).
    pub inactive: u32,
}

/// One change to IPVS. Each is one generic-netlink request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOp {
    /// `IPVS_CMD_NEW_SERVICE`.
    AddService(VirtualServer),
    /// `IPVS_CMD_SET_SERVICE` (scheduler, flags, timeout).
    EditService(VirtualServer),
    /// `IPVS_CMD_DEL_SERVICE` (its real servers go with it).
    DeleteService(ServiceKey),
    /// `IPVS_CMD_NEW_DEST`.
    AddServer(ServiceKey, RealServer),
    /// `IPVS_CMD_SET_DEST` (the weight).
    EditServer(ServiceKey, RealServer),
    /// `IPVS_CMD_DEL_DEST`.
    DeleteServer(ServiceKey, RealServer),
}

impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOp::AddService(vs) => write!(f, "add virtual server {} ({})", vs.key, vs.scheduler),
            IpvsOp::EditService(vs) => {
                write!(f, "edit virtual server {} ({})", vs.key, vs.scheduler)
            }
            IpvsOp::DeleteService(key) => write!(f, "delete virtual server {key}"),
            IpvsOp::AddServer(key, rs) => write!(f, "add real server {rs} to {key}"),
            IpvsOp::EditServer(key, rs) => {
                write!(f, "set weight {} of real server {rs} of {key}", rs.weight)
            }
            IpvsOp::DeleteServer(key, rs) => write!(f, "delete real server {rs} of {key}"),
        }
    }
}

/// The ipset types this mode uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// `hash:ip`.
    HashIp,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `bitmap:port` (`range 0-65535`; no family).
    BitmapPort,
}

impl SetKind {
    /// The type name as `ipset` spells it.
    pub fn type_name(self) -> &'static str {
        match self {
            SetKind::HashIp => "hash:ip",
            SetKind::HashIpPort => "hash:ip,port",
            SetKind::HashIpPortIp => "hash:ip,port,ip",
            SetKind::HashIpPortNet => "hash:ip,port,net",
            SetKind::BitmapPort => "bitmap:port",
        }
    }
}

/// One ipset this mode owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetSpec {
    /// Its name (upstream's, with `KUBE-6-` for IPv6).
    pub name: &'static str,
    /// Its type.
    pub kind: SetKind,
    /// Its family (ignored by `bitmap:port`).
    pub family: IpFamily,
    /// What it holds, as upstream's comment says it.
    pub comment: &'static str,
}

/// The most entries a hash set may hold: far above any cluster (upstream keeps ipset's
/// default of 65,536, which large clusters outgrow).
pub const SET_MAX_ELEMENTS: u32 = 1 << 30;

impl SetSpec {
    /// The `ipset create` arguments after the name (for `ipset restore`).
    pub fn create_args(&self) -> String {
        match self.kind {
            SetKind::BitmapPort => format!("{} range 0-65535", self.kind.type_name()),
            kind => {
                let family = match self.family {
                    IpFamily::V4 => "inet",
                    IpFamily::V6 => "inet6",
                };
                format!(
                    "{} family {family} hashsize 1024 maxelem {SET_MAX_ELEMENTS}",
                    kind.type_name()
                )
            }
        }
    }
}

/// One entry of an ipset, typed by its set's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetEntry {
    /// `hash:ip`: an address.
    Ip(IpAddr),
    /// `bitmap:port`: a port.
    Port(u16),
    /// `hash:ip,port`: address, protocol and port.
    IpPort {
        /// The address.
        ip: IpAddr,
        /// The protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
    },
    /// `hash:ip,port,ip`: address, protocol, port and a second address.
    IpPortIp {
        /// The address.
        ip: IpAddr,
        /// The protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
        /// The second address.
        ip2: IpAddr,
    },
    /// `hash:ip,port,net`: address, protocol, port and a network.
    IpPortNet {
        /// The address.
        ip: IpAddr,
        /// The protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
        /// The network (a host address is a full-length prefix).
        net: IpNet,
    },
}

impl fmt::Display for SetEntry {
    /// The entry as `ipset` prints and reads it (`10.0.0.1,tcp:80,10.0.0.0/8`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetEntry::Ip(ip) => write!(f, "{ip}"),
            SetEntry::Port(port) => write!(f, "{port}"),
            SetEntry::IpPort { ip, protocol, port } => {
                write!(f, "{ip},{}:{port}", protocol.as_lower_str())
            }
            SetEntry::IpPortIp {
                ip,
                protocol,
                port,
                ip2,
            } => write!(f, "{ip},{}:{port},{ip2}", protocol.as_lower_str()),
            SetEntry::IpPortNet {
                ip,
                protocol,
                port,
                net,
            } => {
                // ipset prints a host network without its prefix length.
                if net.prefix_len() == net.max_prefix_len() {
                    write!(f, "{ip},{}:{port},{}", protocol.as_lower_str(), net.addr())
                } else {
                    write!(f, "{ip},{}:{port},{net}", protocol.as_lower_str())
                }
            }
        }
    }
}

/// An entry `ipset save` printed that does not fit its set's kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {kind:?} entry: {text:?}")]
pub struct BadEntry {
    /// The set's kind.
    pub kind: SetKind,
    /// What was printed.
    pub text: String,
}

impl SetEntry {
    /// Reads an entry as `ipset save` prints it for a set of `kind`.
    ///
    /// # Errors
    ///
    /// [`BadEntry`] when it does not fit.
    pub fn parse(kind: SetKind, text: &str) -> Result<SetEntry, BadEntry> {
        let bad = || BadEntry {
            kind,
            text: text.to_owned(),
        };
        let proto_port = |part: &str| -> Option<(Protocol, u16)> {
            let (protocol, port) = part.split_once(':')?;
            let protocol = match protocol {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            Some((protocol, port.parse().ok()?))
        };
        let parts: Vec<&str> = text.split(',').collect();
        let entry = match (kind, parts.as_slice()) {
            (SetKind::HashIp, [ip]) => SetEntry::Ip(ip.parse().map_err(|_| bad())?),
            (SetKind::BitmapPort, [port]) => SetEntry::Port(port.parse().map_err(|_| bad())?),
            (SetKind::HashIpPort, [ip, pp]) => {
                let (protocol, port) = proto_port(pp).ok_or_else(bad)?;
                SetEntry::IpPort {
                    ip: ip.parse().map_err(|_| bad())?,
                    protocol,
                    port,
                }
            }
            (SetKind::HashIpPortIp, [ip, pp, ip2]) => {
                let (protocol, port) = proto_port(pp).ok_or_else(bad)?;
                SetEntry::IpPortIp {
                    ip: ip.parse().map_err(|_| bad())?,
                    protocol,
                    port,
                    ip2: ip2.parse().map_err(|_| bad())?,
                }
            }
            (SetKind::HashIpPortNet, [ip, pp, net]) => {
                let (protocol, port) = proto_port(pp).ok_or_else(bad)?;
                let net = match IpNet::from_str(net) {
                    Ok(net) => net,
                    Err(_) => IpNet::from(IpAddr::from_str(net).map_err(|_| bad())?),
                };
                SetEntry::IpPortNet {
                    ip: ip.parse().map_err(|_| bad())?,
                    protocol,
                    port,
                    net,
                }
            }
            _ => return Err(bad()),
        };
        Ok(entry)
    }
}

/// One element change of one ipset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOp {
    /// The set.
    pub set: SetSpec,
    /// The entry.
    pub entry: SetEntry,
    /// Add (`true`) or delete.
    pub add: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_ipset_prints_them() {
        let cases = [
            (SetKind::HashIp, "10.0.0.1"),
            (SetKind::BitmapPort, "30080"),
            (SetKind::HashIpPort, "172.30.0.1,tcp:80"),
            (SetKind::HashIpPort, "fd00::1,udp:53"),
            (SetKind::HashIpPortIp, "10.1.0.5,sctp:8080,10.1.0.5"),
            (SetKind::HashIpPortNet, "1.2.3.4,tcp:80,10.0.0.0/8"),
            (SetKind::HashIpPortNet, "1.2.3.4,tcp:80,192.168.0.2"),
        ];
        for (kind, text) in cases {
            let entry = SetEntry::parse(kind, text).unwrap();
            assert_eq!(entry.to_string(), text);
        }
        assert!(SetEntry::parse(SetKind::HashIpPort, "10.0.0.1").is_err());
        assert!(SetEntry::parse(SetKind::HashIpPort, "10.0.0.1,icmp:0").is_err());
    }
}
