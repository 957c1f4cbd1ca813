//! Shared helpers of the IPVS backend's kernel tests (inside the UML guest).

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(missing_docs, unreachable_pub, reason = "test helpers")]

pub mod snapshot;

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_conformance::DataplaneFactory;
use kproxy_core::Protocol;
use kproxy_core::{Dataplane, ProxyConfig};
use kproxy_iptables::{IptablesCommand, Tool, Variant};
use kproxy_ipvs::model::{RealServer, ServiceKey};
use kproxy_ipvs::{IpvsConfig, IpvsDataplane, NetlinkIpvs, Scheduler};
use kproxy_rig::netns;
use kproxy_rig::probe::Probe;
use kproxy_rig::{World, WorldSpec};

/// Builds the IPVS dataplane for a scenario's node namespace. The guest's kernel has no
/// nftables `ip` family, so the helper rules go through iptables-legacy.
pub struct Ipvs {
    pub scheduler: &'static str,
}

impl DataplaneFactory for Ipvs {
    fn mode(&self) -> &str {
        "ipvs"
    }

    fn preflight(&self) -> kproxy_rig::Result<()> {
        netns::require_tool("ipset", &["--version"])?;
        netns::require_tool(
            Variant::Legacy.binary(kproxy_core::IpFamily::V4, Tool::Restore),
            &["--version"],
        )
    }

    fn build(
        &self,
        config: &ProxyConfig,
        node_netns: &str,
    ) -> kproxy_rig::Result<Box<dyn Dataplane>> {
        let settings = IpvsConfig {
            scheduler: Scheduler::parse(self.scheduler).expect("a known scheduler"),
            ..IpvsConfig::default()
        };
        let dataplane = IpvsDataplane::new(
            config.clone(),
            settings,
            Box::new(NetlinkIpvs::in_netns(node_netns)),
            Box::new(IptablesCommand::in_netns(Variant::Legacy, node_netns)),
        )
        .map_err(|e| kproxy_rig::Error::World(format!("cannot build the IPVS dataplane: {e}")))?;
        Ok(Box::new(dataplane))
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// The TCP virtual server `addr:port`.
pub fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Address {
        protocol: Protocol::Tcp,
        addr: ip(addr),
        port,
    }
}

pub fn real(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        addr: ip(addr),
        port,
        weight,
    }
}

/// The runtime a guest-side test runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The node's address in the worlds of [`one_node_world`].
pub const NODE_IP: &str = "192.168.0.2";

/// A world of one node (`eth0` at [`NODE_IP`]/24, pods in 10.0.0.0/8) with TCP port 80
/// servers at `endpoints` and pod clients at `clients` probing `vip:80`.
pub async fn one_node_world(endpoints: &[&str], clients: &[&str], vip: &str) -> World {
    let mut interfaces = std::collections::BTreeMap::new();
    interfaces.insert(
        "eth0".to_owned(),
        vec![format!("{NODE_IP}/24").parse::<IpNet>().expect("a network")],
    );
    let mut spec = WorldSpec::new(interfaces);
    spec.pod_networks = vec!["10.0.0.0/8".parse().expect("a network")];
    for endpoint in endpoints {
        spec.endpoint(ip(endpoint), 80, Protocol::Tcp);
    }
    for client in clients {
        spec.probe(&Probe::tcp(ip(client), ip(vip), 80));
    }
    World::build(spec).await.expect("a world")
}
