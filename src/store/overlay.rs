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
use super::records::CoveredRecordV2;
use super::segment_log::{At, LogFiles, Pos, SegmentLog, HEADER};
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

/// The keys whose values stay where they lie in the log (events): the checkpointer (and
/// the replay at open) hands their positions to `write`, which indexes them in sled,
/// instead of writing their values into sled.
pub trait Index: Send + Sync + 'static {
    fn located(&self, key: &[u8]) -> bool;
    /// The first log record from which segments may hold located values: the
    /// checkpointer deletes only the covered segments below it (retention deletes the
    /// others, `Overlay::remove_segments_below`).
    fn floor(&self) -> u64;
    /// Indexes `puts` (each key with where its value lies) and forgets `deletes`, in `kv`.
    /// Called with the writes of one layer (or of the whole replay), each key once, its
    /// newest write.
    fn write(
        &self,
        kv: &dyn Kv,
        puts: &[(&[u8], Pos)],
        deletes: &[&[u8]],
    ) -> Result<(), StorageError>;
    /// Keys whose writes `write_bulk` takes, rather than a sled key each (idempotency
    /// records, `idem_index.rs`).
    fn bulk(&self, _key: &[u8]) -> bool {
        false
    }
    /// Writes the bulk keys of one layer (or of the whole replay) into `kv`: each key
    /// once, its newest write. Called before the layer's located keys are indexed.
    fn write_bulk(&self, _kv: &dyn Kv, _writes: &[(&[u8], &Value)]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// No located keys: every value goes into sled (tests of the overlay alone).
pub struct NoIndex;

impl Index for NoIndex {
    fn located(&self, _: &[u8]) -> bool {
        false
    }
    fn floor(&self) -> u64 {
        u64::MAX
    }
    fn write(&self, _: &dyn Kv, _: &[(&[u8], Pos)], _: &[&[u8]]) -> Result<(), StorageError> {
        Ok(())
    }
}

/// What sled covers: every log record below `number` has its writes in sled (or, for a
/// located key, its position indexed), and record `number` starts at `at` when known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    pub number: u64,
    pub at: Option<At>,
}

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
    /// Where the values of the located keys put in this layer lie in the log.
    positions: Vec<(Vec<u8>, Pos)>,
    /// The log records `from..to` hold exactly this layer's writes...
    groups: std::ops::Range<u64>,
    /// ...and record `to` starts here.
    end: Option<At>,
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
    /// ...and where each commit in it ends: records are cut only there...
    cuts: Vec<usize>,
    /// ...and the located keys put in it, with where their values are in `pending`.
    pending_located: Vec<(Vec<u8>, usize, u32)>,
    /// Where the values of the located keys put in the active layer lie in the log.
    active_positions: Vec<(Vec<u8>, Pos)>,
    stop: bool,
}

impl State {
    /// One commit: into the active layer and the pending group, ending at a cut.
    fn record(&mut self, index: &dyn Index, writes: impl IntoIterator<Item = (Vec<u8>, Value)>) {
        if self.active_since.is_none() {
            self.active_since = Some(Instant::now());
        }
        for (key, value) in writes {
            let at = encode_op(&mut self.pending, &key, &value);
            if let (Some(v), true) = (&value, index.located(&key)) {
                self.pending_located.push((key.clone(), at, v.len() as u32));
            }
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
    index: Arc<dyn Index>,
    /// The write-ahead log.
    log: SegmentLog,
    tuning: Tuning,
    state: Mutex<State>,
    /// Wakes the checkpointer (a layer is ready, or stop) and a writer waiting for room.
    changed: Condvar,
    /// Held from taking the pending writes to appending their records, so that records
    /// are written in the order of their writes.
    groups: Mutex<Groups>,
    /// What the checkpointer has covered so far (durable in sled).
    covered: Mutex<Covered>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends one write to `out`; answers where its value starts in `out`.
fn encode_op(out: &mut Vec<u8>, key: &[u8], value: &Value) -> usize {
    out.push(value.is_some() as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
        out.len() - v.len()
    } else {
        out.len()
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
    Ok(decode_ops_at(name, ops)?
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect())
}

/// `decode_ops`, with where each value starts in `ops`.
fn decode_ops_at(name: &str, ops: &[u8]) -> Result<Vec<(Vec<u8>, Value, usize)>, StorageError> {
    let base = ops.as_ptr() as usize;
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
        let (value, at) = match tag {
            0 => (None, 0),
            1 => {
                let vlen = len(take(4)?);
                let v = take(vlen)?;
                // Where it lies in `ops`.
                (Some(v.to_vec()), v.as_ptr() as usize - base)
            }
            _ => return Err(corrupt("group record has an unknown write tag")),
        };
        out.push((key, value, at));
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
    Ok(covered_at(kv)?.number)
}

/// What sled covers of the log, with where the first record not covered starts (unknown
/// when an earlier release recorded the number alone).
pub fn covered_at(kv: &dyn Kv) -> Result<Covered, StorageError> {
    match kv.get(&COVERED_KEY)? {
        Some(v) => decode::<CoveredRecordV2>(&COVERED_KEY, &v).map(Covered::from),
        None => Ok(Covered::default()),
    }
}

fn write_covered(kv: &dyn Kv, covered: Covered) -> Result<(), StorageError> {
    kv.insert(&COVERED_KEY, &encode(&CoveredRecordV2::from(covered)))
}

/// Applies one write to sled.
fn apply_one(kv: &dyn Kv, key: &[u8], value: &Value) -> Result<(), StorageError> {
    match value {
        Some(v) => kv.insert(key, v),
        None => kv.remove(key),
    }
}

/// The newest position of each key (the last one given wins), in key order.
fn newest_by_key(mut puts: Vec<(&[u8], Pos)>) -> Vec<(&[u8], Pos)> {
    // Stable: a key's positions stay in the order given, so the last is its newest.
    puts.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&[u8], Pos)> = Vec::with_capacity(puts.len());
    for p in puts {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
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
        index: Arc<dyn Index>,
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
        let covered_before = covered_at(&*kv)?;
        // The located keys' newest writes over the whole replay, indexed once at the end:
        // the same keys as a checkpoint of the same records would index.
        let mut located: BTreeMap<Vec<u8>, Option<Pos>> = BTreeMap::new();
        let mut bulk: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        let (log, found) = SegmentLog::open(
            files,
            tuning.segment_bytes,
            covered_before.number,
            covered_before.at,
            |n, record, payload| {
                for (key, value, at) in decode_ops_at(&format!("log record {n}"), payload)? {
                    if index.located(&key) {
                        let pos = value.as_ref().map(|v| Pos {
                            segment: record.segment,
                            offset: record.offset + at as u64,
                            len: v.len() as u32,
                        });
                        located.insert(key, pos);
                    } else if index.bulk(&key) {
                        bulk.insert(key, value);
                    } else {
                        apply_one(&*kv, &key, &value)?;
                    }
                }
                Ok(())
            },
        )?;
        let puts: Vec<(&[u8], Pos)> = located
            .iter()
            .filter_map(|(k, p)| p.map(|p| (k.as_slice(), p)))
            .collect();
        let deletes: Vec<&[u8]> = located
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(k, _)| k.as_slice())
            .collect();
        let bulk: Vec<(&[u8], &Value)> = bulk.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        index.write_bulk(&*kv, &bulk)?;
        index.write(&*kv, &puts, &deletes)?;
        replayed += found.records;
        let covered_now = Covered {
            number: log.next(),
            at: log.end(),
        };
        if covered_now != covered_before {
            kv.sync()?;
            write_covered(&*kv, covered_now)?;
            kv.sync()?;
        }
        log.remove_covered(covered_now.number.min(index.floor()))?;
        let overlay = Arc::new(Overlay {
            kv,
            index,
            covered: Mutex::new(covered_now),
            log,
            tuning,
            state: Mutex::new(State {
                active: Map::new(),
                active_since: None,
                frozen: VecDeque::new(),
                ready: 0,
                pending: Vec::new(),
                cuts: Vec::new(),
                pending_located: Vec::new(),
                active_positions: Vec::new(),
                stop: false,
            }),
            changed: Condvar::new(),
            groups: Mutex::new(Groups {
                next: covered_now.number,
                unfrozen: covered_now.number,
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
        lock(&self.state).record(&*self.index, writes);
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
        s.record(&*self.index, [(key.to_vec(), None)]);
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
        let (ops, parts, froze, place) = {
            let mut s = lock(&self.state);
            while s.frozen.len() >= t.frozen_max && (freeze || s.active.len() >= t.active_keys_max)
            {
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            let ops = std::mem::take(&mut s.pending);
            let parts = split_records(&std::mem::take(&mut s.cuts), t.record_bytes_max);
            // Where the write will go, so where each located value will lie.
            let size: u64 = parts.iter().map(|p| (HEADER + p.len()) as u64).sum();
            let place = (!parts.is_empty()).then(|| self.log.placement(g.next, size));
            let located = std::mem::take(&mut s.pending_located);
            if let Some((segment, base)) = place {
                let mut starts = Vec::with_capacity(parts.len());
                let mut offset = base;
                for p in &parts {
                    starts.push(offset);
                    offset += (HEADER + p.len()) as u64;
                }
                for (key, at, len) in located {
                    let i = parts.partition_point(|p| p.end <= at);
                    let pos = Pos {
                        segment,
                        offset: starts[i] + (HEADER + at - parts[i].start) as u64,
                        len,
                    };
                    s.active_positions.push((key, pos));
                }
            }
            let due = s.active.len() >= t.freeze_keys
                || s.active_since
                    .is_some_and(|at| at.elapsed() >= t.freeze_after);
            let froze = (due || freeze) && s.frozen.len() < t.frozen_max;
            if froze {
                let end = g.next + parts.len() as u64;
                let layer = Layer {
                    map: std::mem::take(&mut s.active),
                    positions: std::mem::take(&mut s.active_positions),
                    groups: g.unfrozen..end,
                    end: match place {
                        Some((segment, base)) => Some((segment, base + size)),
                        None => self.log.end(),
                    },
                };
                s.active_since = None;
                s.frozen.push_back(Arc::new(layer));
                g.unfrozen = end;
            }
            (ops, parts, froze, place)
        };
        let payloads: Vec<&[u8]> = parts.iter().map(|p| &ops[p.clone()]).collect();
        let wrote = self.log.append(g.next, &payloads)?;
        assert_eq!(wrote, place, "the log wrote where it said it would");
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
            let mut deletes = Vec::new();
            let mut bulk = Vec::new();
            for (key, value) in &layer.map {
                if self.index.located(key) {
                    if value.is_none() {
                        deletes.push(key.as_slice());
                    }
                    continue;
                }
                if self.index.bulk(key) {
                    bulk.push((key.as_slice(), value));
                    continue;
                }
                apply_one(&*self.kv, key, value)?;
            }
            self.index.write_bulk(&*self.kv, &bulk)?;
            // The located keys still put at the layer's end, where their values lie.
            let puts = newest_by_key(
                layer
                    .positions
                    .iter()
                    .filter(|(k, _)| matches!(layer.map.get(k), Some(Some(_))))
                    .map(|(k, p)| (k.as_slice(), *p))
                    .collect(),
            );
            self.index.write(&*self.kv, &puts, &deletes)?;
            // The keys durable, then what they cover, durable too, and only then the
            // segments deleted: a record is never gone while a write it holds is missing.
            // Segments holding located values stay (`remove_segments_below`).
            let covered = Covered {
                number: layer.groups.end,
                at: layer.end,
            };
            self.kv.sync()?;
            write_covered(&*self.kv, covered)?;
            self.kv.sync()?;
            *lock(&self.covered) = covered;
            self.log
                .remove_covered(covered.number.min(self.index.floor()))?;
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

    /// Deletes the segments whose records are all below both `floor` (the first record of
    /// the oldest segment holding a value still indexed) and what sled covers. Answers how
    /// many.
    pub fn remove_segments_below(&self, floor: u64) -> Result<usize, StorageError> {
        let covered = lock(&self.covered).number;
        self.log.remove_covered(floor.min(covered))
    }

    /// The bytes of a located value, where the index says it lies.
    pub fn read_at(&self, pos: Pos) -> Result<Vec<u8>, StorageError> {
        self.log.read_at(pos)
    }

    /// The newest overlay write of `key`, without looking in sled: `Some(None)` when it
    /// deletes it, `None` when the overlay has no write of it.
    pub fn get_layers(&self, key: &[u8]) -> Option<Value> {
        layered(&lock(&self.state), key)
    }

    /// The overlay's newest writes in `lo..hi` (ascending, or descending with `rev`),
    /// deletions included, the first `limit` of them; sled is not read.
    pub fn layers_range(
        &self,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        rev: bool,
        limit: usize,
    ) -> Vec<(Vec<u8>, Value)> {
        if is_empty_range(&lo, &hi) || limit == 0 {
            return Vec::new();
        }
        // The first `limit` of each layer hold the first `limit` of them all: a key among
        // those is preceded, in any layer holding it, only by keys among those.
        let mut merged = Map::new();
        let s = lock(&self.state);
        for layer in s.frozen.iter().map(|l| &l.map).chain([&s.active]) {
            let range = layer.range((lo.clone(), hi.clone()));
            let firsts: Box<dyn Iterator<Item = _>> = if rev {
                Box::new(range.rev().take(limit))
            } else {
                Box::new(range.take(limit))
            };
            for (k, v) in firsts {
                merged.insert(k.clone(), v.clone());
            }
        }
        drop(s);
        let out: Box<dyn Iterator<Item = _>> = if rev {
            Box::new(merged.into_iter().rev())
        } else {
            Box::new(merged.into_iter())
        };
        out.take(limit).collect()
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
        let (overlay, _) =
            Overlay::recover(kv.clone(), Box::new(files), tuning, Arc::new(NoIndex)).unwrap();
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
