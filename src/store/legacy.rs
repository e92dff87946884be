//! Record layouts of earlier releases, kept so their data still opens, each with its
//! conversion to today's type. A type here is never written, only read.
//!
//! - Events v1 (release 0.1.0): a capture did not name its hold's operation and quantity.
//!   Such captures read back with an empty operation and quantity 0; the ledger then
//!   leaves both out of the entry.

use serde::Deserialize;

use crate::domain::{AlertChange, Bucket, Buckets, Credits, Event, EventBody, ReleaseReason, Ts};

#[derive(Deserialize)]
pub struct EventV1 {
    seq: u64,
    at: Ts,
    body: EventBodyV1,
    after: Buckets,
    held_after: Credits,
    alerts: AlertChange,
}

/// Variant for variant (postcard names variants by their index), as 0.1.0 wrote it.
#[derive(Deserialize)]
enum EventBodyV1 {
    Created {
        id: String,
        plan: String,
        anchor: Ts,
        period: i64,
        free: Credits,
        monthly: Credits,
    },
    Debited {
        operation: String,
        quantity: u32,
        credits: Credits,
        taken: Buckets,
        idempotency_key: String,
        metadata: Vec<(String, String)>,
    },
    PeriodReset {
        period: i64,
        expired: Credits,
        plan: String,
        allocation: Credits,
    },
    PlanChanged {
        from: String,
        to: String,
        immediate: bool,
        effective_at: Ts,
        granted: Credits,
        idempotency_key: String,
    },
    Purchased {
        pack: String,
        credits: Credits,
        price_cents: u64,
        payment_ref: String,
    },
    Granted {
        bucket: Bucket,
        credits: Credits,
        reason: String,
        idempotency_key: String,
    },
    HoldPlaced {
        hold_id: u64,
        operation: String,
        quantity: u32,
        credits: Credits,
        taken: Buckets,
        expires_at: Ts,
        idempotency_key: String,
    },
    HoldCaptured {
        hold_id: u64,
        spent: Buckets,
        returned: Buckets,
        expired: Credits,
        idempotency_key: String,
    },
    HoldReleased {
        hold_id: u64,
        returned: Buckets,
        expired: Credits,
        reason: ReleaseReason,
        idempotency_key: String,
    },
}

impl From<EventV1> for Event {
    fn from(v: EventV1) -> Event {
        use EventBodyV1 as B;
        let body = match v.body {
            B::Created {
                id,
                plan,
                anchor,
                period,
                free,
                monthly,
            } => EventBody::Created {
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
            } => EventBody::Debited {
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
            } => EventBody::PeriodReset {
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
            } => EventBody::PlanChanged {
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
            } => EventBody::Purchased {
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
            } => EventBody::Granted {
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
            } => EventBody::HoldPlaced {
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
            } => EventBody::HoldCaptured {
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
            } => EventBody::HoldReleased {
                hold_id,
                returned,
                expired,
                reason,
                idempotency_key,
            },
        };
        Event {
            seq: v.seq,
            at: v.at,
            body,
            after: v.after,
            held_after: v.held_after,
            alerts: v.alerts,
        }
    }
}
