//! Dev-only conformance kit: the scenario runner over a [`DataplaneFactory`], so every
//! backend (and a CNI author's own dataplane) runs the same scenario files with real packets.
//!
//! The scenario files live in this crate's `scenarios/` folder ([`SCENARIOS_DIR`]); their
//! format is the book's "Scenario files" chapter.

mod factory;
pub mod kernel;
pub mod scenario;

pub use factory::{DataplaneFactory, ModeSettings, Recording, canonical_mode, same_mode};
pub use kernel::KernelTarget;

/// The suite every backend runs: this crate's `scenarios/` folder.
pub const SCENARIOS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
