//! Reading scenario files: both shapes, informational fields, errors that name the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::spec::{ConfigSpec, NodeSpec, ProbeSpec, Scenario, Step};
use kproxy_rig::{Error, Result};

/// Fields any object may carry and the runner ignores (besides `name`, which every object
/// accepts).
pub const INFORMATIONAL_FIELDS: &[&str] = &[
    "source",
    "notes",
    "note",
    "upstreamTest",
    "derived",
    "selector",
    "traceLocalIPs",
    "masqueradeMark",
];

/// Keys whose values are maps of user data (their keys are names, not fields).
const MAP_FIELDS: &[&str] = &["interfaces", "labels"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    node: Option<NodeSpec>,
    #[serde(default)]
    config: Option<ConfigSpec>,
    #[serde(default)]
    services: Option<Vec<super::spec::ServiceSpec>>,
    #[serde(default)]
    endpoint_slices: Option<Vec<super::spec::EndpointSliceSpec>>,
    #[serde(default)]
    probes: Option<Vec<ProbeSpec>>,
    #[serde(default)]
    scenarios: Option<Vec<RawScenario>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawScenario {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    node: Option<NodeSpec>,
    #[serde(default)]
    config: Option<ConfigSpec>,
    #[serde(default)]
    steps: Vec<Step>,
}

/// Reads a scenario file.
///
/// # Errors
///
/// [`Error::Scenario`] naming the file and, for a bad field, the field and its line.
pub fn parse_file(path: &Path) -> Result<Vec<Scenario>> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::Scenario {
        path: path.to_owned(),
        message: format!("cannot read: {error}"),
    })?;
    parse_str(&text, path)
}

/// Reads scenario text; `path` names it in errors and gives single-state files their
/// scenario name.
///
/// # Errors
///
/// [`Error::Scenario`] naming the file and, for a bad field, the field and its line.
pub fn parse_str(text: &str, path: &Path) -> Result<Vec<Scenario>> {
    let fail = |message: String| Error::Scenario {
        path: path.to_owned(),
        message,
    };
    let mut value: Value =
        serde_json::from_str(text).map_err(|error| fail(format!("not valid JSON: {error}")))?;
    strip_informational(&mut value, false);
    let raw: RawFile =
        serde_json::from_value(value).map_err(|error| fail(locate(&error.to_string(), text)))?;
    let stem = path.file_stem().map_or_else(
        || "scenario".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    let single = raw.services.is_some() || raw.endpoint_slices.is_some() || raw.probes.is_some();
    let scenarios = match (raw.scenarios, single) {
        (Some(_), true) => {
            return Err(fail(
                "a file holds either `scenarios` or a single state (`services`, `endpointSlices`, `probes`), not both"
                    .to_owned(),
            ));
        }
        (Some(list), false) => {
            if list.is_empty() {
                return Err(fail("`scenarios` is empty".to_owned()));
            }
            list.into_iter()
                .enumerate()
                .map(|(i, scenario)| Scenario {
                    name: scenario
                        .name
                        .unwrap_or_else(|| format!("scenario {}", i + 1)),
                    node: scenario
                        .node
                        .or_else(|| raw.node.clone())
                        .unwrap_or_default(),
                    config: scenario
                        .config
                        .or_else(|| raw.config.clone())
                        .unwrap_or_default(),
                    steps: scenario.steps,
                })
                .collect()
        }
        (None, _) => vec![Scenario {
            name: raw.name.unwrap_or(stem),
            node: raw.node.unwrap_or_default(),
            config: raw.config.unwrap_or_default(),
            steps: vec![Step {
                name: None,
                services: raw.services.unwrap_or_default(),
                endpoint_slices: raw.endpoint_slices.unwrap_or_default(),
                probes: raw.probes.unwrap_or_default(),
            }],
        }],
    };
    for (i, scenario) in scenarios.iter().enumerate() {
        validate(scenario).map_err(|message| {
            fail(format!("scenario {} ({}): {message}", i + 1, scenario.name))
        })?;
    }
    Ok(scenarios)
}

/// Removes informational fields from every object except user-data maps.
fn strip_informational(value: &mut Value, is_map: bool) {
    match value {
        Value::Object(object) => {
            if !is_map {
                object.retain(|key, _| !INFORMATIONAL_FIELDS.contains(&key.as_str()));
            }
            for (key, child) in object.iter_mut() {
                strip_informational(child, !is_map && MAP_FIELDS.contains(&key.as_str()));
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| strip_informational(item, false)),
        _ => {}
    }
}

/// Adds the line of the first occurrence of a field that serde names (`unknown field `x``,
/// `missing field `x``) to its message.
fn locate(message: &str, text: &str) -> String {
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"));
    let Some(field) = field else {
        return message.to_owned();
    };
    let quoted = format!("\"{field}\"");
    match text.lines().position(|line| line.contains(&quoted)) {
        Some(line) if message.starts_with("unknown field") => {
            format!("line {}: {message}", line + 1)
        }
        _ => message.to_owned(),
    }
}

/// Checks the values the runner itself interprets (the proxy reports the rest as model
/// errors, which is what a scenario about bad objects wants).
fn validate(scenario: &Scenario) -> std::result::Result<(), String> {
    scenario
        .config
        .to_proxy_config("nftables")
        .map_err(|e| format!("config: {e}"))?;
    scenario
        .node
        .interface_map()
        .map_err(|e| format!("node: {e}"))?;
    scenario
        .node
        .to_node_info()
        .map_err(|e| format!("node: {e}"))?;
    if scenario.steps.is_empty() {
        return Err("no steps".to_owned());
    }
    for (s, step) in scenario.steps.iter().enumerate() {
        for (p, probe) in step.probes.iter().enumerate() {
            probe
                .to_probe()
                .map_err(|e| format!("steps[{s}].probes[{p}]: {e}"))?;
            let modes = probe.expect_by.keys().map(String::as_str);
            for mode in std::iter::once("").chain(modes) {
                probe
                    .expectation(mode)
                    .map_err(|e| format!("steps[{s}].probes[{p}]: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The scenario files named by `paths`: files as given, directories searched recursively
/// for `*.json`, each sorted by path.
///
/// # Errors
///
/// [`Error::Scenario`] for a path that does not exist or cannot be listed.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(Error::Scenario {
                path: path.clone(),
                message: "no such file or directory".to_owned(),
            });
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|error| Error::Scenario {
        path: dir.to_owned(),
        message: format!("cannot list: {error}"),
    })?;
    for entry in entries {
        let path = entry
            .map_err(|error| Error::Scenario {
                path: dir.to_owned(),
                message: format!("cannot list: {error}"),
            })?
            .path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "json") {
            found.push(path);
        }
    }
    Ok(())
}
