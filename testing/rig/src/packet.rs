//! What the kit's servers and probes say to each other: the packet a probe sends, and the
//! one-line answer every server gives (`kpt ROLE KIND LOCAL PEER`), which tells where a packet
//! arrived after any DNAT and which source it carried after any SNAT.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use kproxy_core::Protocol;

/// One packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Probe {
    /// The source address (decides the namespace it is sent from).
    pub src: IpAddr,
    /// The destination address.
    pub dst: IpAddr,
    /// The destination port.
    pub dport: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl Probe {
    /// A TCP probe.
    pub fn tcp(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self {
            src,
            dst,
            dport,
            protocol: Protocol::Tcp,
        }
    }

    /// A UDP probe.
    pub fn udp(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self {
            src,
            dst,
            dport,
            protocol: Protocol::Udp,
        }
    }

    /// The destination address and port.
    pub fn destination(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.protocol,
            self.src,
            self.destination()
        )
    }
}

/// A server's answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reply {
    /// The role of the namespace that answered (`node`, `pod`, `client`, `gateway`).
    pub role: String,
    /// `endpoint` or `bystander`.
    pub kind: String,
    /// Where the packet arrived (after any DNAT).
    pub local: SocketAddr,
    /// The source the server saw (after any SNAT).
    pub peer: SocketAddr,
}

impl FromStr for Reply {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["kpt", role, kind, local, peer] => Ok(Reply {
                role: (*role).to_owned(),
                kind: (*kind).to_owned(),
                local: local
                    .parse()
                    .map_err(|_| format!("bad local address in {line:?}"))?,
                peer: peer
                    .parse()
                    .map_err(|_| format!("bad peer address in {line:?}"))?,
            }),
            _ => Err(format!("not a kit server's answer: {line:?}")),
        }
    }
}

/// The line a server answers with.
pub(crate) fn answer(role: &str, kind: &str, local: SocketAddr, peer: SocketAddr) -> String {
    format!("kpt {role} {kind} {local} {peer}\n")
}
