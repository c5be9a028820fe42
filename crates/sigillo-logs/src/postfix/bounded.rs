//! A map with a size cap that evicts the oldest insertion: the open-state store of the
//! correlator, so memory stays bounded by the cap whatever the log holds.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Keys in insertion order (with the sequence number of that insertion, so a key removed and
/// inserted again is not evicted for its old position).
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    map: HashMap<K, (u64, V)>,
    order: VecDeque<(K, u64)>,
    seq: u64,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> Bounded<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(_, v)| v)
    }

    /// Inserts (replacing, and moving the key to the newest position); returns the oldest
    /// entry when the cap forced it out.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        self.seq += 1;
        let seq = self.seq;
        match self.map.entry(k.clone()) {
            Entry::Occupied(mut e) => {
                *e.get_mut() = (seq, v);
            }
            Entry::Vacant(e) => {
                e.insert((seq, v));
            }
        }
        self.order.push_back((k, seq));
        let evicted = if self.map.len() > self.cap {
            self.pop_oldest()
        } else {
            None
        };
        // Stale order entries (removed or re-inserted keys): compact now and then.
        if self.order.len() > 2 * self.cap + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(live, _)| live == s));
        }
        evicted
    }

    /// Removes and returns the oldest live entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((k, seq)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|(live, _)| *live == seq) {
                return self.map.remove(&k).map(|(_, v)| (k, v));
            }
        }
        None
    }

    /// Every entry, oldest first.
    pub fn drain_ordered(&mut self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.map.len());
        while let Some(e) = self.pop_oldest() {
            out.push(e);
        }
        self.order.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn evicts_oldest_and_respects_reinsertion() {
        let mut m = Bounded::new(2);
        assert_eq!(m.insert(1, "a"), None);
        assert_eq!(m.insert(2, "b"), None);
        assert_eq!(m.insert(1, "a2"), None); // 1 is now the newest
        assert_eq!(m.insert(3, "c"), Some((2, "b")));
        assert_eq!(m.remove(&1), Some("a2"));
        assert_eq!(m.insert(4, "d"), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.drain_ordered(), vec![(3, "c"), (4, "d")]);
    }

    #[test]
    fn order_queue_stays_bounded() {
        let mut m = Bounded::new(4);
        for i in 0..10_000u32 {
            m.insert(i % 3, i);
            m.remove(&(i % 3));
        }
        assert!(m.order.len() <= 2 * 4 + 64);
    }
}
