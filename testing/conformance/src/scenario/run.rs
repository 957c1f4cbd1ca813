//! Running scenarios: a world per scenario, one proxy per scenario, steps applied in order,
//! probes after each sync.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kproxy_core::{
    ConversionOptions, Readiness, Reconciler, ReconcilerConfig, ServiceChangeTracker, TrackerHandle,
};

use super::convert::{ObjectMap, protocol};
use super::parse::{collect_files, parse_file};
use super::spec::Scenario;
use kproxy_rig::probe::{self, CheckOptions, Expectation};
use kproxy_rig::{Error, Result, World, WorldSpec, netns};

use crate::factory::DataplaneFactory;

/// How scenarios are run.
#[derive(Clone)]
pub struct RunOptions {
    /// Builds the dataplane under test.
    pub factory: Arc<dyn DataplaneFactory>,
    /// How long a probe waits before calling it DROP.
    pub timeout: Duration,
    /// Skip the probes of scenarios whose `config.backend` names another backend.
    pub skip_other_backends: bool,
}

impl RunOptions {
    /// Options for the dataplanes `factory` builds, with the default timeout, running every
    /// probe.
    pub fn new(factory: Arc<dyn DataplaneFactory>) -> Self {
        Self {
            factory,
            timeout: probe::DEFAULT_TIMEOUT,
            skip_other_backends: false,
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("mode", &self.factory.mode())
            .field("timeout", &self.timeout)
            .field("skip_other_backends", &self.skip_other_backends)
            .finish()
    }
}

/// How a probe fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStatus {
    /// Its expectation held.
    Pass,
    /// It did not (or the step's sync failed).
    Fail,
    /// Not run: the scenario's expectations are for another backend.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Pass, fail or skip.
    pub status: ProbeStatus,
    /// `file › scenario › step`.
    pub location: String,
    /// The probe's name, or its packet.
    pub label: String,
    /// The packet (`TCP 10.0.0.2 -> 172.30.0.41:80`).
    pub packet: String,
    /// What was expected.
    pub expected: String,
    /// What was seen.
    pub seen: String,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            ProbeStatus::Pass => "PASS",
            ProbeStatus::Fail => "FAIL",
            ProbeStatus::Skip => "SKIP",
        };
        write!(f, "{status} {} › {}", self.location, self.label)?;
        if self.label != self.packet {
            write!(f, " ({})", self.packet)?;
        }
        write!(f, ": expected {}; saw {}", self.expected, self.seen)
    }
}

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Probes that passed.
    pub passed: usize,
    /// Probes that failed, including those of scenarios whose world could not be built.
    pub failed: usize,
    /// Probes skipped.
    pub skipped: usize,
    /// Scenarios that could not run, with why.
    pub errors: Vec<String>,
}

impl Summary {
    /// Adds another summary's counts.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.errors.extend(other.errors);
    }

    /// Whether nothing failed.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.errors.is_empty()
    }

    fn count(&mut self, status: ProbeStatus) {
        match status {
            ProbeStatus::Pass => self.passed += 1,
            ProbeStatus::Fail => self.failed += 1,
            ProbeStatus::Skip => self.skipped += 1,
        }
    }
}

impl fmt::Display for Summary {
    /// The closing line: `N passed, M failed` (and `, K skipped` when some were).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// The world a scenario needs: the node's links (with any of `node.ips` that no link holds
/// added to the primary link), pods for every endpoint address and pod source, clients for
/// the other sources, and a bystander at every probe destination, over all steps.
///
/// # Errors
///
/// When the node, config or a probe is malformed.
pub fn world_spec(scenario: &Scenario) -> Result<WorldSpec, String> {
    let mut interfaces = scenario.node.interface_map()?;
    let primary = scenario.node.primary_interface();
    let held: Vec<IpAddr> = interfaces.values().flatten().map(IpNet::addr).collect();
    let missing: Vec<IpAddr> = scenario
        .node
        .node_ips()
        .into_iter()
        .filter(|ip| !held.contains(ip))
        .collect();
    if !missing.is_empty() {
        let link = primary
            .clone()
            .or_else(|| interfaces.keys().find(|name| *name != "lo").cloned())
            .unwrap_or_else(|| "eth0".to_owned());
        interfaces
            .entry(link)
            .or_default()
            .extend(missing.into_iter().map(IpNet::from));
    }
    let mut spec = WorldSpec::new(interfaces);
    spec.primary_interface = primary;
    spec.pod_attachment = scenario.config.pod_attachment();
    spec.pod_networks = scenario.config.cluster_cidrs()?;
    spec.pod_networks.extend(scenario.node.pod_cidr_list()?);
    for step in &scenario.steps {
        for slice in &step.endpoint_slices {
            let ports: Vec<(u16, kproxy_core::Protocol)> = slice
                .ports
                .iter()
                .filter_map(|port| {
                    let number = u16::try_from(port.port?).ok().filter(|n| *n != 0)?;
                    let protocol = protocol(port.protocol.as_deref().unwrap_or("TCP")).ok()?;
                    Some((number, protocol))
                })
                .collect();
            for endpoint in &slice.endpoints {
                // The proxy uses the first address only, as upstream, and reads it as upstream
                // does (a legacy `10.180.000.001` is 10.180.0.1): the pod must live there.
                let Some(addr) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| kproxy_core::convert::parse_ip(a.trim()).ok())
                else {
                    continue;
                };
                for (port, protocol) in &ports {
                    spec.endpoint(addr, *port, *protocol);
                }
            }
        }
        for probe in &step.probes {
            spec.probe(&probe.to_probe()?);
        }
    }
    Ok(spec)
}

/// Something a run reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A probe's result.
    Probe(ProbeReport),
    /// Something worth knowing that is not a failure (e.g. the proxy skipped a bad field of
    /// an object, as a scenario about bad objects intends).
    Note(String),
}

/// Runs one scenario: builds its world, starts a fresh proxy with a dataplane from `options.factory`, and for
/// each step applies the objects, syncs once and sends the probes. Each event is handed to
/// `on_event` as it happens.
///
/// # Errors
///
/// When the world or the dataplane cannot be built (the probes then did not run).
pub async fn run_scenario(
    location: &str,
    scenario: &Scenario,
    options: &RunOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let mut summary = Summary::default();
    let scenario_error = |message: String| Error::World(format!("{location}: {message}"));
    let multi_step = scenario.steps.len() > 1;
    let step_location = |i: usize, name: &Option<String>| match (name, multi_step) {
        (Some(name), _) => format!("{location} › {name}"),
        (None, true) => format!("{location} › step {}", i + 1),
        (None, false) => location.to_owned(),
    };

    if options.skip_other_backends && !scenario.config.describes_backend(options.factory.mode()) {
        let owner = scenario.config.backend.clone().unwrap_or_default();
        for (i, step) in scenario.steps.iter().enumerate() {
            for spec in &step.probes {
                let report = ProbeReport {
                    status: ProbeStatus::Skip,
                    location: step_location(i, &step.name),
                    label: spec.label(),
                    packet: spec.to_probe().map(|p| p.to_string()).unwrap_or_default(),
                    expected: spec
                        .expect_for(options.factory.mode())
                        .unwrap_or_default()
                        .to_owned(),
                    seen: format!("not run: expectations are for backend {owner}"),
                };
                summary.count(report.status);
                on_event(Event::Probe(report));
            }
        }
        return Ok(summary);
    }

    let config = scenario
        .config
        .to_proxy_config(options.factory.mode())
        .map_err(scenario_error)?;
    let node = scenario.node.to_node_info().map_err(scenario_error)?;
    let world = World::build(world_spec(scenario).map_err(scenario_error)?).await?;
    let settings = crate::factory::ModeSettings {
        localhost_node_ports: scenario.config.localhost_node_ports,
    };
    let dataplane = options
        .factory
        .build_with(&config, &settings, world.node_netns())?;
    let handle = TrackerHandle::new(ServiceChangeTracker::new(
        node,
        ConversionOptions::default(),
    ));
    let mut reconciler = Reconciler::new(
        handle.clone(),
        dataplane,
        Readiness::new(),
        ReconcilerConfig::default(),
    );
    let is_node = |addr: IpAddr| scenario.node.owns(addr);

    let mut services = ObjectMap::new();
    let mut slices = ObjectMap::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let here = step_location(i, &step.name);
        let (next_services, next_slices) = step.objects();
        let mut problems = Vec::new();
        for key in slices.keys().filter(|key| !next_slices.contains_key(*key)) {
            handle.delete_endpoint_slice(&key.0, &key.1);
        }
        for key in services
            .keys()
            .filter(|key| !next_services.contains_key(*key))
        {
            handle.delete_service(&key.0, &key.1);
        }
        for (key, service) in &next_services {
            if services.get(key) != Some(service) {
                problems.extend(handle.upsert_service(service));
            }
        }
        for (key, slice) in &next_slices {
            if slices.get(key) != Some(slice) {
                problems.extend(handle.upsert_endpoint_slice(slice));
            }
        }
        for problem in problems {
            on_event(Event::Note(format!(
                "{here}: the proxy skipped part of an object: {problem}"
            )));
        }
        services = next_services;
        slices = next_slices;

        let synced = reconciler.sync_once().await;
        for spec in &step.probes {
            let packet = spec.to_probe().map_err(scenario_error)?;
            let mode = options.factory.mode();
            let expectation = spec.expectation(mode).map_err(scenario_error)?;
            let masq = spec.masq_for(mode);
            let mut expected = expectation.to_string();
            if matches!(expectation, Expectation::Endpoints(_)) {
                expected.push_str(if masq {
                    " (masqueraded)"
                } else {
                    " (not masqueraded)"
                });
            }
            let (status, seen) = match &synced {
                Err(error) => (
                    ProbeStatus::Fail,
                    format!("nothing: the sync failed: {error}"),
                ),
                Ok(_) => {
                    let options = CheckOptions {
                        masq: Some(masq),
                        affinity: step.affinity_for(&packet, is_node),
                        timeout: options.timeout,
                    };
                    let verdict = probe::check(&world, &packet, &expectation, options).await;
                    let status = if verdict.pass {
                        ProbeStatus::Pass
                    } else {
                        ProbeStatus::Fail
                    };
                    (status, verdict.seen)
                }
            };
            let report = ProbeReport {
                status,
                location: here.clone(),
                label: spec.label(),
                packet: packet.to_string(),
                expected,
                seen,
            };
            summary.count(status);
            on_event(Event::Probe(report));
        }
    }
    drop(reconciler);
    drop(world);
    Ok(summary)
}

/// Runs every scenario in `paths` (files, or directories searched for `*.json`), printing one
/// line per probe (and notes) on standard output. Every file is read first: a malformed one
/// stops the run before any world is built.
///
/// # Errors
///
/// When no file is found, a file is malformed (every bad file is printed on standard error),
/// this machine cannot build worlds (not root, a tool missing), or the backend is unknown.
/// A scenario whose world cannot be built is reported, counted as failed, and the run goes on.
pub async fn run_paths(paths: &[PathBuf], options: &RunOptions) -> Result<Summary> {
    let files = collect_files(paths)?;
    if files.is_empty() {
        return Err(Error::Scenario {
            path: paths.first().cloned().unwrap_or_default(),
            message: "no scenario files (*.json) found".to_owned(),
        });
    }
    let mut parsed = Vec::new();
    let mut bad = Vec::new();
    for file in &files {
        match parse_file(file) {
            Ok(scenarios) => parsed.push((file.clone(), scenarios)),
            Err(error) => bad.push(error),
        }
    }
    if let Some(error) = bad.pop() {
        for other in &bad {
            eprintln!("error: {other}");
        }
        return Err(error);
    }
    netns::check_environment()?;
    options.factory.preflight()?;

    let mut summary = Summary::default();
    let mut print = |event: Event| match event {
        Event::Probe(report) => emit(&report.to_string()),
        Event::Note(note) => emit(&format!("note: {note}")),
    };
    for (file, scenarios) in parsed {
        for scenario in &scenarios {
            let location = format!("{} › {}", file.display(), scenario.name);
            match run_scenario(&location, scenario, options, &mut print).await {
                Ok(result) => summary.add(result),
                Err(error) if error.is_environment() || matches!(error, Error::Backend(_)) => {
                    return Err(error);
                }
                Err(error) => {
                    let probes: usize = scenario.steps.iter().map(|step| step.probes.len()).sum();
                    emit(&format!(
                        "FAIL {location}: {error} ({probes} probe(s) not run, counted as failed)"
                    ));
                    summary.failed += probes;
                    summary.errors.push(format!("{location}: {error}"));
                }
            }
        }
    }
    Ok(summary)
}

/// Prints a report line; a closed standard output (`| head`) is not worth a panic that would
/// cut the run short.
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs every file of [`SCENARIOS_DIR`](crate::SCENARIOS_DIR) with `options`, as a backend's own
/// scenario test does, prints the summary after `label`, and returns it.
///
/// # Panics
///
/// As a test assertion: when the machine cannot build worlds (not root, a tool missing), a
/// file cannot be run, no probe ran, a probe failed, or a namespace was left behind.
pub async fn assert_suite_passes(options: &RunOptions, label: &str) -> Summary {
    if let Err(error) = netns::check_environment() {
        panic!("the scenario suite cannot run here: {error}");
    }
    let summary = run_paths(&[PathBuf::from(crate::SCENARIOS_DIR)], options)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    println!("{label}: {summary}");
    assert!(summary.passed > 0, "no probe ran");
    assert!(summary.success(), "{summary}: see the FAIL lines above");
    assert!(
        netns::registered().is_empty(),
        "namespaces still held: {:?}",
        netns::registered()
    );
    summary
}
