//! The write-ahead log's group records, and the overlay of writes that have not reached
//! their own keys in sled yet.
//!
//! Every write the store makes (a put or a delete of an event, idempotency record,
//! snapshot, feed entry, totals shard...) goes into the overlay's active layer, where reads
//! see it at once, and into the pending group. `write_group` (called by `Store::sync`)
//! appends the pending group to the segment log (`segment_log.rs`) as one write of one or
//! a few records (cut between commits when bigger than `record_bytes_max`) and
//! fdatasyncs it: that is what makes a mutation durable. A commit is never split across
//! records. The request path never writes or flushes sled.
//!
//! Every so often `write_group` also freezes the active layer. The checkpointer thread
//! then writes each frozen layer's keys into sled with plain inserts and removes, makes
//! sled durable (flush + fdatasync), records in sled the number of the first record it
//! does not cover (`COVERED_KEY`), makes that durable, deletes the segments wholly
//! covered, and only then drops the layer from the overlay. Reads look at the active
//! layer, then the frozen layers newest first, then sled.
//!
//! Crash: `recover` (at open, before anything reads) first replays the `L‖n` group records
//! an earlier release left in sled, then every log record from the covered number on,
//! oldest first, onto their keys, makes sled durable and records the new covered number.
//! Puts and deletes are absolute, so replaying a record whose layer was partly written
//! already is harmless.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::codec::{decode, display_key, encode, unseal, with_crc, FORMAT_V1};
use super::kv::{scan_prefix, Kv};
use super::segment_log::{LogFiles, SegmentLog};
use super::StorageError;

/// A key's new value, or `None` when the write deletes it.
pub type Value = Option<Vec<u8>>;
type Map = BTreeMap<Vec<u8>, Value>;
/// A key and its value, as reads answer them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The tag of the group records an earlier release kept in sled (`L‖n`, 9 bytes), and of
/// `COVERED_KEY`.
pub const GROUP: u8 = b'L';
/// In sled: the number of the first log record whose writes may not be in sled yet (every
/// record below it is covered by the checkpointer). A key of its own, one byte long, so it
/// never looks like an `L‖n` record.
pub const COVERED_KEY: [u8; 1] = [GROUP];

/// When layers are frozen and how far the checkpointer may fall behind.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// The active layer is frozen (handed to the checkpointer) when it holds this many
    /// keys...
    pub freeze_keys: usize,
    /// ...or when its first write is this old.
    pub freeze_after: Duration,
    /// Frozen layers waiting for the checkpointer, at most; while they are all waiting,
    /// the active layer keeps growing up to `active_keys_max`, and then `write_group` (so
    /// the journal, so every acknowledgement) waits for the checkpointer: back-pressure.
    pub frozen_max: usize,
    pub active_keys_max: usize,
    /// A group's writes go into records of about this size at most, cut between commits
    /// (`RECORD_BYTES_MAX` in the daemon; the simulator cuts smaller, so that a crash can
    /// keep some of a group's commits and not the others).
    pub record_bytes_max: usize,
    /// Log segments are preallocated to this size (`storage.segment_bytes`); a write that
    /// does not fit starts a new one.
    pub segment_bytes: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            freeze_keys: 200_000,
            freeze_after: Duration::from_millis(1000),
            frozen_max: 2,
            active_keys_max: 2_000_000,
            record_bytes_max: RECORD_BYTES_MAX,
            segment_bytes: super::segment_log::SEGMENT_BYTES,
        }
    }
}

/// A group's writes go into log records of about this size at most, cut between commits
/// (a commit bigger than this is one record of its own), all in one write. Small records
/// keep a replay's buffers small; a torn write keeps the whole records before the tear.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// The byte ranges of the records a group's encoded writes are cut into, given where each
/// commit ends (ascending).
fn split_records(cuts: &[usize], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut last_cut = 0;
    for &cut in cuts {
        if cut - start > max && last_cut > start {
            parts.push(start..last_cut);
            start = last_cut;
        }
        last_cut = cut;
    }
    if last_cut > start {
        parts.push(start..last_cut);
    }
    parts
}

/// The sled key of an earlier release's group record `n`.
pub fn legacy_group_key(group: u64) -> [u8; 9] {
    let mut k = [GROUP; 9];
    k[1..].copy_from_slice(&group.to_be_bytes());
    k
}

struct Layer {
    map: Map,
    /// The log records `from..to` hold exactly this layer's writes.
    groups: std::ops::Range<u64>,
}

struct State {
    active: Map,
    /// When the active layer got its first write.
    active_since: Option<Instant>,
    /// Oldest first; reads see them all, the checkpointer takes the front one.
    frozen: VecDeque<Arc<Layer>>,
    /// How many of the front of `frozen` have their log records written, so may be
    /// checkpointed.
    ready: usize,
    /// The writes since the last group commit, encoded (see `encode_op`)...
    pending: Vec<u8>,
    /// ...and where each commit in it ends: records are cut only there.
    cuts: Vec<usize>,
    stop: bool,
}

impl State {
    /// One commit: into the active layer and the pending group, ending at a cut.
    fn record(&mut self, writes: impl IntoIterator<Item = (Vec<u8>, Value)>) {
        if self.active_since.is_none() {
            self.active_since = Some(Instant::now());
        }
        for (key, value) in writes {
            encode_op(&mut self.pending, &key, &value);
            self.active.insert(key, value);
        }
        self.cuts.push(self.pending.len());
    }
}

struct Groups {
    /// The next log record's number.
    next: u64,
    /// The first log record that no frozen layer covers yet.
    unfrozen: u64,
}

pub struct Overlay {
    kv: Arc<dyn Kv>,
    /// The write-ahead log.
    log: SegmentLog,
    tuning: Tuning,
    state: Mutex<State>,
    /// Wakes the checkpointer (a layer is ready, or stop) and a writer waiting for room.
    changed: Condvar,
    /// Held from taking the pending writes to appending their records, so that records
    /// are written in the order of their writes.
    groups: Mutex<Groups>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode_op(out: &mut Vec<u8>, key: &[u8], value: &Value) {
    out.push(value.is_some() as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
}

/// A group record as an earlier release wrote it into sled (`L‖n`): the format version,
/// the encoded writes, a CRC32 of both. Read at open only (and written by tests that make
/// such a store).
pub fn legacy_group_record(writes: &[(Vec<u8>, Value)]) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    for (k, v) in writes {
        encode_op(&mut out, k, v);
    }
    with_crc(out)
}

/// The writes of an earlier release's group record, in order.
fn decode_legacy_group(key: &[u8], bytes: &[u8]) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
    let (version, ops) = unseal(key, bytes)?;
    if version != FORMAT_V1 {
        return Err(StorageError::Corrupt {
            key: display_key(key),
            reason: "unknown group record format version".into(),
        });
    }
    decode_ops(&display_key(key), ops)
}

/// Encoded writes (`encode_op`), in order; `name` says where they were read.
fn decode_ops(name: &str, ops: &[u8]) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
    let corrupt = |reason: &str| StorageError::Corrupt {
        key: name.to_string(),
        reason: reason.to_string(),
    };
    let mut rest = ops;
    let mut take = |n: usize| -> Result<&[u8], StorageError> {
        if rest.len() < n {
            return Err(corrupt("group record ends inside a write"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut out = Vec::new();
    while let Ok(tag) = take(1) {
        let tag = tag[0];
        let len = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let klen = len(take(4)?);
        let key = take(klen)?.to_vec();
        let value = match tag {
            0 => None,
            1 => {
                let vlen = len(take(4)?);
                Some(take(vlen)?.to_vec())
            }
            _ => return Err(corrupt("group record has an unknown write tag")),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn apply_writes(kv: &dyn Kv, writes: Vec<(Vec<u8>, Value)>) -> Result<(), StorageError> {
    for (key, value) in writes {
        match value {
            Some(v) => kv.insert(&key, &v)?,
            None => kv.remove(&key)?,
        };
    }
    Ok(())
}

/// The first log record not covered by sled (0 for a store that never had one).
pub fn covered(kv: &dyn Kv) -> Result<u64, StorageError> {
    match kv.get(&COVERED_KEY)? {
        Some(v) => decode::<u64>(&COVERED_KEY, &v),
        None => Ok(0),
    }
}

impl Overlay {
    /// Replays what a previous run left, before anything reads: the `L‖n` group records
    /// of an earlier release (oldest first, each deleted after its writes), then every log
    /// record from the covered number on (oldest first), onto their keys; then makes sled
    /// durable, records the new covered number and deletes the segments it covers.
    /// Answers the overlay, ready to take writes, and how many records it replayed.
    pub fn recover(
        kv: Arc<dyn Kv>,
        files: Box<dyn LogFiles>,
        tuning: Tuning,
    ) -> Result<(Arc<Overlay>, usize), StorageError> {
        let mut replayed = 0;
        let legacy: Vec<(Vec<u8>, Vec<u8>)> = scan_prefix(&*kv, &[GROUP])
            .filter(|r| r.as_ref().map_or(true, |(k, _)| k.len() == 9))
            .collect::<Result<_, _>>()?;
        for (k, v) in &legacy {
            apply_writes(&*kv, decode_legacy_group(k, v)?)?;
            // After its writes: sled keeps a prefix of its writes.
            kv.remove(k)?;
            replayed += 1;
        }
        if replayed > 0 {
            kv.sync()?;
        }
        let covered_before = covered(&*kv)?;
        let (log, found) =
            SegmentLog::open(files, tuning.segment_bytes, covered_before, |n, payload| {
                let writes = decode_ops(&format!("log record {n}"), payload)?;
                apply_writes(&*kv, writes)
            })?;
        replayed += found.records;
        let next = log.next();
        if next != covered_before {
            kv.sync()?;
            kv.insert(&COVERED_KEY, &encode(&next))?;
            kv.sync()?;
        }
        log.remove_covered(next)?;
        let overlay = Arc::new(Overlay {
            kv,
            log,
            tuning,
            state: Mutex::new(State {
                active: Map::new(),
                active_since: None,
                frozen: VecDeque::new(),
                ready: 0,
                pending: Vec::new(),
                cuts: Vec::new(),
                stop: false,
            }),
            changed: Condvar::new(),
            groups: Mutex::new(Groups {
                next,
                unfrozen: next,
            }),
        });
        Ok((overlay, replayed))
    }

    /// The log's segments present (oldest first).
    pub fn segments(&self) -> Vec<u64> {
        self.log.segments()
    }

    /// Records writes, visible to reads at once and durable after the next `write_group`
    /// and flush. The writes of one call land in one group record: all or none.
    pub fn commit(&self, writes: impl IntoIterator<Item = (Vec<u8>, Value)>) {
        lock(&self.state).record(writes);
    }

    /// Deletes `key` if its value is still `expected` (checked and recorded at once).
    pub fn delete_if(&self, key: &[u8], expected: &[u8]) -> Result<bool, StorageError> {
        let mut s = lock(&self.state);
        let current = match layered(&s, key) {
            Some(v) => v,
            None => self.kv.get(key)?,
        };
        if current.as_deref() != Some(expected) {
            return Ok(false);
        }
        s.record([(key.to_vec(), None)]);
        Ok(true)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        // The overlay first, then sled: a layer leaves the overlay only after its keys are
        // in sled, so a key missed here is found there.
        if let Some(v) = layered(&lock(&self.state), key) {
            return Ok(v);
        }
        self.kv.get(key)
    }

    /// Up to `limit` live keys in `lo..hi` (ascending, or descending with `rev`), the
    /// overlay's writes merged over sled's.
    pub fn range(
        &self,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        if limit > 0 {
            self.scan(lo, hi, rev, |k, v| {
                out.push((k, v));
                Ok(out.len() < limit)
            })?;
        }
        Ok(out)
    }

    /// Calls `visit` on each live key in `lo..hi` (ascending, or descending with `rev`),
    /// the overlay's writes merged over sled's, until it answers false. sled is read as
    /// the scan goes, so a scan over millions of keys holds only the overlay's share in
    /// memory. `visit` may write (the overlay's lock is not held while it runs).
    pub fn scan(
        &self,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        rev: bool,
        mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        if is_empty_range(&lo, &hi) {
            return Ok(());
        }
        let mut over = Map::new();
        {
            let s = lock(&self.state);
            for layer in s.frozen.iter().map(|l| &l.map).chain([&s.active]) {
                for (k, v) in layer.range((lo.clone(), hi.clone())) {
                    over.insert(k.clone(), v.clone());
                }
            }
        }
        let mut sled_iter = self.kv.range(lo, hi, rev);
        let mut over: Box<dyn Iterator<Item = _>> = if rev {
            Box::new(over.into_iter().rev())
        } else {
            Box::new(over.into_iter())
        };
        let before = |a: &[u8], b: &[u8]| if rev { a > b } else { a < b };
        let mut s_next = sled_iter.next().transpose()?;
        let mut o_next = over.next();
        loop {
            let take_overlay = match (&s_next, &o_next) {
                (None, None) => return Ok(()),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((sk, _)), Some((ok, _))) => {
                    if sk.as_slice() == ok.as_slice() {
                        // The overlay's write is newer: it shadows sled's value.
                        s_next = sled_iter.next().transpose()?;
                        true
                    } else {
                        !before(sk, ok)
                    }
                }
            };
            let more = if take_overlay {
                let (k, v) = o_next.take().expect("checked");
                o_next = over.next();
                match v {
                    Some(v) => visit(k, v)?,
                    None => true,
                }
            } else {
                let (k, v) = s_next.take().expect("checked");
                s_next = sled_iter.next().transpose()?;
                visit(k, v)?
            };
            if !more {
                return Ok(());
            }
        }
    }

    /// Appends everything committed so far to the log, in one write made durable by one
    /// fdatasync (nothing if there is nothing). Freezes the active layer when it
    /// is big or old enough, and waits when the checkpointer is too far behind.
    pub fn write_group(&self) -> Result<(), StorageError> {
        self.write_group_then(false)
    }

    /// At a clean shutdown, with the checkpointer still running: writes the last group,
    /// freezes whatever is active, and asks the checkpointer to write every layer and
    /// stop, so that the next open has nothing to replay.
    pub fn close(&self) -> Result<(), StorageError> {
        self.write_group_then(true)?;
        self.stop();
        Ok(())
    }

    /// `write_group`; with `freeze`, the active layer is frozen whatever its size or age
    /// (waiting for room among the frozen layers).
    fn write_group_then(&self, freeze: bool) -> Result<(), StorageError> {
        let t = self.tuning;
        let mut g = lock(&self.groups);
        let (ops, parts, froze) = {
            let mut s = lock(&self.state);
            while s.frozen.len() >= t.frozen_max && (freeze || s.active.len() >= t.active_keys_max)
            {
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            let ops = std::mem::take(&mut s.pending);
            let parts = split_records(&std::mem::take(&mut s.cuts), t.record_bytes_max);
            let due = s.active.len() >= t.freeze_keys
                || s.active_since
                    .is_some_and(|at| at.elapsed() >= t.freeze_after);
            let froze = (due || freeze) && s.frozen.len() < t.frozen_max;
            if froze {
                let end = g.next + parts.len() as u64;
                let layer = Layer {
                    map: std::mem::take(&mut s.active),
                    groups: g.unfrozen..end,
                };
                s.active_since = None;
                s.frozen.push_back(Arc::new(layer));
                g.unfrozen = end;
            }
            (ops, parts, froze)
        };
        let payloads: Vec<&[u8]> = parts.iter().map(|p| &ops[p.clone()]).collect();
        self.log.append(g.next, &payloads)?;
        g.next += payloads.len() as u64;
        if froze {
            lock(&self.state).ready += 1;
            self.changed.notify_all();
        }
        Ok(())
    }

    /// The checkpointer thread's loop: writes each ready layer (`checkpoint_ready`) as
    /// it comes. Returns after `stop`, once no layer is ready.
    pub fn checkpoint_loop(&self) -> Result<(), StorageError> {
        loop {
            {
                let mut s = lock(&self.state);
                while s.ready == 0 && !s.stop {
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.ready == 0 {
                    return Ok(());
                }
            }
            self.checkpoint_ready()?;
        }
    }

    /// Writes every layer ready now, oldest first: its keys into sled, sled's sync, the
    /// covered number, sled's sync, the deletion of the segments it covers, then it leaves
    /// the overlay. Answers how many. Only one
    /// thread at a time may call it (the checkpointer, or a test that runs none).
    pub fn checkpoint_ready(&self) -> Result<usize, StorageError> {
        let mut n = 0;
        loop {
            let layer = {
                let s = lock(&self.state);
                if s.ready == 0 {
                    return Ok(n);
                }
                s.frozen.front().expect("a ready layer").clone()
            };
            let started = Instant::now();
            for (key, value) in &layer.map {
                match value {
                    Some(v) => self.kv.insert(key, v)?,
                    None => self.kv.remove(key)?,
                };
            }
            // The keys durable, then the number they cover, durable too, and only then the
            // segments deleted: a record is never gone while a write it holds is missing.
            self.kv.sync()?;
            self.kv.insert(&COVERED_KEY, &encode(&layer.groups.end))?;
            self.kv.sync()?;
            self.log.remove_covered(layer.groups.end)?;
            {
                let mut s = lock(&self.state);
                let done = s.frozen.pop_front().expect("the layer just written");
                debug_assert!(Arc::ptr_eq(&done, &layer));
                s.ready -= 1;
            }
            self.changed.notify_all();
            metrics::histogram!(crate::metrics::CHECKPOINT_DURATION_SECONDS)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(crate::metrics::CHECKPOINT_KEYS_TOTAL)
                .increment(layer.map.len() as u64);
            n += 1;
        }
    }

    /// Asks the checkpointer to return once the layers already ready are written.
    fn stop(&self) {
        lock(&self.state).stop = true;
        self.changed.notify_all();
    }
}

/// Whether no key lies between `lo` and `hi` (`BTreeMap::range` panics on some of them).
fn is_empty_range(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    use Bound::*;
    match (lo, hi) {
        (Unbounded, _) | (_, Unbounded) => false,
        (Included(a), Included(b)) => a > b,
        (Included(a), Excluded(b)) | (Excluded(a), Included(b)) | (Excluded(a), Excluded(b)) => {
            a >= b
        }
    }
}

/// The newest overlay write of `key`: `Some(None)` when it deletes it, `None` when the
/// overlay has no write of it.
fn layered(s: &State, key: &[u8]) -> Option<Value> {
    if let Some(v) = s.active.get(key) {
        return Some(v.clone());
    }
    s.frozen.iter().rev().find_map(|l| l.map.get(key).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_cut_between_commits_into_small_records() {
        let max = 6 * 1024;
        assert_eq!(
            split_records(&[], max),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(split_records(&[10, 10, 20], max), vec![0..20]);
        assert_eq!(split_records(&[max], max), vec![0..max]);
        assert_eq!(
            split_records(&[max, max + 1], max),
            vec![0..max, max..max + 1]
        );
        // A commit bigger than the limit is a record of its own, whole.
        assert_eq!(
            split_records(&[100, 100 + 3 * max, 101 + 3 * max], max),
            vec![0..100, 100..100 + 3 * max, 100 + 3 * max..101 + 3 * max]
        );
        // Records are as full as the cuts allow, and never over the limit unless one
        // commit is.
        let cuts: Vec<usize> = (1..=1000).map(|i| i * 700).collect();
        let parts = split_records(&cuts, max);
        assert_eq!(parts.first().unwrap().start, 0);
        assert_eq!(parts.last().unwrap().end, 700_000);
        for w in parts.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for p in &parts {
            assert!(p.len() <= max && p.len() + 700 > max, "{p:?}");
        }
    }

    /// When the checkpointer is `frozen_max` layers behind and the active layer is full,
    /// a group commit waits for it (back-pressure), and goes on once a layer is written.
    #[test]
    fn group_commits_wait_for_a_checkpointer_that_falls_behind() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> =
            Arc::new(crate::store::kv::SledKv::open(dir.path(), 1 << 20).unwrap());
        let tuning = Tuning {
            freeze_keys: 2,
            freeze_after: Duration::from_secs(3600),
            frozen_max: 1,
            active_keys_max: 5,
            record_bytes_max: RECORD_BYTES_MAX,
            segment_bytes: 1 << 20,
        };
        let files = crate::store::segment_log::FsLogFiles::open(&dir.path().join("log")).unwrap();
        let (overlay, _) = Overlay::recover(kv.clone(), Box::new(files), tuning).unwrap();
        let put = |k: u8| overlay.commit([(vec![b'E', k], Some(vec![k]))]);
        put(1);
        put(2);
        overlay.write_group().unwrap(); // freezes keys 1-2: the one frozen layer allowed
        for k in 3..7 {
            put(k);
        }
        overlay.write_group().unwrap(); // no room to freeze: keys 3-6 stay active
        put(7);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let written = std::thread::scope(|scope| {
            scope.spawn(|| {
                overlay.write_group().unwrap();
                done_tx.send(()).unwrap();
            });
            assert!(
                done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
                "the group commit went on with the checkpointer behind"
            );
            // This writes the first layer, and the second too if the waiting commit
            // froze it in time.
            let written = overlay.checkpoint_ready().unwrap();
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            written
        });
        // It froze keys 3-7 once there was room; every key still reads back.
        assert_eq!(written + overlay.checkpoint_ready().unwrap(), 2);
        for k in 1..=7 {
            assert_eq!(overlay.get(&[b'E', k]).unwrap(), Some(vec![k]));
            assert_eq!(kv.get(&[b'E', k]).unwrap(), Some(vec![k]));
        }
        assert_eq!(covered(&*kv).unwrap(), overlay.log.next());
    }

    #[test]
    fn group_records_round_trip_and_refuse_damage() {
        let writes: Vec<(Vec<u8>, Value)> = vec![
            (b"Ea".to_vec(), Some(b"one".to_vec())),
            (b"Ib".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ];
        let framed = legacy_group_record(&writes);
        assert_eq!(decode_legacy_group(b"L", &framed).unwrap(), writes);
        assert_eq!(
            decode_ops("x", &framed[1..framed.len() - 4]).unwrap(),
            writes
        );
        for i in 0..framed.len() {
            let mut bad = framed.clone();
            bad[i] ^= 0x01;
            assert!(decode_legacy_group(b"L", &bad).is_err(), "flipped byte {i}");
        }
        assert!(decode_legacy_group(b"L", &framed[..framed.len() - 1]).is_err());
    }
}
