//! `creditsd migrate`: rewrites every record of an earlier layout into today's, so that
//! old layouts do not stay on disk forever. Opening the store needs none of it (every
//! older layout is read through `legacy.rs` where it is met, and the format marker is
//! upgraded at open, `format.rs`); after it, every record is in today's layout and every
//! answer is the same.
//!
//! Each kind of record is read page by page, as reads see it (the overlay over sled); a
//! record whose version byte is not today's is decoded (through its `decode_older`) and
//! written back in today's layout under the same key, through the overlay, one commit
//! and one `sync` per page: the store's own write path, so a crash part way leaves every
//! record readable, old or new, and a second run goes on where it stopped. A record that
//! does not decode stops the run, naming its key. A snapshot of an earlier layout is
//! stale (`Store::snapshot`): it is rebuilt from the log (`recovery::recover`) and written
//! in today's layout at the account's latest event. Events of an earlier release, kept in
//! sled, are moved into the log (`migrate_events`). Rewriting is idempotent: a second run
//! rewrites nothing.

use std::ops::Bound;
use std::time::{Duration, Instant};

use super::codec::{decode, display_key, encode, unseal, Record};
use super::format::STORE_FORMAT;
use super::overlay::Entry;
use super::records::{AccountRecordV2, EventRecordV3, FeedEntryRecordV2, IdemRecordV1};
use super::recovery::{recover, Start, Visit};
use super::runs::{self, EVENT};
use super::sled_store::{BASE, CURSOR, FEED, IDEM, SNAPSHOT, TOTALS};
use super::SledStore;
use super::{Append, BookTotals, StorageError, Store};

/// Records read, and rewritten, per page: one commit and one sync each.
const PAGE: usize = 512;

/// What one kind of record came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
    /// Records of this kind in the store.
    pub seen: u64,
    /// Of them, those of an earlier layout, now written in today's.
    pub rewritten: u64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The store format the marker said when the store opened (`format::UNMARKED`
    /// without one) and the one it says now.
    pub format_before: u32,
    pub format_after: u32,
    /// By kind of record, in the order they were migrated.
    pub kinds: Vec<Kind>,
    /// Copies of events deleted from sled once the log held them (`drop_moved_events`).
    pub event_copies_dropped: u64,
    /// Idempotency records deleted from sled (a key each, as releases before format 4
    /// kept them) once the index's blocks held them.
    pub idempotency_copies_dropped: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Records rewritten, of every kind.
    pub fn rewritten(&self) -> u64 {
        self.kinds.iter().map(|k| k.rewritten).sum()
    }
}

/// Rewrites every record of `store` that is of an earlier layout, makes sure the marker
/// says `STORE_FORMAT`, and closes the store: everything written is in sled (and the
/// events in the log) when it answers, and the store takes no more writes.
pub fn migrate(store: &SledStore) -> Result<Report, StorageError> {
    let started = Instant::now();
    let kinds = vec![
        migrate_events(store)?,
        migrate_snapshots(store)?,
        rewrite_older::<AccountRecordV2>(store, BASE, "base snapshots")?,
        rewrite_older::<FeedEntryRecordV2>(store, FEED, "feed entries")?,
        migrate_idempotency(store)?,
        rewrite_older::<BookTotals>(store, TOTALS, "book totals")?,
        rewrite_older::<u64>(store, CURSOR, "feed cursors")?,
    ];
    // Opening the store upgraded the marker already; this is the last step in case it
    // ever does not.
    store.mark_format()?;
    // Every layer checkpointed: the moved events' runs are durable in sled.
    store.close()?;
    let event_copies_dropped = drop_moved_events(store)?;
    let idempotency_copies_dropped = drop_moved_idempotency(store)?;
    let report = Report {
        format_before: store.format_at_open(),
        format_after: store.format()?,
        kinds,
        event_copies_dropped,
        idempotency_copies_dropped,
        elapsed: started.elapsed(),
    };
    debug_assert_eq!(report.format_after, STORE_FORMAT);
    Ok(report)
}

/// Events. Today an event stays where it was written, in the write-ahead log, and sled
/// holds runs saying where (`runs.rs`); earlier releases kept each event in sled under
/// `E‖account‖0‖seq` (in any layout, today's included), read beside the runs. Each of
/// those is moved: written again, in today's layout, through the overlay, so into the log,
/// where the checkpointer indexes it in a run; unless a run locates it already (a run of
/// migrate that stopped before the end). Its copy in sled goes once the store is closed
/// (`drop_moved_events`). "seen" counts the events found in sled.
fn migrate_events(store: &SledStore) -> Result<Kind, StorageError> {
    let mut kind = Kind {
        name: "events",
        seen: 0,
        rewritten: 0,
    };
    each_in_sled(store, EVENT, |page| {
        let mut writes = Vec::new();
        for (key, bytes) in page {
            kind.seen += 1;
            if located(store, &key)? {
                continue;
            }
            let record: EventRecordV3 = decode(&key, &bytes)?;
            writes.push((key, encode(&record)));
        }
        kind.rewritten += writes.len() as u64;
        commit(store, writes)
    })?;
    Ok(kind)
}

/// Whether a run locates the event of `key` in the log.
fn located(store: &SledStore, key: &[u8]) -> Result<bool, StorageError> {
    let Some((account, seq)) = runs::parse_event_key(key) else {
        return Err(StorageError::Corrupt {
            key: display_key(key),
            reason: "not an event key".into(),
        });
    };
    Ok(runs::find(store.kv(), account, seq)?.is_some())
}

/// With the store closed (every layer checkpointed, its runs durable): deletes the copy in
/// sled of each event a run now locates in the log, and makes that durable. Straight in
/// sled, as the index deletes an earlier release's copy when an event is deleted
/// (`runs::EventIndex`): through the overlay, a delete of the key would delete the event.
/// Reads look at the runs before such copies, so nothing they answer changes.
fn drop_moved_events(store: &SledStore) -> Result<u64, StorageError> {
    drop_from_sled(store, EVENT, |key| located(store, key))
}

/// Deletes each key under `tag` straight from sled that `moved` says is held elsewhere
/// now, and makes that durable; answers how many.
fn drop_from_sled(
    store: &SledStore,
    tag: u8,
    moved: impl Fn(&[u8]) -> Result<bool, StorageError>,
) -> Result<u64, StorageError> {
    let mut dropped = 0;
    each_in_sled(store, tag, |page| {
        for (key, _) in page {
            if moved(&key)? {
                store.kv().remove(&key)?;
                dropped += 1;
            }
        }
        Ok(())
    })?;
    if dropped > 0 {
        store.kv().sync()?;
    }
    Ok(dropped)
}

/// Idempotency records. Today they lie in the index's blocks (`idem_index.rs`); earlier
/// releases kept one sled key each (`I‖account‖0‖key`), read beside the blocks. Each is
/// written again through the overlay, so the checkpointer puts it in a block, and its sled
/// key is deleted once the store is closed (`drop_moved_idempotency`).
fn migrate_idempotency(store: &SledStore) -> Result<Kind, StorageError> {
    rewrite_if::<IdemRecordV1>(store, IDEM, "idempotency records", |_| true)
}

/// With the store closed (every layer checkpointed, the blocks durable): deletes the sled
/// key of each idempotency record the index holds, and makes that durable.
fn drop_moved_idempotency(store: &SledStore) -> Result<u64, StorageError> {
    drop_from_sled(store, IDEM, |key| {
        let hash = super::idem_index::digest(key);
        let index = store.idempotency_index();
        Ok(index.lookup(store.kv(), &hash)?.is_some())
    })
}

/// The records under `tag`, each of type `R`: those whose version is not `R::VERSION`
/// are decoded and written again in it.
fn rewrite_older<R: Record>(
    store: &SledStore,
    tag: u8,
    name: &'static str,
) -> Result<Kind, StorageError> {
    rewrite_if::<R>(store, tag, name, |version| version != R::VERSION)
}

/// The records under `tag`, each of type `R`: those whose version byte `rewrite` picks are
/// decoded and written again, in today's version, through the overlay.
fn rewrite_if<R: Record>(
    store: &SledStore,
    tag: u8,
    name: &'static str,
    rewrite: impl Fn(u8) -> bool,
) -> Result<Kind, StorageError> {
    let mut kind = Kind {
        name,
        seen: 0,
        rewritten: 0,
    };
    each_page(store, tag, |page| {
        let mut writes = Vec::new();
        for (key, bytes) in page {
            kind.seen += 1;
            let (version, _) = unseal(&key, &bytes)?;
            if rewrite(version) {
                let record: R = decode(&key, &bytes)?;
                writes.push((key, encode(&record)));
            }
        }
        kind.rewritten += writes.len() as u64;
        commit(store, writes)
    })?;
    Ok(kind)
}

/// Account snapshots: one of an earlier layout is stale (it lacks state its log has), so
/// it is not converted but rebuilt: the account's replay from its base, written as its
/// snapshot in today's layout (through `Store::append`, as activation writes one).
fn migrate_snapshots(store: &SledStore) -> Result<Kind, StorageError> {
    let mut kind = Kind {
        name: "account snapshots",
        seen: 0,
        rewritten: 0,
    };
    each_page(store, SNAPSHOT, |page| {
        let mut stale = Vec::new();
        for (key, bytes) in page {
            kind.seen += 1;
            let (version, _) = unseal(&key, &bytes)?;
            if version < AccountRecordV2::VERSION {
                stale.push(String::from_utf8_lossy(&key[1..]).into_owned());
            } else if version > AccountRecordV2::VERSION {
                // Unknown: the codec's error, naming the key.
                decode::<AccountRecordV2>(&key, &bytes)?;
            }
        }
        for id in &stale {
            let Some(r) = recover(store, id, Start::Base, |_, _| Ok(Visit::Continue))? else {
                return Err(StorageError::Corrupt {
                    key: format!("S{id}"),
                    reason: "a snapshot of an earlier layout, and no events to rebuild it from"
                        .into(),
                });
            };
            store.append(
                id,
                Append {
                    snapshot: Some(&r.account),
                    ..Default::default()
                },
            )?;
        }
        kind.rewritten += stale.len() as u64;
        if !stale.is_empty() {
            store.sync()?;
        }
        Ok(())
    })?;
    Ok(kind)
}

/// Calls `f` on each page of the keys under `tag` in sled itself (not the overlay), in
/// key order; the next page starts after the last key seen.
fn each_in_sled(
    store: &SledStore,
    tag: u8,
    mut f: impl FnMut(Vec<Entry>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let lo = match after.take() {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included(vec![tag]),
        };
        let page: Vec<Entry> = store
            .kv()
            .range(lo, Bound::Excluded(vec![tag + 1]), false)
            .take(PAGE)
            .collect::<Result<_, _>>()?;
        let full = page.len() == PAGE;
        after = page.last().map(|(k, _)| k.clone());
        f(page)?;
        if !full {
            return Ok(());
        }
    }
}

/// Calls `f` on each page of the records under `tag`, in key order. Keys are not
/// changed by `f` (only values), so the next page starts after the last key seen.
fn each_page(
    store: &SledStore,
    tag: u8,
    mut f: impl FnMut(Vec<Entry>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.raw_page(tag, after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        after = page.last().map(|(k, _)| k.clone());
        f(page)?;
        if !full {
            return Ok(());
        }
    }
}

/// One page's rewrites: one overlay commit, made durable.
fn commit(store: &SledStore, writes: Vec<Entry>) -> Result<(), StorageError> {
    if writes.is_empty() {
        return Ok(());
    }
    store.rewrite(writes);
    store.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::FORMAT_KEY;
    use crate::store::idem_index;
    use crate::store::kv::{Kv, SledKv};
    use crate::store::overlay::COVERED_KEY;
    use crate::store::records::{
        CoveredRecordV2, IdemBlockRecordV1, IdemChunkRecordV1, RunRecordV1,
    };
    use crate::store::segment_log::{FsLogFiles, LogFiles};
    use crate::store::sled_store::WAKEUP;
    use std::ops::Bound;
    use std::path::Path;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// The version byte each kind of key is written in today (`None`: no record, an
    /// empty value).
    fn today(key: &[u8]) -> Option<u8> {
        match key[0] {
            EVENT => Some(EventRecordV3::VERSION),
            runs::RUN => Some(RunRecordV1::VERSION),
            SNAPSHOT | BASE => Some(AccountRecordV2::VERSION),
            FEED => Some(FeedEntryRecordV2::VERSION),
            IDEM => Some(IdemRecordV1::VERSION),
            idem_index::TAG => Some(match key[1] {
                0 => IdemBlockRecordV1::VERSION,
                1 => IdemChunkRecordV1::VERSION,
                _ => <i64 as Record>::VERSION,
            }),
            TOTALS => Some(BookTotals::VERSION),
            CURSOR => Some(<u64 as Record>::VERSION),
            _ if key == COVERED_KEY => Some(CoveredRecordV2::VERSION),
            _ if key == FORMAT_KEY => Some(1),
            WAKEUP => None,
            _ => panic!("a key of no known kind: {key:?}"),
        }
    }

    /// Every key of the store in `dir`, by version byte: (today's, older).
    fn versions(dir: &Path) -> (Vec<String>, Vec<String>) {
        let kv = SledKv::open(dir, 1 << 20).unwrap();
        let (mut current, mut older) = (Vec::new(), Vec::new());
        for entry in kv.range(Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = entry.unwrap();
            let name = super::super::codec::display_key(&k);
            if k[0] == COVERED_KEY[0] && k.len() == 9 {
                // A group record of an earlier release (`L‖n`): replayed at open.
                older.push(format!("{name} (group record)"));
                continue;
            }
            match today(&k) {
                None => assert!(v.is_empty(), "{name}"),
                Some(version) => {
                    let (found, _) = unseal(&k, &v).unwrap();
                    if found == version {
                        current.push(name);
                    } else {
                        older.push(format!("{name} v{found}"));
                    }
                }
            }
        }
        (current, older)
    }

    /// The stores of release 0.1.0 (`tests/fixtures/v0.1.0`): after migrate, every record
    /// read from sled is in today's layout; a second run rewrites nothing.
    #[test]
    fn every_record_of_the_fixture_is_in_todays_layout_after_migrate() {
        for kind in ["stopped", "killed"] {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/v0.1.0")
                .join(kind)
                .join("data");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(&fixture, dir.path());
            let (_, older) = versions(dir.path());
            assert!(older.len() > 10, "{kind}: {older:?}");
            // The fixture's bindings, (account, key), a sled key each.
            let bindings: Vec<(String, String)> = {
                let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
                crate::store::kv::scan_prefix(&kv, &[IDEM])
                    .map(|e| {
                        let k = e.unwrap().0;
                        let nul = k.iter().position(|&b| b == 0).unwrap();
                        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                        (text(&k[1..nul]), text(&k[nul + 1..]))
                    })
                    .collect()
            };
            assert!(bindings.len() > 10, "{kind}: {bindings:?}");

            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.format_at_open(), 1);
            let report = migrate(&store).unwrap();
            let formats = (report.format_before, report.format_after);
            assert_eq!(formats, (1, STORE_FORMAT));
            let count = |name: &str| {
                let k = report.kinds.iter().find(|k| k.name == name).unwrap();
                (k.seen, k.rewritten)
            };
            assert_eq!(count("account snapshots"), (2, 2), "{kind}: {report:?}");
            let (events, rewritten) = count("events");
            assert!(events > 40 && rewritten == events, "{kind}: {report:?}");
            assert_eq!(report.event_copies_dropped, events, "{kind}");
            // Those, and any the open replayed from the killed store's group records.
            let (seen, moved) = count("idempotency records");
            assert!(
                seen >= bindings.len() as u64 && moved == seen,
                "{kind}: {report:?}"
            );
            assert_eq!(report.idempotency_copies_dropped, seen, "{kind}");
            drop(store);

            // In sled: no event left, and every other record in today's version.
            let (current, older) = versions(dir.path());
            assert_eq!(older, Vec::<String>::new(), "{kind}");
            assert!(!current.iter().any(|k| k.starts_with('E')), "{current:?}");
            assert!(!current.iter().any(|k| k.starts_with('I')), "{current:?}");
            // In the log: every event a run points to, in today's version.
            let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
            let files = FsLogFiles::open(&dir.path().join("log")).unwrap();
            let mut in_log = 0;
            for entry in crate::store::kv::scan_prefix(&kv, &[runs::RUN]) {
                let (k, v) = entry.unwrap();
                let run: RunRecordV1 = decode(&k, &v).unwrap();
                for (segment, offset, len) in run.events {
                    let bytes = files.read_at(segment, offset, len).unwrap();
                    let (version, _) = unseal(b"E", &bytes).unwrap();
                    assert_eq!(version, EventRecordV3::VERSION, "{kind}");
                    in_log += 1;
                }
            }
            assert_eq!(in_log, events, "{kind}");
            drop((kv, files));

            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.format_at_open(), STORE_FORMAT);
            let again = migrate(&store).unwrap();
            assert_eq!(again.rewritten(), 0, "{kind}: {again:?}");
            let events_again = again.kinds.iter().find(|k| k.name == "events").unwrap();
            assert_eq!(events_again.seen, 0, "events left in sled");
            assert_eq!(again.event_copies_dropped, 0);
            assert_eq!(again.idempotency_copies_dropped, 0);
            // Every binding still answers, from the index's blocks.
            for (account, key) in &bindings {
                let rec = store.idempotency(account, key).unwrap();
                assert!(rec.is_some(), "{kind}: {account} {key}");
            }
            // The same books as before, from snapshots in today's layout.
            let snapshot = store.snapshot("fx-2").unwrap().expect("rebuilt");
            let replayed = recover(&store, "fx-2", Start::Base, |_, _| Ok(Visit::Continue))
                .unwrap()
                .unwrap();
            assert_eq!(snapshot, replayed.account, "{kind}");
            assert_eq!(crate::audit::audit(&store).problems, Vec::<String>::new());
        }
    }
}
