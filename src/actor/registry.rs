//! Finds the actor of an account, starting it on first use. Sends happen under a shard
//! lock with `try_send`: the lock covers a hash lookup and a channel push, never a
//! mutation, and it is what lets an actor retire without losing a message (it checks its
//! mailbox empty and leaves the map under the same lock). A full mailbox is an answer
//! (429), never a wait.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::account_actor::AccountActor;
use super::{ActorError, Msg, Services};

const SHARDS: usize = 64;

struct Entry {
    generation: u64,
    tx: mpsc::Sender<Msg>,
}

struct Inner {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    services: OnceLock<Arc<Services>>,
    generation: AtomicU64,
    closed: AtomicBool,
    /// Shutting down: nothing parks any more (see `stop_waiting`).
    stopping: AtomicBool,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                services: OnceLock::new(),
                generation: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Wires the services in; done once, before the first send.
    pub fn start(&self, services: Arc<Services>) {
        let _ = self.inner.services.set(services);
    }

    pub fn services(&self) -> &Arc<Services> {
        self.inner.services.get().expect("registry started")
    }

    fn shard(&self, id: &str) -> &Mutex<HashMap<String, Entry>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.inner.shards[h.finish() as usize % SHARDS]
    }

    /// Delivers `msg` to the account's actor, starting it if needed. On refusal the
    /// message comes back so its reply channel can be answered.
    pub fn send(&self, id: &str, msg: Msg) -> Result<(), (ActorError, Msg)> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err((ActorError::Unavailable, msg));
        }
        let mut shard = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get(id) {
            return match entry.tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    metrics::counter!(crate::metrics::MAILBOX_REJECTIONS_TOTAL).increment(1);
                    Err((ActorError::Overloaded, msg))
                }
                Err(mpsc::error::TrySendError::Closed(msg)) => Err((ActorError::Unavailable, msg)),
            };
        }
        let svc = self.services().clone();
        let (tx, rx) = mpsc::channel(svc.mailbox_max);
        tx.try_send(msg)
            .map_err(|e| (ActorError::Unavailable, e.into_inner()))?;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        shard.insert(id.to_string(), Entry { generation, tx });
        let actor = AccountActor::new(id.to_string(), svc, self.clone());
        tokio::spawn(actor.run(rx, generation));
        Ok(())
    }

    /// Called by an actor that wants to stop: succeeds only if its mailbox is empty, in
    /// which case it leaves the map and its mailbox is closed, under the shard lock.
    pub fn retire(&self, id: &str, generation: u64, rx: &mut mpsc::Receiver<Msg>) -> bool {
        let mut shard = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() {
            return false;
        }
        if shard.get(id).is_some_and(|e| e.generation == generation) {
            shard.remove(id);
        }
        rx.close();
        true
    }

    pub fn active(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// The start of a shutdown: from now on a debit short of credits is answered 503
    /// (with `Retry-After`) instead of parking, and every request parked already is
    /// answered so, so the drain does not wait out their `wait_seconds`.
    pub async fn stop_waiting(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        for tx in self.mailboxes(false) {
            let _ = tx.send(Msg::Unpark).await;
        }
    }

    /// Every live actor's mailbox; with `remove`, the actors also leave the map.
    fn mailboxes(&self, remove: bool) -> Vec<mpsc::Sender<Msg>> {
        let mut out = Vec::new();
        for shard in &self.inner.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            if remove {
                out.extend(shard.drain().map(|(_, e)| e.tx));
            } else {
                out.extend(shard.values().map(|e| e.tx.clone()));
            }
        }
        out
    }

    pub fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Stops taking messages, asks every actor to snapshot and stop, and waits for them.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let senders = self.mailboxes(true);
        let mut waits = Vec::with_capacity(senders.len());
        for tx in senders {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Shutdown { done }).await.is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
}
