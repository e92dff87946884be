//! An account's books: `decide` (command → event body or refusal, all the rules),
//! `record` (turn a decided body into the next event, computing alerts and balances) and
//! `apply` (event → new state, no rules, cannot fail). Replay uses `apply` only.

use std::collections::BTreeMap;

use super::alerts::{self, AlertChange};
use super::credits::{Bucket, Buckets, Credits};
use super::event::{Event, EventBody, ReleaseReason};
use super::pricing::{Pricing, FREE_PLAN};
use super::time::{add_months, period_index, Ts};
use super::usage::Usage;

/// Credits reserved by an open hold, and where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: u64,
    pub operation: String,
    pub quantity: u32,
    pub credits: Credits,
    pub taken: Buckets,
    /// The period whose monthly credits it holds: if that period has ended when they come
    /// back, they expire instead.
    pub period: i64,
    pub placed_at: Ts,
    pub expires_at: Ts,
}

/// Lifetime totals, for `granted = debited + expired + held + available`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub granted: Credits,
    pub debited: Credits,
    pub expired: Credits,
}

/// One account's whole state. Snapshots are this struct; so is the result of a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub created_at: Ts,
    pub plan: String,
    pub pending_plan: Option<String>,
    pub anchor: Ts,
    /// Index of the current period (period k starts at anchor + k months).
    pub period: i64,
    pub balances: Buckets,
    pub holds: BTreeMap<u64, Hold>,
    pub next_hold_id: u64,
    pub totals: Totals,
    /// Available right after the period started + every credit added during it.
    pub period_budget: Credits,
    /// Thresholds fired and not re-armed, as a bit set over 0..=100.
    pub alerts_fired: u128,
    /// Sequence number of the last event applied (0 before the first).
    pub seq: u64,
    /// Consumption per day and operation, and per billing period (`usage.rs`).
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Debit {
        operation: String,
        quantity: u32,
        metadata: Vec<(String, String)>,
        idempotency_key: String,
    },
    PlaceHold {
        operation: String,
        quantity: u32,
        ttl_ms: i64,
        idempotency_key: String,
    },
    /// Captures and releases may come without an idempotency key.
    Capture {
        hold_id: u64,
        credits: Option<Credits>,
        idempotency_key: Option<String>,
    },
    Release {
        hold_id: u64,
        idempotency_key: Option<String>,
    },
    ChangePlan {
        plan: String,
        idempotency_key: String,
    },
    Purchase {
        pack: String,
        payment_ref: String,
    },
    Grant {
        bucket: Bucket,
        credits: Credits,
        reason: String,
        idempotency_key: String,
    },
}

/// A business refusal: a value, not an error. The request changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    InsufficientCredits {
        required: Credits,
        available: Credits,
    },
    UnknownOperation(String),
    UnknownPlan(String),
    UnknownPack(String),
    /// Checked arithmetic refused: the named field would overflow the books.
    Overflow {
        field: &'static str,
    },
    PlanUnchanged(String),
    HoldNotFound(u64),
    HoldClosed(u64),
    CaptureExceedsHold {
        held: Credits,
        requested: Credits,
    },
    TooManyHolds {
        max: usize,
    },
}

impl Account {
    /// The `Created` event of a new account: the free tier and the plan's first allocation.
    pub fn create(
        id: &str,
        plan: &str,
        anchor: Ts,
        now: Ts,
        pricing: &Pricing,
    ) -> Result<Event, Refusal> {
        let monthly = pricing
            .allocation(plan)
            .ok_or_else(|| Refusal::UnknownPlan(plan.to_string()))?;
        let body = EventBody::Created {
            id: id.to_string(),
            plan: plan.to_string(),
            anchor,
            period: period_index(anchor, now),
            free: pricing.free_tier,
            monthly,
        };
        monthly
            .checked_add(pricing.free_tier)
            .ok_or(Refusal::Overflow { field: "plan" })?;
        let mut acct = Account::empty(id);
        Ok(acct.record(body, now, &pricing.thresholds))
    }

    /// The state before the first event: what replay starts from.
    pub fn empty(id: &str) -> Account {
        Account {
            id: id.to_string(),
            created_at: Ts(0),
            plan: String::new(),
            pending_plan: None,
            anchor: Ts(0),
            period: 0,
            balances: Buckets::default(),
            holds: BTreeMap::new(),
            next_hold_id: 1,
            totals: Totals::default(),
            period_budget: Credits::ZERO,
            alerts_fired: 0,
            seq: 0,
            usage: Usage::default(),
        }
    }

    pub fn available(&self) -> Credits {
        self.balances.total()
    }
    pub fn held(&self) -> Credits {
        self.holds
            .values()
            .fold(Credits::ZERO, |s, h| s.plus(h.credits))
    }
    pub fn period_start(&self) -> Ts {
        add_months(self.anchor, self.period)
    }
    pub fn next_reset_at(&self) -> Ts {
        add_months(self.anchor, self.period + 1)
    }
    /// At zero, generation pauses: debits are refused, reads work.
    pub fn paused(&self) -> bool {
        self.available().is_zero()
    }

    /// `granted = debited + expired + held + available`, or a description of the mismatch.
    pub fn check_books(&self) -> Result<(), String> {
        let t = self.totals;
        let rhs = t.debited.get() as u128
            + t.expired.get() as u128
            + self.held().get() as u128
            + self.available().get() as u128;
        if t.granted.get() as u128 == rhs {
            Ok(())
        } else {
            Err(format!(
                "account {}: granted {} != debited {} + expired {} + held {} + available {}",
                self.id,
                t.granted,
                t.debited,
                t.expired,
                self.held(),
                self.available()
            ))
        }
    }

    /// The next time-driven event due at or before `now`, if any: a period rolling over
    /// (recorded at its boundary instant) or a hold running out, whichever comes first.
    pub fn next_due(&self, now: Ts, pricing: &Pricing) -> Option<(Ts, EventBody)> {
        let reset_at = self.next_reset_at();
        let expiry = self.holds.values().min_by_key(|h| (h.expires_at, h.id));
        match expiry {
            Some(h) if h.expires_at <= now && h.expires_at < reset_at => {
                let (returned, expired) = self.give_back(h, h.taken);
                Some((
                    h.expires_at,
                    EventBody::HoldReleased {
                        hold_id: h.id,
                        returned,
                        expired,
                        reason: ReleaseReason::Expired,
                        idempotency_key: None,
                    },
                ))
            }
            _ if reset_at <= now => {
                let plan = self
                    .pending_plan
                    .clone()
                    .unwrap_or_else(|| self.plan.clone());
                // A plan removed from the config after it was chosen keeps nothing: it
                // allocates 0 rather than refusing to roll the period over.
                let allocation = pricing.allocation(&plan).unwrap_or(Credits::ZERO);
                Some((
                    reset_at,
                    EventBody::PeriodReset {
                        period: self.period + 1,
                        expired: self.balances.monthly,
                        plan,
                        allocation,
                    },
                ))
            }
            _ => None,
        }
    }

    /// The earliest instant at which `next_due` will have something, for the actor's timer.
    pub fn next_wakeup(&self) -> Ts {
        let reset_at = self.next_reset_at();
        self.holds
            .values()
            .map(|h| h.expires_at)
            .min()
            .map_or(reset_at, |e| e.min(reset_at))
    }

    /// What returning `part` of a hold gives back to the buckets, and what expires: its
    /// monthly credits expire if their period has ended.
    fn give_back(&self, hold: &Hold, part: Buckets) -> (Buckets, Credits) {
        if hold.period == self.period {
            (part, Credits::ZERO)
        } else {
            (
                Buckets {
                    monthly: Credits::ZERO,
                    ..part
                },
                part.monthly,
            )
        }
    }

    /// All the rules. The account must be current (no `next_due` left at `now`).
    pub fn decide(&self, cmd: &Command, now: Ts, pricing: &Pricing) -> Result<EventBody, Refusal> {
        match cmd {
            Command::Debit {
                operation,
                quantity,
                metadata,
                idempotency_key,
            } => {
                let credits = self.cost(pricing, operation, *quantity)?;
                let taken = self.take(credits)?;
                Ok(EventBody::Debited {
                    operation: operation.clone(),
                    quantity: *quantity,
                    credits,
                    taken,
                    idempotency_key: idempotency_key.clone(),
                    metadata: metadata.clone(),
                })
            }
            Command::PlaceHold {
                operation,
                quantity,
                ttl_ms,
                idempotency_key,
            } => {
                let credits = self.cost(pricing, operation, *quantity)?;
                if self.holds.len() >= pricing.holds_open_max {
                    return Err(Refusal::TooManyHolds {
                        max: pricing.holds_open_max,
                    });
                }
                let taken = self.take(credits)?;
                Ok(EventBody::HoldPlaced {
                    hold_id: self.next_hold_id,
                    operation: operation.clone(),
                    quantity: *quantity,
                    credits,
                    taken,
                    expires_at: now.plus_millis(*ttl_ms),
                    idempotency_key: idempotency_key.clone(),
                })
            }
            Command::Capture {
                hold_id,
                credits,
                idempotency_key,
            } => {
                let hold = self.open_hold(*hold_id)?;
                let amount = credits.unwrap_or(hold.credits);
                if amount > hold.credits {
                    return Err(Refusal::CaptureExceedsHold {
                        held: hold.credits,
                        requested: amount,
                    });
                }
                let spent = hold.taken.plan_take(amount).expect("amount <= hold total");
                let mut rest = hold.taken;
                rest.sub(&spent);
                let (returned, expired) = self.give_back(hold, rest);
                Ok(EventBody::HoldCaptured {
                    hold_id: *hold_id,
                    operation: hold.operation.clone(),
                    quantity: hold.quantity,
                    spent,
                    returned,
                    expired,
                    idempotency_key: idempotency_key.clone(),
                })
            }
            Command::Release {
                hold_id,
                idempotency_key,
            } => {
                let hold = self.open_hold(*hold_id)?;
                let (returned, expired) = self.give_back(hold, hold.taken);
                Ok(EventBody::HoldReleased {
                    hold_id: *hold_id,
                    returned,
                    expired,
                    reason: ReleaseReason::Released,
                    idempotency_key: idempotency_key.clone(),
                })
            }
            Command::ChangePlan {
                plan,
                idempotency_key,
            } => {
                let new = pricing
                    .allocation(plan)
                    .ok_or_else(|| Refusal::UnknownPlan(plan.clone()))?;
                let old = pricing.allocation(&self.plan).unwrap_or(Credits::ZERO);
                if *plan == self.plan && self.pending_plan.is_none() {
                    return Err(Refusal::PlanUnchanged(plan.clone()));
                }
                // Back to the current plan cancels a pending change; a larger allocation
                // is an upgrade, effective now with the difference granted for this period.
                let immediate = *plan == self.plan || new > old;
                let granted = if immediate {
                    new.checked_sub(old).unwrap_or(Credits::ZERO)
                } else {
                    Credits::ZERO
                };
                let effective_at = if immediate { now } else { self.next_reset_at() };
                self.may_add(granted, "plan", pricing)?;
                Ok(EventBody::PlanChanged {
                    from: self.plan.clone(),
                    to: plan.clone(),
                    immediate,
                    effective_at,
                    granted,
                    idempotency_key: idempotency_key.clone(),
                })
            }
            Command::Purchase { pack, payment_ref } => {
                let p = pricing
                    .packs
                    .get(pack)
                    .ok_or_else(|| Refusal::UnknownPack(pack.clone()))?;
                self.may_add(p.credits, "pack", pricing)?;
                Ok(EventBody::Purchased {
                    pack: pack.clone(),
                    credits: p.credits,
                    price_cents: p.price_cents,
                    payment_ref: payment_ref.clone(),
                })
            }
            Command::Grant {
                bucket,
                credits,
                reason,
                idempotency_key,
            } => {
                self.may_add(*credits, "credits", pricing)?;
                Ok(EventBody::Granted {
                    bucket: *bucket,
                    credits: *credits,
                    reason: reason.clone(),
                    idempotency_key: idempotency_key.clone(),
                })
            }
        }
    }

    /// Whether `credits` may be added: every balance shown (available + held, the period
    /// budget) stays at most `Credits::MAX` with room left for the largest plan's
    /// allocation (a reset cannot be refused), and the lifetime total does not overflow.
    fn may_add(
        &self,
        credits: Credits,
        field: &'static str,
        pricing: &Pricing,
    ) -> Result<(), Refusal> {
        let room = pricing
            .plans
            .values()
            .max()
            .copied()
            .unwrap_or(Credits::ZERO);
        let bound = Credits::MAX.checked_sub(room).unwrap_or(Credits::ZERO);
        let within = |c: Option<Credits>| c.is_some_and(|c| c <= bound);
        let shown = self.available().checked_add(self.held());
        if within(shown.and_then(|s| s.checked_add(credits)))
            && within(self.period_budget.checked_add(credits))
            && self.totals.granted.checked_add(credits).is_some()
        {
            Ok(())
        } else {
            Err(Refusal::Overflow { field })
        }
    }

    fn cost(&self, pricing: &Pricing, operation: &str, quantity: u32) -> Result<Credits, Refusal> {
        let price = pricing
            .price(operation)
            .ok_or_else(|| Refusal::UnknownOperation(operation.to_string()))?;
        price
            .checked_mul(quantity as u64)
            .ok_or(Refusal::Overflow { field: "quantity" })
    }

    fn take(&self, credits: Credits) -> Result<Buckets, Refusal> {
        self.balances
            .plan_take(credits)
            .ok_or(Refusal::InsufficientCredits {
                required: credits,
                available: self.available(),
            })
    }

    fn open_hold(&self, hold_id: u64) -> Result<&Hold, Refusal> {
        match self.holds.get(&hold_id) {
            Some(h) => Ok(h),
            None if hold_id >= 1 && hold_id < self.next_hold_id => {
                Err(Refusal::HoldClosed(hold_id))
            }
            None => Err(Refusal::HoldNotFound(hold_id)),
        }
    }

    /// Turns a decided body into the next event and applies it: computes the balances
    /// after and the alerts crossed, so the event is self-describing for ledger and feed.
    pub fn record(&mut self, body: EventBody, at: Ts, thresholds: &[u8]) -> Event {
        self.apply_body(&body, at);
        let alerts = alerts::evaluate(
            self.alerts_fired,
            self.available(),
            self.period_budget,
            thresholds,
            body.adds_credits(),
        );
        self.apply_alerts(alerts);
        self.seq += 1;
        Event {
            seq: self.seq,
            at,
            body,
            after: self.balances,
            held_after: self.held(),
            alerts,
        }
    }

    /// Replays one recorded event. Panics on a gap in sequence numbers or a balance that
    /// does not match what was recorded: both are bugs or corruption, never business.
    pub fn apply(&mut self, ev: &Event) {
        assert_eq!(
            ev.seq,
            self.seq + 1,
            "invariant: account {} event sequence has a gap",
            self.id
        );
        self.apply_body(&ev.body, ev.at);
        self.apply_alerts(ev.alerts);
        self.seq = ev.seq;
        assert_eq!(
            self.balances, ev.after,
            "invariant: account {} seq {} replays to other balances",
            self.id, ev.seq
        );
    }

    fn apply_alerts(&mut self, change: AlertChange) {
        self.alerts_fired = (self.alerts_fired | change.fired) & !change.rearmed;
    }

    fn add_granted(&mut self, credits: Credits) {
        self.totals.granted = self.totals.granted.plus(credits);
        self.period_budget = self.period_budget.plus(credits);
    }

    fn apply_body(&mut self, body: &EventBody, at: Ts) {
        match body {
            EventBody::Created {
                id,
                plan,
                anchor,
                period,
                free,
                monthly,
            } => {
                assert_eq!(self.seq, 0, "invariant: Created is the first event");
                self.id = id.clone();
                self.created_at = at;
                self.plan = plan.clone();
                self.anchor = *anchor;
                self.period = *period;
                self.balances = Buckets {
                    monthly: *monthly,
                    free: *free,
                    packs: Credits::ZERO,
                };
                self.totals.granted = monthly.plus(*free);
                self.period_budget = self.totals.granted;
            }
            EventBody::Debited {
                operation,
                quantity,
                credits,
                taken,
                ..
            } => {
                assert_eq!(
                    taken.total(),
                    *credits,
                    "invariant: a debit takes exactly its credits"
                );
                self.balances.sub(taken);
                self.totals.debited = self.totals.debited.plus(*credits);
                self.usage.record(at, operation, *quantity as u64, *credits);
            }
            EventBody::PeriodReset {
                period,
                expired,
                plan,
                allocation,
            } => {
                assert_eq!(
                    *period,
                    self.period + 1,
                    "invariant: periods roll one at a time"
                );
                assert_eq!(
                    *expired, self.balances.monthly,
                    "invariant: a reset expires all of monthly"
                );
                self.totals.expired = self.totals.expired.plus(*expired);
                self.usage.period_ended();
                self.balances.monthly = *allocation;
                self.totals.granted = self.totals.granted.plus(*allocation);
                self.period = *period;
                self.plan = plan.clone();
                self.pending_plan = None;
                self.period_budget = self.available();
            }
            EventBody::PlanChanged {
                to,
                immediate,
                granted,
                ..
            } => {
                if *immediate {
                    self.plan = to.clone();
                    self.pending_plan = None;
                    self.balances.monthly = self.balances.monthly.plus(*granted);
                    self.add_granted(*granted);
                } else {
                    self.pending_plan = Some(to.clone());
                }
            }
            EventBody::Purchased { credits, .. } => {
                self.balances.packs = self.balances.packs.plus(*credits);
                self.add_granted(*credits);
            }
            EventBody::Granted {
                bucket, credits, ..
            } => {
                let v = self.balances.get(*bucket).plus(*credits);
                *self.balances.get_mut(*bucket) = v;
                self.add_granted(*credits);
            }
            EventBody::HoldPlaced {
                hold_id,
                operation,
                quantity,
                credits,
                taken,
                expires_at,
                ..
            } => {
                assert_eq!(
                    taken.total(),
                    *credits,
                    "invariant: a hold takes exactly its credits"
                );
                assert_eq!(
                    *hold_id, self.next_hold_id,
                    "invariant: hold ids are sequential"
                );
                self.balances.sub(taken);
                self.holds.insert(
                    *hold_id,
                    Hold {
                        id: *hold_id,
                        operation: operation.clone(),
                        quantity: *quantity,
                        credits: *credits,
                        taken: *taken,
                        period: self.period,
                        placed_at: at,
                        expires_at: *expires_at,
                    },
                );
                self.next_hold_id += 1;
            }
            EventBody::HoldCaptured {
                hold_id,
                spent,
                returned,
                expired,
                ..
            } => {
                let hold = self.close_hold(*hold_id, spent.total(), returned, *expired);
                // A capture is usage of the hold's operation, on the day it is captured;
                // capturing nothing is no usage (it is a release).
                if !spent.total().is_zero() {
                    self.usage
                        .record(at, &hold.operation, hold.quantity as u64, spent.total());
                }
            }
            EventBody::HoldReleased {
                hold_id,
                returned,
                expired,
                ..
            } => {
                self.close_hold(*hold_id, Credits::ZERO, returned, *expired);
            }
        }
    }

    /// Closes an open hold: `spent` is debited, `returned` goes back to the buckets,
    /// `expired` is gone; together they are exactly what the hold held.
    fn close_hold(
        &mut self,
        hold_id: u64,
        spent: Credits,
        returned: &Buckets,
        expired: Credits,
    ) -> Hold {
        let hold = self
            .holds
            .remove(&hold_id)
            .expect("invariant: a closed hold was open");
        assert_eq!(
            spent.plus(returned.total()).plus(expired),
            hold.credits,
            "invariant: closing hold {hold_id} accounts for all it held"
        );
        self.totals.debited = self.totals.debited.plus(spent);
        self.balances.add(returned);
        self.totals.expired = self.totals.expired.plus(expired);
        hold
    }
}

/// Plans ordered by allocation: the smallest one whose allocation covers `credits`.
pub fn smallest_plan_covering(pricing: &Pricing, credits: Credits) -> Option<String> {
    pricing
        .plans
        .iter()
        .filter(|(_, alloc)| **alloc >= credits)
        .min_by_key(|(name, alloc)| (**alloc, name.as_str() != FREE_PLAN))
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
pub(crate) mod tests;
