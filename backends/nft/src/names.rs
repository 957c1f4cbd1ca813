//! Names of every table, chain, set and map this backend writes.
//!
//! Per-service names follow upstream kube-proxy's nftables mode: a readable base
//! (`ns/svc/proto/port`) prefixed by a short hash of it, so that two long names that truncate
//! to the same prefix still differ, and the whole fits nft's 256-byte identifier limit.

use std::net::IpAddr;

use data_encoding::BASE32;
use kproxy_core::{IpFamily, Protocol, ServicePortName};
use sha2::{Digest, Sha256};

/// The table name, in both the `ip` and the `ip6` family.
pub const TABLE: &str = "kube-proxy";

/// Filter chain hooked at prerouting, before DNAT (firewall checks).
pub const FILTER_PREROUTING: &str = "filter-prerouting";
/// Filter chain hooked at input, before DNAT (node-port and external-IP endpoint checks).
pub const FILTER_INPUT: &str = "filter-input";
/// Filter chain hooked at forward, before DNAT.
pub const FILTER_FORWARD: &str = "filter-forward";
/// Filter chain hooked at output, before DNAT.
pub const FILTER_OUTPUT: &str = "filter-output";
/// Filter chain hooked at output, after DNAT (cluster-IP checks for local traffic).
pub const FILTER_OUTPUT_POST_DNAT: &str = "filter-output-post-dnat";
/// NAT chain hooked at prerouting.
pub const NAT_PREROUTING: &str = "nat-prerouting";
/// NAT chain hooked at output.
pub const NAT_OUTPUT: &str = "nat-output";
/// NAT chain hooked at postrouting.
pub const NAT_POSTROUTING: &str = "nat-postrouting";

/// Dispatches service traffic by destination through [`SERVICE_IPS`] and [`SERVICE_NODEPORTS`].
pub const SERVICES: &str = "services";
/// Masquerades marked packets and hairpin connections.
pub const MASQUERADING: &str = "masquerading";
/// Marks a packet for masquerading.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Rejects; the target of no-endpoint verdicts.
pub const REJECT_CHAIN: &str = "reject-chain";
/// Drops traffic from outside a load balancer's source ranges.
pub const FIREWALL_CHECK: &str = "firewall-check";
/// Rejects or drops traffic to service IPs without usable endpoints.
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
/// Rejects or drops traffic to node ports without usable endpoints.
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
/// Rejects traffic to unused ports of cluster IPs and drops traffic to unallocated ones.
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";

/// Verdict map: destination IP . protocol . port → the service's chain.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: protocol . node port → the service's external chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: load-balancer IP . protocol . port → the service's firewall chain.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Verdict map: service IP . protocol . port → reject or drop, for services without endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: protocol . node port → reject or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set of every cluster IP.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of `endpoint . endpoint` address pairs: a DNATed connection from an endpoint to
/// itself is masqueraded, or the endpoint would answer itself.
pub const HAIRPIN: &str = "hairpin";

/// How many endpoint maps the DNAT targets are spread over; see [`endpoint_map`].
pub const ENDPOINT_MAP_SHARDS: u32 = 1024;

/// The map holding the DNAT targets of the `protocol` policy chains in `shard`.
///
/// Every rule that looks up a map costs the kernel a pass over the map's other users each time
/// an element is added, so one map for the whole cluster makes a full sync quadratic, and one
/// map per service makes every lookup walk the table's list of sets. A fixed number of shards
/// keeps both costs small. Binding a rule to a map also walks the map's elements (nft loads an
/// interval map's elements with the map), so a full sync costs rules × elements per map: 1,024
/// shards made the full sync of 40,000 Services 1.5× faster than 256, while more would make the
/// lookups by name the larger cost.
///
/// Maps are per protocol because nft types a map's port by protocol (`tcp dport`), and refuses
/// a rule whose protocol differs from the map's.
pub fn endpoint_map(protocol: Protocol, shard: u32) -> String {
    format!(
        "{ENDPOINT_MAP_PREFIX}{}-{shard:03}",
        protocol.as_lower_str()
    )
}

/// The protocol of the endpoint map `name`, or `None` when `name` is not an endpoint map.
pub fn endpoint_map_protocol(name: &str) -> Option<Protocol> {
    match name.strip_prefix(ENDPOINT_MAP_PREFIX)?.split('-').next()? {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The prefix of every endpoint map's name.
pub const ENDPOINT_MAP_PREFIX: &str = "endpoints-";

/// The nft family keyword of a table.
pub fn family_keyword(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

/// Upstream's `servicePortChainNameBase`: `ns/svc/proto/port`.
fn port_base(name: &ServicePortName) -> String {
    format!(
        "{}/{}/{}/{}",
        name.namespace,
        name.name,
        name.protocol.as_lower_str(),
        name.port
    )
}

/// Prefixes `base` with eight base32 characters of its SHA-256 and truncates the whole to nft's
/// identifier limit (upstream's `hashAndTruncate`).
fn hashed(prefix: &str, base: &str) -> String {
    const MAX_NAME: usize = 255;
    let digest = Sha256::digest(base.as_bytes());
    let hash = BASE32.encode(&digest);
    let mut name = format!("{prefix}-{}-{base}", &hash[..8]);
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// The chain holding the Cluster-policy endpoints of a service port.
pub fn cluster_chain(name: &ServicePortName) -> String {
    hashed("service", &port_base(name))
}

/// The chain holding the Local-policy endpoints of a service port.
pub fn local_chain(name: &ServicePortName) -> String {
    hashed("local", &port_base(name))
}

/// The chain external traffic (node port, external IP, load-balancer IP) enters.
pub fn external_chain(name: &ServicePortName) -> String {
    hashed("external", &port_base(name))
}

/// The chain enforcing `loadBalancerSourceRanges`.
pub fn firewall_chain(name: &ServicePortName) -> String {
    hashed("firewall", &port_base(name))
}

/// `ip/port`, with an IPv6 address's colons as dots: nft identifiers allow no colon.
fn endpoint_base(name: &ServicePortName, address: IpAddr, port: u16) -> String {
    let address = address.to_string().replace(':', ".");
    format!("{}__{address}/{port}", port_base(name))
}

/// The per-endpoint chain of a session-affinity service port.
pub fn endpoint_chain(name: &ServicePortName, address: IpAddr, port: u16) -> String {
    hashed("endpoint", &endpoint_base(name, address, port))
}

/// The per-endpoint client set of a session-affinity service port.
pub fn affinity_set(name: &ServicePortName, address: IpAddr, port: u16) -> String {
    hashed("affinity", &endpoint_base(name, address, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream_shape() {
        let name = ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp);
        let chain = cluster_chain(&name);
        assert!(chain.starts_with("service-"));
        assert!(chain.ends_with("-ns1/svc1/tcp/p80"));
        assert_eq!(
            chain.len(),
            "service-".len() + 8 + 1 + "ns1/svc1/tcp/p80".len()
        );
        assert_ne!(cluster_chain(&name), local_chain(&name));
        assert_eq!(cluster_chain(&name), cluster_chain(&name.clone()));
    }

    #[test]
    fn long_names_are_truncated_but_stay_distinct() {
        let long = "n".repeat(63);
        let a = ServicePortName::new(&long, &long, "a".repeat(15), Protocol::Udp);
        let b = ServicePortName::new(&long, &long, "b".repeat(15), Protocol::Udp);
        let address: IpAddr = "fd00:1234:5678:9abc:def0:1234:5678:9abc".parse().unwrap();
        let ea = endpoint_chain(&a, address, 65535);
        let eb = endpoint_chain(&b, address, 65535);
        assert!(ea.len() <= 255 && eb.len() <= 255);
        assert!(!ea.contains(':'));
        assert_ne!(ea, eb);
    }
}
