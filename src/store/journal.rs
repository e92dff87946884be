//! Group commit. Actors write their events into the store (visible at once, not yet
//! durable) and hand the journal the reply that must wait for durability. The journal
//! thread takes everything waiting, makes it durable with one `sync`, and only then
//! sends those replies. An actor never waits for the fsync before its next message.
//!
//! In `periodic` mode replies go out at once and this thread syncs on an interval: a
//! crash can lose up to `flush_interval_ms` of acknowledged mutations.
//!
//! A failed sync is fail-stop: no reply waiting on it is sent, the error is logged, and
//! the process exits non-zero (systemd restarts it; recovery replays the durable log).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::Store;

/// A reply held back until what it acknowledges is durable.
pub struct Pending<T> {
    pub reply: oneshot::Sender<T>,
    pub value: T,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the group's fsync.
    Sync,
    /// Acknowledge at once; fsync every interval.
    Periodic { interval: Duration },
}

/// What the journal thread receives: a reply to release after the next sync, or a request
/// for a sync with no reply behind it (time-driven events that nobody is waiting for, but
/// which must become durable and reach the feed on time).
enum Item<T> {
    Reply(Pending<T>),
    Sync,
}

/// The handle actors use. Cloneable; dropping every clone stops the thread after a final sync.
pub struct Journal<T> {
    tx: mpsc::Sender<Item<T>>,
    durability: Durability,
    /// The feed id below which every entry is durable; readers of the feed stop there.
    feed_durable: watch::Receiver<u64>,
}

impl<T> Clone for Journal<T> {
    fn clone(&self) -> Self {
        Journal {
            tx: self.tx.clone(),
            durability: self.durability,
            feed_durable: self.feed_durable.clone(),
        }
    }
}

/// What the journal thread reports per group, for metrics.
pub trait JournalObserver: Send + 'static {
    fn group_committed(&self, size: usize, fsync: Duration);
}

impl<T: Send + 'static> Journal<T> {
    /// Starts the journal thread. `on_failure` is called with the error before the process
    /// exits; it exists so the daemon can log it its own way.
    pub fn start(
        store: Arc<dyn Store>,
        durability: Durability,
        queue_max: usize,
        batch_max: usize,
        delay: Duration,
        observer: Box<dyn JournalObserver>,
    ) -> (Journal<T>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue_max);
        // A run that was killed may have left writes that were never synced; sync them
        // before the feed, which trusts everything below its watermark, shows them.
        if let Err(e) = store.sync() {
            crate::fail_stop(&format!("sync at start: {e}"));
        }
        let (feed_tx, feed_rx) = watch::channel(store.feed_next_id());
        let handle = std::thread::Builder::new()
            .name("creditsd-journal".into())
            .spawn(move || run(store, rx, durability, batch_max, delay, feed_tx, observer))
            .expect("spawning the journal thread");
        (
            Journal {
                tx,
                durability,
                feed_durable: feed_rx,
            },
            handle,
        )
    }

    /// Sends `value` on `reply` once everything written before this call is durable.
    pub async fn acknowledge(&self, reply: oneshot::Sender<T>, value: T) {
        match self.durability {
            Durability::Periodic { .. } => {
                let _ = reply.send(value);
            }
            Durability::Sync => {
                // The thread only goes away at shutdown, after every actor has stopped.
                let _ = self.tx.send(Item::Reply(Pending { reply, value })).await;
            }
        }
    }

    /// Asks for a sync soon, without waiting for it. A full queue already means one is coming.
    pub fn request_sync(&self) {
        if self.durability == Durability::Sync {
            let _ = self.tx.try_send(Item::Sync);
        }
    }

    pub fn feed_durable(&self) -> watch::Receiver<u64> {
        self.feed_durable.clone()
    }
}

/// Replies already in a group for it to wait `delay` for more.
pub const DELAY_SIBLINGS: usize = 4;

fn run<T>(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Item<T>>,
    durability: Durability,
    batch_max: usize,
    delay: Duration,
    feed_tx: watch::Sender<u64>,
    observer: Box<dyn JournalObserver>,
) {
    let mut group: Vec<Pending<T>> = Vec::with_capacity(batch_max);
    loop {
        let open = match durability {
            Durability::Sync => match rx.blocking_recv() {
                Some(Item::Reply(p)) => {
                    group.push(p);
                    true
                }
                Some(Item::Sync) => true,
                None => false,
            },
            Durability::Periodic { interval } => {
                std::thread::sleep(interval);
                !rx.is_closed()
            }
        };
        let drain = |group: &mut Vec<Pending<T>>, rx: &mut mpsc::Receiver<Item<T>>| {
            while group.len() < batch_max {
                match rx.try_recv() {
                    Ok(Item::Reply(p)) => group.push(p),
                    Ok(Item::Sync) => {}
                    Err(_) => break,
                }
            }
        };
        drain(&mut group, &mut rx);
        // Under concurrency (`DELAY_SIBLINGS` replies waiting already), others join the
        // group for `delay` (commit_delay and commit_siblings, as PostgreSQL has them):
        // fewer, fuller writes of the log's last page, and fewer fsyncs. A lone writer
        // never waits.
        if open
            && durability == Durability::Sync
            && !delay.is_zero()
            && (DELAY_SIBLINGS..batch_max).contains(&group.len())
        {
            std::thread::sleep(delay);
            drain(&mut group, &mut rx);
        }
        // Read before the sync: every feed entry below this id was written before it.
        let feed_mark = store.feed_next_id();
        let started = Instant::now();
        if let Err(e) = store.sync() {
            crate::fail_stop(&format!(
                "group commit of {} replies failed: {e}",
                group.len()
            ));
        }
        observer.group_committed(group.len(), started.elapsed());
        // Only a new watermark wakes the feed's readers (long polls, webhook senders).
        feed_tx.send_if_modified(|mark| std::mem::replace(mark, feed_mark) != feed_mark);
        for p in group.drain(..) {
            let _ = p.reply.send(p.value);
        }
        if !open {
            return;
        }
    }
}
