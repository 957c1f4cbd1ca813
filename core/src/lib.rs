//! The backend-neutral core of kube-proxy-rs: it watches nothing and programs nothing itself,
//! but turns Kubernetes objects into minimal change sets and drives a [`Dataplane`] with them.
//!
//! ```text
//!  Service / EndpointSlice / Node objects (k8s-openapi)
//!        │  convert: validated; bad fields become ModelErrors, the rest is used
//!        ▼
//!  ServiceChangeTracker ── touched service ports, net of churn
//!        │  drain() → ChangeSet: only ports whose effective state changed
//!        ▼
//!  ProxyState (desired state, cheap to clone)
//!        │  plan: select_endpoints + every packet decision, per family (FamilyPlan, PortPlan)
//!        ▼
//!  Reconciler: min/max sync period, retry with backoff, full sync after failure
//!        ▼
//!  Box<dyn Dataplane>: nftables | iptables | ipvs | yours
//! ```
//!
//! A backend translates [`plan`]s into its kernel's terms and decides nothing about what a
//! packet meets. A CNI author implements [`Dataplane`], feeds events through a [`TrackerHandle`], and runs a
//! [`Reconciler`]; see the `custom_dataplane` example and the book.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod changes;
pub mod config;
pub mod convert;
mod dataplane;
mod error;
mod handle;
pub mod model;
pub mod plan;
mod readiness;
mod reconciler;
mod recording;
mod selection;
mod state;
#[cfg(test)]
mod test_objects;
mod tracker;

pub use changes::{Change, ChangeSet};
pub use config::{Balancing, LocalTrafficDetector, NodePortAddresses, ProxyConfig};
pub use convert::ConversionOptions;
pub use dataplane::{BoxError, Dataplane, DataplaneError, Integrity};
pub use error::{ModelError, ObjectKind, ObjectRef, with_causes};
pub use handle::TrackerHandle;
pub use model::{
    Endpoint, IpFamily, NamespacedName, NodeInfo, Protocol, ServicePort, ServicePortName,
    ServicePortState, SessionAffinity, TargetRef,
};
pub use readiness::{Readiness, SourceReady};
pub use reconciler::{Reconciler, ReconcilerConfig, SyncKind, SyncReport, SyncStatus};
pub use recording::{RecordedCall, RecordingDataplane};
pub use selection::{SelectedEndpoints, select_endpoints};
pub use state::ProxyState;
pub use tracker::ServiceChangeTracker;

/// `async_trait`, re-exported so implementers of [`Dataplane`] need no dependency of their own.
pub use async_trait::async_trait;

/// The k8s-openapi crate whose types this crate's conversion takes (`Service`, `EndpointSlice`,
/// `Node`), re-exported so that an embedder names the same types without keeping a version of
/// its own in step: `kproxy_core::k8s_openapi::api::core::v1::Service`.
///
/// This crate, like every library, enables no Kubernetes version feature of k8s-openapi. The
/// final binary must enable exactly one (`v1_33` or later; this workspace's binary uses `v1_33`)
/// in its own dependency on the same k8s-openapi release, or set `K8S_OPENAPI_ENABLED_VERSION`;
/// k8s-openapi fails to build with none or with two. The re-export spares the choice of release,
/// not of that feature.
pub use k8s_openapi;
