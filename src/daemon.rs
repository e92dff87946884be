//! Wiring, in order, each step logged: open the store → start the journal → start the
//! registry → bind HTTP → ready (sd_notify READY=1) → serve → on SIGTERM drain, snapshot
//! every active account, sync, exit 0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::actor::{ActorError, Clock, Msg, Registry, Reply, Services, SystemClock};
use crate::config::{Config, DurabilityMode};
use crate::http::{auth::Auth, reads::Reads, server, App};
use crate::metrics as m;
use crate::store::journal::{Durability, JournalObserver};
use crate::store::{Journal, SledStore, StorageError, Store};

struct MetricsObserver;

impl JournalObserver for MetricsObserver {
    fn group_committed(&self, size: usize, fsync: Duration) {
        metrics::histogram!(m::GROUP_COMMIT_SIZE).record(size as f64);
        metrics::histogram!(m::FSYNC_DURATION_SECONDS).record(fsync.as_secs_f64());
    }
}

/// Refuses to serve a non-loopback address without tokens.
pub fn check_exposure(config: &Config) -> Result<(), String> {
    let addr = config.listen_addr();
    if config.auth.tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr} without [[auth.tokens]]: with no tokens creditsd serves loopback only"
        ));
    }
    Ok(())
}

pub fn open_store(config: &Config) -> Result<Arc<SledStore>, StorageError> {
    let s = &config.storage;
    let options = crate::store::sled_store::Options {
        tuning: crate::store::overlay::Tuning {
            freeze_keys: s.checkpoint_keys,
            freeze_after: Duration::from_millis(s.checkpoint_after_ms),
            frozen_max: s.checkpoint_layers_max,
            active_keys_max: s.checkpoint_active_keys_max,
            record_bytes_max: crate::store::overlay::RECORD_BYTES_MAX,
            segment_bytes: s.segment_bytes,
        },
        checkpointer_thread: true,
        idempotency_filter: crate::store::sled_store::FilterOptions {
            bytes: s.idempotency_filter_bytes,
            ttl_ms: s.idempotency_ttl_seconds as i64 * 1000,
            build_thread: true,
            build_delay: test_filter_build_delay(),
        },
    };
    SledStore::open_dir(&s.path, s.cache_bytes, options).map(Arc::new)
}

/// In a debug build, `CREDITSD_TEST_FILTER_BUILD_DELAY_MS` holds the idempotency
/// filter's build back that long, so tests see lookups while it is being built. Release
/// builds ignore it.
pub const TEST_FILTER_BUILD_DELAY_VAR: &str = "CREDITSD_TEST_FILTER_BUILD_DELAY_MS";

fn test_filter_build_delay() -> Duration {
    let ms = std::env::var(TEST_FILTER_BUILD_DELAY_VAR)
        .ok()
        .and_then(|v| v.parse().ok());
    match ms {
        Some(ms) if cfg!(debug_assertions) => Duration::from_millis(ms),
        _ => Duration::ZERO,
    }
}

/// Why the daemon could not start: a message, and the exit code that tells it apart.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    /// 2: bad configuration (or any other refusal to start); 75: the data directory is
    /// in use by another process (`EX_TEMPFAIL`: it may be free once that one stops); 65:
    /// the store was written by a newer release (`EX_DATAERR`).
    pub exit_code: u8,
}

/// Exit code of a daemon whose data directory another process holds.
pub const EXIT_DATA_DIR_IN_USE: u8 = 75;

/// Exit code of a daemon (or `audit`, `migrate`) refusing a store of a format newer than
/// this build reads (`StorageError::Newer`; `EX_DATAERR`): a newer release wrote it, and
/// nothing was changed. Restarting does not help; running that release does.
pub const EXIT_STORE_NEWER: u8 = 65;

/// The exit code for a store that could not be opened: 75 locked, 65 newer, else 2.
pub fn open_exit_code(e: &StorageError) -> u8 {
    match e {
        StorageError::Locked { .. } => EXIT_DATA_DIR_IN_USE,
        StorageError::Newer { .. } => EXIT_STORE_NEWER,
        _ => 2,
    }
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError {
            message,
            exit_code: 2,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the daemon until `shutdown` resolves; answers once everything is durable.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    check_exposure(&config)?;
    let metrics = m::install();
    let started = Instant::now();
    tracing::info!(path = %config.storage.path.display(), durability = ?config.storage.durability, "opening storage");
    let store: Arc<dyn Store> = open_store(&config).map_err(|e| StartError {
        message: format!("opening storage: {e}"),
        exit_code: open_exit_code(&e),
    })?;
    metrics::histogram!(m::RECOVERY_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "storage open; accounts are recovered on first use"
    );

    let durability = match config.storage.durability {
        DurabilityMode::Sync => Durability::Sync,
        DurabilityMode::Periodic => Durability::Periodic {
            interval: Duration::from_millis(config.storage.flush_interval_ms),
        },
    };
    let (journal, _journal_thread) = Journal::<Reply>::start(
        store.clone(),
        durability,
        config.storage.journal_queue_max,
        config.storage.group_commit_max,
        Duration::from_micros(config.storage.group_commit_delay_us),
        Box::new(MetricsObserver),
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::from_env()?);
    let registry = Registry::new();
    registry.start(Arc::new(Services {
        store: store.clone(),
        journal: journal.clone(),
        pricing: config.pricing(),
        clock: clock.clone(),
        snapshot_every: config.storage.snapshot_every,
        idempotency_ttl_ms: config.storage.idempotency_ttl_seconds as i64 * 1000,
        mailbox_max: config.actors.mailbox_max,
        parked_max: config.actors.parked_max,
        idle_timeout: Duration::from_millis(config.actors.idle_timeout_ms),
    }));
    tokio::spawn(sweep(
        registry.clone(),
        store.clone(),
        clock.clone(),
        Duration::from_millis(config.actors.sweep_interval_ms),
    ));
    tokio::spawn(crate::feed::prune(
        store.clone(),
        clock.clone(),
        config.feed.clone(),
    ));
    crate::webhooks::start(&config.webhooks, store.clone(), journal.feed_durable());
    tokio::spawn(prune_idempotency(
        store.clone(),
        clock.clone(),
        config.storage.idempotency_ttl_seconds,
        Duration::from_millis(config.storage.idempotency_prune_interval_ms),
    ));

    tokio::spawn(crate::history::run(
        store.clone(),
        clock.clone(),
        config.history.clone(),
    ));

    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let auth = Auth::new(&config.auth.tokens);
    if !auth.enabled() {
        tracing::warn!("no [[auth.tokens]] configured: authentication is off and creditsd serves loopback only");
    }
    let app = Arc::new(App {
        config: config.clone(),
        registry: registry.clone(),
        reads: Reads::new(store.clone()),
        metrics,
        auth,
        ready: Default::default(),
    });
    tokio::spawn(upkeep_metrics(app.clone()));
    app.ready.store(true, Ordering::Release);
    tracing::info!("listening on http://{local}");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::spawn(watchdog(journal.clone()));

    let stopping = registry.clone();
    let shutdown = async move {
        shutdown.await;
        // Parked debits are answered 503 at once rather than held through the drain.
        stopping.stop_waiting().await;
    };
    server::run(listener, app, shutdown).await;

    tracing::info!("draining: snapshotting active accounts");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    registry.shutdown().await;
    if let Err(e) = store.close() {
        crate::fail_stop(&format!("final sync: {e}"));
    }
    tracing::info!("stopped cleanly; everything acknowledged is durable");
    Ok(())
}

/// Wakes accounts whose reset or hold expiry is due, so their events go out on time even
/// when nobody asks for them.
async fn sweep(registry: Registry, store: Arc<dyn Store>, clock: Arc<dyn Clock>, every: Duration) {
    const SWEEP_BATCH_MAX: usize = 10_000;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = match store.due_accounts(clock.now(), SWEEP_BATCH_MAX) {
            Ok(d) => d,
            Err(e) => crate::fail_stop(&format!("reading the wake-up index: {e}")),
        };
        for (at, id) in due {
            // A full mailbox means the actor is busy and will catch up on its own.
            let _ = registry.send(&id, Msg::Wake { indexed_at: at });
        }
    }
}

/// Deletes idempotency keys older than their TTL, every `every`.
async fn prune_idempotency(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl_s: u64,
    every: Duration,
) {
    crate::periodic::every(every, "pruned idempotency keys", move || {
        let cutoff = clock.now().plus_millis(-(ttl_s as i64 * 1000));
        let n = store.prune_idempotency(cutoff)?;
        Ok((n > 0).then(|| format!("removed {n} expired keys")))
    })
    .await
}

/// Keeps histograms upkept and the book gauges current between scrapes, so a scrape that
/// comes rarely still sees bounded histogram buffers and gauges are never older than
/// `metrics::UPKEEP_INTERVAL`.
async fn upkeep_metrics(app: Arc<App>) {
    let mut tick = tokio::time::interval(m::UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        app.refresh_metrics();
    }
}

/// Pings systemd's watchdog only while the journal still turns replies around: a wedged
/// disk or a dead journal thread stops the pings and systemd restarts us.
async fn watchdog(journal: Journal<Reply>) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    loop {
        tokio::time::sleep(every).await;
        let (tx, rx) = oneshot::channel();
        journal.acknowledge(tx, Err(ActorError::Unavailable)).await;
        if tokio::time::timeout(every, rx).await.is_ok() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                "journal did not answer within the watchdog interval; withholding the ping"
            );
        }
    }
}
