//! A map whose entries expire after a number of rotations (Storm's `RotatingMap`).

use std::collections::hash_map::Entry;
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

    /// Applies `f` to the entry for `k` (made with `new` in the newest generation when
    /// absent) and removes the entry when `f` says so: `f` returns (remove, result).
    ///
    /// An entry of the newest generation, where nearly every short-lived entry is
    /// found, costs one hash probe whatever happens to it (the acker's hot path).
    pub fn update<R>(
        &mut self,
        k: K,
        new: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> (bool, R),
    ) -> R {
        let (newest, older) = self
            .buckets
            .split_first_mut()
            .expect("at least two buckets");
        match newest.entry(k) {
            Entry::Occupied(mut e) => {
                let (remove, r) = f(e.get_mut());
                if remove {
                    e.remove();
                }
                r
            }
            Entry::Vacant(slot) => {
                for b in older.iter_mut() {
                    if let Some(v) = b.get_mut(slot.key()) {
                        let (remove, r) = f(v);
                        if remove {
                            b.remove(slot.key());
                        }
                        return r;
                    }
                }
                let mut v = new();
                let (remove, r) = f(&mut v);
                if !remove {
                    slot.insert(v);
                }
                r
            }
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

    #[test]
    fn update_finds_entries_in_any_generation_and_removes_on_request() {
        let mut m: RotatingMap<u64, i32> = RotatingMap::new(3);
        // Absent: made, changed, kept.
        assert_eq!(
            m.update(1, || 10, |v| (false, std::mem::replace(v, 11))),
            10
        );
        m.rotate();
        // In an older generation: changed in place, not copied into the newest.
        m.update(1, || 0, |v| (false, *v += 1));
        assert_eq!(m.update(1, || 0, |v| (false, *v)), 12);
        assert_eq!(m.len(), 1);
        // Removed from the older generation.
        assert_eq!(m.update(1, || 0, |v| (true, *v)), 12);
        assert!(m.is_empty());
        // Made and removed at once: never stored.
        assert_eq!(m.update(2, || 5, |v| (true, *v)), 5);
        assert!(m.is_empty());
        // In the newest generation.
        m.insert(3, 1);
        assert_eq!(m.update(3, || 0, |v| (true, *v)), 1);
        assert!(m.is_empty());
    }
}
