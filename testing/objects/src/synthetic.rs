//! A synthetic cluster for benchmarks: Service `i` (namespace `ns-{i % 100}`, one TCP port 80,
//! cluster IP 172.16.0.0/12) and its one EndpointSlice with `E` endpoints (10.0.0.0/8, port
//! 8080) spread over 50 nodes `node-0` … `node-49`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::convert::LABEL_SERVICE_NAME;

/// How many nodes the endpoints are spread over.
pub const NODES: usize = 50;

/// Service `i`.
pub fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(format!("ns-{}", i % 100)),
            name: Some(format!("svc-{i}")),
            // What a Deployment's Service carries, so that benchmarks pay for what the model
            // keeps of real objects.
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), format!("svc-{i}")),
                ("app.kubernetes.io/part-of".to_owned(), "bench".to_owned()),
            ])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!(
                "172.{}.{}.{}",
                16 + (i >> 16),
                (i >> 8) & 255,
                i & 255
            )),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The EndpointSlice of Service `i` with `endpoints` endpoints; an odd `generation` makes the
/// first endpoint unready, so consecutive generations differ by one endpoint.
pub fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(format!("ns-{}", i % 100)),
            name: Some(format!("svc-{i}-abcde")),
            labels: Some(BTreeMap::from([(
                LABEL_SERVICE_NAME.to_owned(),
                format!("svc-{i}"),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..endpoints)
            .map(|e| {
                let n = i * endpoints + e;
                Endpoint {
                    addresses: vec![format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)],
                    conditions: Some(EndpointConditions {
                        ready: Some(!(e == 0 && generation % 2 == 1)),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(format!("node-{}", n % NODES)),
                    // Every endpoint the EndpointSlice controller writes names its pod.
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: Some(format!("ns-{}", i % 100)),
                        name: Some(format!("svc-{i}-5d8f7c9b6-{e:05}")),
                        // A pod keeps its uid when its readiness flips.
                        uid: Some(format!("{n:08x}-7c2a-4e1b-9f3d-5a6b7c8d9e0f")),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..Default::default()
        }]),
    }
}

/// Service `i` with `ports` (name, port) instead of its one port 80, all TCP.
pub fn service_with_ports(i: usize, ports: &[(String, i32)]) -> Service {
    let mut svc = service(i);
    if let Some(spec) = svc.spec.as_mut() {
        spec.ports = Some(
            ports
                .iter()
                .map(|(name, port)| ServicePort {
                    name: Some(name.clone()),
                    port: *port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        );
    }
    svc
}

/// The EndpointSlice of Service `i` with `endpoints` endpoints, each listening on every one
/// of `ports` (name, port), all TCP.
pub fn slice_with_ports(i: usize, endpoints: usize, ports: &[(String, i32)]) -> EndpointSlice {
    let mut eps = slice(i, endpoints, 0);
    eps.ports = Some(
        ports
            .iter()
            .map(|(name, port)| EndpointPort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
    );
    eps
}
