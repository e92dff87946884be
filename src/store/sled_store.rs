//! `Store` over one sled tree. Each mutation's writes (its events, idempotency records,
//! feed entries, snapshot, totals) are one overlay commit, so they land in one log record
//! together or not at all (`overlay.rs`).

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::codec::{decode, display_key, encode};
use super::format::{self, FORMAT_KEY, STORE_FORMAT};
use super::idem_filter::{IdemFilter, SLICES_PER_TTL};
use super::idem_index::{self, IdemIndex};
use super::kv::{scan_prefix, Kv, SledKv};
use super::overlay::{Entry, Index, Overlay, Tuning, Value};
use super::records::{AccountRecordV2, EventRecordV3, FeedEntryRecordV2, IdemRecordV1};
use super::recovery::{recover, Start, Visit};
use super::runs::{self, EventIndex, EVENT};
use super::segment_log::Pos;
use super::segment_log::{FsLogFiles, LogFiles};
use super::totals::{self, BookTotals};
use super::{Append, FeedEntry, IdemRecord, StorageError, Store};
use crate::domain::{Account, Event, Ts};

// The tags keys start with (`store/mod.rs`); `E` and `R` are the runs' (`runs.rs`), `L`
// the overlay's, `V` the format marker's (`format.rs`).
pub(crate) const SNAPSHOT: u8 = b'S';
pub(crate) const IDEM: u8 = b'I';
pub(crate) const FEED: u8 = b'F';
pub(crate) const WAKEUP: u8 = b'W';
pub(crate) const CURSOR: u8 = b'C';
pub(crate) const BASE: u8 = b'B';
pub(crate) const TOTALS: u8 = b'T';

/// How the store is opened: the overlay's tuning, whether a thread checkpoints (the
/// daemon) or the caller does, one step at a time (`checkpoint_step`: the simulator), and
/// the idempotency filter's.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub tuning: Tuning,
    pub checkpointer_thread: bool,
    pub idempotency_filter: FilterOptions,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tuning: Tuning::default(),
            checkpointer_thread: true,
            idempotency_filter: FilterOptions::default(),
        }
    }
}

/// The idempotency filter (`idem_filter.rs`): its budget, the TTL its generations slice,
/// and whether the keys already in sled are added by a thread while the store serves
/// (the daemon: lookups read sled until it is done) or before `open_on` returns.
#[derive(Clone, Copy, Debug)]
pub struct FilterOptions {
    /// `storage.idempotency_filter_bytes` (0: off).
    pub bytes: u64,
    /// `storage.idempotency_ttl_seconds`, in ms.
    pub ttl_ms: i64,
    pub build_thread: bool,
    /// The thread waits this long before its scan (tests of lookups while it is built).
    pub build_delay: std::time::Duration,
}

impl Default for FilterOptions {
    /// The config's defaults (20 MiB, 7 days), built by a thread.
    fn default() -> FilterOptions {
        FilterOptions {
            bytes: 20 << 20,
            ttl_ms: 7 * 24 * 3600 * 1000,
            build_thread: true,
            build_delay: std::time::Duration::ZERO,
        }
    }
}

/// Where idempotency lookups were answered, counted (`IDEMPOTENCY_LOOKUPS_TOTAL`).
struct Lookups {
    overlay: metrics::Counter,
    filter: metrics::Counter,
    sled: metrics::Counter,
}

impl Lookups {
    fn new() -> Lookups {
        let c = |by: &'static str| metrics::counter!(crate::metrics::IDEMPOTENCY_LOOKUPS_TOTAL, "answered_by" => by);
        Lookups {
            overlay: c("overlay"),
            filter: c("filter"),
            sled: c("sled"),
        }
    }
}

/// The thread adding sled's idempotency keys to the filter at open, and how to stop it.
struct FilterBuild {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// The store over any `Kv` engine (sled in the daemon, hence the name).
pub struct SledStore {
    kv: Arc<dyn Kv>,
    options: Options,
    /// Every write goes through it; every read looks at it first.
    overlay: Arc<Overlay>,
    /// Taken by `close` (or drop), which waits for it.
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The idempotency records, in blocks (`idem_index.rs`).
    idem: Arc<IdemIndex>,
    /// The thread merging its blocks; taken by `close` (or drop), which stops it.
    merger: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Feed ids are handed out and written under this lock so that ids become visible in
    /// order; only the rare mutations that notify take it, never a plain debit.
    feed_lock: Mutex<()>,
    feed_next: AtomicU64,
    /// The on-disk totals of each shard (`store::totals`), as last written. A shard's lock
    /// is held from reading its value to applying the batch that writes the new one.
    totals: Vec<Mutex<BookTotals>>,
    /// Log records (and earlier releases' group records) replayed at open.
    replayed: usize,
    /// Whether sled holds events written by an earlier release (`E‖account‖0‖seq`, read
    /// beside the runs until they are gone).
    legacy_events: bool,
    /// Held (shared) by every read of events where they lie in the log, and (exclusive)
    /// while segments are deleted, so that no read is left with a run pointing into a
    /// deleted segment.
    segments_gc: RwLock<()>,
    /// The idempotency keys sled may hold: a fresh key's lookup reads no disk.
    idem_filter: Arc<IdemFilter>,
    /// Taken by `close` (or drop), which stops it.
    filter_build: Mutex<Option<FilterBuild>>,
    lookups: Lookups,
    /// The store format the marker said at open, before any upgrade (`format.rs`).
    format_at_open: u32,
}

fn event_key(account: &str, seq: u64) -> Vec<u8> {
    runs::event_key(account.as_bytes(), seq)
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
    /// The daemon's store: sled in `dir` and the log in `dir/log`, with a checkpointer
    /// thread.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StorageError> {
        SledStore::open_dir(dir, cache_bytes, Options::default())
    }

    /// `open` with options.
    pub fn open_dir(
        dir: &Path,
        cache_bytes: u64,
        options: Options,
    ) -> Result<SledStore, StorageError> {
        let kv = SledKv::open(dir, cache_bytes)?;
        // Before the log directory is created: a newer store is refused as it is.
        format::refuse_newer_in(&kv, dir)?;
        let files = FsLogFiles::open(&dir.join("log"))?;
        SledStore::open_on(Arc::new(kv), Box::new(files), options)
    }

    /// The store over `kv` and the log in `files`: replays what a previous run left (the
    /// log records sled does not cover, and an earlier release's group records), then
    /// reads the feed's next id and the book totals.
    pub fn open_on(
        kv: Arc<dyn Kv>,
        files: Box<dyn LogFiles>,
        options: Options,
    ) -> Result<SledStore, StorageError> {
        // Before anything is written, the replay included: a store of a newer format is
        // refused as it is; an older one is upgraded at the end (`mark_format`).
        let format_at_open = format::refuse_newer(&*kv)?;
        // First of all: the log records a previous run left hold writes that may not be
        // in their keys yet, and everything below reads those keys.
        let started = std::time::Instant::now();
        let slice_ms = (options.idempotency_filter.ttl_ms / SLICES_PER_TTL).max(1);
        let idem = Arc::new(IdemIndex::open(&*kv, slice_ms)?);
        let index = Arc::new(Indexes { idem: idem.clone() });
        let (overlay, replayed) = Overlay::recover(kv.clone(), files, options.tuning, index)?;
        let legacy_events = scan_prefix(&*kv, &[EVENT]).next().transpose()?.is_some();
        let (lo, hi) = prefix(FEED);
        let feed_next = match kv.range(lo, hi, true).next() {
            Some(kv) => {
                let (k, _) = kv?;
                u64::from_be_bytes(k[1..9].try_into().map_err(|_| StorageError::Corrupt {
                    key: display_key(&k),
                    reason: "feed key is not 9 bytes".into(),
                })?) + 1
            }
            None => 1,
        };
        let totals = load_totals(&*kv)?;
        let rebuild = totals.is_none();
        let totals = totals.unwrap_or_else(|| vec![BookTotals::default(); totals::SHARDS]);
        let checkpointer = if options.checkpointer_thread {
            let overlay = overlay.clone();
            Some(
                std::thread::Builder::new()
                    .name("creditsd-checkpoint".into())
                    .spawn(move || {
                        if let Err(e) = overlay.checkpoint_loop() {
                            crate::fail_stop(&format!("checkpoint: {e}"));
                        }
                    })
                    .map_err(|e| StorageError::Io(format!("spawning the checkpointer: {e}")))?,
            )
        } else {
            None
        };
        let merger = if options.checkpointer_thread {
            let (idem, kv) = (idem.clone(), kv.clone());
            Some(
                std::thread::Builder::new()
                    .name("creditsd-idem-merge".into())
                    .spawn(move || {
                        if let Err(e) = idem.merge_loop(&*kv) {
                            crate::fail_stop(&format!("merging idempotency blocks: {e}"));
                        }
                    })
                    .map_err(|e| StorageError::Io(format!("spawning the merger: {e}")))?,
            )
        } else {
            None
        };
        let f = options.idempotency_filter;
        let idem_filter = Arc::new(IdemFilter::new(f.bytes, f.ttl_ms));
        let mut store = SledStore {
            kv,
            options,
            overlay,
            checkpointer: Mutex::new(checkpointer),
            idem,
            merger: Mutex::new(merger),
            feed_lock: Mutex::new(()),
            feed_next: AtomicU64::new(feed_next),
            totals: totals.into_iter().map(Mutex::new).collect(),
            replayed: 0,
            legacy_events,
            segments_gc: RwLock::new(()),
            idem_filter,
            filter_build: Mutex::new(None),
            lookups: Lookups::new(),
            format_at_open,
        };
        // After the replay, so the keys it wrote into sled are in sled's scan; every key
        // bound from now on is added by `append` before it can reach sled.
        store.build_filter()?;
        if rebuild {
            store.rebuild_totals()?;
        }
        store.replayed = replayed;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed the write-ahead log records left by the previous run"
            );
        }
        store.mark_format()?;
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

impl SledStore {
    /// Adds the idempotency keys in sled to the filter, in a thread (`build_thread`) or
    /// now, and marks it complete once they all are. Should the scan fail (a read error,
    /// a record that does not decode), the filter stays incomplete and every lookup reads
    /// sled, as without it; the failure is logged (and the lookup of that key reports it).
    fn build_filter(&self) -> Result<(), StorageError> {
        if !self.idem_filter.enabled() {
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (overlay, filter, halt) =
            (self.overlay.clone(), self.idem_filter.clone(), stop.clone());
        let (idem, kv) = (self.idem.clone(), self.kv.clone());
        let delay = self.options.idempotency_filter.build_delay;
        let build = move || {
            let until = std::time::Instant::now() + delay;
            while std::time::Instant::now() < until && !halt.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let started = std::time::Instant::now();
            match fill_filter(&overlay, &idem, &*kv, &filter, &halt) {
                Ok(Some(keys)) => tracing::info!(
                    keys,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    filter_bytes = filter.bytes(),
                    "built the idempotency filter from the keys on disk; fresh keys are no longer looked up in sled"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "building the idempotency filter; every idempotency lookup reads sled"
                ),
            }
        };
        if !self.options.idempotency_filter.build_thread {
            build();
            return Ok(());
        }
        let thread = std::thread::Builder::new()
            .name("creditsd-idem-filter".into())
            .spawn(build)
            .map_err(|e| StorageError::Io(format!("spawning the filter's builder: {e}")))?;
        *self.filter_build.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(FilterBuild { stop, thread });
        Ok(())
    }

    /// Stops the filter's builder if it still runs (it holds the overlay, so sled, open),
    /// and waits for it.
    fn stop_filter_build(&self) {
        let build = self
            .filter_build
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(b) = build {
            b.stop.store(true, Ordering::Relaxed);
            let _ = b.thread.join();
        }
    }

    /// The idempotency filter (tests and the simulator look at it).
    pub fn idempotency_filter(&self) -> &IdemFilter {
        &self.idem_filter
    }
}

/// Adds every idempotency record to `filter` (the index's blocks, then an earlier
/// release's records in sled with the overlay's layers merged over them, so a write the
/// open left in a layer is covered too), then marks it complete; answers how many, or
/// `None` when asked to stop first.
fn fill_filter(
    overlay: &Overlay,
    idem: &IdemIndex,
    kv: &dyn Kv,
    filter: &IdemFilter,
    stop: &AtomicBool,
) -> Result<Option<u64>, StorageError> {
    let mut n = 0u64;
    let mut stopped = false;
    idem.for_each(kv, |hash, at| {
        if n % 1024 == 0 && stop.load(Ordering::Relaxed) {
            stopped = true;
            return false;
        }
        filter.insert(IdemFilter::hash(hash), at);
        n += 1;
        true
    })?;
    if stopped {
        return Ok(None);
    }
    let (lo, hi) = prefix(IDEM);
    overlay.scan(lo, hi, false, |k, v| {
        if n % 1024 == 0 && stop.load(Ordering::Relaxed) {
            stopped = true;
            return Ok(false);
        }
        let rec: IdemRecord = decode::<IdemRecordV1>(&k, &v)?.into();
        filter.insert(IdemFilter::hash(&idem_index::digest(&k)), rec.at);
        n += 1;
        Ok(true)
    })?;
    if stopped {
        return Ok(None);
    }
    filter.set_complete();
    Ok(Some(n))
}

/// The overlay's index in the daemon: events stay in the log (`runs.rs`), idempotency
/// records go into the index's blocks (`idem_index.rs`).
struct Indexes {
    idem: Arc<IdemIndex>,
}

impl Index for Indexes {
    fn located(&self, key: &[u8]) -> bool {
        EventIndex.located(key)
    }
    fn floor(&self) -> u64 {
        EventIndex.floor()
    }
    fn write(
        &self,
        kv: &dyn Kv,
        puts: &[(&[u8], Pos)],
        deletes: &[&[u8]],
    ) -> Result<(), StorageError> {
        EventIndex.write(kv, puts, deletes)
    }
    fn bulk(&self, key: &[u8]) -> bool {
        key.first() == Some(&IDEM)
    }
    /// A binding goes into the layer's block; a deletion (the pruner's, of a binding
    /// past the TTL) removes an earlier release's record from sled, if any: the block's
    /// copy is forgotten by the pruner's cutoff.
    fn write_bulk(&self, kv: &dyn Kv, writes: &[(&[u8], &Value)]) -> Result<(), StorageError> {
        let mut entries = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            match value {
                Some(v) => entries.push(idem_index::Entry {
                    hash: idem_index::digest(key),
                    rec: decode::<IdemRecordV1>(key, v)?.into(),
                }),
                None => kv.remove(key)?,
            }
        }
        self.idem.write(kv, entries)
    }
}

impl Drop for SledStore {
    /// Closes the store if nobody did (see `Store::close`). A store opened without a
    /// checkpointer thread is its owner's to sync and close: dropping it writes nothing
    /// (the simulator drops one to model a process that died).
    fn drop(&mut self) {
        self.stop_filter_build();
        if !self.options.checkpointer_thread {
            return;
        }
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the store; its log records will be replayed at the next open");
        }
    }
}

/// Reads the totals shards; `None` when a database written before they existed (events
/// but no `T` key) needs them rebuilt (`rebuild_totals`).
fn load_totals(kv: &dyn Kv) -> Result<Option<Vec<BookTotals>>, StorageError> {
    let mut shards = vec![BookTotals::default(); totals::SHARDS];
    let mut found = false;
    for (i, shard) in shards.iter_mut().enumerate() {
        if let Some(v) = kv.get(&totals_key(i))? {
            *shard = decode(&totals_key(i), &v)?;
            found = true;
        }
    }
    let empty = scan_prefix(kv, &[SNAPSHOT]).next().is_none();
    Ok((found || empty).then_some(shards))
}

impl SledStore {
    /// Rebuilds the totals shards once from every account, as activation reads it
    /// (snapshot + log, `recovery::recover`), and writes them.
    fn rebuild_totals(&self) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let mut shards = vec![BookTotals::default(); totals::SHARDS];
        for id in self.accounts()? {
            if let Some(r) = recover(self, &id, Start::Snapshot, |_, _| Ok(Visit::Continue))? {
                shards[totals::shard_of(&id)].add(&BookTotals::of(&r.account));
            }
        }
        self.overlay.commit(
            shards
                .iter()
                .enumerate()
                .map(|(i, shard)| (totals_key(i).to_vec(), Some(encode(shard)))),
        );
        for (i, shard) in shards.into_iter().enumerate() {
            *self.totals[i].lock().unwrap_or_else(|p| p.into_inner()) = shard;
        }
        self.sync()?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt the book totals from every account (a database from before they were kept)"
        );
        Ok(())
    }
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
        metrics::histogram!(crate::metrics::SNAPSHOT_DURATION_SECONDS)
            .record(t.elapsed().as_secs_f64());
    }
}

impl Store for SledStore {
    fn append(&self, account: &str, a: Append<'_>) -> Result<(), StorageError> {
        let snapshot_started = a.snapshot.map(|_| std::time::Instant::now());
        let mut writes: Vec<(Vec<u8>, Value)> = Vec::with_capacity(a.events.len() + 3);
        for ev in a.events {
            writes.push((
                event_key(account, ev.seq),
                Some(encode(&EventRecordV3::from(ev))),
            ));
        }
        for (key, rec) in &a.idempotency {
            let k = idem_key(account, key);
            // Into the filter before the overlay, so before the key can reach sled.
            let hash = IdemFilter::hash(&idem_index::digest(&k));
            self.idem_filter.insert(hash, rec.at);
            writes.push((k, Some(encode(&IdemRecordV1::from(rec)))));
        }
        if let Some(acct) = a.snapshot {
            writes.push((
                snapshot_key(account),
                Some(encode(&AccountRecordV2::from(acct))),
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
                Some(encode(&FeedEntryRecordV2::from(&entry))),
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
        let key = snapshot_key(account);
        let Some(bytes) = self.overlay.get(&key)? else {
            return Ok(None);
        };
        // A snapshot of an earlier layout lacks state its log has (the hourly burn of the
        // forecast alert): it is stale, and the account replays from its base instead
        // (its next snapshot is written in today's layout).
        let (version, _) = super::codec::unseal(&key, &bytes)?;
        if version < <AccountRecordV2 as super::codec::Record>::VERSION {
            tracing::debug!(
                account,
                version,
                "snapshot of an earlier layout: replaying from the base"
            );
            return Ok(None);
        }
        decode::<AccountRecordV2>(&key, &bytes).map(|r| Some(r.into()))
    }

    fn events_from(
        &self,
        account: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        self.events_merged(account, from, false, limit)
    }

    fn events_before(
        &self,
        account: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        self.events_merged(account, before, true, limit)
    }

    fn event(&self, account: &str, seq: u64) -> Result<Option<Event>, StorageError> {
        let key = event_key(account, seq);
        let bytes = match self.overlay.get_layers(&key) {
            Some(v) => v,
            None => {
                let _gc = self.segments_gc.read().unwrap_or_else(|p| p.into_inner());
                match runs::find(&*self.kv, account.as_bytes(), seq)? {
                    Some(pos) => Some(self.overlay.read_at(pos)?),
                    None if self.legacy_events => self.kv.get(&key)?,
                    None => None,
                }
            }
        };
        bytes
            .map(|b| decode::<EventRecordV3>(&key, &b).map(Event::from))
            .transpose()
    }

    /// The overlay's layers first (memory), then the filter: once it is complete, a key
    /// it does not hold is in no layer and not in sled, so a fresh key reads no disk.
    /// Otherwise ("maybe", or the filter still being built at open) the index's blocks
    /// are probed, then sled, for an earlier release's record. A binding made before the
    /// pruner's last cutoff is forgotten, wherever it still lies.
    fn idempotency(&self, account: &str, key: &str) -> Result<Option<IdemRecord>, StorageError> {
        let k = idem_key(account, key);
        let f = &self.idem_filter;
        let decoded = |v: Vec<u8>| decode::<IdemRecordV1>(&k, &v).map(IdemRecord::from);
        let rec = match self.overlay.get_layers(&k) {
            Some(v) => {
                self.lookups.overlay.increment(1);
                v.map(decoded).transpose()?
            }
            None => {
                let hash = idem_index::digest(&k);
                if f.is_complete() && !f.may_contain(IdemFilter::hash(&hash)) {
                    self.lookups.filter.increment(1);
                    None
                } else {
                    self.lookups.sled.increment(1);
                    match self.idem.lookup(&*self.kv, &hash)? {
                        Some(rec) => Some(rec),
                        None => self.kv.get(&k)?.map(decoded).transpose()?,
                    }
                }
            }
        };
        Ok(rec.filter(|r| r.at.millis() >= self.idem.forgotten_before()))
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
        // The index forgets by the same cutoff (and deletes the blocks of the slices that
        // ended by then), and so does the filter: the generations whose keys were all
        // bound before it.
        n += self.idem.forget_before(&*self.kv, cutoff)?;
        self.idem_filter.forget_before(cutoff);
        Ok(n)
    }

    fn accounts(&self) -> Result<Vec<String>, StorageError> {
        self.accounts_page(None, usize::MAX)
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
        self.decode_range::<FeedEntryRecordV2, _>(
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
                let entry: FeedEntry = decode::<FeedEntryRecordV2>(k, v)?.into();
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
        self.get_decoded::<AccountRecordV2, _>(&base_key(account))
    }

    fn prune_history(&self, account: &str, from: u64, base: &Account) -> Result<(), StorageError> {
        let mut writes = vec![(
            base_key(account),
            Some(encode(&AccountRecordV2::from(base))),
        )];
        writes.extend((from..=base.seq).map(|seq| (event_key(account, seq), None)));
        self.overlay.commit(writes);
        Ok(())
    }

    /// Below the oldest segment any run points into, and below what sled covers.
    fn remove_unindexed_segments(&self) -> Result<usize, StorageError> {
        let _gc = self.segments_gc.write().unwrap_or_else(|p| p.into_inner());
        let floor = runs::oldest_segment(&*self.kv)?;
        self.overlay.remove_segments_below(floor)
    }

    /// The group commit: one write to the log, one fdatasync; sled is not touched.
    fn sync(&self) -> Result<(), StorageError> {
        self.overlay.write_group()
    }

    /// The checkpointer writes every layer, the last one included, then stops, and sled
    /// is flushed and fsynced, so the next open replays nothing. Should any of it fail,
    /// the log records are still there and the next open replays them. A second call
    /// (drop after close) only syncs.
    fn close(&self) -> Result<(), StorageError> {
        self.stop_filter_build();
        self.idem.stop();
        if let Some(merger) = self.merger.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = merger.join();
        }
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
        self.kv.sync()
    }
}

/// Where a page of events comes from: the overlay (a value, or a deletion that hides the
/// others), the log where a run says the event lies, or sled (an earlier release's).
enum Source {
    Layer(Value),
    Run(super::segment_log::Pos),
    Sled(Vec<u8>),
}

impl SledStore {
    /// Up to `limit` events of `account` with `seq >= from` (ascending), or `seq < from`
    /// (descending, with `rev`): the overlay's newest writes over the runs over an earlier
    /// release's events in sled. Each source is read a page at a time; a page is merged
    /// only up to where every source that filled its page has reached, then the next
    /// page starts there.
    fn events_merged(
        &self,
        account: &str,
        from: u64,
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        let _gc = self.segments_gc.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut cursor = from;
        while out.len() < limit {
            let want = limit - out.len();
            let (lo, hi) = if rev {
                (
                    Bound::Included(event_key(account, 0)),
                    Bound::Excluded(event_key(account, cursor)),
                )
            } else {
                (
                    Bound::Included(event_key(account, cursor)),
                    Bound::Included(event_key(account, u64::MAX)),
                )
            };
            let seq_of = |k: &[u8]| runs::parse_event_key(k).map_or(0, |(_, s)| s);
            // Where the sources that filled their page stopped: past the nearest of
            // those, nothing is known yet.
            let mut reached: Option<u64> = None;
            let mut stop_at = |len: usize, last: Option<u64>| {
                if let (true, Some(l)) = (len == want, last) {
                    reached = Some(match reached {
                        Some(r) if rev => r.max(l),
                        Some(r) => r.min(l),
                        None => l,
                    });
                }
            };
            let mut page: std::collections::BTreeMap<u64, (Vec<u8>, Source)> =
                std::collections::BTreeMap::new();
            // The overlay first: a layer leaves it only once its runs are in sled, so an
            // event missed here is found there (in that order, never the other).
            let layers = self.overlay.layers_range(lo.clone(), hi.clone(), rev, want);
            stop_at(layers.len(), layers.last().map(|(k, _)| seq_of(k)));
            for (k, v) in layers {
                page.insert(seq_of(&k), (k, Source::Layer(v)));
            }
            let indexed = runs::positions(&*self.kv, account.as_bytes(), cursor, rev, want)?;
            stop_at(indexed.len(), indexed.last().map(|(s, _)| *s));
            for (seq, pos) in indexed {
                page.entry(seq)
                    .or_insert_with(|| (event_key(account, seq), Source::Run(pos)));
            }
            if self.legacy_events {
                let sled: Vec<_> = self
                    .kv
                    .range(lo, hi, rev)
                    .take(want)
                    .collect::<Result<_, _>>()?;
                stop_at(sled.len(), sled.last().map(|(k, _)| seq_of(k)));
                for (k, v) in sled {
                    page.entry(seq_of(&k)).or_insert((k, Source::Sled(v)));
                }
            }
            let within = |seq: u64| match reached {
                Some(r) if rev => seq >= r,
                Some(r) => seq <= r,
                None => true,
            };
            let entries: Box<dyn Iterator<Item = _>> = if rev {
                Box::new(page.into_iter().rev())
            } else {
                Box::new(page.into_iter())
            };
            for (_, (key, source)) in entries.take_while(|(seq, _)| within(*seq)) {
                let bytes = match source {
                    Source::Layer(None) => continue,
                    Source::Layer(Some(v)) | Source::Sled(v) => v,
                    Source::Run(pos) => self.overlay.read_at(pos)?,
                };
                out.push(Event::from(decode::<EventRecordV3>(&key, &bytes)?));
                if out.len() == limit {
                    break;
                }
            }
            match reached {
                None => break,
                Some(r) if rev => cursor = r,
                Some(r) => cursor = r + 1,
            }
        }
        Ok(out)
    }

    /// Writes the layers that are ready into their keys (what the checkpointer thread
    /// does), for a store opened without that thread. Answers how many.
    pub fn checkpoint_step(&self) -> Result<usize, StorageError> {
        let n = self.overlay.checkpoint_ready()?;
        self.idem.compact(&*self.kv)?;
        Ok(n)
    }

    /// The idempotency index (tests and the benchmarks look at it).
    pub fn idempotency_index(&self) -> &IdemIndex {
        &self.idem
    }

    /// Log records (and earlier releases' group records) replayed when it opened.
    pub fn replayed(&self) -> usize {
        self.replayed
    }

    /// The log's segments present (oldest first).
    pub fn segments(&self) -> Vec<u64> {
        self.overlay.segments()
    }

    /// The store format the marker said when the store opened, before `mark_format`
    /// upgraded it (`format.rs`).
    pub fn format_at_open(&self) -> u32 {
        self.format_at_open
    }

    /// The store format the marker says now.
    pub fn format(&self) -> Result<u32, StorageError> {
        match self.overlay.get(&FORMAT_KEY)? {
            Some(bytes) => format::parse(&bytes),
            None => Ok(format::UNMARKED),
        }
    }

    /// Upgrades a store of an older format in place: writes the marker of `STORE_FORMAT`
    /// and makes it durable. Every older record layout stays readable, so the marker is
    /// all there is to write; `creditsd migrate` rewrites the old records themselves.
    /// Answers whether it wrote.
    ///
    /// The marker goes straight into sled and is synced there (as the overlay writes its
    /// covered number), not through the log: opening reads it from sled before anything
    /// is replayed, so that is where it must be, durable, before the store is used.
    pub fn mark_format(&self) -> Result<bool, StorageError> {
        let found = self.format()?;
        if found >= STORE_FORMAT {
            return Ok(false);
        }
        self.kv.insert(&FORMAT_KEY, &format::marker(STORE_FORMAT))?;
        self.kv.sync()?;
        if self.accounts_page(None, 1)?.is_empty() {
            tracing::debug!(format = STORE_FORMAT, "a new store: format marker written");
        } else {
            tracing::info!(
                from = found,
                to = STORE_FORMAT,
                "store format upgraded in place (the marker; records of older layouts stay \
                 readable, and `creditsd migrate` rewrites them)"
            );
        }
        Ok(true)
    }

    /// Up to `limit` records whose key starts with `tag`, after the key `after`, as they
    /// are stored (the overlay's over sled's): for `migrate.rs`.
    pub(crate) fn raw_page(
        &self,
        tag: u8,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let (lo, hi) = prefix(tag);
        let lo = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => lo,
        };
        self.overlay.range(lo, hi, false, limit)
    }

    /// The engine beneath, for `migrate.rs`: it finds events by their runs, and deletes
    /// an earlier release's copies of events once runs locate them in the log.
    pub(crate) fn kv(&self) -> &dyn Kv {
        &*self.kv
    }

    /// Puts sealed records as they are, in one overlay commit: for `migrate.rs`, which
    /// rewrites a record of an older layout in today's, under the same key. Durable at the
    /// next `sync`.
    pub(crate) fn rewrite(&self, records: Vec<Entry>) {
        self.overlay
            .commit(records.into_iter().map(|(k, v)| (k, Some(v))));
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
            member: None,
        };
        let body = a.decide(&cmd, Ts(1), p).unwrap();
        let debit = a.record(body, Ts(1), p);
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
            let keys: Vec<_> = scan_prefix(&*store.kv, &[TOTALS])
                .map(|e| e.unwrap().0)
                .collect();
            for k in keys {
                store.kv.remove(&k).unwrap();
            }
            store.sync().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.totals(), expected);
        drop(store); // closed: the rebuilt shards are in their own keys
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert!(scan_prefix(&*store.kv, &[TOTALS]).next().is_some());
        assert_eq!(store.totals(), expected);
    }

    /// Expired idempotency records go, wherever they are (in the index's blocks from a
    /// previous run, in sled as an earlier release wrote them, or still in the overlay),
    /// the others stay; a key re-bound since is kept.
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
        } // closed: everything is in the index's blocks now
        {
            // An earlier release's records, a key each in sled.
            let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
            for i in 0..100 {
                let rec = IdemRecord {
                    fingerprint: [0; 16],
                    seq: 1,
                    at: Ts(if i % 2 == 0 { 30 } else { 1500 }),
                };
                let k = idem_key("acct", &format!("old-{i}"));
                kv.insert(&k, &encode(&IdemRecordV1::from(&rec))).unwrap();
            }
            kv.sync().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(scan_prefix(&*store.kv, &[IDEM]).count(), 100);
        assert_eq!(store.idempotency_index().stats().1, 500);
        for i in 0..50 {
            bind(
                &store,
                &format!("mem-{i}"),
                if i % 2 == 0 { 20 } else { 2000 },
            );
        }
        bind(&store, "disk-0", 3000); // re-bound: now fresh
                                      // Deleted: the earlier release's and the overlay's expired records. The blocks'
                                      // are forgotten, and deleted with their slice (7 days of TTL: a slice of 42 h).
        assert_eq!(store.prune_idempotency(Ts(500)).unwrap(), 50 + 25);
        let live = |key: &str| store.idempotency("acct", key).unwrap().is_some();
        assert!(live("disk-0") && !live("disk-2") && live("disk-3"));
        assert!(!live("mem-0") && live("mem-1"));
        assert!(!live("old-0") && live("old-1"));
        assert_eq!(store.prune_idempotency(Ts(500)).unwrap(), 0);
        drop(store);
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(scan_prefix(&*store.kv, &[IDEM]).count(), 50);
        let live = |key: &str| store.idempotency("acct", key).unwrap().is_some();
        assert!(live("disk-0") && !live("disk-2") && live("disk-3"));
        assert!(!live("mem-0") && live("mem-1"));
        assert!(!live("old-0") && live("old-1"));
        let slice = Options::default().idempotency_filter.ttl_ms / SLICES_PER_TTL;
        assert_eq!(
            store.prune_idempotency(Ts(slice)).unwrap(),
            500 + 25 + 1 + 50
        );
        assert_eq!(store.idempotency_index().stats(), (0, 0));
        assert!(!live("disk-0") && !live("mem-1") && !live("old-1"));
    }

    /// Events are not written into sled: the checkpointer indexes where they lie in the
    /// log (runs), reads find them there, and retention deletes whole segments once every
    /// event in them is pruned, keeping every event above the base readable, also after a
    /// reopen.
    #[test]
    fn events_stay_in_the_log_and_retention_deletes_whole_segments() {
        let p = Pricing::standard();
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            tuning: Tuning {
                freeze_keys: 30,
                segment_bytes: 8192,
                ..Tuning::default()
            },
            checkpointer_thread: false,
            ..Options::default()
        };
        let open = || SledStore::open_dir(dir.path(), 1 << 20, options).unwrap();
        let store = open();
        let mut accounts = Vec::new();
        for id in ["a", "b"] {
            let created = Account::create(id, "agency", Ts(0), Ts(0), &p).unwrap();
            let mut a = Account::empty(id);
            a.apply(&created);
            let events = [created];
            let append = Append {
                events: &events,
                snapshot: Some(&a),
                ..Default::default()
            };
            store.append(id, append).unwrap();
            accounts.push(a);
        }
        let mut written: Vec<Vec<Event>> = vec![Vec::new(), Vec::new()];
        for i in 0..200i64 {
            for (n, a) in accounts.iter_mut().enumerate() {
                let cmd = Command::Debit {
                    operation: "caption_generation".into(),
                    quantity: 1,
                    metadata: vec![],
                    idempotency_key: format!("k{i}"),
                    member: None,
                };
                let body = a.decide(&cmd, Ts(1000 + i), &p).unwrap();
                let ev = a.record(body, Ts(1000 + i), &p);
                let events = [ev.clone()];
                let snapshot = (i == 150).then_some(&*a);
                let append = Append {
                    events: &events,
                    snapshot,
                    ..Default::default()
                };
                store.append(&a.id, append).unwrap();
                written[n].push(ev);
            }
            if i % 5 == 4 {
                store.sync().unwrap();
                store.checkpoint_step().unwrap();
            }
        }
        store.sync().unwrap();
        while store.checkpoint_step().unwrap() > 0 {}
        let all = |store: &SledStore, id: &str| store.events_from(id, 2, usize::MAX).unwrap();
        let check = |store: &SledStore, from: usize| {
            for (n, id) in ["a", "b"].into_iter().enumerate() {
                assert_eq!(all(store, id), written[n][from..]);
                let seq = written[n][from + 10].seq;
                assert_eq!(
                    store.event(id, seq).unwrap().as_ref(),
                    Some(&written[n][from + 10])
                );
                let page = store.events_before(id, seq, 5).unwrap();
                let want: Vec<Event> = written[n][from + 5..from + 10]
                    .iter()
                    .rev()
                    .cloned()
                    .collect();
                assert_eq!(page, want);
            }
        };
        check(&store, 0);
        assert_eq!(
            scan_prefix(&*store.kv, &[EVENT]).count(),
            0,
            "events in sled"
        );
        assert!(scan_prefix(&*store.kv, &[runs::RUN]).count() >= 2);
        let segments = store.segments().len();
        assert!(segments > 4, "{segments}");
        // Nothing is pruned yet: no segment goes.
        assert_eq!(store.remove_unindexed_segments().unwrap(), 0);
        drop(store);
        let store = open();
        check(&store, 0);

        // Retention below the snapshot (seq 152 of each), then the segments.
        for id in ["a", "b"] {
            let n = crate::history::prune_account(&store, id, Ts(i64::MAX / 2), u64::MAX).unwrap();
            assert_eq!(n, 151);
        }
        // Until the checkpointer has taken them out of their runs, the segments stay.
        assert_eq!(store.remove_unindexed_segments().unwrap(), 0);
        store.sync().unwrap();
        store.overlay.close().unwrap();
        while store.checkpoint_step().unwrap() > 0 {}
        let removed = store.remove_unindexed_segments().unwrap();
        assert!(removed > 0 && removed < segments, "{removed} of {segments}");
        let pruned_from = 151 - 1; // the first event kept, of those debits
        for (n, id) in ["a", "b"].into_iter().enumerate() {
            assert_eq!(store.base(id).unwrap().unwrap().seq, 151);
            assert_eq!(
                store.events_from(id, 0, usize::MAX).unwrap(),
                written[n][pruned_from..]
            );
        }
        let left = store.segments();
        drop(store);
        let store = open();
        assert_eq!(store.segments(), left);
        for (n, id) in ["a", "b"].into_iter().enumerate() {
            assert_eq!(
                store.events_from(id, 0, usize::MAX).unwrap(),
                written[n][pruned_from..]
            );
        }
    }

    /// A `Kv` that counts the reads of idempotency records (`get` of an `I‖` key).
    struct CountingKv {
        inner: SledKv,
        idem_gets: AtomicU64,
    }

    impl Kv for CountingKv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            if key.first() == Some(&IDEM) || key.first() == Some(&idem_index::TAG) {
                self.idem_gets.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.get(key)
        }
        fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
            self.inner.insert(key, value)
        }
        fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
            self.inner.remove(key)
        }
        fn range(
            &self,
            lo: Bound<Vec<u8>>,
            hi: Bound<Vec<u8>>,
            rev: bool,
        ) -> super::super::kv::KvIter<'_> {
            self.inner.range(lo, hi, rev)
        }
        fn sync(&self) -> Result<(), StorageError> {
            self.inner.sync()
        }
    }

    fn bind(store: &SledStore, key: &str, at: i64) {
        let rec = IdemRecord {
            fingerprint: [7; 16],
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
    }

    /// Once the filter is built, a fresh key's lookup reads nothing from sled, a key
    /// bound in an earlier run (in sled, replayed from the log, or written by the
    /// checkpointer since) is still found, and before the build is done lookups read sled.
    #[test]
    fn a_fresh_key_is_answered_without_reading_sled() {
        let dir = tempfile::tempdir().unwrap();
        let open = |build_thread: bool| {
            let kv = Arc::new(CountingKv {
                inner: SledKv::open(dir.path(), 1 << 20).unwrap(),
                idem_gets: AtomicU64::new(0),
            });
            let files = FsLogFiles::open(&dir.path().join("log")).unwrap();
            let options = Options {
                idempotency_filter: FilterOptions {
                    bytes: 1 << 20,
                    ttl_ms: 1000,
                    build_thread,
                    build_delay: std::time::Duration::ZERO,
                },
                // Stepped here, and dropping the store is a crash.
                checkpointer_thread: false,
                ..Options::default()
            };
            let store = SledStore::open_on(kv.clone(), Box::new(files), options).unwrap();
            (store, kv)
        };
        {
            let (store, _) = open(false);
            for i in 0..300 {
                bind(&store, &format!("closed-{i}"), 100);
            }
            store.sync().unwrap();
            store.overlay.close().unwrap();
            assert_eq!(store.checkpoint_step().unwrap(), 1); // these are in sled
        }
        {
            let (store, _) = open(false);
            for i in 0..200 {
                bind(&store, &format!("replayed-{i}"), 100);
            }
            store.sync().unwrap();
            // Dropped without a checkpoint, as a crash: the next open replays them.
        }
        let (store, kv) = open(false);
        assert!(store.replayed() > 0);
        assert!(store.idempotency_filter().is_complete());
        let reads = || kv.idem_gets.load(Ordering::Relaxed);
        // (The filter's build at open read the blocks' chunks.)
        let at_open = reads();
        for i in 0..1000 {
            assert_eq!(
                store.idempotency("acct", &format!("fresh-{i}")).unwrap(),
                None
            );
        }
        // A few false positives read sled; 1 MiB for 500 keys makes them rare.
        let read = reads() - at_open;
        assert!(read <= 3, "{read} sled reads for 1000 fresh keys");
        let before = reads();
        for i in 0..300 {
            let key = format!("closed-{i}");
            assert!(store.idempotency("acct", &key).unwrap().is_some(), "{key}");
        }
        for i in 0..200 {
            let key = format!("replayed-{i}");
            assert!(store.idempotency("acct", &key).unwrap().is_some(), "{key}");
        }
        // One chunk of each block the hash can lie in, newest first, until found.
        let read = reads() - before;
        assert!(
            (500..=1000).contains(&read),
            "{read} reads for 500 bound keys"
        );
        // Bound now: answered by the overlay, then, once checkpointed, from sled.
        bind(&store, "new", 500);
        let before = reads();
        assert!(store.idempotency("acct", "new").unwrap().is_some());
        assert_eq!(reads(), before);
        store.sync().unwrap();
        store.overlay.close().unwrap();
        store.checkpoint_step().unwrap();
        assert!(store.overlay.get_layers(&idem_key("acct", "new")).is_none());
        assert!(store.idempotency("acct", "new").unwrap().is_some());
        assert!(reads() > before);
        // Pruned past the TTL: their generation goes, with their slice's blocks (the
        // TTL of 1 s in slices of 250 ms).
        assert_eq!(store.prune_idempotency(Ts(250)).unwrap(), 500);
        assert_eq!(store.idempotency_filter().generations(), 1);
        assert_eq!(store.idempotency("acct", "closed-0").unwrap(), None);
        drop(store);
        drop(kv);

        // Built by its thread: until it is done lookups read sled; then they do not.
        let (store, kv) = open(true);
        let mut waited = 0;
        while !store.idempotency_filter().is_complete() {
            std::thread::sleep(std::time::Duration::from_millis(5));
            waited += 1;
            assert!(waited < 2000, "the filter was never built");
        }
        let before = kv.idem_gets.load(Ordering::Relaxed);
        for i in 0..100 {
            assert_eq!(
                store.idempotency("acct", &format!("fresh-{i}")).unwrap(),
                None
            );
        }
        assert!(kv.idem_gets.load(Ordering::Relaxed) - before <= 1);
        assert!(store.idempotency("acct", "new").unwrap().is_some());
        // Off: every lookup reads sled, as before the filter.
        drop(store);
        drop(kv);
        let kv = Arc::new(CountingKv {
            inner: SledKv::open(dir.path(), 1 << 20).unwrap(),
            idem_gets: AtomicU64::new(0),
        });
        let files = FsLogFiles::open(&dir.path().join("log")).unwrap();
        let mut options = Options::default();
        options.idempotency_filter.bytes = 0;
        let store = SledStore::open_on(kv.clone(), Box::new(files), options).unwrap();
        assert_eq!(store.idempotency("acct", "fresh").unwrap(), None);
        assert!(kv.idem_gets.load(Ordering::Relaxed) >= 1);
    }

    /// A store left by the previous release with group records (`L‖n` in sled) that no
    /// checkpoint reached opens with their writes applied, and without them afterwards.
    /// The records are made with the old format's own helper from the keys a real store
    /// wrote, cut into several records as the old group commit did.
    #[test]
    fn group_records_of_the_previous_release_are_replayed_and_removed() {
        use crate::store::overlay::{legacy_group_key, legacy_group_record, COVERED_KEY};
        let p = Pricing::standard();
        let written = tempfile::tempdir().unwrap();
        let writes: Vec<(Vec<u8>, Value)> = {
            let store = SledStore::open(written.path(), 1 << 20).unwrap();
            write_account(&store, "a", &p, false);
            write_account(&store, "b", &p, true);
            store.close().unwrap();
            // The previous release kept events in sled, as values; this one keeps runs.
            let mut writes: Vec<(Vec<u8>, Value)> = store
                .kv
                .range(Bound::Unbounded, Bound::Unbounded, false)
                .map(|e| e.unwrap())
                .filter(|(k, _)| k.as_slice() != COVERED_KEY && k[0] != runs::RUN)
                .map(|(k, v)| (k, Some(v)))
                .collect();
            for id in ["a", "b"] {
                for ev in store.events_from(id, 0, 10).unwrap() {
                    let bytes = encode(&EventRecordV3::from(&ev));
                    writes.push((event_key(id, ev.seq), Some(bytes)));
                }
            }
            writes
        };
        assert!(writes.len() > 4, "{}", writes.len());
        let old = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(old.path(), 1 << 20).unwrap();
            // Three records, and a delete in the last of a key the first wrote.
            let third = writes.len() / 3;
            let mut records: Vec<Vec<(Vec<u8>, Value)>> = vec![
                writes[..third].to_vec(),
                writes[third..2 * third].to_vec(),
                writes[2 * third..].to_vec(),
            ];
            records[0].push((b"Czombie".to_vec(), Some(encode(&7u64))));
            records[2].push((b"Czombie".to_vec(), None));
            for (n, r) in records.iter().enumerate() {
                kv.insert(&legacy_group_key(n as u64), &legacy_group_record(r))
                    .unwrap();
            }
            kv.sync().unwrap();
        }
        let store = SledStore::open(old.path(), 1 << 20).unwrap();
        assert_eq!(store.replayed(), 3);
        let legacy_left = scan_prefix(&*store.kv, &COVERED_KEY)
            .filter(|e| e.as_ref().unwrap().0.len() == 9)
            .count();
        assert_eq!(legacy_left, 0);
        for (k, v) in &writes {
            assert_eq!(&store.kv.get(k).unwrap(), v, "{}", display_key(k));
        }
        assert!(store.legacy_events);
        assert_eq!(store.feed_cursor("zombie").unwrap(), None);
        let a = store.snapshot("a").unwrap().expect("a's snapshot");
        assert_eq!(a.seq, 2);
        assert_eq!(store.events_from("b", 1, 10).unwrap().len(), 2);
        assert_eq!(store.totals().accounts, 2);
        // It writes on as usual, into the new log, and reopens with nothing old left.
        write_account(&store, "c", &p, false);
        store.sync().unwrap();
        drop(store);
        let store = SledStore::open(old.path(), 1 << 20).unwrap();
        assert_eq!(store.replayed(), 0);
        assert_eq!(store.totals().accounts, 3);
    }
}
