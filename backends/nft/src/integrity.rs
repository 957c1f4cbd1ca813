//! What the drift check asks the kernel about a table, and what it compares.
//!
//! A full dump of the table would cost as much as the sync it is meant to save, so the check
//! asks only for what outside damage changes first: whether the table exists with the handle
//! this backend's last sync left, how many chains and sets it holds, how many rules the fixed
//! chains (hooks and dispatch) hold, and whether one known element of each shared map is
//! still there. Deleting the table, flushing it, deleting or adding a chain or set, and
//! flushing a dispatch map all change one of these.

use crate::values::Key;

/// The questions about one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Chains whose rules are counted.
    pub chains: Vec<String>,
    /// Elements that must be present: `(set, key)`.
    pub elements: Vec<(String, Key)>,
}

/// The kernel's answers about one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    /// The table's handle: a table deleted and made again gets a new one.
    pub handle: u64,
    /// How many chains, sets and other objects the table holds.
    pub uses: u32,
    /// The number of rules of each of the probe's chains, in order.
    pub rules: Vec<usize>,
    /// Whether each of the probe's elements is present, in order.
    pub elements: Vec<bool>,
}
