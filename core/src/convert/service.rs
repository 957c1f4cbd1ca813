//! `v1/Service` → [`ServicePort`]s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use super::ConversionOptions;
use super::Converted;
use super::fields::FieldReader;
use crate::error::{ObjectKind, ObjectRef};
use crate::model::{
    ANNOTATION_LAST_APPLIED, DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS, IpFamily, NamespacedName,
    ServicePort, ServicePortName, SessionAffinity, TrafficDistribution,
};

/// A Service as the proxy sees it: its key and the ports it programs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// The Service's namespace and name.
    pub key: NamespacedName,
    /// Its ports; empty for a Service the proxy leaves alone (ExternalName, headless, another
    /// proxy's, or one without a usable cluster IP).
    pub ports: Vec<ServicePort>,
}

/// Converts a Service.
///
/// Skipped without error (no ports): `type: ExternalName`, headless (`clusterIP: None` or
/// unset), and Services labelled for another proxy or as headless. Bad fields are reported and
/// left out: an unusable port drops only that port, a bad external or load-balancer IP only
/// that IP; a Service with no usable cluster IP has no ports.
///
/// `loadBalancerSourceRanges` fail closed: when some were given but none parse, the
/// load-balancer IPs are left out too, since they could not be firewalled.
pub fn service(svc: &Service, options: &ConversionOptions) -> Converted<ServiceInfo> {
    let key = NamespacedName::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    let mut reader = FieldReader::new(ObjectRef {
        kind: ObjectKind::Service,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    });
    if key.name.is_empty() {
        reader.missing("metadata.name");
    }
    let ports = match &svc.spec {
        Some(spec)
            if !key.name.is_empty() && !options.skips_labels(svc.metadata.labels.as_ref()) =>
        {
            service_ports(&key, spec, svc, &mut reader)
        }
        _ => Vec::new(),
    };
    Converted {
        value: ServiceInfo { key, ports },
        errors: reader.errors,
    }
}

fn service_ports(
    key: &NamespacedName,
    spec: &ServiceSpec,
    svc: &Service,
    reader: &mut FieldReader,
) -> Vec<ServicePort> {
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Vec::new();
    }
    let cluster_ips = cluster_ips(spec, reader);
    if cluster_ips.is_empty() {
        return Vec::new();
    }
    let is_load_balancer = service_type == "LoadBalancer";

    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, ip)| reader.ip(|| format!("spec.externalIPs[{i}]"), ip))
        .collect();

    let given_ranges = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    let source_ranges: Vec<_> = given_ranges
        .iter()
        .enumerate()
        .filter_map(|(i, cidr)| reader.cidr(|| format!("spec.loadBalancerSourceRanges[{i}]"), cidr))
        .collect();
    let ranges_unusable = !given_ranges.is_empty() && source_ranges.is_empty();

    let load_balancer_ips: Vec<IpAddr> = if is_load_balancer && !ranges_unusable {
        load_balancer_ips(svc, reader)
    } else {
        Vec::new()
    };

    let session_affinity = session_affinity(spec, reader);
    let external_policy_requested = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let traffic_distribution = spec
        .traffic_distribution
        .as_deref()
        .map(|value| match value {
            "PreferClose" | "PreferSameZone" => TrafficDistribution::PreferSameZone,
            "PreferSameNode" => TrafficDistribution::PreferSameNode,
            other => TrafficDistribution::Other(other.to_owned()),
        });

    let labels = Arc::new(svc.metadata.labels.clone().unwrap_or_default());
    let annotations: Arc<BTreeMap<String, String>> = Arc::new(
        svc.metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(key, _)| key.as_str() != ANNOTATION_LAST_APPLIED)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    );

    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let Some(protocol) = reader.protocol(
            || format!("spec.ports[{i}].protocol"),
            port.protocol.as_deref(),
        ) else {
            continue;
        };
        let Some(number) = reader.port(|| format!("spec.ports[{i}].port"), port.port) else {
            continue;
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(value) => reader.port(|| format!("spec.ports[{i}].nodePort"), value),
        };
        let mut service_port = ServicePort {
            name: ServicePortName::new(
                key.namespace.clone(),
                key.name.clone(),
                port.name.clone().unwrap_or_default(),
                protocol,
            ),
            cluster_ips: cluster_ips.clone(),
            port: number,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            load_balancer_source_ranges: source_ranges.clone(),
            session_affinity,
            external_policy_local: false,
            internal_policy_local,
            health_check_node_port: None,
            traffic_distribution: traffic_distribution.clone(),
            app_protocol: port.app_protocol.clone(),
            labels: Arc::clone(&labels),
            annotations: Arc::clone(&annotations),
        };
        service_port.external_policy_local =
            external_policy_requested && service_port.externally_accessible();
        if is_load_balancer && service_port.external_policy_local {
            service_port.health_check_node_port = match spec.health_check_node_port {
                None | Some(0) => None,
                Some(value) => reader.port(|| "spec.healthCheckNodePort".to_owned(), value),
            };
        }
        ports.push(service_port);
    }
    ports
}

/// `spec.clusterIPs` (or `spec.clusterIP`), at most one per family; empty when headless.
fn cluster_ips(spec: &ServiceSpec, reader: &mut FieldReader) -> Vec<IpAddr> {
    let (field, values): (&str, Vec<&str>) = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => {
            ("spec.clusterIPs", ips.iter().map(String::as_str).collect())
        }
        _ => (
            "spec.clusterIP",
            spec.cluster_ip.as_deref().into_iter().collect(),
        ),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if value.is_empty() || *value == "None" {
            return Vec::new();
        }
        let Some(ip) = reader.ip(|| format!("{field}[{i}]"), value) else {
            continue;
        };
        if ips
            .iter()
            .any(|seen| IpFamily::of(seen) == IpFamily::of(&ip))
        {
            reader.unsupported(&format!("{field}[{i}]"), value);
            continue;
        }
        ips.push(ip);
    }
    ips
}

/// `status.loadBalancer.ingress[].ip`, without `ipMode: Proxy` ones and without hostnames.
fn load_balancer_ips(svc: &Service, reader: &mut FieldReader) -> Vec<IpAddr> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut ips = Vec::new();
    for (i, entry) in ingress.into_iter().flatten().enumerate() {
        let Some(value) = entry.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        if entry.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(ip) = reader.ip(|| format!("status.loadBalancer.ingress[{i}].ip"), value) {
            ips.push(ip);
        }
    }
    ips
}

fn session_affinity(spec: &ServiceSpec, reader: &mut FieldReader) -> SessionAffinity {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return SessionAffinity::None;
    }
    let configured = spec
        .session_affinity_config
        .as_ref()
        .and_then(|config| config.client_ip.as_ref())
        .and_then(|client_ip| client_ip.timeout_seconds);
    let timeout_seconds = match configured {
        None => DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS,
        Some(value) if (1..=86_400).contains(&value) => value.unsigned_abs(),
        Some(value) => {
            reader.unsupported(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                &value.to_string(),
            );
            DEFAULT_SESSION_AFFINITY_TIMEOUT_SECONDS
        }
    };
    SessionAffinity::ClientIp { timeout_seconds }
}
