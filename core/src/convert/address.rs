//! IP addresses and CIDRs read the way upstream kube-proxy reads them, legacy spellings
//! included.
//!
//! Objects stored before the API server validated IPs strictly (KEP-4858) can hold IPv4
//! numbers with leading zeros (`10.96.0.010`, `192.168.000.0/24`). Upstream kube-proxy reads
//! every address and CIDR with `k8s.io/utils/net`'s `ParseIPSloppy` / `ParseCIDRSloppy`, a
//! fork of Go 1.16's `net.ParseIP` / `net.ParseCIDR` that still allows those zeros and reads
//! the number as **decimal** (never octal, unlike libc's `inet_aton`). Rust's
//! [`Ipv4Addr::from_str`](std::net::Ipv4Addr) rejects them, as Go ≥ 1.17 does; this module
//! accepts exactly what the fork accepts, so such a Service is programmed as upstream programs
//! it instead of being dropped.
//!
//! # Rules (those of Go 1.16's parser)
//!
//! - **IPv4**: four dot-separated fields of ASCII decimal digits, each at most 255. Any number
//!   of leading zeros (`010` is ten, `0000010` too); no sign, no `0x`, no empty field, no
//!   shorthand (`10.1` is invalid), nothing after the fourth field.
//! - **IPv6**: as the standard parser, except that a group may carry leading zeros beyond four
//!   digits (`::00001`) as long as its value fits 16 bits, and an embedded IPv4 tail follows
//!   the IPv4 rule above (`::ffff:10.0.0.010`). No zone (`%eth0`).
//! - **IPv4-mapped IPv6** (`::ffff:10.0.0.1`) is an IPv4 address: Go keeps IPv4 addresses in
//!   that form and every family test upstream makes (`To4() != nil`) calls it IPv4, so it is
//!   returned as [`IpAddr::V4`]. IPv4-compatible `::10.0.0.1` stays IPv6, as in Go.
//! - **CIDR**: `address/length`, the address as above, the length ASCII decimal digits
//!   (leading zeros allowed, `/024`), at most 32 or 128. Host bits are cleared, as Go's
//!   `ParseCIDR` returns the masked network and kube-proxy uses that network everywhere
//!   (source ranges, cluster CIDR, node-port addresses): `192.168.000.1/24` is
//!   `192.168.0.0/24`. An IPv4-mapped network of length 96 or more is the IPv4 network of
//!   length − 96 (how Go prints and classifies it); a shorter one stays IPv6.
//! - Nothing is trimmed: surrounding whitespace is the caller's decision.
//!
//! The result is always the canonical value; nothing downstream sees the spelling. Callers
//! that want to tell legacy spellings apart (to log them) use [`parse_ip_spelled`] and
//! [`parse_cidr_spelled`].
//!
//! ```
//! use kproxy_core::convert::{parse_cidr, parse_ip};
//! assert_eq!(parse_ip("10.96.0.010").unwrap().to_string(), "10.96.0.10");
//! assert_eq!(parse_cidr("192.168.000.1/24").unwrap().to_string(), "192.168.0.0/24");
//! assert!(parse_ip("10.96.0.256").is_err());
//! assert!(parse_ip("0x0a.0.0.1").is_err());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// How an address or CIDR was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// A form today's strict parsers accept (Rust's standard library, Go ≥ 1.17). A CIDR
    /// with host bits set is still `Standard`: strict parsers accept it too.
    Standard,
    /// A form only the legacy parsers accept: leading zeros in an IPv4 number, an IPv6 group
    /// or a prefix length, or an IPv4-mapped IPv6 address read as IPv4.
    Legacy,
}

/// What was being read when [`AddressError`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// An IP address.
    Ip,
    /// A CIDR (`address/length`).
    Cidr,
    /// An `IP:port` pair.
    IpPort,
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressKind::Ip => "an IP address",
            AddressKind::Cidr => "a CIDR",
            AddressKind::IpPort => "an IP:port",
        })
    }
}

/// A text that is not an address (or CIDR) even by the legacy rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not {kind}")]
pub struct AddressError {
    /// What the text should have been.
    pub kind: AddressKind,
    /// The text.
    pub text: String,
}

impl AddressError {
    fn new(kind: AddressKind, text: &str) -> Self {
        Self {
            kind,
            text: text.to_owned(),
        }
    }
}

/// Reads an IP address as upstream's `ParseIPSloppy` does (see the [module](self) rules).
///
/// # Errors
/// When `text` is not an address even by the legacy rules.
pub fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    parse_ip_spelled(text).map(|(ip, _)| ip)
}

/// [`parse_ip`], also saying whether the text used a legacy spelling.
///
/// # Errors
/// When `text` is not an address even by the legacy rules.
pub fn parse_ip_spelled(text: &str) -> Result<(IpAddr, Spelling), AddressError> {
    let (ip, spelling) = address(text).ok_or_else(|| AddressError::new(AddressKind::Ip, text))?;
    let canonical = ip.to_canonical();
    let spelling = if canonical == ip {
        spelling
    } else {
        Spelling::Legacy
    };
    Ok((canonical, spelling))
}

/// Reads a CIDR as upstream's `ParseCIDRSloppy` does and returns its network (host bits
/// cleared); see the [module](self) rules. A bare address is not a CIDR.
///
/// # Errors
/// When `text` is not a CIDR even by the legacy rules.
pub fn parse_cidr(text: &str) -> Result<IpNet, AddressError> {
    parse_cidr_spelled(text).map(|(net, _)| net)
}

/// [`parse_cidr`], also saying whether the text used a legacy spelling.
///
/// # Errors
/// When `text` is not a CIDR even by the legacy rules.
pub fn parse_cidr_spelled(text: &str) -> Result<(IpNet, Spelling), AddressError> {
    let error = || AddressError::new(AddressKind::Cidr, text);
    // Go splits at the first '/'; a second one makes the length invalid.
    let (addr, length) = text.split_once('/').ok_or_else(error)?;
    let (ip, mut spelling) = address(addr).ok_or_else(error)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let (length, padded) = decimal(length, max).ok_or_else(error)?;
    if padded {
        spelling = Spelling::Legacy;
    }
    let length = u8::try_from(length).map_err(|_| error())?;
    let net = match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, length).map_err(|_| error())?.trunc()),
        IpAddr::V6(v6) => {
            let net = Ipv6Net::new(v6, length).map_err(|_| error())?.trunc();
            match net.network().to_ipv4_mapped() {
                Some(v4) if net.prefix_len() >= 96 => {
                    spelling = Spelling::Legacy;
                    IpNet::V4(Ipv4Net::new(v4, net.prefix_len() - 96).map_err(|_| error())?)
                }
                _ => IpNet::V6(net),
            }
        }
    };
    Ok((net, spelling))
}

/// Reads `IP:port` (`[IPv6]:port` for IPv6), the IP by [`parse_ip`] and the port as ASCII
/// decimal digits (leading zeros allowed) up to 65535, as upstream's `validateHostPort`
/// (Go's `SplitHostPort`, then `ParseIPSloppy`) takes it. Port 0 is returned as is.
///
/// # Errors
/// When `text` is not an `IP:port` even by the legacy rules.
pub fn parse_ip_port(text: &str) -> Result<std::net::SocketAddr, AddressError> {
    let error = || AddressError::new(AddressKind::IpPort, text);
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(error)?;
        (host, after.strip_prefix(':').ok_or_else(error)?)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(error)?;
        // An unbracketed IPv6 host is ambiguous; Go's SplitHostPort refuses it.
        if host.contains(':') {
            return Err(error());
        }
        (host, port)
    };
    let ip = parse_ip(host).map_err(|_| error())?;
    let (port, _) = decimal(port, u32::from(u16::MAX)).ok_or_else(error)?;
    let port = u16::try_from(port).map_err(|_| error())?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// An address as Go 1.16's `ParseIP` reads it, before IPv4-mapped forms are made IPv4.
fn address(text: &str) -> Option<(IpAddr, Spelling)> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some((ip, Spelling::Standard));
    }
    // Go picks the family by whichever of '.' and ':' comes first.
    let ip = match text.find(['.', ':'])? {
        i if text.as_bytes()[i] == b'.' => IpAddr::V4(ipv4(text)?),
        _ => IpAddr::V6(ipv6(text)?),
    };
    Some((ip, Spelling::Legacy))
}

/// A dotted quad whose fields may carry leading zeros.
fn ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut fields = text.split('.');
    for octet in &mut octets {
        let (value, _) = decimal(fields.next()?, 255)?;
        *octet = u8::try_from(value).ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// An IPv6 address whose groups may carry leading zeros beyond four digits and whose IPv4
/// tail may carry them too: rewritten to the standard spelling, then parsed by the standard
/// library, which checks the structure (one `::`, eight groups, where a tail may stand).
fn ipv6(text: &str) -> Option<Ipv6Addr> {
    let groups: Vec<&str> = text.split(':').collect();
    let last = groups.len() - 1;
    let mut rewritten = String::with_capacity(text.len());
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            rewritten.push(':');
        }
        if group.contains('.') {
            if i != last {
                return None;
            }
            rewritten.push_str(&ipv4(group)?.to_string());
        } else if group.len() > 4 {
            if !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let digits = group.trim_start_matches('0');
            // More than four significant digits is more than 16 bits.
            if digits.len() > 4 {
                return None;
            }
            rewritten.push_str(if digits.is_empty() { "0" } else { digits });
        } else {
            rewritten.push_str(group);
        }
    }
    rewritten.parse().ok()
}

/// ASCII decimal digits, leading zeros allowed, value at most `max`; also whether a leading
/// zero was present (a legacy spelling).
fn decimal(text: &str, max: u32) -> Option<(u32, bool)> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: u32 = 0;
    for digit in text.bytes() {
        value = value * 10 + u32::from(digit - b'0');
        // Checked at every digit, so the value never overflows however long the text is.
        if value > max {
            return None;
        }
    }
    let padded = text.len() > 1 && text.starts_with('0');
    Some((value, padded))
}

#[cfg(test)]
mod tests;
