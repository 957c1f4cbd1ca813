//! The deployment manifests in `deploy/` parse as the Kubernetes objects they claim to be, and
//! the ConfigMap's configuration is accepted by the binary itself, so none of them can rot.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join(file)).expect("readable manifest");
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(document: &Value) -> T {
    serde_json::from_value(document.clone()).unwrap_or_else(|e| panic!("{document}: {e}"))
}

#[test]
fn rbac_is_least_privilege_and_parses() {
    let docs = documents("rbac.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    );
    let _: ServiceAccount = decode(&docs[0]);
    let role: ClusterRole = decode(&docs[1]);
    let binding: ClusterRoleBinding = decode(&docs[2]);
    assert_eq!(
        binding.role_ref.name,
        role.metadata.name.clone().unwrap_or_default()
    );
    for rule in role.rules.unwrap_or_default() {
        for verb in &rule.verbs {
            let resources = rule.resources.clone().unwrap_or_default();
            let writes_events = resources.iter().all(|r| r == "events");
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()) || writes_events,
                "{verb} on {resources:?} is more than kube-proxy needs"
            );
        }
    }
}

#[test]
fn daemonset_runs_the_binary_with_the_config_file() {
    let docs = documents("daemonset.yaml");
    let daemonset: DaemonSet = decode(&docs[0]);
    let pod = daemonset
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    let container = &pod.containers[0];
    let command = container.command.clone().unwrap_or_default();
    assert!(
        command
            .iter()
            .any(|arg| arg == "--config=/var/lib/kube-proxy/config.conf"),
        "{command:?}"
    );
    let probe = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness probe");
    assert_eq!(probe.path.as_deref(), Some("/livez"));
}

#[test]
fn configmap_configuration_is_accepted_by_the_binary() {
    let docs = documents("configmap.yaml");
    let config_map: ConfigMap = decode(&docs[0]);
    let config = config_map
        .data
        .expect("data")
        .get("config.conf")
        .cloned()
        .expect("config.conf");
    let dir = std::env::temp_dir().join(format!("kproxy-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("config.conf");
    let output = dir.join("effective.yaml");
    std::fs::write(&input, config).expect("write config");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kube-proxy"))
        .arg("--config")
        .arg(&input)
        .arg("--write-config-to")
        .arg(&output)
        .output()
        .expect("run kube-proxy");
    assert!(
        run.status.success(),
        "the ConfigMap's configuration is rejected: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let effective = std::fs::read_to_string(&output).expect("effective configuration");
    assert!(effective.contains("KubeProxyConfiguration"), "{effective}");
    let _ = std::fs::remove_dir_all(&dir);
}
