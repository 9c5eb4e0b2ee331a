//! [`Table`]: an insert-only keyed table whose canonical form is its rows
//! in insertion order.
//!
//! Rows live in a `Vec`, so iteration order, snapshots and the state hash
//! depend only on the order of inserts, which is log order. The hash map
//! that finds a row by key is skipped by snapshots and rebuilt on restore;
//! it is never iterated, so its random seed cannot leak into anything apply
//! produces.

use std::collections::HashMap;
use std::hash::Hash;

use rkyv::{Archive, Deserialize, Serialize};

/// The dense number of a row, stable for the table's life.
pub type Slot = u32;

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct Table<K: Hash + Eq + Clone, V> {
    rows: Vec<(K, V)>,
    #[rkyv(with = rkyv::with::Skip)]
    lookup: HashMap<K, Slot>,
}

impl<K: Hash + Eq + Clone, V> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            lookup: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn slot<Q>(&self, key: &Q) -> Option<Slot>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup.get(key).copied()
    }

    /// Adds a row; the key must be new.
    pub fn insert(&mut self, key: K, value: V) -> Slot {
        let slot = Slot::try_from(self.rows.len()).expect("a table holds fewer than 2^32 rows");
        let previous = self.lookup.insert(key.clone(), slot);
        assert!(previous.is_none(), "Table::insert with a key already present");
        self.rows.push((key, value));
        slot
    }

    pub fn key(&self, slot: Slot) -> &K {
        &self.rows[slot as usize].0
    }

    pub fn get(&self, slot: Slot) -> &V {
        &self.rows[slot as usize].1
    }

    pub fn get_mut(&mut self, slot: Slot) -> &mut V {
        &mut self.rows[slot as usize].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &K, &V)> {
        self.rows
            .iter()
            .enumerate()
            .map(|(slot, (key, value))| (slot as Slot, key, value))
    }

    /// Rebuilds the lookup map after a restore.
    pub fn rebuild(&mut self) {
        self.lookup = self
            .rows
            .iter()
            .enumerate()
            .map(|(slot, (key, _))| (key.clone(), slot as Slot))
            .collect();
    }
}
