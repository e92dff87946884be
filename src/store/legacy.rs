//! Record layouts of earlier releases, kept so their data still opens, each with its
//! conversion to today's record (`records.rs`). A type here is never written, only read
//! (so it derives `Deserialize` only), and never edited.
//!
//! - Events v1 (release 0.1.0): a capture did not name its hold's operation and quantity.
//!   Such captures read back with an empty operation and quantity 0; the ledger then
//!   leaves both out of the entry. Every other variant is laid out as in v2, so it reads
//!   through the v2 variant's own struct. v1 reads through v2.
//! - Events v2: three buckets (no promo), what a debit or hold took by bucket only (no
//!   promo blocks), no members, no promo expiry on grants (keys of captures and
//!   releases `""` for none), alerts without the forecast alert, and none of the kinds
//!   of the SPEC's second edition. They read as v3 with promo 0, no blocks, no member.
//! - Accounts v1, feed entries v1, book totals v1: three buckets; accounts without promo
//!   blocks, members, alert settings, refunds, refunded total, hourly or member usage.
//!   They read as v2 with those empty.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::codec::{Record, FORMAT_V1, FORMAT_V2, FORMAT_V3};
use super::records::{
    AccountRecordV2, AlertChangeRecordV2, AlertSettingsRecord, BucketRecord, BucketsRecordV2,
    CreatedRecord, DebitedRecordV3, EventBodyRecordV3, EventRecordV3, FeedEntryRecordV2,
    ForecastSettingRecord, GrantedRecordV3, HoldCapturedRecordV3, HoldPlacedRecordV3, HoldRecordV2,
    HoldReleasedRecordV3, NoticeRecord, PeriodResetRecord, PlanChangedRecord, PurchasedRecord,
    ReleaseReasonRecord, TakenRecord, TotalsRecordV2, UsageCellRecord, UsageRecordV2,
};
use super::BookTotals;

/// Reads the postcard bytes of the older layout `Old` as today's `New`.
fn read<Old: DeserializeOwned, New: From<Old>>(bytes: &[u8]) -> postcard::Result<New> {
    postcard::from_bytes::<Old>(bytes).map(New::from)
}

/// Events are written in version 3; versions 1 and 2 read through `EventRecordV2`.
/// Here rather than beside `EventRecordV3`, so that the records import nothing of the
/// layouts they replaced (the same for the other types below).
impl Record for EventRecordV3 {
    const VERSION: u8 = FORMAT_V3;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        match version {
            FORMAT_V1 => Some(read::<EventV1, EventRecordV2>(bytes).map(EventRecordV3::from)),
            FORMAT_V2 => Some(read::<EventRecordV2, _>(bytes)),
            _ => None,
        }
    }
}

impl Record for AccountRecordV2 {
    const VERSION: u8 = FORMAT_V2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        (version == FORMAT_V1).then(|| read::<AccountRecordV1, _>(bytes))
    }
}

impl Record for FeedEntryRecordV2 {
    const VERSION: u8 = FORMAT_V2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        (version == FORMAT_V1).then(|| read::<FeedEntryRecordV1, _>(bytes))
    }
}

/// The book totals are the store's own type, in memory and on disk (`totals.rs`).
impl Record for BookTotals {
    const VERSION: u8 = FORMAT_V2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        (version == FORMAT_V1).then(|| read::<BookTotalsV1, _>(bytes))
    }
}

/// Credits per bucket, version 1 (no promo).
#[derive(Clone, Copy, Deserialize)]
pub struct BucketsRecord {
    monthly: u64,
    free: u64,
    packs: u64,
}

impl From<BucketsRecord> for BucketsRecordV2 {
    fn from(b: BucketsRecord) -> Self {
        BucketsRecordV2 {
            monthly: b.monthly,
            promo: 0,
            free: b.free,
            packs: b.packs,
        }
    }
}

/// What was taken, by bucket: no promo block.
impl From<BucketsRecord> for TakenRecord {
    fn from(b: BucketsRecord) -> Self {
        TakenRecord {
            monthly: b.monthly,
            free: b.free,
            packs: b.packs,
            blocks: Vec::new(),
        }
    }
}

/// The thresholds one event fired and re-armed, version 1 (no forecast alert).
#[derive(Clone, Copy, Deserialize)]
pub struct AlertChangeRecord {
    fired: u128,
    rearmed: u128,
}

impl From<AlertChangeRecord> for AlertChangeRecordV2 {
    fn from(a: AlertChangeRecord) -> Self {
        AlertChangeRecordV2 {
            fired: a.fired,
            rearmed: a.rearmed,
            forecast_fired: None,
            forecast_rearmed: false,
        }
    }
}

/// An optional idempotency key as events v1 and v2 stored it: `""` for none (keys are
/// never empty).
fn optional_key(key: String) -> Option<String> {
    (!key.is_empty()).then_some(key)
}

#[derive(Deserialize)]
pub struct EventV1 {
    seq: u64,
    at: i64,
    body: EventBodyV1,
    after: BucketsRecord,
    held_after: u64,
    alerts: AlertChangeRecord,
}

/// Variant for variant (postcard names variants by their index), as 0.1.0 wrote it.
#[derive(Deserialize)]
enum EventBodyV1 {
    Created(CreatedRecord),
    Debited(DebitedRecord),
    PeriodReset(PeriodResetRecord),
    PlanChanged(PlanChangedRecord),
    Purchased(PurchasedRecord),
    Granted(GrantedRecord),
    HoldPlaced(HoldPlacedRecord),
    HoldCaptured(HoldCapturedV1),
    HoldReleased(HoldReleasedRecord),
}

#[derive(Deserialize)]
struct HoldCapturedV1 {
    hold_id: u64,
    spent: BucketsRecord,
    returned: BucketsRecord,
    expired: u64,
    idempotency_key: String,
}

impl From<EventV1> for EventRecordV2 {
    fn from(v: EventV1) -> EventRecordV2 {
        use EventBodyRecordV2 as V2;
        use EventBodyV1 as V1;
        let body = match v.body {
            V1::Created(r) => V2::Created(r),
            V1::Debited(r) => V2::Debited(r),
            V1::PeriodReset(r) => V2::PeriodReset(r),
            V1::PlanChanged(r) => V2::PlanChanged(r),
            V1::Purchased(r) => V2::Purchased(r),
            V1::Granted(r) => V2::Granted(r),
            V1::HoldPlaced(r) => V2::HoldPlaced(r),
            V1::HoldCaptured(r) => V2::HoldCaptured(HoldCapturedRecordV2 {
                hold_id: r.hold_id,
                operation: String::new(),
                quantity: 0,
                spent: r.spent,
                returned: r.returned,
                expired: r.expired,
                idempotency_key: r.idempotency_key,
            }),
            V1::HoldReleased(r) => V2::HoldReleased(r),
        };
        EventRecordV2 {
            seq: v.seq,
            at: v.at,
            body,
            after: v.after,
            held_after: v.held_after,
            alerts: v.alerts,
        }
    }
}

/// An event, version 2 (since captures name their hold's operation and quantity).
#[derive(Deserialize)]
pub struct EventRecordV2 {
    seq: u64,
    at: i64,
    body: EventBodyRecordV2,
    after: BucketsRecord,
    held_after: u64,
    alerts: AlertChangeRecord,
}

#[derive(Deserialize)]
enum EventBodyRecordV2 {
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

#[derive(Deserialize)]
struct DebitedRecord {
    operation: String,
    quantity: u32,
    credits: u64,
    taken: BucketsRecord,
    idempotency_key: String,
    metadata: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct GrantedRecord {
    bucket: BucketRecord,
    credits: u64,
    reason: String,
    idempotency_key: String,
}

#[derive(Deserialize)]
struct HoldPlacedRecord {
    hold_id: u64,
    operation: String,
    quantity: u32,
    credits: u64,
    taken: BucketsRecord,
    expires_at: i64,
    idempotency_key: String,
}

#[derive(Deserialize)]
struct HoldCapturedRecordV2 {
    hold_id: u64,
    operation: String,
    quantity: u32,
    spent: BucketsRecord,
    returned: BucketsRecord,
    expired: u64,
    idempotency_key: String,
}

#[derive(Deserialize)]
struct HoldReleasedRecord {
    hold_id: u64,
    returned: BucketsRecord,
    expired: u64,
    reason: ReleaseReasonRecord,
    idempotency_key: String,
}

impl From<EventRecordV2> for EventRecordV3 {
    fn from(v: EventRecordV2) -> EventRecordV3 {
        use EventBodyRecordV2 as V2;
        use EventBodyRecordV3 as V3;
        let body = match v.body {
            V2::Created(r) => V3::Created(r),
            V2::Debited(r) => V3::Debited(DebitedRecordV3 {
                operation: r.operation,
                quantity: r.quantity,
                credits: r.credits,
                taken: r.taken.into(),
                idempotency_key: r.idempotency_key,
                metadata: r.metadata,
                member: None,
            }),
            V2::PeriodReset(r) => V3::PeriodReset(r),
            V2::PlanChanged(r) => V3::PlanChanged(r),
            V2::Purchased(r) => V3::Purchased(r),
            V2::Granted(r) => V3::Granted(GrantedRecordV3 {
                bucket: r.bucket,
                credits: r.credits,
                reason: r.reason,
                idempotency_key: r.idempotency_key,
                expires_at: None,
            }),
            V2::HoldPlaced(r) => V3::HoldPlaced(HoldPlacedRecordV3 {
                hold_id: r.hold_id,
                operation: r.operation,
                quantity: r.quantity,
                credits: r.credits,
                taken: r.taken.into(),
                expires_at: r.expires_at,
                idempotency_key: r.idempotency_key,
                member: None,
            }),
            V2::HoldCaptured(r) => V3::HoldCaptured(HoldCapturedRecordV3 {
                hold_id: r.hold_id,
                operation: r.operation,
                quantity: r.quantity,
                spent: r.spent.into(),
                returned: r.returned.into(),
                expired: r.expired,
                idempotency_key: optional_key(r.idempotency_key),
            }),
            V2::HoldReleased(r) => V3::HoldReleased(HoldReleasedRecordV3 {
                hold_id: r.hold_id,
                returned: r.returned.into(),
                expired: r.expired,
                reason: r.reason,
                idempotency_key: optional_key(r.idempotency_key),
            }),
        };
        EventRecordV3 {
            seq: v.seq,
            at: v.at,
            body,
            after: v.after.into(),
            held_after: v.held_after,
            alerts: v.alerts.into(),
        }
    }
}

/// An account's state, version 1.
#[derive(Deserialize)]
pub struct AccountRecordV1 {
    id: String,
    created_at: i64,
    plan: String,
    pending_plan: Option<String>,
    anchor: i64,
    period: i64,
    balances: BucketsRecord,
    holds: BTreeMap<u64, HoldRecord>,
    next_hold_id: u64,
    totals: TotalsRecord,
    period_budget: u64,
    alerts_fired: u128,
    seq: u64,
    usage: UsageRecord,
}

#[derive(Deserialize)]
struct HoldRecord {
    id: u64,
    operation: String,
    quantity: u32,
    credits: u64,
    taken: BucketsRecord,
    period: i64,
    placed_at: i64,
    expires_at: i64,
}

#[derive(Deserialize)]
struct TotalsRecord {
    granted: u64,
    debited: u64,
    expired: u64,
}

#[derive(Deserialize)]
struct UsageRecord {
    days: BTreeMap<i64, BTreeMap<String, UsageCellRecord>>,
    period_credits: u64,
    last_period_credits: Option<u64>,
}

impl From<AccountRecordV1> for AccountRecordV2 {
    fn from(v: AccountRecordV1) -> AccountRecordV2 {
        let hold = |h: HoldRecord| HoldRecordV2 {
            id: h.id,
            operation: h.operation,
            quantity: h.quantity,
            credits: h.credits,
            taken: h.taken.into(),
            period: h.period,
            placed_at: h.placed_at,
            expires_at: h.expires_at,
            member: None,
        };
        AccountRecordV2 {
            id: v.id,
            created_at: v.created_at,
            plan: v.plan,
            pending_plan: v.pending_plan,
            anchor: v.anchor,
            period: v.period,
            balances: v.balances.into(),
            holds: v.holds.into_iter().map(|(id, h)| (id, hold(h))).collect(),
            next_hold_id: v.next_hold_id,
            totals: TotalsRecordV2 {
                granted: v.totals.granted,
                debited: v.totals.debited,
                expired: v.totals.expired,
                refunded: 0,
            },
            period_budget: v.period_budget,
            alerts_fired: v.alerts_fired,
            seq: v.seq,
            usage: UsageRecordV2 {
                days: v.usage.days,
                period_credits: v.usage.period_credits,
                last_period_credits: v.usage.last_period_credits,
                hours: BTreeMap::new(),
                members: BTreeMap::new(),
            },
            promo: BTreeMap::new(),
            members: BTreeMap::new(),
            alert_settings: AlertSettingsRecord {
                thresholds: None,
                forecast: ForecastSettingRecord::Config,
            },
            forecast_fired: false,
            refunds: BTreeMap::new(),
        }
    }
}

/// One entry of the notification feed, version 1. Its notices are those `NoticeRecord`
/// had then (`ForecastLow` was appended since).
#[derive(Deserialize)]
pub struct FeedEntryRecordV1 {
    id: u64,
    account: String,
    seq: u64,
    at: i64,
    notice: NoticeRecord,
    balances: BucketsRecord,
    held: u64,
}

impl From<FeedEntryRecordV1> for FeedEntryRecordV2 {
    fn from(v: FeedEntryRecordV1) -> FeedEntryRecordV2 {
        FeedEntryRecordV2 {
            id: v.id,
            account: v.account,
            seq: v.seq,
            at: v.at,
            notice: v.notice,
            balances: v.balances.into(),
            held: v.held,
        }
    }
}

/// The book totals, version 1 (no promo).
#[derive(Deserialize)]
pub struct BookTotalsV1 {
    monthly: i128,
    free: i128,
    packs: i128,
    held: i128,
    accounts: i128,
    paused: i128,
}

impl From<BookTotalsV1> for BookTotals {
    fn from(v: BookTotalsV1) -> BookTotals {
        BookTotals {
            monthly: v.monthly,
            promo: 0,
            free: v.free,
            packs: v.packs,
            held: v.held,
            accounts: v.accounts,
            paused: v.paused,
        }
    }
}
