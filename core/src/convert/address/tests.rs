//! The legacy ("sloppy") address rules, case by case and as properties.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

fn ip(text: &str) -> Option<String> {
    parse_ip(text).ok().map(|ip| ip.to_string())
}

fn cidr(text: &str) -> Option<String> {
    parse_cidr(text).ok().map(|net| net.to_string())
}

#[test]
fn ipv4_leading_zeros_are_decimal_not_octal() {
    assert_eq!(ip("10.96.0.010").as_deref(), Some("10.96.0.10"));
    // Octal 010 would be 8, 0377 would be 255: upstream reads decimal.
    assert_eq!(ip("010.008.011.012").as_deref(), Some("10.8.11.12"));
    assert_eq!(ip("000.000.000.000").as_deref(), Some("0.0.0.0"));
    assert_eq!(ip("192.168.000.001").as_deref(), Some("192.168.0.1"));
}

#[test]
fn ipv4_fields_may_have_more_than_three_digits_when_the_value_fits() {
    // Go's dtoi keeps reading digits while the value stays small: only the value counts.
    assert_eq!(ip("10.96.0.0000010").as_deref(), Some("10.96.0.10"));
    assert_eq!(ip("0255.0.0.1").as_deref(), Some("255.0.0.1"));
    assert_eq!(ip("0256.0.0.1"), None);
    assert_eq!(
        ip(&format!("1.2.3.{}7", "0".repeat(1000))).as_deref(),
        Some("1.2.3.7")
    );
}

#[test]
fn ipv4_invalid_spellings_stay_invalid() {
    for bad in [
        "256.0.0.1",
        "10.96.0.300",
        "0x0a.0.0.1",
        "0xa.0.0.1",
        "10.96.0",
        "10.1",
        "10.96.0.1.",
        ".10.96.0.1",
        "10..0.1",
        "10.96.0.1.5",
        "+10.96.0.1",
        "10.96.0.-1",
        "10.96.0.1 ",
        " 10.96.0.1",
        "10.96.0.01a",
        "167772161",
        "",
        "١٠.0.0.1",
    ] {
        assert_eq!(ip(bad), None, "{bad:?}");
    }
}

#[test]
fn ipv6_is_read_as_before_with_go_1_16s_extra_leading_zeros() {
    assert_eq!(ip("fd00::1").as_deref(), Some("fd00::1"));
    assert_eq!(ip("FD00:0:0:0:0:0:0:0001").as_deref(), Some("fd00::1"));
    assert_eq!(ip("fd00::00001").as_deref(), Some("fd00::1"));
    assert_eq!(ip("fd00::0000ffff").as_deref(), Some("fd00::ffff"));
    assert_eq!(ip("fd00::10000"), None);
    assert_eq!(ip("fd00::1%eth0"), None);
    assert_eq!(ip("fd00:::1"), None);
    assert_eq!(ip("fd00::1::2"), None);
    assert_eq!(ip("fd00::g"), None);
    // An embedded IPv4 tail follows the IPv4 rule, and only at the end.
    assert_eq!(ip("64:ff9b::10.0.0.010").as_deref(), Some("64:ff9b::a00:a"));
    assert_eq!(ip("64:ff9b::10.0.0.256"), None);
    assert_eq!(ip("::10.0.0.1:1"), None);
}

#[test]
fn ipv4_mapped_ipv6_is_ipv4_as_in_go() {
    assert_eq!(
        parse_ip_spelled("::ffff:10.0.0.1"),
        Ok((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), Spelling::Legacy))
    );
    assert_eq!(ip("::ffff:10.0.0.010").as_deref(), Some("10.0.0.10"));
    assert_eq!(ip("::ffff:a00:1").as_deref(), Some("10.0.0.1"));
    // IPv4-compatible (deprecated, no ffff) is IPv6 in Go too.
    assert!(parse_ip("::10.0.0.1").unwrap().is_ipv6());
}

#[test]
fn spelling_tells_legacy_forms_apart() {
    assert_eq!(
        parse_ip_spelled("10.96.0.10").unwrap().1,
        Spelling::Standard
    );
    assert_eq!(parse_ip_spelled("10.96.0.010").unwrap().1, Spelling::Legacy);
    assert_eq!(parse_ip_spelled("fd00::1").unwrap().1, Spelling::Standard);
    assert_eq!(parse_ip_spelled("fd00::00001").unwrap().1, Spelling::Legacy);
    assert_eq!(
        parse_cidr_spelled("10.0.0.0/8").unwrap().1,
        Spelling::Standard
    );
    // Host bits are accepted by strict parsers too.
    assert_eq!(
        parse_cidr_spelled("10.0.0.1/8").unwrap().1,
        Spelling::Standard
    );
    assert_eq!(
        parse_cidr_spelled("10.0.0.0/08").unwrap().1,
        Spelling::Legacy
    );
    assert_eq!(
        parse_cidr_spelled("010.0.0.0/8").unwrap().1,
        Spelling::Legacy
    );
    assert_eq!(
        parse_cidr_spelled("::ffff:10.0.0.0/104").unwrap().1,
        Spelling::Legacy
    );
}

#[test]
fn cidrs_take_legacy_addresses_and_lengths_and_clear_host_bits() {
    assert_eq!(cidr("192.168.000.0/24").as_deref(), Some("192.168.0.0/24"));
    assert_eq!(cidr("192.168.000.1/24").as_deref(), Some("192.168.0.0/24"));
    assert_eq!(cidr("10.244.000.0/16").as_deref(), Some("10.244.0.0/16"));
    assert_eq!(cidr("10.0.0.0/024").as_deref(), Some("10.0.0.0/24"));
    assert_eq!(cidr("10.0.0.7/32").as_deref(), Some("10.0.0.7/32"));
    assert_eq!(cidr("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
    assert_eq!(cidr("fd00::00001/64").as_deref(), Some("fd00::/64"));
    assert_eq!(cidr("fd00::1/0128").as_deref(), Some("fd00::1/128"));
}

#[test]
fn cidrs_of_ipv4_mapped_networks_follow_go() {
    // Go masks the 16-byte form; from /96 on the network is still mapped, so IPv4.
    assert_eq!(cidr("::ffff:10.0.0.0/104").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(cidr("::ffff:10.1.2.3/120").as_deref(), Some("10.1.2.0/24"));
    assert_eq!(cidr("::ffff:0:0/96").as_deref(), Some("0.0.0.0/0"));
    // Shorter, the ffff is masked away and the network is IPv6.
    assert_eq!(cidr("::ffff:10.0.0.0/64").as_deref(), Some("::/64"));
}

#[test]
fn invalid_cidrs_stay_invalid() {
    for bad in [
        "10.0.0.0",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/0033",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "10.0.0.0/0x8",
        "10.0.0.256/8",
        "/8",
        "fd00::/129",
        "10.0.0.0 /8",
        "10.0.0.0/8 ",
    ] {
        assert_eq!(cidr(bad), None, "{bad:?}");
    }
}

#[test]
fn ip_ports_are_read_with_legacy_addresses() {
    let read = |text: &str| parse_ip_port(text).ok().map(|addr| addr.to_string());
    assert_eq!(read("0.0.0.0:10256").as_deref(), Some("0.0.0.0:10256"));
    assert_eq!(
        read("127.000.000.001:10249").as_deref(),
        Some("127.0.0.1:10249")
    );
    assert_eq!(read("[::1]:10249").as_deref(), Some("[::1]:10249"));
    assert_eq!(
        read("[::ffff:127.0.0.1]:80").as_deref(),
        Some("127.0.0.1:80")
    );
    assert_eq!(read("10.0.0.1:080").as_deref(), Some("10.0.0.1:80"));
    assert_eq!(read("10.0.0.1:0").as_deref(), Some("10.0.0.1:0"));
    for bad in [
        "10.0.0.1",
        "10.0.0.1:",
        "10.0.0.1:65536",
        "::1:80",
        "[::1]",
        "[::1]80",
        "host:80",
        ":80",
    ] {
        assert_eq!(read(bad), None, "{bad:?}");
    }
}

#[test]
fn errors_name_the_text_and_what_it_should_be() {
    assert_eq!(
        parse_ip("10.0.0.x").unwrap_err().to_string(),
        r#""10.0.0.x" is not an IP address"#
    );
    assert_eq!(parse_cidr("10.0.0.0").unwrap_err().kind, AddressKind::Cidr);
}

/// A zero-padded spelling of `octet`: `pad` extra zeros in front.
fn padded(octet: u8, pad: usize) -> String {
    format!("{}{octet}", "0".repeat(pad))
}

proptest! {
    #[test]
    fn canonical_addresses_round_trip(v4 in any::<u32>(), v6 in any::<u128>()) {
        let v4 = Ipv4Addr::from(v4);
        prop_assert_eq!(parse_ip_spelled(&v4.to_string()), Ok((IpAddr::V4(v4), Spelling::Standard)));
        let v6 = Ipv6Addr::from(v6);
        // Mapped forms are IPv4 by design; every other IPv6 address reads back as itself.
        let expected = IpAddr::V6(v6).to_canonical();
        prop_assert_eq!(parse_ip(&v6.to_string()), Ok(expected));
    }

    #[test]
    fn any_zero_padding_of_an_ipv4_reads_as_the_same_address(
        octets in any::<[u8; 4]>(),
        pads in proptest::array::uniform4(0usize..5),
    ) {
        let text = octets
            .iter()
            .zip(pads)
            .map(|(octet, pad)| padded(*octet, pad))
            .collect::<Vec<_>>()
            .join(".");
        let spelling = if pads.iter().any(|&pad| pad > 0) { Spelling::Legacy } else { Spelling::Standard };
        prop_assert_eq!(parse_ip_spelled(&text), Ok((IpAddr::V4(Ipv4Addr::from(octets)), spelling)));
    }

    #[test]
    fn any_zero_padding_of_a_cidr_reads_as_its_network(
        octets in any::<[u8; 4]>(),
        pad in 0usize..4,
        length in 0u8..=32,
        length_pad in 0usize..3,
    ) {
        let address = octets.map(|octet| padded(octet, pad)).join(".");
        let text = format!("{address}/{}{length}", "0".repeat(length_pad));
        let expected = IpNet::new(IpAddr::V4(Ipv4Addr::from(octets)), length).unwrap().trunc();
        prop_assert_eq!(parse_cidr(&text), Ok(expected));
    }

    #[test]
    fn a_field_above_255_is_invalid_however_it_is_padded(
        value in 256u32..100_000,
        pad in 0usize..4,
        position in 0usize..4,
    ) {
        let mut fields = vec!["1".to_owned(); 4];
        fields[position] = format!("{}{value}", "0".repeat(pad));
        prop_assert!(parse_ip(&fields.join(".")).is_err());
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[0-9a-fA-Fx.:/\\[\\]%+ -]{0,48}") {
        let _ = parse_ip(&text);
        let _ = parse_cidr(&text);
        let _ = parse_ip_port(&text);
    }

    #[test]
    fn whatever_parses_strictly_parses_the_same_here(text in "[0-9a-f.:]{1,40}") {
        if let Ok(strict) = text.parse::<IpAddr>() {
            prop_assert_eq!(parse_ip(&text), Ok(strict.to_canonical()));
        }
    }
}
