//! Reference models and proptest strategies for kproxy-core.
//!
//! The reference model recomputes the desired state from the full object store in the
//! plainest way there is, sharing only the per-object conversion with the tracker; the
//! properties in `tests/` check the tracker's incremental answers against it.

pub mod objects;
pub mod reference;

use proptest::test_runner::Config;

/// The configuration of every property here: `PROPTEST_CASES` cases when set, never fewer
/// than 256.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases: cases.max(256),
        ..Config::default()
    }
}
