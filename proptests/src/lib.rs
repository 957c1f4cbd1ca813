//! Reference models and proptest strategies for kproxy-core.
