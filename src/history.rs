//! History retention: prunes event-log entries older than `[history] retention` without
//! touching balances, snapshots or audit.
//!
//! The log of an account is cut at a prune point P: the state at P (a replay of the
//! previous base plus the events up to P) is written as the account's base snapshot
//! (`B‖account`) and the events up to P are deleted, in one atomic commit (one group record). P only ever
//! lies strictly below the latest snapshot's seq, where the account's actor never reads
//! or writes, so the pruner needs no actor and never activates an account: activation
//! keeps reading snapshot + tail, and the audit replays base + log. Knows the store, not
//! HTTP; does not touch balances (it only replays).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::actor::Clock;
use crate::domain::time::add_months;
use crate::domain::Ts;
use crate::store::recovery::{recover, Start, Visit};
use crate::store::{StorageError, Store};

/// `[history]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How long the ledger keeps events: `"13 months"`, `"90 days"`, `"12 hours"`,
    /// `"30 seconds"`. Months are calendar months.
    pub retention: String,
    /// How often the pruner runs.
    pub prune_interval_ms: u64,
    /// Events deleted per account per pass, at most (one commit).
    pub prune_events_max: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: "13 months".into(),
            prune_interval_ms: 3_600_000,
            prune_events_max: 10_000,
        }
    }
}

/// A parsed retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    Months(i64),
    Millis(i64),
}

impl Retention {
    pub fn parse(s: &str) -> Result<Retention, String> {
        let mut parts = s.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected a number and a unit, like \"13 months\"".into());
        };
        let n: i64 = match n.parse() {
            Ok(n) if (1..=1200).contains(&n) => n,
            _ => return Err("the number must be an integer from 1 to 1200".into()),
        };
        let unit_ms = match unit.trim_end_matches('s') {
            "month" => return Ok(Retention::Months(n)),
            "day" => 86_400_000,
            "hour" => 3_600_000,
            "minute" => 60_000,
            "second" => 1_000,
            _ => return Err("the unit is one of months, days, hours, minutes, seconds".into()),
        };
        Ok(Retention::Millis(n * unit_ms))
    }

    /// Events at or after this instant are kept.
    pub fn cutoff(self, now: Ts) -> Ts {
        match self {
            Retention::Months(n) => add_months(now, -n),
            Retention::Millis(ms) => now.plus_millis(-ms),
        }
    }

    /// The shortest this retention can be, for comparing with other durations: for
    /// months, the shortest `now - cutoff(now)` over every day of a whole 400-year
    /// Gregorian cycle (so leap days, short months and century years are all met):
    /// 28 days for "1 month", 393 days for "13 months", not n × 28 days.
    pub fn min_millis(self) -> i64 {
        const DAY_MS: i64 = 86_400_000;
        const CYCLE_DAYS: i64 = 146_097;
        // 2000-01-01: a cycle from there meets every calendar case once.
        const START: Ts = Ts(946_684_800_000);
        match self {
            Retention::Months(n) => (0..CYCLE_DAYS)
                .map(|d| {
                    let now = START.plus_millis(d * DAY_MS);
                    now.millis() - add_months(now, -n).millis()
                })
                .min()
                .unwrap_or(0),
            Retention::Millis(ms) => ms,
        }
    }
}

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
    let mut tick = tokio::time::interval(Duration::from_millis(config.prune_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = retention.cutoff(clock.now());
        let store = store.clone();
        let max = config.prune_events_max;
        match tokio::task::spawn_blocking(move || prune_all(&*store, cutoff, max)).await {
            Ok(Ok(p)) if p.events > 0 => tracing::info!(
                accounts = p.accounts,
                events = p.events,
                before = %cutoff.to_rfc3339(),
                "pruned history past its retention"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => crate::fail_stop(&format!("pruning history: {e}")),
            Err(e) => tracing::error!(error = %e, "history pruning task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_units_and_refuses_nonsense() {
        assert_eq!(Retention::parse("13 months"), Ok(Retention::Months(13)));
        assert_eq!(Retention::parse("1 month"), Ok(Retention::Months(1)));
        let day = 86_400_000;
        assert_eq!(Retention::Months(1).min_millis(), 28 * day);
        assert_eq!(Retention::Months(12).min_millis(), 365 * day);
        assert_eq!(Retention::Months(13).min_millis(), 393 * day);
        assert_eq!(Retention::parse("2 seconds"), Ok(Retention::Millis(2_000)));
        assert_eq!(
            Retention::parse("90 days"),
            Ok(Retention::Millis(90 * 86_400_000))
        );
        for bad in [
            "",
            "13",
            "months",
            "0 days",
            "-1 days",
            "3 weeks",
            "1 day extra",
        ] {
            assert!(Retention::parse(bad).is_err(), "{bad:?}");
        }
        let now = Ts::parse_rfc3339("2027-03-31T00:00:00Z").unwrap();
        assert_eq!(
            Retention::Months(1).cutoff(now),
            Ts::parse_rfc3339("2027-02-28T00:00:00Z").unwrap()
        );
    }
}
