//! Typed keys, values, verdicts and rules: what the dataplane writes, as values that render to
//! nft text (for `nft -f`) and encode to nf_tables netlink bytes ([`crate::netlink`]) from the
//! same fields, so the two paths cannot disagree and nothing is parsed back from text.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_core::{Balancing, IpFamily, Protocol};

use crate::names::family_keyword;

/// The key of a set or map element. Each variant is one layout of the shared sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `cluster-ips`: an address.
    Address(IpAddr),
    /// `hairpin`: `address . address`.
    AddressPair(IpAddr, IpAddr),
    /// `service-ips`, `firewall-ips`, `no-endpoint-services`: `address . protocol . port`.
    Destination(IpAddr, Protocol, u16),
    /// `service-nodeports`, `no-endpoint-nodeports`: `protocol . port`.
    NodePort(Protocol, u16),
    /// An endpoint map: a range of the numbers `numgen` produces, both ends included.
    Slots {
        /// The first number of the range.
        first: u32,
        /// The last number of the range.
        last: u32,
    },
    /// An interval set (`pod-cidrs`): a prefix.
    Prefix(IpNet),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Address(ip) => write!(f, "{ip}"),
            Key::AddressPair(a, b) => write!(f, "{a} . {b}"),
            Key::Destination(ip, protocol, port) => {
                write!(f, "{ip} . {} . {port}", protocol.as_lower_str())
            }
            Key::NodePort(protocol, port) => write!(f, "{} . {port}", protocol.as_lower_str()),
            Key::Slots { first, last } if first == last => write!(f, "{first}"),
            Key::Slots { first, last } => write!(f, "{first}-{last}"),
            Key::Prefix(prefix) => write!(f, "{prefix}"),
        }
    }
}

/// A verdict: in a rule, or as the value of a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `accept`.
    Accept,
    /// `jump CHAIN`: run the chain, then come back.
    Jump(String),
    /// `goto CHAIN`: run the chain instead.
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Drop => f.write_str("drop"),
            Verdict::Accept => f.write_str("accept"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
        }
    }
}

/// The value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A verdict map's value.
    Verdict(Verdict),
    /// An endpoint map's value: `address . port`.
    Endpoint(IpAddr, u16),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Verdict(verdict) => verdict.fmt(f),
            Value::Endpoint(ip, port) => write!(f, "{ip} . {port}"),
        }
    }
}

/// The rule that picks an endpoint: `meta l4proto P dnat F to numgen G mod N offset B map @M`.
///
/// Under random balancing `N` is 65,535 (`RANDOM_MODULUS`) whatever the number of endpoints,
/// and the endpoints split the chain's keys into ranges of (nearly) equal width: adding or
/// removing an endpoint then only rewrites elements of the map, never this rule. A changed rule makes the
/// kernel revalidate every chain reachable from the base chains (`nft_table_validate`), which
/// costs time in proportion to the whole table; map elements that hold no verdict do not.
/// Round robin (`numgen inc`) needs `N` to be the number of endpoints, one key each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRule {
    /// The table's family.
    pub family: IpFamily,
    /// The service port's protocol.
    pub protocol: Protocol,
    /// `numgen random` or `numgen inc`.
    pub balancing: Balancing,
    /// How many keys `numgen` spreads connections over.
    pub modulus: u32,
    /// The first key of the chain's slot.
    pub offset: u32,
    /// The endpoint map.
    pub map: String,
}

impl fmt::Display for DnatRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generator = match self.balancing {
            Balancing::Random => "random",
            Balancing::RoundRobin => "inc",
        };
        write!(
            f,
            "meta l4proto {} dnat {} to numgen {generator} mod {} offset {} map @{}",
            self.protocol.as_lower_str(),
            family_keyword(self.family),
            self.modulus,
            self.offset,
            self.map
        )
    }
}

/// The modulus of random balancing: the keys of a chain's slot, but one. The key after the
/// last is never taken, so the ranges of two slots are never adjacent and a full and an
/// incremental sync cannot leave differently merged intervals.
pub(crate) const RANDOM_MODULUS: u32 = (1 << 16) - 1;

/// A rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The endpoint choice of a policy chain.
    Dnat(DnatRule),
    /// A bare verdict (`jump mark-for-masquerade`, `goto service-…`).
    Verdict(Verdict),
    /// Any other rule, in nft syntax; only `nft -f` applies these.
    Text(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Dnat(rule) => rule.fmt(f),
            Rule::Verdict(verdict) => verdict.fmt(f),
            Rule::Text(text) => f.write_str(text),
        }
    }
}

impl From<String> for Rule {
    fn from(text: String) -> Self {
        Rule::Text(text)
    }
}

impl From<&str> for Rule {
    fn from(text: &str) -> Self {
        Rule::Text(text.to_owned())
    }
}

/// What kind of set a new set is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetSpec {
    /// An endpoint map of `protocol`:
    /// `typeof numgen random mod 1 : ip daddr . tcp dport ; flags interval`.
    EndpointMap(Protocol),
    /// Any other set or map, by its declaration.
    Declared {
        /// `set` or `map`.
        kind: &'static str,
        /// Its declaration body (`type ... ; flags ... ;`).
        body: String,
    },
}

impl SetSpec {
    /// `set` or `map`.
    pub fn kind(&self) -> &'static str {
        match self {
            SetSpec::EndpointMap(_) => "map",
            SetSpec::Declared { kind, .. } => kind,
        }
    }

    /// The declaration body in `family`'s table.
    pub fn body(&self, family: IpFamily) -> String {
        match self {
            SetSpec::EndpointMap(protocol) => format!(
                "typeof numgen random mod 1 : {} daddr . {} dport ; flags interval ;",
                family_keyword(family),
                protocol.as_lower_str()
            ),
            SetSpec::Declared { body, .. } => body.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_nft_spells_them() {
        let ip: IpAddr = "172.30.0.1".parse().unwrap();
        assert_eq!(
            Key::Destination(ip, Protocol::Tcp, 80).to_string(),
            "172.30.0.1 . tcp . 80"
        );
        assert_eq!(
            Key::NodePort(Protocol::Udp, 30000).to_string(),
            "udp . 30000"
        );
        assert_eq!(
            Value::Endpoint("fd00::1".parse().unwrap(), 8080).to_string(),
            "fd00::1 . 8080"
        );
        assert_eq!(
            Key::Slots {
                first: 65_536,
                last: 72_089
            }
            .to_string(),
            "65536-72089"
        );
        assert_eq!(Key::Slots { first: 7, last: 7 }.to_string(), "7");
        assert_eq!(
            Value::Verdict(Verdict::Goto("service-x".into())).to_string(),
            "goto service-x"
        );
        let rule = DnatRule {
            family: IpFamily::V6,
            protocol: Protocol::Tcp,
            balancing: Balancing::RoundRobin,
            modulus: 3,
            offset: 65_536,
            map: "endpoints-tcp-001".into(),
        };
        assert_eq!(
            rule.to_string(),
            "meta l4proto tcp dnat ip6 to numgen inc mod 3 offset 65536 map @endpoints-tcp-001"
        );
    }
}
