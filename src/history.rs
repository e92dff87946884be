//! History retention: prunes event-log entries older than `[history] retention` without
//! touching balances, snapshots or audit.
//!
//! The log of an account is cut at a prune point P: the state at P (a replay of the
//! previous base plus the events up to P) is written as the account's base snapshot
//! (`B‖account`) and the events up to P are deleted, in one atomic commit (one log record). P only ever
//! lies strictly below the latest snapshot's seq, where the account's actor never reads
//! or writes, so the pruner needs no actor and never activates an account: activation
//! keeps reading snapshot + tail, and the audit replays base + log. Knows the store, not
//! HTTP; does not touch balances (it only replays).

use std::sync::Arc;
use std::time::Duration;

use crate::actor::Clock;
use crate::config::{HistoryConfig, Retention};
use crate::domain::Ts;
use crate::store::recovery::{recover, Start, Visit};
use crate::store::{StorageError, Store};

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub accounts: u64,
    pub events: u64,
}

/// Prunes one account's log: the events before `cutoff` (stopping at the first one at or
/// after it), strictly below the latest snapshot, at most `events_max` of them.
pub fn prune_account(
    store: &dyn Store,
    id: &str,
    cutoff: Ts,
    events_max: u64,
) -> Result<u64, StorageError> {
    let Some(snapshot) = store.snapshot(id)? else {
        return Ok(0);
    };
    // The state at the prune point: the base, and the events below the cutoff, strictly
    // below the snapshot, at most `events_max` of them. A broken log is reported, and
    // that account is left as it is.
    let from = store.base(id)?.map_or(0, |b| b.seq) + 1;
    let last = snapshot.seq.saturating_sub(1).min(from - 1 + events_max);
    let recovered = recover(store, id, Start::Base, |_, ev| {
        Ok(if ev.seq > last || ev.at >= cutoff {
            Visit::Stop
        } else {
            Visit::Continue
        })
    })?;
    let Some(state) = recovered.map(|r| r.account) else {
        return Ok(0);
    };
    if state.seq < from {
        return Ok(0);
    }
    store.prune_history(id, from, &state)?;
    Ok(state.seq + 1 - from)
}

/// One pass over every account.
pub fn prune_all(store: &dyn Store, cutoff: Ts, events_max: u64) -> Result<Pruned, StorageError> {
    let mut done = Pruned::default();
    for id in store.accounts()? {
        match prune_account(store, &id, cutoff, events_max) {
            Ok(0) => {}
            Ok(n) => {
                done.accounts += 1;
                done.events += n;
            }
            // A corrupt account is reported here and by its actor; the others go on.
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::error!(account = %id, error = %e, "history not pruned")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The background pruner: one pass every `prune_interval_ms`, on a blocking thread.
pub async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: HistoryConfig) {
    let retention =
        Retention::parse(&config.retention).expect("invariant: validated by Config::validate");
    let every = Duration::from_millis(config.prune_interval_ms);
    let max = config.prune_events_max;
    crate::periodic::every(every, "pruned history", move || {
        let cutoff = retention.cutoff(clock.now());
        let p = prune_all(&*store, cutoff, max)?;
        // The segments whose events the passes so far have pruned (once the checkpointer
        // has taken them out of their runs).
        let segments = store.remove_unindexed_segments()?;
        Ok((p.events > 0 || segments > 0).then(|| {
            format!(
                "removed {} events of {} accounts, before {}, and {} log segments",
                p.events,
                p.accounts,
                cutoff.to_rfc3339(),
                segments
            )
        }))
    })
    .await
}
