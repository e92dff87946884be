//! Book-wide totals: credits outstanding by bucket, accounts, paused accounts. They are
//! what `creditsd_credits_outstanding{bucket}` and `creditsd_accounts` show, and they must
//! be right after a restart for every account, not only the ones activated since.
//!
//! They live on disk in `SHARDS` keys (`T‖shard`), each the running sum for the accounts
//! hashed to it. A mutation's events move its account's shard in the same atomic commit (one group record)
//! that writes them, so whatever prefix of writes a crash keeps, each shard equals the sum
//! of the events that survived. Startup reads `SHARDS` small keys instead of scanning every
//! account. One global key would serialise every writer behind one lock; `SHARDS` locks,
//! each held only around one in-memory overlay commit, keep the writers apart.
//!
//! This module knows events, not sled: `delta` says what one event does to the totals.

use serde::{Deserialize, Serialize};

use crate::domain::{Account, Buckets, Event, EventBody};

/// How many shard keys the totals are spread over.
pub const SHARDS: usize = 16;

/// Sums over a set of accounts. Signed so that a delta is the same type; a negative sum
/// over a whole shard would be a bug.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookTotals {
    pub monthly: i128,
    pub free: i128,
    pub packs: i128,
    pub held: i128,
    pub accounts: i128,
    pub paused: i128,
}

impl BookTotals {
    pub fn add(&mut self, d: &BookTotals) {
        self.monthly += d.monthly;
        self.free += d.free;
        self.packs += d.packs;
        self.held += d.held;
        self.accounts += d.accounts;
        self.paused += d.paused;
    }

    /// One account's contribution: its balances, held credits, itself, paused or not.
    pub fn of(acct: &Account) -> BookTotals {
        BookTotals {
            monthly: acct.balances.monthly.get() as i128,
            free: acct.balances.free.get() as i128,
            packs: acct.balances.packs.get() as i128,
            held: acct.held().get() as i128,
            accounts: 1,
            paused: acct.paused() as i128,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == BookTotals::default()
    }

    fn move_buckets(&mut self, b: &Buckets, sign: i128) {
        self.monthly += sign * b.monthly.get() as i128;
        self.free += sign * b.free.get() as i128;
        self.packs += sign * b.packs.get() as i128;
    }
}

/// What one event does to the totals, from its body and the balances after it.
pub fn delta(ev: &Event) -> BookTotals {
    let mut d = BookTotals::default();
    match &ev.body {
        EventBody::Created { free, monthly, .. } => {
            d.free += free.get() as i128;
            d.monthly += monthly.get() as i128;
            d.accounts = 1;
            d.paused = ev.after.total().is_zero() as i128;
            return d;
        }
        EventBody::Debited { taken, .. } => d.move_buckets(taken, -1),
        EventBody::PeriodReset {
            expired,
            allocation,
            ..
        } => d.monthly += allocation.get() as i128 - expired.get() as i128,
        EventBody::PlanChanged { granted, .. } => d.monthly += granted.get() as i128,
        EventBody::Purchased { credits, .. } => d.packs += credits.get() as i128,
        EventBody::Granted {
            bucket, credits, ..
        } => {
            let mut b = Buckets::default();
            *b.get_mut(*bucket) = *credits;
            d.move_buckets(&b, 1);
        }
        EventBody::HoldPlaced { credits, taken, .. } => {
            d.move_buckets(taken, -1);
            d.held += credits.get() as i128;
        }
        EventBody::HoldCaptured {
            spent,
            returned,
            expired,
            ..
        } => {
            d.held -= (spent.total().get() + returned.total().get() + expired.get()) as i128;
            d.move_buckets(returned, 1);
        }
        EventBody::HoldReleased {
            returned, expired, ..
        } => {
            d.held -= (returned.total().get() + expired.get()) as i128;
            d.move_buckets(returned, 1);
        }
    }
    // Paused exactly when nothing is available: compare before (after minus the change)
    // with after.
    let after = ev.after.total().get() as i128;
    let before = after - (d.monthly + d.free + d.packs);
    d.paused = (after == 0) as i128 - (before == 0) as i128;
    d
}

/// The shard an account's totals go to: a stable hash, so a shard's sum stays the sum of
/// the same accounts across restarts.
pub fn shard_of(account: &str) -> usize {
    crc32fast::hash(account.as_bytes()) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Bucket, Command, Credits, Pricing, Ts};

    fn run(a: &mut Account, p: &Pricing, cmd: Command, now: Ts) -> Option<Event> {
        let body = a.decide(&cmd, now, p).ok()?;
        Some(a.record(body, now, &p.thresholds))
    }

    /// The sum of the deltas of an account's events equals its balances, through every
    /// kind of event, including resets and holds that outlive their period.
    #[test]
    fn deltas_sum_to_the_balances() {
        let p = Pricing::standard();
        let mut a = Account::empty("t");
        let created = Account::create("t", "starter", Ts(0), Ts(0), &p).unwrap();
        a.apply(&created);
        let mut sum = delta(&created);
        let debit = |k: &str, q: u32| Command::Debit {
            operation: "face_generation".into(),
            quantity: q,
            metadata: vec![],
            idempotency_key: k.into(),
        };
        let day = 86_400_000;
        let mut events = vec![];
        events.extend(run(&mut a, &p, debit("d1", 3), Ts(1)));
        events.extend(run(
            &mut a,
            &p,
            Command::PlaceHold {
                operation: "video_generation".into(),
                quantity: 2,
                ttl_ms: 40 * day,
                idempotency_key: "h1".into(),
            },
            Ts(2),
        ));
        events.extend(run(
            &mut a,
            &p,
            Command::Purchase {
                pack: "pack_100".into(),
                payment_ref: "p1".into(),
            },
            Ts(3),
        ));
        events.extend(run(
            &mut a,
            &p,
            Command::Grant {
                bucket: Bucket::Free,
                credits: Credits(7),
                reason: "support".into(),
                idempotency_key: "g1".into(),
            },
            Ts(4),
        ));
        events.extend(run(
            &mut a,
            &p,
            Command::ChangePlan {
                plan: "growth".into(),
                idempotency_key: "u1".into(),
            },
            Ts(5),
        ));
        events.extend(run(&mut a, &p, debit("d2", 60), Ts(6)));
        // Past the period end: resets, then capture part of a hold that held monthly credits.
        let later = Ts(35 * day);
        while let Some((at, body)) = a.next_due(later, &p) {
            events.push(a.record(body, at, &p.thresholds));
        }
        events.extend(run(
            &mut a,
            &p,
            Command::Capture {
                hold_id: 1,
                credits: Some(Credits(3)),
                idempotency_key: Some("c1".into()),
            },
            later,
        ));
        assert!(events.len() >= 8, "every command applied: {events:?}");
        // Spend everything: the account pauses.
        let left = a.available().get() as u32;
        events.extend(run(
            &mut a,
            &p,
            Command::Debit {
                operation: "caption_generation".into(),
                quantity: left,
                metadata: vec![],
                idempotency_key: "all".into(),
            },
            later,
        ));
        for ev in &events {
            sum.add(&delta(ev));
        }
        assert!(a.paused());
        assert_eq!(sum, BookTotals::of(&a));
    }
}
