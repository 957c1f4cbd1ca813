//! Compact builders of Kubernetes objects for unit tests.
//!
//! IP conventions: services 172.30.0.0/16, pods 10.0.0.0/8, nodes 192.168.0.0/24; the test
//! node is `node-a` in zone `zone-a`.

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::convert::LABEL_SERVICE_NAME;

pub(crate) fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(port_name, port)| K8sServicePort {
                        name: Some((*port_name).into()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// An endpoint entry: address, ready, serving, terminating, node.
pub(crate) type Ep<'a> = (&'a str, bool, bool, bool, Option<&'a str>);

pub(crate) fn ready(address: &str) -> Ep<'_> {
    (address, true, true, false, None)
}

pub(crate) fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(&str, i32)],
    endpoints: &[Ep<'_>],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some([(LABEL_SERVICE_NAME.to_string(), service.to_string())].into()),
            ..Default::default()
        },
        address_type: if endpoints.iter().any(|e| e.0.contains(':')) {
            "IPv6"
        } else {
            "IPv4"
        }
        .into(),
        endpoints: endpoints
            .iter()
            .map(|(address, ready, serving, terminating, node)| K8sEndpoint {
                addresses: vec![(*address).into()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                node_name: node.map(String::from),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(port_name, port)| EndpointPort {
                    name: Some((*port_name).into()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}
