//! The idempotency index: what each idempotency key is bound to, in sled, without a sled
//! key per binding. sled costs several hundred bytes written and stored per key, and one
//! binding per debit was most of what it wrote; here the checkpointer writes a layer's
//! bindings as one *block*, sorted by hash and cut into *chunks* of `CHUNK_ENTRIES`, and a
//! background merge (`compact`) folds blocks into fewer, larger ones, as a log-structured
//! merge tree does.
//!
//! - An entry is a binding's 128-bit hash (`digest` of its `I‖account‖0‖key`: the first
//!   half of its SHA-256) and its `IdemRecord`: ~42 bytes, in chunks of ~5.4 KB.
//! - A block belongs to one *slice* of bind time (`at / slice_ms`, the same slices as the
//!   filter's generations: a quarter of the TTL). Its record `J‖0‖id` names the slice, its
//!   level, its entry count, the newest bind instant in it, and each chunk's first hash;
//!   each chunk is `J‖1‖id‖first hash`. The catalog of blocks lives in memory (a few
//!   hundred), read at open.
//! - A lookup (only when the filter says "maybe": a retry, or a false positive) probes
//!   each block, newest first: the catalog names the one chunk that can hold the hash,
//!   one sled `get` reads it, a binary search finds the entry.
//! - A merge takes `FANOUT` blocks of one slice and level, oldest first, and writes their
//!   entries as one block of the next level, streaming (a k-way merge, one chunk of each
//!   input in memory). An entry is rewritten once per level: ~5 times over a 42-hour
//!   slice at 27k debits/s.
//! - Expiry: `forget_before(cutoff)` (the idempotency pruner's) persists the cutoff
//!   (`J‖2`): lookups ignore entries bound before it, and merges drop them. A slice's
//!   blocks are deleted whole once the slice ends before the cutoff.
//!
//! Crash safety rests on sled keeping a prefix of its writes: a block's chunks are written
//! before its record, a merge's new block before the old records are removed, and an old
//! record before its chunks. A crash can leave an entry in two blocks (a merge, or a
//! checkpoint the replay writes again), which answer alike and the next merge folds into
//! one, or chunks no record names, which `open` removes.
//!
//! A chunk is removed only once no lookup can reach it: a lookup holds the catalog's read
//! lock while it probes, and a merge or expiry takes the write lock to take blocks out of
//! the catalog before it removes their keys.

use std::collections::{BinaryHeap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use sha2::{Digest as _, Sha256};

use super::codec::{decode, display_key, encode};
use super::kv::Kv;
use super::records::{IdemBlockRecordV1, IdemChunkRecordV1};
use super::{IdemRecord, StorageError};
use crate::domain::Ts;

/// The tag of the index's keys.
pub const TAG: u8 = b'J';
const META: u8 = 0;
const CHUNK: u8 = 1;
/// The persisted cutoff of `forget_before`.
const FORGOTTEN: [u8; 2] = [TAG, 2];
/// Entries per chunk, at most (~5.4 KB: sled splits a leaf past 16 keys, and writes a
/// leaf over 128 KiB to a file of its own, so a leaf of chunks stays under that).
pub const CHUNK_ENTRIES: usize = 128;
/// Blocks of one slice and level merged into one of the next level.
pub const FANOUT: usize = 10;

/// A binding's hash.
pub type Digest = [u8; 16];

/// The hash of an idempotency record's sled key (`I‖account‖0‖key`): the first half of its
/// SHA-256. Two bindings share one with odds of about n² / 2¹²⁹.
pub fn digest(sled_key: &[u8]) -> Digest {
    let d = Sha256::digest(sled_key);
    let mut out = [0; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// One binding: its hash and what it is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: Digest,
    pub rec: IdemRecord,
}

type Row = ([u8; 16], [u8; 16], u64, i64);

fn row(e: &Entry) -> Row {
    (e.hash, e.rec.fingerprint, e.rec.seq, e.rec.at.millis())
}

fn entry(r: &Row) -> Entry {
    Entry {
        hash: r.0,
        rec: IdemRecord {
            fingerprint: r.1,
            seq: r.2,
            at: Ts(r.3),
        },
    }
}

#[derive(Debug)]
struct Block {
    id: u64,
    slice: i64,
    level: u8,
    entries: u64,
    newest_at: i64,
    chunks: Vec<Digest>,
}

fn meta_key(id: u64) -> [u8; 10] {
    let mut k = [0; 10];
    k[0] = TAG;
    k[1] = META;
    k[2..].copy_from_slice(&id.to_be_bytes());
    k
}

fn chunk_key(id: u64, first: &Digest) -> [u8; 26] {
    let mut k = [0; 26];
    k[0] = TAG;
    k[1] = CHUNK;
    k[2..10].copy_from_slice(&id.to_be_bytes());
    k[10..].copy_from_slice(first);
    k
}

fn chunk_id(key: &[u8]) -> Option<u64> {
    (key.len() == 26 && key[0] == TAG && key[1] == CHUNK)
        .then(|| u64::from_be_bytes(key[2..10].try_into().expect("8 bytes")))
}

fn corrupt(key: &[u8], reason: &str) -> StorageError {
    StorageError::Corrupt {
        key: display_key(key),
        reason: reason.into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes the merging thread, and tells it to stop.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, bool)>, // (work, stop)
    changed: Condvar,
}

/// The index. See the module's documentation.
pub struct IdemIndex {
    slice_ms: i64,
    /// Ascending by id (so by age of their entries' checkpoint, within a level).
    blocks: RwLock<Vec<Arc<Block>>>,
    next_id: AtomicU64,
    forgotten_before: AtomicI64,
    /// Held by a merge, and by whoever must see no block replaced meanwhile (the filter's
    /// scan at open).
    merging: Mutex<()>,
    signal: Signal,
    stopping: AtomicBool,
    merges: AtomicU64,
}

impl IdemIndex {
    /// Reads the catalog from `kv` and removes the chunks no block names (a crash in a
    /// merge or a checkpoint). `slice_ms`: the slices of bind time blocks are kept by.
    pub fn open(kv: &dyn Kv, slice_ms: i64) -> Result<IdemIndex, StorageError> {
        let mut blocks = Vec::new();
        let lo = Bound::Included(vec![TAG, META]);
        let hi = Bound::Excluded(vec![TAG, META + 1]);
        for r in kv.range(lo, hi, false) {
            let (k, v) = r?;
            if k.len() != 10 {
                return Err(corrupt(&k, "idempotency block key is not 10 bytes"));
            }
            let id = u64::from_be_bytes(k[2..].try_into().expect("8 bytes"));
            let m: IdemBlockRecordV1 = decode(&k, &v)?;
            blocks.push(Arc::new(Block {
                id,
                slice: m.slice,
                level: m.level,
                entries: m.entries,
                newest_at: m.newest_at,
                chunks: m.chunks,
            }));
        }
        let named: HashSet<u64> = blocks.iter().map(|b| b.id).collect();
        let mut next_id = blocks.last().map_or(0, |b| b.id + 1);
        // One seek per block id among the chunks.
        let mut from = 0u64;
        let mut orphans = 0usize;
        loop {
            let lo = Bound::Included(chunk_key(from, &[0; 16]).to_vec());
            let hi = Bound::Excluded(vec![TAG, CHUNK + 1]);
            let Some(r) = kv.range(lo, hi, false).next() else {
                break;
            };
            let (k, _) = r?;
            let id = chunk_id(&k).ok_or_else(|| corrupt(&k, "idempotency chunk key"))?;
            next_id = next_id.max(id + 1);
            if !named.contains(&id) {
                orphans += remove_chunks(kv, id)?;
            }
            match id.checked_add(1) {
                Some(n) => from = n,
                None => break,
            }
        }
        if orphans > 0 {
            tracing::info!(
                chunks = orphans,
                "removed idempotency chunks a crash left unreferenced"
            );
        }
        let forgotten_before = match kv.get(&FORGOTTEN)? {
            Some(v) => decode::<i64>(&FORGOTTEN, &v)?,
            None => i64::MIN,
        };
        Ok(IdemIndex {
            slice_ms: slice_ms.max(1),
            blocks: RwLock::new(blocks),
            next_id: AtomicU64::new(next_id),
            forgotten_before: AtomicI64::new(forgotten_before),
            merging: Mutex::new(()),
            signal: Signal::default(),
            stopping: AtomicBool::new(false),
            merges: AtomicU64::new(0),
        })
    }

    fn slice_of(&self, at: i64) -> i64 {
        at.div_euclid(self.slice_ms)
    }

    /// Bindings made before this instant are forgotten (ms; `i64::MIN`: none).
    pub fn forgotten_before(&self) -> i64 {
        self.forgotten_before.load(Ordering::Acquire)
    }

    /// Writes `entries` (a layer's bindings, or the replay's) as one level-0 block per
    /// slice they fall in, and wakes the merging thread.
    pub fn write(&self, kv: &dyn Kv, mut entries: Vec<Entry>) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = |e: &Entry| (self.slice_of(e.rec.at.millis()), e.hash);
        entries.sort_unstable_by_key(key);
        // The same binding twice (the replay of a record a checkpoint already wrote).
        entries.dedup_by_key(|e| key(e));
        let mut i = 0;
        while i < entries.len() {
            let slice = self.slice_of(entries[i].rec.at.millis());
            let j = i + entries[i..].partition_point(|e| self.slice_of(e.rec.at.millis()) == slice);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut w = BlockWriter::new(id, slice, 0);
            for e in &entries[i..j] {
                w.push(kv, e.clone())?;
            }
            if let Some(b) = w.finish(kv)? {
                let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
                let at = blocks.partition_point(|x| x.id < b.id);
                blocks.insert(at, Arc::new(b));
            }
            i = j;
        }
        let mut s = lock(&self.signal.state);
        s.0 = true;
        self.signal.changed.notify_all();
        Ok(())
    }

    /// What the binding of hash `hash` is, if one is remembered.
    pub fn lookup(&self, kv: &dyn Kv, hash: &Digest) -> Result<Option<IdemRecord>, StorageError> {
        let cutoff = self.forgotten_before();
        // Held while probing: no block read here loses its chunks meanwhile.
        let blocks = self.blocks.read().unwrap_or_else(|p| p.into_inner());
        for b in blocks.iter().rev() {
            if b.newest_at < cutoff {
                continue;
            }
            let i = b.chunks.partition_point(|f| f <= hash);
            let Some(first) = i.checked_sub(1).map(|i| b.chunks[i]) else {
                continue;
            };
            let k = chunk_key(b.id, &first);
            let v = kv
                .get(&k)?
                .ok_or_else(|| corrupt(&k, "idempotency chunk named by its block is missing"))?;
            let chunk: IdemChunkRecordV1 = decode(&k, &v)?;
            if let Ok(j) = chunk.entries.binary_search_by(|r| r.0.cmp(hash)) {
                let e = entry(&chunk.entries[j]);
                if e.rec.at.millis() >= cutoff {
                    return Ok(Some(e.rec));
                }
            }
        }
        Ok(None)
    }

    /// Forgets the bindings made before `cutoff`: lookups ignore them from now on (the
    /// cutoff is persisted), and the blocks of slices that end by then are deleted.
    /// Answers how many entries those blocks held.
    pub fn forget_before(&self, kv: &dyn Kv, cutoff: Ts) -> Result<u64, StorageError> {
        let cutoff = cutoff.millis().max(self.forgotten_before());
        // Durable before any lookup trusts it: a key forgotten now may be bound again
        // (and that acknowledged), and after a crash its old binding must not come back
        // beside the new one.
        kv.insert(&FORGOTTEN, &encode(&cutoff))?;
        kv.sync()?;
        self.forgotten_before.store(cutoff, Ordering::Release);
        let _merging = lock(&self.merging);
        let gone: Vec<Arc<Block>> = {
            let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            let ends_by = |b: &Block| (b.slice + 1).saturating_mul(self.slice_ms) <= cutoff;
            let gone = blocks.iter().filter(|b| ends_by(b)).cloned().collect();
            blocks.retain(|b| !ends_by(b));
            gone
        };
        let mut n = 0;
        for b in gone {
            kv.remove(&meta_key(b.id))?;
            remove_chunks(kv, b.id)?;
            n += b.entries;
        }
        Ok(n)
    }

    /// Merges blocks while some slice holds `FANOUT` of one level; answers how many merges.
    /// Stops early (leaving what it wrote of the merge in progress to `open`'s cleanup)
    /// once `stop` was called.
    pub fn compact(&self, kv: &dyn Kv) -> Result<usize, StorageError> {
        let mut merges = 0;
        loop {
            let _merging = lock(&self.merging);
            if self.stopping.load(Ordering::Relaxed) {
                return Ok(merges);
            }
            let inputs: Vec<Arc<Block>> = {
                let blocks = self.blocks.read().unwrap_or_else(|p| p.into_inner());
                let mut groups: std::collections::BTreeMap<(i64, u8), Vec<Arc<Block>>> =
                    Default::default();
                for b in blocks.iter() {
                    groups
                        .entry((b.slice, b.level))
                        .or_default()
                        .push(b.clone());
                }
                match groups.into_values().find(|g| g.len() >= FANOUT) {
                    Some(mut g) => {
                        g.truncate(FANOUT);
                        g
                    }
                    None => return Ok(merges),
                }
            };
            if !self.merge(kv, &inputs)? {
                return Ok(merges);
            }
            merges += 1;
            self.merges.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::IDEMPOTENCY_MERGES_TOTAL).increment(1);
        }
    }

    /// Writes `inputs` (one slice and level, ascending by id) as one block of the next
    /// level, then takes them out. False if stopped first.
    fn merge(&self, kv: &dyn Kv, inputs: &[Arc<Block>]) -> Result<bool, StorageError> {
        let cutoff = self.forgotten_before();
        let mut cursors: Vec<ChunkCursor> =
            inputs.iter().map(|b| ChunkCursor::new(b.clone())).collect();
        let mut heap = BinaryHeap::new();
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some(r) = c.next(kv)? {
                heap.push(std::cmp::Reverse((r.0, i, r)));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut w = BlockWriter::new(id, inputs[0].slice, inputs[0].level + 1);
        let mut last: Option<Entry> = None;
        while let Some(std::cmp::Reverse((_, i, r))) = heap.pop() {
            if let Some(n) = cursors[i].next(kv)? {
                heap.push(std::cmp::Reverse((n.0, i, n)));
            }
            let e = entry(&r);
            if e.rec.at.millis() < cutoff {
                continue;
            }
            match &mut last {
                // The same binding twice (a replayed checkpoint): one.
                Some(l) if l.hash == e.hash => {
                    if e.rec.at > l.rec.at {
                        *l = e;
                    }
                }
                _ => {
                    if let Some(l) = last.replace(e) {
                        w.push(kv, l)?;
                        if w.block.entries % (CHUNK_ENTRIES as u64 * 16) == 0
                            && self.stopping.load(Ordering::Relaxed)
                        {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        if let Some(l) = last {
            w.push(kv, l)?;
        }
        let merged = w.finish(kv)?;
        {
            let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            let ids: HashSet<u64> = inputs.iter().map(|b| b.id).collect();
            blocks.retain(|b| !ids.contains(&b.id));
            if let Some(b) = merged {
                let at = blocks.partition_point(|x| x.id < b.id);
                blocks.insert(at, Arc::new(b));
            }
        }
        for b in inputs {
            kv.remove(&meta_key(b.id))?;
        }
        for b in inputs {
            remove_chunks(kv, b.id)?;
        }
        Ok(true)
    }

    /// Calls `f` with the hash and bind instant of every entry (the filter's build at
    /// open), or stops when `f` answers false. No merge runs meanwhile.
    pub fn for_each(
        &self,
        kv: &dyn Kv,
        mut f: impl FnMut(&Digest, Ts) -> bool,
    ) -> Result<(), StorageError> {
        let _merging = lock(&self.merging);
        let blocks: Vec<Arc<Block>> = self
            .blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for b in blocks {
            let mut c = ChunkCursor::new(b);
            while let Some(r) = c.next(kv)? {
                if !f(&r.0, Ts(r.3)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Blocks in the catalog, and the entries they hold (a binding merged twice counts
    /// twice until the merge).
    pub fn stats(&self) -> (usize, u64) {
        let blocks = self.blocks.read().unwrap_or_else(|p| p.into_inner());
        (blocks.len(), blocks.iter().map(|b| b.entries).sum())
    }

    /// Merges made since it opened.
    pub fn merges(&self) -> u64 {
        self.merges.load(Ordering::Relaxed)
    }

    /// The merging thread's loop: merges whenever a block was written, until `stop`.
    pub fn merge_loop(&self, kv: &dyn Kv) -> Result<(), StorageError> {
        loop {
            {
                let mut s = lock(&self.signal.state);
                while !s.0 && !s.1 {
                    s = self
                        .signal
                        .changed
                        .wait(s)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if s.1 {
                    return Ok(());
                }
                s.0 = false;
            }
            self.compact(kv)?;
        }
    }

    /// Stops `merge_loop` (and any merge in progress, soon).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut s = lock(&self.signal.state);
        s.1 = true;
        self.signal.changed.notify_all();
    }
}

/// Removes every chunk of block `id`; answers how many.
fn remove_chunks(kv: &dyn Kv, id: u64) -> Result<usize, StorageError> {
    let lo = Bound::Included(chunk_key(id, &[0; 16]).to_vec());
    let hi = Bound::Included(chunk_key(id, &[0xff; 16]).to_vec());
    let keys: Vec<Vec<u8>> = kv
        .range(lo, hi, false)
        .map(|r| r.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    for k in &keys {
        kv.remove(k)?;
    }
    Ok(keys.len())
}

/// Writes one block: chunks as they fill, then its record.
struct BlockWriter {
    block: Block,
    chunk: Vec<Row>,
}

impl BlockWriter {
    fn new(id: u64, slice: i64, level: u8) -> BlockWriter {
        BlockWriter {
            block: Block {
                id,
                slice,
                level,
                entries: 0,
                newest_at: i64::MIN,
                chunks: Vec::new(),
            },
            chunk: Vec::with_capacity(CHUNK_ENTRIES),
        }
    }

    /// Adds the next entry (ascending by hash, none twice).
    fn push(&mut self, kv: &dyn Kv, e: Entry) -> Result<(), StorageError> {
        debug_assert!(self.chunk.last().map_or(true, |l| l.0 < e.hash));
        self.chunk.push(row(&e));
        self.block.entries += 1;
        self.block.newest_at = self.block.newest_at.max(e.rec.at.millis());
        if self.chunk.len() == CHUNK_ENTRIES {
            self.flush(kv)?;
        }
        Ok(())
    }

    fn flush(&mut self, kv: &dyn Kv) -> Result<(), StorageError> {
        let Some(first) = self.chunk.first().map(|r| r.0) else {
            return Ok(());
        };
        let rec = IdemChunkRecordV1 {
            entries: std::mem::take(&mut self.chunk),
        };
        kv.insert(&chunk_key(self.block.id, &first), &encode(&rec))?;
        self.block.chunks.push(first);
        self.chunk = Vec::with_capacity(CHUNK_ENTRIES);
        Ok(())
    }

    /// The chunks, then the record; `None` for a block left empty (nothing written).
    fn finish(mut self, kv: &dyn Kv) -> Result<Option<Block>, StorageError> {
        self.flush(kv)?;
        let b = self.block;
        if b.entries == 0 {
            return Ok(None);
        }
        let rec = IdemBlockRecordV1 {
            slice: b.slice,
            level: b.level,
            entries: b.entries,
            newest_at: b.newest_at,
            chunks: b.chunks.clone(),
        };
        kv.insert(&meta_key(b.id), &encode(&rec))?;
        Ok(Some(b))
    }
}

/// Reads one block's entries in order, a chunk at a time.
struct ChunkCursor {
    block: Arc<Block>,
    next_chunk: usize,
    rows: std::vec::IntoIter<Row>,
}

impl ChunkCursor {
    fn new(block: Arc<Block>) -> ChunkCursor {
        ChunkCursor {
            block,
            next_chunk: 0,
            rows: Vec::new().into_iter(),
        }
    }

    fn next(&mut self, kv: &dyn Kv) -> Result<Option<Row>, StorageError> {
        loop {
            if let Some(r) = self.rows.next() {
                return Ok(Some(r));
            }
            let Some(first) = self.block.chunks.get(self.next_chunk) else {
                return Ok(None);
            };
            self.next_chunk += 1;
            let k = chunk_key(self.block.id, first);
            let v = kv
                .get(&k)?
                .ok_or_else(|| corrupt(&k, "idempotency chunk named by its block is missing"))?;
            self.rows = decode::<IdemChunkRecordV1>(&k, &v)?.entries.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::{scan_prefix, SledKv};

    fn e(n: u64, at: i64) -> Entry {
        Entry {
            hash: digest(&n.to_be_bytes()),
            rec: IdemRecord {
                fingerprint: [n as u8; 16],
                seq: n,
                at: Ts(at),
            },
        }
    }

    fn found(ix: &IdemIndex, kv: &dyn Kv, n: u64) -> Option<u64> {
        ix.lookup(kv, &digest(&n.to_be_bytes()))
            .unwrap()
            .map(|r| r.seq)
    }

    /// Layers of bindings, merged level by level, each found (and no other), across a
    /// reopen; a binding written twice is kept once; expiry forgets by the cutoff and
    /// deletes the slices that ended.
    #[test]
    fn bindings_are_found_through_merges_reopens_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 22).unwrap();
        let slice = 1000;
        let ix = IdemIndex::open(&kv, slice).unwrap();
        let layers = FANOUT * FANOUT + 3;
        for l in 0..layers as u64 {
            // Layer l: 700 bindings (more than a chunk), at 10 ms a layer: slices 0..=1.
            let mut entries: Vec<Entry> = (0..700).map(|i| e(l * 700 + i, l as i64 * 10)).collect();
            if l == 5 {
                // A replayed checkpoint: layer 4's bindings again.
                entries.extend((0..700).map(|i| e(4 * 700 + i, 40)));
            }
            ix.write(&kv, entries).unwrap();
            ix.compact(&kv).unwrap();
        }
        let total = layers as u64 * 700;
        let (blocks, entries) = ix.stats();
        assert!(blocks < 3 * FANOUT, "{blocks} blocks");
        assert_eq!(entries, total);
        for n in (0..total).step_by(7) {
            assert_eq!(found(&ix, &kv, n), Some(n), "{n}");
        }
        // The edges of every chunk: each chunk's first hash, and the highest of all.
        let edges: Vec<Digest> = ix
            .blocks
            .read()
            .unwrap()
            .iter()
            .flat_map(|b| b.chunks.clone())
            .collect();
        for h in &edges {
            assert!(ix.lookup(&kv, h).unwrap().is_some(), "{h:?}");
        }
        let top = (0..total).map(|n| digest(&n.to_be_bytes())).max().unwrap();
        assert!(ix.lookup(&kv, &top).unwrap().is_some());
        assert_eq!(found(&ix, &kv, total), None);
        assert_eq!(found(&ix, &kv, total + 1_000_000), None);
        drop(ix);

        // A crash in a merge: chunks of a block no record names.
        kv.insert(&chunk_key(9999, &[7; 16]), b"junk").unwrap();
        let ix = IdemIndex::open(&kv, slice).unwrap();
        assert_eq!(
            scan_prefix(&kv, &chunk_key(9999, &[7; 16])[..10]).count(),
            0
        );
        assert_eq!(ix.stats().1, total);
        assert_eq!(found(&ix, &kv, 3), Some(3));
        assert_eq!(found(&ix, &kv, total - 1), Some(total - 1));

        // Slice 0 holds layers 0..=99 (at < 1000). Forget before 500: those bound
        // before are ignored, nothing deleted yet (slice 0 ends at 1000).
        assert_eq!(ix.forget_before(&kv, Ts(500)).unwrap(), 0);
        assert_eq!(found(&ix, &kv, 49 * 700), None);
        assert_eq!(found(&ix, &kv, 50 * 700), Some(50 * 700));
        // Slice 0 ends by 1000: deleted whole.
        assert_eq!(ix.forget_before(&kv, Ts(1000)).unwrap(), 100 * 700);
        assert_eq!(found(&ix, &kv, 99 * 700), None);
        assert_eq!(found(&ix, &kv, 100 * 700), Some(100 * 700));
        drop(ix);
        // The cutoff is remembered.
        let ix = IdemIndex::open(&kv, slice).unwrap();
        assert_eq!(ix.forgotten_before(), 1000);
        assert_eq!(ix.stats().1, 3 * 700);
        let chunks = scan_prefix(&kv, &[TAG, CHUNK]).count();
        assert_eq!(
            chunks,
            ix.blocks
                .read()
                .unwrap()
                .iter()
                .map(|b| b.chunks.len())
                .sum::<usize>()
        );
    }
}
