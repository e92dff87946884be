//! A deterministic simulator in the spirit of TigerBeetle's VOPR: from one `u64` seed it
//! drives the daemon's own code — the account core (`creditsd::actor::core`: activation,
//! catch-up, idempotency, decide, write ahead, apply, parked debits, snapshots, the
//! wake-up index) and the store (`SledStore`: the overlay, the group records, the
//! checkpointer, replay at open, the key layout, feed ids, book totals) — over `SimKv`, a
//! key-value engine in memory that fails writes, fails syncs and crashes.
//!
//! The disk model is sled's contract (`store/kv.rs`): each write is atomic, and a crash
//! keeps every write before the last successful sync and a random prefix of the writes
//! after it. A torn last write is one sled's checksums discard at recovery, so the kept
//! prefix ends before it; a group commit cut into several records can lose its tail
//! records that way. Only the tokio shell is not simulated: the actor loop (which carries
//! the core's outputs out) and the journal thread (here: one `sync`, then the answers
//! waiting on it). The checkpointer runs as steps the seed chooses, between requests.
//!
//! A storage error is fail-stop in the daemon, so here it is a crash. After every crash
//! the node reopens the store on what the disk kept (replaying its group records) and the
//! checker asserts: no acknowledged mutation lost, none applied twice, books balance,
//! snapshot + tail = full replay, alerts fired once per crossing, the feed matches the log.
//!
//! A failure prints its seed; `SIM_SEED=n cargo test --test simulator` replays it.
//! `SIM_SEEDS=n` (default 300) and `SIM_SEED_START` choose the range;
//! `benches/simulate.sh` runs thousands.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use creditsd::actor::core::{
    AccountCore, Client, Fatal, Input, Output, Request as CoreRequest, Rules,
};
use creditsd::actor::{ActorError, Outcome, Reply};
use creditsd::domain::{Account, Bucket, Command, Credits, Event, EventBody, Notice, Pricing, Ts};
use creditsd::store::kv::{Kv, KvIter};
use creditsd::store::overlay::Tuning;
use creditsd::store::sled_store::Options;
use creditsd::store::{SledStore, StorageError, Store};

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

// ------------------------------------------------------- the node: the daemon's code

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
    /// Opens the real store on the disk: it replays the group records a crash left.
    fn open(kv: &Arc<SimKv>, tuning: Tuning, pricing: &Pricing) -> Result<Node, Crash> {
        let kv: Arc<dyn Kv> = kv.clone();
        let store = fail_stop(SledStore::open_on(
            kv,
            Options {
                tuning,
                checkpointer_thread: false,
            },
        ))?;
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
    fn checkpoint(&mut self) -> Result<(), Crash> {
        fail_stop(self.store.checkpoint_step()).map(|_| ())
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
    parked_served: u64,
    group_records_replayed: u64,
    writes_lost: u64,
    checkpoints: u64,
    graceful_restarts: u64,
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
        self.parked_served += o.parked_served;
        self.group_records_replayed += o.group_records_replayed;
        self.writes_lost += o.writes_lost;
        self.checkpoints += o.checkpoints;
        self.graceful_restarts += o.graceful_restarts;
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
    kv: Arc<SimKv>,
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
        };
        // Start anywhere in 2024-2025, on the 29th to 31st half of the time.
        let start = Ts(1_704_067_200_000 + rng.range(0, 700) * DAY_MS);
        let kv = Arc::new(SimKv::new(seed, write_fail, sync_fail));
        let pricing = Pricing::standard();
        let node =
            Node::open(&kv, tuning, &pricing).unwrap_or_else(|_| panic!("an empty disk opens"));
        Sim {
            kv,
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
        self.stats.write_faults = d.write_faults;
        self.stats.sync_faults = d.sync_faults;
        self.stats.writes_lost = d.lost;
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
                self.node = Node::open(&self.kv, self.tuning, &self.pricing)?;
                return Ok(self.check_disk());
            }
            65..=199 => self.node.group_commit()?,
            200..=239 => {
                self.stats.checkpoints += 1;
                self.node.checkpoint()?;
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
                let cmd = self.new_command();
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
                let k = (id.clone(), key_of(cmd).to_string());
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

    fn crash_and_recover(&mut self) -> Result<(), String> {
        loop {
            // Everything in memory is gone: the cores and the answers the journal held.
            self.in_flight.clear();
            self.kv.crash(&mut self.rng);
            let records = self.group_records();
            // Reopening replays the group records the crash left; its writes may fail
            // too: crash again.
            let Ok(node) = Node::open(&self.kv, self.tuning, &self.pricing) else {
                self.stats.crashes += 1;
                continue;
            };
            self.node = node;
            self.stats.group_records_replayed += records;
            if self.group_records() != 0 {
                return Err(format!(
                    "{} group records left after the store opened ({records} before)",
                    self.group_records()
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

    /// Group records on the disk (what a reopen must replay).
    fn group_records(&self) -> u64 {
        let d = self.kv.disk();
        d.visible
            .keys()
            .filter(|k| k.first() == Some(&creditsd::store::overlay::GROUP))
            .count() as u64
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
            let mut fired = 0u128;
            for ev in &events {
                moved_as_recorded(&full, ev)
                    .map_err(|e| format!("account {id} seq {}: {e}", ev.seq))?;
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
                ..
            },
            EventBody::Debited {
                operation: o,
                quantity: q,
                metadata: m,
                ..
            },
        ) => operation == o && quantity == q && metadata == m,
        (
            Command::PlaceHold {
                operation,
                quantity,
                ..
            },
            EventBody::HoldPlaced {
                operation: o,
                quantity: q,
                ..
            },
        ) => operation == o && quantity == q,
        (Command::Capture { hold_id, .. }, EventBody::HoldCaptured { hold_id: h, .. })
        | (Command::Release { hold_id, .. }, EventBody::HoldReleased { hold_id: h, .. }) => {
            hold_id == h
        }
        (Command::ChangePlan { plan, .. }, EventBody::PlanChanged { to, .. }) => plan == to,
        (Command::Purchase { pack, .. }, EventBody::Purchased { pack: p, .. }) => pack == p,
        (
            Command::Grant {
                bucket, credits, ..
            },
            EventBody::Granted {
                bucket: b,
                credits: c,
                ..
            },
        ) => bucket == b && credits == c,
        _ => false,
    }
}

/// Checks an event against the state before it, independently of the domain's code:
/// a debit or a hold takes monthly, then free, then packs; a hold's credits come back to
/// the buckets the event says (and the balances move by exactly that).
fn moved_as_recorded(before: &Account, ev: &Event) -> Result<(), String> {
    let b = before.balances;
    let expected_take = |credits: Credits| {
        let c = credits.get();
        let monthly = c.min(b.monthly.get());
        let free = (c - monthly).min(b.free.get());
        (monthly, free, c - monthly - free)
    };
    let delta = |after: Credits, before: Credits| after.get() as i128 - before.get() as i128;
    match &ev.body {
        EventBody::Debited { credits, taken, .. }
        | EventBody::HoldPlaced { credits, taken, .. } => {
            let want = expected_take(*credits);
            let got = (taken.monthly.get(), taken.free.get(), taken.packs.get());
            if got != want {
                return Err(format!("took {got:?} (monthly, free, packs), not {want:?}"));
            }
        }
        EventBody::HoldReleased { returned, .. } | EventBody::HoldCaptured { returned, .. } => {
            let moved = (
                delta(ev.after.monthly, b.monthly),
                delta(ev.after.free, b.free),
                delta(ev.after.packs, b.packs),
            );
            let said = (
                returned.monthly.get() as i128,
                returned.free.get() as i128,
                returned.packs.get() as i128,
            );
            if moved != said {
                return Err(format!("returned {said:?} but the buckets moved {moved:?}"));
            }
        }
        _ => {}
    }
    Ok(())
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
