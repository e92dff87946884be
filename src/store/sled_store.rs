//! `Store` over one sled tree. Each mutation's writes (its events, idempotency records,
//! feed entries, snapshot, totals) are one overlay commit, so they land in one group record
//! together or not at all (`overlay.rs`).

use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::{Batch, Db};

use super::codec::{decode, display_key, encode};
use super::overlay::{Overlay, Tuning, Value};
use super::records::{AccountRecordV1, EventRecordV2, FeedEntryRecordV1, IdemRecordV1};
use super::totals::{self, BookTotals};
use super::{Append, FeedEntry, IdemRecord, StorageError, Store};
use crate::domain::{Account, Event, Ts};

const EVENT: u8 = b'E';
const SNAPSHOT: u8 = b'S';
const IDEM: u8 = b'I';
const FEED: u8 = b'F';
const WAKEUP: u8 = b'W';
const CURSOR: u8 = b'C';
const BASE: u8 = b'B';
const TOTALS: u8 = b'T';

pub struct SledStore {
    db: Db,
    /// Every write goes through it; every read looks at it first.
    overlay: Arc<Overlay>,
    /// Taken by `close` (or drop), which waits for it.
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// sled's data file, fsynced after each flush (see `Store::sync`).
    data_file: File,
    /// sled's blob directory and the blob files in it already fsynced (`sync_blobs`).
    blobs_dir: std::path::PathBuf,
    blobs_synced: Mutex<std::collections::HashSet<std::ffi::OsString>>,
    /// Feed ids are handed out and written under this lock so that ids become visible in
    /// order; only the rare mutations that notify take it, never a plain debit.
    feed_lock: Mutex<()>,
    feed_next: AtomicU64,
    /// The on-disk totals of each shard (`store::totals`), as last written. A shard's lock
    /// is held from reading its value to applying the batch that writes the new one.
    totals: Vec<Mutex<BookTotals>>,
}

fn event_key(account: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 10);
    k.push(EVENT);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn account_prefix(tag: u8, account: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 2);
    k.push(tag);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k
}

fn snapshot_key(account: &str) -> Vec<u8> {
    let mut k = vec![SNAPSHOT];
    k.extend_from_slice(account.as_bytes());
    k
}

fn base_key(account: &str) -> Vec<u8> {
    let mut k = vec![BASE];
    k.extend_from_slice(account.as_bytes());
    k
}

fn idem_key(account: &str, key: &str) -> Vec<u8> {
    let mut k = account_prefix(IDEM, account);
    k.extend_from_slice(key.as_bytes());
    k
}

fn wakeup_key(at: Ts, account: &str) -> Vec<u8> {
    let mut k = vec![WAKEUP];
    // Offset so that order of bytes is order of instants (instants are >= 0 anyway).
    k.extend_from_slice(&((at.0 as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(account.as_bytes());
    k
}

fn cursor_key(name: &str) -> Vec<u8> {
    let mut k = vec![CURSOR];
    k.extend_from_slice(name.as_bytes());
    k
}

fn totals_key(shard: usize) -> [u8; 2] {
    [TOTALS, shard as u8]
}

/// Every key that starts with `tag`.
fn prefix(tag: u8) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(vec![tag]), Bound::Excluded(vec![tag + 1]))
}

fn feed_key(id: u64) -> [u8; 9] {
    let mut k = [FEED; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl SledStore {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Io(format!("creating {}: {e}", dir.display())))?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Our journal decides when to flush (every group in sync mode, every interval in
            // periodic mode); sled's own timer thread would only add unasked-for fsyncs and
            // hold the database open for a moment after we drop it.
            .flush_every_ms(None)
            // LowSpace (the default) rewrites live pages out of fragmented segments eagerly;
            // under a stream of small random updates that was most of the bytes written.
            .mode(sled::Mode::HighThroughput);
        // sled 0.34's I/O threads can hold a dropped database's file lock for a moment
        // (spacejam/sled#1234): a reopen in the same process waits for it, up to 5 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match config.open() {
                // sled reports it as `ErrorKind::Other`, recognisable by its message only.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    return Err(StorageError::Locked {
                        path: dir.join("db").display().to_string(),
                    })
                }
                other => break other?,
            }
        };
        let data_path = dir.join("db");
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", data_path.display())))?;
        // First of all: the group records a previous run left hold writes that may not be
        // in their keys yet, and everything below reads those keys.
        let started = std::time::Instant::now();
        let (overlay, replayed) = Overlay::recover(&db, Tuning::default())?;
        let feed_next = match db.scan_prefix([FEED]).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                u64::from_be_bytes(k[1..9].try_into().map_err(|_| StorageError::Corrupt {
                    key: display_key(&k),
                    reason: "feed key is not 9 bytes".into(),
                })?) + 1
            }
            None => 1,
        };
        let totals = load_totals(&db)?;
        let checkpointer = {
            let overlay = overlay.clone();
            std::thread::Builder::new()
                .name("creditsd-checkpoint".into())
                .spawn(move || {
                    if let Err(e) = overlay.checkpoint_loop() {
                        crate::fail_stop(&format!("checkpoint: {e}"));
                    }
                })
                .map_err(|e| StorageError::Io(format!("spawning the checkpointer: {e}")))?
        };
        let store = SledStore {
            db,
            overlay,
            checkpointer: Mutex::new(Some(checkpointer)),
            data_file,
            blobs_dir: dir.join("blobs"),
            blobs_synced: Mutex::default(),
            feed_lock: Mutex::new(()),
            feed_next: AtomicU64::new(feed_next),
            totals: totals.into_iter().map(Mutex::new).collect(),
        };
        if replayed > 0 {
            store.sync_files()?;
            tracing::info!(
                groups = replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed the write-ahead group records left by the previous run"
            );
        }
        Ok(store)
    }

    /// Decodes the record `R` at `key` into what it stores.
    fn get_decoded<R: super::codec::Record + Into<T>, T>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.overlay.get(key)? {
            Some(v) => decode::<R>(key, &v).map(|r| Some(r.into())),
            None => Ok(None),
        }
    }

    /// Decodes up to `limit` records in a key range (descending with `rev`).
    fn decode_range<R: super::codec::Record + Into<T>, T>(
        &self,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        rev: bool,
        limit: usize,
    ) -> Result<Vec<T>, StorageError> {
        self.overlay
            .range(range.0, range.1, rev, limit)?
            .iter()
            .map(|(k, v)| decode::<R>(k, v).map(R::into))
            .collect()
    }
}

impl Drop for SledStore {
    /// Closes the store if nobody did (see `Store::close`).
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the store; its group records will be replayed at the next open");
        }
    }
}

/// Reads the totals shards. A database written before they existed (events but no `T`
/// key) gets them rebuilt once from every event, and written.
fn load_totals(db: &Db) -> Result<Vec<BookTotals>, StorageError> {
    let mut shards = vec![BookTotals::default(); totals::SHARDS];
    let mut found = false;
    for (i, shard) in shards.iter_mut().enumerate() {
        if let Some(v) = db.get(totals_key(i))? {
            *shard = decode(&totals_key(i), &v)?;
            found = true;
        }
    }
    if found || db.scan_prefix([SNAPSHOT]).next().is_none() {
        return Ok(shards);
    }
    // Every account has a snapshot (creation writes one); its latest state is that
    // snapshot plus the log after it, as activation reads it. A pruned log (`history.rs`)
    // only ever loses events below the snapshot, so this holds after pruning too.
    let started = std::time::Instant::now();
    let mut batch = Batch::default();
    for kv in db.scan_prefix([SNAPSHOT]) {
        let (k, v) = kv?;
        let mut acct: Account = decode::<AccountRecordV1>(&k, &v)?.into();
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        let tail = db.range(event_key(&id, acct.seq.saturating_add(1))..=event_key(&id, u64::MAX));
        for kv in tail {
            let (ek, ev) = kv?;
            let ev: Event = decode::<EventRecordV2>(&ek, &ev)?.into();
            crate::replaying(|| acct.apply(&ev)).map_err(|reason| StorageError::Corrupt {
                key: display_key(&ek),
                reason,
            })?;
        }
        shards[totals::shard_of(&id)].add(&BookTotals::of(&acct));
    }
    for (i, shard) in shards.iter().enumerate() {
        batch.insert(&totals_key(i)[..], encode(shard));
    }
    db.apply_batch(batch)?;
    db.flush()?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt the book totals from every account (a database from before they were kept)"
    );
    Ok(shards)
}

impl SledStore {
    /// Commits `writes`, with the account's totals shard moved by `events` in the same
    /// commit. The shard's lock is held until the commit, so shard values reach the
    /// overlay in the order they were computed.
    fn commit_with_totals(
        &self,
        account: &str,
        events: &[Event],
        mut writes: Vec<(Vec<u8>, Value)>,
    ) {
        let mut delta = BookTotals::default();
        for ev in events {
            delta.add(&totals::delta(ev));
        }
        if delta.is_zero() {
            return self.overlay.commit(writes);
        }
        let shard = totals::shard_of(account);
        let mut sum = self.totals[shard].lock().unwrap_or_else(|p| p.into_inner());
        let mut next = *sum;
        next.add(&delta);
        writes.push((totals_key(shard).to_vec(), Some(encode(&next))));
        self.overlay.commit(writes);
        *sum = next;
    }
}

/// How long a write that carried a snapshot took (encoding it and applying its batch).
fn record_snapshot(started: Option<std::time::Instant>) {
    if let Some(t) = started {
        metrics::histogram!(crate::metrics::SNAPSHOT_SECONDS).record(t.elapsed().as_secs_f64());
    }
}

impl Store for SledStore {
    fn append(&self, account: &str, a: Append<'_>) -> Result<(), StorageError> {
        let snapshot_started = a.snapshot.map(|_| std::time::Instant::now());
        let mut writes: Vec<(Vec<u8>, Value)> = Vec::with_capacity(a.events.len() + 3);
        for ev in a.events {
            writes.push((
                event_key(account, ev.seq),
                Some(encode(&EventRecordV2::from(ev))),
            ));
        }
        for (key, rec) in &a.idempotency {
            writes.push((
                idem_key(account, key),
                Some(encode(&IdemRecordV1::from(rec))),
            ));
        }
        if let Some(acct) = a.snapshot {
            writes.push((
                snapshot_key(account),
                Some(encode(&AccountRecordV1::from(acct))),
            ));
        }
        if let Some((old, new)) = a.wakeup {
            if let Some(old) = old {
                writes.push((wakeup_key(old, account), None));
            }
            writes.push((wakeup_key(new, account), Some(Vec::new())));
        }
        let notices: Vec<_> = a
            .events
            .iter()
            .flat_map(|ev| ev.notices().into_iter().map(move |n| (ev, n)))
            .collect();
        if notices.is_empty() {
            self.commit_with_totals(account, a.events, writes);
            record_snapshot(snapshot_started);
            return Ok(());
        }
        let _order = self.feed_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut id = self.feed_next.load(Ordering::Acquire);
        for (ev, notice) in notices {
            let entry = FeedEntry {
                id,
                account: account.to_string(),
                seq: ev.seq,
                at: ev.at,
                notice,
                balances: ev.after,
                held: ev.held_after,
            };
            writes.push((
                feed_key(id).to_vec(),
                Some(encode(&FeedEntryRecordV1::from(&entry))),
            ));
            id += 1;
        }
        self.commit_with_totals(account, a.events, writes);
        self.feed_next.store(id, Ordering::Release);
        drop(_order);
        record_snapshot(snapshot_started);
        Ok(())
    }

    fn totals(&self) -> BookTotals {
        let mut sum = BookTotals::default();
        for shard in &self.totals {
            sum.add(&shard.lock().unwrap_or_else(|p| p.into_inner()));
        }
        sum
    }

    fn snapshot(&self, account: &str) -> Result<Option<Account>, StorageError> {
        self.get_decoded::<AccountRecordV1, _>(&snapshot_key(account))
    }

    fn events_after(&self, account: &str, after: u64) -> Result<Vec<Event>, StorageError> {
        let start = event_key(account, after.saturating_add(1));
        let end = event_key(account, u64::MAX);
        self.decode_range::<EventRecordV2, _>(
            (Bound::Included(start), Bound::Included(end)),
            false,
            usize::MAX,
        )
    }

    fn events_before(
        &self,
        account: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        let start = event_key(account, 0);
        let end = event_key(account, before);
        self.decode_range::<EventRecordV2, _>(
            (Bound::Included(start), Bound::Excluded(end)),
            true,
            limit,
        )
    }

    fn event(&self, account: &str, seq: u64) -> Result<Option<Event>, StorageError> {
        self.get_decoded::<EventRecordV2, _>(&event_key(account, seq))
    }

    fn idempotency(&self, account: &str, key: &str) -> Result<Option<IdemRecord>, StorageError> {
        self.get_decoded::<IdemRecordV1, _>(&idem_key(account, key))
    }

    fn prune_idempotency(&self, cutoff: Ts) -> Result<u64, StorageError> {
        let mut n = 0;
        let (lo, hi) = prefix(IDEM);
        self.overlay.scan(lo, hi, false, |k, v| {
            let rec: IdemRecord = decode::<IdemRecordV1>(&k, &v)?.into();
            // Compared and deleted at once, so a key re-bound meanwhile is not deleted.
            if rec.at < cutoff && self.overlay.delete_if(&k, &v)? {
                n += 1;
            }
            Ok(true)
        })?;
        Ok(n)
    }

    fn accounts(&self) -> Result<Vec<String>, StorageError> {
        let (lo, hi) = prefix(SNAPSHOT);
        let mut out = Vec::new();
        self.overlay.scan(lo, hi, false, |k, _| {
            out.push(String::from_utf8_lossy(&k[1..]).into_owned());
            Ok(true)
        })?;
        Ok(out)
    }

    fn accounts_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let (lo, hi) = prefix(SNAPSHOT);
        let lo = match after {
            Some(a) => Bound::Excluded(snapshot_key(a)),
            None => lo,
        };
        let mut out = Vec::new();
        if limit > 0 {
            self.overlay.scan(lo, hi, false, |k, _| {
                out.push(String::from_utf8_lossy(&k[1..]).into_owned());
                Ok(out.len() < limit)
            })?;
        }
        Ok(out)
    }

    fn remove_wakeup(&self, account: &str, at: Ts) -> Result<(), StorageError> {
        self.overlay.commit([(wakeup_key(at, account), None)]);
        Ok(())
    }

    fn due_accounts(&self, now: Ts, limit: usize) -> Result<Vec<(Ts, String)>, StorageError> {
        let end = wakeup_key(now.plus_millis(1), "");
        let mut out = Vec::new();
        let found = self.overlay.range(
            Bound::Included(vec![WAKEUP]),
            Bound::Excluded(end),
            false,
            limit,
        )?;
        for (k, _) in found {
            let at =
                Ts((u64::from_be_bytes(k[1..9].try_into().expect("8 bytes")) ^ (1 << 63)) as i64);
            out.push((at, String::from_utf8_lossy(&k[9..]).into_owned()));
        }
        Ok(out)
    }

    fn feed_after(
        &self,
        after: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StorageError> {
        if after.saturating_add(1) >= below {
            return Ok(Vec::new());
        }
        self.decode_range::<FeedEntryRecordV1, _>(
            (
                Bound::Included(feed_key(after.saturating_add(1)).to_vec()),
                Bound::Excluded(feed_key(below).to_vec()),
            ),
            false,
            limit,
        )
    }

    fn feed_next_id(&self) -> u64 {
        self.feed_next.load(Ordering::Acquire)
    }

    fn prune_feed(&self, below: u64, cutoff: Ts) -> Result<u64, StorageError> {
        // Deleted in chunks: a long backlog never becomes one huge batch.
        const CHUNK: usize = 1000;
        let newest = self.feed_next.load(Ordering::Acquire).saturating_sub(1);
        let mut n = 0;
        loop {
            let oldest = self.overlay.range(
                Bound::Included(feed_key(0).to_vec()),
                Bound::Excluded(feed_key(newest).to_vec()),
                false,
                CHUNK,
            )?;
            let mut deletes = Vec::new();
            for (k, v) in &oldest {
                let entry: FeedEntry = decode::<FeedEntryRecordV1>(k, v)?.into();
                if entry.id >= below && entry.at >= cutoff {
                    break;
                }
                deletes.push((k.clone(), None));
            }
            let done = deletes.len() < CHUNK;
            n += deletes.len() as u64;
            self.overlay.commit(deletes);
            if done {
                return Ok(n);
            }
        }
    }

    fn feed_cursor(&self, name: &str) -> Result<Option<u64>, StorageError> {
        self.get_decoded::<u64, _>(&cursor_key(name))
    }

    fn set_feed_cursor(&self, name: &str, id: u64) -> Result<(), StorageError> {
        self.overlay.commit([(cursor_key(name), Some(encode(&id)))]);
        Ok(())
    }

    fn base(&self, account: &str) -> Result<Option<Account>, StorageError> {
        self.get_decoded::<AccountRecordV1, _>(&base_key(account))
    }

    fn prune_history(&self, account: &str, from: u64, base: &Account) -> Result<(), StorageError> {
        let mut writes = vec![(
            base_key(account),
            Some(encode(&AccountRecordV1::from(base))),
        )];
        writes.extend((from..=base.seq).map(|seq| (event_key(account, seq), None)));
        self.overlay.commit(writes);
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.overlay.write_group()?;
        self.sync_files()
    }

    /// The checkpointer writes every layer, the last one included, then stops, and sled
    /// is flushed and fsynced, so the next open replays nothing. Should any of it fail,
    /// the group records are still there and the next open replays them. A second call
    /// (drop after close) only syncs.
    fn close(&self) -> Result<(), StorageError> {
        let Some(checkpointer) = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return self.sync();
        };
        let closed = self.overlay.close();
        let _ = checkpointer.join();
        closed?;
        self.sync_files()
    }
}

impl SledStore {
    /// sled's flush, then an fsync of its data file.
    fn sync_files(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.sync_blobs()?;
        self.data_file
            .sync_data()
            .map_err(|e| StorageError::Io(format!("fsync of sled data file: {e}")))
    }

    /// sled 0.34 writes any log item over a quarter segment (128 KiB) to a file of its own
    /// under `blobs/`, and never fsyncs it: the `db` file's fsync would then make durable
    /// a pointer to a blob the power could still take. After each flush (which writes
    /// every blob it points to), each blob file not synced yet is, then the directory.
    /// Group records are cut small so blobs are rare (a history prune of thousands of
    /// events, a huge snapshot); when there are none this is one empty directory read.
    fn sync_blobs(&self) -> Result<(), StorageError> {
        let io = |what: &str, e: std::io::Error| StorageError::Io(format!("{what}: {e}"));
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("reading sled's blob directory", e)),
        };
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("reading sled's blob directory", e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all().map_err(|e| io("fsync of a sled blob", e))?,
                    // sled removed it meanwhile (blob GC): nothing to make durable.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("opening a sled blob", e)),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("fsync of sled's blob directory", e))?;
        }
        *synced = present;
        Ok(())
    }

    /// How many blob files the last sync saw (for tests).
    #[cfg(test)]
    fn blobs_seen(&self) -> usize {
        self.blobs_synced.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Pricing};

    /// Creates and debits `id`; its snapshot is at the debit, or at creation when `old_snap`
    /// (the debit then lives only in the log tail).
    fn write_account(store: &SledStore, id: &str, p: &Pricing, old_snap: bool) {
        let created = Account::create(id, "starter", Ts(0), Ts(0), p).unwrap();
        let mut a = Account::empty(id);
        a.apply(&created);
        let at_creation = a.clone();
        let cmd = Command::Debit {
            operation: "face_generation".into(),
            quantity: 3,
            metadata: vec![],
            idempotency_key: "k".into(),
        };
        let body = a.decide(&cmd, Ts(1), p).unwrap();
        let debit = a.record(body, Ts(1), &p.thresholds);
        let events = [created, debit];
        store
            .append(
                id,
                Append {
                    events: &events,
                    snapshot: Some(if old_snap { &at_creation } else { &a }),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// Totals survive a reopen, and a database without them (written before they existed)
    /// gets them rebuilt from its events.
    #[test]
    fn totals_are_kept_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pricing::standard();
        let expected = BookTotals {
            monthly: 2 * (50 - 15),
            free: 2 * 50,
            accounts: 2,
            ..Default::default()
        };
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            write_account(&store, "a", &p, false);
            write_account(&store, "b-with-a-longer-id", &p, true);
            assert_eq!(store.totals(), expected);
            store.sync().unwrap();
        }
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.totals(), expected);
            for kv in store.db.scan_prefix([TOTALS]) {
                store.db.remove(kv.unwrap().0).unwrap();
            }
            store.sync().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.totals(), expected);
        assert!(store.db.scan_prefix([TOTALS]).next().is_some());
    }

    /// Expired idempotency records go, wherever they are (already in sled from a previous
    /// run, or still in the overlay), the others stay; a key re-bound since is kept.
    #[test]
    fn prune_idempotency_scans_sled_and_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let bind = |store: &SledStore, key: &str, at: i64| {
            let rec = IdemRecord {
                fingerprint: [0; 16],
                seq: 1,
                at: Ts(at),
            };
            store
                .append(
                    "acct",
                    Append {
                        idempotency: vec![(key, rec)],
                        ..Default::default()
                    },
                )
                .unwrap();
        };
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            for i in 0..500 {
                bind(
                    &store,
                    &format!("disk-{i}"),
                    if i % 2 == 0 { 10 } else { 1000 },
                );
            }
        } // closed: everything is in its own key now
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.db.scan_prefix([IDEM]).count(), 500);
        for i in 0..50 {
            bind(
                &store,
                &format!("mem-{i}"),
                if i % 2 == 0 { 20 } else { 2000 },
            );
        }
        bind(&store, "disk-0", 3000); // re-bound: now fresh
        assert_eq!(store.prune_idempotency(Ts(500)).unwrap(), 250 - 1 + 25);
        let live = |key: &str| store.idempotency("acct", key).unwrap().is_some();
        assert!(live("disk-0") && !live("disk-2") && live("disk-3"));
        assert!(!live("mem-0") && live("mem-1"));
        assert_eq!(store.prune_idempotency(Ts(500)).unwrap(), 0);
        drop(store);
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.db.scan_prefix([IDEM]).count(), 500 + 50 - 274);
    }

    /// A write too big for sled's log (over 128 KiB) becomes a blob file, which sled does
    /// not fsync; `sync` does, and it survives a reopen.
    #[test]
    fn blob_files_are_synced_with_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 300 * 1024];
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            store
                .overlay
                .commit([(cursor_key("big"), Some(big.clone()))]);
            store.sync().unwrap();
            assert!(store.blobs_seen() >= 1, "sled wrote no blob file");
            assert_eq!(
                store.blobs_seen(),
                std::fs::read_dir(dir.path().join("blobs")).unwrap().count()
            );
            store.sync().unwrap(); // nothing new: nothing to do
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.overlay.get(&cursor_key("big")).unwrap(), Some(big));
    }
}
