//! Which endpoints a service port's traffic may go to from this node, as upstream's
//! `CategorizeEndpoints` decides it.
//!
//! - Cluster traffic goes to ready endpoints, narrowed by topology hints when every ready
//!   endpoint carries one and some hint names this node (or its zone); with no ready endpoint
//!   anywhere, to endpoints that are serving and terminating.
//! - Local traffic goes to this node's ready endpoints, or failing those to its serving and
//!   terminating ones.
//! - An endpoint that is not serving is never chosen (not even one that claims to be ready).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Endpoint, IpFamily, NodeInfo, ServicePort};

/// The endpoint sets of one service port, as seen from one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectedEndpoints<'a> {
    /// Endpoints for traffic under the Cluster policy. Empty when the port uses only local
    /// endpoints.
    pub cluster: Vec<&'a Endpoint>,
    /// This node's endpoints for traffic under the Local policy. Empty when the port uses
    /// none.
    pub local: Vec<&'a Endpoint>,
    /// The union of both: every endpoint some traffic may reach.
    pub all_reachable: Vec<&'a Endpoint>,
    /// Whether some usable endpoint exists anywhere in the cluster (ready, or serving and
    /// terminating). When false, traffic to the service is rejected rather than dropped.
    pub has_any_endpoints: bool,
}

/// Which traffic-distribution mode the hints allow, if any (upstream's
/// `topologyModeFromHints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    Any,
    SameNode,
    SameZone,
}

/// Selects the endpoints of `port` for traffic on `node`, considering only endpoints of
/// `family` when one is given.
#[doc(alias = "CategorizeEndpoints")]
pub fn select_endpoints<'a>(
    port: &ServicePort,
    endpoints: &'a [Endpoint],
    node: &NodeInfo,
    family: Option<IpFamily>,
) -> SelectedEndpoints<'a> {
    let candidates: Vec<&'a Endpoint> = endpoints
        .iter()
        .filter(|e| family.is_none_or(|f| e.family() == f))
        .collect();
    let is_local = |e: &Endpoint| e.is_local_to(&node.name);
    let ready = |e: &Endpoint| is_ready(e);
    let serving_terminating = |e: &Endpoint| e.serving && e.terminating;
    let mut selected = SelectedEndpoints::default();
    let mut topology = TopologyMode::Any;

    if port.uses_cluster_endpoints() {
        topology = topology_mode(&candidates, node);
        selected.cluster = candidates
            .iter()
            .copied()
            .filter(|e| ready(e) && available_for_topology(e, topology, node))
            .collect();
        // Topology is already ignored when it would leave nothing ready, so an empty set here
        // means nothing is ready anywhere.
        if selected.cluster.is_empty() {
            selected.cluster = candidates
                .iter()
                .copied()
                .filter(|e| serving_terminating(e))
                .collect();
        }
        selected.has_any_endpoints = !selected.cluster.is_empty();
    }

    if !port.uses_local_endpoints() {
        selected.all_reachable = selected.cluster.clone();
        return selected;
    }

    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in &candidates {
        if ready(e) {
            selected.has_any_endpoints = true;
            local_ready |= is_local(e);
        } else if serving_terminating(e) {
            selected.has_any_endpoints = true;
            local_serving_terminating |= is_local(e);
        }
    }
    let uses_terminating = !local_ready && local_serving_terminating;
    if local_ready {
        selected.local = candidates
            .iter()
            .copied()
            .filter(|e| is_local(e) && ready(e))
            .collect();
    } else if local_serving_terminating {
        selected.local = candidates
            .iter()
            .copied()
            .filter(|e| is_local(e) && serving_terminating(e))
            .collect();
    }

    if !port.uses_cluster_endpoints() {
        selected.all_reachable = selected.local.clone();
        return selected;
    }
    if topology == TopologyMode::Any && !uses_terminating {
        // The cluster set holds every ready endpoint, so it contains the local set.
        selected.all_reachable = selected.cluster.clone();
        return selected;
    }
    let mut union: BTreeMap<(IpAddr, u16), &'a Endpoint> = BTreeMap::new();
    for e in selected.cluster.iter().chain(&selected.local) {
        union.insert((e.address, e.port), e);
    }
    selected.all_reachable = union.into_values().collect();
    selected
}

/// Ready for traffic. The API says ready implies serving; an object that claims ready but not
/// serving is not trusted with traffic.
fn is_ready(e: &Endpoint) -> bool {
    e.ready && e.serving
}

fn topology_mode(candidates: &[&Endpoint], node: &NodeInfo) -> TopologyMode {
    let zone = node.zone.as_deref();
    let mut all_have_node_hints = true;
    let mut has_endpoint_for_node = false;
    let mut all_have_zone_hints = true;
    let mut has_endpoint_for_zone = false;
    for e in candidates.iter().filter(|e| is_ready(e)) {
        if e.node_hints.is_empty() {
            all_have_node_hints = false;
        } else if e.node_hints.contains(node.name.as_str()) {
            has_endpoint_for_node = true;
        }
        if e.zone_hints.is_empty() {
            all_have_zone_hints = false;
        } else if zone.is_some_and(|zone| e.zone_hints.contains(zone)) {
            has_endpoint_for_zone = true;
        }
    }
    if all_have_node_hints && has_endpoint_for_node {
        TopologyMode::SameNode
    } else if all_have_zone_hints && has_endpoint_for_zone {
        TopologyMode::SameZone
    } else {
        TopologyMode::Any
    }
}

fn available_for_topology(e: &Endpoint, mode: TopologyMode, node: &NodeInfo) -> bool {
    match mode {
        TopologyMode::Any => true,
        TopologyMode::SameNode => e.node_hints.contains(node.name.as_str()),
        TopologyMode::SameZone => node
            .zone
            .as_deref()
            .is_some_and(|zone| e.zone_hints.contains(zone)),
    }
}

#[cfg(test)]
mod tests;
