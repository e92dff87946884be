//! `creditsd audit`: replays every account's whole log and checks that the books balance
//! (granted = debited + expired + held + available), that sequence numbers have no gaps,
//! that every event replays to the balances it recorded, and that the snapshot equals the
//! replay up to its sequence number. A pruned log (`history.rs`) is replayed from its
//! base snapshot, whose books are checked too. Last, the book totals kept on disk
//! (outstanding credits by bucket, accounts, paused accounts) must equal the sum over
//! every replayed account.

use crate::domain::Account;
use crate::store::{BookTotals, Store};

#[derive(Debug, Default)]
pub struct Report {
    pub accounts: u64,
    pub events: u64,
    pub problems: Vec<String>,
}

pub fn audit(store: &dyn Store) -> Report {
    let mut report = Report::default();
    let ids = match store.accounts() {
        Ok(ids) => ids,
        Err(e) => {
            report.problems.push(format!("listing accounts: {e}"));
            return report;
        }
    };
    let mut replayed = BookTotals::default();
    for id in ids {
        report.accounts += 1;
        match audit_account(store, &id, &mut report.events) {
            Ok(acct) => replayed.add(&BookTotals::of(&acct)),
            Err(p) => report.problems.push(p),
        }
    }
    let kept = store.totals();
    if report.problems.is_empty() && kept != replayed {
        report.problems.push(format!(
            "book totals on disk {kept:?} differ from the sum of the replayed accounts {replayed:?}"
        ));
    }
    report
}

fn audit_account(store: &dyn Store, id: &str, events_seen: &mut u64) -> Result<Account, String> {
    let base = store.base(id).map_err(|e| format!("account {id}: {e}"))?;
    let mut acct = base.unwrap_or_else(|| Account::empty(id));
    acct.check_books()
        .map_err(|e| format!("{e} (base snapshot at seq {})", acct.seq))?;
    let events = store
        .events_after(id, acct.seq)
        .map_err(|e| format!("account {id}: {e}"))?;
    let snapshot = store
        .snapshot(id)
        .map_err(|e| format!("account {id}: {e}"))?;
    let mut at_snapshot = snapshot
        .as_ref()
        .filter(|s| s.seq == acct.seq && s.seq > 0)
        .map(|_| acct.clone());
    for ev in &events {
        *events_seen += 1;
        // `apply` asserts sequence and balances; a failed assertion is a finding here.
        crate::replaying(|| acct.apply(ev))
            .map_err(|p| format!("account {id}: seq {}: {p}", ev.seq))?;
        acct.check_books()
            .map_err(|e| format!("{e} (after seq {})", ev.seq))?;
        if snapshot.as_ref().is_some_and(|s| s.seq == ev.seq) {
            at_snapshot = Some(acct.clone());
        }
    }
    if let Some(s) = snapshot {
        match at_snapshot {
            Some(r) if r == s => {}
            Some(_) => {
                return Err(format!(
                    "account {id}: snapshot at seq {} differs from the replay",
                    s.seq
                ))
            }
            None => {
                return Err(format!(
                    "account {id}: snapshot at seq {} has no such event in the log",
                    s.seq
                ))
            }
        }
    } else {
        return Err(format!("account {id}: no snapshot"));
    }
    Ok(acct)
}
