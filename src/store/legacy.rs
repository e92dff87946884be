//! Record layouts of earlier releases, kept so their data still opens, each with its
//! conversion to today's record (`records.rs`). A type here is never written, only read.
//!
//! - Events v1 (release 0.1.0): a capture did not name its hold's operation and quantity.
//!   Such captures read back with an empty operation and quantity 0; the ledger then
//!   leaves both out of the entry.

use serde::Deserialize;

use super::records::{
    AlertChangeRecord, BucketRecord, BucketsRecord, EventBodyRecordV2, EventRecordV2,
    ReleaseReasonRecord,
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
    Created {
        id: String,
        plan: String,
        anchor: i64,
        period: i64,
        free: u64,
        monthly: u64,
    },
    Debited {
        operation: String,
        quantity: u32,
        credits: u64,
        taken: BucketsRecord,
        idempotency_key: String,
        metadata: Vec<(String, String)>,
    },
    PeriodReset {
        period: i64,
        expired: u64,
        plan: String,
        allocation: u64,
    },
    PlanChanged {
        from: String,
        to: String,
        immediate: bool,
        effective_at: i64,
        granted: u64,
        idempotency_key: String,
    },
    Purchased {
        pack: String,
        credits: u64,
        price_cents: u64,
        payment_ref: String,
    },
    Granted {
        bucket: BucketRecord,
        credits: u64,
        reason: String,
        idempotency_key: String,
    },
    HoldPlaced {
        hold_id: u64,
        operation: String,
        quantity: u32,
        credits: u64,
        taken: BucketsRecord,
        expires_at: i64,
        idempotency_key: String,
    },
    HoldCaptured {
        hold_id: u64,
        spent: BucketsRecord,
        returned: BucketsRecord,
        expired: u64,
        idempotency_key: String,
    },
    HoldReleased {
        hold_id: u64,
        returned: BucketsRecord,
        expired: u64,
        reason: ReleaseReasonRecord,
        idempotency_key: String,
    },
}

impl From<EventV1> for EventRecordV2 {
    fn from(v: EventV1) -> EventRecordV2 {
        use EventBodyV1 as B;
        let body = match v.body {
            B::Created {
                id,
                plan,
                anchor,
                period,
                free,
                monthly,
            } => EventBodyRecordV2::Created {
                id,
                plan,
                anchor,
                period,
                free,
                monthly,
            },
            B::Debited {
                operation,
                quantity,
                credits,
                taken,
                idempotency_key,
                metadata,
            } => EventBodyRecordV2::Debited {
                operation,
                quantity,
                credits,
                taken,
                idempotency_key,
                metadata,
            },
            B::PeriodReset {
                period,
                expired,
                plan,
                allocation,
            } => EventBodyRecordV2::PeriodReset {
                period,
                expired,
                plan,
                allocation,
            },
            B::PlanChanged {
                from,
                to,
                immediate,
                effective_at,
                granted,
                idempotency_key,
            } => EventBodyRecordV2::PlanChanged {
                from,
                to,
                immediate,
                effective_at,
                granted,
                idempotency_key,
            },
            B::Purchased {
                pack,
                credits,
                price_cents,
                payment_ref,
            } => EventBodyRecordV2::Purchased {
                pack,
                credits,
                price_cents,
                payment_ref,
            },
            B::Granted {
                bucket,
                credits,
                reason,
                idempotency_key,
            } => EventBodyRecordV2::Granted {
                bucket,
                credits,
                reason,
                idempotency_key,
            },
            B::HoldPlaced {
                hold_id,
                operation,
                quantity,
                credits,
                taken,
                expires_at,
                idempotency_key,
            } => EventBodyRecordV2::HoldPlaced {
                hold_id,
                operation,
                quantity,
                credits,
                taken,
                expires_at,
                idempotency_key,
            },
            B::HoldCaptured {
                hold_id,
                spent,
                returned,
                expired,
                idempotency_key,
            } => EventBodyRecordV2::HoldCaptured {
                hold_id,
                operation: String::new(),
                quantity: 0,
                spent,
                returned,
                expired,
                idempotency_key,
            },
            B::HoldReleased {
                hold_id,
                returned,
                expired,
                reason,
                idempotency_key,
            } => EventBodyRecordV2::HoldReleased {
                hold_id,
                returned,
                expired,
                reason,
                idempotency_key,
            },
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
