//! A bounded map with least-recently-used eviction, for what a long-running store remembers
//! (resolved subjects, constant blobs known to exist): memory stays bounded however many
//! repositories and models the controller sees.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// At most `capacity` entries. When full, the least recently used eighth is dropped at once, so
/// an insert costs amortized O(log n) instead of a scan per insert.
pub(crate) struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    tick: u64,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The value under `key`, marked as just used.
    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let tick = self.next_tick();
        let (value, used) = self.map.get_mut(key)?;
        *used = tick;
        Some(value.clone())
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        let tick = self.next_tick();
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.evict();
        }
        self.map.insert(key, (value, tick));
    }

    /// The value under `key`, inserting `make()` first when absent.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.get(&key) {
            return v;
        }
        let value = make();
        self.insert(key, value.clone());
        value
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops the least recently used eighth (at least one entry).
    fn evict(&mut self) {
        let drop = (self.capacity / 8).max(1);
        let mut ticks: Vec<u64> = self.map.values().map(|(_, t)| *t).collect();
        if ticks.len() <= drop {
            self.map.clear();
            return;
        }
        let (_, threshold, _) = ticks.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        self.map.retain(|_, (_, t)| *t > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_stays_bounded() {
        let mut lru = Lru::new(16);
        for i in 0..16 {
            lru.insert(i, i * 10);
        }
        // Touch the oldest two: they survive the eviction.
        assert_eq!(lru.get(&0), Some(0));
        assert_eq!(lru.get(&1), Some(10));
        lru.insert(100, 1000);
        assert_eq!(lru.len(), 15, "16 / 8 = 2 evicted, one inserted");
        assert_eq!(lru.get(&0), Some(0));
        assert_eq!(lru.get(&1), Some(10));
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.get(&3), None);
        assert_eq!(lru.get(&100), Some(1000));
        for i in 200..10_000 {
            lru.insert(i, i);
            assert!(lru.len() <= 16);
        }
        // Replacing an entry never evicts.
        let before = lru.len();
        lru.insert(9_999, 1);
        assert_eq!(lru.len(), before);
        assert_eq!(lru.get_or_insert_with(9_999, || 2), 1);
        lru.retain(|k, _| *k != 9_999);
        assert_eq!(lru.get(&9_999), None);
    }
}
