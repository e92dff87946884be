//! The write-ahead overlay (`store/overlay.rs`) against a model: two maps, `committed`
//! (every write so far) and `durable` (the writes as of the last group commit: its
//! records appended to the segment log and fdatasynced).
//!
//! Random sequences of puts, deletes, multi-write commits, compare-and-deletes, group
//! writes, checkpoints, crashes and clean restarts run on a real sled database with tiny
//! freeze thresholds, so layers freeze and are checkpointed every few steps. After every
//! step, `get` of every key and `range` (both directions, whole and bounded, with limits)
//! must answer exactly `committed`. After a crash (the overlay dropped without writing its
//! pending group), recovery must replay every log record sled does not cover and answer
//! exactly `durable`: nothing acknowledged is lost, and nothing that never reached a log
//! record comes back, even when a checkpoint had already written some keys into sled. The
//! same holds after a harsher crash that puts the whole data directory (sled and the log
//! beneath it) back as it was at the last group commit.
//!
//! No checkpointer thread runs: the test calls `checkpoint_ready` itself, so every run is
//! deterministic and a failure shrinks to a short sequence.

mod common;

use common::copy_dir;
use std::collections::BTreeMap;
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use creditsd::store::kv::{sled_range, Kv, KvIter};
use creditsd::store::overlay::{covered, Entry, NoIndex, Overlay, Tuning, Value, GROUP};
use creditsd::store::segment_log::FsLogFiles;
use creditsd::store::StorageError;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Key tags on both sides of the group records' `L` (never `L` itself).
const TAGS: [u8; 3] = [b'E', b'I', b'S'];
/// Suffix bytes: the lowest, a low one, a letter, the highest, so that keys are prefixes
/// of each other and sit on range edges.
const SUFFIX: [u8; 4] = [0x00, 0x01, b'a', 0xff];

/// Every key the test uses: a tag and up to two suffix bytes (63 keys).
fn key_space() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for tag in TAGS {
        keys.push(vec![tag]);
        for a in SUFFIX {
            keys.push(vec![tag, a]);
            for b in SUFFIX {
                keys.push(vec![tag, a, b]);
            }
        }
    }
    keys
}

/// Any key of the key space, or (half the time) one of a few hot keys, so that layers
/// often hold writes of the same key.
fn key() -> impl Strategy<Value = Vec<u8>> {
    let hot = vec![vec![b'E'], vec![b'E', 0x00], vec![b'I', 0xff], vec![b'S']];
    prop_oneof![prop::sample::select(hot), prop::sample::select(key_space())]
}

/// Short values over a tiny alphabet (empty included), so compare-and-delete often
/// guesses right.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

#[derive(Clone, Debug)]
enum Cmd {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// One `commit` of several writes (a key may repeat: the last write wins).
    Batch(Vec<(Vec<u8>, Value)>),
    /// `delete_if(key, expected)`; `None` expects the key's current value (or the empty
    /// value when it has none).
    DeleteIf(Vec<u8>, Option<Vec<u8>>),
    /// `write_group`, then sled's flush: what `Store::sync` does.
    Sync,
    Checkpoint,
    /// The overlay dropped with its pending writes, then sled reopened and recovered.
    Crash,
    /// Sync, checkpoint what is ready (as the checkpointer does at shutdown), reopen.
    Reopen,
    /// A crash that also loses every sled write since the last flush: the database
    /// directory goes back to its copy taken at that flush.
    PowerLoss,
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(k, v)| Cmd::Put(k, v)),
        2 => key().prop_map(Cmd::Delete),
        3 => prop::collection::vec((key(), prop::option::weighted(0.7, value())), 0..5)
            .prop_map(Cmd::Batch),
        3 => (key(), prop::option::of(value())).prop_map(|(k, e)| Cmd::DeleteIf(k, e)),
        5 => Just(Cmd::Sync),
        3 => Just(Cmd::Checkpoint),
        1 => Just(Cmd::Crash),
        1 => Just(Cmd::Reopen),
        1 => Just(Cmd::PowerLoss),
    ]
}

/// A bounded `range` read checked after a step.
#[derive(Clone, Debug)]
struct Probe {
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    rev: bool,
    limit: usize,
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        1 => Just(Unbounded),
        3 => key().prop_map(Included),
        3 => key().prop_map(Excluded),
    ]
}

fn probe() -> impl Strategy<Value = Probe> {
    (bound(), bound(), any::<bool>(), 0usize..6).prop_map(|(lo, hi, rev, limit)| Probe {
        lo,
        hi,
        rev,
        limit,
    })
}

/// Tiny thresholds, so layers freeze every few keys (or at every group, when
/// `freeze_after` is zero). `active_keys_max` never blocks: no checkpointer thread runs
/// to make room, so a blocked `write_group` would wait forever.
fn tuning() -> impl Strategy<Value = Tuning> {
    (1usize..=5, any::<bool>(), 1usize..=3).prop_map(|(freeze_keys, at_once, frozen_max)| Tuning {
        freeze_keys,
        freeze_after: if at_once {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        },
        frozen_max,
        active_keys_max: usize::MAX,
        record_bytes_max: creditsd::store::overlay::RECORD_BYTES_MAX,
        segment_bytes: 256,
    })
}

fn bound_key(b: &Bound<Vec<u8>>) -> Option<&Vec<u8>> {
    match b {
        Included(k) | Excluded(k) => Some(k),
        Unbounded => None,
    }
}

/// Keeps a probe on one side of the group records: a range across them would count
/// sled's `L` keys against its limit. Inverted and empty ranges stay as they are.
fn one_side(p: &Probe) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (mut lo, mut hi) = (p.lo.clone(), p.hi.clone());
    let below = bound_key(&lo).map_or(true, |k| k[0] < GROUP);
    let above = bound_key(&hi).map_or(true, |k| k[0] > GROUP);
    if below && above {
        if p.rev {
            lo = Included(vec![GROUP + 1]);
        } else {
            hi = Excluded(vec![GROUP]);
        }
    }
    (lo, hi)
}

fn entries<'a>(it: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<Entry> {
    it.map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The overlay over this test's own sled database, which the test flushes and copies.
struct DbKv(sled::Db);

impl Kv for DbKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.0.insert(key, value)?;
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.0.remove(key)?;
        Ok(())
    }
    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
        sled_range(&self.0, lo, hi, rev)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.0.flush()?;
        Ok(())
    }
}

/// Group records of an earlier release (`L‖n`) in sled.
fn legacy_group_records(db: &sled::Db) -> usize {
    db.scan_prefix([GROUP])
        .filter(|r| r.as_ref().unwrap().0.len() == 9)
        .count()
}

/// The log beneath the data directory, as the store keeps it.
fn log_files(dir: &Path) -> Box<FsLogFiles> {
    Box::new(FsLogFiles::open(&dir.join("log")).unwrap())
}

/// Everything the overlay answers must be exactly `model`.
fn check(overlay: &Overlay, model: &Model, probes: &[Probe]) -> Result<(), TestCaseError> {
    for k in key_space() {
        prop_assert_eq!(
            overlay.get(&k).unwrap(),
            model.get(&k).cloned(),
            "get {:?}",
            k
        );
    }
    let all = entries(model.iter());
    let mut all_rev = all.clone();
    all_rev.reverse();

    // The whole key space, the group records filtered out...
    for (rev, want) in [(false, &all), (true, &all_rev)] {
        let got: Vec<Entry> = overlay
            .range(Unbounded, Unbounded, rev, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.first() != Some(&GROUP))
            .collect();
        prop_assert_eq!(&got, want, "whole range, rev {}", rev);
    }
    // ...and read as the two sides of them.
    let mut got = overlay
        .range(Unbounded, Excluded(vec![GROUP]), false, usize::MAX)
        .unwrap();
    got.extend(
        overlay
            .range(Included(vec![GROUP + 1]), Unbounded, false, usize::MAX)
            .unwrap(),
    );
    prop_assert_eq!(&got, &all, "both sides of the group records");

    for p in probes {
        let (lo, hi) = one_side(p);
        // Filtered rather than `BTreeMap::range`, which panics on inverted bounds: those
        // must answer nothing.
        let bounds = (lo.clone(), hi.clone());
        let in_range = model.iter().filter(|(k, _)| bounds.contains(*k));
        let want = if p.rev {
            entries(in_range.rev().take(p.limit))
        } else {
            entries(in_range.take(p.limit))
        };
        let got = overlay
            .range(lo.clone(), hi.clone(), p.rev, p.limit)
            .unwrap();
        prop_assert_eq!(
            got,
            want,
            "range {:?}..{:?} rev {} limit {}",
            lo,
            hi,
            p.rev,
            p.limit
        );
    }
    Ok(())
}

/// Opens sled in `dir`. A database just dropped may still hold its file lock for a
/// moment (sled 0.34 releases it from a background thread: spacejam/sled#1234), so a
/// refused lock is retried for up to five seconds.
fn open_db(dir: &Path) -> sled::Db {
    let config = sled::Config::new().path(dir).flush_every_ms(None);
    let started = Instant::now();
    loop {
        match config.open() {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("opening sled: {e}"),
        }
    }
}

/// Opens sled and recovers the overlay, as `SledStore::open` does; recovery must replay
/// every log record sled does not cover, and cover them all.
fn open(dir: &Path, tuning: Tuning) -> Result<(sled::Db, Arc<Overlay>), TestCaseError> {
    let db = open_db(dir);
    let kv = Arc::new(DbKv(db.clone()));
    let (overlay, _) =
        Overlay::recover(kv.clone(), log_files(dir), tuning, Arc::new(NoIndex)).unwrap();
    prop_assert_eq!(
        legacy_group_records(&db),
        0,
        "legacy records left after recovery"
    );
    let segments = overlay.segments();
    let covered = covered(&*kv).unwrap();
    prop_assert!(
        segments.iter().rev().skip(1).all(|&s| s <= covered),
        "records uncovered after recovery: segments {:?}, covered {}",
        segments,
        covered
    );
    db.flush().unwrap();
    Ok((db, overlay))
}

fn apply(model: &mut Model, key: &[u8], value: &Value) {
    match value {
        Some(v) => model.insert(key.to_vec(), v.clone()),
        None => model.remove(key),
    };
}

fn run(tuning: Tuning, steps: &[(Cmd, Vec<Probe>)]) -> Result<(), TestCaseError> {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    // The database directory as of its last flush.
    let flushed = root.path().join("flushed");
    let (mut db, mut overlay) = open(&dir, tuning)?;
    copy_dir(&dir, &flushed);
    let mut committed = Model::new();
    let mut durable = Model::new();

    for (cmd, probes) in steps {
        match cmd {
            Cmd::Put(k, v) => {
                overlay.commit([(k.clone(), Some(v.clone()))]);
                committed.insert(k.clone(), v.clone());
            }
            Cmd::Delete(k) => {
                overlay.commit([(k.clone(), None)]);
                committed.remove(k);
            }
            Cmd::Batch(writes) => {
                overlay.commit(writes.clone());
                for (k, v) in writes {
                    apply(&mut committed, k, v);
                }
            }
            Cmd::DeleteIf(k, expected) => {
                let expected = match expected {
                    Some(e) => e.clone(),
                    None => committed.get(k).cloned().unwrap_or_default(),
                };
                let matches = committed.get(k) == Some(&expected);
                prop_assert_eq!(overlay.delete_if(k, &expected).unwrap(), matches);
                if matches {
                    committed.remove(k);
                }
            }
            Cmd::Sync => {
                overlay.write_group().unwrap();
                db.flush().unwrap();
                copy_dir(&dir, &flushed);
                durable = committed.clone();
            }
            Cmd::Checkpoint => {
                overlay.checkpoint_ready().unwrap();
                prop_assert_eq!(overlay.checkpoint_ready().unwrap(), 0, "ready twice");
            }
            Cmd::Crash => {
                // Pending writes go with the overlay. sled itself flushes when dropped,
                // so what reaches the disk is every sled write made so far: the group
                // records, and the keys checkpoints wrote (all of them in those records).
                drop(overlay);
                drop(db);
                (db, overlay) = open(&dir, tuning)?;
                copy_dir(&dir, &flushed);
                committed = durable.clone();
            }
            Cmd::Reopen => {
                overlay.write_group().unwrap();
                db.flush().unwrap();
                overlay.checkpoint_ready().unwrap();
                drop(overlay);
                drop(db);
                (db, overlay) = open(&dir, tuning)?;
                copy_dir(&dir, &flushed);
                durable = committed.clone();
            }
            Cmd::PowerLoss => {
                drop(overlay);
                drop(db);
                copy_dir(&flushed, &dir);
                (db, overlay) = open(&dir, tuning)?;
                copy_dir(&dir, &flushed);
                committed = durable.clone();
            }
        }
        check(&overlay, &committed, probes)?;
    }

    // Finally a crash: whatever the last step was, recovery answers `durable`.
    drop(overlay);
    drop(db);
    let (_db, overlay) = open(&dir, tuning)?;
    check(&overlay, &durable, &[])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random command sequences: reads always answer `committed`, recovery after a crash
    /// answers exactly `durable`.
    #[test]
    fn overlay_matches_the_model(
        tuning in tuning(),
        steps in prop::collection::vec((cmd(), prop::collection::vec(probe(), 2)), 1..60),
    ) {
        run(tuning, &steps)?;
    }
}

fn k(n: usize) -> Vec<u8> {
    format!("Eacct{n:02}").into_bytes()
}

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// Five groups of four writes; layers freeze at eight keys, so groups 0-1 make the first
/// layer and 2-3 the second. The first is checkpointed (its keys written into sled, the
/// covered number moved past its records), the second is left waiting, group 4 stays in the active layer, and
/// some writes never reach a group. After a crash, recovery replays groups 2, 3 and 4 over
/// the checkpointed keys, and the unsynced writes are gone.
#[test]
fn recovery_replays_the_groups_a_checkpoint_did_not_reach() {
    let tuning = Tuning {
        freeze_keys: 8,
        freeze_after: Duration::from_secs(3600),
        frozen_max: 2,
        active_keys_max: usize::MAX,
        record_bytes_max: creditsd::store::overlay::RECORD_BYTES_MAX,
        segment_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let kv = Arc::new(DbKv(db.clone()));
    let (overlay, replayed) =
        Overlay::recover(kv.clone(), log_files(dir.path()), tuning, Arc::new(NoIndex)).unwrap();
    assert_eq!(replayed, 0);

    let sync = |overlay: &Overlay| {
        overlay.write_group().unwrap();
        db.flush().unwrap();
    };

    // Groups 0 and 1: keys 0-7. The second group makes eight keys: a layer freezes.
    for group in 0..2 {
        overlay.commit((0..4).map(|i| (k(group * 4 + i), v("first"))));
        sync(&overlay);
    }
    assert_eq!(covered(&*kv).unwrap(), 0);
    assert_eq!(overlay.checkpoint_ready().unwrap(), 1);
    assert_eq!(
        covered(&*kv).unwrap(),
        2,
        "the checkpoint covered groups 0 and 1"
    );
    assert_eq!(db.get(k(0)).unwrap().as_deref(), Some(&b"first"[..]));

    // Groups 2 and 3: keys 8-13, and they overwrite key 0 and delete key 1, which sled
    // already holds. Eight keys again: a second layer freezes, and no checkpoint runs.
    overlay.commit((8..12).map(|i| (k(i), v("second"))));
    sync(&overlay);
    overlay.commit([(k(12), v("second")), (k(13), v("second"))]);
    overlay.commit([(k(0), v("overwritten")), (k(1), None)]);
    sync(&overlay);

    // Group 4: keys 16-19 and a delete of key 8, in the active layer.
    overlay.commit((16..20).map(|i| (k(i), v("third"))));
    overlay.commit([(k(8), None)]);
    sync(&overlay);
    assert_eq!(covered(&*kv).unwrap(), 2);

    // Never in a group record: lost in the crash.
    overlay.commit([(k(2), None), (k(30), v("unsynced"))]);
    assert_eq!(overlay.get(&k(30)).unwrap(), v("unsynced"));

    // The crash: the overlay goes with its pending writes; sled reopens.
    drop(overlay);
    drop(kv);
    drop(db);
    let db = open_db(dir.path());
    let kv = Arc::new(DbKv(db.clone()));
    let (overlay, replayed) =
        Overlay::recover(kv.clone(), log_files(dir.path()), tuning, Arc::new(NoIndex)).unwrap();
    assert_eq!(replayed, 3, "groups 2, 3 and 4");
    assert_eq!(covered(&*kv).unwrap(), 5);

    let mut want = BTreeMap::new();
    for i in 0..8 {
        want.insert(k(i), b"first".to_vec());
    }
    for i in 8..14 {
        want.insert(k(i), b"second".to_vec());
    }
    for i in 16..20 {
        want.insert(k(i), b"third".to_vec());
    }
    want.insert(k(0), b"overwritten".to_vec());
    want.remove(&k(1));
    want.remove(&k(8));
    let got: BTreeMap<_, _> = overlay
        .range(Unbounded, Unbounded, false, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.first() != Some(&GROUP))
        .collect();
    assert_eq!(got, want);
    assert_eq!(overlay.get(&k(2)).unwrap(), v("first"));
    assert_eq!(overlay.get(&k(30)).unwrap(), None);
}
