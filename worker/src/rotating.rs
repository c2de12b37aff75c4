//! A map whose entries expire after a number of rotations (Storm's `RotatingMap`).

use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::RandomState;

/// Entries live in `buckets` generations; `rotate` drops the oldest generation. With a
/// rotation every `T`, an entry expires between `(buckets - 1) * T` and `buckets * T`
/// after it was inserted.
pub struct RotatingMap<K, V> {
    buckets: Vec<HashMap<K, V, RandomState>>,
}

impl<K: Hash + Eq, V> RotatingMap<K, V> {
    /// A map with `buckets` generations (at least 2).
    pub fn new(buckets: usize) -> Self {
        RotatingMap {
            buckets: (0..buckets.max(2)).map(|_| HashMap::default()).collect(),
        }
    }

    /// Inserts into the newest generation.
    pub fn insert(&mut self, k: K, v: V) {
        self.buckets[0].insert(k, v);
    }

    /// The entry for `k`, in whatever generation it lives.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let idx = self.buckets.iter().position(|b| b.contains_key(k))?;
        self.buckets[idx].get_mut(k)
    }

    /// The entry for `k`, inserted into the newest generation when absent.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        match self.buckets.iter().position(|b| b.contains_key(&k)) {
            Some(idx) => self.buckets[idx].get_mut(&k).expect("present"),
            None => self.buckets[0].entry(k).or_insert_with(f),
        }
    }

    /// Removes and returns the entry for `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.buckets.iter_mut().find_map(|b| b.remove(k))
    }

    /// Drops the oldest generation and returns its entries.
    pub fn rotate(&mut self) -> HashMap<K, V, RandomState> {
        let expired = self.buckets.pop().expect("at least two buckets");
        self.buckets.insert(0, HashMap::default());
        expired
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(HashMap::len).sum()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(HashMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_all_generations() {
        let mut m = RotatingMap::new(3);
        m.insert(1, "a");
        assert!(m.rotate().is_empty());
        assert!(m.rotate().is_empty());
        m.insert(2, "b");
        let expired = m.rotate();
        assert_eq!(expired.get(&1), Some(&"a"));
        assert_eq!(m.len(), 1);
        assert_eq!(m.remove(&2), Some("b"));
        assert!(m.is_empty());
    }
}
