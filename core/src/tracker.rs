//! Turns a stream of Service and EndpointSlice events into minimal change sets.
//!
//! The tracker keeps every converted object it was given, and a set of the service ports an
//! event may have touched since the last drain. Draining recomputes only those ports from the
//! store and compares each with the state of the previous drain; ports whose state came back
//! to where it was are dropped. That makes the result minimal by construction, whatever the
//! churn in between, and the cost of a drain proportional to what was touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::changes::{Change, ChangeSet};
use crate::convert::{self, ConversionOptions, EndpointSliceInfo, ServiceInfo};
use crate::error::ModelError;
use crate::model::ServicePortState;
use crate::model::{Endpoint, NamespacedName, NodeInfo, Protocol, ServicePort, ServicePortName};
use crate::state::ProxyState;

/// A slice of a Service with its port numbers by port name and protocol.
type IndexedSlice<'a> = (
    &'a EndpointSliceInfo,
    HashMap<(&'a str, Protocol), Vec<u16>>,
);

/// Collects Service and EndpointSlice events and hands out what changed.
///
/// # Example
///
/// ```
/// use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// use kproxy_core::{NodeInfo, ServiceChangeTracker};
///
/// let mut tracker = ServiceChangeTracker::new(NodeInfo::named("node-a"), Default::default());
/// let service = Service {
///     metadata: ObjectMeta { namespace: Some("ns".into()), name: Some("web".into()), ..Default::default() },
///     spec: Some(ServiceSpec {
///         cluster_ip: Some("10.96.0.10".into()),
///         ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..Default::default() }]),
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// assert!(tracker.upsert_service(&service).is_empty());
/// assert_eq!(tracker.drain().len(), 1);
///
/// // Deleting and re-adding the same object nets to nothing.
/// tracker.delete_service("ns", "web");
/// tracker.upsert_service(&service);
/// assert!(tracker.drain().is_empty());
/// ```
#[doc(alias = "EndpointsChangeTracker")]
#[derive(Debug)]
pub struct ServiceChangeTracker {
    options: ConversionOptions,
    services: HashMap<NamespacedName, Vec<ServicePort>>,
    slices: HashMap<NamespacedName, EndpointSliceInfo>,
    slices_by_service: HashMap<NamespacedName, BTreeSet<String>>,
    touched: BTreeSet<ServicePortName>,
    node: NodeInfo,
    node_changed: bool,
    service_cidrs: Vec<IpNet>,
    service_cidrs_changed: bool,
    state: ProxyState,
}

impl ServiceChangeTracker {
    /// A tracker for a proxy on `node`.
    pub fn new(node: NodeInfo, options: ConversionOptions) -> Self {
        Self {
            options,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            touched: BTreeSet::new(),
            state: ProxyState::from_parts(BTreeMap::new(), node.clone()),
            node,
            node_changed: false,
            service_cidrs: Vec::new(),
            service_cidrs_changed: false,
        }
    }

    /// Adds or replaces a Service. Returns the problems met converting it; its usable parts
    /// are taken all the same.
    pub fn upsert_service(&mut self, service: &Service) -> Vec<ModelError> {
        let converted = convert::service(service, &self.options);
        self.put_service(converted.value);
        converted.errors
    }

    /// Adds or replaces an already converted Service.
    pub fn put_service(&mut self, service: ServiceInfo) {
        let ServiceInfo { key, ports } = service;
        self.touch_ports(&ports);
        let previous = if ports.is_empty() {
            self.services.remove(&key)
        } else {
            self.services.insert(key, ports)
        };
        self.touch_ports(previous.iter().flatten());
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let removed = self.services.remove(&NamespacedName::new(namespace, name));
        self.touch_ports(removed.iter().flatten());
    }

    /// Adds or replaces an EndpointSlice. Returns the problems met converting it; its usable
    /// parts are taken all the same.
    pub fn upsert_endpoint_slice(&mut self, slice: &EndpointSlice) -> Vec<ModelError> {
        let converted = convert::endpoint_slice(slice, &self.options);
        self.put_endpoint_slice(converted.value);
        converted.errors
    }

    /// Adds or replaces an already converted EndpointSlice.
    pub fn put_endpoint_slice(&mut self, slice: EndpointSliceInfo) {
        self.touch_slice(&slice);
        let key = slice.key.clone();
        if let Some(service) = &slice.service {
            self.slices_by_service
                .entry(service.clone())
                .or_default()
                .insert(key.name.clone());
        }
        if let Some(previous) = self.slices.insert(key, slice) {
            self.forget_slice(&previous);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        if let Some(previous) = self.slices.remove(&NamespacedName::new(namespace, name)) {
            self.forget_slice(&previous);
        }
    }

    /// Takes a Node object: this proxy's own node updates the node information (see
    /// [`set_node`](Self::set_node)); any other node is ignored. Returns the problems met
    /// converting it.
    pub fn upsert_node(&mut self, node: &Node) -> Vec<ModelError> {
        if node.metadata.name.as_deref() != Some(self.node.name.as_str()) {
            return Vec::new();
        }
        let converted = convert::node(node);
        self.set_node(converted.value);
        converted.errors
    }

    /// Sets this node's information (zone, pod CIDRs, addresses). A change is reported by the
    /// next drain.
    pub fn set_node(&mut self, node: NodeInfo) {
        if node != self.node {
            self.node = node;
            self.node_changed = true;
        }
    }

    /// Sets the cluster's service CIDRs (the union of every ServiceCIDR object's `spec.cidrs`).
    /// A change is reported by the next drain.
    pub fn set_service_cidrs(&mut self, mut cidrs: Vec<IpNet>) {
        cidrs.sort();
        cidrs.dedup();
        if cidrs != self.service_cidrs {
            self.service_cidrs = cidrs;
            self.service_cidrs_changed = true;
        }
    }

    /// How many service ports events have touched since the last drain (an upper bound of the
    /// next change set's size).
    pub fn pending(&self) -> usize {
        self.touched.len()
            + usize::from(self.node_changed)
            + usize::from(self.service_cidrs_changed)
    }

    /// Hands out what changed since the last drain and makes it the new baseline.
    #[doc(alias = "checkout")]
    pub fn drain(&mut self) -> ChangeSet {
        let touched = std::mem::take(&mut self.touched);
        let mut changes = BTreeMap::new();
        // Touched ports come sorted, so the ports of one Service are neighbours: they are
        // computed together, with indexed lookups, so that a Service with thousands of ports
        // costs time in proportion to its size, not to its size squared.
        let mut touched = touched.into_iter().peekable();
        while let Some(first) = touched.next() {
            let mut group = vec![first];
            while let Some(next) = touched
                .next_if(|next| next.namespace == group[0].namespace && next.name == group[0].name)
            {
                group.push(next);
            }
            let computed = self.compute_service(&group);
            for (name, current) in group.into_iter().zip(computed) {
                let previous = self.state.get(&name);
                let unchanged = match (previous, &current) {
                    (None, None) => true,
                    (Some(previous), Some(current)) => **previous == *current,
                    _ => false,
                };
                if !unchanged {
                    let change = Change {
                        previous: previous.cloned(),
                        current: current.map(Arc::new),
                    };
                    changes.insert(name, change);
                }
            }
        }
        let node = std::mem::take(&mut self.node_changed).then(|| self.node.clone());
        let cidrs =
            std::mem::take(&mut self.service_cidrs_changed).then(|| self.service_cidrs.clone());
        let changes = ChangeSet::new(changes, node).with_service_cidrs(cidrs);
        self.state.apply(&changes);
        changes
    }

    /// The desired state as of the last drain.
    pub fn state(&self) -> ProxyState {
        self.state.clone()
    }

    /// The node as last set (possibly not yet drained).
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Recomputes service ports of one Service from the store, in the order of `names`.
    fn compute_service(&self, names: &[ServicePortName]) -> Vec<Option<ServicePortState>> {
        let Some(first) = names.first() else {
            return Vec::new();
        };
        let service = NamespacedName::new(first.namespace.clone(), first.name.clone());
        let Some(ports) = self.services.get(&service) else {
            return vec![None; names.len()];
        };
        let mut by_name: HashMap<(&str, Protocol), &ServicePort> = HashMap::new();
        for port in ports {
            // The first of two ports with one name wins, as a search in order would find.
            by_name
                .entry((port.name.port.as_str(), port.name.protocol))
                .or_insert(port);
        }
        // Each slice's port numbers by port name and protocol, built once for the Service.
        let slices: Vec<IndexedSlice<'_>> = self
            .slices_by_service
            .get(&service)
            .into_iter()
            .flatten()
            .filter_map(|slice_name| {
                let key = NamespacedName::new(service.namespace.clone(), slice_name.clone());
                let slice = self.slices.get(&key)?;
                let mut numbers: HashMap<(&str, Protocol), Vec<u16>> = HashMap::new();
                for port in &slice.ports {
                    numbers
                        .entry((port.name.as_str(), port.protocol))
                        .or_default()
                        .push(port.port);
                }
                Some((slice, numbers))
            })
            .collect();
        names
            .iter()
            .map(|name| {
                let port = by_name.get(&(name.port.as_str(), name.protocol))?;
                Some(ServicePortState {
                    port: (*port).clone(),
                    endpoints: self.endpoints_of(&slices, name),
                })
            })
            .collect()
    }

    /// Merges the endpoints of every slice of a Service for one port. An address listed by two
    /// slices counts once: the copy from the first slice in name order, unless a later copy is
    /// local and the first is not (upstream prefers the local copy).
    fn endpoints_of(&self, slices: &[IndexedSlice<'_>], name: &ServicePortName) -> Vec<Endpoint> {
        let mut merged: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
        for (slice, numbers) in slices {
            let Some(numbers) = numbers.get(&(name.port.as_str(), name.protocol)) else {
                continue;
            };
            for number in numbers {
                for endpoint in &slice.endpoints {
                    let candidate = endpoint.at_port(*number);
                    match merged.entry((candidate.address, candidate.port)) {
                        std::collections::btree_map::Entry::Vacant(entry) => {
                            entry.insert(candidate);
                        }
                        std::collections::btree_map::Entry::Occupied(mut entry) => {
                            let local = |e: &Endpoint| e.is_local_to(&self.node.name);
                            if local(&candidate) && !local(entry.get()) {
                                entry.insert(candidate);
                            }
                        }
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    fn touch_ports<'a>(&mut self, ports: impl IntoIterator<Item = &'a ServicePort>) {
        for port in ports {
            self.touched.insert(port.name.clone());
        }
    }

    fn touch_slice(&mut self, slice: &EndpointSliceInfo) {
        let Some(service) = &slice.service else {
            return;
        };
        for port in &slice.ports {
            self.touched.insert(ServicePortName::new(
                service.namespace.clone(),
                service.name.clone(),
                port.name.clone(),
                port.protocol,
            ));
        }
    }

    /// Marks what a replaced or removed slice contributed, and unlinks it from its Service
    /// unless the slice under that name (now) belongs to the same Service.
    fn forget_slice(&mut self, previous: &EndpointSliceInfo) {
        self.touch_slice(previous);
        let Some(service) = &previous.service else {
            return;
        };
        let still_linked = self
            .slices
            .get(&previous.key)
            .is_some_and(|current| current.service.as_ref() == Some(service));
        if still_linked {
            return;
        }
        if let Some(names) = self.slices_by_service.get_mut(service) {
            names.remove(&previous.key.name);
            if names.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
    }
}

#[cfg(test)]
mod tests;
