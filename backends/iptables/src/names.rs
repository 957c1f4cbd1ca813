//! Names of every chain this backend writes, as upstream kube-proxy's iptables mode names them,
//! so that `iptables-save | grep KUBE-SVC` and operators' tooling keep working.

use std::net::IpAddr;

use data_encoding::BASE32;
use kproxy_core::ServicePortName;
use sha2::{Digest, Sha256};

/// Dispatches service traffic by destination (nat), and rejects or drops traffic to service
/// ports without usable endpoints (filter).
pub const SERVICES: &str = "KUBE-SERVICES";
/// Rejects or drops external traffic (node ports, external and load-balancer IPs) without
/// usable endpoints (filter).
pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// Dispatches node-port traffic (nat); accepts health-check node ports (filter).
pub const NODEPORTS: &str = "KUBE-NODEPORTS";
/// Masquerades marked packets (nat).
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
/// Marks a packet for masquerading (nat).
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// Accepts forwarded service traffic and drops conntrack-INVALID packets (filter).
pub const FORWARD: &str = "KUBE-FORWARD";
/// Drops load-balancer traffic from outside the source ranges (filter).
pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// Drops martian packets to 127.0.0.0/8 when node ports answer on localhost (filter).
pub const LOCALNET_FIREWALL: &str = "KUBE-FIREWALL";
/// An empty chain in mangle, nat and filter whose disappearance says the tables were flushed
/// from outside.
pub const CANARY: &str = "KUBE-PROXY-CANARY";

const SERVICE_PREFIX: &str = "KUBE-SVC-";
const LOCAL_PREFIX: &str = "KUBE-SVL-";
const EXTERNAL_PREFIX: &str = "KUBE-EXT-";
const FIREWALL_PREFIX: &str = "KUBE-FW-";
const ENDPOINT_PREFIX: &str = "KUBE-SEP-";

/// Upstream's `ServicePortName.String()`: `ns/svc:port`, or `ns/svc` for an unnamed port.
pub fn service_port(name: &ServicePortName) -> String {
    if name.port.is_empty() {
        format!("{}/{}", name.namespace, name.name)
    } else {
        format!("{}/{}:{}", name.namespace, name.name, name.port)
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
pub fn endpoint(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// The first 16 characters of base32(sha256(`text`)): upstream's chain-name hash.
fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut encoded = BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// Upstream's `portProtoHash`: the hash of the service port's name and protocol.
fn port_hash(name: &ServicePortName) -> String {
    hash(&format!(
        "{}{}",
        service_port(name),
        name.protocol.as_lower_str()
    ))
}

/// `KUBE-SVC-…`: the Cluster-policy endpoints of a service port.
pub fn cluster_chain(name: &ServicePortName) -> String {
    format!("{SERVICE_PREFIX}{}", port_hash(name))
}

/// `KUBE-SVL-…`: the Local-policy endpoints of a service port.
pub fn local_chain(name: &ServicePortName) -> String {
    format!("{LOCAL_PREFIX}{}", port_hash(name))
}

/// `KUBE-EXT-…`: external traffic (node port, external and load-balancer IPs) of a port.
pub fn external_chain(name: &ServicePortName) -> String {
    format!("{EXTERNAL_PREFIX}{}", port_hash(name))
}

/// `KUBE-FW-…`: the load-balancer source-range check of a port.
pub fn firewall_chain(name: &ServicePortName) -> String {
    format!("{FIREWALL_PREFIX}{}", port_hash(name))
}

/// `KUBE-SEP-…`: upstream's chain of one endpoint of a service port. This backend writes no such
/// chain (a full sync removes upstream's); the name is that endpoint's session-affinity `recent`
/// list, as upstream names it.
pub fn endpoint_chain(name: &ServicePortName, address: IpAddr, port: u16) -> String {
    format!(
        "{ENDPOINT_PREFIX}{}",
        hash(&format!(
            "{}{}{}",
            service_port(name),
            name.protocol.as_lower_str(),
            endpoint(address, port)
        ))
    )
}

/// Whether `chain` is a per-service chain of this backend (or of upstream's iptables mode),
/// which a full sync removes when no service port wants it.
pub fn is_service_chain(chain: &str) -> bool {
    [
        SERVICE_PREFIX,
        LOCAL_PREFIX,
        EXTERNAL_PREFIX,
        FIREWALL_PREFIX,
        ENDPOINT_PREFIX,
    ]
    .iter()
    .any(|prefix| chain.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_core::Protocol;

    #[test]
    fn hashes_match_upstreams_known_vectors() {
        let name = ServicePortName::new("ns1", "svc1", "p80", Protocol::Tcp);
        assert_eq!(cluster_chain(&name), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain(&name, "10.180.0.1".parse().unwrap(), 80),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        let svc4 = ServicePortName::new("ns4", "svc4", "p80", Protocol::Tcp);
        assert_eq!(external_chain(&svc4), "KUBE-EXT-4SW47YFZTEDKD3PK");
        assert!(is_service_chain("KUBE-SVL-4SW47YFZTEDKD3PK"));
        assert!(!is_service_chain("KUBE-SERVICES"));
    }
}
