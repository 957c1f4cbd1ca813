//! Conntrack flows and the filters that select them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use kproxy_core::{IpFamily, Protocol};

/// The IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// The IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// The IANA protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// The IANA protocol number of a service protocol.
pub fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
    }
}

/// One direction of a conntrack entry: addresses and ports as the packets of that direction
/// carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl FlowTuple {
    /// The source as a socket address.
    pub fn source(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.src_port)
    }

    /// The destination as a socket address.
    pub fn destination(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dst_port)
    }
}

impl fmt::Display for FlowTuple {
    /// `src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2`, as `conntrack -L` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "src={} dst={} sport={} dport={}",
            self.src, self.dst, self.src_port, self.dst_port
        )
    }
}

/// One entry of the kernel's conntrack table (only the fields this crate needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The entry's IP family.
    pub family: IpFamily,
    /// The IANA protocol number ([`IPPROTO_UDP`], ...).
    pub protocol: u8,
    /// The tuple of the original direction (as the first packet was sent, before NAT).
    pub original: FlowTuple,
    /// The tuple of the reply direction (after NAT: its source is the DNAT target).
    pub reply: FlowTuple,
    /// Whether a packet was seen in the reply direction (`conntrack -L` prints `[UNREPLIED]`
    /// when not).
    pub replied: bool,
    /// The conntrack zone, 0 being the default one.
    pub zone: u16,
}

impl Flow {
    /// Whether the flow was destination-NATed: its reply does not come from where the
    /// original packet was sent.
    pub fn is_dnat(&self) -> bool {
        self.reply.source() != self.original.destination()
    }
}

impl fmt::Display for Flow {
    /// `udp 17 src=... dst=... sport=... dport=... [UNREPLIED] src=... ...`, close to
    /// `conntrack -L`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.protocol {
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            IPPROTO_SCTP => "sctp",
            _ => "proto",
        };
        write!(f, "{name} {} {}", self.protocol, self.original)?;
        if !self.replied {
            f.write_str(" [UNREPLIED]")?;
        }
        write!(f, " {}", self.reply)?;
        if self.zone != 0 {
            write!(f, " zone={}", self.zone)?;
        }
        Ok(())
    }
}

/// Selects conntrack flows: a flow matches when it has the filter's family and protocol and
/// every field that is `Some` equals the flow's.
///
/// The fields mirror `conntrack -D`'s options: `--orig-dst`, `--orig-port-dst`, `--reply-src`
/// and `--reply-port-src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConntrackFilter {
    /// The IP family of the flows.
    pub family: IpFamily,
    /// The protocol of the flows.
    pub protocol: Protocol,
    /// The destination of the original direction (a service IP).
    pub original_dst_ip: Option<IpAddr>,
    /// The destination port of the original direction (a service port or node port).
    pub original_dst_port: Option<u16>,
    /// The source of the reply direction (the endpoint the flow was DNATed to).
    pub reply_src_ip: Option<IpAddr>,
    /// The source port of the reply direction (the endpoint's port).
    pub reply_src_port: Option<u16>,
}

impl ConntrackFilter {
    /// Flows to a service address and port (`--orig-dst IP --orig-port-dst PORT`), whatever
    /// they were DNATed to.
    pub fn to_service(protocol: Protocol, ip: IpAddr, port: u16) -> Self {
        Self {
            family: IpFamily::of(&ip),
            protocol,
            original_dst_ip: Some(ip),
            original_dst_port: Some(port),
            reply_src_ip: None,
            reply_src_port: None,
        }
    }

    /// Flows to a node port of `family` (`--orig-port-dst PORT`), on any address.
    pub fn to_node_port(family: IpFamily, protocol: Protocol, node_port: u16) -> Self {
        Self {
            family,
            protocol,
            original_dst_ip: None,
            original_dst_port: Some(node_port),
            reply_src_ip: None,
            reply_src_port: None,
        }
    }

    /// The same filter, narrowed to flows DNATed to `endpoint` (`--reply-src IP
    /// --reply-port-src PORT`).
    pub fn via_endpoint(self, endpoint: SocketAddr) -> Self {
        Self {
            reply_src_ip: Some(endpoint.ip()),
            reply_src_port: Some(endpoint.port()),
            ..self
        }
    }

    /// Whether `flow` is selected by this filter.
    pub fn matches(&self, flow: &Flow) -> bool {
        flow.family == self.family
            && flow.protocol == protocol_number(self.protocol)
            && self
                .original_dst_ip
                .is_none_or(|ip| ip == flow.original.dst)
            && self
                .original_dst_port
                .is_none_or(|port| port == flow.original.dst_port)
            && self.reply_src_ip.is_none_or(|ip| ip == flow.reply.src)
            && self
                .reply_src_port
                .is_none_or(|port| port == flow.reply.src_port)
    }
}

impl fmt::Display for ConntrackFilter {
    /// The filter as `conntrack -D` options, e.g. `-f ipv4 -p udp --orig-dst 172.30.0.10
    /// --orig-port-dst 53 --reply-src 10.0.0.1 --reply-port-src 53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.family {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        };
        write!(f, "-f {family} -p {}", self.protocol.as_lower_str())?;
        if let Some(ip) = self.original_dst_ip {
            write!(f, " --orig-dst {ip}")?;
        }
        if let Some(port) = self.original_dst_port {
            write!(f, " --orig-port-dst {port}")?;
        }
        if let Some(ip) = self.reply_src_ip {
            write!(f, " --reply-src {ip}")?;
        }
        if let Some(port) = self.reply_src_port {
            write!(f, " --reply-port-src {port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(orig_dst: &str, reply_src: &str) -> Flow {
        let orig_dst: SocketAddr = orig_dst.parse().unwrap();
        let reply_src: SocketAddr = reply_src.parse().unwrap();
        let client: SocketAddr = "192.168.0.2:40000".parse().unwrap();
        Flow {
            family: IpFamily::of(&client.ip()),
            protocol: IPPROTO_UDP,
            original: FlowTuple {
                src: client.ip(),
                dst: orig_dst.ip(),
                src_port: client.port(),
                dst_port: orig_dst.port(),
            },
            reply: FlowTuple {
                src: reply_src.ip(),
                dst: client.ip(),
                src_port: reply_src.port(),
                dst_port: client.port(),
            },
            replied: false,
            zone: 0,
        }
    }

    #[test]
    fn service_filter_matches_any_dnat_target() {
        let filter = ConntrackFilter::to_service(Protocol::Udp, "172.30.0.10".parse().unwrap(), 53);
        assert!(filter.matches(&flow("172.30.0.10:53", "10.0.0.1:5353")));
        assert!(filter.matches(&flow("172.30.0.10:53", "172.30.0.10:53")));
        assert!(!filter.matches(&flow("172.30.0.10:54", "10.0.0.1:5353")));
        assert!(!filter.matches(&flow("172.30.0.11:53", "10.0.0.1:5353")));
    }

    #[test]
    fn endpoint_filter_needs_the_reply_source() {
        let filter = ConntrackFilter::to_service(Protocol::Udp, "172.30.0.10".parse().unwrap(), 53)
            .via_endpoint("10.0.0.1:5353".parse().unwrap());
        assert!(filter.matches(&flow("172.30.0.10:53", "10.0.0.1:5353")));
        assert!(!filter.matches(&flow("172.30.0.10:53", "10.0.0.2:5353")));
        assert!(!filter.matches(&flow("172.30.0.10:53", "10.0.0.1:53")));
    }

    #[test]
    fn node_port_filter_ignores_the_address_but_not_the_family_or_protocol() {
        let filter = ConntrackFilter::to_node_port(IpFamily::V4, Protocol::Udp, 30053);
        assert!(filter.matches(&flow("192.168.0.2:30053", "10.0.0.1:53")));
        assert!(filter.matches(&flow("127.0.0.1:30053", "10.0.0.1:53")));
        assert!(!filter.matches(&flow("192.168.0.2:30054", "10.0.0.1:53")));
        let mut tcp = flow("192.168.0.2:30053", "10.0.0.1:53");
        tcp.protocol = IPPROTO_TCP;
        assert!(!filter.matches(&tcp));
        let mut v6 = flow("192.168.0.2:30053", "10.0.0.1:53");
        v6.family = IpFamily::V6;
        assert!(!filter.matches(&v6));
    }

    #[test]
    fn displays_like_the_cli() {
        let filter = ConntrackFilter::to_service(Protocol::Udp, "fd00::10".parse().unwrap(), 53)
            .via_endpoint("[fd00::1]:5353".parse().unwrap());
        assert_eq!(
            filter.to_string(),
            "-f ipv6 -p udp --orig-dst fd00::10 --orig-port-dst 53 --reply-src fd00::1 --reply-port-src 5353"
        );
        let f = flow("172.30.0.10:53", "10.0.0.1:5353");
        assert!(f.is_dnat());
        assert_eq!(
            f.to_string(),
            "udp 17 src=192.168.0.2 dst=172.30.0.10 sport=40000 dport=53 [UNREPLIED] \
             src=10.0.0.1 dst=192.168.0.2 sport=5353 dport=40000"
        );
        assert!(!flow("172.30.0.10:53", "172.30.0.10:53").is_dnat());
    }
}
