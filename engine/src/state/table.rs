//! [`Table`]: an insert-only keyed table whose canonical form is its rows
//! in insertion order.
//!
//! Rows live in a `Vec`, so iteration order, snapshots and the state hash
//! depend only on the order of inserts, which is log order. The hash index
//! that finds a row by key holds row numbers only (the key is not stored
//! twice), is skipped by snapshots and rebuilt on restore, and is never
//! iterated, so its random seed cannot leak into anything apply produces.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, HashTable};
use rkyv::{Archive, Deserialize, Serialize};

/// The dense number of a row, stable for the table's life.
pub type Slot = u32;

/// A name held in the state: ids, keys, stream names. Up to 24 bytes are
/// stored inline, so comparing a key costs no pointer chase, and most
/// names cost no allocation.
pub type Name = compact_str::CompactString;

#[derive(Archive, Serialize, Deserialize, Clone)]
pub struct Table<K: Hash + Eq, V> {
    rows: Vec<(K, V)>,
    #[rkyv(with = rkyv::with::Skip)]
    index: Index,
}

/// Row numbers by the hash of their keys.
#[derive(Clone, Default)]
struct Index {
    slots: HashTable<Slot>,
    /// foldhash, seeded at random per process: fast, and its seed cannot
    /// matter because the index is never iterated.
    hasher: DefaultHashBuilder,
}

impl<K: Hash + Eq, V> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            index: Index::default(),
        }
    }
}

impl<K: Hash + Eq + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(&self.rows).finish()
    }
}

impl<K: Hash + Eq, V> Table<K, V> {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn slot<Q>(&self, key: &Q) -> Option<Slot>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.index.hasher.hash_one(key);
        self.index
            .slots
            .find(hash, |&slot| self.rows[slot as usize].0.borrow() == key)
            .copied()
    }

    /// Adds a row; the key must be new.
    pub fn insert(&mut self, key: K, value: V) -> Slot {
        debug_assert!(self.slot(&key).is_none(), "Table::insert with a key already present");
        let slot = Slot::try_from(self.rows.len()).expect("a table holds fewer than 2^32 rows");
        let hash = self.index.hasher.hash_one(&key);
        self.rows.push((key, value));
        let (rows, hasher) = (&self.rows, &self.index.hasher);
        self.index
            .slots
            .insert_unique(hash, slot, |&slot| hasher.hash_one(&rows[slot as usize].0));
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

    /// Rebuilds the index after a restore.
    pub fn rebuild(&mut self) {
        let hasher = &self.index.hasher;
        let mut slots = HashTable::with_capacity(self.rows.len());
        for (slot, (key, _)) in self.rows.iter().enumerate() {
            let rows = &self.rows;
            slots.insert_unique(hasher.hash_one(key), slot as Slot, |&slot| {
                hasher.hash_one(&rows[slot as usize].0)
            });
        }
        self.index.slots = slots;
    }
}
