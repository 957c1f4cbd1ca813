//! Builders of Services, EndpointSlices and Nodes as the API server would store them, each
//! field left out taking the API's default, so a test names only what it is about.
//!
//! ```
//! use kproxy_objects::{endpoint, service, slice};
//!
//! let svc = service("ns", "web").cluster_ip("172.30.0.10").port("http", 80, "TCP").build();
//! let eps = slice("ns", "web", "web-abc")
//!     .port("http", 8080, "TCP")
//!     .endpoint(endpoint("10.1.0.5").node("node-a"))
//!     .endpoint(endpoint("10.1.0.6").terminating())
//!     .build();
//! assert_eq!(eps.address_type, "IPv4");
//! assert_eq!(svc.spec.unwrap().cluster_ips.unwrap(), vec!["172.30.0.10".to_owned()]);
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeSpec,
    NodeStatus, Service, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_core::convert::{LABEL_SERVICE_NAME, LABEL_TOPOLOGY_ZONE};

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A Service of type ClusterIP with no port yet.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        metadata: meta(Some(namespace), name),
        spec: Some(ServiceSpec::default()),
        status: None,
    })
}

/// Builds a [`Service`]; see [`service`].
#[derive(Debug, Clone)]
pub struct ServiceBuilder(Service);

impl ServiceBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.0.spec.get_or_insert_with(ServiceSpec::default)
    }

    /// Adds a cluster IP (the first one is also `clusterIP`).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        let spec = self.spec();
        spec.cluster_ip.get_or_insert_with(|| ip.to_owned());
        spec.cluster_ips
            .get_or_insert_with(Vec::new)
            .push(ip.to_owned());
        self
    }

    /// Sets `type` (`ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`).
    pub fn type_(mut self, type_: &str) -> Self {
        self.spec().type_ = Some(type_.to_owned());
        self
    }

    /// Adds a port (`name` may be empty for an unnamed port).
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ServicePort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                port,
                protocol: Some(protocol.to_owned()),
                ..ServicePort::default()
            });
        self
    }

    /// Gives the last port added a node port.
    pub fn node_port(mut self, node_port: i32) -> Self {
        if let Some(port) = self
            .spec()
            .ports
            .as_mut()
            .and_then(|ports| ports.last_mut())
        {
            port.node_port = Some(node_port);
        }
        self
    }

    /// Adds an external IP.
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.spec()
            .external_ips
            .get_or_insert_with(Vec::new)
            .push(ip.to_owned());
        self
    }

    /// Adds a load-balancer ingress IP to the status.
    pub fn load_balancer_ip(mut self, ip: &str) -> Self {
        let status = self.0.status.get_or_insert_with(ServiceStatus::default);
        let balancer = status
            .load_balancer
            .get_or_insert_with(LoadBalancerStatus::default);
        balancer
            .ingress
            .get_or_insert_with(Vec::new)
            .push(LoadBalancerIngress {
                ip: Some(ip.to_owned()),
                ..LoadBalancerIngress::default()
            });
        self
    }

    /// Adds a `loadBalancerSourceRanges` entry.
    pub fn source_range(mut self, cidr: &str) -> Self {
        self.spec()
            .load_balancer_source_ranges
            .get_or_insert_with(Vec::new)
            .push(cidr.to_owned());
        self
    }

    /// `externalTrafficPolicy: Local`.
    pub fn external_policy_local(mut self) -> Self {
        self.spec().external_traffic_policy = Some("Local".to_owned());
        self
    }

    /// `internalTrafficPolicy: Local`.
    pub fn internal_policy_local(mut self) -> Self {
        self.spec().internal_traffic_policy = Some("Local".to_owned());
        self
    }

    /// `sessionAffinity: ClientIP`, with a timeout when given (else the API's default).
    pub fn client_ip_affinity(mut self, timeout_seconds: Option<i32>) -> Self {
        let spec = self.spec();
        spec.session_affinity = Some("ClientIP".to_owned());
        spec.session_affinity_config = timeout_seconds.map(|timeout| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(timeout),
            }),
        });
        self
    }

    /// Sets `healthCheckNodePort`.
    pub fn health_check_node_port(mut self, port: i32) -> Self {
        self.spec().health_check_node_port = Some(port);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// The Service.
    pub fn build(self) -> Service {
        self.0
    }
}

/// An EndpointSlice of `service` named `name`, with no port or endpoint yet. Its address type
/// follows its first endpoint (IPv4 when it has none).
pub fn slice(namespace: &str, service: &str, name: &str) -> SliceBuilder {
    let mut metadata = meta(Some(namespace), name);
    metadata.labels = Some(BTreeMap::from([(
        LABEL_SERVICE_NAME.to_owned(),
        service.to_owned(),
    )]));
    SliceBuilder(EndpointSlice {
        metadata,
        address_type: "IPv4".to_owned(),
        endpoints: Vec::new(),
        ports: None,
    })
}

/// Builds an [`EndpointSlice`]; see [`slice()`].
#[derive(Debug, Clone)]
pub struct SliceBuilder(EndpointSlice);

impl SliceBuilder {
    /// Adds a port (`name` may be empty for an unnamed port).
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: (!name.is_empty()).then(|| name.to_owned()),
                port: Some(port),
                protocol: Some(protocol.to_owned()),
                ..EndpointPort::default()
            });
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: EndpointBuilder) -> Self {
        if self.0.endpoints.is_empty() && endpoint.0.addresses.iter().any(|a| a.contains(':')) {
            self.0.address_type = "IPv6".to_owned();
        }
        self.0.endpoints.push(endpoint.0);
        self
    }

    /// Adds a ready endpoint per address, on `node`.
    pub fn ready_on(self, node: &str, addresses: &[&str]) -> Self {
        addresses.iter().fold(self, |slice, address| {
            slice.endpoint(endpoint(address).node(node))
        })
    }

    /// The EndpointSlice.
    pub fn build(self) -> EndpointSlice {
        self.0
    }
}

/// A ready, serving, not terminating endpoint at `address`, of no node.
pub fn endpoint(address: &str) -> EndpointBuilder {
    EndpointBuilder(Endpoint {
        addresses: vec![address.to_owned()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        ..Endpoint::default()
    })
}

/// Builds an EndpointSlice entry; see [`endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointBuilder(Endpoint);

impl EndpointBuilder {
    fn conditions(&mut self) -> &mut EndpointConditions {
        self.0
            .conditions
            .get_or_insert_with(EndpointConditions::default)
    }

    /// Sets all three conditions.
    pub fn conditions_are(mut self, ready: bool, serving: bool, terminating: bool) -> Self {
        *self.conditions() = EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        };
        self
    }

    /// Not ready, still serving, terminating.
    pub fn terminating(self) -> Self {
        self.conditions_are(false, true, true)
    }

    /// Not ready and not serving.
    pub fn not_ready(self) -> Self {
        self.conditions_are(false, false, false)
    }

    /// Runs on `node`.
    pub fn node(mut self, node: &str) -> Self {
        self.0.node_name = Some(node.to_owned());
        self
    }

    /// Runs in `zone`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.0.zone = Some(zone.to_owned());
        self
    }
}

/// A Node named `name` with no address yet.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder(Node {
        metadata: meta(None, name),
        spec: Some(NodeSpec::default()),
        status: None,
    })
}

/// Builds a [`Node`]; see [`node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder(Node);

impl NodeBuilder {
    /// Adds an `InternalIP` address.
    pub fn internal_ip(mut self, ip: &str) -> Self {
        self.0
            .status
            .get_or_insert_with(NodeStatus::default)
            .addresses
            .get_or_insert_with(Vec::new)
            .push(NodeAddress {
                address: ip.to_owned(),
                type_: "InternalIP".to_owned(),
            });
        self
    }

    /// Adds a pod CIDR (the first one is also `podCIDR`).
    pub fn pod_cidr(mut self, cidr: &str) -> Self {
        let spec = self.0.spec.get_or_insert_with(NodeSpec::default);
        spec.pod_cidr.get_or_insert_with(|| cidr.to_owned());
        spec.pod_cidrs
            .get_or_insert_with(Vec::new)
            .push(cidr.to_owned());
        self
    }

    /// Sets the zone label.
    pub fn zone(mut self, zone: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_TOPOLOGY_ZONE.to_owned(), zone.to_owned());
        self
    }

    /// The Node.
    pub fn build(self) -> Node {
        self.0
    }
}
