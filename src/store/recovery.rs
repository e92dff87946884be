//! The one way an account is rebuilt from storage: a starting state (its latest snapshot,
//! or its base snapshot, or nothing) and the log after it, replayed with the domain's
//! `apply`. Activation, `creditsd audit`, history retention and the rebuild of the book
//! totals all read an account through `recover`; they differ only in where they start and
//! in what they look at on the way (`visit`).

use super::{StorageError, Store};
use crate::domain::{Account, Event};

/// Where a recovery starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The latest snapshot (activation, the totals): the fewest events to replay. A
    /// snapshot ahead of the log (its own event is missing) is not trusted, and the
    /// recovery starts from the base instead.
    Snapshot,
    /// The base snapshot that history retention leaves (or the empty account): the whole
    /// log that is kept (audit, retention).
    Base,
}

/// What `visit` answers before each event: go on, or stop with the state as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    Continue,
    Stop,
}

/// An account as its durable log has it.
#[derive(Debug)]
pub struct Recovered {
    pub account: Account,
    /// The seq of the snapshot it started from (0 from the base or from nothing).
    pub snapshot_seq: u64,
    /// How many events were replayed.
    pub replayed: u64,
}

/// Events are read this many at a time, so a long log is never held in memory at once.
const PAGE: usize = 512;

/// Rebuilds `id` from `start` and the log after it. `visit` sees the state so far and the
/// next event before each is applied, and may stop there. A gap in the sequence, or an
/// event that does not replay onto the state before it (a broken invariant in `apply`,
/// caught), is `StorageError::Corrupt` naming the event. `None`: the account has no
/// events at all (it does not exist).
pub fn recover(
    store: &dyn Store,
    id: &str,
    start: Start,
    mut visit: impl FnMut(&Account, &Event) -> Result<Visit, StorageError>,
) -> Result<Option<Recovered>, StorageError> {
    let from_base = || -> Result<Account, StorageError> {
        Ok(store.base(id)?.unwrap_or_else(|| Account::empty(id)))
    };
    let (mut account, snapshot_seq) = match start {
        Start::Base => (from_base()?, 0),
        Start::Snapshot => match store.snapshot(id)? {
            Some(s) if s.seq > 0 && store.event(id, s.seq)?.is_none() => {
                tracing::warn!(account = %id, seq = s.seq, "snapshot is ahead of the log; replaying from the base");
                (from_base()?, 0)
            }
            Some(s) => {
                let seq = s.seq;
                (s, seq)
            }
            None => (from_base()?, 0),
        },
    };
    let mut replayed = 0;
    'pages: loop {
        let page = store.events_from(id, account.seq + 1, PAGE)?;
        let full = page.len() == PAGE;
        for ev in page {
            if ev.seq != account.seq + 1 {
                return Err(StorageError::Corrupt {
                    key: event_name(id, ev.seq),
                    reason: format!("the log jumps from seq {} to {}", account.seq, ev.seq),
                });
            }
            if visit(&account, &ev)? == Visit::Stop {
                break 'pages;
            }
            crate::replaying(|| account.apply(&ev)).map_err(|e| StorageError::Corrupt {
                key: event_name(id, ev.seq),
                reason: format!("does not replay onto the state before it: {e}"),
            })?;
            replayed += 1;
        }
        if !full {
            break;
        }
    }
    Ok((account.seq > 0).then_some(Recovered {
        account,
        snapshot_seq,
        replayed,
    }))
}

/// An event's key as people read it (`Eacct#7`), as the codec names corrupt records.
fn event_name(id: &str, seq: u64) -> String {
    format!("E{id}#{seq}")
}
