//! Reference models and proptest strategies for kproxy-core.
//!
//! The reference model recomputes the desired state from the full object store in the
//! plainest way there is, sharing only the per-object conversion with the tracker; the
//! properties in `tests/` check the tracker's incremental answers against it.

pub mod objects;
pub mod reference;
