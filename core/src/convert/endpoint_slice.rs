//! `discovery.k8s.io/v1/EndpointSlice` → the endpoints it contributes to each service port.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::fields::FieldReader;
use super::{ConversionOptions, Converted, LABEL_SERVICE_NAME};
use crate::error::{ObjectKind, ObjectRef};
use crate::model::{Endpoint, IpFamily, NamespacedName, Protocol, TargetRef};

/// One entry of a slice's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlicePort {
    /// The port's name; it matches the Service port of the same name.
    pub name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The endpoints' port number.
    pub port: u16,
}

/// One entry of a slice's `endpoints`, port-less.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceEndpoint {
    /// The first address, as upstream uses.
    pub address: IpAddr,
    /// `conditions.ready` (nil → true).
    pub ready: bool,
    /// `conditions.serving` (nil → true).
    pub serving: bool,
    /// `conditions.terminating` (nil → false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<Arc<str>>,
    /// `zone`.
    pub zone: Option<Arc<str>>,
    /// `hints.forZones[].name`.
    pub zone_hints: BTreeSet<Arc<str>>,
    /// `hints.forNodes[].name`.
    pub node_hints: BTreeSet<Arc<str>>,
    /// `targetRef`, shared by the endpoint's copies at each port.
    pub target_ref: Option<Arc<TargetRef>>,
}

impl SliceEndpoint {
    /// This endpoint at one port.
    pub fn at_port(&self, port: u16) -> Endpoint {
        Endpoint {
            address: self.address,
            port,
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            node_name: self.node_name.clone(),
            zone: self.zone.clone(),
            zone_hints: self.zone_hints.clone(),
            node_hints: self.node_hints.clone(),
            target_ref: self.target_ref.clone(),
        }
    }
}

/// An EndpointSlice as the proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSliceInfo {
    /// The slice's namespace and name.
    pub key: NamespacedName,
    /// The Service it belongs to (`kubernetes.io/service-name`), if it belongs to one this
    /// proxy handles. `None` for FQDN slices, slices without that label, and slices
    /// labelled for another proxy.
    pub service: Option<NamespacedName>,
    /// Usable ports.
    pub ports: Vec<SlicePort>,
    /// Usable endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// Texts that the endpoints of one slice nearly always repeat (a target's kind and
/// namespace): one allocation each, shared.
#[derive(Default)]
struct SharedText(Vec<Arc<str>>);

impl SharedText {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|known| ***known == *text) {
            return Arc::clone(known);
        }
        let text: Arc<str> = Arc::from(text);
        // A slice's endpoints name a handful of kinds and namespaces, seldom more.
        if self.0.len() < 8 {
            self.0.push(Arc::clone(&text));
        }
        text
    }
}

/// Converts an EndpointSlice.
///
/// FQDN slices are ignored without error, as upstream does. A bad port drops that port, a bad
/// or wrong-family address drops that endpoint; nothing else is lost.
pub fn endpoint_slice(
    slice: &EndpointSlice,
    options: &ConversionOptions,
) -> Converted<EndpointSliceInfo> {
    let key = NamespacedName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    );
    let mut reader = FieldReader::new(ObjectRef {
        kind: ObjectKind::EndpointSlice,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    });
    let mut info = EndpointSliceInfo {
        key,
        service: None,
        ports: Vec::new(),
        endpoints: Vec::new(),
    };
    if info.key.name.is_empty() {
        reader.missing("metadata.name");
        return Converted {
            value: info,
            errors: reader.errors,
        };
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => {
            return Converted {
                value: info,
                errors: reader.errors,
            };
        }
        other => {
            reader.unsupported("addressType", other);
            return Converted {
                value: info,
                errors: reader.errors,
            };
        }
    };
    let labels = slice.metadata.labels.as_ref();
    if options.skips_labels(labels) {
        return Converted {
            value: info,
            errors: reader.errors,
        };
    }
    let Some(service_name) = labels.and_then(|labels| labels.get(LABEL_SERVICE_NAME)) else {
        reader.missing(&format!("metadata.labels[{LABEL_SERVICE_NAME}]"));
        return Converted {
            value: info,
            errors: reader.errors,
        };
    };
    info.service = Some(NamespacedName::new(
        info.key.namespace.clone(),
        service_name.clone(),
    ));

    for (i, port) in slice.ports.iter().flatten().enumerate() {
        // A slice port without a number means "all ports", which no Service can use.
        let Some(number) = port.port else { continue };
        let Some(protocol) =
            reader.protocol(|| format!("ports[{i}].protocol"), port.protocol.as_deref())
        else {
            continue;
        };
        let Some(number) = reader.port(|| format!("ports[{i}].port"), number) else {
            continue;
        };
        info.ports.push(SlicePort {
            name: port.name.clone().unwrap_or_default(),
            protocol,
            port: number,
        });
    }

    let mut shared = SharedText::default();
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let Some(first) = endpoint.addresses.first() else {
            reader.missing(&format!("endpoints[{i}].addresses"));
            continue;
        };
        let Some(address) = reader.ip_of(|| format!("endpoints[{i}].addresses[0]"), first, family)
        else {
            continue;
        };
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let hints = endpoint.hints.as_ref();
        info.endpoints.push(SliceEndpoint {
            address,
            ready,
            serving,
            terminating,
            node_name: endpoint.node_name.as_deref().map(Arc::from),
            zone: endpoint.zone.as_deref().map(Arc::from),
            zone_hints: hints
                .and_then(|h| h.for_zones.as_ref())
                .into_iter()
                .flatten()
                .map(|zone| Arc::from(zone.name.as_str()))
                .collect(),
            node_hints: hints
                .and_then(|h| h.for_nodes.as_ref())
                .into_iter()
                .flatten()
                .map(|node| Arc::from(node.name.as_str()))
                .collect(),
            target_ref: endpoint.target_ref.as_ref().map(|target| {
                fn text(value: &Option<String>) -> &str {
                    value.as_deref().unwrap_or_default()
                }
                Arc::new(TargetRef {
                    kind: shared.get(text(&target.kind)),
                    namespace: shared.get(text(&target.namespace)),
                    name: text(&target.name).into(),
                    uid: text(&target.uid).into(),
                })
            }),
        });
    }
    Converted {
        value: info,
        errors: reader.errors,
    }
}
