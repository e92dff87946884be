//! creditsd: the credit books of a generation product, kept by one actor per account.
//!
//! Map (see ARCHITECTURE.md for the invariants):
//! - `domain`: the pure books: credits, calendar, decide/record/apply, alerts. No I/O.
//! - `store`: the `Store` trait over a `Kv` engine (sled) and the segment log (the
//!   write-ahead log, its files behind `LogFiles`), the records and their codec,
//!   the one recovery function, the group-commit journal.
//! - `actor`: the account core (one message at a time, synchronous), the task around it,
//!   its messages, the registry that finds or starts it.
//! - `http`: hyper front end: routes, JSON, errors, auth, the accept loop.
//! - `config`: the one typed config with defaults; `validate` names the bad key.
//! - `daemon`: wiring in order: store → journal → registry → HTTP → ready → drain.
//! - `audit`: replays every account's log and checks the books.
//! - `history`: the retention pruner (base snapshot + shorter log).
//! - `metrics`: metric names and the helpers that move them.
//! - `feed`: retention of the durable notification feed (`[feed]`, pruning).
//! - `webhooks`: delivery of the durable feed to `[[webhooks]]`, signed, with retries.
//! - `wire`: JSON forms shared by the API and the webhooks (balances, one feed event).
//! - `periodic`: the one loop of the background pruners.

pub mod actor;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod feed;
pub mod history;
pub mod http;
pub mod metrics;
pub mod periodic;
pub mod store;
pub mod webhooks;
pub mod wire;

/// A storage failure stops the process: nothing after it is acknowledged, the reason is
/// logged, and the exit code (74, EX_IOERR) tells systemd to restart us. Recovery then
/// replays the durable log, which holds everything that was ever acknowledged.
pub fn fail_stop(reason: &str) -> ! {
    tracing::error!(
        reason,
        "storage failure: stopping without acknowledging anything further"
    );
    eprintln!("creditsd: fatal storage failure: {reason}");
    std::process::exit(74)
}

thread_local! {
    static REPLAYING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a replay of recorded events) so that a broken invariant becomes an `Err` with
/// the panic's message instead of stopping the process: a damaged log disables one
/// account (and is reported by audit), it does not crash-loop the daemon.
pub fn replaying<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    REPLAYING.with(|r| r.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    REPLAYING.with(|r| r.set(false));
    result.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Any other panic is a bug on the live path (a bucket below zero, a sequence gap): the
/// books in memory can no longer be trusted, so the process stops, like a storage failure,
/// and recovery rebuilds every account from its durable log.
pub fn install_fail_stop_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if REPLAYING.with(|r| r.get()) {
            return;
        }
        default(info);
        tracing::error!(panic = %info, "invariant broken: stopping without acknowledging anything further");
        std::process::exit(70);
    }));
}
