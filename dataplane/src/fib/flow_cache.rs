//! Exact-match flow cache with bounded memory, one per worker.
//!
//! # Layout
//! A fixed power-of-two number of 4-way sets, allocated once in [`FlowCache::new`]
//! and never grown. A set keeps its four 16-byte keys (as `[u64; 2]`) together
//! in one 64-byte line, followed by generations, insertion stamps and values;
//! sets are 64-byte aligned. The set index is `hash & mask`, so any `u32` hash
//! is safe.
//!
//! # Invariants
//! - A way is live iff its value is `Some`; live keys within a set are distinct
//!   (insert replaces an existing entry for the same key, of any generation).
//! - A lookup hits only on a live way with the exact key *and* the caller's
//!   current generation. Bumping the generation therefore invalidates every
//!   cached flow at once (e.g. after a route change); stale ways are reused by
//!   later inserts. Generations compare by equality, so an entry could only
//!   resurface after the caller wraps the `u32` generation; call
//!   [`FlowCache::clear`] on wrap if that matters.
//! - [`FlowCache::lookup_revalidate`] lets the caller keep a live entry of
//!   another generation: the caller decides (e.g. from a log of what changed
//!   since, see `Tables::cached_route_valid`) and a kept entry is renewed at
//!   the current generation, so later hits take the plain path. A hit at the
//!   current generation costs what [`FlowCache::lookup`] costs.
//! - Insert picks, in order: the way holding the same key, the first empty or
//!   stale way, else the least recently inserted way (oldest stamp). The newest
//!   insert is thus never the one evicted by the next insert into its set.
//!
//! The hash is passed in rather than recomputed, so the pipeline hashes each
//! packet once ([`FlowKey::hash`]) and reuses it (e.g. for VXLAN source port
//! entropy). Lookups never allocate or panic.

use std::fmt;

/// The exact-match key: 16 bytes, no implicit padding. The ingress port
/// takes 16 bits: port ids go up to `MAX_PORTS - 1` (1023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// Keep zero: it is part of the compared key.
    pub _pad: u8,
    pub in_port: u16,
}

// Odd 64-bit multipliers (golden ratio and a splitmix constant), and an xor seed.
const M0: u64 = 0x9e37_79b9_7f4a_7c15;
const M1: u64 = 0xbf58_476d_1ce4_e5b9;
const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// 64x64 -> 128 multiply, high half xor low half: every input bit reaches the
/// middle and upper bits of the product; the fold brings them to the low bits.
#[inline(always)]
fn fold_mul(x: u64, m: u64) -> u64 {
    let p = u128::from(x) * u128::from(m);
    (p as u64) ^ ((p >> 64) as u64)
}

impl FlowKey {
    /// A key with `_pad` zero.
    #[inline]
    pub const fn new(
        src: u32,
        dst: u32,
        src_port: u16,
        dst_port: u16,
        protocol: u8,
        in_port: u16,
    ) -> Self {
        FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
            in_port,
            _pad: 0,
        }
    }

    /// The key as two words, as compared and hashed.
    #[inline(always)]
    fn words(&self) -> [u64; 2] {
        [
            u64::from(self.src) | (u64::from(self.dst) << 32),
            u64::from(self.src_port)
                | (u64::from(self.dst_port) << 16)
                | (u64::from(self.protocol) << 32)
                // The ingress port where its low 8 bits always were, so the
                // hash (and the VXLAN source port) of ports 0..=255 is unchanged.
                | (u64::from(self.in_port) << 40)
                | (u64::from(self._pad) << 56),
        ]
    }

    #[inline]
    fn from_words([a, b]: [u64; 2]) -> Self {
        FlowKey {
            src: a as u32,
            dst: (a >> 32) as u32,
            src_port: b as u16,
            dst_port: (b >> 16) as u16,
            protocol: (b >> 32) as u8,
            _pad: (b >> 56) as u8,
            in_port: (b >> 40) as u16,
        }
    }

    /// A fast, well-mixing 32-bit hash: two dependent folded multiplies over
    /// the two key words. Every input bit influences the low 16 bits, which
    /// also serve as VXLAN outer UDP source-port entropy.
    #[inline]
    pub fn hash(&self) -> u32 {
        let [a, b] = self.words();
        let h = fold_mul(a ^ SEED, M0);
        let h = fold_mul(h ^ b, M1);
        (h ^ (h >> 32)) as u32
    }
}

const WAYS: usize = 4;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Set<V> {
    keys: [[u64; 2]; WAYS],
    generations: [u32; WAYS],
    /// Insert clock at insertion; the oldest is evicted first.
    stamps: [u32; WAYS],
    values: [Option<V>; WAYS],
}

impl<V: Copy> Set<V> {
    const EMPTY: Self = Set {
        keys: [[0; 2]; WAYS],
        generations: [0; WAYS],
        stamps: [0; WAYS],
        values: [None; WAYS],
    };
}

/// Fixed-size, 4-way set-associative exact-match cache; see the module docs.
pub struct FlowCache<V: Copy> {
    sets: Box<[Set<V>]>,
    /// `sets.len() - 1` (a power of two minus one).
    mask: usize,
    /// Incremented per insert; wraps harmlessly (ages use wrapping distance).
    clock: u32,
}

impl<V: Copy> FlowCache<V> {
    /// A cache of `entries` rounded up to a power of two (at least 16).
    ///
    /// # Panics
    /// If the rounded size overflows `usize` (allocation would fail anyway).
    pub fn new(entries: usize) -> Self {
        let capacity = entries.max(16).next_power_of_two();
        let n_sets = capacity / WAYS;
        FlowCache {
            sets: vec![Set::EMPTY; n_sets].into_boxed_slice(),
            mask: n_sets - 1,
            clock: 0,
        }
    }

    /// The value cached for `key` at `generation`. `hash` should be
    /// `key.hash()`; any value is safe (an inconsistent one only misses).
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u32, generation: u32) -> Option<V> {
        let k = key.words();
        let set = self.sets.get(hash as usize & self.mask)?;
        for w in 0..WAYS {
            if set.keys[w] == k && set.generations[w] == generation {
                if let Some(v) = set.values[w] {
                    return Some(v);
                }
            }
        }
        None
    }

    /// As [`Self::lookup`], but a live entry for `key` of another generation
    /// is offered to `still_valid(its generation)`: if that says yes, the
    /// entry is renewed at `generation` and hits, else it misses.
    #[inline]
    pub fn lookup_revalidate(
        &mut self,
        key: &FlowKey,
        hash: u32,
        generation: u32,
        still_valid: impl FnOnce(u32) -> bool,
    ) -> Option<V> {
        let k = key.words();
        let set = self.sets.get_mut(hash as usize & self.mask)?;
        let w = (0..WAYS).find(|&w| set.keys[w] == k && set.values[w].is_some())?;
        if set.generations[w] != generation {
            if !still_valid(set.generations[w]) {
                return None;
            }
            set.generations[w] = generation;
        }
        set.values[w]
    }

    /// Caches `key -> value` at `generation`, replacing the same key, else
    /// filling an empty or stale way, else evicting the oldest insert of the set.
    #[inline]
    pub fn insert(&mut self, key: FlowKey, hash: u32, generation: u32, value: V) {
        let k = key.words();
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        let Some(set) = self.sets.get_mut(hash as usize & self.mask) else {
            return;
        };
        let w = (0..WAYS)
            .find(|&w| set.values[w].is_some() && set.keys[w] == k)
            .or_else(|| {
                (0..WAYS).find(|&w| set.values[w].is_none() || set.generations[w] != generation)
            })
            .unwrap_or_else(|| {
                (0..WAYS)
                    .max_by_key(|&w| clock.wrapping_sub(set.stamps[w]))
                    .unwrap_or(0)
            });
        set.keys[w] = k;
        set.generations[w] = generation;
        set.stamps[w] = clock;
        set.values[w] = Some(value);
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.sets.fill(Set::EMPTY);
        self.clock = 0;
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Live entries of any generation (O(capacity)).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.values.iter().filter(|v| v.is_some()).count())
            .sum()
    }

    /// No live entry (O(capacity)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live `(key, generation, value)` entries of any generation, for dumps.
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, u32, V)> + '_ {
        self.sets.iter().flat_map(|s| {
            (0..WAYS).filter_map(move |w| {
                s.values[w].map(|v| (FlowKey::from_words(s.keys[w]), s.generations[w], v))
            })
        })
    }

    /// Bytes held by the cache (fixed at construction).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val::<[Set<V>]>(&self.sets)
    }
}

impl<V: Copy> fmt::Debug for FlowCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowCache")
            .field("capacity", &self.capacity())
            .field("ways", &WAYS)
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(i: u32) -> FlowKey {
        FlowKey::new(
            0x0a00_0000 | i,
            0x0a01_0000 | (i >> 3),
            1000 + i as u16,
            80,
            6,
            (i % 4) as u16,
        )
    }

    #[test]
    fn key_layout() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 16);
        assert_eq!(std::mem::align_of::<Set<u32>>(), 64);
        let k = FlowKey {
            _pad: 0xbe,
            ..FlowKey::new(1, 2, 3, 4, 5, 1023)
        };
        assert_eq!(FlowKey::from_words(k.words()), k);
        assert_eq!(FlowKey::new(1, 2, 3, 4, 5, 6)._pad, 0);
        assert_ne!(k.hash(), FlowKey::new(1, 2, 3, 4, 5, 1023).hash());
    }

    /// Ports 1 and 257 agree in their low 8 bits: two flows that differ only
    /// there are still two keys, two hashes and two entries.
    #[test]
    fn ingress_ports_past_255_do_not_alias() {
        let (a, b) = (
            FlowKey::new(1, 2, 3, 4, 17, 1),
            FlowKey::new(1, 2, 3, 4, 17, 257),
        );
        assert_ne!(a, b);
        assert_ne!(a.words(), b.words());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(FlowKey::from_words(b.words()).in_port, 257);
        let mut c = FlowCache::new(64);
        c.insert(a, a.hash(), 0, 1u32);
        assert_eq!(c.lookup(&b, b.hash(), 0), None);
        // Even forced into the same set.
        assert_eq!(c.lookup(&b, a.hash(), 0), None);
        c.insert(b, b.hash(), 0, 257);
        assert_eq!(
            (c.lookup(&a, a.hash(), 0), c.lookup(&b, b.hash(), 0)),
            (Some(1), Some(257))
        );
    }

    #[test]
    fn hit_miss_and_replace() {
        let mut c = FlowCache::new(64);
        let (a, b) = (key(1), key(2));
        assert_eq!(c.lookup(&a, a.hash(), 0), None);
        c.insert(a, a.hash(), 0, 10u32);
        assert_eq!(c.lookup(&a, a.hash(), 0), Some(10));
        assert_eq!(c.lookup(&b, b.hash(), 0), None);
        // Same set, different key: still a miss.
        assert_eq!(c.lookup(&b, a.hash(), 0), None);
        c.insert(a, a.hash(), 0, 11);
        assert_eq!(c.lookup(&a, a.hash(), 0), Some(11));
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
        // The zero key is an ordinary key.
        let z = FlowKey::default();
        assert_eq!(c.lookup(&z, z.hash(), 0), None);
        c.insert(z, z.hash(), 0, 5);
        assert_eq!(c.lookup(&z, z.hash(), 0), Some(5));
    }

    #[test]
    fn generation_bump_invalidates() {
        let mut c = FlowCache::new(64);
        for i in 0..10 {
            c.insert(key(i), key(i).hash(), 7, i);
        }
        for i in 0..10 {
            assert_eq!(c.lookup(&key(i), key(i).hash(), 7), Some(i));
            assert_eq!(c.lookup(&key(i), key(i).hash(), 8), None);
        }
        assert_eq!(c.len(), 10, "stale entries still count as live");
        // Re-inserting at the new generation replaces the stale entry in place.
        c.insert(key(3), key(3).hash(), 8, 33);
        assert_eq!(c.lookup(&key(3), key(3).hash(), 8), Some(33));
        assert_eq!(c.lookup(&key(3), key(3).hash(), 7), None);
        assert_eq!(c.len(), 10);
    }

    #[test]
    fn stale_ways_are_reused_before_evicting() {
        let mut c = FlowCache::new(16);
        let h = 5;
        for i in 0..4 {
            c.insert(key(i), h, 1, i);
        }
        // Four new keys at generation 2 fill the four stale ways.
        for i in 10..14 {
            c.insert(key(i), h, 2, i);
        }
        for i in 10..14 {
            assert_eq!(c.lookup(&key(i), h, 2), Some(i));
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn eviction_keeps_most_recent() {
        let mut c = FlowCache::new(16);
        let h = 0x1234_5678; // force one set
        for i in 0..4 {
            c.insert(key(i), h, 0, i);
        }
        c.insert(key(4), h, 0, 4);
        assert_eq!(c.lookup(&key(0), h, 0), None, "oldest evicted");
        for i in 1..5 {
            assert_eq!(c.lookup(&key(i), h, 0), Some(i));
        }
        // Re-inserting key 1 makes it newest; key 2 is now the oldest.
        c.insert(key(1), h, 0, 100);
        c.insert(key(5), h, 0, 5);
        assert_eq!(c.lookup(&key(2), h, 0), None);
        assert_eq!(c.lookup(&key(1), h, 0), Some(100));
        for i in 6..100 {
            c.insert(key(i), h, 0, i);
            assert_eq!(c.lookup(&key(i), h, 0), Some(i));
            assert_eq!(c.lookup(&key(i - 1), h, 0), Some(i - 1));
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn capacity_bounded() {
        assert_eq!(FlowCache::<u8>::new(0).capacity(), 16);
        assert_eq!(FlowCache::<u8>::new(17).capacity(), 32);
        assert_eq!(FlowCache::<u8>::new(1000).capacity(), 1024);
        let mut c = FlowCache::new(256);
        let mem = c.memory_bytes();
        assert!(mem >= 256 * (16 + 4));
        for i in 0..10_000 {
            c.insert(key(i), key(i).hash(), 0, i);
        }
        assert!(c.len() <= c.capacity());
        assert!(c.len() > c.capacity() / 2, "sets fill up: {}", c.len());
        assert_eq!(c.memory_bytes(), mem);
        assert_eq!(c.iter().count(), c.len());
        for (k, g, v) in c.iter() {
            assert_eq!(g, 0);
            assert_eq!(k, key(v));
        }
        // Any hash value is safe.
        for h in [0, 1, u32::MAX, 0x8000_0000] {
            let _ = c.lookup(&key(1), h, 0);
            c.insert(key(1), h, 0, 1);
        }
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.lookup(&key(9999), key(9999).hash(), 0), None);
        assert!(format!("{c:?}").contains("capacity: 256"));
    }

    /// xorshift64 for deterministic random keys.
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn hash_avalanche_low_16_bits() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut per_bit = [0u32; 128];
        const KEYS: u32 = 300;
        for _ in 0..KEYS {
            let w = [xorshift(&mut s), xorshift(&mut s)];
            let base = FlowKey::from_words(w).hash();
            for bit in 0..128 {
                let mut f = w;
                f[bit / 64] ^= 1 << (bit % 64);
                let flipped = FlowKey::from_words(f).hash();
                per_bit[bit] += ((base ^ flipped) & 0xffff).count_ones();
            }
        }
        for (bit, &n) in per_bit.iter().enumerate() {
            let avg = f64::from(n) / f64::from(KEYS);
            assert!(
                avg >= 4.0,
                "input bit {bit}: {avg:.2} of 16 low bits change on average"
            );
        }
        let total: u32 = per_bit.iter().sum();
        let avg = f64::from(total) / f64::from(KEYS * 128);
        assert!((7.0..=9.0).contains(&avg), "overall average {avg:.2}");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u16),
        Lookup(usize),
        Bump,
    }

    fn ops(keys: usize) -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                5 => (0..keys, any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
                6 => (0..keys).prop_map(Op::Lookup),
                1 => Just(Op::Bump),
            ],
            1..400,
        )
    }

    fn random_keys(n: usize) -> impl Strategy<Value = Vec<FlowKey>> {
        prop::collection::hash_set(
            (
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                0u16..1024,
            )
                .prop_map(|(a, b, c, d, e, f)| FlowKey::new(a, b, c, d, e, f)),
            n,
        )
        .prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Hits always return the oracle's current value, whatever the pressure.
        #[test]
        fn never_stale_or_wrong(
            (keys, ops) in prop_oneof![Just(8usize), Just(48), Just(300)]
                .prop_flat_map(|n| (random_keys(n), ops(n))),
            weak_hash in any::<bool>(),
            gen0 in any::<u32>(),
        ) {
            let mut c: FlowCache<u16> = FlowCache::new(32);
            let mut oracle: HashMap<FlowKey, u16> = HashMap::new();
            let mut generation = gen0;
            // A weak hash crowds everything into two sets.
            let h = |k: &FlowKey| if weak_hash { k.src & 1 } else { k.hash() };
            for op in ops {
                match op {
                    Op::Insert(i, v) => {
                        let k = keys[i];
                        c.insert(k, h(&k), generation, v);
                        oracle.insert(k, v);
                        prop_assert_eq!(c.lookup(&k, h(&k), generation), Some(v));
                    }
                    Op::Lookup(i) => {
                        let k = keys[i];
                        if let Some(v) = c.lookup(&k, h(&k), generation) {
                            prop_assert_eq!(Some(&v), oracle.get(&k));
                        }
                    }
                    Op::Bump => {
                        generation = generation.wrapping_add(1);
                        oracle.clear();
                    }
                }
                prop_assert!(c.len() <= c.capacity());
            }
            for (k, g, v) in c.iter() {
                if g == generation {
                    prop_assert_eq!(Some(&v), oracle.get(&k));
                }
            }
        }

        /// Far below capacity / ways, nothing is evicted.
        #[test]
        fn no_eviction_when_sparse(
            (keys, ops) in random_keys(16).prop_flat_map(|k| (Just(k), ops(16))),
        ) {
            let mut c: FlowCache<u16> = FlowCache::new(1024);
            let mut oracle: HashMap<FlowKey, u16> = HashMap::new();
            let mut generation = 0u32;
            for op in ops {
                match op {
                    Op::Insert(i, v) => {
                        c.insert(keys[i], keys[i].hash(), generation, v);
                        oracle.insert(keys[i], v);
                    }
                    Op::Lookup(i) => {
                        let k = keys[i];
                        prop_assert_eq!(c.lookup(&k, k.hash(), generation), oracle.get(&k).copied());
                    }
                    Op::Bump => {
                        generation += 1;
                        oracle.clear();
                    }
                }
            }
            for (k, &v) in &oracle {
                prop_assert_eq!(c.lookup(k, k.hash(), generation), Some(v));
            }
        }
    }
}
