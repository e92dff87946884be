//! creditsd: the credit books of a generation product, kept by one actor per account.
//!
//! Map (see ARCHITECTURE.md for the invariants):
//! - `domain`: the pure books: credits, calendar, decide/record/apply, alerts. No I/O.
//! - `store`: the `Store` trait over sled, the record codec, the group-commit journal.
//! - `actor`: one task per account, its messages, the registry that finds or starts it.
//! - `http`: hyper front end: routes, JSON, errors, auth, the accept loop.
//! - `config`: the one typed config with defaults; `validate` names the bad key.
//! - `daemon`: wiring in order: store → journal → registry → HTTP → ready → drain.
//! - `audit`: replays every account's log and checks the books.
//! - `metrics`: metric names and the helpers that move them.

pub mod actor;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod store;

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
