//! Slots in the shared endpoint maps: each policy chain that picks endpoints from a map owns
//! one (a shard, and a range of 65,536 keys in it) for as long as the chain exists.
//!
//! A chain's slot is derived from a hash of its name, so the same state gets the same slots
//! whatever the order of the syncs that built it, and an incremental sync leaves the same
//! table as a full one. Two chains that hash alike are told apart by probing, which only then
//! depends on history.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::names::ENDPOINT_MAP_SHARDS;

/// Slot numbers are `index * ENDPOINT_MAP_SHARDS + shard`, with `index < 2^16`, so that
/// `index << 16` plus an endpoint's position fits a 32-bit map key.
const SLOTS: u32 = ENDPOINT_MAP_SHARDS << 16;

/// Hands out slots and takes them back.
#[derive(Debug, Default, Clone)]
pub(crate) struct Slots {
    by_chain: HashMap<String, u32>,
    taken: HashSet<u32>,
}

impl Slots {
    /// The slot of `chain`, allocating one if it has none.
    pub(crate) fn slot_for(&mut self, chain: &str) -> u32 {
        if let Some(slot) = self.by_chain.get(chain) {
            return *slot;
        }
        let digest = Sha256::digest(chain.as_bytes());
        let mut slot = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % SLOTS;
        // Probe within the same shard; a full shard (2^16 chains) spills into the next one.
        while self.taken.contains(&slot) {
            slot = (slot + ENDPOINT_MAP_SHARDS) % SLOTS;
            if slot < ENDPOINT_MAP_SHARDS {
                slot = (slot + 1) % ENDPOINT_MAP_SHARDS;
            }
        }
        self.taken.insert(slot);
        self.by_chain.insert(chain.to_owned(), slot);
        slot
    }

    /// Takes back the slot of a chain that is gone.
    pub(crate) fn release(&mut self, chain: &str) {
        if let Some(slot) = self.by_chain.remove(chain) {
            self.taken.remove(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_depend_on_the_name_not_the_order() {
        let mut first = Slots::default();
        let mut second = Slots::default();
        let a = first.slot_for("service-a");
        let b = first.slot_for("service-b");
        assert_eq!(second.slot_for("service-b"), b);
        assert_eq!(second.slot_for("service-a"), a);
        assert_eq!(first.slot_for("service-a"), a);
    }

    #[test]
    fn colliding_names_get_distinct_slots_and_released_slots_are_reused() {
        let mut slots = Slots::default();
        let a = slots.slot_for("x");
        slots.taken.insert(a + ENDPOINT_MAP_SHARDS);
        slots.release("x");
        slots.by_chain.insert("y".into(), a);
        slots.taken.insert(a);
        let x = slots.slot_for("x");
        assert_ne!(x, a);
        assert_eq!(x % ENDPOINT_MAP_SHARDS, a % ENDPOINT_MAP_SHARDS);
        slots.release("y");
        assert!(!slots.taken.contains(&a));
    }
}
