//! A deterministic simulator in the spirit of TigerBeetle's VOPR: from one `u64` seed it
//! drives the daemon's own code — the account core (`creditsd::actor::core`: activation,
//! catch-up, idempotency, decide, write ahead, apply, parked debits, snapshots, the
//! wake-up index) and the store (`SledStore`: the overlay, the group records, the
//! checkpointer, the segment log, replay at open, the key layout, feed ids, book totals) —
//! over `SimKv`, a key-value engine in memory that fails writes, fails syncs and crashes,
//! and `SimLogFiles`, the log's segment files in memory, as faulty as a disk can be.
//!
//! The sled model is sled's contract (`store/kv.rs`): each write is atomic, and a crash
//! keeps every write before the last successful sync and a random prefix of the writes
//! after it. The log's file model (`store/segment_log.rs`, `LogFiles`): bytes written are
//! durable only after a successful fdatasync of their file; at a crash the bytes written
//! since are all kept, none, a prefix (a torn write), or a random subset of their 512-byte
//! sectors; a write can fail having written a prefix of itself (a torn write, then the
//! error: ENOSPC); creating (preallocating) a segment can fail with ENOSPC; an fsync can
//! fail; a deleted segment can come back after a crash (its directory entry not synced).
//! Every failure is fail-stop, so here a crash. Only the tokio shell is not simulated:
//! the actor loop (which carries the core's outputs out) and the journal thread (here:
//! one `sync`, then the answers waiting on it). The checkpointer runs as steps the seed
//! chooses, between requests.
//!
//! A storage error is fail-stop in the daemon, so here it is a crash. After every crash
//! the node reopens the store on what the disk kept (replaying its log records) and the
//! checker asserts: no acknowledged mutation lost (refunds included), none applied twice,
//! books balance (`granted = debited − refunded + expired + held + available`, from the
//! domain's totals and again from the events' own numbers), snapshot + tail = full replay,
//! alerts fired once per crossing of the thresholds in force, the feed matches the log.
//! Replaying each log it checks every event against the state before it with its own
//! arithmetic (`Parts`): debits and holds take soonest-expiring first over monthly and the
//! promo blocks, then free, then packs; what comes back (a hold's rest, a refund) goes to
//! the sources it came from unless they expired; a refund gives back the last of what its
//! debit took and refunds never add up past it; members stay within their caps; time-
//! driven events (resets, promo and hold expiries) happen at their instants and the others
//! on an account caught up. Every answer must match its request, and every refusal too
//! (`debit_not_found` never for an acknowledged debit, ...).
//!
//! The mix: debits and holds (a third naming members when the account has some), captures,
//! releases, plan changes, purchases, grants, promo grants expiring hours to weeks ahead,
//! refunds (whole, partial, over, of unknown keys), members set and removed with caps, and
//! alert settings; retries, conflicting retries, parked debits.
//!
//! A failure prints its seed; `SIM_SEED=n cargo test --test simulator` replays it.
//! `SIM_SEEDS=n` (default 300) and `SIM_SEED_START` choose the range, `SIM_STEPS` (150)
//! the length; every failing seed is printed, up to `SIM_MAX_FAILURES` (10), then the run
//! stops. `benches/simulate.sh` runs thousands.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use creditsd::actor::core::{
    AccountCore, Client, Fatal, Input, Output, Request as CoreRequest, Rules,
};
use creditsd::actor::{ActorError, Outcome, Reply};
use creditsd::domain::account::Member;
use creditsd::domain::time::{add_months, period_index};
use creditsd::domain::{
    Account, Bucket, Buckets, Command, Credits, Event, EventBody, ForecastSetting, Notice, Pricing,
    Refusal, ReleaseReason, Taken, Ts,
};
use creditsd::store::kv::{Kv, KvIter};
use creditsd::store::overlay::Tuning;
use creditsd::store::segment_log::LogFiles;
use creditsd::store::sled_store::{FilterOptions, Options};
use creditsd::store::{Append, SledStore, StorageError, Store};

// ---------------------------------------------------------------- a small seeded PRNG

/// SplitMix64: tiny, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Every simulated request carries a key.
fn key_of(cmd: &Command) -> &str {
    creditsd::actor::fingerprint::key_of(cmd).expect("simulated requests have keys")
}

// ------------------------------------------------------------------- the faulty disk

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

struct Disk {
    /// What survives any crash.
    durable: Map,
    /// Every write since the last successful sync, in order.
    unsynced: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// `durable` with `unsynced` applied: what reads see.
    visible: Map,
    faults: Rng,
    write_fail_per_mille: u64,
    sync_fail_per_mille: u64,
    write_faults: u64,
    sync_faults: u64,
    /// Writes a crash took (a suffix of the unsynced ones).
    lost: u64,
}

/// The engine beneath the real store in the simulator.
struct SimKv(Mutex<Disk>);

fn io(what: &str) -> StorageError {
    StorageError::Io(format!("simulated {what} failure"))
}

impl SimKv {
    fn new(seed: u64, write_fail_per_mille: u64, sync_fail_per_mille: u64) -> SimKv {
        SimKv(Mutex::new(Disk {
            durable: Map::new(),
            unsynced: Vec::new(),
            visible: Map::new(),
            faults: Rng(seed ^ 0xdead_beef),
            write_fail_per_mille,
            sync_fail_per_mille,
            write_faults: 0,
            sync_faults: 0,
            lost: 0,
        }))
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes: every write before the last successful sync stays, and a prefix
    /// of the writes after it (the rest, a torn write first, is gone).
    fn crash(&self, rng: &mut Rng) {
        let mut d = self.disk();
        let unsynced = std::mem::take(&mut d.unsynced);
        let keep = rng.below(unsynced.len() as u64 + 1) as usize;
        d.lost += (unsynced.len() - keep) as u64;
        for (k, v) in unsynced.into_iter().take(keep) {
            match v {
                Some(v) => d.durable.insert(k, v),
                None => d.durable.remove(&k),
            };
        }
        d.visible = d.durable.clone();
    }

    fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
        let mut d = self.disk();
        let p = d.write_fail_per_mille;
        if d.faults.chance(p) {
            d.write_faults += 1;
            return Err(io("write"));
        }
        match value {
            Some(v) => d.visible.insert(key.to_vec(), v.to_vec()),
            None => d.visible.remove(key),
        };
        d.unsynced.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        Ok(())
    }
}

impl Kv for SimKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.disk().visible.get(key).cloned())
    }
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(key, Some(value))
    }
    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write(key, None)
    }
    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, rev: bool) -> KvIter<'_> {
        let d = self.disk();
        let valid = match (&lo, &hi) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a < b || (a == b && matches!((&lo, &hi), (Bound::Included(_), Bound::Included(_))))
            }
            _ => true,
        };
        let mut items: Vec<_> = if valid {
            d.visible
                .range((lo, hi))
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect()
        } else {
            Vec::new()
        };
        if rev {
            items.reverse();
        }
        Box::new(items.into_iter())
    }
    /// A failed sync makes nothing durable (the daemon then stops: fail-stop).
    fn sync(&self) -> Result<(), StorageError> {
        let mut d = self.disk();
        let p = d.sync_fail_per_mille;
        if d.faults.chance(p) {
            d.sync_faults += 1;
            return Err(io("fsync"));
        }
        d.unsynced.clear();
        d.durable = d.visible.clone();
        Ok(())
    }
}

/// One segment file: what reads see, what survives a crash, and the range written since
/// the last fdatasync.
struct SimFile {
    visible: Vec<u8>,
    durable: Vec<u8>,
    dirty: Option<(usize, usize)>,
}

struct LogDisk {
    files: BTreeMap<u64, SimFile>,
    /// Deleted since the last crash: each may come back (directory entry not synced).
    removed: Vec<(u64, SimFile)>,
    faults: Rng,
    write_fail_per_mille: u64,
    sync_fail_per_mille: u64,
    write_faults: u64,
    sync_faults: u64,
    torn_writes: u64,
    tails_lost: u64,
    removals_undone: u64,
    /// Torn or lost tails the log cut at open.
    tails_cut: u64,
}

/// The log's segment files beneath the real `SegmentLog` in the simulator.
struct SimLogFiles(Mutex<LogDisk>);

fn enospc() -> StorageError {
    StorageError::Io("simulated write failure: No space left on device".into())
}

impl SimLogFiles {
    fn new(seed: u64, write_fail_per_mille: u64, sync_fail_per_mille: u64) -> SimLogFiles {
        SimLogFiles(Mutex::new(LogDisk {
            files: BTreeMap::new(),
            removed: Vec::new(),
            faults: Rng(seed ^ 0x5e6_10c),
            write_fail_per_mille,
            sync_fail_per_mille,
            write_faults: 0,
            sync_faults: 0,
            torn_writes: 0,
            tails_lost: 0,
            removals_undone: 0,
            tails_cut: 0,
        }))
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, LogDisk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes: each file keeps what was fdatasynced, and of the bytes written
    /// since, all, none, a prefix, or some of their sectors; a deleted segment may return.
    fn crash(&self, rng: &mut Rng) {
        let mut d = self.disk();
        for (n, f) in std::mem::take(&mut d.removed) {
            if rng.chance(300) {
                d.removals_undone += 1;
                d.files.entry(n).or_insert(f);
            }
        }
        let mut lost = 0;
        for f in d.files.values_mut() {
            let mut kept = f.durable.clone();
            if let Some((lo, hi)) = f.dirty.take() {
                let hi = hi.min(f.visible.len());
                if kept.len() < f.visible.len() {
                    kept.resize(f.visible.len(), 0);
                }
                let keep = |kept: &mut Vec<u8>, a: usize, b: usize| {
                    kept[a..b].copy_from_slice(&f.visible[a..b]);
                };
                match rng.below(4) {
                    0 => keep(&mut kept, lo, hi),
                    1 => lost += 1,
                    2 => {
                        let cut = lo + rng.below((hi - lo) as u64 + 1) as usize;
                        keep(&mut kept, lo, cut);
                        lost += 1;
                    }
                    _ => {
                        let mut at = lo;
                        while at < hi {
                            let end = ((at / 512 + 1) * 512).min(hi);
                            if rng.chance(500) {
                                keep(&mut kept, at, end);
                            }
                            at = end;
                        }
                        lost += 1;
                    }
                }
            }
            f.durable = kept.clone();
            f.visible = kept;
        }
        d.tails_lost += lost;
    }

    /// Whether a fault strikes now (and counts it).
    fn write_fault(d: &mut LogDisk) -> bool {
        let p = d.write_fail_per_mille;
        let hit = d.faults.chance(p);
        d.write_faults += hit as u64;
        hit
    }
}

impl LogFiles for SimLogFiles {
    fn list(&self) -> Result<Vec<u64>, StorageError> {
        Ok(self.disk().files.keys().copied().collect())
    }
    fn read(&self, segment: u64) -> Result<Vec<u8>, StorageError> {
        self.disk()
            .files
            .get(&segment)
            .map(|f| f.visible.clone())
            .ok_or_else(|| StorageError::Io(format!("no segment {segment}")))
    }
    /// Reads what is visible: the store reads only values it indexed, which are durable,
    /// so what a crash kept is what is read (a read past it is a bug the checker sees).
    fn read_at(&self, segment: u64, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let d = self.disk();
        let f = d
            .files
            .get(&segment)
            .ok_or_else(|| StorageError::Io(format!("no segment {segment}")))?;
        let (at, end) = (offset as usize, offset as usize + len as usize);
        f.visible
            .get(at..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StorageError::Io(format!("segment {segment} ends before byte {end}")))
    }
    fn create(&self, segment: u64, len: u64) -> Result<(), StorageError> {
        let mut d = self.disk();
        if SimLogFiles::write_fault(&mut d) {
            // ENOSPC while preallocating: the file may be there, empty.
            if d.faults.chance(500) {
                d.files.entry(segment).or_insert(SimFile {
                    visible: Vec::new(),
                    durable: Vec::new(),
                    dirty: None,
                });
            }
            return Err(enospc());
        }
        assert!(
            !d.files.contains_key(&segment),
            "segment {segment} created twice"
        );
        // Small preallocations in the simulator: the log's own size rules still hold.
        let zeros = vec![0; len as usize];
        d.files.insert(
            segment,
            SimFile {
                visible: zeros.clone(),
                durable: zeros,
                dirty: None,
            },
        );
        Ok(())
    }
    fn write(&self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), StorageError> {
        let mut d = self.disk();
        let fault = SimLogFiles::write_fault(&mut d);
        // A failed write may have written a prefix of itself (a torn write).
        let n = if fault {
            d.torn_writes += 1;
            d.faults.below(bytes.len() as u64 + 1) as usize
        } else {
            bytes.len()
        };
        let f = d
            .files
            .get_mut(&segment)
            .ok_or_else(|| StorageError::Io(format!("no segment {segment}")))?;
        let at = offset as usize;
        if f.visible.len() < at + n {
            f.visible.resize(at + n, 0);
        }
        f.visible[at..at + n].copy_from_slice(&bytes[..n]);
        if n > 0 {
            f.dirty = Some(match f.dirty {
                Some((lo, hi)) => (lo.min(at), hi.max(at + n)),
                None => (at, at + n),
            });
        }
        if fault {
            Err(enospc())
        } else {
            Ok(())
        }
    }
    /// A failed fsync makes nothing durable (the daemon then stops: fail-stop).
    fn sync(&self, segment: u64) -> Result<(), StorageError> {
        let mut d = self.disk();
        let p = d.sync_fail_per_mille;
        if d.faults.chance(p) {
            d.sync_faults += 1;
            return Err(io("fdatasync"));
        }
        let f = d
            .files
            .get_mut(&segment)
            .ok_or_else(|| StorageError::Io(format!("no segment {segment}")))?;
        f.durable = f.visible.clone();
        f.dirty = None;
        Ok(())
    }
    fn cut(&self, segment: u64, len: u64, prealloc: u64) -> Result<(), StorageError> {
        let mut d = self.disk();
        d.tails_cut += 1;
        let f = d
            .files
            .get_mut(&segment)
            .ok_or_else(|| StorageError::Io(format!("no segment {segment}")))?;
        f.visible.truncate(len as usize);
        f.visible.resize(prealloc.max(len) as usize, 0);
        f.durable = f.visible.clone();
        f.dirty = None;
        Ok(())
    }
    fn remove(&self, segment: u64) -> Result<(), StorageError> {
        let mut d = self.disk();
        if let Some(f) = d.files.remove(&segment) {
            d.removed.push((segment, f));
        }
        Ok(())
    }
}

/// The `LogFiles` handed to the store: the simulator keeps the files themselves.
struct SharedLog(Arc<SimLogFiles>);

impl LogFiles for SharedLog {
    fn list(&self) -> Result<Vec<u64>, StorageError> {
        self.0.list()
    }
    fn read(&self, segment: u64) -> Result<Vec<u8>, StorageError> {
        self.0.read(segment)
    }
    fn read_at(&self, segment: u64, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        self.0.read_at(segment, offset, len)
    }
    fn create(&self, segment: u64, len: u64) -> Result<(), StorageError> {
        self.0.create(segment, len)
    }
    fn write(&self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), StorageError> {
        self.0.write(segment, offset, bytes)
    }
    fn sync(&self, segment: u64) -> Result<(), StorageError> {
        self.0.sync(segment)
    }
    fn cut(&self, segment: u64, len: u64, prealloc: u64) -> Result<(), StorageError> {
        self.0.cut(segment, len, prealloc)
    }
    fn remove(&self, segment: u64) -> Result<(), StorageError> {
        self.0.remove(segment)
    }
}

// ------------------------------------------------------- the node: the daemon's code

/// The process died (a storage error is fail-stop, or the simulator pulled the plug).
#[derive(Debug)]
struct Crash;

fn fail_stop<T>(r: Result<T, StorageError>) -> Result<T, Crash> {
    r.map_err(|e| match e {
        StorageError::Io(_) | StorageError::Locked { .. } => Crash,
        StorageError::Corrupt { .. } => panic!("the simulator never corrupts a record: {e}"),
        StorageError::Newer { .. } => panic!("the simulator writes no newer store: {e}"),
    })
}

const SNAPSHOT_EVERY: u64 = 4;
/// Longer than any simulated history, so a retried key is always a duplicate.
const IDEMPOTENCY_TTL_MS: i64 = 100 * 365 * 86_400_000;
const PARKED_MAX: usize = 8;

/// A simulated client: the number of its request. Clients never hang up here.
struct Asker(u64);

impl Client for Asker {
    fn gone(&self) -> bool {
        false
    }
}

/// An answer: sent at once, or held until the next successful sync.
struct Answered {
    request: u64,
    reply: Reply,
}

/// What lives in memory: the store opened on the disk, the cores of the accounts touched
/// since the last crash, and the journal's queue of answers waiting for durability.
struct Node {
    store: SledStore,
    cores: BTreeMap<String, AccountCore<Asker>>,
    waiting: Vec<Answered>,
    pricing: Pricing,
}

impl Node {
    /// Opens the real store on the disk: it replays the log records a crash left.
    fn open(
        kv: &Arc<SimKv>,
        log: &Arc<SimLogFiles>,
        tuning: Tuning,
        pricing: &Pricing,
    ) -> Result<Node, Crash> {
        let kv: Arc<dyn Kv> = kv.clone();
        let store = fail_stop(SledStore::open_on(
            kv,
            Box::new(SharedLog(log.clone())),
            Options {
                tuning,
                checkpointer_thread: false,
                // Built from the disk during the open (no thread), so every history runs
                // with it complete: a fresh key's lookup is answered by it, a retried one
                // must be found through it, replay at open included.
                idempotency_filter: FilterOptions {
                    bytes: 1 << 16,
                    ttl_ms: IDEMPOTENCY_TTL_MS,
                    build_thread: false,
                    build_delay: Duration::ZERO,
                },
            },
        ))?;
        assert!(
            store.idempotency_filter().is_complete(),
            "the idempotency filter was not built at open"
        );
        Ok(Node {
            store,
            cores: BTreeMap::new(),
            waiting: Vec::new(),
            pricing: pricing.clone(),
        })
    }

    /// One input to one account's core (activated on first use); answers what must be
    /// sent now. What must wait for durability joins `waiting`.
    fn handle(&mut self, id: &str, input: Input<Asker>, now: Ts) -> Result<Vec<Answered>, Crash> {
        if !self.cores.contains_key(id) {
            let core = AccountCore::activate(id, &self.store).map_err(|Fatal(_)| Crash)?;
            self.cores.insert(id.to_string(), core);
        }
        let rules = Rules {
            pricing: &self.pricing,
            snapshot_every: SNAPSHOT_EVERY,
            idempotency_ttl_ms: IDEMPOTENCY_TTL_MS,
            parked_max: PARKED_MAX,
        };
        let core = self.cores.get_mut(id).expect("activated");
        let outputs = core
            .handle(input, &self.store, rules, now)
            .map_err(|Fatal(_)| Crash)?;
        let mut now_out = Vec::new();
        for o in outputs {
            match o {
                Output::Answer { client, reply } => now_out.push(Answered {
                    request: client.0,
                    reply,
                }),
                Output::AfterSync { client, reply } => self.waiting.push(Answered {
                    request: client.0,
                    reply,
                }),
                Output::SyncSoon => {}
            }
        }
        Ok(now_out)
    }

    /// The daemon's sweep plus `Msg::Wake`: wakes every account due in the index.
    fn sweep(&mut self, now: Ts) -> Result<Vec<Answered>, Crash> {
        let mut out = Vec::new();
        for (at, id) in fail_stop(self.store.due_accounts(now, usize::MAX))? {
            out.extend(self.handle(&id, Input::Wake { indexed_at: at }, now)?);
        }
        Ok(out)
    }

    /// Every actor's timer: time-driven events and parked waits that ended.
    fn tick(&mut self, now: Ts) -> Result<Vec<Answered>, Crash> {
        let ids: Vec<String> = self.cores.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.handle(&id, Input::Tick, now)?);
        }
        Ok(out)
    }

    /// The journal: one sync (the group record, then the engine's), then every answer
    /// waiting on it.
    fn group_commit(&mut self) -> Result<Vec<Answered>, Crash> {
        fail_stop(self.store.sync())?;
        Ok(std::mem::take(&mut self.waiting))
    }

    /// The checkpointer's work, as one step.
    /// Answers how many merges of idempotency blocks it made.
    fn checkpoint(&mut self) -> Result<u64, Crash> {
        let before = self.store.idempotency_index().merges();
        fail_stop(self.store.checkpoint_step())?;
        Ok(self.store.idempotency_index().merges() - before)
    }

    /// A graceful stop: every core snapshots, then one last group commit.
    fn stop(&mut self, now: Ts) -> Result<Vec<Answered>, Crash> {
        let ids: Vec<String> = self.cores.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.handle(&id, Input::Stop, now)?);
        }
        out.extend(self.group_commit()?);
        Ok(out)
    }
}

// --------------------------------------------------------------- clients and checks

#[derive(Clone)]
enum Request {
    Create {
        id: String,
        plan: String,
        anchor: Ts,
    },
    Mutate {
        id: String,
        cmd: Command,
        /// How long it may park short of credits (0: answer 402 now).
        wait_ms: i64,
    },
}

/// Counts of what the histories crossed, summed over the seeds.
macro_rules! stats {
    ($($field:ident),* $(,)?) => {
        #[derive(Default, Debug, Clone, Copy)]
        struct Stats {
            $($field: u64,)*
        }
        impl std::ops::AddAssign for Stats {
            fn add_assign(&mut self, o: Stats) {
                $(self.$field += o.$field;)*
            }
        }
    };
}

stats!(
    steps,
    crashes,
    write_faults,
    sync_faults,
    acknowledged,
    duplicates,
    refusals,
    events,
    resets,
    expiries,
    alerts,
    snapshots_checked,
    parked_served,
    group_records_replayed,
    log_torn_writes,
    log_tails_lost,
    log_removals_undone,
    log_tails_cut,
    writes_lost,
    checkpoints,
    idempotency_merges,
    graceful_restarts,
    // Second edition.
    promo_grants,
    promo_refused,
    promo_expiries,
    promo_taken,
    refunds,
    refunds_partial,
    refunds_expired,
    debit_not_found,
    refund_exceeds,
    member_sets,
    member_removals,
    member_debits,
    member_cap_refusals,
    member_not_found,
    alerts_set,
    forecast_alerts,
);

const OPERATIONS: &[&str] = &[
    "face_generation",
    "sample_image",
    "video_generation",
    "caption_generation",
];
const PLANS: &[&str] = &["free", "starter", "growth", "agency"];
const PACKS: &[&str] = &["pack_100", "pack_250", "pack_500", "pack_1000"];
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

struct Sim {
    rng: Rng,
    kv: Arc<SimKv>,
    log: Arc<SimLogFiles>,
    tuning: Tuning,
    node: Node,
    pricing: Pricing,
    now: Ts,
    next_request: u64,
    accounts: Vec<String>,
    /// Requests sent and not yet answered (lost in a crash, parked, or waiting on the
    /// journal): what a client would retry.
    unanswered: BTreeMap<u64, Request>,
    /// Requests the running node may still answer (forgotten at a crash).
    in_flight: BTreeMap<u64, Request>,
    /// Every request ever sent, for retries and conflicts.
    sent: Vec<(u64, Request)>,
    /// Acknowledged mutations: (account, key) → the event first acknowledged.
    acked: BTreeMap<(String, String), Event>,
    /// Acknowledged creations: account → its `Created` event.
    acked_created: BTreeMap<String, Event>,
    /// Keys of the debits sent to each account, and of those acknowledged, for refunds.
    debit_keys: BTreeMap<String, Vec<String>>,
    acked_debit_keys: BTreeMap<String, Vec<String>>,
    /// Members each account was sent (`m3` never is: debits naming it are refused).
    members: BTreeMap<String, Vec<String>>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let write_fail = rng.below(8);
        let sync_fail = rng.below(15);
        // Layers freeze after a few keys or many, so checkpoints land everywhere.
        let tuning = Tuning {
            freeze_keys: rng.range(3, 200) as usize,
            freeze_after: Duration::from_secs(u32::MAX as u64),
            frozen_max: rng.range(1, 3) as usize,
            active_keys_max: usize::MAX,
            // Small records half the time: a crash then keeps some of a group's commits
            // and not the others, as it does to a big group in the daemon.
            record_bytes_max: if rng.chance(500) {
                rng.range(64, 2048) as usize
            } else {
                creditsd::store::overlay::RECORD_BYTES_MAX
            },
            // Tiny segments, so that new ones start and covered ones go all the time.
            segment_bytes: rng.range(512, 16_384) as u64,
        };
        // Start anywhere in 2024-2025, on the 29th to 31st half of the time.
        let start = Ts(1_704_067_200_000 + rng.range(0, 700) * DAY_MS);
        let kv = Arc::new(SimKv::new(seed, write_fail, sync_fail));
        // The log's fault rates, from the seed without drawing on `rng`.
        let mut log_rng = Rng(seed ^ 0x10c_f11e5);
        let log = Arc::new(SimLogFiles::new(seed, log_rng.below(8), log_rng.below(15)));
        // Small limits now and then, so `too_many_blocks` and `too_many_members` happen.
        let mut pricing = Pricing::standard();
        if rng.chance(300) {
            pricing.promo_blocks_max = rng.range(1, 4) as usize;
        }
        if rng.chance(300) {
            pricing.members_max = rng.range(1, 2) as usize;
        }
        // The first open writes too (the store format marker), so it may meet a fault:
        // the process died, and opens again, as after any crash.
        let node = loop {
            match Node::open(&kv, &log, tuning, &pricing) {
                Ok(node) => break node,
                Err(Crash) => {
                    kv.crash(&mut rng);
                    log.crash(&mut rng);
                }
            }
        };
        Sim {
            kv,
            log,
            tuning,
            node,
            rng,
            pricing,
            now: start,
            next_request: 1,
            accounts: Vec::new(),
            unanswered: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            sent: Vec::new(),
            acked: BTreeMap::new(),
            acked_created: BTreeMap::new(),
            debit_keys: BTreeMap::new(),
            acked_debit_keys: BTreeMap::new(),
            members: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn fresh_key(&mut self) -> String {
        format!("k{}", self.next_request)
    }

    /// A fresh request for account `id`. The first edition's weights, scaled down a
    /// little to make room for promo grants, refunds, members and alert settings.
    fn new_command(&mut self, id: &str) -> Command {
        let key = self.fresh_key();
        let roll = self.rng.below(1000);
        if (890..950).contains(&roll) {
            return self.refund(id, key);
        }
        let now = self.now;
        let member = self.member_for(id);
        let r = &mut self.rng;
        match roll {
            0..=399 => Command::Debit {
                operation: r.pick(OPERATIONS).to_string(),
                quantity: r.range(1, 12) as u32,
                metadata: if r.chance(200) {
                    vec![("job".into(), format!("{}", r.below(1000)))]
                } else {
                    Vec::new()
                },
                idempotency_key: key,
                member,
            },
            400..=539 => Command::PlaceHold {
                operation: r.pick(OPERATIONS).to_string(),
                quantity: r.range(1, 6) as u32,
                ttl_ms: r.range(60_000, 3 * DAY_MS),
                idempotency_key: key,
                member,
            },
            540..=609 => Command::Capture {
                hold_id: r.range(1, 8) as u64,
                credits: r.chance(500).then(|| Credits(r.below(30))),
                idempotency_key: Some(key),
            },
            610..=669 => Command::Release {
                hold_id: r.range(1, 8) as u64,
                idempotency_key: Some(key),
            },
            670..=729 => Command::ChangePlan {
                plan: r.pick(PLANS).to_string(),
                idempotency_key: key,
            },
            730..=799 => Command::Purchase {
                pack: r.pick(PACKS).to_string(),
                payment_ref: format!("pay-{key}"),
            },
            800..=839 => Command::Grant {
                bucket: *r.pick(&[Bucket::Monthly, Bucket::Free, Bucket::Packs]),
                credits: Credits(r.range(1, 120) as u64),
                reason: "support".into(),
                idempotency_key: key,
                expires_at: None,
            },
            // Promo credits expiring hours to days ahead (now and then not in the future:
            // refused), so blocks expire during a run, interleaved with periods.
            840..=889 => Command::Grant {
                bucket: Bucket::Promo,
                credits: Credits(r.range(1, 150) as u64),
                reason: "promo".into(),
                idempotency_key: key,
                expires_at: Some(if r.chance(60) {
                    now.plus_millis(-r.range(0, DAY_MS))
                } else if r.chance(700) {
                    now.plus_millis(r.range(HOUR_MS, 2 * DAY_MS))
                } else {
                    now.plus_millis(r.range(2 * DAY_MS, 40 * DAY_MS))
                }),
            },
            950..=969 => Command::SetMember {
                member: format!("m{}", r.below(3)),
                cap: r.chance(750).then(|| Credits(r.range(0, 80) as u64)),
                idempotency_key: key,
            },
            970..=979 => Command::RemoveMember {
                member: match self.members.get(id) {
                    Some(ms) if r.chance(800) => r.pick(ms).clone(),
                    _ => format!("m{}", r.below(4)),
                },
                idempotency_key: key,
            },
            _ => Command::SetAlerts {
                thresholds: r.chance(750).then(|| {
                    let mut t = BTreeSet::new();
                    if r.chance(500) {
                        t.insert(0u8);
                    }
                    let n = r.range(1, 8) as usize;
                    while t.len() < n {
                        t.insert(r.below(101) as u8);
                    }
                    t.into_iter().rev().collect()
                }),
                forecast: match r.below(4) {
                    0 => ForecastSetting::Config,
                    1 => ForecastSetting::Off,
                    2 => ForecastSetting::Hours(r.range(1, 72) as u32),
                    _ => ForecastSetting::Hours(r.range(1, 720) as u32),
                },
                idempotency_key: key,
            },
        }
    }

    /// The member a debit or hold names, a third of the time when the account was sent
    /// members (one of them, or now and then `m3`, which never is one); else rarely.
    fn member_for(&mut self, id: &str) -> Option<String> {
        match self.members.get(id) {
            Some(ms) if self.rng.chance(330) => Some(if self.rng.chance(100) {
                "m3".to_string()
            } else {
                self.rng.pick(ms).clone()
            }),
            _ => self.rng.chance(10).then(|| "m3".to_string()),
        }
    }

    /// A refund: mostly of a debit sent to this account (whole, partial, or more than it
    /// took), sometimes of another request's key or of a key nobody sent.
    fn refund(&mut self, id: &str, key: String) -> Command {
        let roll = self.rng.below(100);
        let debit_key = match (self.acked_debit_keys.get(id), self.debit_keys.get(id)) {
            (Some(keys), _) if roll < 65 => self.rng.pick(keys).clone(),
            (_, Some(keys)) if roll < 80 => self.rng.pick(keys).clone(),
            _ if roll < 92 && !self.sent.is_empty() => match &self.rng.pick(&self.sent).1 {
                Request::Mutate { cmd, .. } => key_of(cmd).to_string(),
                Request::Create { id, .. } => id.clone(),
            },
            _ => format!("nokey-{}", self.rng.below(1000)),
        };
        let credits = match self.rng.below(100) {
            0..=39 => None,
            40..=87 => Some(Credits(self.rng.range(1, 25) as u64)),
            _ => Some(Credits(self.rng.range(30, 400) as u64)),
        };
        Command::Refund {
            debit_key,
            credits,
            reason: "customer".into(),
            idempotency_key: key,
            debit: None,
        }
    }

    /// The same key with another body: must be a conflict, never applied.
    fn conflicting(cmd: &Command) -> Command {
        let mut c = cmd.clone();
        match &mut c {
            Command::Debit { quantity, .. } | Command::PlaceHold { quantity, .. } => *quantity += 1,
            Command::Capture { hold_id, .. } | Command::Release { hold_id, .. } => *hold_id += 100,
            Command::ChangePlan { plan, .. } => plan.push('x'),
            Command::Purchase { pack, .. } => {
                *pack = if pack == "pack_100" {
                    "pack_250".into()
                } else {
                    "pack_100".into()
                }
            }
            Command::Grant { credits, .. } => *credits = credits.plus(Credits(1)),
            Command::Refund { credits, .. } => {
                *credits = Some(credits.map_or(Credits(1), |c| c.plus(Credits(1))))
            }
            Command::SetAlerts { forecast, .. } => {
                *forecast = match forecast {
                    ForecastSetting::Hours(h) => ForecastSetting::Hours(*h % 720 + 1),
                    _ => ForecastSetting::Hours(5),
                }
            }
            Command::SetMember { cap, .. } => {
                *cap = Some(cap.map_or(Credits(0), |c| c.plus(Credits(1))))
            }
            Command::RemoveMember { member, .. } => member.push('x'),
        }
        c
    }

    fn run(&mut self, steps: u64) -> Result<(), String> {
        for _ in 0..steps {
            self.stats.steps += 1;
            self.advance_clock();
            match self.step() {
                Ok(Ok(())) => {}
                Ok(Err(broken)) => return Err(broken),
                Err(Crash) => self.crash_and_recover()?,
            }
        }
        // The end: flush what is waiting, then crash once more and check everything.
        if let Ok(done) = self.node.group_commit() {
            self.settle(done)?;
        }
        self.crash_and_recover()?;
        let d = self.kv.disk();
        let l = self.log.disk();
        self.stats.write_faults = d.write_faults + l.write_faults;
        self.stats.sync_faults = d.sync_faults + l.sync_faults;
        self.stats.writes_lost = d.lost;
        self.stats.log_torn_writes = l.torn_writes;
        self.stats.log_tails_lost = l.tails_lost;
        self.stats.log_removals_undone = l.removals_undone;
        self.stats.log_tails_cut = l.tails_cut;
        Ok(())
    }

    fn advance_clock(&mut self) {
        let ms = if self.rng.chance(30) {
            self.rng.range(DAY_MS, 45 * DAY_MS)
        } else {
            self.rng.range(0, 2 * HOUR_MS)
        };
        self.now = self.now.plus_millis(ms);
    }

    /// One step of the world. `Err(Crash)`: the process died; `Ok(Err(_))`: an
    /// invariant broke.
    fn step(&mut self) -> Result<Result<(), String>, Crash> {
        let roll = self.rng.below(1000);
        if self.accounts.is_empty() || (roll < 40 && self.accounts.len() < 12) {
            let id = format!("acct-{}", self.accounts.len());
            // Anchors in the past or the future, often on a day some months lack.
            let anchor = if self.rng.chance(500) {
                self.now
            } else {
                let day = self.now.day_index() - self.rng.range(-40, 400);
                Ts(day * DAY_MS + self.rng.range(0, DAY_MS - 1))
            };
            let anchor = Ts(anchor.0.max(0));
            self.accounts.push(id.clone());
            let plan = self.rng.pick(PLANS).to_string();
            return self.send(Request::Create { id, plan, anchor });
        }
        let answers = match roll {
            40..=59 => {
                self.stats.crashes += 1;
                return Err(Crash);
            }
            60..=64 => {
                self.stats.graceful_restarts += 1;
                let done = self.node.stop(self.now)?;
                if let Err(e) = self.settle(done) {
                    return Ok(Err(e));
                }
                self.in_flight.clear();
                self.node = Node::open(&self.kv, &self.log, self.tuning, &self.pricing)?;
                return Ok(self.check_disk());
            }
            65..=199 => self.node.group_commit()?,
            200..=239 => {
                self.stats.checkpoints += 1;
                self.stats.idempotency_merges += self.node.checkpoint()?;
                Vec::new()
            }
            240..=269 => self.node.sweep(self.now)?,
            270..=299 => self.node.tick(self.now)?,
            300..=429 if !self.sent.is_empty() => {
                // A retry: of something unanswered (what a client does after a timeout
                // or a crash), or of anything already sent.
                let req = if !self.unanswered.is_empty() && self.rng.chance(700) {
                    let i = self.rng.below(self.unanswered.len() as u64) as usize;
                    let (_, r) = self.unanswered.iter().nth(i).expect("in range");
                    r.clone()
                } else {
                    self.rng.pick(&self.sent).1.clone()
                };
                let req = match req {
                    Request::Mutate { id, cmd, wait_ms } if self.rng.chance(150) => {
                        Request::Mutate {
                            cmd: Self::conflicting(&cmd),
                            id,
                            wait_ms,
                        }
                    }
                    r => r,
                };
                return self.send(req);
            }
            _ => {
                let id = self.rng.pick(&self.accounts).clone();
                let cmd = self.new_command(&id);
                match &cmd {
                    Command::Debit {
                        idempotency_key, ..
                    } => {
                        let keys = self.debit_keys.entry(id.clone()).or_default();
                        keys.push(idempotency_key.clone());
                    }
                    Command::SetMember { member, .. } => {
                        let ms = self.members.entry(id.clone()).or_default();
                        if !ms.contains(member) {
                            ms.push(member.clone());
                        }
                    }
                    _ => {}
                }
                let may_wait = matches!(cmd, Command::Debit { .. } | Command::PlaceHold { .. });
                let wait_ms = if may_wait && self.rng.chance(150) {
                    self.rng.range(HOUR_MS, 30 * HOUR_MS)
                } else {
                    0
                };
                return self.send(Request::Mutate { id, cmd, wait_ms });
            }
        };
        Ok(self.settle(answers))
    }

    fn send(&mut self, req: Request) -> Result<Result<(), String>, Crash> {
        let n = self.next_request;
        self.next_request += 1;
        self.unanswered.insert(n, req.clone());
        self.in_flight.insert(n, req.clone());
        self.sent.push((n, req.clone()));
        let client = Asker(n);
        let (id, input) = match req {
            Request::Create { id, plan, anchor } => (
                id,
                Input::Create {
                    plan,
                    anchor: Some(anchor),
                    client,
                },
            ),
            Request::Mutate { id, cmd, wait_ms } => (
                id,
                Input::Mutate(CoreRequest {
                    cmd,
                    dry_run: false,
                    wait_ms,
                    client,
                }),
            ),
        };
        let answers = self.node.handle(&id, input, self.now)?;
        Ok(self.settle(answers))
    }

    /// An answered retry settles the earlier unanswered sends of the same request.
    fn drop_unanswered_same(&mut self, req: &Request) {
        let same = |r: &Request| match (r, req) {
            (Request::Create { id: a, .. }, Request::Create { id: b, .. }) => a == b,
            (Request::Mutate { id: a, cmd: x, .. }, Request::Mutate { id: b, cmd: y, .. }) => {
                a == b && key_of(x) == key_of(y)
            }
            _ => false,
        };
        self.unanswered.retain(|_, r| !same(r));
    }

    /// Checks and records answers, as the clients receive them.
    fn settle(&mut self, answers: Vec<Answered>) -> Result<(), String> {
        for a in answers {
            let req = self
                .in_flight
                .remove(&a.request)
                .ok_or("an answer for a request nobody is waiting on")?;
            self.unanswered.remove(&a.request);
            match a.reply {
                Ok(Outcome::Applied { event, duplicate }) => {
                    self.acknowledge(&req, event, duplicate)?
                }
                Ok(other) => return Err(format!("an unexpected answer {other:?}")),
                Err(ActorError::Refused(_)) | Err(ActorError::IdempotencyConflict { .. }) => {
                    self.stats.refusals += 1;
                    // A refused request leaves no trace under its key, unless the key was
                    // bound by an earlier request (then the answer is a conflict).
                    if let (Err(ActorError::Refused(_)), Request::Mutate { id, cmd, .. }) =
                        (&a.reply, &req)
                    {
                        let rec = self
                            .node
                            .store
                            .idempotency(id, key_of(cmd))
                            .expect("readable");
                        if rec.is_some() {
                            return Err(format!("a refused request bound key {}", key_of(cmd)));
                        }
                    }
                    if let (Err(ActorError::Refused(r)), Request::Mutate { id, cmd, .. }) =
                        (&a.reply, &req)
                    {
                        self.check_refusal(id, cmd, r)?;
                    }
                    self.drop_unanswered_same(&req);
                }
                Err(ActorError::NotFound) => {
                    if let Request::Mutate { id, .. } = &req {
                        if self.acked_created.contains_key(id) {
                            return Err(format!("acknowledged account {id} is not found"));
                        }
                    }
                    self.drop_unanswered_same(&req);
                }
                Err(ActorError::Exists) => self.drop_unanswered_same(&req),
                // Superseded by its own retry, or turned away: the client may retry.
                Err(ActorError::Unavailable) | Err(ActorError::Overloaded) => {}
                Err(e @ ActorError::Corrupt(_)) => return Err(format!("{e:?}")),
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, req: &Request, event: Event, duplicate: bool) -> Result<(), String> {
        self.stats.acknowledged += 1;
        self.stats.duplicates += duplicate as u64;
        match req {
            Request::Create { id, .. } => {
                self.acked_created.insert(id.clone(), event);
            }
            Request::Mutate { id, cmd, wait_ms } => {
                if *wait_ms > 0 {
                    self.stats.parked_served += 1;
                }
                if !answers(cmd, &event.body) {
                    return Err(format!(
                        "{id}: {cmd:?} was answered with the event of another request: {event:?}"
                    ));
                }
                self.check_refund_names_its_debit(id, &event)?;
                let k = (id.clone(), key_of(cmd).to_string());
                if !duplicate && !self.acked.contains_key(&k) {
                    self.count_acknowledged(&event);
                    if let EventBody::Debited {
                        idempotency_key, ..
                    } = &event.body
                    {
                        let keys = self.acked_debit_keys.entry(id.clone()).or_default();
                        keys.push(idempotency_key.clone());
                    }
                }
                if let Some(first) = self.acked.get(&k) {
                    if *first != event {
                        return Err(format!(
                            "key {k:?} answered twice with different events:\n{first:?}\n{event:?}"
                        ));
                    }
                    if !duplicate {
                        return Err(format!("key {k:?} applied twice"));
                    }
                } else {
                    self.acked.insert(k, event);
                }
            }
        }
        self.drop_unanswered_same(req);
        Ok(())
    }

    fn count_acknowledged(&mut self, event: &Event) {
        let st = &mut self.stats;
        match &event.body {
            EventBody::Granted {
                expires_at: Some(_),
                ..
            } => st.promo_grants += 1,
            EventBody::Refunded {
                part,
                returned,
                debit_seq,
                ..
            } => {
                st.refunds += 1;
                st.refunds_expired += (part.total() != returned.total()) as u64;
                // Partial: less than the whole debit (the debit is in `acked` or not).
                let whole = self.acked.values().find_map(|e| match &e.body {
                    EventBody::Debited { credits, .. } if e.seq == *debit_seq => Some(*credits),
                    _ => None,
                });
                st.refunds_partial += whole.is_some_and(|w| w != part.total()) as u64;
            }
            EventBody::MemberSet { .. } => st.member_sets += 1,
            EventBody::MemberRemoved { .. } => st.member_removals += 1,
            EventBody::AlertsSet { .. } => st.alerts_set += 1,
            EventBody::Debited {
                member: Some(_), ..
            }
            | EventBody::HoldPlaced {
                member: Some(_), ..
            } => st.member_debits += 1,
            _ => {}
        }
    }

    /// An acknowledged refund names the seq of the debit acknowledged under its key.
    fn check_refund_names_its_debit(&self, id: &str, event: &Event) -> Result<(), String> {
        let EventBody::Refunded {
            debit_key,
            debit_seq,
            ..
        } = &event.body
        else {
            return Ok(());
        };
        match self.acked.get(&(id.to_string(), debit_key.clone())) {
            Some(d) if !matches!(d.body, EventBody::Debited { .. }) => Err(format!(
                "{id}: refund {event:?} of key {debit_key}, which is no debit: {d:?}"
            )),
            Some(d) if d.seq != *debit_seq => Err(format!(
                "{id}: refund of {debit_key} names seq {debit_seq}, the debit is seq {}",
                d.seq
            )),
            _ => Ok(()),
        }
    }

    /// A refusal must fit its request, and what it says must be true of what the clients
    /// were told.
    fn check_refusal(&mut self, id: &str, cmd: &Command, r: &Refusal) -> Result<(), String> {
        let acked_debit = |key: &str| {
            self.acked
                .get(&(id.to_string(), key.to_string()))
                .and_then(|e| match &e.body {
                    EventBody::Debited { credits, .. } => Some(*credits),
                    _ => None,
                })
        };
        let named = match cmd {
            Command::Debit { member, .. } | Command::PlaceHold { member, .. } => member.as_deref(),
            Command::RemoveMember { member, .. } => Some(member.as_str()),
            _ => None,
        };
        let fits = match (r, cmd) {
            (Refusal::DebitNotFound(k), Command::Refund { debit_key, .. }) => {
                self.stats.debit_not_found += 1;
                if acked_debit(debit_key).is_some() {
                    return Err(format!(
                        "{id}: refund of the acknowledged debit {debit_key}: debit_not_found"
                    ));
                }
                k == debit_key
            }
            (
                Refusal::RefundExceedsDebit {
                    refundable,
                    requested,
                },
                Command::Refund {
                    debit_key, credits, ..
                },
            ) => {
                self.stats.refund_exceeds += 1;
                (requested > refundable || requested.is_zero())
                    && credits.map_or(true, |c| c == *requested)
                    && acked_debit(debit_key).map_or(true, |d| *refundable <= d)
            }
            (
                Refusal::MemberCapReached {
                    cap,
                    used,
                    required,
                },
                Command::Debit { .. } | Command::PlaceHold { .. },
            ) => {
                self.stats.member_cap_refusals += 1;
                named.is_some() && used.get() + required.get() > cap.get()
            }
            (Refusal::MemberNotFound(m), _) => {
                self.stats.member_not_found += 1;
                named == Some(m.as_str())
            }
            (Refusal::ExpiryNotInFuture | Refusal::TooManyBlocks { .. }, Command::Grant { .. }) => {
                self.stats.promo_refused += 1;
                true
            }
            (
                Refusal::DebitNotFound(_)
                | Refusal::RefundExceedsDebit { .. }
                | Refusal::MemberCapReached { .. }
                | Refusal::ExpiryNotInFuture
                | Refusal::TooManyBlocks { .. },
                _,
            ) => false,
            _ => true,
        };
        if fits {
            Ok(())
        } else {
            Err(format!("{id}: {cmd:?} refused with {r:?}"))
        }
    }

    fn crash_and_recover(&mut self) -> Result<(), String> {
        loop {
            // Everything in memory is gone: the cores and the answers the journal held.
            self.in_flight.clear();
            self.kv.crash(&mut self.rng);
            self.log.crash(&mut self.rng);
            // Reopening replays the log records the crash left; its writes may fail
            // too: crash again.
            let Ok(node) = Node::open(&self.kv, &self.log, self.tuning, &self.pricing) else {
                self.stats.crashes += 1;
                continue;
            };
            self.node = node;
            self.stats.group_records_replayed += self.node.store.replayed() as u64;
            // Open covers every record it replayed: sled holds them all, and the segments
            // left are the last one and any below the covered number (gone at the next
            // checkpoint).
            let covered = self.covered();
            let segments = self.node.store.segments();
            if segments.iter().rev().skip(1).any(|&s| s > covered)
                || self.legacy_group_records() != 0
            {
                return Err(format!(
                    "the store opened with records uncovered: segments {segments:?}, \
                     covered {covered}, legacy records {}",
                    self.legacy_group_records()
                ));
            }
            self.check_disk()?;
            // Restarted, the sweep catches every account up; after it nothing is overdue
            // (resets and expiries go out on time).
            match self.node.sweep(self.now) {
                Ok(answers) => {
                    self.settle(answers)?;
                    break;
                }
                Err(Crash) => self.stats.crashes += 1,
            }
        }
        for (id, core) in &self.node.cores {
            if let Some(acct) = core.account() {
                if acct.next_due(self.now, &self.pricing).is_some() {
                    return Err(format!("account {id}: overdue after a sweep"));
                }
            }
        }
        Ok(())
    }

    /// `L‖n` group records of an earlier release on the disk (a reopen replays them).
    fn legacy_group_records(&self) -> u64 {
        let d = self.kv.disk();
        d.visible
            .keys()
            .filter(|k| k.first() == Some(&creditsd::store::overlay::GROUP) && k.len() == 9)
            .count() as u64
    }

    /// The first log record sled does not cover.
    fn covered(&self) -> u64 {
        creditsd::store::overlay::covered(&*self.kv).expect("a readable covered number")
    }

    /// The invariants, over everything the disk holds after a crash.
    fn check_disk(&mut self) -> Result<(), String> {
        let s = &self.node.store;
        let ids = s.accounts().map_err(|e| e.to_string())?;
        for id in self.acked_created.keys() {
            if !ids.contains(id) {
                return Err(format!("acknowledged account {id} was lost"));
            }
        }
        for ((id, key), ev) in &self.acked {
            let on_disk = s.event(id, ev.seq).map_err(|e| e.to_string())?;
            if on_disk.as_ref() != Some(ev) {
                return Err(format!(
                    "acknowledged mutation {id}/{key} (seq {}) lost: disk has {on_disk:?}",
                    ev.seq
                ));
            }
            let rec = s.idempotency(id, key).map_err(|e| e.to_string())?;
            if rec.map(|r| r.seq) != Some(ev.seq) {
                return Err(format!("key {id}/{key} no longer points at seq {}", ev.seq));
            }
        }
        let feed = s
            .feed_after(0, u64::MAX, usize::MAX)
            .map_err(|e| e.to_string())?;
        let mut feed_by_account: BTreeMap<&str, Vec<(u64, Notice)>> = BTreeMap::new();
        let mut last_id = 0;
        for f in &feed {
            if f.id <= last_id {
                return Err(format!("feed ids not increasing at {}", f.id));
            }
            last_id = f.id;
            feed_by_account
                .entry(&f.account)
                .or_default()
                .push((f.seq, f.notice));
        }
        for id in &ids {
            let events = s
                .events_from(id, 1, usize::MAX)
                .map_err(|e| e.to_string())?;
            self.stats.events += events.len() as u64;
            let snap = s
                .snapshot(id)
                .map_err(|e| e.to_string())?
                .ok_or(format!("account {id}: no snapshot"))?;
            let mut snap_matched = false;
            // Full replay, checking the books after every event.
            let mut full = Account::empty(id);
            let mut keys = BTreeSet::new();
            let mut notices = Vec::new();
            let mut books = Books::default();
            for ev in &events {
                let at = |e: String| format!("account {id} seq {}: {e}", ev.seq);
                let member_before = ev_member(&ev.body).and_then(|m| full.members.get(m).copied());
                books.before(&full, ev, &self.pricing).map_err(at)?;
                full.apply(ev);
                full.check_books()?;
                let fired = books
                    .after(&full, ev, member_before, &self.pricing)
                    .map_err(at)?;
                self.stats.alerts += fired;
                if let Some(k) = ev.body.idempotency_key() {
                    if !keys.insert(k.to_string()) {
                        return Err(format!("account {id}: key {k} applied twice"));
                    }
                }
                match &ev.body {
                    EventBody::PeriodReset { .. } => self.stats.resets += 1,
                    EventBody::HoldReleased {
                        reason: ReleaseReason::Expired,
                        ..
                    } => self.stats.expiries += 1,
                    EventBody::PromoExpired { .. } => self.stats.promo_expiries += 1,
                    EventBody::Debited { taken, .. } | EventBody::HoldPlaced { taken, .. }
                        if !taken.blocks.is_empty() =>
                    {
                        self.stats.promo_taken += 1
                    }
                    _ => {}
                }
                self.stats.forecast_alerts += ev.alerts.forecast_fired.is_some() as u64;
                notices.extend(ev.notices().into_iter().map(|n| (ev.seq, n)));
                if ev.seq == snap.seq {
                    snap_matched = full == snap;
                }
            }
            // The feed holds each notice of the log once, and nothing else.
            let got = feed_by_account.remove(id.as_str()).unwrap_or_default();
            if got != notices {
                return Err(format!(
                    "account {id}: feed {got:?} differs from the log's notices {notices:?}"
                ));
            }
            // Snapshot + tail = full replay.
            if !snap_matched {
                return Err(format!(
                    "account {id}: snapshot at seq {} is not the replay",
                    snap.seq
                ));
            }
            let mut from_snap = snap;
            for ev in s
                .events_from(id, from_snap.seq + 1, usize::MAX)
                .map_err(|e| e.to_string())?
            {
                from_snap.apply(&ev);
            }
            if from_snap != full {
                return Err(format!("account {id}: snapshot + tail != full replay"));
            }
            self.stats.snapshots_checked += 1;
        }
        if let Some((id, _)) = feed_by_account.into_iter().next() {
            return Err(format!("feed names account {id}, which has no snapshot"));
        }
        Ok(())
    }
}

/// Whether `body` is the event `cmd` records (same kind, same fields that make the
/// request): a key answered with another request's event is a fingerprint gone wrong.
fn answers(cmd: &Command, body: &EventBody) -> bool {
    match (cmd, body) {
        (
            Command::Debit {
                operation,
                quantity,
                metadata,
                member,
                ..
            },
            EventBody::Debited {
                operation: o,
                quantity: q,
                metadata: m,
                member: mm,
                ..
            },
        ) => operation == o && quantity == q && metadata == m && member == mm,
        (
            Command::PlaceHold {
                operation,
                quantity,
                member,
                ..
            },
            EventBody::HoldPlaced {
                operation: o,
                quantity: q,
                member: mm,
                ..
            },
        ) => operation == o && quantity == q && member == mm,
        (Command::Capture { hold_id, .. }, EventBody::HoldCaptured { hold_id: h, .. })
        | (Command::Release { hold_id, .. }, EventBody::HoldReleased { hold_id: h, .. }) => {
            hold_id == h
        }
        (Command::ChangePlan { plan, .. }, EventBody::PlanChanged { to, .. }) => plan == to,
        (Command::Purchase { pack, .. }, EventBody::Purchased { pack: p, .. }) => pack == p,
        (
            Command::Grant {
                bucket,
                credits,
                expires_at,
                ..
            },
            EventBody::Granted {
                bucket: b,
                credits: c,
                expires_at: e,
                ..
            },
        ) => bucket == b && credits == c && expires_at == e,
        (
            Command::Refund {
                debit_key, credits, ..
            },
            EventBody::Refunded {
                debit_key: k, part, ..
            },
        ) => debit_key == k && credits.map_or(true, |c| c == part.total()),
        (
            Command::SetAlerts {
                thresholds,
                forecast,
                ..
            },
            EventBody::AlertsSet {
                thresholds: t,
                forecast: f,
                ..
            },
        ) => thresholds == t && forecast == f,
        (
            Command::SetMember { member, cap, .. },
            EventBody::MemberSet {
                member: m, cap: c, ..
            },
        ) => member == m && cap == c,
        (Command::RemoveMember { member, .. }, EventBody::MemberRemoved { member: m, .. }) => {
            member == m
        }
        _ => false,
    }
}

/// The member an event uses or gives use back to.
fn ev_member(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::Debited { member, .. }
        | EventBody::HoldPlaced { member, .. }
        | EventBody::Refunded { member, .. } => member.as_deref(),
        _ => None,
    }
}

// ------------------------------------------------------- the checker's own arithmetic

/// A source of credits, as the checker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Src {
    Monthly,
    Block(u64),
    Free,
    Packs,
}

/// Credits by source (none zero), each promo block with the instant it expires: the
/// checker's own model of `Taken`, so the domain's arithmetic is not checked by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Parts(BTreeMap<Src, (u64, Ts)>);

impl Parts {
    fn of(t: &Taken) -> Result<Parts, String> {
        let mut p = Parts::default();
        p.add(Src::Monthly, t.buckets.monthly.get(), Ts(0));
        p.add(Src::Free, t.buckets.free.get(), Ts(0));
        p.add(Src::Packs, t.buckets.packs.get(), Ts(0));
        let mut promo = 0;
        for b in &t.blocks {
            if b.credits.is_zero() || p.0.contains_key(&Src::Block(b.grant_id)) {
                return Err(format!("{t:?} names a block twice, or an empty part"));
            }
            promo += b.credits.get();
            p.add(Src::Block(b.grant_id), b.credits.get(), b.expires_at);
        }
        if promo != t.buckets.promo.get() {
            return Err(format!("{t:?}: promo is not the sum of its blocks"));
        }
        Ok(p)
    }

    /// What an account may spend.
    fn spendable(a: &Account) -> Parts {
        let mut p = Parts::default();
        p.add(Src::Monthly, a.balances.monthly.get(), Ts(0));
        p.add(Src::Free, a.balances.free.get(), Ts(0));
        p.add(Src::Packs, a.balances.packs.get(), Ts(0));
        for b in a.promo.values() {
            p.add(Src::Block(b.grant_id), b.credits.get(), b.expires_at);
        }
        p
    }

    fn add(&mut self, s: Src, c: u64, expires_at: Ts) {
        if c > 0 {
            self.0.entry(s).or_insert((0, expires_at)).0 += c;
        }
    }

    fn total(&self) -> u64 {
        self.0.values().map(|v| v.0).sum()
    }

    fn plus(&self, o: &Parts) -> Parts {
        let mut p = self.clone();
        for (s, (c, e)) in &o.0 {
            p.add(*s, *c, *e);
        }
        p
    }

    /// These credits less `o`, which must lie within them source by source.
    fn minus(&self, o: &Parts) -> Option<Parts> {
        let mut p = self.clone();
        for (s, (c, _)) in &o.0 {
            let have = p.0.get_mut(s)?;
            have.0 = have.0.checked_sub(*c)?;
            if have.0 == 0 {
                p.0.remove(s);
            }
        }
        Some(p)
    }

    /// The sources in consumption order: soonest-expiring first (`monthly` expiring at
    /// `monthly_end`, before a block expiring at the same instant), then free, then packs.
    fn in_order(&self, monthly_end: Ts) -> Vec<(Src, u64, Ts)> {
        let mut v: Vec<_> = self.0.iter().map(|(s, (c, e))| (*s, *c, *e)).collect();
        v.sort_by_key(|&(s, _, e)| match s {
            Src::Monthly => (0u8, monthly_end, 0u8, 0u64),
            Src::Block(g) => (0, e, 1, g),
            Src::Free => (1, Ts(0), 0, 0),
            Src::Packs => (2, Ts(0), 0, 0),
        });
        v
    }

    /// The first `amount` credits in consumption order (`last`: the last ones, which is
    /// what a partial refund gives back).
    fn take(&self, amount: u64, monthly_end: Ts, last: bool) -> Option<Parts> {
        if amount > self.total() {
            return None;
        }
        let mut order = self.in_order(monthly_end);
        if last {
            order.reverse();
        }
        let mut left = amount;
        let mut out = Parts::default();
        for (s, c, e) in order {
            let t = left.min(c);
            out.add(s, t, e);
            left -= t;
        }
        Some(out)
    }

    /// What giving these credits back at `at` returns (the rest expires): monthly only
    /// within the period it was taken in, a block only before it expires.
    fn give_back(&self, same_period: bool, at: Ts) -> (Parts, u64) {
        let mut returned = Parts::default();
        let mut expired = 0;
        for (s, (c, e)) in &self.0 {
            let back = match s {
                Src::Monthly => same_period,
                Src::Block(_) => at < *e,
                Src::Free | Src::Packs => true,
            };
            if back {
                returned.add(*s, *c, *e);
            } else {
                expired += c;
            }
        }
        (returned, expired)
    }
}

fn buckets(b: &Buckets) -> [i128; 4] {
    Bucket::ALL.map(|k| b.get(k).get() as i128)
}

/// How the balances moved from `before` to `after`, bucket by bucket.
fn moved(before: &Buckets, after: &Buckets) -> [i128; 4] {
    let (b, a) = (buckets(before), buckets(after));
    [0, 1, 2, 3].map(|i| a[i] - b[i])
}

/// A debit as the log recorded it.
struct DebitSeen {
    key: String,
    at: Ts,
    credits: u64,
    parts: Parts,
    member: Option<String>,
}

/// What the checker keeps while it replays one account's log, independently of the
/// domain's state: the books from the events' own fields, every debit and what has been
/// refunded of it, and the alert state.
#[derive(Default)]
struct Books {
    granted: i128,
    debited: i128,
    refunded: i128,
    expired: i128,
    debits: BTreeMap<u64, DebitSeen>,
    refunded_of: BTreeMap<u64, Parts>,
    last_at: Ts,
    fired: u128,
    forecast_fired: bool,
}

impl Books {
    /// Checks an event against the state before it: a debit or a hold takes soonest-
    /// expiring first over monthly and the promo blocks, then free, then packs; a hold's
    /// capture spends the same way; what comes back (a hold's rest, a refund) goes to the
    /// sources it came from unless they have expired; a refund gives back the last of
    /// what the debit took and never more than it took; a member never goes past its
    /// cap; time-driven events happen at their instants, the others on a current account.
    fn before(&mut self, b: &Account, ev: &Event, pricing: &Pricing) -> Result<(), String> {
        if ev.at < self.last_at {
            return Err(format!(
                "recorded at {:?}, before the event ahead of it",
                ev.at
            ));
        }
        self.last_at = ev.at;
        let time_driven = match &ev.body {
            EventBody::Created { .. } => true,
            EventBody::PeriodReset { .. } => {
                if ev.at != b.next_reset_at() {
                    return Err(format!("reset at {:?}, not at the boundary", ev.at));
                }
                true
            }
            EventBody::PromoExpired { grant_id, expired } => {
                let block = b.promo.get(grant_id).ok_or("a closed block expired")?;
                if block.expires_at != ev.at || block.credits != *expired {
                    return Err(format!("{block:?} expired as {:?}", ev.body));
                }
                true
            }
            EventBody::HoldReleased {
                hold_id,
                reason: ReleaseReason::Expired,
                ..
            } => {
                let hold = b.holds.get(hold_id).ok_or("a closed hold expired")?;
                if hold.expires_at != ev.at {
                    return Err(format!("hold {hold_id} expired at {:?}", ev.at));
                }
                true
            }
            _ => false,
        };
        if !time_driven && b.next_due(ev.at, pricing).is_some() {
            return Err(format!(
                "{} decided on an account not caught up",
                ev.body.kind()
            ));
        }
        let to_sources = |what: &str, taken: &Taken, credits: Credits| -> Result<(), String> {
            let want = Parts::spendable(b)
                .take(credits.get(), b.next_reset_at(), false)
                .ok_or(format!("{what} took {credits}, more than available"))?;
            let got = Parts::of(taken)?;
            if got != want {
                return Err(format!("{what} took {got:?}, not {want:?}"));
            }
            let order: Vec<u64> = want
                .in_order(b.next_reset_at())
                .into_iter()
                .filter_map(|(s, ..)| match s {
                    Src::Block(g) => Some(g),
                    _ => None,
                })
                .collect();
            let named: Vec<u64> = taken.blocks.iter().map(|p| p.grant_id).collect();
            if order != named {
                return Err(format!("{what} names blocks {named:?}, taken as {order:?}"));
            }
            if moved(&ev.after, &b.balances) != buckets(&taken.buckets) {
                return Err(format!(
                    "{what} took {taken:?}; the balances moved otherwise"
                ));
            }
            Ok(())
        };
        let came_back = |returned: &Taken| -> Result<(), String> {
            if moved(&b.balances, &ev.after) != buckets(&returned.buckets) {
                return Err(format!(
                    "returned {returned:?}; the balances moved otherwise"
                ));
            }
            Ok(())
        };
        let member_within = |member: &Option<String>, credits: Credits| match member {
            None => Ok(()),
            Some(m) => match b.members.get(m) {
                None => Err(format!("applied for member {m}, who is not one")),
                Some(Member {
                    cap: Some(cap),
                    used,
                }) if used.get() + credits.get() > cap.get() => {
                    Err(format!("member {m} (used {used}) taken past its cap {cap}"))
                }
                Some(_) => Ok(()),
            },
        };
        match &ev.body {
            EventBody::Debited {
                credits,
                taken,
                idempotency_key,
                member,
                ..
            } => {
                to_sources("a debit", taken, *credits)?;
                member_within(member, *credits)?;
                self.debits.insert(
                    ev.seq,
                    DebitSeen {
                        key: idempotency_key.clone(),
                        at: ev.at,
                        credits: credits.get(),
                        parts: Parts::of(taken)?,
                        member: member.clone(),
                    },
                );
            }
            EventBody::HoldPlaced {
                credits,
                taken,
                member,
                ..
            } => {
                to_sources("a hold", taken, *credits)?;
                member_within(member, *credits)?;
            }
            EventBody::HoldCaptured {
                hold_id,
                returned,
                expired,
                ..
            }
            | EventBody::HoldReleased {
                hold_id,
                returned,
                expired,
                ..
            } => {
                let hold = b
                    .holds
                    .get(hold_id)
                    .ok_or("closed a hold that is not open")?;
                let held = Parts::of(&hold.taken)?;
                let spent_got = match &ev.body {
                    EventBody::HoldCaptured { spent, .. } => Parts::of(spent)?,
                    _ => Parts::default(),
                };
                let month_end = add_months(b.anchor, hold.period + 1);
                let spent_want = held
                    .take(spent_got.total(), month_end, false)
                    .ok_or("captured more than the hold")?;
                if spent_got != spent_want {
                    return Err(format!(
                        "spent {spent_got:?} of the hold, not {spent_want:?}"
                    ));
                }
                let rest = held.minus(&spent_want).expect("taken from it");
                let (back, gone) = rest.give_back(hold.period == b.period, ev.at);
                if Parts::of(returned)? != back || expired.get() != gone {
                    return Err(format!(
                        "returned {returned:?} and expired {expired}, not {back:?} and {gone}"
                    ));
                }
                came_back(returned)?;
            }
            EventBody::Refunded {
                debit_key,
                debit_seq,
                debit_at,
                part,
                returned,
                member,
                member_returned,
                ..
            } => {
                let d = self
                    .debits
                    .get(debit_seq)
                    .ok_or(format!("refund of seq {debit_seq}, which is no debit"))?;
                if d.key != *debit_key || d.at != *debit_at || d.member != *member {
                    return Err(format!(
                        "refund names {debit_key} and not the debit's key {}",
                        d.key
                    ));
                }
                let done = self.refunded_of.get(debit_seq).cloned().unwrap_or_default();
                let left = d.parts.minus(&done).expect("refunds stay within the debit");
                let got = Parts::of(part)?;
                let period = period_index(b.anchor, d.at);
                let want = left
                    .take(got.total(), add_months(b.anchor, period + 1), true)
                    .filter(|_| got.total() > 0)
                    .ok_or(format!(
                        "refunded {} of a debit of {} with {} left",
                        got.total(),
                        d.credits,
                        left.total()
                    ))?;
                if got != want {
                    return Err(format!(
                        "refunded {got:?}, not the last of the debit {want:?}"
                    ));
                }
                let (back, _) = want.give_back(period == b.period, ev.at);
                if Parts::of(returned)? != back {
                    return Err(format!("a refund returned {returned:?}, not {back:?}"));
                }
                came_back(returned)?;
                let used = member
                    .as_ref()
                    .and_then(|m| b.members.get(m))
                    .map(|m| m.used);
                let give = match used {
                    Some(used) if period == b.period => used.min(part.total()),
                    _ => Credits::ZERO,
                };
                if *member_returned != give {
                    return Err(format!(
                        "gave {member_returned} of the member's use back, not {give}"
                    ));
                }
                let total = done.plus(&got);
                if total.total() > d.credits {
                    return Err(format!("refunds of {debit_key} add up past the debit"));
                }
                self.refunded_of.insert(*debit_seq, total);
            }
            EventBody::Granted {
                bucket, expires_at, ..
            } => {
                let promo = *bucket == Bucket::Promo;
                if promo != expires_at.is_some() || expires_at.is_some_and(|e| e <= ev.at) {
                    return Err(format!("a grant of {bucket:?} expiring at {expires_at:?}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks an event against the state after it: the books balance (by the events' own
    /// numbers), a new block is open, a member's use moved by what the event says and is
    /// within its cap, and the alerts fired and re-armed exactly when they should with
    /// the thresholds in force. Answers how many thresholds fired.
    fn after(
        &mut self,
        a: &Account,
        ev: &Event,
        member_before: Option<Member>,
        pricing: &Pricing,
    ) -> Result<u64, String> {
        let c = |c: &Credits| c.get() as i128;
        match &ev.body {
            EventBody::Created { free, monthly, .. } => self.granted += c(free) + c(monthly),
            EventBody::PeriodReset {
                expired,
                allocation,
                ..
            } => {
                self.expired += c(expired);
                self.granted += c(allocation);
            }
            EventBody::PlanChanged { granted, .. } => self.granted += c(granted),
            EventBody::Purchased { credits, .. } => self.granted += c(credits),
            EventBody::Granted {
                credits,
                expires_at,
                ..
            } => {
                self.granted += c(credits);
                if let Some(e) = expires_at {
                    let block = a.promo.get(&ev.seq);
                    if block.map_or(true, |b| b.credits != *credits || b.expires_at != *e) {
                        return Err(format!("promo grant opened {block:?}"));
                    }
                }
            }
            EventBody::Debited { credits, .. } => self.debited += c(credits),
            EventBody::HoldPlaced { .. } => {}
            EventBody::HoldCaptured { spent, expired, .. } => {
                self.debited += c(&spent.total());
                self.expired += c(expired);
            }
            EventBody::HoldReleased { expired, .. } => self.expired += c(expired),
            EventBody::Refunded { part, returned, .. } => {
                self.refunded += c(&part.total());
                self.expired += c(&part.total()) - c(&returned.total());
            }
            EventBody::PromoExpired { expired, .. } => self.expired += c(expired),
            EventBody::AlertsSet { .. }
            | EventBody::MemberSet { .. }
            | EventBody::MemberRemoved { .. } => {}
        }
        let rhs =
            self.debited - self.refunded + self.expired + c(&ev.held_after) + c(&ev.after.total());
        if self.granted != rhs {
            return Err(format!(
                "books: granted {} != debited {} - refunded {} + expired {} + held {} \
                 + available {}",
                self.granted,
                self.debited,
                self.refunded,
                self.expired,
                ev.held_after,
                ev.after.total()
            ));
        }
        // A member's use.
        let now_used = ev_member(&ev.body).and_then(|m| a.members.get(m).map(|mm| (m, *mm)));
        match (&ev.body, member_before, now_used) {
            (
                EventBody::Debited { credits, .. } | EventBody::HoldPlaced { credits, .. },
                Some(was),
                Some((m, now)),
            ) => {
                if now.used != was.used.plus(*credits) || now.cap.is_some_and(|cap| now.used > cap)
                {
                    return Err(format!(
                        "member {m}: used {} then {} after {credits} (cap {:?})",
                        was.used, now.used, now.cap
                    ));
                }
            }
            (
                EventBody::Refunded {
                    member_returned, ..
                },
                Some(was),
                Some((m, now)),
            ) => {
                if now.used != was.used.minus(*member_returned) {
                    return Err(format!("member {m}: used {} then {}", was.used, now.used));
                }
            }
            (_, None, None) => {}
            (EventBody::Refunded { .. }, ..) => {}
            (_, was, now) => {
                return Err(format!("member before {was:?}, after {now:?}"));
            }
        }
        // Alerts: a threshold in force fires exactly when remaining % crosses to or below
        // it while armed, and re-arms exactly when it rises above it through credits
        // added; credits back from a hold re-arm only exhaustion (0). New settings forget
        // the thresholds no longer in force (not exhaustion) and fire at once the ones
        // already crossed.
        let thresholds = a.thresholds(pricing).to_vec();
        if let EventBody::AlertsSet { in_effect, .. } = &ev.body {
            if *in_effect != thresholds {
                return Err(format!("alerts set {in_effect:?}, in force {thresholds:?}"));
            }
            self.fired &= thresholds.iter().fold(1u128, |m, t| m | 1u128 << t);
        }
        let in_force = thresholds.iter().fold(0u128, |m, t| m | 1u128 << t);
        if (ev.alerts.fired | ev.alerts.rearmed) & !in_force != 0 {
            return Err(format!("alerts {:?} outside {thresholds:?}", ev.alerts));
        }
        let mut fired = 0;
        for &t in &thresholds {
            let bit = 1u128 << t;
            let below = creditsd::domain::alerts::at_or_below(a.available(), a.period_budget, t);
            let should_fire = below && self.fired & bit == 0;
            let added = ev.body.adds_credits() || t == 0;
            let should_rearm = !below && self.fired & bit != 0 && added;
            if should_fire != (ev.alerts.fired & bit != 0)
                || should_rearm != (ev.alerts.rearmed & bit != 0)
            {
                return Err(format!("threshold {t} fired/re-armed wrongly"));
            }
            if should_fire {
                self.fired |= bit;
                fired += 1;
            }
            if should_rearm {
                self.fired &= !bit;
            }
        }
        // The forecast alert: after a debit only, once until re-armed (a reset re-arms
        // it), projecting exhaustion within the horizon in force and before the reset.
        if let EventBody::PeriodReset { .. } = ev.body {
            self.forecast_fired = false;
        }
        if let Some(p) = ev.alerts.forecast_fired {
            let horizon = a.forecast_hours(pricing).map(|h| h as i64 * HOUR_MS);
            let fits = matches!(ev.body, EventBody::Debited { .. })
                && !self.forecast_fired
                && !ev.alerts.forecast_rearmed
                && !a.available().is_zero()
                && horizon.is_some_and(|h| p <= ev.at.plus_millis(h))
                && p < a.next_reset_at();
            if !fits {
                return Err(format!("forecast alert for {p:?} out of place"));
            }
            self.forecast_fired = true;
        }
        if ev.alerts.forecast_rearmed {
            if !self.forecast_fired {
                return Err("the forecast alert re-armed, not having fired".into());
            }
            self.forecast_fired = false;
        }
        Ok(fired)
    }
}

fn run_seed(seed: u64, steps: u64) -> Result<Stats, String> {
    let mut sim = Sim::new(seed);
    sim.run(steps)?;
    Ok(sim.stats)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn simulated_histories_keep_the_books() {
    let steps = env_u64("SIM_STEPS", 150);
    let (start, count) = match std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => (seed, 1),
        None => (env_u64("SIM_SEED_START", 0), env_u64("SIM_SEEDS", 300)),
    };
    // Every failing seed is named (up to SIM_MAX_FAILURES, default 10, then it stops).
    let max_failures = env_u64("SIM_MAX_FAILURES", 10);
    let mut failed = Vec::new();
    let mut total = Stats::default();
    let mut ran = 0;
    for seed in start..start + count {
        ran += 1;
        let why = match std::panic::catch_unwind(|| run_seed(seed, steps)) {
            Ok(Ok(stats)) => {
                total += stats;
                continue;
            }
            Ok(Err(e)) => format!("broke an invariant: {e}"),
            Err(_) => "panicked (message above)".to_string(),
        };
        println!(
            "simulator: seed {seed} {why}\nreproduce: SIM_SEED={seed} cargo test --test simulator"
        );
        failed.push(seed);
        if failed.len() as u64 >= max_failures {
            break;
        }
    }
    assert!(
        failed.is_empty(),
        "simulator: {} of {ran} seeds from {start} failed: {failed:?} (each is printed above \
         with its reason; reproduce: SIM_SEED=n cargo test --test simulator -- --nocapture)",
        failed.len()
    );
    println!("simulator: {count} seeds from {start}, {steps} steps each: {total:?}");
    // The histories must actually cross what they claim to test.
    assert!(total.crashes > 0 && total.resets > 0 && total.expiries > 0 && total.alerts > 0);
    assert!(total.acknowledged > 0 && total.duplicates > 0);
    if count >= 50 {
        assert!(total.write_faults > 0 && total.sync_faults > 0, "{total:?}");
        assert!(
            // (Segments are deleted only by retention, which the simulator does not run:
            // the events stay in them; `log_removals_undone` stays 0.)
            total.log_torn_writes > 0 && total.log_tails_lost > 0 && total.log_tails_cut > 0,
            "{total:?}"
        );
        // Idempotency keys are looked up across merges of their blocks.
        assert!(total.idempotency_merges > 0, "{total:?}");
        // And the second edition: promo blocks taken and expired, refunds whole, partial,
        // refused both ways and expiring, members capped and refused, alerts set.
        let t = total;
        let crossed = [
            t.promo_grants,
            t.promo_refused,
            t.promo_expiries,
            t.promo_taken,
            t.refunds,
            t.refunds_partial,
            t.refunds_expired,
            t.debit_not_found,
            t.refund_exceeds,
            t.member_sets,
            t.member_removals,
            t.member_debits,
            t.member_cap_refusals,
            t.member_not_found,
            t.alerts_set,
            t.forecast_alerts,
        ];
        assert!(crossed.iter().all(|&n| n > 0), "{total:?}");
    }
}

// --------------------------------------------------------------- retention under crashes

/// One account as the retention run writes it: every event written and not lost (the
/// first `synced` of them durable), and its state after the last.
struct Written {
    events: Vec<Event>,
    synced: usize,
    state: Account,
}

/// Retention over the real store and its real pruner on the simulated disks: events
/// appended straight through the store (the accounts' rules are the other test's), group
/// commits, checkpoints, `history::prune_account` below the snapshots, the deletion of the
/// segments nothing points into, and crashes (unsynced log tails and sled writes lost in
/// part, deleted segments back) in between. After every step, each account's events above
/// its base read back as written, the base is the replay of those below it, and a crash
/// loses only what was not synced.
fn run_retention(seed: u64) -> Result<u64, String> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let kv = Arc::new(SimKv::new(seed, 0, 0));
    let log = Arc::new(SimLogFiles::new(seed, 0, 0));
    let tuning = Tuning {
        freeze_keys: rng.range(4, 40) as usize,
        freeze_after: Duration::from_secs(3600),
        frozen_max: 2,
        active_keys_max: 1_000_000,
        record_bytes_max: rng.range(200, 2000) as usize,
        segment_bytes: rng.range(512, 8192) as u64,
    };
    let p = Pricing::standard();
    let open = || {
        let kv: Arc<dyn Kv> = kv.clone();
        let options = Options {
            tuning,
            checkpointer_thread: false,
            idempotency_filter: FilterOptions {
                bytes: 1 << 16,
                ttl_ms: IDEMPOTENCY_TTL_MS,
                build_thread: false,
                build_delay: Duration::ZERO,
            },
        };
        SledStore::open_on(kv, Box::new(SharedLog(log.clone())), options)
            .map_err(|e| format!("open: {e}"))
    };
    let mut store = open()?;
    let ids = ["r-0", "r-1", "r-2"];
    let mut books: BTreeMap<&str, Written> = BTreeMap::new();
    let mut removed = 0;
    for step in 0..400 {
        let id = *rng.pick(&ids);
        let at = Ts(1_700_000_000_000 + step);
        let roll = rng.below(100);
        match roll {
            // An event (and now and then the snapshot at it).
            0..=54 => {
                let w = books.entry(id).or_insert_with(|| Written {
                    events: Vec::new(),
                    synced: 0,
                    state: Account::empty(id),
                });
                let ev = if w.events.is_empty() {
                    let created =
                        Account::create(id, "agency", at, at, &p).map_err(|r| format!("{r:?}"))?;
                    w.state.apply(&created);
                    created
                } else {
                    let cmd = Command::Grant {
                        bucket: Bucket::Packs,
                        credits: Credits(1),
                        reason: "retention".into(),
                        idempotency_key: format!("k{step}"),
                        expires_at: None,
                    };
                    let body = w.state.decide(&cmd, at, &p).map_err(|r| format!("{r:?}"))?;
                    w.state.record(body, at, &p)
                };
                let snapshot = rng.chance(300).then_some(&w.state);
                let events = [ev.clone()];
                let append = Append {
                    events: &events,
                    snapshot,
                    ..Default::default()
                };
                store.append(id, append).map_err(|e| e.to_string())?;
                w.events.push(ev);
            }
            55..=69 => {
                store.sync().map_err(|e| e.to_string())?;
                for w in books.values_mut() {
                    w.synced = w.events.len();
                }
            }
            70..=79 => {
                store.checkpoint_step().map_err(|e| e.to_string())?;
            }
            80..=87 => {
                let max = rng.range(1, 30) as u64;
                creditsd::history::prune_account(&store, id, Ts(i64::MAX / 4), max)
                    .map_err(|e| format!("prune: {e}"))?;
            }
            88..=93 => {
                removed += store
                    .remove_unindexed_segments()
                    .map_err(|e| e.to_string())? as u64;
            }
            _ => {
                drop(store);
                kv.crash(&mut rng);
                log.crash(&mut rng);
                store = open()?;
                // What survived: every synced event and a prefix of the others.
                for (id, w) in books.iter_mut() {
                    let base = store
                        .base(id)
                        .map_err(|e| e.to_string())?
                        .map_or(0, |b| b.seq);
                    let on_disk = store
                        .events_from(id, base + 1, usize::MAX)
                        .map_err(|e| e.to_string())?;
                    let kept = on_disk.last().map_or(base, |e| e.seq) as usize;
                    if kept < w.synced || kept > w.events.len() {
                        return Err(format!(
                            "step {step}: {id} has {kept} events after a crash, {} synced, {} written",
                            w.synced,
                            w.events.len()
                        ));
                    }
                    w.events.truncate(kept);
                    w.synced = kept;
                    w.state = Account::empty(id);
                    for ev in &w.events {
                        w.state.apply(ev);
                    }
                }
            }
        }
        // Every event above the base as written; the base the replay of those below
        // (after each step but the appends and group commits, which the next checks see).
        if roll < 70 {
            continue;
        }
        for (id, w) in &books {
            let base = store.base(id).map_err(|e| e.to_string())?;
            let from = base.as_ref().map_or(0, |b| b.seq) as usize;
            let got = store
                .events_from(id, from as u64 + 1, usize::MAX)
                .map_err(|e| format!("step {step}: reading {id}: {e}"))?;
            if got != w.events[from.min(w.events.len())..] {
                return Err(format!(
                    "step {step}: {id}'s events above its base {from} are not those written"
                ));
            }
            if let Some(b) = base {
                let mut replay = Account::empty(id);
                for ev in &w.events[..from] {
                    replay.apply(ev);
                }
                if replay != b {
                    return Err(format!(
                        "step {step}: {id}'s base is not the replay below it"
                    ));
                }
            }
        }
    }
    Ok(removed)
}

#[test]
fn retention_deletes_only_segments_nothing_reads() {
    let seeds = env_u64("SIM_RETENTION_SEEDS", 100);
    let mut removed = 0;
    for seed in 0..seeds {
        removed += run_retention(seed).unwrap_or_else(|e| panic!("retention seed {seed}: {e}"));
    }
    println!("retention: {seeds} seeds, {removed} segments deleted");
    // The runs must actually delete segments.
    assert!(removed > 0);
}
