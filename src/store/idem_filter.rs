//! The idempotency filter: which `I‖account‖0‖key` records sled may hold, in memory, so
//! that the lookup of a fresh key (the common case: every new debit) reads no disk.
//!
//! A few Bloom filters (`fastbloom`'s `AtomicBloomFilter`: inserts and lookups from any
//! thread, no lock), one per *generation*: the keys bound within one slice of the TTL
//! (`ttl / SLICES_PER_TTL`), by the instant a key was bound (`IdemRecord::at`). A lookup
//! consults every live generation; a key is hashed once (account and key: the record's
//! sled key) and the hash is checked in each. Each generation remembers the latest bind
//! instant it took, so it is dropped (`forget_before`, called by the idempotency pruner
//! with the same cutoff it deletes sled's records by) once every key it holds is past the
//! TTL: the filter forgets keys exactly when sled does, and never one that is still
//! remembered.
//!
//! Memory is bounded by `storage.idempotency_filter_bytes`: at most `GENERATIONS` filters
//! of a fifth of it each, allocated as they are first needed. When every slot is taken
//! (the pruner has not run yet, or the clock jumped), new keys go into the newest
//! generation, which then lives until they are past the TTL too: the bound holds and only
//! the false-positive rate rises. With the default TTL (7 days), a generation covers 42
//! hours, and 5 of them hold the TTL's keys (4 slices and the one being pruned).
//!
//! The filter only ever says "maybe" or "absent". "Absent" is trusted only once the
//! filter is *complete* (`is_complete`): it holds every key sled may hold, which the store
//! makes true by adding every key it binds before the write can reach sled, and by adding
//! the keys already in sled at open (after the log's replay), in a background scan; until
//! that scan has finished, lookups read sled as before.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fastbloom::AtomicBloomFilter;

use crate::domain::Ts;

/// Generations alive at once, at most (and so the number of filters a lookup checks).
pub const GENERATIONS: usize = 5;
/// A generation covers `ttl / SLICES_PER_TTL` of bind time: a key past the TTL is
/// forgotten at most one slice after it is (sooner if the budget runs short).
pub const SLICES_PER_TTL: i64 = 4;
/// Bits set per key in its generation's filter. Optimal (`bits per key × ln 2`) at
/// ~13.4 bits per key, what the default budget gives 10M keys within the TTL (2.5M per
/// generation in 4 MiB): ~0.16 % false positives per full generation, under 1 % for a
/// lookup that checks all five.
pub const HASHES: u32 = 9;

struct Generation {
    /// `at.div_euclid(slice)` of the keys it was made for (it may also hold keys of
    /// other slices, see `insert`).
    index: i64,
    bloom: AtomicBloomFilter,
    /// The latest bind instant (ms) among its keys: it is dropped once this is before the
    /// pruner's cutoff.
    newest_at: AtomicI64,
    keys: AtomicU64,
}

/// The filter of the idempotency keys sled may hold. See the module's documentation.
pub struct IdemFilter {
    /// 64-bit words per generation; 0: the filter is off (never complete).
    words: usize,
    slice_ms: i64,
    /// Ascending by `index`; at most `GENERATIONS`.
    gens: RwLock<Vec<Arc<Generation>>>,
    complete: AtomicBool,
}

impl IdemFilter {
    /// A filter of at most `bytes` (0: off) for keys remembered `ttl_ms`.
    pub fn new(bytes: u64, ttl_ms: i64) -> IdemFilter {
        let words = if bytes == 0 {
            0
        } else {
            ((bytes / GENERATIONS as u64 / 8) as usize).max(1)
        };
        IdemFilter {
            words,
            slice_ms: (ttl_ms / SLICES_PER_TTL).max(1),
            gens: RwLock::new(Vec::new()),
            complete: AtomicBool::new(false),
        }
    }

    /// Whether it is on (a budget above 0).
    pub fn enabled(&self) -> bool {
        self.words > 0
    }

    /// The hash `insert` and `may_contain` take, of a binding's `idem_index::digest`
    /// (stable across restarts, as the index's blocks hold only the digest).
    pub fn hash(digest: &crate::store::idem_index::Digest) -> u64 {
        u64::from_le_bytes(digest[..8].try_into().expect("8 of 16 bytes"))
    }

    /// Adds a key bound at `at`.
    pub fn insert(&self, hash: u64, at: Ts) {
        if !self.enabled() {
            return;
        }
        let index = at.millis().div_euclid(self.slice_ms);
        {
            let gens = read(&self.gens);
            if let Some(g) = place(&gens, index) {
                return add(g, hash, at);
            }
        }
        let mut gens = write(&self.gens);
        if let Some(g) = place(&gens, index) {
            return add(g, hash, at);
        }
        // A new generation, in its place by index (made and filled under the write lock,
        // so `forget_before` never sees it empty).
        let g = Arc::new(Generation {
            index,
            bloom: AtomicBloomFilter::with_num_bits(self.words * 64).hashes(HASHES),
            newest_at: AtomicI64::new(i64::MIN),
            keys: AtomicU64::new(0),
        });
        add(&g, hash, at);
        let at = gens.partition_point(|x| x.index < index);
        gens.insert(at, g);
        self.gauge(gens.len());
    }

    /// False when no live generation holds the key: then it is absent from sled, if the
    /// filter `is_complete`.
    pub fn may_contain(&self, hash: u64) -> bool {
        read(&self.gens).iter().any(|g| g.bloom.contains_hash(hash))
    }

    /// Whether it holds every key sled may hold (absent answers are to be trusted).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Called once every key in sled at open has been added.
    pub fn set_complete(&self) {
        if self.enabled() {
            self.complete.store(true, Ordering::Release);
        }
    }

    /// Drops every generation whose keys were all bound before `cutoff` (the pruner's:
    /// now − TTL), so no longer remembered; answers how many.
    pub fn forget_before(&self, cutoff: Ts) -> usize {
        let mut gens = write(&self.gens);
        let before = gens.len();
        gens.retain(|g| g.newest_at.load(Ordering::Relaxed) >= cutoff.millis());
        self.gauge(gens.len());
        before - gens.len()
    }

    /// Bytes of filter allocated now (never above the budget).
    pub fn bytes(&self) -> u64 {
        read(&self.gens).len() as u64 * self.words as u64 * 8
    }

    /// Keys added to the live generations (a key bound twice counts twice).
    pub fn keys(&self) -> u64 {
        read(&self.gens)
            .iter()
            .map(|g| g.keys.load(Ordering::Relaxed))
            .sum()
    }

    /// Live generations.
    pub fn generations(&self) -> usize {
        read(&self.gens).len()
    }

    fn gauge(&self, gens: usize) {
        metrics::gauge!(crate::metrics::IDEMPOTENCY_FILTER_BYTES)
            .set((gens * self.words * 8) as f64);
    }
}

/// The generation a key of slice `index` goes into, or `None` when a new one is to be
/// made for it (there is room, and none is of its slice). Any generation would do for
/// correctness (one is dropped only once its newest key is past the TTL); this one keeps
/// each key where it is forgotten soonest.
fn place(gens: &[Arc<Generation>], index: i64) -> Option<&Arc<Generation>> {
    let room = gens.len() < GENERATIONS;
    match gens.iter().find(|g| g.index >= index) {
        Some(g) if g.index == index => Some(g),
        // Older than a live generation (a slice skipped, or older than all): its own when
        // there is room, else the next newer one, which lives at least as long.
        Some(g) => (!room).then_some(g),
        // Newer than all: a new generation when there is room, else the newest.
        None if room => None,
        None => gens.last(),
    }
}

fn add(g: &Generation, hash: u64, at: Ts) {
    g.bloom.insert_hash(hash);
    g.newest_at.fetch_max(at.millis(), Ordering::Relaxed);
    g.keys.fetch_add(1, Ordering::Relaxed);
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    /// A binding's filter hash, from its sled key.
    fn h(sled_key: &[u8]) -> u64 {
        IdemFilter::hash(&crate::store::idem_index::digest(sled_key))
    }
    use super::*;
    use proptest::prelude::*;

    fn key(i: u64) -> Vec<u8> {
        format!("Iacct-{}\0key-{i}", i % 7).into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the keys, their bind instants and the pruner's cutoffs, a key bound at
        /// or after the last cutoff is never answered absent, and the filter stays within
        /// its budget. A small budget, so that generations overflow too.
        #[test]
        fn no_false_negatives_over_random_keys_and_generations(
            budget in prop_oneof![Just(crate::config::IDEMPOTENCY_FILTER_BYTES.0), Just(1u64 << 16), Just(20u64 << 20)],
            ops in proptest::collection::vec((0u64..400, 0i64..4000, any::<bool>()), 1..300),
        ) {
            let f = IdemFilter::new(budget, 400);
            let mut bound: std::collections::BTreeMap<u64, i64> = Default::default();
            let mut cutoff = i64::MIN;
            for (k, at, prune) in ops {
                if prune {
                    cutoff = cutoff.max(at - 400);
                    f.forget_before(Ts(cutoff));
                } else {
                    f.insert(h(&key(k)), Ts(at));
                    let e = bound.entry(k).or_insert(at);
                    *e = (*e).max(at);
                }
                prop_assert!(f.generations() <= GENERATIONS);
                prop_assert!(f.bytes() <= budget, "{} > {budget}", f.bytes());
                for (&k, &at) in &bound {
                    if at >= cutoff {
                        prop_assert!(f.may_contain(h(&key(k))), "key {k} bound at {at}, cutoff {cutoff}");
                    }
                }
            }
        }
    }

    /// A key is forgotten once its generation is dropped, that is once every key bound in
    /// its slice is past the TTL; not before.
    #[test]
    fn a_key_past_the_ttl_is_forgotten_once_its_generation_is_dropped() {
        let f = IdemFilter::new(1 << 20, 400); // slices of 100 ms
        let old = h(b"Iacct\0old");
        f.insert(old, Ts(50));
        f.insert(h(b"Iacct\0later-in-its-slice"), Ts(90));
        let fresh: Vec<u64> = (0..100).map(|i| h(&key(i))).collect();
        for &h in &fresh {
            f.insert(h, Ts(460));
        }
        assert_eq!(f.generations(), 2);
        // The pruner's cutoff is now − TTL; keys bound at or after it are kept.
        assert_eq!(f.forget_before(Ts(90)), 0);
        assert!(f.may_contain(old));
        assert_eq!(f.forget_before(Ts(91)), 1);
        assert!(
            !f.may_contain(old),
            "a key past the TTL is still in the filter"
        );
        assert!(fresh.iter().all(|&h| f.may_contain(h)));
        assert_eq!(f.generations(), 1);
        assert_eq!(f.bytes(), (1 << 20) / GENERATIONS as u64 / 8 * 8);
        assert_eq!(f.forget_before(Ts(461)), 1);
        assert_eq!((f.generations(), f.bytes(), f.keys()), (0, 0, 0));
        assert!(fresh.iter().all(|&h| !f.may_contain(h)));
    }

    /// Keys over many more slices than there are generations, with no pruner: memory
    /// stays within the budget (new keys go into the newest generation) and every key is
    /// still there.
    #[test]
    fn memory_stays_within_the_budget() {
        let budget = 64 << 10;
        let f = IdemFilter::new(budget, 4_000);
        let mut hashes = Vec::new();
        for i in 0..5_000u64 {
            let h = h(&key(i));
            f.insert(h, Ts(i as i64 * 10)); // 50 slices
            hashes.push(h);
        }
        assert_eq!(f.generations(), GENERATIONS);
        assert!(
            f.bytes() <= budget && f.bytes() > budget - 64,
            "{}",
            f.bytes()
        );
        assert!(hashes.iter().all(|&h| f.may_contain(h)));
        // Off: nothing allocated, never complete.
        let off = IdemFilter::new(0, 4_000);
        off.insert(h(b"k"), Ts(1));
        off.set_complete();
        assert!(!off.is_complete() && off.bytes() == 0 && !off.enabled());
    }

    /// The default budget's claim, scaled down a hundredfold (bits per key unchanged):
    /// 100k keys within the TTL, bound evenly over it, the oldest generation not yet
    /// pruned, answer fewer than 1 % of fresh keys "maybe".
    #[test]
    fn the_default_budget_holds_its_false_positive_rate() {
        let default = crate::config::StorageConfig::default().idempotency_filter_bytes;
        let f = IdemFilter::new(default / 100, 400_000);
        let n = 100_000u64;
        // From the start of a slice to the end of the fifth: the worst case, every
        // generation full.
        for i in 0..n * 5 / 4 {
            f.insert(h(&key(i)), Ts((i * 400_000 / n) as i64));
        }
        assert_eq!(f.generations(), GENERATIONS);
        let probes = 100_000u64;
        let fp = (0..probes)
            .filter(|i| f.may_contain(h(format!("fresh-{i}").as_bytes())))
            .count();
        assert!(
            fp * 100 < probes as usize,
            "{fp} false positives in {probes}"
        );
    }
}
