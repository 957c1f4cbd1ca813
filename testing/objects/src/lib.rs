//! Dev-only builders of the Kubernetes objects tests feed the proxy: Services, EndpointSlices
//! and Nodes with the API's defaults, and the synthetic clusters benchmarks load.

pub mod synthetic;
