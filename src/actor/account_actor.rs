//! The task that owns one account. Loop: take a message, catch up on time (period
//! resets, hold expiries, recorded at their own instants), decide, write ahead, apply,
//! and hand the reply to the journal. Debits short of credits may park here, in arrival
//! order, until credits arrive or their wait ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fingerprint::{fingerprint, key_of};
use super::{ActorError, Msg, Mutation, Outcome, Registry, Reply, ReplyTx, Services};
use crate::domain::{Account, Event, Refusal, Ts};
use crate::metrics as m;
use crate::store::{Append, IdemRecord};

enum State {
    /// No such account (yet): only `Create` does anything.
    Absent,
    /// Shared with readers: a `Get` answers a pointer, and a mutation copies the account
    /// only if a reader still holds the previous version (`Arc::make_mut`).
    Live(Arc<Account>),
    /// A record of this account is corrupt: every request gets this error.
    Failed(String),
}

struct Parked {
    mutation: Box<Mutation>,
    deadline: Instant,
}

pub struct AccountActor {
    id: String,
    svc: Arc<Services>,
    registry: Registry,
    state: State,
    /// Seq of the last snapshot written (or read).
    snapshot_seq: u64,
    /// Where this account stands in the store's wake-up index, if we wrote it.
    indexed_wakeup: Option<Ts>,
    parked: VecDeque<Parked>,
    /// When the last message was handled: the idle clock of passivation.
    last_active: Instant,
}

/// Longest sleep before re-reading the clock, so a wall-clock jump is noticed.
const TICK_MAX: Duration = Duration::from_secs(60);

impl AccountActor {
    pub fn new(id: String, svc: Arc<Services>, registry: Registry) -> AccountActor {
        AccountActor {
            id,
            svc,
            registry,
            state: State::Absent,
            snapshot_seq: 0,
            indexed_wakeup: None,
            parked: VecDeque::new(),
            last_active: Instant::now(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>, generation: u64) {
        self.activate();
        loop {
            let idle_at = self.idle_deadline();
            let wake = idle_at.map_or(self.next_timer(), |i| self.next_timer().min(i));
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = tokio::time::sleep_until(wake) => {
                    if idle_at.is_some_and(|i| i <= Instant::now())
                        && self.passivate(generation, &mut rx)
                    {
                        break;
                    }
                    self.on_time().await;
                    continue;
                }
            };
            self.last_active = Instant::now();
            let Some(msg) = msg else { break };
            match msg {
                Msg::Shutdown { done } => {
                    self.shutdown();
                    let _ = done.send(());
                    break;
                }
                msg => self.handle(msg).await,
            }
            // An account that does not exist holds no task once its mailbox is empty.
            if matches!(self.state, State::Absent)
                && self.parked.is_empty()
                && self.registry.retire(&self.id, generation, &mut rx)
            {
                while let Ok(msg) = rx.try_recv() {
                    self.handle(msg).await;
                }
                break;
            }
        }
    }

    /// When this actor may passivate: a live account with nothing parked, idle since its
    /// last message. Parked debits keep it awake (they wait on its timers).
    fn idle_deadline(&self) -> Option<Instant> {
        (matches!(self.state, State::Live(_)) && self.parked.is_empty())
            .then(|| self.last_active + self.svc.idle_timeout)
    }

    /// Snapshot first, then leave the registry, as the `Absent` case does. The snapshot
    /// makes the next activation cheap (no replay); it needs no fsync of its own, because
    /// activation trusts the log over a snapshot ahead of it. `retire` fails when a
    /// message arrived meanwhile: the actor then stays and serves it (the snapshot it
    /// wrote is still right). Returns whether the actor is gone.
    fn passivate(&mut self, generation: u64, rx: &mut mpsc::Receiver<Msg>) -> bool {
        self.snapshot_if_behind();
        if !self.registry.retire(&self.id, generation, rx) {
            self.last_active = Instant::now();
            return false;
        }
        // `retire` closed the mailbox with nothing in it, under the lock every send takes.
        debug_assert!(rx.try_recv().is_err());
        // `creditsd_accounts_active` follows: the upkeep task counts the registry's map.
        metrics::counter!(m::PASSIVATIONS_TOTAL).increment(1);
        true
    }

    fn activate(&mut self) {
        let started = std::time::Instant::now();
        self.state = match self.load() {
            Ok(Some(acct)) => State::Live(Arc::new(acct)),
            Ok(None) => State::Absent,
            Err(ActorError::Corrupt(e)) => {
                tracing::error!(account = %self.id, error = %e, "account cannot be activated");
                State::Failed(e)
            }
            Err(e) => State::Failed(format!("{e:?}")),
        };
        if matches!(self.state, State::Live(_)) {
            metrics::histogram!(m::ACTIVATION_SECONDS).record(started.elapsed().as_secs_f64());
        }
    }

    /// Snapshot + the log after it. A snapshot newer than the log (which a crash between
    /// sled's writes could only leave if sled broke its prefix guarantee) is not trusted.
    fn load(&mut self) -> Result<Option<Account>, ActorError> {
        let store = &self.svc.store;
        let snap = store.snapshot(&self.id)?;
        let mut acct = snap.unwrap_or_else(|| Account::empty(&self.id));
        self.snapshot_seq = acct.seq;
        let tail = store.events_after(&self.id, acct.seq)?;
        if acct.seq > 0 && store.event(&self.id, acct.seq)?.is_none() {
            tracing::warn!(account = %self.id, seq = acct.seq, "snapshot is ahead of the log; replaying from the start");
            // The start is the base snapshot when retention has pruned the log.
            acct = store
                .base(&self.id)?
                .unwrap_or_else(|| Account::empty(&self.id));
            self.snapshot_seq = 0;
            let tail = store.events_after(&self.id, acct.seq)?;
            return self.replay(acct, tail);
        }
        self.replay(acct, tail)
    }

    fn replay(&self, mut acct: Account, events: Vec<Event>) -> Result<Option<Account>, ActorError> {
        for ev in &events {
            if ev.seq != acct.seq + 1 {
                return Err(ActorError::Corrupt(format!(
                    "account {}: log jumps from seq {} to {}",
                    self.id, acct.seq, ev.seq
                )));
            }
            crate::replaying(|| acct.apply(ev)).map_err(|e| {
                ActorError::Corrupt(format!(
                    "account {}: seq {} does not replay: {e}",
                    self.id, ev.seq
                ))
            })?;
        }
        Ok((acct.seq > 0).then_some(acct))
    }

    fn next_timer(&self) -> Instant {
        let now_tokio = Instant::now();
        let mut wake = now_tokio + TICK_MAX;
        if let State::Live(acct) = &self.state {
            let ms = acct
                .next_wakeup()
                .millis()
                .saturating_sub(self.svc.clock.now().millis())
                .max(0) as u64;
            wake = wake.min(now_tokio + Duration::from_millis(ms));
        }
        if let Some(p) = self.parked.iter().map(|p| p.deadline).min() {
            wake = wake.min(p);
        }
        // Parked clients that hung up are noticed on the next tick.
        if !self.parked.is_empty() {
            wake = wake.min(now_tokio + Duration::from_millis(200));
        }
        wake
    }

    async fn on_time(&mut self) {
        self.catch_up();
        // Parked clients that hung up give up their place; nothing is debited for them.
        self.parked.retain(|p| !p.mutation.reply.is_closed());
        let now = Instant::now();
        let (expired, waiting): (VecDeque<Parked>, VecDeque<Parked>) =
            self.parked.drain(..).partition(|p| p.deadline <= now);
        self.parked = waiting;
        for p in expired {
            // The wait is over: one last try (it may fit now, behind a head that did not),
            // and otherwise the 402 it would have had at once.
            let mut mutation = p.mutation;
            mutation.wait = Duration::ZERO;
            self.try_apply(mutation).await;
        }
        self.serve_parked().await;
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Create {
                plan,
                anchor,
                reply,
            } => self.create(plan, anchor, reply).await,
            Msg::Get { reply } => {
                self.catch_up();
                let r = match &self.state {
                    State::Live(acct) => Ok(Outcome::View(acct.clone())),
                    State::Absent => Err(ActorError::NotFound),
                    State::Failed(e) => Err(ActorError::Corrupt(e.clone())),
                };
                let _ = reply.send(r);
            }
            Msg::Mutate(mutation) => {
                self.catch_up();
                self.mutate(mutation).await;
                if !self.parked.is_empty() {
                    self.serve_parked().await;
                }
            }
            Msg::Wake { indexed_at } => {
                self.catch_up();
                if self.indexed_wakeup != Some(indexed_at) {
                    // A stale index entry (left by a crash, or by an earlier activation).
                    self.svc
                        .store
                        .remove_wakeup(&self.id, indexed_at)
                        .unwrap_or_else(|e| crate::fail_stop(&e.to_string()));
                }
                self.reindex();
                self.serve_parked().await;
            }
            Msg::Unpark => {
                for p in self.parked.drain(..) {
                    let _ = p.mutation.reply.send(Err(ActorError::Unavailable));
                }
            }
            Msg::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    async fn create(&mut self, plan: String, anchor: Option<Ts>, reply: ReplyTx) {
        match &self.state {
            State::Live(_) => {
                let _ = reply.send(Err(ActorError::Exists));
                return;
            }
            State::Failed(e) => {
                let _ = reply.send(Err(ActorError::Corrupt(e.clone())));
                return;
            }
            State::Absent => {}
        }
        let now = self.svc.clock.now();
        let ev = match Account::create(
            &self.id,
            &plan,
            anchor.unwrap_or(now),
            now,
            &self.svc.pricing,
        ) {
            Ok(ev) => ev,
            Err(r) => {
                let _ = reply.send(Err(ActorError::Refused(r)));
                return;
            }
        };
        let mut acct = Account::empty(&self.id);
        acct.apply(&ev);
        let wakeup = acct.next_wakeup();
        let append = Append {
            events: std::slice::from_ref(&ev),
            snapshot: Some(&acct),
            wakeup: Some((None, wakeup)),
            ..Default::default()
        };
        self.write(append);
        self.indexed_wakeup = Some(wakeup);
        self.snapshot_seq = acct.seq;
        m::record_event(&ev, &plan);
        self.state = State::Live(Arc::new(acct));
        self.svc
            .journal
            .acknowledge(
                reply,
                Ok(Outcome::Applied {
                    event: ev,
                    duplicate: false,
                }),
            )
            .await;
    }

    /// Records every time-driven event due now: resets at their boundaries, expiries.
    fn catch_up(&mut self) {
        let State::Live(acct) = &mut self.state else {
            return;
        };
        let now = self.svc.clock.now();
        let mut recorded = Vec::new();
        while let Some((at, body)) = acct.next_due(now, &self.svc.pricing) {
            recorded.push(Arc::make_mut(acct).record(body, at, &self.svc.pricing.thresholds));
        }
        if recorded.is_empty() {
            return;
        }
        for ev in &recorded {
            m::record_event(ev, &acct.plan);
        }
        self.write_events(&recorded, Vec::new());
        self.reindex();
        // Nobody waits on these events, but they must become durable (and reach the feed)
        // on time, not at the next unrelated request.
        self.svc.journal.request_sync();
    }

    /// Moves the account in the wake-up index when its next wake-up changed.
    fn reindex(&mut self) {
        let State::Live(acct) = &self.state else {
            return;
        };
        let wakeup = acct.next_wakeup();
        if self.indexed_wakeup != Some(wakeup) {
            self.write(Append {
                wakeup: Some((self.indexed_wakeup, wakeup)),
                ..Default::default()
            });
            self.indexed_wakeup = Some(wakeup);
        }
    }

    fn write(&self, append: Append<'_>) {
        if let Err(e) = self.svc.store.append(&self.id, append) {
            crate::fail_stop(&format!("writing account {}: {e}", self.id));
        }
    }

    /// Writes events (and their idempotency records), with a snapshot when one is due.
    fn write_events(&mut self, events: &[Event], idempotency: Vec<(&str, IdemRecord)>) {
        let State::Live(acct) = &self.state else {
            unreachable!("only live accounts record")
        };
        let every = self.svc.snapshot_every;
        let snapshot = (acct.seq / every > self.snapshot_seq / every).then_some(&**acct);
        if snapshot.is_some() {
            self.snapshot_seq = acct.seq;
            metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
        }
        self.write(Append {
            events,
            idempotency,
            snapshot,
            wakeup: None,
        });
    }

    fn shutdown(&mut self) {
        for p in self.parked.drain(..) {
            let _ = p.mutation.reply.send(Err(ActorError::Unavailable));
        }
        self.snapshot_if_behind();
    }

    /// Writes a snapshot when events were recorded since the last one (before the actor
    /// stops: passivation or shutdown), so the next activation replays nothing.
    fn snapshot_if_behind(&mut self) {
        if let State::Live(acct) = &self.state {
            if acct.seq > self.snapshot_seq {
                self.write(Append {
                    snapshot: Some(acct),
                    ..Default::default()
                });
                self.snapshot_seq = acct.seq;
                metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
            }
        }
    }

    async fn mutate(&mut self, mutation: Box<Mutation>) {
        // A retry of a request that is parked takes over its place; the older request
        // is answered, so exactly one of them can ever be applied.
        if let (false, Some(key)) = (mutation.dry_run, key_of(&mutation.cmd)) {
            if let Some(i) = self
                .parked
                .iter()
                .position(|p| key_of(&p.mutation.cmd) == Some(key))
            {
                let old = &mut self.parked[i];
                if fingerprint(&old.mutation.cmd) == fingerprint(&mutation.cmd) {
                    // The retry waits its own `wait_seconds`, from now.
                    let deadline = Instant::now() + mutation.wait;
                    let prev = std::mem::replace(&mut old.mutation, mutation);
                    old.deadline = deadline;
                    let _ = prev.reply.send(Err(ActorError::Unavailable));
                } else {
                    let _ = mutation.reply.send(Err(ActorError::IdempotencyConflict {
                        key: key.to_string(),
                    }));
                }
                return;
            }
        }
        // Parked requests keep their arrival order: a waiting request queues behind them.
        if !mutation.wait.is_zero() && !self.parked.is_empty() {
            self.park(mutation);
            return;
        }
        if let Some(mutation) = self.try_apply(mutation).await {
            self.park(mutation);
        }
    }

    fn park(&mut self, mutation: Box<Mutation>) {
        if self.registry.stopping() {
            let _ = mutation.reply.send(Err(ActorError::Unavailable));
            return;
        }
        if self.parked.len() >= self.svc.parked_max {
            let _ = mutation.reply.send(Err(ActorError::Overloaded));
            return;
        }
        let deadline = Instant::now() + mutation.wait;
        self.parked.push_back(Parked { mutation, deadline });
    }

    /// Applies parked requests in arrival order while the first one fits.
    async fn serve_parked(&mut self) {
        while let Some(p) = self.parked.pop_front() {
            if p.mutation.reply.is_closed() {
                continue; // the client hung up: nothing is debited for it
            }
            let deadline = p.deadline;
            if let Some(back) = self.try_apply(p.mutation).await {
                self.parked.push_front(Parked {
                    mutation: back,
                    deadline,
                });
                break;
            }
        }
    }

    /// Idempotency, decide, write, apply, acknowledge. Answers the mutation back when it
    /// is short of credits and may wait.
    async fn try_apply(&mut self, mutation: Box<Mutation>) -> Option<Box<Mutation>> {
        let acct = match &mut self.state {
            State::Live(acct) => acct,
            State::Absent => {
                let _ = mutation.reply.send(Err(ActorError::NotFound));
                return None;
            }
            State::Failed(e) => {
                let _ = mutation.reply.send(Err(ActorError::Corrupt(e.clone())));
                return None;
            }
        };
        let now = self.svc.clock.now();
        let key = key_of(&mutation.cmd).map(str::to_string);
        let fp = fingerprint(&mutation.cmd);
        if let Some(key) = &key {
            match self.svc.store.idempotency(&self.id, key) {
                Ok(Some(rec)) if rec.at.millis() + self.svc.idempotency_ttl_ms > now.millis() => {
                    let reply = if rec.fingerprint != fp {
                        m::count_result(&mutation.cmd, "conflict");
                        Err(ActorError::IdempotencyConflict { key: key.clone() })
                    } else {
                        m::count_result(&mutation.cmd, "duplicate");
                        match self.svc.store.event(&self.id, rec.seq) {
                            Ok(Some(event)) => Ok(Outcome::Applied {
                                event,
                                duplicate: true,
                            }),
                            Ok(None) => Err(ActorError::Corrupt(format!(
                                "account {}: idempotency key {key} points at missing seq {}",
                                self.id, rec.seq
                            ))),
                            Err(e) => Err(e.into()),
                        }
                    };
                    // Through the journal: the first answer may not be durable yet.
                    self.svc.journal.acknowledge(mutation.reply, reply).await;
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = mutation.reply.send(Err(e.into()));
                    return None;
                }
            }
        }
        let body = match acct.decide(&mutation.cmd, now, &self.svc.pricing) {
            Ok(body) => body,
            Err(Refusal::InsufficientCredits { .. })
                if !mutation.wait.is_zero() && !mutation.dry_run =>
            {
                return Some(mutation);
            }
            Err(r) => {
                m::count_result(
                    &mutation.cmd,
                    if matches!(r, Refusal::InsufficientCredits { .. }) {
                        "insufficient"
                    } else {
                        "invalid"
                    },
                );
                let _ = mutation.reply.send(Err(ActorError::Refused(r)));
                return None;
            }
        };
        if mutation.dry_run {
            let mut preview = (**acct).clone();
            let event = preview.record(body, now, &self.svc.pricing.thresholds);
            let _ = mutation.reply.send(Ok(Outcome::DryRun { event }));
            return None;
        }
        let event = Arc::make_mut(acct).record(body, now, &self.svc.pricing.thresholds);
        m::record_event(&event, &acct.plan);
        m::count_result(&mutation.cmd, "ok");
        let idem = match &key {
            None => Vec::new(),
            Some(key) => vec![(
                key.as_str(),
                IdemRecord {
                    fingerprint: fp,
                    seq: event.seq,
                    at: now,
                },
            )],
        };
        self.write_events(std::slice::from_ref(&event), idem);
        self.reindex();
        self.svc
            .journal
            .acknowledge(
                mutation.reply,
                Ok(Outcome::Applied {
                    event,
                    duplicate: false,
                }),
            )
            .await;
        None
    }
}

/// A helper for callers: send and await the reply.
pub async fn ask(reply: tokio::sync::oneshot::Receiver<Reply>) -> Reply {
    reply.await.unwrap_or(Err(ActorError::Unavailable))
}
