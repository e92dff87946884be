//! Record layouts of earlier releases, kept so their data still opens, each with its
//! conversion to today's record (`records.rs`). A type here is never written, only read.
//!
//! - Events v1 (release 0.1.0): a capture did not name its hold's operation and quantity.
//!   Such captures read back with an empty operation and quantity 0; the ledger then
//!   leaves both out of the entry. Every other variant is laid out as in v2, so it reads
//!   through the v2 variant's own struct.

use serde::Deserialize;

use super::codec::{Record, FORMAT_V1, FORMAT_V2};

use super::records::{
    AlertChangeRecord, BucketsRecord, CreatedRecord, DebitedRecord, EventBodyRecordV2,
    EventRecordV2, GrantedRecord, HoldCapturedRecordV2, HoldPlacedRecord, HoldReleasedRecord,
    PeriodResetRecord, PlanChangedRecord, PurchasedRecord,
};

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

/// Events are written in version 2; version 1 (release 0.1.0) reads through `EventV1`.
/// Here rather than beside `EventRecordV2`, so that the records import nothing of the
/// layouts they replaced.
impl Record for EventRecordV2 {
    const VERSION: u8 = FORMAT_V2;
    fn decode_older(version: u8, bytes: &[u8]) -> Option<postcard::Result<Self>> {
        (version == FORMAT_V1)
            .then(|| postcard::from_bytes::<EventV1>(bytes).map(EventRecordV2::from))
    }
}
