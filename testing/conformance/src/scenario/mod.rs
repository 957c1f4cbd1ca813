//! Scenario files (SCENARIOS.md): behaviour as data, read here, turned into Kubernetes
//! objects and proxy settings, and run against a world with real packets.
//!
//! - [`parse_file`] / [`parse_str`] read either shape (a single state, or `scenarios` with
//!   `steps`) into [`Scenario`]s. Unknown fields are errors naming the field, its line and the
//!   file; the informational fields ([`INFORMATIONAL_FIELDS`]) are accepted and ignored.
//! - The spec types ([`NodeSpec`], [`ConfigSpec`], [`ServiceSpec`], [`EndpointSliceSpec`],
//!   [`ProbeSpec`]) convert into k8s-openapi objects, [`kproxy_core::ProxyConfig`] and
//!   [`kproxy_core::NodeInfo`], filling in the Kubernetes API's defaults (upstream
//!   kube-proxy's for `config`).
//! - [`run_scenario`] builds the world, applies each step through a
//!   [`kproxy_core::TrackerHandle`], calls [`kproxy_core::Reconciler::sync_once`] and sends the
//!   step's probes; [`run_paths`] does that for files and directories and prints the report.
//!
//! Runner extensions beyond SCENARIOS.md (all optional): `config.interfaceNamePrefix`
//! (default `veth`) and `config.bridgeInterface` (default `cni0`) name the pod links for the
//! `InterfaceNamePrefix` and `BridgeInterface` detectors; services may carry `clusterIPs`
//! (dual-stack) and `labels`, endpoint slices `labels`; node `podCIDRs`.

mod convert;
mod parse;
mod run;
mod spec;

pub use convert::{
    DEFAULT_BRIDGE, DEFAULT_INTERFACE_PREFIX, DEFAULT_NAMESPACE, DEFAULT_NODE_IP,
    DEFAULT_NODE_NAME, ObjectMap, protocol,
};
pub use parse::{INFORMATIONAL_FIELDS, collect_files, parse_file, parse_str};
pub use run::{
    Event, ProbeReport, ProbeStatus, RunOptions, Summary, assert_suite_passes, run_paths,
    run_scenario, world_spec,
};
pub use spec::{
    Cidr, ConfigSpec, EndpointSliceSpec, EndpointSpec, HintsSpec, IntOrString, NameRef, NodeSpec,
    ProbeSpec, Scenario, ServicePortSpec, ServiceSpec, SlicePortSpec, Step, StringOrList,
};

#[cfg(test)]
mod tests;
