//! Events: what happened to an account, one per mutation. The account's event log is the
//! write-ahead log and the usage history at once, so every event carries what the ledger
//! shows (the balances after it) and what the feed announces (the alerts it fired).

use super::alerts::AlertChange;
use super::credits::{Bucket, Buckets, Credits};
use super::time::Ts;

/// One recorded mutation of one account. `seq` starts at 1 and has no gaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub at: Ts,
    pub body: EventBody,
    /// Balances right after this event; replay asserts it reaches the same numbers.
    pub after: Buckets,
    pub held_after: Credits,
    pub alerts: AlertChange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The client released it.
    Released,
    /// Its TTL ran out.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventBody {
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
    /// The period `period` started at `Event::at` (the boundary instant). What was left of
    /// `monthly` expired; the plan's allocation (of `plan`, which may be a pending
    /// downgrade taking effect) was granted.
    PeriodReset {
        period: i64,
        expired: Credits,
        plan: String,
        allocation: Credits,
    },
    PlanChanged {
        from: String,
        to: String,
        /// An upgrade (or a return to the current plan) takes effect now; a downgrade at
        /// the next period start.
        immediate: bool,
        /// When the new plan applies: now, or the next period start.
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
        /// The hold's operation and quantity: a capture is where they are spent. Empty and
        /// 0 in captures recorded before events named them (`store/legacy.rs`).
        operation: String,
        quantity: u32,
        /// Spent, by bucket (expiring-first credits are spent first).
        spent: Buckets,
        returned: Buckets,
        expired: Credits,
        /// A capture may come without a key.
        idempotency_key: Option<String>,
    },
    HoldReleased {
        hold_id: u64,
        returned: Buckets,
        expired: Credits,
        reason: ReleaseReason,
        /// A release may come without a key; an expiry never has one.
        idempotency_key: Option<String>,
    },
}

impl EventBody {
    /// The ledger's name for this kind of entry.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Created { .. } => "account_created",
            EventBody::Debited { .. } => "debit",
            EventBody::PeriodReset { .. } => "reset",
            EventBody::PlanChanged { .. } => "plan_change",
            EventBody::Purchased { .. } => "purchase",
            EventBody::Granted { .. } => "grant",
            EventBody::HoldPlaced { .. } => "hold",
            EventBody::HoldCaptured { .. } => "capture",
            EventBody::HoldReleased { .. } => "release",
        }
    }

    /// Whether it adds credits to the account (creation, purchase, grant, an upgrade's
    /// difference, a reset's allocation): only such a rise re-arms low-balance thresholds
    /// above 0. Credits coming back from a hold are not added credits.
    pub fn adds_credits(&self) -> bool {
        match self {
            EventBody::Created { .. }
            | EventBody::PeriodReset { .. }
            | EventBody::Purchased { .. }
            | EventBody::Granted { .. } => true,
            EventBody::PlanChanged { granted, .. } => !granted.is_zero(),
            EventBody::Debited { .. }
            | EventBody::HoldPlaced { .. }
            | EventBody::HoldCaptured { .. }
            | EventBody::HoldReleased { .. } => false,
        }
    }

    /// The idempotency key the client sent with it, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            EventBody::Debited {
                idempotency_key, ..
            }
            | EventBody::PlanChanged {
                idempotency_key, ..
            }
            | EventBody::Granted {
                idempotency_key, ..
            }
            | EventBody::HoldPlaced {
                idempotency_key, ..
            } => Some(idempotency_key),
            EventBody::HoldCaptured {
                idempotency_key, ..
            }
            | EventBody::HoldReleased {
                idempotency_key, ..
            } => idempotency_key.as_deref(),
            EventBody::Purchased { payment_ref, .. } => Some(payment_ref),
            EventBody::Created { .. } | EventBody::PeriodReset { .. } => None,
        }
    }
}

/// What the durable feed announces about an event (`SPEC.md` section 3, `/v1/events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Low { threshold: u8 },
    Exhausted,
    Replenished,
    PeriodReset,
    PlanChanged,
    PurchaseCompleted,
    HoldExpired,
}

impl Notice {
    /// Every `type_name`, for validating subscriptions.
    pub const TYPES: [&'static str; 7] = [
        "balance.low",
        "balance.exhausted",
        "balance.replenished",
        "period.reset",
        "plan.changed",
        "purchase.completed",
        "hold.expired",
    ];

    pub fn type_name(self) -> &'static str {
        match self {
            Notice::Low { .. } => "balance.low",
            Notice::Exhausted => "balance.exhausted",
            Notice::Replenished => "balance.replenished",
            Notice::PeriodReset => "period.reset",
            Notice::PlanChanged => "plan.changed",
            Notice::PurchaseCompleted => "purchase.completed",
            Notice::HoldExpired => "hold.expired",
        }
    }
}

impl Event {
    /// The notices this event puts on the feed, in a fixed order.
    pub fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        match &self.body {
            EventBody::PeriodReset { .. } => out.push(Notice::PeriodReset),
            EventBody::PlanChanged { .. } => out.push(Notice::PlanChanged),
            EventBody::Purchased { .. } => out.push(Notice::PurchaseCompleted),
            EventBody::HoldReleased {
                reason: ReleaseReason::Expired,
                ..
            } => out.push(Notice::HoldExpired),
            _ => {}
        }
        for t in self.alerts.fired_thresholds() {
            out.push(if t == 0 {
                Notice::Exhausted
            } else {
                Notice::Low { threshold: t }
            });
        }
        if self.alerts.replenished() {
            out.push(Notice::Replenished);
        }
        out
    }
}
