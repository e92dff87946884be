//! The reads the API makes from the store rather than through an actor: pages of account
//! ids, of an account's ledger and of the durable feed, and the book totals. Handlers
//! read the store only through `Reads`; everything about an account's current state goes
//! through its actor (`ask`).

use std::sync::Arc;

use hyper::StatusCode;

use super::error::ApiError;
use crate::domain::{Account, Buckets, Credits, Event, Pricing, Ts};
use crate::store::recovery::{recover, Start, Visit};
use crate::store::{BookTotals, FeedEntry, StorageError, Store};

/// The store, for reading only.
pub struct Reads {
    store: Arc<dyn Store>,
}

/// One page of account ids, in byte order.
pub struct AccountsPage {
    pub ids: Vec<String>,
    /// Whether ids follow this page.
    pub more: bool,
}

/// One page of a ledger, newest first.
pub struct LedgerPage {
    /// Each event with the balances and held credits right before it.
    pub entries: Vec<(Event, (Buckets, Credits))>,
    /// The `before` of the next page (the seq of this page's oldest event); `None` on
    /// the last page.
    pub next: Option<u64>,
}

impl Reads {
    pub fn new(store: Arc<dyn Store>) -> Reads {
        Reads { store }
    }

    /// At most `limit` account ids after `after`.
    pub fn accounts_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<AccountsPage, ApiError> {
        let mut ids = self
            .store
            .accounts_page(after, limit + 1)
            .map_err(storage_failure)?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        Ok(AccountsPage { ids, more })
    }

    /// At most `limit` events of account `id` with a seq below `before`, newest first.
    /// The caller has asked the account's actor first (an unknown account is its 404) and
    /// bounds `before` by the seq the actor has reached.
    pub fn ledger_page(&self, id: &str, before: u64, limit: usize) -> Result<LedgerPage, ApiError> {
        // One more than the page, for the change of the page's oldest entry.
        let events = self
            .store
            .events_before(id, before, limit + 1)
            .map_err(storage_failure)?;
        // The oldest entry left after a retention prune changes from the base snapshot.
        let base = match events.last() {
            Some(last) if events.len() <= limit && last.seq > 1 => self
                .store
                .base(id)
                .map_err(storage_failure)?
                .filter(|b| b.seq + 1 == last.seq)
                .map(|b| (b.balances, b.held())),
            _ => None,
        };
        let prevs: Vec<(Buckets, Credits)> = (0..events.len().min(limit))
            .map(|i| {
                events
                    .get(i + 1)
                    .map(|p| (p.after, p.held_after))
                    .or(base)
                    .unwrap_or_default()
            })
            .collect();
        let next = match events.get(limit.saturating_sub(1)) {
            Some(last) if events.len() > limit && prevs.len() == limit => Some(last.seq),
            _ => None,
        };
        let entries = events.into_iter().zip(prevs).collect();
        Ok(LedgerPage { entries, next })
    }

    /// At most `limit` feed entries after id `after` and below id `below` (the journal's
    /// durable watermark), oldest first.
    pub fn feed_page(
        &self,
        after: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, ApiError> {
        self.store
            .feed_after(after, below, limit)
            .map_err(storage_failure)
    }

    /// Account `id` as it stood at `at`, rebuilt from its retained log (the base snapshot
    /// retention left, the events up to `at`, and the resets and expiries due by then).
    /// 404 `account_not_found` before it was created, 410 `history_pruned` before the
    /// oldest event kept. The caller has asked the account's actor first.
    pub fn account_at(&self, id: &str, at: Ts, pricing: &Pricing) -> Result<Account, ApiError> {
        // The first event kept, and the seq of the state before it (the base snapshot's:
        // more than 0 when retention pruned the history).
        let mut first_kept: Option<(u64, Ts)> = None;
        let recovered = recover(&*self.store, id, Start::Base, |before, ev| {
            first_kept.get_or_insert((before.seq, ev.at));
            Ok(if ev.at > at {
                Visit::Stop
            } else {
                Visit::Continue
            })
        })
        .map_err(storage_failure)?;
        let Some(r) = recovered else {
            return Err(not_yet(id, at));
        };
        if at < r.account.created_at {
            return Err(not_yet(id, at));
        }
        let pruned = first_kept.map_or(r.account.seq > 0, |(base_seq, _)| base_seq > 0);
        if pruned && first_kept.map_or(true, |(_, t)| at < t) {
            let since = first_kept.map(|(_, t)| t.to_rfc3339());
            return Err(ApiError::new(
                StatusCode::GONE,
                "history_pruned",
                format!(
                    "the history of {id} before {} was pruned (see [history] retention)",
                    since.as_deref().unwrap_or("now")
                ),
            )
            .with("history_starts_at", serde_json::json!(since)));
        }
        let mut acct = r.account;
        while let Some((t, body)) = acct.next_due(at, pricing) {
            acct.record(body, t, pricing);
        }
        Ok(acct)
    }

    /// Outstanding credits and account counts of the whole books.
    pub fn totals(&self) -> BookTotals {
        self.store.totals()
    }
}

/// `?at=` before the account was created.
fn not_yet(id: &str, at: Ts) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "account_not_found",
        format!("account {id} did not exist at {}", at.to_rfc3339()),
    )
}

/// A corrupt record is a 500 naming its key, for this request only; any other storage
/// error stops the process (fail-stop), as it does on the write path.
fn storage_failure(e: StorageError) -> ApiError {
    match e {
        StorageError::Corrupt { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_corrupt",
            e.to_string(),
        ),
        _ => crate::fail_stop(&e.to_string()),
    }
}
