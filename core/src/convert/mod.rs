//! Conversion of Kubernetes objects (k8s-openapi types) into the model.
//!
//! Every function here is pure and total: it returns what could be used together with a list
//! of [`ModelError`]s for what could not. Defaults are the Kubernetes API's.

pub mod address;
mod endpoint_slice;
mod fields;
mod node;
mod service;

pub use address::{
    AddressError, AddressKind, Spelling, parse_cidr, parse_cidr_spelled, parse_ip, parse_ip_port,
    parse_ip_spelled,
};
pub use endpoint_slice::{EndpointSliceInfo, SliceEndpoint, SlicePort, endpoint_slice};
pub use node::node;
pub use service::{ServiceInfo, service};

use crate::ModelError;

/// Label that assigns a Service or EndpointSlice to an alternative proxy; objects carrying it
/// are skipped unless it names this proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label that marks the EndpointSlices (and Services) of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label that ties an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Node label holding the node's zone.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// Settings that change how objects are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversionOptions {
    /// This proxy's name for the `service.kubernetes.io/service-proxy-name` label; `None`
    /// skips every object carrying that label, as upstream kube-proxy does.
    pub proxy_name: Option<String>,
}

impl ConversionOptions {
    /// Whether an object with these labels belongs to another proxy or to a headless Service.
    pub fn skips_labels(
        &self,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> bool {
        let Some(labels) = labels else { return false };
        if labels.contains_key(LABEL_HEADLESS) {
            return true;
        }
        match labels.get(LABEL_SERVICE_PROXY_NAME) {
            Some(owner) => self.proxy_name.as_deref() != Some(owner.as_str()),
            None => false,
        }
    }
}

/// What a conversion produced: the usable value and the problems met on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted<T> {
    /// What could be used.
    pub value: T,
    /// What could not, one error per bad field.
    pub errors: Vec<ModelError>,
}

#[cfg(test)]
mod tests;
