//! `v1/Node` → [`NodeInfo`].

use k8s_openapi::api::core::v1::Node;

use super::fields::FieldReader;
use super::{Converted, LABEL_TOPOLOGY_ZONE};
use crate::error::{ObjectKind, ObjectRef};
use crate::model::NodeInfo;

/// Converts this proxy's Node: name, zone label, pod CIDRs and InternalIP/ExternalIP
/// addresses. Bad CIDRs and addresses are reported and left out.
pub fn node(node: &Node) -> Converted<NodeInfo> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut reader = FieldReader::new(ObjectRef {
        kind: ObjectKind::Node,
        namespace: String::new(),
        name: name.clone(),
    });
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_TOPOLOGY_ZONE))
        .cloned();
    let spec = node.spec.as_ref();
    let pod_cidrs = match spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .filter(|c| !c.is_empty())
    {
        Some(cidrs) => cidrs
            .iter()
            .enumerate()
            .filter_map(|(i, cidr)| reader.cidr(|| format!("spec.podCIDRs[{i}]"), cidr))
            .collect(),
        None => spec
            .and_then(|s| s.pod_cidr.as_deref())
            .into_iter()
            .filter_map(|cidr| reader.cidr(|| "spec.podCIDR".to_owned(), cidr))
            .collect(),
    };
    let addresses = node
        .status
        .as_ref()
        .and_then(|status| status.addresses.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, address)| matches!(address.type_.as_str(), "InternalIP" | "ExternalIP"))
        .filter_map(|(i, address)| {
            reader.ip(
                || format!("status.addresses[{i}].address"),
                &address.address,
            )
        })
        .collect();
    Converted {
        value: NodeInfo {
            name,
            zone,
            pod_cidrs,
            addresses,
        },
        errors: reader.errors,
    }
}
