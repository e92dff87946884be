//! The stored record types: what goes on disk, versioned, apart from the domain.
//!
//! Postcard is not self-describing: a record's bytes are its fields in declaration order
//! (integers as varints, a struct as its fields, an enum as its variant's index then its
//! fields, a newtype as what it wraps). So a record type is never edited once data was
//! written in it: a new layout is a new type with a new version byte (`codec::Record`),
//! and the old one moves to `legacy.rs` with its conversion. The domain types may change
//! freely; only the conversions here follow them.
//!
//! `Credits` are stored as `u64` and instants (`Ts`, milliseconds since the epoch) as
//! `i64`: the domain's newtypes were written as what they wrap, so the layouts are the
//! ones release 0.1.0 wrote. `tests` below pins every type's bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::account::Totals;
use crate::domain::usage::{Usage, UsageCell};
use crate::domain::{
    Account, AlertChange, Bucket, Buckets, Credits, Event, EventBody, Hold, Notice, ReleaseReason,
    Ts,
};

use super::codec::Record;
use super::{FeedEntry, IdemRecord};

/// Credits per bucket (`Buckets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketsRecord {
    pub monthly: u64,
    pub free: u64,
    pub packs: u64,
}

impl From<&Buckets> for BucketsRecord {
    fn from(b: &Buckets) -> Self {
        BucketsRecord {
            monthly: b.monthly.get(),
            free: b.free.get(),
            packs: b.packs.get(),
        }
    }
}

impl From<BucketsRecord> for Buckets {
    fn from(r: BucketsRecord) -> Self {
        Buckets {
            monthly: Credits(r.monthly),
            free: Credits(r.free),
            packs: Credits(r.packs),
        }
    }
}

/// A spendable bucket (`Bucket`), by variant index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketRecord {
    Monthly,
    Free,
    Packs,
}

impl From<Bucket> for BucketRecord {
    fn from(b: Bucket) -> Self {
        match b {
            Bucket::Monthly => BucketRecord::Monthly,
            Bucket::Free => BucketRecord::Free,
            Bucket::Packs => BucketRecord::Packs,
        }
    }
}

impl From<BucketRecord> for Bucket {
    fn from(r: BucketRecord) -> Self {
        match r {
            BucketRecord::Monthly => Bucket::Monthly,
            BucketRecord::Free => Bucket::Free,
            BucketRecord::Packs => Bucket::Packs,
        }
    }
}

/// The thresholds one event fired and re-armed (`AlertChange`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertChangeRecord {
    pub fired: u128,
    pub rearmed: u128,
}

impl From<&AlertChange> for AlertChangeRecord {
    fn from(a: &AlertChange) -> Self {
        AlertChangeRecord {
            fired: a.fired,
            rearmed: a.rearmed,
        }
    }
}

impl From<AlertChangeRecord> for AlertChange {
    fn from(r: AlertChangeRecord) -> Self {
        AlertChange {
            fired: r.fired,
            rearmed: r.rearmed,
        }
    }
}

/// Why a hold was given back (`ReleaseReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReasonRecord {
    Released,
    Expired,
}

impl From<ReleaseReason> for ReleaseReasonRecord {
    fn from(r: ReleaseReason) -> Self {
        match r {
            ReleaseReason::Released => ReleaseReasonRecord::Released,
            ReleaseReason::Expired => ReleaseReasonRecord::Expired,
        }
    }
}

impl From<ReleaseReasonRecord> for ReleaseReason {
    fn from(r: ReleaseReasonRecord) -> Self {
        match r {
            ReleaseReasonRecord::Released => ReleaseReason::Released,
            ReleaseReasonRecord::Expired => ReleaseReason::Expired,
        }
    }
}

/// An event, version 2 (since captures name their hold's operation and quantity; version
/// 1 is `legacy::EventV1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecordV2 {
    pub seq: u64,
    pub at: i64,
    pub body: EventBodyRecordV2,
    pub after: BucketsRecord,
    pub held_after: u64,
    pub alerts: AlertChangeRecord,
}

/// `EventBody`, variant for variant in the same order (postcard stores the index). Each
/// variant wraps a struct of its own: postcard writes a newtype variant of a struct
/// exactly as a struct variant (index, then the fields), and an older layout
/// (`legacy.rs`) reuses the structs of the variants it shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBodyRecordV2 {
    Created(CreatedRecord),
    Debited(DebitedRecord),
    PeriodReset(PeriodResetRecord),
    PlanChanged(PlanChangedRecord),
    Purchased(PurchasedRecord),
    Granted(GrantedRecord),
    HoldPlaced(HoldPlacedRecord),
    HoldCaptured(HoldCapturedRecordV2),
    HoldReleased(HoldReleasedRecord),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedRecord {
    pub id: String,
    pub plan: String,
    pub anchor: i64,
    pub period: i64,
    pub free: u64,
    pub monthly: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitedRecord {
    pub operation: String,
    pub quantity: u32,
    pub credits: u64,
    pub taken: BucketsRecord,
    pub idempotency_key: String,
    pub metadata: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodResetRecord {
    pub period: i64,
    pub expired: u64,
    pub plan: String,
    pub allocation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChangedRecord {
    pub from: String,
    pub to: String,
    pub immediate: bool,
    pub effective_at: i64,
    pub granted: u64,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchasedRecord {
    pub pack: String,
    pub credits: u64,
    pub price_cents: u64,
    pub payment_ref: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedRecord {
    pub bucket: BucketRecord,
    pub credits: u64,
    pub reason: String,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldPlacedRecord {
    pub hold_id: u64,
    pub operation: String,
    pub quantity: u32,
    pub credits: u64,
    pub taken: BucketsRecord,
    pub expires_at: i64,
    pub idempotency_key: String,
}

/// Since version 2 a capture names its hold's operation and quantity. Its key is `""`
/// when the request had none (`optional_key_to_record`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCapturedRecordV2 {
    pub hold_id: u64,
    pub operation: String,
    pub quantity: u32,
    pub spent: BucketsRecord,
    pub returned: BucketsRecord,
    pub expired: u64,
    pub idempotency_key: String,
}

/// Its key is `""` when the request had none, and for an expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReleasedRecord {
    pub hold_id: u64,
    pub returned: BucketsRecord,
    pub expired: u64,
    pub reason: ReleaseReasonRecord,
    pub idempotency_key: String,
}

/// An optional idempotency key as events store it: `""` for none. Keys are never empty
/// (the API requires 1 to 128 bytes), so the two cannot be confused.
fn optional_key_to_record(key: Option<String>) -> String {
    debug_assert!(
        key.as_deref() != Some(""),
        "an idempotency key is never empty"
    );
    key.unwrap_or_default()
}

fn optional_key_from_record(key: String) -> Option<String> {
    (!key.is_empty()).then_some(key)
}

impl From<&Event> for EventRecordV2 {
    fn from(ev: &Event) -> Self {
        EventRecordV2 {
            seq: ev.seq,
            at: ev.at.millis(),
            body: EventBodyRecordV2::from(&ev.body),
            after: BucketsRecord::from(&ev.after),
            held_after: ev.held_after.get(),
            alerts: AlertChangeRecord::from(&ev.alerts),
        }
    }
}

impl From<EventRecordV2> for Event {
    fn from(r: EventRecordV2) -> Self {
        Event {
            seq: r.seq,
            at: Ts(r.at),
            body: EventBody::from(r.body),
            after: Buckets::from(r.after),
            held_after: Credits(r.held_after),
            alerts: AlertChange::from(r.alerts),
        }
    }
}

impl From<&EventBody> for EventBodyRecordV2 {
    fn from(body: &EventBody) -> Self {
        use EventBodyRecordV2 as R;
        match body.clone() {
            EventBody::Created {
                id,
                plan,
                anchor,
                period,
                free,
                monthly,
            } => R::Created(CreatedRecord {
                id,
                plan,
                anchor: anchor.millis(),
                period,
                free: free.get(),
                monthly: monthly.get(),
            }),
            EventBody::Debited {
                operation,
                quantity,
                credits,
                taken,
                idempotency_key,
                metadata,
            } => R::Debited(DebitedRecord {
                operation,
                quantity,
                credits: credits.get(),
                taken: BucketsRecord::from(&taken),
                idempotency_key,
                metadata,
            }),
            EventBody::PeriodReset {
                period,
                expired,
                plan,
                allocation,
            } => R::PeriodReset(PeriodResetRecord {
                period,
                expired: expired.get(),
                plan,
                allocation: allocation.get(),
            }),
            EventBody::PlanChanged {
                from,
                to,
                immediate,
                effective_at,
                granted,
                idempotency_key,
            } => R::PlanChanged(PlanChangedRecord {
                from,
                to,
                immediate,
                effective_at: effective_at.millis(),
                granted: granted.get(),
                idempotency_key,
            }),
            EventBody::Purchased {
                pack,
                credits,
                price_cents,
                payment_ref,
            } => R::Purchased(PurchasedRecord {
                pack,
                credits: credits.get(),
                price_cents,
                payment_ref,
            }),
            EventBody::Granted {
                bucket,
                credits,
                reason,
                idempotency_key,
            } => R::Granted(GrantedRecord {
                bucket: BucketRecord::from(bucket),
                credits: credits.get(),
                reason,
                idempotency_key,
            }),
            EventBody::HoldPlaced {
                hold_id,
                operation,
                quantity,
                credits,
                taken,
                expires_at,
                idempotency_key,
            } => R::HoldPlaced(HoldPlacedRecord {
                hold_id,
                operation,
                quantity,
                credits: credits.get(),
                taken: BucketsRecord::from(&taken),
                expires_at: expires_at.millis(),
                idempotency_key,
            }),
            EventBody::HoldCaptured {
                hold_id,
                operation,
                quantity,
                spent,
                returned,
                expired,
                idempotency_key,
            } => R::HoldCaptured(HoldCapturedRecordV2 {
                hold_id,
                operation,
                quantity,
                spent: BucketsRecord::from(&spent),
                returned: BucketsRecord::from(&returned),
                expired: expired.get(),
                idempotency_key: optional_key_to_record(idempotency_key),
            }),
            EventBody::HoldReleased {
                hold_id,
                returned,
                expired,
                reason,
                idempotency_key,
            } => R::HoldReleased(HoldReleasedRecord {
                hold_id,
                returned: BucketsRecord::from(&returned),
                expired: expired.get(),
                reason: ReleaseReasonRecord::from(reason),
                idempotency_key: optional_key_to_record(idempotency_key),
            }),
        }
    }
}

impl From<EventBodyRecordV2> for EventBody {
    fn from(r: EventBodyRecordV2) -> Self {
        use EventBodyRecordV2 as R;
        match r {
            R::Created(r) => EventBody::Created {
                id: r.id,
                plan: r.plan,
                anchor: Ts(r.anchor),
                period: r.period,
                free: Credits(r.free),
                monthly: Credits(r.monthly),
            },
            R::Debited(r) => EventBody::Debited {
                operation: r.operation,
                quantity: r.quantity,
                credits: Credits(r.credits),
                taken: Buckets::from(r.taken),
                idempotency_key: r.idempotency_key,
                metadata: r.metadata,
            },
            R::PeriodReset(r) => EventBody::PeriodReset {
                period: r.period,
                expired: Credits(r.expired),
                plan: r.plan,
                allocation: Credits(r.allocation),
            },
            R::PlanChanged(r) => EventBody::PlanChanged {
                from: r.from,
                to: r.to,
                immediate: r.immediate,
                effective_at: Ts(r.effective_at),
                granted: Credits(r.granted),
                idempotency_key: r.idempotency_key,
            },
            R::Purchased(r) => EventBody::Purchased {
                pack: r.pack,
                credits: Credits(r.credits),
                price_cents: r.price_cents,
                payment_ref: r.payment_ref,
            },
            R::Granted(r) => EventBody::Granted {
                bucket: Bucket::from(r.bucket),
                credits: Credits(r.credits),
                reason: r.reason,
                idempotency_key: r.idempotency_key,
            },
            R::HoldPlaced(r) => EventBody::HoldPlaced {
                hold_id: r.hold_id,
                operation: r.operation,
                quantity: r.quantity,
                credits: Credits(r.credits),
                taken: Buckets::from(r.taken),
                expires_at: Ts(r.expires_at),
                idempotency_key: r.idempotency_key,
            },
            R::HoldCaptured(r) => EventBody::HoldCaptured {
                hold_id: r.hold_id,
                operation: r.operation,
                quantity: r.quantity,
                spent: Buckets::from(r.spent),
                returned: Buckets::from(r.returned),
                expired: Credits(r.expired),
                idempotency_key: optional_key_from_record(r.idempotency_key),
            },
            R::HoldReleased(r) => EventBody::HoldReleased {
                hold_id: r.hold_id,
                returned: Buckets::from(r.returned),
                expired: Credits(r.expired),
                reason: ReleaseReason::from(r.reason),
                idempotency_key: optional_key_from_record(r.idempotency_key),
            },
        }
    }
}

/// An account's state, version 1: the snapshot (`S‖account`) and the base snapshot
/// (`B‖account`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecordV1 {
    pub id: String,
    pub created_at: i64,
    pub plan: String,
    pub pending_plan: Option<String>,
    pub anchor: i64,
    pub period: i64,
    pub balances: BucketsRecord,
    pub holds: BTreeMap<u64, HoldRecord>,
    pub next_hold_id: u64,
    pub totals: TotalsRecord,
    pub period_budget: u64,
    pub alerts_fired: u128,
    pub seq: u64,
    pub usage: UsageRecord,
}

impl Record for AccountRecordV1 {}

impl From<&Account> for AccountRecordV1 {
    fn from(a: &Account) -> Self {
        AccountRecordV1 {
            id: a.id.clone(),
            created_at: a.created_at.millis(),
            plan: a.plan.clone(),
            pending_plan: a.pending_plan.clone(),
            anchor: a.anchor.millis(),
            period: a.period,
            balances: BucketsRecord::from(&a.balances),
            holds: a
                .holds
                .iter()
                .map(|(id, h)| (*id, HoldRecord::from(h)))
                .collect(),
            next_hold_id: a.next_hold_id,
            totals: TotalsRecord::from(&a.totals),
            period_budget: a.period_budget.get(),
            alerts_fired: a.alerts_fired,
            seq: a.seq,
            usage: UsageRecord::from(&a.usage),
        }
    }
}

impl From<AccountRecordV1> for Account {
    fn from(r: AccountRecordV1) -> Self {
        Account {
            id: r.id,
            created_at: Ts(r.created_at),
            plan: r.plan,
            pending_plan: r.pending_plan,
            anchor: Ts(r.anchor),
            period: r.period,
            balances: Buckets::from(r.balances),
            holds: r
                .holds
                .into_iter()
                .map(|(id, h)| (id, Hold::from(h)))
                .collect(),
            next_hold_id: r.next_hold_id,
            totals: Totals::from(r.totals),
            period_budget: Credits(r.period_budget),
            alerts_fired: r.alerts_fired,
            seq: r.seq,
            usage: Usage::from(r.usage),
        }
    }
}

/// An open hold inside an account record (`Hold`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: u64,
    pub operation: String,
    pub quantity: u32,
    pub credits: u64,
    pub taken: BucketsRecord,
    pub period: i64,
    pub placed_at: i64,
    pub expires_at: i64,
}

impl From<&Hold> for HoldRecord {
    fn from(h: &Hold) -> Self {
        HoldRecord {
            id: h.id,
            operation: h.operation.clone(),
            quantity: h.quantity,
            credits: h.credits.get(),
            taken: BucketsRecord::from(&h.taken),
            period: h.period,
            placed_at: h.placed_at.millis(),
            expires_at: h.expires_at.millis(),
        }
    }
}

impl From<HoldRecord> for Hold {
    fn from(r: HoldRecord) -> Self {
        Hold {
            id: r.id,
            operation: r.operation,
            quantity: r.quantity,
            credits: Credits(r.credits),
            taken: Buckets::from(r.taken),
            period: r.period,
            placed_at: Ts(r.placed_at),
            expires_at: Ts(r.expires_at),
        }
    }
}

/// An account's lifetime totals (`account::Totals`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsRecord {
    pub granted: u64,
    pub debited: u64,
    pub expired: u64,
}

impl From<&Totals> for TotalsRecord {
    fn from(t: &Totals) -> Self {
        TotalsRecord {
            granted: t.granted.get(),
            debited: t.debited.get(),
            expired: t.expired.get(),
        }
    }
}

impl From<TotalsRecord> for Totals {
    fn from(r: TotalsRecord) -> Self {
        Totals {
            granted: Credits(r.granted),
            debited: Credits(r.debited),
            expired: Credits(r.expired),
        }
    }
}

/// An account's usage rollups (`usage::Usage`): day index → operation → usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub days: BTreeMap<i64, BTreeMap<String, UsageCellRecord>>,
    pub period_credits: u64,
    pub last_period_credits: Option<u64>,
}

/// What one operation consumed on one day (`usage::UsageCell`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCellRecord {
    pub count: u64,
    pub credits: u64,
}

impl From<&Usage> for UsageRecord {
    fn from(u: &Usage) -> Self {
        let cell = |c: &UsageCell| UsageCellRecord {
            count: c.count,
            credits: c.credits.get(),
        };
        UsageRecord {
            days: u
                .days
                .iter()
                .map(|(day, ops)| {
                    (
                        *day,
                        ops.iter().map(|(k, c)| (k.clone(), cell(c))).collect(),
                    )
                })
                .collect(),
            period_credits: u.period_credits.get(),
            last_period_credits: u.last_period_credits.map(Credits::get),
        }
    }
}

impl From<UsageRecord> for Usage {
    fn from(r: UsageRecord) -> Self {
        let cell = |c: UsageCellRecord| UsageCell {
            count: c.count,
            credits: Credits(c.credits),
        };
        Usage {
            days: r
                .days
                .into_iter()
                .map(|(day, ops)| (day, ops.into_iter().map(|(k, c)| (k, cell(c))).collect()))
                .collect(),
            period_credits: Credits(r.period_credits),
            last_period_credits: r.last_period_credits.map(Credits),
        }
    }
}

/// What an idempotency key is bound to (`IdemRecord`), version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecordV1 {
    pub fingerprint: [u8; 16],
    pub seq: u64,
    pub at: i64,
}

impl Record for IdemRecordV1 {}

impl From<&IdemRecord> for IdemRecordV1 {
    fn from(r: &IdemRecord) -> Self {
        IdemRecordV1 {
            fingerprint: r.fingerprint,
            seq: r.seq,
            at: r.at.millis(),
        }
    }
}

impl From<IdemRecordV1> for IdemRecord {
    fn from(r: IdemRecordV1) -> Self {
        IdemRecord {
            fingerprint: r.fingerprint,
            seq: r.seq,
            at: Ts(r.at),
        }
    }
}

/// One entry of the notification feed (`FeedEntry`), version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntryRecordV1 {
    pub id: u64,
    pub account: String,
    pub seq: u64,
    pub at: i64,
    pub notice: NoticeRecord,
    pub balances: BucketsRecord,
    pub held: u64,
}

impl Record for FeedEntryRecordV1 {}

impl From<&FeedEntry> for FeedEntryRecordV1 {
    fn from(e: &FeedEntry) -> Self {
        FeedEntryRecordV1 {
            id: e.id,
            account: e.account.clone(),
            seq: e.seq,
            at: e.at.millis(),
            notice: NoticeRecord::from(e.notice),
            balances: BucketsRecord::from(&e.balances),
            held: e.held.get(),
        }
    }
}

impl From<FeedEntryRecordV1> for FeedEntry {
    fn from(r: FeedEntryRecordV1) -> Self {
        FeedEntry {
            id: r.id,
            account: r.account,
            seq: r.seq,
            at: Ts(r.at),
            notice: Notice::from(r.notice),
            balances: Buckets::from(r.balances),
            held: Credits(r.held),
        }
    }
}

/// What the feed announces (`Notice`), variant for variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeRecord {
    Low { threshold: u8 },
    Exhausted,
    Replenished,
    PeriodReset,
    PlanChanged,
    PurchaseCompleted,
    HoldExpired,
}

impl From<Notice> for NoticeRecord {
    fn from(n: Notice) -> Self {
        match n {
            Notice::Low { threshold } => NoticeRecord::Low { threshold },
            Notice::Exhausted => NoticeRecord::Exhausted,
            Notice::Replenished => NoticeRecord::Replenished,
            Notice::PeriodReset => NoticeRecord::PeriodReset,
            Notice::PlanChanged => NoticeRecord::PlanChanged,
            Notice::PurchaseCompleted => NoticeRecord::PurchaseCompleted,
            Notice::HoldExpired => NoticeRecord::HoldExpired,
        }
    }
}

impl From<NoticeRecord> for Notice {
    fn from(r: NoticeRecord) -> Self {
        match r {
            NoticeRecord::Low { threshold } => Notice::Low { threshold },
            NoticeRecord::Exhausted => Notice::Exhausted,
            NoticeRecord::Replenished => Notice::Replenished,
            NoticeRecord::PeriodReset => Notice::PeriodReset,
            NoticeRecord::PlanChanged => Notice::PlanChanged,
            NoticeRecord::PurchaseCompleted => Notice::PurchaseCompleted,
            NoticeRecord::HoldExpired => Notice::HoldExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};

    fn b(monthly: u64, free: u64, packs: u64) -> Buckets {
        Buckets {
            monthly: Credits(monthly),
            free: Credits(free),
            packs: Credits(packs),
        }
    }

    /// One event of every kind, with every field away from its default.
    fn events() -> Vec<Event> {
        let bodies = vec![
            EventBody::Created {
                id: "acct-1".into(),
                plan: "growth".into(),
                anchor: Ts(1_764_547_200_000),
                period: -1,
                free: Credits(50),
                monthly: Credits(200),
            },
            EventBody::Debited {
                operation: "face_generation".into(),
                quantity: 3,
                credits: Credits(15),
                taken: b(10, 5, 0),
                idempotency_key: "job-17".into(),
                metadata: vec![("job".into(), "17".into()), ("model".into(), "v2".into())],
            },
            EventBody::PeriodReset {
                period: 7,
                expired: Credits(33),
                plan: "starter".into(),
                allocation: Credits(50),
            },
            EventBody::PlanChanged {
                from: "growth".into(),
                to: "agency".into(),
                immediate: true,
                effective_at: Ts(1_764_600_000_123),
                granted: Credits(300),
                idempotency_key: "up-1".into(),
            },
            EventBody::Purchased {
                pack: "pack_1000".into(),
                credits: Credits(1000),
                price_cents: 6000,
                payment_ref: "ch_42".into(),
            },
            EventBody::Granted {
                bucket: Bucket::Free,
                credits: Credits(7),
                reason: "support".into(),
                idempotency_key: "g-1".into(),
            },
            EventBody::HoldPlaced {
                hold_id: 4,
                operation: "video_generation".into(),
                quantity: 2,
                credits: Credits(16),
                taken: b(0, 6, 10),
                expires_at: Ts(1_764_600_900_000),
                idempotency_key: "h-4".into(),
            },
            EventBody::HoldCaptured {
                hold_id: 4,
                operation: "video_generation".into(),
                quantity: 2,
                spent: b(0, 6, 4),
                returned: b(0, 0, 5),
                expired: Credits(1),
                idempotency_key: Some("c-4".into()),
            },
            EventBody::HoldReleased {
                hold_id: 5,
                returned: b(0, 2, 0),
                expired: Credits(3),
                reason: ReleaseReason::Expired,
                idempotency_key: None,
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                seq: 1 + i as u64 * 100,
                at: Ts(1_764_547_200_000 + i as i64 * 3_600_000),
                body,
                after: b(150 + i as u64, 50, 1000),
                held_after: Credits(16 * i as u64),
                alerts: AlertChange {
                    fired: if i % 2 == 0 { 1 << 25 } else { 0 },
                    rearmed: if i % 3 == 0 { (1 << 10) | 1 } else { 0 },
                },
            })
            .collect()
    }

    /// An account with open holds, a pending plan and usage rollups.
    fn account() -> Account {
        let hold = |id: u64, period: i64| Hold {
            id,
            operation: "sample_image".into(),
            quantity: 4,
            credits: Credits(12),
            taken: b(2, 10, 0),
            period,
            placed_at: Ts(1_764_547_300_000),
            expires_at: Ts(1_764_548_200_000),
        };
        let mut usage = Usage::default();
        usage.record(Ts(1_764_547_200_000), "sample_image", 4, Credits(12));
        usage.record(Ts(1_764_547_200_000), "face_generation", 1, Credits(5));
        usage.record(Ts(1_764_633_600_000), "sample_image", 1, Credits(3));
        usage.period_ended();
        usage.record(Ts(1_764_720_000_000), "caption_generation", 9, Credits(9));
        Account {
            id: "acct-1".into(),
            created_at: Ts(1_764_547_200_000),
            plan: "growth".into(),
            pending_plan: Some("starter".into()),
            anchor: Ts(1_764_547_200_000),
            period: 2,
            balances: b(120, 30, 1000),
            holds: [(3, hold(3, 1)), (9, hold(9, 2))].into_iter().collect(),
            next_hold_id: 10,
            totals: Totals {
                granted: Credits(1500),
                debited: Credits(300),
                expired: Credits(26),
            },
            period_budget: Credits(1250),
            alerts_fired: (1 << 25) | 1,
            seq: 812,
            usage,
        }
    }

    fn feed_entries() -> Vec<FeedEntry> {
        [
            Notice::Low { threshold: 25 },
            Notice::Exhausted,
            Notice::Replenished,
            Notice::PeriodReset,
            Notice::PlanChanged,
            Notice::PurchaseCompleted,
            Notice::HoldExpired,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, notice)| FeedEntry {
            id: 1000 + i as u64,
            account: "acct-1".into(),
            seq: 40 + i as u64,
            at: Ts(1_764_547_200_000 + i as i64),
            notice,
            balances: b(1, 2, 3 + i as u64),
            held: Credits(i as u64),
        })
        .collect()
    }

    fn idem() -> IdemRecord {
        IdemRecord {
            fingerprint: *b"0123456789abcdef",
            seq: 812,
            at: Ts(1_764_547_200_000),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Whole records (version byte, postcard, CRC32) as the daemon wrote them before these
    // types existed, when the domain types were serialized by their own serde derives:
    // the values above, in order. A record type's bytes never change; a new layout is a
    // new type and version.
    const EVENTS: [&str; 9] = [
        "02018090acf3da660006616363742d310667726f7774688090acf3da660132c801960132e807008080801081084e254e4f",
        "026580cae3f6da66010f666163655f67656e65726174696f6e030f0a0500066a6f622d313702036a6f62023137056d6f64656c027632970132e807100000f307ee0c",
        "02c90180849bfada66020e21077374617274657232980132e80720808080100007701da9",
        "02ad0280bed2fdda66030667726f777468066167656e637901f6b9d9a5db66ac020475702d31990132e80730008108bd8d9e05",
        "02910380f88981db6604097061636b5f31303030e807f02e0563685f34329a0132e8074080808010000b7b6257",
        "02f50380b2c184db6605010707737570706f727403672d319b0132e8075000005500ac73",
        "02d90480ecf887db66060410766964656f5f67656e65726174696f6e021000060ac0a6c7a6db6603682d349c0132e807608080801081086e0a21fc",
        "02bd0580a6b08bdb66070410766964656f5f67656e65726174696f6e020006040000050103632d349d0132e80770000057430ec3",
        "02a10680e0e78edb6608050002000301009e0132e80780018080801000cf5d7dff",
    ];
    const ACCOUNT: &str = "0106616363742d318090acf3da660667726f7774680107737461727465728090acf3da6604781ee8070203030c73616d706c655f696d616765040c020a0002c0aab8f3da668099a6f4da6609090c73616d706c655f696d616765040c020a0004c0aab8f3da668099a6f4da660adc0bac021ae20981808010ac06038ebf02020f666163655f67656e65726174696f6e01050c73616d706c655f696d616765040c90bf02010c73616d706c655f696d616765010392bf02011263617074696f6e5f67656e65726174696f6e0909090114b5039dd6";
    const FEED: [&str; 7] = [
        "01e80706616363742d31288090acf3da66001901020300d8039da6",
        "01e90706616363742d31298290acf3da6601010204018097f260",
        "01ea0706616363742d312a8490acf3da660201020502fb177543",
        "01eb0706616363742d312b8690acf3da6603010206032e2b2c7e",
        "01ec0706616363742d312c8890acf3da6604010207040d177a04",
        "01ed0706616363742d312d8a90acf3da660501020805d4649695",
        "01ee0706616363742d312e8c90acf3da660601020906afe411b6",
    ];
    const IDEM: &str = "0130313233343536373839616263646566ac068090acf3da665cf31df8";

    /// `value` encodes through its record `R` to exactly `pinned`, and `pinned` decodes
    /// back to `value`.
    fn same_bytes<R, T>(value: &T, pinned: &str)
    where
        R: Record + for<'a> From<&'a T> + Into<T>,
        T: PartialEq + std::fmt::Debug,
    {
        assert_eq!(hex(&encode(&R::from(value))), pinned, "{value:?}");
        let back: T = decode::<R>(b"k", &unhex(pinned)).unwrap().into();
        assert_eq!(&back, value);
    }

    #[test]
    fn every_record_type_keeps_the_bytes_written_before_it() {
        for (ev, pinned) in events().iter().zip(EVENTS) {
            same_bytes::<EventRecordV2, _>(ev, pinned);
        }
        same_bytes::<AccountRecordV1, _>(&account(), ACCOUNT);
        for (e, pinned) in feed_entries().iter().zip(FEED) {
            same_bytes::<FeedEntryRecordV1, _>(e, pinned);
        }
        same_bytes::<IdemRecordV1, _>(&idem(), IDEM);
    }
}
