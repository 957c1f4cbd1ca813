//! Dev-only builders of the Kubernetes objects tests feed the proxy: Services, EndpointSlices
//! and Nodes with the API's defaults ([`service`], [`slice()`], [`endpoint`], [`node`]), and the
//! synthetic clusters benchmarks load ([`synthetic`]). One set for every crate's tests.

mod builders;
pub mod edits;
pub mod synthetic;

pub use builders::{
    EndpointBuilder, NodeBuilder, ServiceBuilder, SliceBuilder, endpoint, node, service, slice,
};
