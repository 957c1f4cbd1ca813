use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString as K8sIntOrString;
use kproxy_core::{IpFamily, LocalTrafficDetector, NodePortAddresses, Protocol};

use super::*;
use kproxy_rig::PodAttachment;
use kproxy_rig::probe::{Expectation, Probe};

fn parse(text: &str) -> Vec<Scenario> {
    parse_str(text, Path::new("test.json")).unwrap()
}

fn parse_err(text: &str) -> String {
    parse_str(text, Path::new("dir/bad.json"))
        .unwrap_err()
        .to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The snippets of SCENARIOS.md, put together.
const SPEC_EXAMPLE: &str = r#"{
  "node": { "name": "test-node",
    "ips": ["192.168.0.2", "192.168.1.2", "2001:db8::1"],
    "primaryIP": "192.168.0.2",
    "interfaces": { "lo": ["127.0.0.1/8", "::1/128"], "eth0": ["192.168.0.2/24", "2001:db8::1/64"] },
    "podCIDR": "10.0.0.0/24",
    "labels": { "topology.kubernetes.io/zone": "zone-a" } },
  "config": { "backend": "nftables", "ipFamily": "IPv4",
    "clusterCIDR": "10.0.0.0/8", "localDetector": "ClusterCIDR",
    "masqueradeAll": false,
    "nodePortAddresses": ["192.168.0.2/32"],
    "serviceCIDRs": ["172.30.0.0/16"],
    "localhostNodePorts": null },
  "services": [{ "namespace": "ns1", "name": "svc1", "type": "LoadBalancer",
    "clusterIP": "172.30.0.41", "externalIPs": [], "loadBalancerIngress": ["1.2.3.4"],
    "loadBalancerIngressIPMode": null, "loadBalancerSourceRanges": [],
    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": null,
    "sessionAffinity": "None", "sessionAffinityTimeoutSeconds": null,
    "healthCheckNodePort": 0, "trafficDistribution": null,
    "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001, "targetPort": 80}] }],
  "endpointSlices": [{ "namespace": "ns1", "name": "svc1-abc", "service": "svc1", "addressType": "IPv4",
    "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
    "endpoints": [{"addresses": ["10.180.0.1"], "ready": true, "serving": true,
                   "terminating": false, "nodeName": "test-node", "zone": null,
                   "hints": {"forZones": ["zone-a"], "forNodes": ["test-node"]}}] }],
  "probes": [{ "name": "pod to cluster IP", "src": "10.0.0.2", "dst": "172.30.0.41", "dport": 80,
    "proto": "TCP", "expect": "10.180.0.1:80, 10.180.0.2:80", "masq": false }]
}"#;

#[test]
fn the_spec_example_parses_into_one_scenario_of_one_step() {
    let scenarios = parse(SPEC_EXAMPLE);
    assert_eq!(scenarios.len(), 1);
    let scenario = &scenarios[0];
    assert_eq!(scenario.name, "test");
    assert_eq!(scenario.steps.len(), 1);
    let step = &scenario.steps[0];
    assert_eq!(step.services.len(), 1);
    assert_eq!(step.endpoint_slices.len(), 1);
    assert_eq!(
        step.probes[0].to_probe().unwrap(),
        Probe::tcp(ip("10.0.0.2"), ip("172.30.0.41"), 80)
    );
    assert_eq!(
        step.probes[0].expectation("nftables").unwrap(),
        Expectation::Endpoints(vec![
            "10.180.0.1:80".parse().unwrap(),
            "10.180.0.2:80".parse().unwrap()
        ])
    );

    let config = scenario.config.to_proxy_config("nft").unwrap();
    assert_eq!(config.ip_families, vec![IpFamily::V4]);
    assert_eq!(
        config.local_detector,
        LocalTrafficDetector::ClusterCidr(vec!["10.0.0.0/8".parse().unwrap()])
    );
    assert_eq!(
        config.node_port_addresses,
        NodePortAddresses::Cidrs(vec!["192.168.0.2/32".parse().unwrap()])
    );
    assert_eq!(config.service_cidrs, vec!["172.30.0.0/16".parse().unwrap()]);
    assert!(!config.masquerade_all);

    let node = scenario.node.to_node_info().unwrap();
    assert_eq!(node.name, "test-node");
    assert_eq!(node.zone.as_deref(), Some("zone-a"));
    assert_eq!(node.pod_cidrs, vec!["10.0.0.0/24".parse().unwrap()]);
    assert_eq!(
        node.addresses,
        vec![ip("192.168.0.2"), ip("192.168.1.2"), ip("2001:db8::1")]
    );
}

#[test]
fn the_primary_ip_comes_first_in_node_addresses() {
    let scenarios = parse(
        r#"{"node": {"ips": ["192.168.1.2", "192.168.0.2"], "primaryIP": "192.168.0.2"}, "probes": []}"#,
    );
    let node = scenarios[0].node.to_node_info().unwrap();
    assert_eq!(node.addresses, vec![ip("192.168.0.2"), ip("192.168.1.2")]);
}

#[test]
fn objects_take_the_kubernetes_defaults() {
    let scenarios = parse(
        r#"{"services": [{"name": "web", "clusterIP": "172.30.0.10", "ports": [{"port": 80}]},
                         {"name": "np", "type": "NodePort", "clusterIP": "172.30.0.11", "sessionAffinity": "ClientIP",
                          "loadBalancerIngress": ["1.2.3.4"], "ports": [{"name": "p", "port": 81, "nodePort": 3001}]}],
            "endpointSlices": [{"service": "web", "ports": [{"port": 8080}], "endpoints": [{"addresses": ["fd00::1"]}]},
                               {"service": "web", "ports": [{"port": 8080}], "endpoints": [{"addresses": ["10.0.0.1"]}]}],
            "probes": [{"src": "10.0.0.2", "dst": "172.30.0.10", "dport": 80}]}"#,
    );
    let step = &scenarios[0].steps[0];
    let (services, slices) = step.objects();
    let web = &services[&("default".to_owned(), "web".to_owned())];
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.cluster_ips, Some(vec!["172.30.0.10".to_owned()]));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.external_traffic_policy, None);
    assert!(web.status.is_none());
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(K8sIntOrString::Int(80)));

    let np = &services[&("default".to_owned(), "np".to_owned())];
    let spec = np.spec.as_ref().unwrap();
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .unwrap()
        .client_ip
        .as_ref()
        .unwrap()
        .timeout_seconds;
    assert_eq!(timeout, Some(10_800));
    let ingress = &np
        .status
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .unwrap()[0];
    assert_eq!(ingress.ip.as_deref(), Some("1.2.3.4"));
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));

    let names: Vec<&String> = slices.keys().map(|(_, name)| name).collect();
    assert_eq!(names, ["web-0", "web-1"]);
    let v6 = &slices[&("default".to_owned(), "web-0".to_owned())];
    assert_eq!(v6.address_type, "IPv6");
    assert_eq!(
        v6.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(
        v6.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    assert_eq!(
        slices[&("default".to_owned(), "web-1".to_owned())].address_type,
        "IPv4"
    );

    // The proxy accepts the converted objects without complaint.
    let mut tracker = kproxy_core::ServiceChangeTracker::new(
        scenarios[0].node.to_node_info().unwrap(),
        kproxy_core::ConversionOptions::default(),
    );
    for service in services.values() {
        assert!(tracker.upsert_service(service).is_empty());
    }
    for slice in slices.values() {
        assert!(tracker.upsert_endpoint_slice(slice).is_empty());
    }
    assert_eq!(tracker.drain().len(), 2);

    // Session affinity is found by cluster IP and by node port.
    let node = &scenarios[0].node;
    assert!(
        step.affinity_for(&Probe::tcp(ip("10.0.0.2"), ip("172.30.0.11"), 81), |a| node
            .owns(a))
    );
    assert!(step.affinity_for(
        &Probe::tcp(ip("203.0.113.2"), ip("192.168.0.2"), 3001),
        |a| node.owns(a)
    ));
    assert!(
        step.affinity_for(&Probe::tcp(ip("203.0.113.2"), ip("1.2.3.4"), 81), |a| node
            .owns(a))
    );
    assert!(
        !step.affinity_for(&Probe::udp(ip("10.0.0.2"), ip("172.30.0.11"), 81), |a| node
            .owns(a))
    );
    assert!(
        !step.affinity_for(&Probe::tcp(ip("10.0.0.2"), ip("172.30.0.10"), 80), |a| node
            .owns(a))
    );
}

#[test]
fn config_defaults_are_upstream_kube_proxys() {
    let scenarios = parse(r#"{"probes": []}"#);
    let config = &scenarios[0].config;
    let nft = config.to_proxy_config("nft").unwrap();
    assert_eq!(nft.ip_families, vec![IpFamily::V4, IpFamily::V6]);
    assert_eq!(
        nft.local_detector,
        LocalTrafficDetector::None,
        "ClusterCIDR without a CIDR"
    );
    assert_eq!(
        nft.node_port_addresses,
        NodePortAddresses::Primary,
        "nftables: primary IPs"
    );
    assert!(!nft.masquerade_all);
    assert_eq!(
        config
            .to_proxy_config("iptables")
            .unwrap()
            .node_port_addresses,
        NodePortAddresses::All
    );
    assert_eq!(
        config.pod_attachment(),
        PodAttachment::Veth {
            prefix: "veth".to_owned()
        }
    );

    let node = &scenarios[0].node;
    assert_eq!(node.node_name(), "test-node");
    assert_eq!(node.node_ips(), vec![ip("192.168.0.2")]);
    let links = node.interface_map().unwrap();
    assert_eq!(links["eth0"], vec!["192.168.0.2/24".parse().unwrap()]);
    assert!(links.contains_key("lo"));
    assert_eq!(node.primary_interface().as_deref(), Some("eth0"));

    let explicit = parse(
        r#"{"config": {"backend": "iptables", "nodePortAddresses": [], "localDetector": "BridgeInterface",
                       "clusterCIDR": "10.0.0.0/8, fd00::/48"}, "probes": []}"#,
    );
    let config = &explicit[0].config;
    let proxy = config.to_proxy_config("nft").unwrap();
    assert_eq!(proxy.node_port_addresses, NodePortAddresses::All);
    assert_eq!(
        proxy.local_detector,
        LocalTrafficDetector::BridgeInterface("cni0".to_owned())
    );
    assert_eq!(config.cluster_cidrs().unwrap().len(), 2);
    assert_eq!(
        config.pod_attachment(),
        PodAttachment::Bridge {
            name: "cni0".to_owned()
        }
    );
    assert!(!config.describes_backend("nft"));
    assert!(config.describes_backend("iptables"));
    assert!(explicit[0].config.to_proxy_config("nft").is_ok());
    let primary = parse(r#"{"config": {"nodePortAddresses": ["primary"]}, "probes": []}"#);
    assert_eq!(
        primary[0]
            .config
            .to_proxy_config("iptables")
            .unwrap()
            .node_port_addresses,
        NodePortAddresses::Primary
    );
}

#[test]
fn scenario_files_replace_file_defaults_whole_and_keep_steps_in_order() {
    let scenarios = parse(
        r#"{ "node": {"name": "file-node"}, "config": {"masqueradeAll": true},
             "scenarios": [
               { "name": "inherits", "steps": [ {"name": "one", "probes": []} ] },
               { "name": "replaces", "node": {"ips": ["192.168.5.5"]}, "config": {"ipFamily": "IPv6"},
                 "steps": [ {"name": "a", "services": [{"name": "s", "clusterIP": "172.30.0.1", "ports": [{"port": 80}]}]},
                            {"name": "b", "probes": [{"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "expect": "REJECT"}]} ] } ] }"#,
    );
    assert_eq!(scenarios.len(), 2);
    assert_eq!(scenarios[0].node.node_name(), "file-node");
    assert_eq!(scenarios[0].config.masquerade_all, Some(true));
    assert_eq!(
        scenarios[1].node.node_name(),
        "test-node",
        "a scenario's node replaces the file's whole"
    );
    assert_eq!(scenarios[1].config.masquerade_all, None);
    let names: Vec<_> = scenarios[1]
        .steps
        .iter()
        .map(|s| s.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        scenarios[1].steps[1].probes[0]
            .expectation("nftables")
            .unwrap(),
        Expectation::Reject
    );
}

#[test]
fn unknown_fields_are_errors_naming_the_field_the_line_and_the_file() {
    let error = parse_err(
        "{\n  \"probes\": [\n    {\"src\": \"10.0.0.2\", \"dst\": \"172.30.0.1\", \"dport\": 80, \"expected\": \"\"}\n  ]\n}",
    );
    assert!(error.contains("dir/bad.json"), "{error}");
    assert!(error.contains("`expected`"), "{error}");
    assert!(error.contains("line 3"), "{error}");

    let error =
        parse_err(r#"{"services": [{"name": "s", "ports": [{"port": 80, "nodeport": 3000}]}]}"#);
    assert!(error.contains("`nodeport`"), "{error}");
    let error = parse_err(r#"{"config": {"masquerade": true}, "probes": []}"#);
    assert!(error.contains("`masquerade`"), "{error}");
    let error = parse_err(r#"{"scenarios": [{"steps": [], "bogus": 1}]}"#);
    assert!(error.contains("`bogus`"), "{error}");
    let error = parse_err(
        r#"{"endpointSlices": [{"service": "s", "endpoints": [{"addresses": [], "hint": {}}]}]}"#,
    );
    assert!(error.contains("`hint`"), "{error}");
}

#[test]
fn informational_fields_are_accepted_anywhere_but_labels_keep_their_keys() {
    let scenarios = parse(
        r#"{ "source": "upstream", "notes": ["a"], "upstreamTest": "TestX", "derived": true,
             "node": {"note": "n", "labels": {"source": "kept", "topology.kubernetes.io/zone": "z"}},
             "config": {"traceLocalIPs": ["1.2.3.4"], "masqueradeMark": "0x4000", "name": "c"},
             "services": [{"name": "s", "selector": {"app": "x"}, "clusterIP": "172.30.0.1",
                           "ports": [{"port": 80, "note": "p"}]}],
             "endpointSlices": [{"service": "s", "notes": "x", "ports": [{"port": 80, "source": "y"}],
                                 "endpoints": [{"addresses": ["10.0.0.1"], "name": "e", "derived": 1,
                                                "hints": {"forZones": [{"name": "z"}], "note": "h"}}]}],
             "probes": [{"name": "p", "src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "notes": "q",
                         "upstreamTest": "T", "derived": false}] }"#,
    );
    assert_eq!(scenarios[0].node.labels["source"], "kept");
    assert_eq!(scenarios[0].steps[0].probes[0].label(), "p");
}

#[test]
fn malformed_values_are_errors_naming_what_is_wrong() {
    let error = parse_err(
        r#"{"services": [], "probes": [{"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "proto": "ICMP"}]}"#,
    );
    assert!(
        error.contains("probes[0]") && error.contains("ICMP"),
        "{error}"
    );
    let error = parse_err(
        r#"{"probes": [{"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80, "expect": "10.0.0.1"}]}"#,
    );
    assert!(
        error.contains("probes[0]") && error.contains("10.0.0.1"),
        "{error}"
    );
    let error = parse_err(r#"{"probes": [{"src": "10.0.0.2", "dst": "fd00::1", "dport": 80}]}"#);
    assert!(error.contains("different families"), "{error}");
    let error = parse_err(r#"{"config": {"ipFamily": "IPv5"}, "probes": []}"#);
    assert!(
        error.contains("ipFamily") && error.contains("IPv5"),
        "{error}"
    );
    let error = parse_err(r#"{"config": {"localDetector": "Magic"}, "probes": []}"#);
    assert!(error.contains("localDetector"), "{error}");
    let error =
        parse_err(r#"{"node": {"interfaces": {"eth0": ["192.168.0.2/33"]}}, "probes": []}"#);
    assert!(error.contains("192.168.0.2/33"), "{error}");
    let error = parse_err(r#"{"probes": [{"src": "10.0.0.2", "dst": "172.30.0.1"}]}"#);
    assert!(error.contains("dport"), "{error}");
    let error = parse_err(r#"{"probes": [], "scenarios": []}"#);
    assert!(error.contains("not both"), "{error}");
    let error = parse_err("{ not json");
    assert!(error.contains("not valid JSON"), "{error}");
}

#[test]
fn world_specs_cover_every_step() {
    let scenarios = parse(
        r#"{ "config": {"clusterCIDR": "10.0.0.0/8"},
             "scenarios": [{ "name": "s", "node": {"ips": ["192.168.0.2", "192.168.1.2"],
               "interfaces": {"eth0": ["192.168.0.2/24"]}},
               "steps": [
                 { "endpointSlices": [{"service": "a", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
                                       "endpoints": [{"addresses": ["10.180.0.1", "10.180.0.9"]}]}],
                   "probes": [{"src": "10.0.0.2", "dst": "172.30.0.1", "dport": 80}] },
                 { "probes": [{"src": "203.0.113.2", "dst": "192.168.0.2", "dport": 3001, "proto": "UDP"}] } ] }] }"#,
    );
    let spec = world_spec(&scenarios[0]).unwrap();
    let endpoints: Vec<String> = spec.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(endpoints, ["UDP 10.180.0.1:53", "TCP 10.180.0.1:80"]);
    assert_eq!(spec.sources.len(), 2);
    assert_eq!(spec.bystanders.len(), 2);
    assert_eq!(spec.pod_networks, vec!["10.0.0.0/8".parse().unwrap()]);
    assert!(
        spec.interfaces["eth0"].contains(&"192.168.1.2/32".parse().unwrap()),
        "node IPs no link holds go on the primary link"
    );
    assert_eq!(spec.primary_interface.as_deref(), Some("eth0"));
    assert_eq!(protocol("udp").unwrap(), Protocol::Udp);
}

#[test]
fn summary_closing_line() {
    let mut summary = Summary {
        passed: 3,
        failed: 1,
        ..Summary::default()
    };
    assert_eq!(summary.to_string(), "3 passed, 1 failed");
    summary.skipped = 2;
    assert_eq!(summary.to_string(), "3 passed, 1 failed, 2 skipped");
    assert!(!summary.success());
}
