//! A deterministic simulator in the spirit of TigerBeetle's VOPR: from one `u64` seed it
//! drives the real domain (`decide`, `record`, `apply`, `next_due`), the real record codec
//! and the real idempotency fingerprints over many accounts, with a simulated clock that
//! crosses billing periods, hold expiries and alert thresholds, through `SimStore`, an
//! in-memory `Store` that fails writes, fails syncs and "crashes" at any step, dropping
//! every write not yet synced (except a prefix of them, as sled may keep).
//!
//! `Node` mirrors the account actor and the journal step for step (catch up on time,
//! idempotency, decide, write ahead, apply, hand the reply to the journal, acknowledge
//! after the next successful sync) without tokio, so one seed is one exact history. A
//! storage error is fail-stop in the daemon, so here it is a crash. After every crash the
//! node recovers (snapshot + tail replay, as `AccountActor::load` does) and the checker
//! asserts: no acknowledged mutation lost, none applied twice, books balance, snapshot +
//! tail = full replay, alerts fired once per crossing, the feed matches the log.
//!
//! A failure prints its seed; `SIM_SEED=n cargo test --test simulator` replays it.
//! `SIM_SEEDS=n` (default 300) and `SIM_SEED_START` choose the range;
//! `benches/simulate.sh` runs thousands.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use creditsd::actor::fingerprint::fingerprint;
use creditsd::domain::{Account, Bucket, Command, Credits, Event, Notice, Pricing, Ts};
use creditsd::store::codec::{decode, encode};
use creditsd::store::records::{AccountRecordV1, EventRecordV2, FeedEntryRecordV1, IdemRecordV1};
use creditsd::store::{Append, BookTotals, FeedEntry, IdemRecord, StorageError, Store};

/// The key of a simulated request: every one carries a key.
fn key_of(cmd: &Command) -> &str {
    creditsd::actor::fingerprint::key_of(cmd).expect("every simulated request carries a key")
}

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

// ------------------------------------------------------------------- the fake disk

#[derive(Clone, Default)]
struct Tables {
    events: BTreeMap<(String, u64), Vec<u8>>,
    snapshots: BTreeMap<String, Vec<u8>>,
    idem: BTreeMap<(String, String), Vec<u8>>,
    feed: BTreeMap<u64, Vec<u8>>,
    wakeups: BTreeSet<(Ts, String)>,
    cursors: BTreeMap<String, Vec<u8>>,
    bases: BTreeMap<String, Vec<u8>>,
}

/// One write of a batch. A batch is atomic, as sled's `apply_batch` is.
#[derive(Clone)]
enum Op {
    Event(String, u64, Vec<u8>),
    Snapshot(String, Vec<u8>),
    Idem(String, String, Vec<u8>),
    Feed(u64, Vec<u8>),
    WakeAdd(Ts, String),
    WakeDel(Ts, String),
    FeedDel(u64),
    Cursor(String, Vec<u8>),
    Base(String, Vec<u8>),
    EventDel(String, u64),
}

impl Tables {
    fn apply(&mut self, batch: &[Op]) {
        for op in batch {
            match op.clone() {
                Op::Event(a, s, v) => {
                    self.events.insert((a, s), v);
                }
                Op::Snapshot(a, v) => {
                    self.snapshots.insert(a, v);
                }
                Op::Idem(a, k, v) => {
                    self.idem.insert((a, k), v);
                }
                Op::Feed(id, v) => {
                    self.feed.insert(id, v);
                }
                Op::WakeAdd(at, a) => {
                    self.wakeups.insert((at, a));
                }
                Op::WakeDel(at, a) => {
                    self.wakeups.remove(&(at, a));
                }
                Op::FeedDel(id) => {
                    self.feed.remove(&id);
                }
                Op::Cursor(name, v) => {
                    self.cursors.insert(name, v);
                }
                Op::Base(a, v) => {
                    self.bases.insert(a, v);
                }
                Op::EventDel(a, s) => {
                    self.events.remove(&(a, s));
                }
            }
        }
    }
}

struct Disk {
    /// What reads see: every write so far.
    visible: Tables,
    /// What survives a crash for sure: everything up to the last successful sync.
    durable: Tables,
    /// Batches written since that sync, in order.
    unsynced: Vec<Vec<Op>>,
    feed_next: u64,
    faults: Rng,
    write_fail_per_mille: u64,
    sync_fail_per_mille: u64,
    write_faults: u64,
    sync_faults: u64,
}

/// An in-memory `Store` with the durability semantics of sled plus fsync: writes are
/// visible at once, durable at the next `sync`, and a crash keeps the durable state plus
/// some prefix of the later batches (sled's log keeps batches atomic and in order).
struct SimStore(Mutex<Disk>);

fn io(what: &str) -> StorageError {
    StorageError::Io(format!("simulated {what} failure"))
}

impl SimStore {
    fn new(seed: u64, write_fail_per_mille: u64, sync_fail_per_mille: u64) -> SimStore {
        SimStore(Mutex::new(Disk {
            visible: Tables::default(),
            durable: Tables::default(),
            unsynced: Vec::new(),
            feed_next: 1,
            faults: Rng(seed ^ 0x5eed_fa17),
            write_fail_per_mille,
            sync_fail_per_mille,
            write_faults: 0,
            sync_faults: 0,
        }))
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap()
    }

    /// The process died: keep the durable state and `keep` of the unsynced batches.
    fn crash(&self, rng: &mut Rng) {
        let mut d = self.disk();
        let keep = rng.below(d.unsynced.len() as u64 + 1) as usize;
        let kept: Vec<Vec<Op>> = d.unsynced.drain(..).take(keep).collect();
        for b in &kept {
            d.durable.apply(b);
        }
        d.visible = d.durable.clone();
        // As `SledStore::open`: one past the highest feed id on disk.
        d.feed_next = d.visible.feed.keys().next_back().map_or(1, |id| id + 1);
    }

    fn write(&self, batch: Vec<Op>) -> Result<(), StorageError> {
        let mut d = self.disk();
        let p = d.write_fail_per_mille;
        if d.faults.chance(p) {
            d.write_faults += 1;
            return Err(io("write"));
        }
        d.visible.apply(&batch);
        d.unsynced.push(batch);
        Ok(())
    }

    fn get<R: creditsd::store::codec::Record + Into<T>, T>(
        key: String,
        bytes: Option<&Vec<u8>>,
    ) -> Result<Option<T>, StorageError> {
        bytes
            .map(|b| decode::<R>(key.as_bytes(), b).map(R::into))
            .transpose()
    }
}

impl Store for SimStore {
    fn append(&self, account: &str, a: Append<'_>) -> Result<(), StorageError> {
        let mut batch = Vec::new();
        for ev in a.events {
            batch.push(Op::Event(
                account.into(),
                ev.seq,
                encode(&EventRecordV2::from(ev)),
            ));
        }
        for (key, rec) in &a.idempotency {
            batch.push(Op::Idem(
                account.into(),
                key.to_string(),
                encode(&IdemRecordV1::from(rec)),
            ));
        }
        if let Some(acct) = a.snapshot {
            batch.push(Op::Snapshot(
                account.into(),
                encode(&AccountRecordV1::from(acct)),
            ));
        }
        if let Some((old, new)) = a.wakeup {
            if let Some(old) = old {
                batch.push(Op::WakeDel(old, account.into()));
            }
            batch.push(Op::WakeAdd(new, account.into()));
        }
        let mut id = self.disk().feed_next;
        for ev in a.events {
            for notice in ev.notices() {
                let entry = FeedEntry {
                    id,
                    account: account.into(),
                    seq: ev.seq,
                    at: ev.at,
                    notice,
                    balances: ev.after,
                    held: ev.held_after,
                };
                batch.push(Op::Feed(id, encode(&FeedEntryRecordV1::from(&entry))));
                id += 1;
            }
        }
        self.write(batch)?;
        self.disk().feed_next = id;
        Ok(())
    }

    fn snapshot(&self, account: &str) -> Result<Option<Account>, StorageError> {
        let d = self.disk();
        Self::get::<AccountRecordV1, _>(format!("S{account}"), d.visible.snapshots.get(account))
    }

    fn events_after(&self, account: &str, after: u64) -> Result<Vec<Event>, StorageError> {
        let d = self.disk();
        d.visible
            .events
            .range((account.to_string(), after.saturating_add(1))..=(account.to_string(), u64::MAX))
            .map(|((a, s), v)| decode::<EventRecordV2>(format!("E{a}#{s}").as_bytes(), v))
            .map(|r| r.map(Event::from))
            .collect()
    }

    fn events_before(
        &self,
        account: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError> {
        let d = self.disk();
        d.visible
            .events
            .range((account.to_string(), 0)..(account.to_string(), before))
            .rev()
            .take(limit)
            .map(|((a, s), v)| decode::<EventRecordV2>(format!("E{a}#{s}").as_bytes(), v))
            .map(|r| r.map(Event::from))
            .collect()
    }

    fn event(&self, account: &str, seq: u64) -> Result<Option<Event>, StorageError> {
        let d = self.disk();
        Self::get::<EventRecordV2, _>(
            format!("E{account}#{seq}"),
            d.visible.events.get(&(account.to_string(), seq)),
        )
    }

    fn idempotency(&self, account: &str, key: &str) -> Result<Option<IdemRecord>, StorageError> {
        let d = self.disk();
        Self::get::<IdemRecordV1, _>(
            format!("I{account}#{key}"),
            d.visible.idem.get(&(account.to_string(), key.to_string())),
        )
    }

    fn prune_idempotency(&self, cutoff: Ts) -> Result<u64, StorageError> {
        let mut d = self.disk();
        let before = d.visible.idem.len();
        d.visible
            .idem
            .retain(|_, v| match decode::<IdemRecordV1>(b"I", v) {
                Ok(r) => IdemRecord::from(r).at >= cutoff,
                Err(_) => true,
            });
        Ok((before - d.visible.idem.len()) as u64)
    }

    fn accounts(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.disk().visible.snapshots.keys().cloned().collect())
    }

    fn remove_wakeup(&self, account: &str, at: Ts) -> Result<(), StorageError> {
        self.write(vec![Op::WakeDel(at, account.into())])
    }

    fn due_accounts(&self, now: Ts, limit: usize) -> Result<Vec<(Ts, String)>, StorageError> {
        let d = self.disk();
        Ok(d.visible
            .wakeups
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .cloned()
            .collect())
    }

    fn feed_after(
        &self,
        after: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StorageError> {
        let d = self.disk();
        d.visible
            .feed
            .range(after.saturating_add(1)..below.max(after.saturating_add(1)))
            .take(limit)
            .map(|(id, v)| decode::<FeedEntryRecordV1>(format!("F{id}").as_bytes(), v))
            .map(|r| r.map(FeedEntry::from))
            .collect()
    }

    fn feed_next_id(&self) -> u64 {
        self.disk().feed_next
    }

    /// Summed from the accounts on demand (only metrics read it; the simulator does not
    /// prune, so the snapshot + tail is the whole state).
    fn totals(&self) -> BookTotals {
        let mut sum = BookTotals::default();
        for id in self.accounts().unwrap_or_default() {
            if let Ok(Some(mut acct)) = self.snapshot(&id) {
                for ev in self.events_after(&id, acct.seq).unwrap_or_default() {
                    acct.apply(&ev);
                }
                sum.add(&BookTotals::of(&acct));
            }
        }
        sum
    }

    fn prune_feed(&self, below: u64, cutoff: Ts) -> Result<u64, StorageError> {
        let doomed: Vec<u64> = {
            let d = self.disk();
            let newest = d.feed_next.saturating_sub(1);
            d.visible
                .feed
                .range(..newest)
                .take_while(|(id, v)| {
                    let e: FeedEntry = decode::<FeedEntryRecordV1>(b"F", v)
                        .expect("the simulator writes valid records")
                        .into();
                    **id < below || e.at < cutoff
                })
                .map(|(id, _)| *id)
                .collect()
        };
        let n = doomed.len() as u64;
        self.write(doomed.into_iter().map(Op::FeedDel).collect())?;
        Ok(n)
    }

    fn feed_cursor(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let d = self.disk();
        Self::get::<u64, _>(format!("C{name}"), d.visible.cursors.get(name))
    }

    fn set_feed_cursor(&self, name: &str, id: u64) -> Result<(), StorageError> {
        self.write(vec![Op::Cursor(name.into(), encode(&id))])
    }

    fn base(&self, account: &str) -> Result<Option<Account>, StorageError> {
        let d = self.disk();
        Self::get::<AccountRecordV1, _>(format!("B{account}"), d.visible.bases.get(account))
    }

    fn prune_history(&self, account: &str, from: u64, base: &Account) -> Result<(), StorageError> {
        let mut batch = vec![Op::Base(
            account.into(),
            encode(&AccountRecordV1::from(base)),
        )];
        batch.extend((from..=base.seq).map(|s| Op::EventDel(account.into(), s)));
        self.write(batch)
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut d = self.disk();
        let p = d.sync_fail_per_mille;
        if d.faults.chance(p) {
            d.sync_faults += 1;
            return Err(io("fsync"));
        }
        let batches: Vec<Vec<Op>> = d.unsynced.drain(..).collect();
        for b in &batches {
            d.durable.apply(b);
        }
        Ok(())
    }
}

// ------------------------------------------------------- the node: actor + journal

/// The process died (a storage error is fail-stop, or the simulator pulled the plug).
#[derive(Debug)]
struct Crash;

fn fail_stop<T>(r: Result<T, StorageError>) -> Result<T, Crash> {
    r.map_err(|e| match e {
        StorageError::Io(_) | StorageError::Locked { .. } => Crash,
        StorageError::Corrupt { .. } => panic!("the simulator never corrupts a record: {e}"),
    })
}

const SNAPSHOT_EVERY: u64 = 4;
/// Longer than any simulated history, so a retried key is always a duplicate.
const IDEMPOTENCY_TTL_MS: i64 = 100 * 365 * 86_400_000;

struct Live {
    acct: Account,
    snapshot_seq: u64,
    indexed_wakeup: Option<Ts>,
}

/// An answer the journal holds back until the next successful sync.
struct Waiting {
    request: u64,
    event: Event,
    duplicate: bool,
}

enum Answer {
    /// Held by the journal until durable.
    Pending,
    Refused,
    Conflict,
    NotFound,
    Exists,
}

/// What lives in memory: the actors of the accounts touched since the last crash, and
/// the journal's queue of answers waiting for durability.
struct Node {
    live: BTreeMap<String, Live>,
    waiting: Vec<Waiting>,
}

impl Node {
    fn new() -> Node {
        Node {
            live: BTreeMap::new(),
            waiting: Vec::new(),
        }
    }

    /// `AccountActor::activate`: snapshot + the log after it.
    fn activate(&mut self, store: &SimStore, id: &str) -> Result<bool, Crash> {
        if self.live.contains_key(id) {
            return Ok(true);
        }
        let Some(snap) = fail_stop(store.snapshot(id))? else {
            return Ok(false);
        };
        let mut acct = snap;
        let snapshot_seq = acct.seq;
        assert!(
            fail_stop(store.event(id, acct.seq))?.is_some(),
            "account {id}: snapshot at seq {} is ahead of the log",
            acct.seq
        );
        for ev in fail_stop(store.events_after(id, acct.seq))? {
            acct.apply(&ev);
        }
        self.live.insert(
            id.to_string(),
            Live {
                acct,
                snapshot_seq,
                indexed_wakeup: None,
            },
        );
        Ok(true)
    }

    fn write_events(
        store: &SimStore,
        live: &mut Live,
        events: &[Event],
        idempotency: Vec<(&str, IdemRecord)>,
    ) -> Result<(), Crash> {
        let snapshot = (live.acct.seq / SNAPSHOT_EVERY > live.snapshot_seq / SNAPSHOT_EVERY)
            .then_some(&live.acct);
        let snap_seq = snapshot.map(|a| a.seq);
        fail_stop(store.append(
            &live.acct.id.clone(),
            Append {
                events,
                idempotency,
                snapshot,
                wakeup: None,
            },
        ))?;
        if let Some(s) = snap_seq {
            live.snapshot_seq = s;
        }
        Ok(())
    }

    fn reindex(store: &SimStore, live: &mut Live) -> Result<(), Crash> {
        let wakeup = live.acct.next_wakeup();
        if live.indexed_wakeup != Some(wakeup) {
            fail_stop(store.append(
                &live.acct.id.clone(),
                Append {
                    wakeup: Some((live.indexed_wakeup, wakeup)),
                    ..Default::default()
                },
            ))?;
            live.indexed_wakeup = Some(wakeup);
        }
        Ok(())
    }

    /// `AccountActor::catch_up`: every reset and expiry due, at its own instant.
    fn catch_up(store: &SimStore, live: &mut Live, now: Ts, p: &Pricing) -> Result<(), Crash> {
        let mut recorded = Vec::new();
        while let Some((at, body)) = live.acct.next_due(now, p) {
            recorded.push(live.acct.record(body, at, &p.thresholds));
        }
        if recorded.is_empty() {
            return Ok(());
        }
        Self::write_events(store, live, &recorded, Vec::new())?;
        Self::reindex(store, live)
    }

    fn create(
        &mut self,
        store: &SimStore,
        request: u64,
        (id, plan, anchor): (&str, &str, Ts),
        now: Ts,
        p: &Pricing,
    ) -> Result<Answer, Crash> {
        if self.activate(store, id)? {
            return Ok(Answer::Exists);
        }
        let ev = Account::create(id, plan, anchor, now, p).expect("simulated plans exist");
        let mut acct = Account::empty(id);
        acct.apply(&ev);
        let wakeup = acct.next_wakeup();
        fail_stop(store.append(
            id,
            Append {
                events: std::slice::from_ref(&ev),
                snapshot: Some(&acct),
                wakeup: Some((None, wakeup)),
                ..Default::default()
            },
        ))?;
        self.live.insert(
            id.to_string(),
            Live {
                snapshot_seq: acct.seq,
                acct,
                indexed_wakeup: Some(wakeup),
            },
        );
        self.waiting.push(Waiting {
            request,
            event: ev,
            duplicate: false,
        });
        Ok(Answer::Pending)
    }

    /// `AccountActor::try_apply` with `wait_seconds = 0`.
    fn mutate(
        &mut self,
        store: &SimStore,
        request: u64,
        id: &str,
        cmd: &Command,
        now: Ts,
        p: &Pricing,
    ) -> Result<Answer, Crash> {
        if !self.activate(store, id)? {
            return Ok(Answer::NotFound);
        }
        let live = self.live.get_mut(id).expect("activated");
        Self::catch_up(store, live, now, p)?;
        let key = key_of(cmd).to_string();
        let fp = fingerprint(cmd);
        if let Some(rec) = fail_stop(store.idempotency(id, &key))? {
            if rec.at.millis() + IDEMPOTENCY_TTL_MS > now.millis() {
                if rec.fingerprint != fp {
                    return Ok(Answer::Conflict);
                }
                let event = fail_stop(store.event(id, rec.seq))?
                    .unwrap_or_else(|| panic!("account {id}: key {key} points at a lost event"));
                self.waiting.push(Waiting {
                    request,
                    event,
                    duplicate: true,
                });
                return Ok(Answer::Pending);
            }
        }
        let body = match live.acct.decide(cmd, now, p) {
            Ok(body) => body,
            Err(_) => return Ok(Answer::Refused),
        };
        let event = live.acct.record(body, now, &p.thresholds);
        let idem = vec![(
            key.as_str(),
            IdemRecord {
                fingerprint: fp,
                seq: event.seq,
                at: now,
            },
        )];
        Self::write_events(store, live, std::slice::from_ref(&event), idem)?;
        Self::reindex(store, live)?;
        self.waiting.push(Waiting {
            request,
            event,
            duplicate: false,
        });
        Ok(Answer::Pending)
    }

    /// The daemon's sweep plus `Msg::Wake`: wakes every account due in the index.
    fn sweep(&mut self, store: &SimStore, now: Ts, p: &Pricing) -> Result<(), Crash> {
        for (at, id) in fail_stop(store.due_accounts(now, usize::MAX))? {
            if !self.activate(store, &id)? {
                continue;
            }
            let live = self.live.get_mut(&id).expect("activated");
            Self::catch_up(store, live, now, p)?;
            if live.indexed_wakeup != Some(at) {
                fail_stop(store.remove_wakeup(&id, at))?;
            }
            Self::reindex(store, live)?;
        }
        Ok(())
    }

    /// The journal: one sync, then every answer waiting on it.
    fn group_commit(&mut self, store: &SimStore) -> Result<Vec<Waiting>, Crash> {
        fail_stop(store.sync())?;
        Ok(std::mem::take(&mut self.waiting))
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
    },
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    steps: u64,
    crashes: u64,
    write_faults: u64,
    sync_faults: u64,
    acknowledged: u64,
    duplicates: u64,
    refusals: u64,
    events: u64,
    resets: u64,
    expiries: u64,
    alerts: u64,
    snapshots_checked: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.steps += o.steps;
        self.crashes += o.crashes;
        self.write_faults += o.write_faults;
        self.sync_faults += o.sync_faults;
        self.acknowledged += o.acknowledged;
        self.duplicates += o.duplicates;
        self.refusals += o.refusals;
        self.events += o.events;
        self.resets += o.resets;
        self.expiries += o.expiries;
        self.alerts += o.alerts;
        self.snapshots_checked += o.snapshots_checked;
    }
}

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
    store: SimStore,
    node: Node,
    pricing: Pricing,
    now: Ts,
    next_request: u64,
    accounts: Vec<String>,
    /// Requests sent and not yet answered (lost in a crash, or waiting on the journal).
    unanswered: BTreeMap<u64, Request>,
    /// Requests whose answer the journal holds.
    in_journal: BTreeMap<u64, Request>,
    /// Every request ever sent, for retries and conflicts.
    sent: Vec<(u64, Request)>,
    /// Acknowledged mutations: (account, key) → the event first acknowledged.
    acked: BTreeMap<(String, String), Event>,
    /// Acknowledged creations: account → its `Created` event.
    acked_created: BTreeMap<String, Event>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let write_fail = rng.below(8);
        let sync_fail = rng.below(15);
        // Start anywhere in 2024-2025, on the 29th to 31st half of the time.
        let start = Ts(1_704_067_200_000 + rng.range(0, 700) * DAY_MS);
        Sim {
            store: SimStore::new(seed, write_fail, sync_fail),
            rng,
            node: Node::new(),
            pricing: Pricing::standard(),
            now: start,
            next_request: 1,
            accounts: Vec::new(),
            unanswered: BTreeMap::new(),
            in_journal: BTreeMap::new(),
            sent: Vec::new(),
            acked: BTreeMap::new(),
            acked_created: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn fresh_key(&mut self) -> String {
        format!("k{}", self.next_request)
    }

    fn new_command(&mut self) -> Command {
        let key = self.fresh_key();
        let r = &mut self.rng;
        match r.below(100) {
            0..=44 => Command::Debit {
                operation: r.pick(OPERATIONS).to_string(),
                quantity: r.range(1, 12) as u32,
                metadata: if r.chance(200) {
                    vec![("job".into(), format!("{}", r.below(1000)))]
                } else {
                    Vec::new()
                },
                idempotency_key: key,
            },
            45..=59 => Command::PlaceHold {
                operation: r.pick(OPERATIONS).to_string(),
                quantity: r.range(1, 6) as u32,
                ttl_ms: r.range(60_000, 3 * DAY_MS),
                idempotency_key: key,
            },
            60..=67 => Command::Capture {
                hold_id: r.range(1, 8) as u64,
                credits: r.chance(500).then(|| Credits(r.below(30))),
                idempotency_key: Some(key),
            },
            68..=74 => Command::Release {
                hold_id: r.range(1, 8) as u64,
                idempotency_key: Some(key),
            },
            75..=82 => Command::ChangePlan {
                plan: r.pick(PLANS).to_string(),
                idempotency_key: key,
            },
            83..=91 => Command::Purchase {
                pack: r.pick(PACKS).to_string(),
                payment_ref: format!("pay-{key}"),
            },
            _ => Command::Grant {
                bucket: *r.pick(&Bucket::ALL),
                credits: Credits(r.range(1, 120) as u64),
                reason: "support".into(),
                idempotency_key: key,
            },
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
        }
        c
    }

    fn run(&mut self, steps: u64) -> Result<(), String> {
        for _ in 0..steps {
            self.stats.steps += 1;
            self.advance_clock();
            match self.step() {
                Ok(()) => {}
                Err(Crash) => self.crash_and_recover()?,
            }
        }
        // The end: flush what is waiting, then crash once more and check everything.
        if let Ok(done) = self.node.group_commit(&self.store) {
            self.acknowledge(done)?;
        }
        self.crash_and_recover()?;
        let d = self.store.disk();
        self.stats.write_faults = d.write_faults;
        self.stats.sync_faults = d.sync_faults;
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

    fn step(&mut self) -> Result<(), Crash> {
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
        match roll {
            40..=59 => {
                self.stats.crashes += 1;
                Err(Crash)
            }
            60..=219 => {
                let done = self.node.group_commit(&self.store)?;
                self.acknowledge(done).map_err(|e| panic!("{e}"))
            }
            220..=269 => self.node.sweep(&self.store, self.now, &self.pricing),
            270..=399 if !self.sent.is_empty() => {
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
                    Request::Mutate { id, cmd } if self.rng.chance(150) => Request::Mutate {
                        cmd: Self::conflicting(&cmd),
                        id,
                    },
                    r => r,
                };
                self.send(req)
            }
            _ => {
                let id = self.rng.pick(&self.accounts).clone();
                let cmd = self.new_command();
                self.send(Request::Mutate { id, cmd })
            }
        }
    }

    fn send(&mut self, req: Request) -> Result<(), Crash> {
        let n = self.next_request;
        self.next_request += 1;
        let answer = match &req {
            Request::Create { id, plan, anchor } => {
                self.node
                    .create(&self.store, n, (id, plan, *anchor), self.now, &self.pricing)?
            }
            Request::Mutate { id, cmd } => {
                self.node
                    .mutate(&self.store, n, id, cmd, self.now, &self.pricing)?
            }
        };
        match answer {
            Answer::Pending => {
                self.unanswered.insert(n, req.clone());
                self.in_journal.insert(n, req.clone());
            }
            Answer::Refused | Answer::Conflict | Answer::NotFound | Answer::Exists => {
                self.stats.refusals += 1;
                // A refused request leaves no trace under its key, unless the key was
                // bound by an earlier request (then the answer is a conflict).
                if let (Answer::Refused, Request::Mutate { id, cmd }) = (&answer, &req) {
                    let rec = self.store.idempotency(id, key_of(cmd)).expect("readable");
                    assert!(rec.is_none(), "a refused request bound key {}", key_of(cmd));
                }
                if let (Answer::NotFound, Request::Mutate { id, .. }) = (&answer, &req) {
                    assert!(
                        !self.acked_created.contains_key(id),
                        "acknowledged account {id} is not found"
                    );
                }
                self.drop_unanswered_same(&req);
            }
        }
        self.sent.push((n, req));
        Ok(())
    }

    /// An answered retry settles the earlier unanswered sends of the same request.
    fn drop_unanswered_same(&mut self, req: &Request) {
        let same = |r: &Request| match (r, req) {
            (Request::Create { id: a, .. }, Request::Create { id: b, .. }) => a == b,
            (Request::Mutate { id: a, cmd: x }, Request::Mutate { id: b, cmd: y }) => {
                a == b && key_of(x) == key_of(y)
            }
            _ => false,
        };
        self.unanswered.retain(|_, r| !same(r));
    }

    fn acknowledge(&mut self, done: Vec<Waiting>) -> Result<(), String> {
        for w in done {
            let req = self
                .in_journal
                .remove(&w.request)
                .ok_or("an answer for a request nobody is waiting on")?;
            self.stats.acknowledged += 1;
            self.stats.duplicates += w.duplicate as u64;
            match &req {
                Request::Create { id, .. } => {
                    self.acked_created.insert(id.clone(), w.event.clone());
                }
                Request::Mutate { id, cmd } => {
                    let k = (id.clone(), key_of(cmd).to_string());
                    if let Some(first) = self.acked.get(&k) {
                        if *first != w.event {
                            return Err(format!(
                                "key {k:?} answered twice with different events:\n{first:?}\n{:?}",
                                w.event
                            ));
                        }
                        if !w.duplicate {
                            return Err(format!("key {k:?} applied twice"));
                        }
                    } else {
                        self.acked.insert(k, w.event.clone());
                    }
                }
            }
            self.drop_unanswered_same(&req);
        }
        Ok(())
    }

    fn crash_and_recover(&mut self) -> Result<(), String> {
        loop {
            // Everything in memory is gone: the actors and the answers the journal held.
            self.node = Node::new();
            self.in_journal.clear();
            self.store.crash(&mut self.rng);
            self.check_disk()?;
            // Restarted, the sweep catches every account up; after it nothing is overdue
            // (resets and expiries go out on time). Its writes may fail too: crash again.
            match self.node.sweep(&self.store, self.now, &self.pricing) {
                Ok(()) => break,
                Err(Crash) => self.stats.crashes += 1,
            }
        }
        for (id, live) in &self.node.live {
            if live.acct.next_due(self.now, &self.pricing).is_some() {
                return Err(format!("account {id}: overdue after a sweep"));
            }
        }
        Ok(())
    }

    /// The invariants, over everything the disk holds after a crash.
    fn check_disk(&mut self) -> Result<(), String> {
        let s = &self.store;
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
            let events = s.events_after(id, 0).map_err(|e| e.to_string())?;
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
            let mut fired = 0u128;
            for ev in &events {
                full.apply(ev);
                full.check_books()?;
                if let Some(k) = ev.body.idempotency_key() {
                    if !keys.insert(k.to_string()) {
                        return Err(format!("account {id}: key {k} applied twice"));
                    }
                }
                match ev.body.kind() {
                    "reset" => self.stats.resets += 1,
                    "release" if ev.notices().contains(&Notice::HoldExpired) => {
                        self.stats.expiries += 1
                    }
                    _ => {}
                }
                // Alerts: a threshold fires exactly when remaining % crosses to or below
                // it while armed, and re-arms exactly when it rises above it through
                // credits added; credits back from a hold re-arm only exhaustion (0).
                for &t in &self.pricing.thresholds {
                    let bit = 1u128 << t;
                    let below = creditsd::domain::alerts::at_or_below(
                        full.available(),
                        full.period_budget,
                        t,
                    );
                    let should_fire = below && fired & bit == 0;
                    let added = ev.body.adds_credits() || t == 0;
                    let should_rearm = !below && fired & bit != 0 && added;
                    if should_fire != (ev.alerts.fired & bit != 0)
                        || should_rearm != (ev.alerts.rearmed & bit != 0)
                    {
                        return Err(format!(
                            "account {id} seq {}: threshold {t} fired/re-armed wrongly",
                            ev.seq
                        ));
                    }
                    if should_fire {
                        fired |= bit;
                        self.stats.alerts += 1;
                    }
                    if should_rearm {
                        fired &= !bit;
                    }
                }
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
                .events_after(id, from_snap.seq)
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
    let mut total = Stats::default();
    for seed in start..start + count {
        let result = std::panic::catch_unwind(|| run_seed(seed, steps));
        match result {
            Ok(Ok(stats)) => total += stats,
            Ok(Err(e)) => panic!(
                "simulator: seed {seed} broke an invariant: {e}\n\
                 reproduce: SIM_SEED={seed} cargo test --test simulator"
            ),
            Err(_) => panic!(
                "simulator: seed {seed} panicked (message above)\n\
                 reproduce: SIM_SEED={seed} cargo test --test simulator"
            ),
        }
    }
    println!("simulator: {count} seeds from {start}, {steps} steps each: {total:?}");
    // The histories must actually cross what they claim to test.
    assert!(total.crashes > 0 && total.resets > 0 && total.expiries > 0 && total.alerts > 0);
    assert!(total.acknowledged > 0 && total.duplicates > 0);
    if count >= 50 {
        assert!(total.write_faults > 0 && total.sync_faults > 0, "{total:?}");
    }
}
