//! The desired state: what every service port should look like after the last drain.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::changes::ChangeSet;
use crate::model::{NodeInfo, ServicePortName, ServicePortState};

/// The desired state of the whole proxy, as of the last [`drain`](crate::ServiceChangeTracker::drain).
///
/// Cloning is O(1) (two `Arc`s); the tracker copies the map on its next drain only while a
/// clone is still alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyState {
    services: Arc<BTreeMap<ServicePortName, Arc<ServicePortState>>>,
    node: Arc<NodeInfo>,
    service_cidrs: Arc<Vec<IpNet>>,
}

impl ProxyState {
    /// The state of one service port.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePortState>> {
        self.services.get(name)
    }

    /// Every service port, in key order.
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = (&ServicePortName, &Arc<ServicePortState>)> {
        self.services.iter()
    }

    /// The number of service ports.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no service port at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The node this proxy runs on.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The cluster's service CIDRs as the ServiceCIDR objects give them (sorted).
    pub fn service_cidrs(&self) -> &[IpNet] {
        &self.service_cidrs
    }

    /// Applies a drained change set: the state it was drained against becomes the state after.
    pub fn apply(&mut self, changes: &ChangeSet) {
        if let Some(node) = changes.node() {
            self.node = Arc::new(node.clone());
        }
        if let Some(cidrs) = changes.service_cidrs() {
            self.service_cidrs = Arc::new(cidrs.to_vec());
        }
        if changes.is_empty() {
            return;
        }
        let services = Arc::make_mut(&mut self.services);
        for (name, change) in changes.iter() {
            match &change.current {
                Some(current) => {
                    services.insert(name.clone(), Arc::clone(current));
                }
                None => {
                    services.remove(name);
                }
            }
        }
    }

    /// Builds a state from its parts; the reference model and tests use it.
    pub fn from_parts(
        services: BTreeMap<ServicePortName, Arc<ServicePortState>>,
        node: NodeInfo,
    ) -> Self {
        Self {
            services: Arc::new(services),
            node: Arc::new(node),
            service_cidrs: Arc::default(),
        }
    }
}
