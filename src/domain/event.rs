//! Events: what happened to an account, one per mutation. The account's event log is the
//! write-ahead log and the usage history at once, so every event carries what the ledger
//! shows (the balances after it) and what the feed announces (the alerts it fired).

use super::alerts::AlertChange;
use super::credits::{Bucket, Buckets, Credits, Taken};
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
        taken: Taken,
        idempotency_key: String,
        metadata: Vec<(String, String)>,
        /// The member it was debited for, if any.
        member: Option<String>,
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
    /// An operator's grant. A `promo` grant opens a block of its own, with the event's
    /// seq as its id, that expires at `expires_at` (which only promo grants have).
    Granted {
        bucket: Bucket,
        credits: Credits,
        reason: String,
        idempotency_key: String,
        expires_at: Option<Ts>,
    },
    HoldPlaced {
        hold_id: u64,
        operation: String,
        quantity: u32,
        credits: Credits,
        taken: Taken,
        expires_at: Ts,
        idempotency_key: String,
        member: Option<String>,
    },
    HoldCaptured {
        hold_id: u64,
        /// The hold's operation and quantity: a capture is where they are spent. Empty and
        /// 0 in captures recorded before events named them (`store/legacy.rs`).
        operation: String,
        quantity: u32,
        /// Spent, by bucket (expiring-first credits are spent first).
        spent: Taken,
        returned: Taken,
        expired: Credits,
        /// A capture may come without a key.
        idempotency_key: Option<String>,
    },
    HoldReleased {
        hold_id: u64,
        returned: Taken,
        expired: Credits,
        reason: ReleaseReason,
        /// A release may come without a key; an expiry never has one.
        idempotency_key: Option<String>,
    },
    /// Credits of the debit recorded at `debit_seq` (under `debit_key`) given back:
    /// `part` is what is refunded, by the source it was taken from; `returned` what goes
    /// back to those sources (the rest expires: `monthly` of an ended period, an expired
    /// promo block).
    Refunded {
        debit_key: String,
        debit_seq: u64,
        /// When the debit was made, and its operation: usage is counted net of refunds.
        debit_at: Ts,
        operation: String,
        part: Taken,
        returned: Taken,
        reason: String,
        idempotency_key: String,
        /// The debit's member, and how much of its use this period the refund gives back
        /// (0 when the debit was in an earlier period or the member is gone).
        member: Option<String>,
        member_returned: Credits,
    },
    /// What was left of promo block `grant_id` expired at `Event::at`, its `expires_at`.
    PromoExpired { grant_id: u64, expired: Credits },
    /// The account's own alert settings (`None`: the config's).
    AlertsSet {
        thresholds: Option<Vec<u8>>,
        /// The thresholds in force once set (the config's when `thresholds` is `None`):
        /// alerts of thresholds not among them are forgotten.
        in_effect: Vec<u8>,
        forecast: ForecastSetting,
        idempotency_key: String,
    },
    /// A member created (`created`) or its cap changed.
    MemberSet {
        member: String,
        cap: Option<Credits>,
        created: bool,
        idempotency_key: String,
    },
    MemberRemoved {
        member: String,
        idempotency_key: String,
    },
}

/// Whether and when the forecast alert watches an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForecastSetting {
    /// `[alerts] forecast_hours` from the config.
    Config,
    Off,
    Hours(u32),
}

impl EventBody {
    /// Credits a refund gives back, and what of them expires instead.
    pub fn refund_credits(&self) -> Option<(Credits, Credits)> {
        match self {
            EventBody::Refunded { part, returned, .. } => {
                Some((part.total(), part.total().minus(returned.total())))
            }
            _ => None,
        }
    }

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
            EventBody::Refunded { .. } => "refund",
            EventBody::PromoExpired { .. } => "promo_expired",
            EventBody::AlertsSet { .. } => "alerts_set",
            EventBody::MemberSet { .. } => "member_set",
            EventBody::MemberRemoved { .. } => "member_removed",
        }
    }

    /// Whether it adds credits to the account (creation, purchase, grant, an upgrade's
    /// difference, a reset's allocation, a refund): only such a rise re-arms low-balance
    /// thresholds above 0. Credits coming back from a hold are not added credits.
    pub fn adds_credits(&self) -> bool {
        match self {
            EventBody::Created { .. }
            | EventBody::PeriodReset { .. }
            | EventBody::Purchased { .. }
            | EventBody::Granted { .. } => true,
            EventBody::PlanChanged { granted, .. } => !granted.is_zero(),
            EventBody::Refunded { returned, .. } => !returned.is_zero(),
            EventBody::Debited { .. }
            | EventBody::HoldPlaced { .. }
            | EventBody::HoldCaptured { .. }
            | EventBody::HoldReleased { .. }
            | EventBody::PromoExpired { .. }
            | EventBody::AlertsSet { .. }
            | EventBody::MemberSet { .. }
            | EventBody::MemberRemoved { .. } => false,
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
            }
            | EventBody::Refunded {
                idempotency_key, ..
            }
            | EventBody::AlertsSet {
                idempotency_key, ..
            }
            | EventBody::MemberSet {
                idempotency_key, ..
            }
            | EventBody::MemberRemoved {
                idempotency_key, ..
            } => Some(idempotency_key),
            EventBody::HoldCaptured {
                idempotency_key, ..
            }
            | EventBody::HoldReleased {
                idempotency_key, ..
            } => idempotency_key.as_deref(),
            EventBody::Purchased { payment_ref, .. } => Some(payment_ref),
            EventBody::Created { .. }
            | EventBody::PeriodReset { .. }
            | EventBody::PromoExpired { .. } => None,
        }
    }
}

/// What the durable feed announces about an event (`SPEC.md` section 3, `/v1/events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Low {
        threshold: u8,
    },
    Exhausted,
    Replenished,
    PeriodReset,
    PlanChanged,
    PurchaseCompleted,
    HoldExpired,
    /// At the last 24 hours' burn rate the account runs out at `projected_exhaustion_at`,
    /// within its `forecast_hours` and before its next reset.
    ForecastLow {
        projected_exhaustion_at: Ts,
    },
}

impl Notice {
    /// Every `type_name`, for validating subscriptions.
    pub const TYPES: [&'static str; 8] = [
        "balance.low",
        "balance.exhausted",
        "balance.replenished",
        "period.reset",
        "plan.changed",
        "purchase.completed",
        "hold.expired",
        "balance.forecast_low",
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
            Notice::ForecastLow { .. } => "balance.forecast_low",
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
        if let Some(at) = self.alerts.forecast_fired {
            out.push(Notice::ForecastLow {
                projected_exhaustion_at: at,
            });
        }
        out
    }
}
