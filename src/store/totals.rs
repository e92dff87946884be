//! Book-wide totals: credits outstanding by bucket, accounts, paused accounts. They are
//! what `creditsd_credits_outstanding{bucket}` and `creditsd_accounts` show, and they must
//! be right after a restart for every account, not only the ones activated since.
//!
//! They live on disk in `SHARDS` keys (`T‖shard`), each the running sum for the accounts
//! hashed to it. A mutation's events move its account's shard in the same atomic commit (one log record)
//! that writes them, so whatever prefix of writes a crash keeps, each shard equals the sum
//! of the events that survived. Startup reads `SHARDS` small keys instead of scanning every
//! account. One global key would serialise every writer behind one lock; `SHARDS` locks,
//! each held only around one in-memory overlay commit, keep the writers apart.
//!
//! This module knows events, not sled: `delta` says what one event does to the totals.
//! `BookTotals` is stored as it is (version 2, with `promo`; version 1 is
//! `legacy::BookTotalsV1`), so its fields are never edited: a new layout is a new version.

use serde::{Deserialize, Serialize};

use crate::domain::{Account, Buckets, Event, EventBody};

/// How many shard keys the totals are spread over.
pub const SHARDS: usize = 16;

/// Sums over a set of accounts. Signed so that a delta is the same type; a negative sum
/// over a whole shard would be a bug.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookTotals {
    pub monthly: i128,
    /// The sum of the open promo blocks.
    pub promo: i128,
    pub free: i128,
    pub packs: i128,
    pub held: i128,
    pub accounts: i128,
    pub paused: i128,
}

impl BookTotals {
    pub fn add(&mut self, d: &BookTotals) {
        self.monthly += d.monthly;
        self.promo += d.promo;
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
            promo: acct.balances.promo.get() as i128,
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
        self.promo += sign * b.promo.get() as i128;
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
        EventBody::Debited { taken, .. } => d.move_buckets(&taken.buckets, -1),
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
            d.move_buckets(&taken.buckets, -1);
            d.held += credits.get() as i128;
        }
        EventBody::HoldCaptured {
            spent,
            returned,
            expired,
            ..
        } => {
            d.held -= (spent.total().get() + returned.total().get() + expired.get()) as i128;
            d.move_buckets(&returned.buckets, 1);
        }
        EventBody::HoldReleased {
            returned, expired, ..
        } => {
            d.held -= (returned.total().get() + expired.get()) as i128;
            d.move_buckets(&returned.buckets, 1);
        }
        // What of a refund does not come back (monthly of an ended period, an expired
        // block) expires: it was outstanding in no bucket.
        EventBody::Refunded { returned, .. } => d.move_buckets(&returned.buckets, 1),
        EventBody::PromoExpired { expired, .. } => d.promo -= expired.get() as i128,
        EventBody::AlertsSet { .. }
        | EventBody::MemberSet { .. }
        | EventBody::MemberRemoved { .. } => {}
    }
    // Paused exactly when nothing is available: compare before (after minus the change)
    // with after.
    let after = ev.after.total().get() as i128;
    let before = after - (d.monthly + d.promo + d.free + d.packs);
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
    use crate::domain::account::DebitRef;
    use crate::domain::event::ForecastSetting;
    use crate::domain::{Bucket, Command, Credits, Pricing, Ts};

    fn run(a: &mut Account, p: &Pricing, cmd: Command, now: Ts) -> Option<Event> {
        let body = a.decide(&cmd, now, p).ok()?;
        Some(a.record(body, now, p))
    }

    /// The sum of the deltas of an account's events equals its balances, through every
    /// kind of event, including resets, holds that outlive their period, promo blocks
    /// that expire and refunds of credits that expired meanwhile.
    #[test]
    fn deltas_sum_to_the_balances() {
        let p = Pricing::standard();
        let mut a = Account::empty("t");
        let created = Account::create("t", "starter", Ts(0), Ts(0), &p).unwrap();
        a.apply(&created);
        let mut sum = delta(&created);
        let debit = |k: &str, q: u32, member: Option<&str>| Command::Debit {
            operation: "face_generation".into(),
            quantity: q,
            metadata: vec![],
            idempotency_key: k.into(),
            member: member.map(String::from),
        };
        let grant = |k: &str, bucket: Bucket, expires_at: Option<Ts>| Command::Grant {
            bucket,
            credits: Credits(7),
            reason: "support".into(),
            idempotency_key: k.into(),
            expires_at,
        };
        let day = 86_400_000;
        let mut events = vec![];
        events.extend(run(
            &mut a,
            &p,
            Command::SetMember {
                member: "m".into(),
                cap: Some(Credits(1000)),
                idempotency_key: "m1".into(),
            },
            Ts(1),
        ));
        events.extend(run(
            &mut a,
            &p,
            grant("p1", Bucket::Promo, Some(Ts(2 * day))),
            Ts(1),
        ));
        events.extend(run(
            &mut a,
            &p,
            grant("p2", Bucket::Promo, Some(Ts(60 * day))),
            Ts(1),
        ));
        events.extend(run(&mut a, &p, debit("d1", 12, Some("m")), Ts(1)));
        events.extend(run(
            &mut a,
            &p,
            Command::PlaceHold {
                operation: "video_generation".into(),
                quantity: 2,
                ttl_ms: 40 * day,
                idempotency_key: "h1".into(),
                member: None,
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
        events.extend(run(&mut a, &p, grant("g1", Bucket::Free, None), Ts(4)));
        events.extend(run(
            &mut a,
            &p,
            Command::ChangePlan {
                plan: "growth".into(),
                idempotency_key: "u1".into(),
            },
            Ts(5),
        ));
        events.extend(run(&mut a, &p, debit("d2", 60, None), Ts(6)));
        // A block nothing takes from before it expires.
        events.extend(run(
            &mut a,
            &p,
            grant("p3", Bucket::Promo, Some(Ts(3 * day))),
            Ts(7),
        ));
        events.extend(run(
            &mut a,
            &p,
            Command::SetAlerts {
                thresholds: Some(vec![50, 10]),
                forecast: ForecastSetting::Hours(48),
                idempotency_key: "a1".into(),
            },
            Ts(7),
        ));
        // Past the period end: the first block and the period's monthly credits expire,
        // then capture part of a hold that held monthly credits.
        let later = Ts(35 * day);
        while let Some((at, body)) = a.next_due(later, &p) {
            events.push(a.record(body, at, &p));
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
        // Refund the first debit: what it took of the expired block and the ended period
        // expires, the rest comes back.
        let d1 = events
            .iter()
            .find(|ev| ev.body.idempotency_key() == Some("d1"))
            .and_then(DebitRef::from_event)
            .map(Box::new);
        events.extend(run(
            &mut a,
            &p,
            Command::Refund {
                debit_key: "d1".into(),
                credits: None,
                reason: "failed".into(),
                idempotency_key: "r1".into(),
                debit: d1,
            },
            later,
        ));
        events.extend(run(
            &mut a,
            &p,
            Command::RemoveMember {
                member: "m".into(),
                idempotency_key: "m2".into(),
            },
            later,
        ));
        for kind in ["promo_expired", "refund", "alerts_set", "member_removed"] {
            assert!(
                events.iter().any(|ev| ev.body.kind() == kind),
                "{kind} applied: {events:?}"
            );
        }
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
                member: None,
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
