//! What changed between two drains.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{NodeInfo, ServicePortName, ServicePortState};

/// The change of one service port: its state at the previous drain and now. The two are never
/// equal, and never both `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The state at the previous drain; `None` when the port is new.
    pub previous: Option<Arc<ServicePortState>>,
    /// The state now; `None` when the port is gone.
    pub current: Option<Arc<ServicePortState>>,
}

impl Change {
    /// Whether only the endpoints changed, not the service port itself.
    pub fn endpoints_only(&self) -> bool {
        match (&self.previous, &self.current) {
            (Some(previous), Some(current)) => previous.port == current.port,
            _ => false,
        }
    }
}

/// The minimal set of service-port changes between two drains: a key is present iff its
/// effective state (service port plus endpoints) differs from the previous drain's.
///
/// Churn that nets to nothing (an add then a delete, A→B→A, an endpoint moved between two
/// slices of one Service) is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    changes: BTreeMap<ServicePortName, Change>,
    node: Option<NodeInfo>,
    service_cidrs: Option<Vec<IpNet>>,
}

impl ChangeSet {
    /// Builds a change set from its parts.
    pub fn new(changes: BTreeMap<ServicePortName, Change>, node: Option<NodeInfo>) -> Self {
        Self {
            changes,
            node,
            service_cidrs: None,
        }
    }

    /// The same change set, also carrying new service CIDRs.
    pub fn with_service_cidrs(mut self, service_cidrs: Option<Vec<IpNet>>) -> Self {
        self.service_cidrs = service_cidrs;
        self
    }

    /// Whether nothing changed, not even the node. A change set carrying only new node
    /// information is not empty but has [`len`](Self::len) 0.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.node.is_none() && self.service_cidrs.is_none()
    }

    /// The number of changed service ports.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// The changed service ports, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ServicePortName, &Change)> {
        self.changes.iter()
    }

    /// The change of one service port.
    pub fn get(&self, name: &ServicePortName) -> Option<&Change> {
        self.changes.get(name)
    }

    /// The node's new information, when it changed. Locality and zones of every endpoint may
    /// then differ, so dataplanes usually answer with a full sync.
    pub fn node(&self) -> Option<&NodeInfo> {
        self.node.as_ref()
    }

    /// The cluster's service CIDRs (from ServiceCIDR objects), when they changed. Dataplanes
    /// that drop traffic to unallocated service addresses usually answer with a full sync.
    pub fn service_cidrs(&self) -> Option<&[IpNet]> {
        self.service_cidrs.as_deref()
    }

    /// Whether the node or the service CIDRs changed, which changes rules of every port.
    pub fn context_changed(&self) -> bool {
        self.node.is_some() || self.service_cidrs.is_some()
    }
}
