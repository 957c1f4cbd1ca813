//! The desired state recomputed from scratch: every Service port with every endpoint of every
//! slice that names it, one copy per address (the first local copy, else the first copy, in
//! slice-name order).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_core::convert::{self, ConversionOptions};
use kproxy_core::{Endpoint, NamespacedName, NodeInfo, ServicePortName, ServicePortState};

/// Every object as the API server would hold it, keyed by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    /// Services.
    pub services: BTreeMap<NamespacedName, Service>,
    /// EndpointSlices.
    pub slices: BTreeMap<NamespacedName, EndpointSlice>,
}

/// The expected state of every service port.
pub fn expected_state(
    store: &ObjectStore,
    node: &NodeInfo,
    options: &ConversionOptions,
) -> BTreeMap<ServicePortName, ServicePortState> {
    let slices: Vec<convert::EndpointSliceInfo> = store
        .slices
        .values()
        .map(|slice| convert::endpoint_slice(slice, options).value)
        .collect();
    let mut state = BTreeMap::new();
    for service in store.services.values() {
        let info = convert::service(service, options).value;
        for port in info.ports {
            let mut candidates: Vec<Endpoint> = Vec::new();
            for slice in &slices {
                if slice.service.as_ref() != Some(&info.key) {
                    continue;
                }
                for slice_port in &slice.ports {
                    if slice_port.name != port.name.port
                        || slice_port.protocol != port.name.protocol
                    {
                        continue;
                    }
                    for endpoint in &slice.endpoints {
                        candidates.push(endpoint.at_port(slice_port.port));
                    }
                }
            }
            let endpoints = dedup_preferring_local(candidates, &node.name);
            state.insert(port.name.clone(), ServicePortState { port, endpoints });
        }
    }
    state
}

fn dedup_preferring_local(candidates: Vec<Endpoint>, node_name: &str) -> Vec<Endpoint> {
    let mut chosen: Vec<Endpoint> = Vec::new();
    for candidate in &candidates {
        if chosen
            .iter()
            .any(|e| e.address == candidate.address && e.port == candidate.port)
        {
            continue;
        }
        let same = |e: &&Endpoint| e.address == candidate.address && e.port == candidate.port;
        let pick = candidates
            .iter()
            .filter(same)
            .find(|e| e.is_local_to(node_name))
            .unwrap_or(candidate);
        chosen.push(pick.clone());
    }
    chosen.sort_by_key(|e| (e.address, e.port));
    chosen
}
