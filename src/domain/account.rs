//! An account's books: `decide` (command → event body or refusal, all the rules),
//! `record` (turn a decided body into the next event, computing alerts and balances) and
//! `apply` (event → new state, no rules, cannot fail). Replay uses `apply` only.

use std::collections::BTreeMap;

use super::alerts::{self, AlertChange};
use super::credits::{BlockPart, Bucket, Buckets, Credits, Taken};
use super::event::{Event, EventBody, ForecastSetting, ReleaseReason};
use super::pricing::{Pricing, FREE_PLAN};
use super::time::{add_months, period_index, Ts};
use super::usage::{BurnRate, Usage, DAY_MS};

/// Credits reserved by an open hold, and where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: u64,
    pub operation: String,
    pub quantity: u32,
    pub credits: Credits,
    pub taken: Taken,
    /// The period whose monthly credits it holds: if that period has ended when they come
    /// back, they expire instead (as do credits of a promo block that has expired).
    pub period: i64,
    pub placed_at: Ts,
    pub expires_at: Ts,
    /// The member it was placed for: its use counts the hold until it is closed.
    pub member: Option<String>,
}

/// An open promo block: what is left of one promo grant. Blocks with nothing left are
/// dropped (a refund or a released hold may bring one back until it expires).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromoBlock {
    pub grant_id: u64,
    pub credits: Credits,
    pub expires_at: Ts,
}

/// A member of the account's pool: a character, brand or seat with its own cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Credits per billing period, or no cap.
    pub cap: Option<Credits>,
    /// Credits debited or held for it this period, net of refunds and releases.
    pub used: Credits,
}

/// The account's own alert settings (`None` and `Config`: the config's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    pub thresholds: Option<Vec<u8>>,
    pub forecast: ForecastSetting,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            thresholds: None,
            forecast: ForecastSetting::Config,
        }
    }
}

/// Lifetime totals, for `granted = debited − refunded + expired + held + available`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub granted: Credits,
    pub debited: Credits,
    pub expired: Credits,
    pub refunded: Credits,
}

/// A debit a refund names, as the log recorded it (the core finds it by its key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebitRef {
    pub seq: u64,
    pub at: Ts,
    pub operation: String,
    pub taken: Taken,
    pub member: Option<String>,
}

impl DebitRef {
    /// The debit an event records, if it is one.
    pub fn from_event(ev: &Event) -> Option<DebitRef> {
        match &ev.body {
            EventBody::Debited {
                operation,
                taken,
                member,
                ..
            } => Some(DebitRef {
                seq: ev.seq,
                at: ev.at,
                operation: operation.clone(),
                taken: taken.clone(),
                member: member.clone(),
            }),
            _ => None,
        }
    }
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
    /// Open promo blocks by grant id; `balances.promo` is the sum of their credits.
    pub promo: BTreeMap<u64, PromoBlock>,
    pub members: BTreeMap<String, Member>,
    pub alert_settings: AlertSettings,
    /// `balance.forecast_low` fired this period and has not re-armed.
    pub forecast_fired: bool,
    /// Debits refunded (in part or whole), by seq: what was refunded, source by source.
    pub refunds: BTreeMap<u64, Taken>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Debit {
        operation: String,
        quantity: u32,
        metadata: Vec<(String, String)>,
        idempotency_key: String,
        member: Option<String>,
    },
    PlaceHold {
        operation: String,
        quantity: u32,
        ttl_ms: i64,
        idempotency_key: String,
        member: Option<String>,
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
    /// `expires_at` is required for `promo` and refused for the other buckets (the HTTP
    /// layer checks both).
    Grant {
        bucket: Bucket,
        credits: Credits,
        reason: String,
        idempotency_key: String,
        expires_at: Option<Ts>,
    },
    /// `debit` is the debit found under `debit_key` (filled in by the account core before
    /// `decide`; `None`: there is none). It is not part of the request's fingerprint.
    Refund {
        debit_key: String,
        credits: Option<Credits>,
        reason: String,
        idempotency_key: String,
        debit: Option<Box<DebitRef>>,
    },
    SetAlerts {
        thresholds: Option<Vec<u8>>,
        forecast: ForecastSetting,
        idempotency_key: String,
    },
    SetMember {
        member: String,
        cap: Option<Credits>,
        idempotency_key: String,
    },
    RemoveMember {
        member: String,
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
    TooManyBlocks {
        max: usize,
    },
    TooManyMembers {
        max: usize,
    },
    /// A promo grant's `expires_at` is not in the future.
    ExpiryNotInFuture,
    /// A promo grant without `expires_at`, or another bucket's grant with one.
    ExpiryMismatch(Bucket),
    DebitNotFound(String),
    RefundExceedsDebit {
        refundable: Credits,
        requested: Credits,
    },
    MemberNotFound(String),
    MemberCapReached {
        cap: Credits,
        used: Credits,
        required: Credits,
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
        Ok(acct.record(body, now, pricing))
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
            promo: BTreeMap::new(),
            members: BTreeMap::new(),
            alert_settings: AlertSettings::default(),
            forecast_fired: false,
            refunds: BTreeMap::new(),
        }
    }

    /// The thresholds in force: the account's own, or the config's.
    pub fn thresholds<'a>(&'a self, pricing: &'a Pricing) -> &'a [u8] {
        self.alert_settings
            .thresholds
            .as_deref()
            .unwrap_or(&pricing.thresholds)
    }

    /// The forecast alert's horizon in force, in hours (`None`: off).
    pub fn forecast_hours(&self, pricing: &Pricing) -> Option<u32> {
        match self.alert_settings.forecast {
            ForecastSetting::Config => pricing.forecast_hours,
            ForecastSetting::Off => None,
            ForecastSetting::Hours(h) => Some(h),
        }
    }

    /// The spendable credits, source by source (the promo blocks one by one).
    fn spendable(&self) -> Taken {
        Taken {
            buckets: self.balances,
            blocks: self
                .promo
                .values()
                .map(|b| BlockPart {
                    grant_id: b.grant_id,
                    expires_at: b.expires_at,
                    credits: b.credits,
                })
                .collect(),
        }
    }

    /// The projected exhaustion instant at the last 24 hours' burn rate (`None`: no burn).
    pub fn projected_exhaustion_24h(&self, now: Ts) -> Option<Ts> {
        BurnRate {
            credits: self.usage.last_24h(now),
            window_ms: DAY_MS,
        }
        .exhaustion_at(now, self.available())
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

    /// `granted = debited − refunded + expired + held + available`, and `balances.promo`
    /// is the sum of the open blocks, each holding credits; or a description of the
    /// mismatch.
    pub fn check_books(&self) -> Result<(), String> {
        let t = self.totals;
        let rhs = t.debited.get() as i128 - t.refunded.get() as i128
            + t.expired.get() as i128
            + self.held().get() as i128
            + self.available().get() as i128;
        if t.granted.get() as i128 != rhs {
            return Err(format!(
                "account {}: granted {} != debited {} - refunded {} + expired {} + held {} + available {}",
                self.id,
                t.granted,
                t.debited,
                t.refunded,
                t.expired,
                self.held(),
                self.available()
            ));
        }
        let blocks = self
            .promo
            .values()
            .fold(Credits::ZERO, |s, b| s.plus(b.credits));
        if blocks != self.balances.promo || self.promo.values().any(|b| b.credits.is_zero()) {
            return Err(format!(
                "account {}: promo {} != the sum of its blocks {} (or a block is empty)",
                self.id, self.balances.promo, blocks
            ));
        }
        Ok(())
    }

    /// The next time-driven event due at or before `now`, if any: a period rolling over
    /// (recorded at its boundary instant), a promo block or a hold running out, whichever
    /// comes first (at the same instant: the reset, then blocks, then holds).
    pub fn next_due(&self, now: Ts, pricing: &Pricing) -> Option<(Ts, EventBody)> {
        let reset_at = self.next_reset_at();
        let hold = self.holds.values().min_by_key(|h| (h.expires_at, h.id));
        let block = self
            .promo
            .values()
            .min_by_key(|b| (b.expires_at, b.grant_id));
        let mut due: Vec<(Ts, u8)> = vec![(reset_at, 0)];
        if let Some(b) = block {
            due.push((b.expires_at, 1));
        }
        if let Some(h) = hold {
            due.push((h.expires_at, 2));
        }
        let (at, which) = due.into_iter().min()?;
        if at > now {
            return None;
        }
        Some(match which {
            0 => {
                let plan = self
                    .pending_plan
                    .clone()
                    .unwrap_or_else(|| self.plan.clone());
                // A plan removed from the config after it was chosen keeps nothing: it
                // allocates 0 rather than refusing to roll the period over.
                let allocation = pricing.allocation(&plan).unwrap_or(Credits::ZERO);
                (
                    reset_at,
                    EventBody::PeriodReset {
                        period: self.period + 1,
                        expired: self.balances.monthly,
                        plan,
                        allocation,
                    },
                )
            }
            1 => {
                let b = block.expect("a block is due");
                (
                    b.expires_at,
                    EventBody::PromoExpired {
                        grant_id: b.grant_id,
                        expired: b.credits,
                    },
                )
            }
            _ => {
                let h = hold.expect("a hold is due");
                let (returned, expired) = self.give_back(&h.taken, h.period, h.expires_at);
                (
                    h.expires_at,
                    EventBody::HoldReleased {
                        hold_id: h.id,
                        returned,
                        expired,
                        reason: ReleaseReason::Expired,
                        idempotency_key: None,
                    },
                )
            }
        })
    }

    /// The earliest instant at which `next_due` will have something, for the actor's timer.
    pub fn next_wakeup(&self) -> Ts {
        let reset_at = self.next_reset_at();
        let holds = self.holds.values().map(|h| h.expires_at);
        let blocks = self.promo.values().map(|b| b.expires_at);
        holds.chain(blocks).fold(reset_at, Ts::min)
    }

    /// What giving back `part` (credits taken in period `period`) at `at` returns to the
    /// sources, and what expires: monthly credits of an ended period, and credits of a
    /// promo block that has expired by `at`.
    fn give_back(&self, part: &Taken, period: i64, at: Ts) -> (Taken, Credits) {
        let mut returned = Taken::default();
        let mut expired = Credits::ZERO;
        if period == self.period {
            returned.add_bucket(Bucket::Monthly, part.buckets.monthly);
        } else {
            expired = expired.plus(part.buckets.monthly);
        }
        returned.add_bucket(Bucket::Free, part.buckets.free);
        returned.add_bucket(Bucket::Packs, part.buckets.packs);
        for b in &part.blocks {
            if at < b.expires_at {
                returned.add_block(*b);
            } else {
                expired = expired.plus(b.credits);
            }
        }
        (returned, expired)
    }

    /// The end of period `period` (when its monthly credits expire).
    fn period_end(&self, period: i64) -> Ts {
        add_months(self.anchor, period + 1)
    }

    /// All the rules. The account must be current (no `next_due` left at `now`).
    pub fn decide(&self, cmd: &Command, now: Ts, pricing: &Pricing) -> Result<EventBody, Refusal> {
        match cmd {
            Command::Debit {
                operation,
                quantity,
                metadata,
                idempotency_key,
                member,
            } => {
                let credits = self.cost(pricing, operation, *quantity)?;
                self.member_may_use(member.as_deref(), credits)?;
                let taken = self.take(credits)?;
                Ok(EventBody::Debited {
                    operation: operation.clone(),
                    quantity: *quantity,
                    credits,
                    taken,
                    idempotency_key: idempotency_key.clone(),
                    metadata: metadata.clone(),
                    member: member.clone(),
                })
            }
            Command::PlaceHold {
                operation,
                quantity,
                ttl_ms,
                idempotency_key,
                member,
            } => {
                let credits = self.cost(pricing, operation, *quantity)?;
                if self.holds.len() >= pricing.holds_open_max {
                    return Err(Refusal::TooManyHolds {
                        max: pricing.holds_open_max,
                    });
                }
                self.member_may_use(member.as_deref(), credits)?;
                let taken = self.take(credits)?;
                Ok(EventBody::HoldPlaced {
                    hold_id: self.next_hold_id,
                    operation: operation.clone(),
                    quantity: *quantity,
                    credits,
                    taken,
                    expires_at: now.plus_millis(*ttl_ms),
                    idempotency_key: idempotency_key.clone(),
                    member: member.clone(),
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
                let spent = hold
                    .taken
                    .take(amount, self.period_end(hold.period))
                    .expect("amount <= hold total");
                let rest = hold.taken.minus(&spent);
                let (returned, expired) = self.give_back(&rest, hold.period, now);
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
                let (returned, expired) = self.give_back(&hold.taken, hold.period, now);
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
                expires_at,
            } => {
                if (*bucket == Bucket::Promo) != expires_at.is_some() {
                    return Err(Refusal::ExpiryMismatch(*bucket));
                }
                if let Some(at) = expires_at {
                    if *at <= now {
                        return Err(Refusal::ExpiryNotInFuture);
                    }
                    if self.promo.len() >= pricing.promo_blocks_max {
                        return Err(Refusal::TooManyBlocks {
                            max: pricing.promo_blocks_max,
                        });
                    }
                }
                self.may_add(*credits, "credits", pricing)?;
                Ok(EventBody::Granted {
                    bucket: *bucket,
                    credits: *credits,
                    reason: reason.clone(),
                    idempotency_key: idempotency_key.clone(),
                    expires_at: *expires_at,
                })
            }
            Command::Refund {
                debit_key,
                credits,
                reason,
                idempotency_key,
                debit,
            } => {
                let debit = debit
                    .as_deref()
                    .ok_or_else(|| Refusal::DebitNotFound(debit_key.clone()))?;
                let refundable = match self.refunds.get(&debit.seq) {
                    Some(done) => debit.taken.minus(done),
                    None => debit.taken.clone(),
                };
                let amount = credits.unwrap_or(refundable.total());
                let debit_period = period_index(self.anchor, debit.at);
                let part = refundable
                    .take_last(amount, self.period_end(debit_period))
                    .filter(|p| !p.is_zero())
                    .ok_or(Refusal::RefundExceedsDebit {
                        refundable: refundable.total(),
                        requested: amount,
                    })?;
                let (returned, _) = self.give_back(&part, debit_period, now);
                self.may_add(returned.total(), "credits", pricing)?;
                let member_returned = match &debit.member {
                    Some(m) if debit_period == self.period => self
                        .members
                        .get(m)
                        .map_or(Credits::ZERO, |mm| mm.used.min(amount)),
                    _ => Credits::ZERO,
                };
                Ok(EventBody::Refunded {
                    debit_key: debit_key.clone(),
                    debit_seq: debit.seq,
                    debit_at: debit.at,
                    operation: debit.operation.clone(),
                    part,
                    returned,
                    reason: reason.clone(),
                    idempotency_key: idempotency_key.clone(),
                    member: debit.member.clone(),
                    member_returned,
                })
            }
            Command::SetAlerts {
                thresholds,
                forecast,
                idempotency_key,
            } => Ok(EventBody::AlertsSet {
                thresholds: thresholds.clone(),
                in_effect: thresholds
                    .clone()
                    .unwrap_or_else(|| pricing.thresholds.clone()),
                forecast: *forecast,
                idempotency_key: idempotency_key.clone(),
            }),
            Command::SetMember {
                member,
                cap,
                idempotency_key,
            } => {
                let created = !self.members.contains_key(member);
                if created && self.members.len() >= pricing.members_max {
                    return Err(Refusal::TooManyMembers {
                        max: pricing.members_max,
                    });
                }
                Ok(EventBody::MemberSet {
                    member: member.clone(),
                    cap: *cap,
                    created,
                    idempotency_key: idempotency_key.clone(),
                })
            }
            Command::RemoveMember {
                member,
                idempotency_key,
            } => {
                if !self.members.contains_key(member) {
                    return Err(Refusal::MemberNotFound(member.clone()));
                }
                Ok(EventBody::MemberRemoved {
                    member: member.clone(),
                    idempotency_key: idempotency_key.clone(),
                })
            }
        }
    }

    /// A debit or hold of `credits` for `member`: it must exist and stay within its cap.
    fn member_may_use(&self, member: Option<&str>, credits: Credits) -> Result<(), Refusal> {
        let Some(name) = member else {
            return Ok(());
        };
        let m = self
            .members
            .get(name)
            .ok_or_else(|| Refusal::MemberNotFound(name.to_string()))?;
        match m.cap {
            Some(cap) if m.used.checked_add(credits).map_or(true, |u| u > cap) => {
                Err(Refusal::MemberCapReached {
                    cap,
                    used: m.used,
                    required: credits,
                })
            }
            _ => Ok(()),
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

    fn take(&self, credits: Credits) -> Result<Taken, Refusal> {
        self.spendable()
            .take(credits, self.next_reset_at())
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
    /// after and the alerts crossed (with the account's thresholds, or the config's), so
    /// the event is self-describing for ledger and feed.
    pub fn record(&mut self, body: EventBody, at: Ts, pricing: &Pricing) -> Event {
        self.apply_body(&body, at);
        let mut alerts = alerts::evaluate(
            self.alerts_fired,
            self.available(),
            self.period_budget,
            self.thresholds(pricing),
            body.adds_credits(),
        );
        self.forecast_alert(&body, at, pricing, &mut alerts);
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

    /// `balance.forecast_low`: after a debit, when the projection at the last 24 hours'
    /// burn rate falls within the horizon and before the next reset, once per period;
    /// re-armed when the projection moves past twice the horizon (a reset re-arms it too,
    /// in `apply_body`).
    fn forecast_alert(&self, body: &EventBody, at: Ts, pricing: &Pricing, out: &mut AlertChange) {
        let Some(hours) = self.forecast_hours(pricing) else {
            return;
        };
        let horizon = hours as i64 * 3_600_000;
        // The projection is computed only where it decides something: a fired alert's
        // re-arm, or a debit's crossing.
        if self.forecast_fired {
            let projected = self.projected_exhaustion_24h(at);
            if projected.map_or(true, |p| p > at.plus_millis(2 * horizon)) {
                out.forecast_rearmed = true;
            }
        } else if let (EventBody::Debited { .. }, Some(p)) =
            (body, self.projected_exhaustion_24h(at))
        {
            if !self.available().is_zero()
                && p <= at.plus_millis(horizon)
                && p < self.next_reset_at()
            {
                out.forecast_fired = Some(p);
            }
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
        if change.forecast_fired.is_some() {
            self.forecast_fired = true;
        }
        if change.forecast_rearmed {
            self.forecast_fired = false;
        }
    }

    fn add_granted(&mut self, credits: Credits) {
        self.totals.granted = self.totals.granted.plus(credits);
        self.period_budget = self.period_budget.plus(credits);
    }

    /// Takes `t` out of the spendable sources (a block left empty is dropped).
    fn remove(&mut self, t: &Taken) {
        self.balances.sub(&t.buckets);
        for p in &t.blocks {
            let b = self
                .promo
                .get_mut(&p.grant_id)
                .expect("invariant: credits are taken from an open block");
            b.credits = b.credits.minus(p.credits);
            if b.credits.is_zero() {
                self.promo.remove(&p.grant_id);
            }
        }
    }

    /// Puts `t` back into its sources (a block emptied before its expiry opens again).
    fn restore(&mut self, t: &Taken) {
        self.balances.add(&t.buckets);
        for p in &t.blocks {
            let b = self.promo.entry(p.grant_id).or_insert(PromoBlock {
                grant_id: p.grant_id,
                credits: Credits::ZERO,
                expires_at: p.expires_at,
            });
            b.credits = b.credits.plus(p.credits);
        }
    }

    /// Gives `credits` of a member's use back (it may have gone, or its use reset).
    fn member_gives_back(&mut self, member: Option<&str>, credits: Credits) {
        if let Some(m) = member.and_then(|m| self.members.get_mut(m)) {
            m.used = Credits(m.used.get().saturating_sub(credits.get()));
        }
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
                    ..Buckets::default()
                };
                self.totals.granted = monthly.plus(*free);
                self.period_budget = self.totals.granted;
            }
            EventBody::Debited {
                operation,
                quantity,
                credits,
                taken,
                member,
                ..
            } => {
                assert_eq!(
                    taken.total(),
                    *credits,
                    "invariant: a debit takes exactly its credits"
                );
                self.remove(taken);
                self.totals.debited = self.totals.debited.plus(*credits);
                self.usage
                    .record(at, operation, *quantity as u64, *credits, member.as_deref());
                if let Some(m) = member.as_deref().and_then(|m| self.members.get_mut(m)) {
                    m.used = m.used.plus(*credits);
                }
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
                self.forecast_fired = false;
                for m in self.members.values_mut() {
                    m.used = Credits::ZERO;
                }
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
                bucket,
                credits,
                expires_at,
                ..
            } => {
                match expires_at {
                    Some(expires_at) => {
                        assert_eq!(*bucket, Bucket::Promo, "invariant: only promo expires");
                        // The block's id is this event's seq.
                        let grant_id = self.seq + 1;
                        self.promo.insert(
                            grant_id,
                            PromoBlock {
                                grant_id,
                                credits: *credits,
                                expires_at: *expires_at,
                            },
                        );
                        self.balances.promo = self.balances.promo.plus(*credits);
                    }
                    None => {
                        assert!(*bucket != Bucket::Promo, "invariant: promo expires");
                        let v = self.balances.get(*bucket).plus(*credits);
                        *self.balances.get_mut(*bucket) = v;
                    }
                }
                self.add_granted(*credits);
            }
            EventBody::HoldPlaced {
                hold_id,
                operation,
                quantity,
                credits,
                taken,
                expires_at,
                member,
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
                self.remove(taken);
                if let Some(m) = member.as_deref().and_then(|m| self.members.get_mut(m)) {
                    m.used = m.used.plus(*credits);
                }
                self.holds.insert(
                    *hold_id,
                    Hold {
                        id: *hold_id,
                        operation: operation.clone(),
                        quantity: *quantity,
                        credits: *credits,
                        taken: taken.clone(),
                        period: self.period,
                        placed_at: at,
                        expires_at: *expires_at,
                        member: member.clone(),
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
                    self.usage.record(
                        at,
                        &hold.operation,
                        hold.quantity as u64,
                        spent.total(),
                        hold.member.as_deref(),
                    );
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
            EventBody::Refunded {
                debit_seq,
                debit_at,
                operation,
                part,
                returned,
                member,
                member_returned,
                ..
            } => {
                let expired = part.total().minus(returned.total());
                self.restore(returned);
                self.totals.refunded = self.totals.refunded.plus(part.total());
                self.totals.expired = self.totals.expired.plus(expired);
                let same_period = period_index(self.anchor, *debit_at) == self.period;
                self.usage.refund(
                    *debit_at,
                    operation,
                    member.as_deref(),
                    part.total(),
                    same_period,
                );
                self.member_gives_back(member.as_deref(), *member_returned);
                let done = self.refunds.entry(*debit_seq).or_default();
                *done = done.plus(part);
            }
            EventBody::PromoExpired { grant_id, expired } => {
                let b = self
                    .promo
                    .remove(grant_id)
                    .expect("invariant: an expiring block is open");
                assert_eq!(b.credits, *expired, "invariant: a block expires whole");
                assert!(
                    b.expires_at == at,
                    "invariant: a block expires at its instant"
                );
                self.balances.promo = self.balances.promo.minus(*expired);
                self.totals.expired = self.totals.expired.plus(*expired);
            }
            EventBody::AlertsSet {
                thresholds,
                in_effect,
                forecast,
                ..
            } => {
                self.alert_settings = AlertSettings {
                    thresholds: thresholds.clone(),
                    forecast: *forecast,
                };
                // Exhaustion (bit 0) is a state, kept whatever the thresholds.
                let keep = in_effect.iter().fold(1u128, |m, t| m | (1u128 << t));
                self.alerts_fired &= keep;
            }
            EventBody::MemberSet { member, cap, .. } => {
                self.members.entry(member.clone()).or_default().cap = *cap;
            }
            EventBody::MemberRemoved { member, .. } => {
                self.members.remove(member);
            }
        }
    }

    /// Closes an open hold: `spent` is debited, `returned` goes back to the sources,
    /// `expired` is gone; together they are exactly what the hold held. What was not spent
    /// is given back to the member's use when the hold is of the current period.
    fn close_hold(
        &mut self,
        hold_id: u64,
        spent: Credits,
        returned: &Taken,
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
        self.restore(returned);
        self.totals.expired = self.totals.expired.plus(expired);
        if hold.period == self.period {
            self.member_gives_back(hold.member.as_deref(), hold.credits.minus(spent));
        }
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
