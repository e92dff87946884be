//! The account core: everything an account's actor does for one message, as plain
//! synchronous code over a `Store` and an instant. Activation (snapshot + log tail),
//! catching up on time (resets and hold expiries at their own instants), idempotency,
//! decide, write ahead, apply, parked debits (as data: a queue with deadlines), snapshots
//! and the wake-up index all live here. It reads no clock, spawns nothing and sends
//! nothing: it answers `Output`s, and its caller sends them (the tokio actor through the
//! journal, the simulator through its own group commit). So the simulator runs this very
//! code over a faulty disk.
//!
//! A storage error on a write, or on a read that is not a corrupt record, comes back as
//! `Fatal`: the caller stops the process (fail-stop) without sending anything after it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::fingerprint::{fingerprint, key_of};
use super::{ActorError, Outcome, Reply};
use crate::domain::account::DebitRef;
use crate::domain::{Account, Command, Event, Pricing, Refusal, Ts};
use crate::metrics as m;
use crate::store::recovery::{recover, Start, Visit};
use crate::store::{Append, IdemRecord, StorageError, Store};

/// Whoever waits for an answer: a reply channel in the daemon, a request id in the
/// simulator.
pub trait Client {
    /// The requester has gone (hung up): a parked request of theirs is dropped unanswered
    /// and charged nothing.
    fn gone(&self) -> bool;
}

/// The rules an account is kept by, borrowed from the daemon's services.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub pricing: &'a Pricing,
    pub snapshot_every: u64,
    pub idempotency_ttl_ms: i64,
    pub parked_max: usize,
}

/// One message for the core.
pub enum Input<C> {
    Create {
        plan: String,
        anchor: Option<Ts>,
        client: C,
    },
    Get {
        client: C,
    },
    Mutate(Request<C>),
    /// The sweep found this account due at `indexed_at` in the wake-up index.
    Wake {
        indexed_at: Ts,
    },
    /// A timer went off: time-driven events, parked waits that ended, hung-up clients.
    Tick,
    /// The daemon is stopping: every parked request is answered 503, none parks any more.
    Unpark,
    /// The actor is about to stop (passivation, shutdown): snapshot if the log moved.
    Stop,
}

pub struct Request<C> {
    pub cmd: Command,
    pub dry_run: bool,
    /// How long, in ms, a request short of credits may park (0: answer 402 now).
    pub wait_ms: i64,
    pub client: C,
}

/// What the caller must do, in order.
pub enum Output<C> {
    /// Send this now: it acknowledges nothing written.
    Answer { client: C, reply: Reply },
    /// Send this once every write made so far is durable (through the group commit).
    AfterSync { client: C, reply: Reply },
    /// Events nobody waits on were written (a reset, an expiry): sync soon, so they are
    /// durable and reach the feed on time.
    SyncSoon,
}

/// A storage failure: the process must stop without acknowledging anything further.
#[derive(Debug)]
pub struct Fatal(pub String);

enum State {
    /// No such account (yet): only `Create` does anything.
    Absent,
    /// Shared with readers: a `Get` answers a pointer, and a mutation copies the account
    /// only if a reader still holds the previous version (`Arc::make_mut`).
    Live(Arc<Account>),
    /// A record of this account is corrupt: every request gets this error.
    Failed(String),
}

struct Parked<C> {
    request: Request<C>,
    deadline: Ts,
}

pub struct AccountCore<C> {
    id: String,
    state: State,
    /// Seq of the last snapshot written (or read).
    snapshot_seq: u64,
    /// Where this account stands in the store's wake-up index, if we wrote it.
    indexed_wakeup: Option<Ts>,
    parked: VecDeque<Parked<C>>,
    /// Set by `Unpark`: nothing parks any more.
    stopping: bool,
}

type Out<C> = Vec<Output<C>>;

impl<C: Client> AccountCore<C> {
    /// Activates the account: its latest snapshot and the log after it.
    pub fn activate(id: &str, store: &dyn Store) -> Result<AccountCore<C>, Fatal> {
        let started = std::time::Instant::now();
        let mut core = AccountCore {
            id: id.to_string(),
            state: State::Absent,
            snapshot_seq: 0,
            indexed_wakeup: None,
            parked: VecDeque::new(),
            stopping: false,
        };
        core.state = match recover(store, id, Start::Snapshot, |_, _| Ok(Visit::Continue)) {
            Ok(Some(r)) => {
                core.snapshot_seq = r.snapshot_seq;
                metrics::histogram!(m::ACCOUNT_ACTIVATION_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                State::Live(Arc::new(r.account))
            }
            Ok(None) => State::Absent,
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::error!(account = %id, error = %e, "account cannot be activated");
                State::Failed(format!("account {id}: {e}"))
            }
            Err(e) => return Err(Fatal(format!("reading account {id}: {e}"))),
        };
        Ok(core)
    }

    /// No such account, and nothing waiting: the actor may go.
    pub fn is_absent(&self) -> bool {
        matches!(self.state, State::Absent) && self.parked.is_empty()
    }

    /// A live account with nothing parked may passivate (parked requests wait on its
    /// timers).
    pub fn may_passivate(&self) -> bool {
        matches!(self.state, State::Live(_)) && self.parked.is_empty()
    }

    /// `Unpark` was handled: nothing parks any more.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The account as it is, if it exists.
    pub fn account(&self) -> Option<&Arc<Account>> {
        match &self.state {
            State::Live(a) => Some(a),
            _ => None,
        }
    }

    /// The earliest instant at which a `Tick` has something to do: a reset, an expiry, or
    /// the end of a parked request's wait.
    pub fn next_wakeup(&self) -> Option<Ts> {
        let account = self.account().map(|a| a.next_wakeup());
        let parked = self.parked.iter().map(|p| p.deadline).min();
        match (account, parked) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    /// Handles one message at `now`.
    pub fn handle(
        &mut self,
        input: Input<C>,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
    ) -> Result<Out<C>, Fatal> {
        let mut out = Vec::new();
        match input {
            Input::Create {
                plan,
                anchor,
                client,
            } => self.create(plan, anchor, client, store, rules, now, &mut out)?,
            Input::Get { client } => {
                self.catch_up(store, rules, now, &mut out)?;
                let reply = match &self.state {
                    State::Live(acct) => Ok(Outcome::View(acct.clone())),
                    State::Absent => Err(ActorError::NotFound),
                    State::Failed(e) => Err(ActorError::Corrupt(e.clone())),
                };
                out.push(Output::Answer { client, reply });
            }
            Input::Mutate(request) => {
                self.catch_up(store, rules, now, &mut out)?;
                self.mutate(request, store, rules, now, &mut out)?;
                if !self.parked.is_empty() {
                    self.serve_parked(store, rules, now, &mut out)?;
                }
            }
            Input::Wake { indexed_at } => {
                self.catch_up(store, rules, now, &mut out)?;
                if self.indexed_wakeup != Some(indexed_at) {
                    // A stale index entry (left by a crash, or by an earlier activation).
                    store
                        .remove_wakeup(&self.id, indexed_at)
                        .map_err(|e| self.fatal(e))?;
                }
                self.reindex(store)?;
                self.serve_parked(store, rules, now, &mut out)?;
            }
            Input::Tick => self.on_time(store, rules, now, &mut out)?,
            Input::Unpark => {
                self.stopping = true;
                for p in self.parked.drain(..) {
                    out.push(Output::Answer {
                        client: p.request.client,
                        reply: Err(ActorError::Unavailable),
                    });
                }
            }
            Input::Stop => {
                for p in self.parked.drain(..) {
                    out.push(Output::Answer {
                        client: p.request.client,
                        reply: Err(ActorError::Unavailable),
                    });
                }
                self.snapshot_if_behind(store)?;
            }
        }
        Ok(out)
    }

    fn fatal(&self, e: StorageError) -> Fatal {
        Fatal(format!("writing account {}: {e}", self.id))
    }

    fn write(&self, store: &dyn Store, append: Append<'_>) -> Result<(), Fatal> {
        store.append(&self.id, append).map_err(|e| self.fatal(e))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        plan: String,
        anchor: Option<Ts>,
        client: C,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<(), Fatal> {
        let refused = match &self.state {
            State::Live(_) => Some(ActorError::Exists),
            State::Failed(e) => Some(ActorError::Corrupt(e.clone())),
            State::Absent => None,
        };
        if let Some(e) = refused {
            out.push(Output::Answer {
                client,
                reply: Err(e),
            });
            return Ok(());
        }
        let ev = match Account::create(&self.id, &plan, anchor.unwrap_or(now), now, rules.pricing) {
            Ok(ev) => ev,
            Err(r) => {
                out.push(Output::Answer {
                    client,
                    reply: Err(ActorError::Refused(r)),
                });
                return Ok(());
            }
        };
        let mut acct = Account::empty(&self.id);
        acct.apply(&ev);
        let wakeup = acct.next_wakeup();
        self.write(
            store,
            Append {
                events: std::slice::from_ref(&ev),
                snapshot: Some(&acct),
                wakeup: Some((None, wakeup)),
                ..Default::default()
            },
        )?;
        self.indexed_wakeup = Some(wakeup);
        self.snapshot_seq = acct.seq;
        m::record_event(&ev, &plan);
        self.state = State::Live(Arc::new(acct));
        out.push(Output::AfterSync {
            client,
            reply: Ok(Outcome::Applied {
                event: ev,
                duplicate: false,
            }),
        });
        Ok(())
    }

    /// Records every time-driven event due at `now`: resets at their boundaries, expiries.
    fn catch_up(
        &mut self,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<(), Fatal> {
        let State::Live(acct) = &mut self.state else {
            return Ok(());
        };
        let mut recorded = Vec::new();
        while let Some((at, body)) = acct.next_due(now, rules.pricing) {
            recorded.push(Arc::make_mut(acct).record(body, at, rules.pricing));
        }
        if recorded.is_empty() {
            return Ok(());
        }
        for ev in &recorded {
            m::record_event(ev, &acct.plan);
        }
        self.write_events(store, rules, &recorded, Vec::new())?;
        self.reindex(store)?;
        out.push(Output::SyncSoon);
        Ok(())
    }

    /// Moves the account in the wake-up index when its next wake-up changed.
    fn reindex(&mut self, store: &dyn Store) -> Result<(), Fatal> {
        let State::Live(acct) = &self.state else {
            return Ok(());
        };
        let wakeup = acct.next_wakeup();
        if self.indexed_wakeup != Some(wakeup) {
            self.write(
                store,
                Append {
                    wakeup: Some((self.indexed_wakeup, wakeup)),
                    ..Default::default()
                },
            )?;
            self.indexed_wakeup = Some(wakeup);
        }
        Ok(())
    }

    /// Writes events (and their idempotency records), with a snapshot when one is due.
    fn write_events(
        &mut self,
        store: &dyn Store,
        rules: Rules<'_>,
        events: &[Event],
        idempotency: Vec<(&str, IdemRecord)>,
    ) -> Result<(), Fatal> {
        let State::Live(acct) = &self.state else {
            unreachable!("only live accounts record")
        };
        let every = rules.snapshot_every;
        let snapshot = (acct.seq / every > self.snapshot_seq / every).then_some(&**acct);
        if snapshot.is_some() {
            metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
        }
        let seq = acct.seq;
        self.write(
            store,
            Append {
                events,
                idempotency,
                snapshot,
                wakeup: None,
            },
        )?;
        if snapshot.is_some() {
            self.snapshot_seq = seq;
        }
        Ok(())
    }

    /// Writes a snapshot when events were recorded since the last one, so the next
    /// activation replays nothing. It needs no sync of its own: activation trusts the log
    /// over a snapshot ahead of it.
    fn snapshot_if_behind(&mut self, store: &dyn Store) -> Result<(), Fatal> {
        if let State::Live(acct) = &self.state {
            if acct.seq > self.snapshot_seq {
                self.write(
                    store,
                    Append {
                        snapshot: Some(acct),
                        ..Default::default()
                    },
                )?;
                self.snapshot_seq = acct.seq;
                metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
            }
        }
        Ok(())
    }

    fn on_time(
        &mut self,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<(), Fatal> {
        self.catch_up(store, rules, now, out)?;
        // Parked clients that hung up give up their place; nothing is debited for them.
        self.parked.retain(|p| !p.request.client.gone());
        let (ended, waiting): (VecDeque<Parked<C>>, VecDeque<Parked<C>>) =
            self.parked.drain(..).partition(|p| p.deadline <= now);
        self.parked = waiting;
        for p in ended {
            // The wait is over: one last try (it may fit now, behind a head that did not),
            // and otherwise the 402 it would have had at once.
            let mut request = p.request;
            request.wait_ms = 0;
            self.try_apply(request, store, rules, now, out)?;
        }
        self.serve_parked(store, rules, now, out)
    }

    fn mutate(
        &mut self,
        request: Request<C>,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<(), Fatal> {
        // A retry of a request that is parked takes over its place; the older request is
        // answered, so exactly one of them can ever be applied.
        if let (false, Some(key)) = (request.dry_run, key_of(&request.cmd)) {
            if let Some(i) = self
                .parked
                .iter()
                .position(|p| key_of(&p.request.cmd) == Some(key))
            {
                let old = &mut self.parked[i];
                if fingerprint(&old.request.cmd) == fingerprint(&request.cmd) {
                    // The retry waits its own `wait_seconds`, from now.
                    old.deadline = now.plus_millis(request.wait_ms);
                    let prev = std::mem::replace(&mut old.request, request);
                    out.push(Output::Answer {
                        client: prev.client,
                        reply: Err(ActorError::Unavailable),
                    });
                } else {
                    let key = key.to_string();
                    out.push(Output::Answer {
                        client: request.client,
                        reply: Err(ActorError::IdempotencyConflict { key }),
                    });
                }
                return Ok(());
            }
        }
        // Parked requests keep their arrival order: a waiting request queues behind them.
        if request.wait_ms > 0 && !self.parked.is_empty() {
            self.park(request, rules, now, out);
            return Ok(());
        }
        if let Some(request) = self.try_apply(request, store, rules, now, out)? {
            self.park(request, rules, now, out);
        }
        Ok(())
    }

    /// Parks a request short of credits, unless the daemon is stopping (503) or the
    /// account has `parked_max` waiting already (429).
    fn park(&mut self, request: Request<C>, rules: Rules<'_>, now: Ts, out: &mut Out<C>) {
        let refused = if self.stopping {
            Some(ActorError::Unavailable)
        } else if self.parked.len() >= rules.parked_max {
            Some(ActorError::Overloaded)
        } else {
            None
        };
        if let Some(e) = refused {
            out.push(Output::Answer {
                client: request.client,
                reply: Err(e),
            });
            return;
        }
        let deadline = now.plus_millis(request.wait_ms);
        self.parked.push_back(Parked { request, deadline });
    }

    /// Applies parked requests in arrival order while the first one fits.
    fn serve_parked(
        &mut self,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<(), Fatal> {
        while let Some(p) = self.parked.pop_front() {
            if p.request.client.gone() {
                continue; // the client hung up: nothing is debited for it
            }
            let deadline = p.deadline;
            if let Some(back) = self.try_apply(p.request, store, rules, now, out)? {
                self.parked.push_front(Parked {
                    request: back,
                    deadline,
                });
                break;
            }
        }
        Ok(())
    }

    /// Idempotency, decide, write, apply, acknowledge. Answers the request back when it
    /// is short of credits and may wait.
    fn try_apply(
        &mut self,
        mut request: Request<C>,
        store: &dyn Store,
        rules: Rules<'_>,
        now: Ts,
        out: &mut Out<C>,
    ) -> Result<Option<Request<C>>, Fatal> {
        let acct = match &mut self.state {
            State::Live(acct) => acct,
            State::Absent => {
                out.push(Output::Answer {
                    client: request.client,
                    reply: Err(ActorError::NotFound),
                });
                return Ok(None);
            }
            State::Failed(e) => {
                let e = e.clone();
                out.push(Output::Answer {
                    client: request.client,
                    reply: Err(ActorError::Corrupt(e)),
                });
                return Ok(None);
            }
        };
        let key = key_of(&request.cmd).map(str::to_string);
        let fp = fingerprint(&request.cmd);
        if let Some(key) = &key {
            if let Some(reply) = duplicate(store, &self.id, key, fp, &request.cmd, rules, now)? {
                // Through the group commit: the first answer may not be durable yet.
                out.push(Output::AfterSync {
                    client: request.client,
                    reply,
                });
                return Ok(None);
            }
        }
        if let Command::Refund {
            debit_key, debit, ..
        } = &mut request.cmd
        {
            match find_debit(store, &self.id, debit_key, rules, now)? {
                Ok(found) => *debit = found.map(Box::new),
                Err(e) => {
                    out.push(Output::Answer {
                        client: request.client,
                        reply: Err(e),
                    });
                    return Ok(None);
                }
            }
        }
        let body = match acct.decide(&request.cmd, now, rules.pricing) {
            Ok(body) => body,
            Err(Refusal::InsufficientCredits { .. }) if request.wait_ms > 0 && !request.dry_run => {
                return Ok(Some(request));
            }
            Err(r) => {
                let result = match r {
                    Refusal::InsufficientCredits { .. } => "insufficient",
                    Refusal::MemberCapReached { .. } => {
                        m::member_cap_refused();
                        "member_cap"
                    }
                    _ => "invalid",
                };
                m::count_result(&request.cmd, result);
                out.push(Output::Answer {
                    client: request.client,
                    reply: Err(ActorError::Refused(r)),
                });
                return Ok(None);
            }
        };
        if request.dry_run {
            let mut preview = (**acct).clone();
            let event = preview.record(body, now, rules.pricing);
            out.push(Output::Answer {
                client: request.client,
                reply: Ok(Outcome::DryRun { event }),
            });
            return Ok(None);
        }
        let event = Arc::make_mut(acct).record(body, now, rules.pricing);
        m::record_event(&event, &acct.plan);
        m::count_result(&request.cmd, "ok");
        let idem: Vec<(&str, IdemRecord)> = key
            .iter()
            .map(|k| {
                let rec = IdemRecord {
                    fingerprint: fp,
                    seq: event.seq,
                    at: now,
                };
                (k.as_str(), rec)
            })
            .collect();
        self.write_events(store, rules, std::slice::from_ref(&event), idem)?;
        self.reindex(store)?;
        out.push(Output::AfterSync {
            client: request.client,
            reply: Ok(Outcome::Applied {
                event,
                duplicate: false,
            }),
        });
        Ok(None)
    }
}

/// The record `key` is bound to, while it is remembered (`idempotency_ttl`): duplicates
/// and a refund's debit are both found through it.
fn remembered(
    store: &dyn Store,
    id: &str,
    key: &str,
    rules: Rules<'_>,
    now: Ts,
) -> Result<Option<IdemRecord>, StorageError> {
    Ok(store
        .idempotency(id, key)?
        .filter(|rec| rec.at.millis() + rules.idempotency_ttl_ms > now.millis()))
}

/// A failed read: a corrupt record is this request's error (other accounts keep working);
/// any other storage error stops the process.
fn read_failure<T>(id: &str, e: StorageError) -> Result<Result<T, ActorError>, Fatal> {
    match e {
        StorageError::Corrupt { .. } => Ok(Err(ActorError::Corrupt(e.to_string()))),
        e => Err(Fatal(format!("reading account {id}: {e}"))),
    }
}

/// The debit recorded under `key` while the key is remembered, for a refund: `Ok(None)`
/// when there is none (or the key names another kind of request).
fn find_debit(
    store: &dyn Store,
    id: &str,
    key: &str,
    rules: Rules<'_>,
    now: Ts,
) -> Result<Result<Option<DebitRef>, ActorError>, Fatal> {
    let rec = match remembered(store, id, key, rules, now) {
        Ok(Some(rec)) => rec,
        Ok(None) => return Ok(Ok(None)),
        Err(e) => return read_failure(id, e),
    };
    match store.event(id, rec.seq) {
        Ok(event) => Ok(Ok(event.as_ref().and_then(DebitRef::from_event))),
        Err(e) => read_failure(id, e),
    }
}

/// The answer to a request whose key is already bound and still remembered: the first
/// answer again, or a conflict when the body differs. `None`: the key is fresh.
fn duplicate(
    store: &dyn Store,
    id: &str,
    key: &str,
    fp: [u8; 16],
    cmd: &Command,
    rules: Rules<'_>,
    now: Ts,
) -> Result<Option<Reply>, Fatal> {
    let rec = match remembered(store, id, key, rules, now) {
        Ok(Some(rec)) => rec,
        Ok(None) => return Ok(None),
        Err(e) => return read_failure(id, e).map(Some),
    };
    if rec.fingerprint != fp {
        m::count_result(cmd, "conflict");
        return Ok(Some(Err(ActorError::IdempotencyConflict {
            key: key.to_string(),
        })));
    }
    m::count_result(cmd, "duplicate");
    Ok(Some(match store.event(id, rec.seq) {
        Ok(Some(event)) => Ok(Outcome::Applied {
            event,
            duplicate: true,
        }),
        Ok(None) => Err(ActorError::Corrupt(format!(
            "account {id}: idempotency key {key} points at missing seq {}",
            rec.seq
        ))),
        Err(e) => read_failure(id, e)?,
    }))
}
