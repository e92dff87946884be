//! The task that owns one account: a thin loop around its `AccountCore`. It turns each
//! message (and each timer) into an input for the core, then carries out what the core
//! answers: replies sent at once, replies handed to the journal until their writes are
//! durable, syncs asked for. It also decides when the account passivates. A storage
//! failure the core reports stops the process here (fail-stop).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::core::{AccountCore, Client, Fatal, Input, Output, Request, Rules};
use super::{Msg, Registry, ReplyTx, Services};
use crate::metrics as m;

impl Client for ReplyTx {
    fn gone(&self) -> bool {
        self.is_closed()
    }
}

pub struct AccountActor {
    id: String,
    svc: Arc<Services>,
    registry: Registry,
    /// When the last message was handled: the idle clock of passivation.
    last_active: Instant,
}

/// Longest sleep before re-reading the clock, so a wall-clock jump is noticed.
const TICK_MAX: Duration = Duration::from_secs(60);
/// With requests parked, how often hung-up clients are looked for.
const PARKED_POLL: Duration = Duration::from_millis(200);

impl AccountActor {
    pub fn new(id: String, svc: Arc<Services>, registry: Registry) -> AccountActor {
        AccountActor {
            id,
            svc,
            registry,
            last_active: Instant::now(),
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            pricing: &self.svc.pricing,
            snapshot_every: self.svc.snapshot_every,
            idempotency_ttl_ms: self.svc.idempotency_ttl_ms,
            parked_max: self.svc.parked_max,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>, generation: u64) {
        let mut core = match AccountCore::activate(&self.id, &*self.svc.store) {
            Ok(core) => core,
            Err(Fatal(reason)) => crate::fail_stop(&reason),
        };
        loop {
            let idle_at = core
                .may_passivate()
                .then(|| self.last_active + self.svc.idle_timeout);
            let timer = self.next_timer(&core);
            let wake = idle_at.map_or(timer, |i| timer.min(i));
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                _ = tokio::time::sleep_until(wake) => {
                    if idle_at.is_some_and(|i| i <= Instant::now())
                        && self.passivate(&mut core, generation, &mut rx).await
                    {
                        break;
                    }
                    self.step(&mut core, Input::Tick).await;
                    continue;
                }
            };
            self.last_active = Instant::now();
            let Some(msg) = msg else { break };
            if let Msg::Shutdown { done } = msg {
                self.step(&mut core, Input::Stop).await;
                let _ = done.send(());
                break;
            }
            self.step(&mut core, input(msg)).await;
            // An account that does not exist holds no task once its mailbox is empty.
            if core.is_absent() && self.registry.retire(&self.id, generation, &mut rx) {
                while let Ok(msg) = rx.try_recv() {
                    self.step(&mut core, input(msg)).await;
                }
                break;
            }
        }
    }

    /// One input through the core, then its outputs in order.
    async fn step(&self, core: &mut AccountCore<ReplyTx>, input: Input<ReplyTx>) {
        // An actor started after the shutdown began never got its `Unpark`.
        if self.registry.stopping() && !core.is_stopping() {
            self.carry_out(core, Input::Unpark).await;
        }
        self.carry_out(core, input).await;
    }

    async fn carry_out(&self, core: &mut AccountCore<ReplyTx>, input: Input<ReplyTx>) {
        let now = self.svc.clock.now();
        let outputs = match core.handle(input, &*self.svc.store, self.rules(), now) {
            Ok(outputs) => outputs,
            Err(Fatal(reason)) => crate::fail_stop(&reason),
        };
        for output in outputs {
            match output {
                Output::Answer { client, reply } => {
                    let _ = client.send(reply);
                }
                Output::AfterSync { client, reply } => {
                    self.svc.journal.acknowledge(client, reply).await;
                }
                Output::SyncSoon => self.svc.journal.request_sync(),
            }
        }
    }

    /// Snapshot first, then leave the registry, as the absent case does. `retire` fails
    /// when a message arrived meanwhile: the actor then stays and serves it (the snapshot
    /// it wrote is still right). Returns whether the actor is gone.
    async fn passivate(
        &mut self,
        core: &mut AccountCore<ReplyTx>,
        generation: u64,
        rx: &mut mpsc::Receiver<Msg>,
    ) -> bool {
        self.step(core, Input::Stop).await;
        if !self.registry.retire(&self.id, generation, rx) {
            self.last_active = Instant::now();
            return false;
        }
        // `retire` closed the mailbox with nothing in it, under the lock every send takes.
        debug_assert!(rx.try_recv().is_err());
        // `creditsd_accounts_active` follows: the upkeep task counts the registry's map.
        metrics::counter!(m::ACCOUNT_PASSIVATIONS_TOTAL).increment(1);
        true
    }

    fn next_timer(&self, core: &AccountCore<ReplyTx>) -> Instant {
        let now = Instant::now();
        let mut wake = now + TICK_MAX;
        if let Some(at) = core.next_wakeup() {
            let ms = at
                .millis()
                .saturating_sub(self.svc.clock.now().millis())
                .max(0) as u64;
            wake = wake.min(now + Duration::from_millis(ms));
        }
        // Parked clients that hung up are noticed on the next tick.
        if core.has_parked() {
            wake = wake.min(now + PARKED_POLL);
        }
        wake
    }
}

/// A message as the core takes it.
fn input(msg: Msg) -> Input<ReplyTx> {
    match msg {
        Msg::Create {
            plan,
            anchor,
            reply,
        } => Input::Create {
            plan,
            anchor,
            client: reply,
        },
        Msg::Get { reply } => Input::Get { client: reply },
        Msg::Mutate(m) => Input::Mutate(Request {
            cmd: m.cmd,
            dry_run: m.dry_run,
            wait_ms: m.wait.as_millis().min(i64::MAX as u128) as i64,
            client: m.reply,
        }),
        Msg::Wake { indexed_at } => Input::Wake { indexed_at },
        Msg::Unpark => Input::Unpark,
        Msg::Shutdown { .. } => Input::Stop,
    }
}
