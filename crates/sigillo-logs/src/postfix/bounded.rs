//! A map with a size cap that evicts the oldest insertion: the open-state store of the
//! correlator, so memory stays bounded by the cap whatever the log holds.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

/// A fast hasher (FxHash's multiply-rotate) for keys the log's writer cannot choose freely
/// (pids, Postfix queue ids). Keys from the outside world (relay host names) use the default
/// SipHash, which resists crafted collisions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FxBuild;

pub(crate) struct Fx(u64);

const SEED: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

/// Length of the insertion-order queue at which its stale entries are dropped.
fn order_bound(cap: usize) -> usize {
    cap.saturating_mul(2).saturating_add(64)
}

/// At most this many queue entries are allocated up front (the default caps' bound fits).
const MAX_ORDER_PREALLOC: usize = 1 << 18;

/// Keys in insertion order (with the sequence number of that insertion, so a key removed and
/// inserted again is not evicted for its old position).
#[derive(Debug)]
pub(crate) struct Bounded<K, V, S = RandomState> {
    map: HashMap<K, (u64, V), S>,
    order: VecDeque<(K, u64)>,
    seq: u64,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V, S: BuildHasher + Default> Bounded<K, V, S> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let mut order = VecDeque::new();
        // The queue is compacted at its bound: allocated for it up front (up to a limit, for
        // very large caps), it does not grow by copying while the log is read.
        let _ = order.try_reserve(order_bound(cap).min(MAX_ORDER_PREALLOC));
        Self {
            map: HashMap::default(),
            order,
            seq: 0,
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(k).map(|(_, v)| v)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.remove(k).map(|(_, v)| v)
    }

    /// Removes `k` and returns the stored key with its value: a key that owns its text (a
    /// queue id) goes on without a copy.
    pub fn remove_entry<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
    {
        self.map.remove_entry(k).map(|(k, (_, v))| (k, v))
    }

    /// Inserts (replacing, and moving the key to the newest position); returns the oldest
    /// entry when the cap forced it out.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        let evicted = self.make_room(&k);
        let seq = self.next_seq(&k);
        match self.map.entry(k) {
            Entry::Occupied(mut e) => *e.get_mut() = (seq, v),
            Entry::Vacant(e) => {
                e.insert((seq, v));
            }
        }
        evicted
    }

    /// The value of `k`, inserted from `make` (as the newest) when there is none, with one
    /// hash lookup while the map is below its cap; also whether the cap forced the oldest
    /// entry out (it is dropped).
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> (&mut V, bool) {
        let evicted = self.make_room(&k).is_some();
        match self.map.entry(k) {
            Entry::Occupied(e) => (&mut e.into_mut().1, evicted),
            Entry::Vacant(e) => {
                self.seq += 1;
                let seq = self.seq;
                self.order.push_back((e.key().clone(), seq));
                (&mut e.insert((seq, make())).1, evicted)
            }
        }
    }

    /// Before `k` is inserted: compacts the order queue at its bound (stale entries of
    /// removed or re-inserted keys), and evicts the oldest entry when `k` would be one too
    /// many.
    fn make_room(&mut self, k: &K) -> Option<(K, V)> {
        if self.order.len() >= order_bound(self.cap) {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(live, _)| live == s));
        }
        if self.map.len() >= self.cap && !self.map.contains_key(k) {
            self.pop_oldest()
        } else {
            None
        }
    }

    /// The sequence number of an insertion of `k`, queued as the newest.
    fn next_seq(&mut self, k: &K) -> u64 {
        self.seq += 1;
        self.order.push_back((k.clone(), self.seq));
        self.seq
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

    /// Removes and returns every entry for which `stale` is true, oldest insertion first (an
    /// order that does not depend on the keys' hashes).
    pub fn take_where(&mut self, mut stale: impl FnMut(&V) -> bool) -> Vec<(K, V)> {
        let mut keys: Vec<(u64, K)> = self
            .map
            .iter()
            .filter(|(_, (_, v))| stale(v))
            .map(|(k, (seq, _))| (*seq, k.clone()))
            .collect();
        keys.sort_unstable_by_key(|(seq, _)| *seq);
        keys.into_iter()
            .filter_map(|(_, k)| self.map.remove(&k).map(|(_, v)| (k, v)))
            .collect()
    }

    /// Every value, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut().map(|(_, v)| v)
    }

    /// Every entry, oldest first: the live entries sorted by when they were inserted, not
    /// popped off the order queue, which holds up to twice the cap of stale keys to look up.
    pub fn drain_ordered(&mut self) -> Vec<(K, V)> {
        let mut live: Vec<(u64, K, V)> =
            self.map.drain().map(|(k, (seq, v))| (seq, k, v)).collect();
        live.sort_unstable_by_key(|&(seq, ..)| seq);
        self.order.clear();
        live.into_iter().map(|(_, k, v)| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn evicts_oldest_and_respects_reinsertion() {
        let mut m: Bounded<u32, &str> = Bounded::new(2);
        assert_eq!(m.insert(1, "a"), None);
        assert_eq!(m.insert(2, "b"), None);
        assert_eq!(m.insert(1, "a2"), None); // 1 is now the newest
        assert_eq!(m.insert(3, "c"), Some((2, "b")));
        assert_eq!(m.remove(&1), Some("a2"));
        assert_eq!(m.remove_entry(&1), None);
        assert_eq!(m.insert(4, "d"), None);
        assert_eq!(m.remove_entry(&4), Some((4, "d")));
        assert_eq!(m.insert(4, "d"), None);
        assert_eq!(m.len(), 2);
        assert_eq!(m.drain_ordered(), vec![(3, "c"), (4, "d")]);
    }

    #[test]
    fn get_or_insert_with_inserts_once_and_evicts_like_insert() {
        let mut m: Bounded<u32, &str> = Bounded::new(2);
        assert_eq!(m.get_or_insert_with(1, || "a"), (&mut "a", false));
        assert_eq!(
            m.get_or_insert_with(1, || panic!("present")),
            (&mut "a", false)
        );
        assert_eq!(m.get_or_insert_with(2, || "b"), (&mut "b", false));
        // 1 keeps its old position: it goes first.
        assert_eq!(m.get_or_insert_with(3, || "c"), (&mut "c", true));
        assert_eq!(m.get(&1), None);
        assert_eq!(m.drain_ordered(), vec![(2, "b"), (3, "c")]);
    }

    #[test]
    fn take_where_returns_oldest_first_whatever_the_keys() {
        let mut m: Bounded<u32, u32, super::FxBuild> = Bounded::new(100);
        let keys = [90, 3, 57, 12, 1000, 7, 44];
        for (i, k) in keys.iter().enumerate() {
            m.insert(*k, u32::try_from(i).expect("small"));
        }
        m.insert(3, 99); // re-inserted: now the newest
        let taken: Vec<u32> = m
            .take_where(|v| v % 2 == 1)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(taken, vec![12, 7, 3]);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn drain_ordered_gives_the_live_entries_oldest_first() {
        // Stale keys in the order queue (removed, re-inserted, evicted) between live ones.
        let build = || {
            let mut m: Bounded<u32, u32, super::FxBuild> = Bounded::new(100);
            for i in 0..300u32 {
                m.insert(i % 150, i);
                if i % 7 == 0 {
                    m.remove(&(i % 150));
                }
            }
            m
        };
        let mut popped = build();
        let mut expected = Vec::new();
        while let Some(e) = popped.pop_oldest() {
            expected.push(e);
        }
        assert_eq!(expected.len(), 100);
        let mut m = build();
        assert_eq!(m.drain_ordered(), expected);
        assert_eq!(m.len(), 0);
        assert!(m.drain_ordered().is_empty());
    }

    #[test]
    fn order_queue_stays_bounded() {
        let mut m: Bounded<u32, u32, super::FxBuild> = Bounded::new(4);
        for i in 0..10_000u32 {
            m.insert(i % 3, i);
            m.remove(&(i % 3));
        }
        assert!(m.order.len() <= super::order_bound(4));
    }
}
