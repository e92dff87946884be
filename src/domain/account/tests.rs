//! Given events / when command / then events, plus property tests over random histories.

use proptest::prelude::*;

use super::*;
use crate::domain::time::Ts;
use crate::domain::{ForecastSetting, Taken};

const DAY: i64 = 86_400_000;

fn ts(s: &str) -> Ts {
    Ts::parse_rfc3339(s).unwrap()
}

/// A live account plus every event it recorded, advanced the way the actor does it.
pub(crate) struct Books {
    pub(crate) acct: Account,
    pub(crate) log: Vec<Event>,
    pub(crate) pricing: Pricing,
}

impl Books {
    fn new(plan: &str, at: Ts) -> Books {
        let pricing = Pricing::standard();
        let created = Account::create("acct-1", plan, at, at, &pricing).unwrap();
        let mut acct = Account::empty("acct-1");
        acct.apply(&created);
        Books {
            acct,
            log: vec![created],
            pricing,
        }
    }

    fn catch_up(&mut self, now: Ts) {
        while let Some((at, body)) = self.acct.next_due(now, &self.pricing) {
            let ev = self.acct.record(body, at, &self.pricing);
            self.log.push(ev);
        }
    }

    pub(crate) fn run(&mut self, cmd: Command, now: Ts) -> Result<Event, Refusal> {
        self.catch_up(now);
        let body = self.acct.decide(&cmd, now, &self.pricing)?;
        let ev = self.acct.record(body, now, &self.pricing);
        self.log.push(ev.clone());
        self.acct.check_books().unwrap();
        Ok(ev)
    }

    fn replay(&self, upto: usize) -> Account {
        let mut a = Account::empty("acct-1");
        for ev in &self.log[..upto] {
            a.apply(ev);
        }
        a
    }
}

fn debit(op: &str, qty: u32, key: &str) -> Command {
    Command::Debit {
        operation: op.into(),
        quantity: qty,
        metadata: vec![],
        idempotency_key: key.into(),
        member: None,
    }
}

#[test]
fn the_credits_page_numbers() {
    let t0 = ts("2026-11-01T00:00:00Z");
    let mut b = Books::new("free", t0);
    assert_eq!(b.acct.available(), Credits(50));
    for i in 0..15 {
        b.run(debit("sample_image", 1, &format!("k{i}")), t0)
            .unwrap();
    }
    assert_eq!(b.acct.available(), Credits(5));
    let refused = b.run(debit("video_generation", 1, "v"), t0).unwrap_err();
    assert_eq!(
        refused,
        Refusal::InsufficientCredits {
            required: Credits(8),
            available: Credits(5)
        }
    );
    // The refusal recorded nothing.
    assert_eq!(b.log.len(), 16);
}

#[test]
fn consumption_order_monthly_free_packs() {
    let t0 = ts("2026-11-01T00:00:00Z");
    let mut b = Books::new("starter", t0);
    b.run(
        Command::Purchase {
            pack: "pack_100".into(),
            payment_ref: "p1".into(),
        },
        t0,
    )
    .unwrap();
    let ev = b.run(debit("face_generation", 11, "k"), t0).unwrap(); // 55 credits
    match ev.body {
        EventBody::Debited { taken, .. } => {
            assert_eq!(
                taken.buckets,
                Buckets {
                    monthly: Credits(50),
                    free: Credits(5),
                    ..Buckets::default()
                }
            )
        }
        other => panic!("{other:?}"),
    }
    let ev = b.run(debit("face_generation", 10, "k2"), t0).unwrap(); // 50: 45 free + 5 packs
    assert_eq!(
        ev.after,
        Buckets {
            packs: Credits(95),
            ..Buckets::default()
        }
    );
}

#[test]
fn reset_expires_monthly_keeps_packs_and_records_the_boundary() {
    let anchor = ts("2027-01-31T10:00:00Z");
    let mut b = Books::new("growth", anchor);
    b.run(
        Command::Purchase {
            pack: "pack_100".into(),
            payment_ref: "p".into(),
        },
        anchor,
    )
    .unwrap();
    b.run(debit("sample_image", 10, "k"), anchor).unwrap(); // 30 from monthly
                                                            // Handled on April 2nd: three periods rolled, at Feb 28, Mar 31 (not Apr 30 yet).
    b.run(
        debit("caption_generation", 1, "k2"),
        ts("2027-04-02T00:00:00Z"),
    )
    .unwrap();
    let resets: Vec<(Ts, Credits)> = b
        .log
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::PeriodReset { expired, .. } => Some((e.at, *expired)),
            _ => None,
        })
        .collect();
    assert_eq!(
        resets,
        vec![
            (ts("2027-02-28T10:00:00Z"), Credits(170)),
            (ts("2027-03-31T10:00:00Z"), Credits(200))
        ]
    );
    assert_eq!(
        b.acct.balances,
        Buckets {
            monthly: Credits(199),
            free: Credits(50),
            packs: Credits(100),
            ..Buckets::default()
        }
    );
    assert_eq!(b.acct.next_reset_at(), ts("2027-04-30T10:00:00Z"));
}

#[test]
fn upgrade_now_downgrade_at_next_period() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("starter", t0);
    b.run(
        Command::ChangePlan {
            plan: "growth".into(),
            idempotency_key: "u".into(),
        },
        t0,
    )
    .unwrap();
    assert_eq!(b.acct.plan, "growth");
    assert_eq!(b.acct.balances.monthly, Credits(200));
    b.run(
        Command::ChangePlan {
            plan: "free".into(),
            idempotency_key: "d".into(),
        },
        t0,
    )
    .unwrap();
    assert_eq!(b.acct.plan, "growth");
    assert_eq!(b.acct.pending_plan.as_deref(), Some("free"));
    b.catch_up(ts("2026-12-10T00:00:00Z"));
    assert_eq!(b.acct.plan, "free");
    assert_eq!(b.acct.pending_plan, None);
    assert_eq!(b.acct.balances.monthly, Credits(0));
    let err = b.run(
        Command::ChangePlan {
            plan: "free".into(),
            idempotency_key: "x".into(),
        },
        ts("2026-12-11T00:00:00Z"),
    );
    assert_eq!(err.unwrap_err(), Refusal::PlanUnchanged("free".into()));
}

#[test]
fn returning_to_the_current_plan_cancels_a_pending_downgrade() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("agency", t0);
    b.run(
        Command::ChangePlan {
            plan: "starter".into(),
            idempotency_key: "d".into(),
        },
        t0,
    )
    .unwrap();
    b.run(
        Command::ChangePlan {
            plan: "agency".into(),
            idempotency_key: "u".into(),
        },
        t0,
    )
    .unwrap();
    assert_eq!(b.acct.pending_plan, None);
    assert_eq!(b.acct.balances.monthly, Credits(500));
}

#[test]
fn hold_capture_returns_the_rest_and_expires_monthly_of_a_past_period() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("starter", t0);
    let hold = Command::PlaceHold {
        operation: "video_generation".into(),
        quantity: 7,
        ttl_ms: 60 * DAY,
        idempotency_key: "h".into(),
        member: None,
    };
    b.run(hold, t0).unwrap(); // 56: 50 monthly + 6 free
    assert_eq!(b.acct.held(), Credits(56));
    // Capture 10 after the period ended: spends 10 monthly, the other 40 monthly expire.
    let ev = b
        .run(
            Command::Capture {
                hold_id: 1,
                credits: Some(Credits(10)),
                idempotency_key: Some("c".into()),
            },
            ts("2026-12-11T00:00:00Z"),
        )
        .unwrap();
    match ev.body {
        EventBody::HoldCaptured {
            spent,
            returned,
            expired,
            ..
        } => {
            assert_eq!(spent.buckets.monthly, Credits(10));
            assert_eq!(
                returned.buckets,
                Buckets {
                    free: Credits(6),
                    ..Buckets::default()
                }
            );
            assert_eq!(expired, Credits(40));
        }
        other => panic!("{other:?}"),
    }
    let again = b.run(
        Command::Capture {
            hold_id: 1,
            credits: None,
            idempotency_key: Some("c2".into()),
        },
        ts("2026-12-11T00:00:00Z"),
    );
    assert_eq!(again.unwrap_err(), Refusal::HoldClosed(1));
    let unknown = b.run(
        Command::Release {
            hold_id: 9,
            idempotency_key: Some("r".into()),
        },
        ts("2026-12-11T00:00:00Z"),
    );
    assert_eq!(unknown.unwrap_err(), Refusal::HoldNotFound(9));
}

#[test]
fn an_expired_hold_releases_itself_at_its_expiry() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("free", t0);
    b.run(
        Command::PlaceHold {
            operation: "sample_image".into(),
            quantity: 2,
            ttl_ms: 900_000,
            idempotency_key: "h".into(),
            member: None,
        },
        t0,
    )
    .unwrap();
    assert_eq!(b.acct.available(), Credits(44));
    b.catch_up(t0.plus_millis(899_999));
    assert_eq!(b.acct.holds.len(), 1);
    b.catch_up(t0.plus_millis(900_000));
    assert!(b.acct.holds.is_empty());
    assert_eq!(b.acct.available(), Credits(50));
    let last = b.log.last().unwrap();
    assert_eq!(last.at, t0.plus_millis(900_000));
    assert!(matches!(
        last.body,
        EventBody::HoldReleased {
            reason: ReleaseReason::Expired,
            ..
        }
    ));
}

#[test]
fn alerts_for_a_starter_account_spent_down() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("starter", t0); // budget 100 = 50 monthly + 50 free
    let mut fired = vec![];
    for i in 0..100 {
        let ev = b
            .run(debit("caption_generation", 1, &format!("k{i}")), t0)
            .unwrap();
        for t in ev.alerts.fired_thresholds() {
            fired.push((b.acct.available().get(), t));
        }
    }
    assert_eq!(fired, vec![(25, 25), (10, 10), (0, 0)]);
    assert!(b.acct.paused());
    let ev = b
        .run(
            Command::Purchase {
                pack: "pack_100".into(),
                payment_ref: "p".into(),
            },
            t0,
        )
        .unwrap();
    // Budget 200, available 100: 50% re-arms every threshold and replenishes.
    assert_eq!(ev.alerts.rearmed_thresholds(), vec![25, 10, 0]);
    assert!(ev.alerts.replenished());
}

#[test]
fn overflowing_grants_are_refused() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("free", t0);
    let grant = |c| Command::Grant {
        bucket: Bucket::Packs,
        credits: Credits(c),
        reason: "r".into(),
        idempotency_key: "g".into(),
        expires_at: None,
    };
    assert_eq!(
        b.run(grant(u64::MAX), t0).unwrap_err(),
        Refusal::Overflow { field: "credits" }
    );
    // Every balance stays at most 2^53 - 1, with room for the largest plan's reset
    // (agency, 500): 50 free credits leave room for MAX - 550.
    let room = Credits::MAX.get() - 500 - 50;
    assert_eq!(
        b.run(grant(room + 1), t0).unwrap_err(),
        Refusal::Overflow { field: "credits" }
    );
    b.run(grant(room), t0).unwrap();
    assert_eq!(b.acct.available().get(), Credits::MAX.get() - 500);
    assert_eq!(
        b.run(grant(1), t0).unwrap_err(),
        Refusal::Overflow { field: "credits" }
    );
}

// ---- property tests ----

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Debit(u8, u32),
    Hold(u8, u32, u32),
    Capture(u8, Option<u32>),
    Release(u8),
    Plan(u8),
    Purchase(u8),
    Grant(u8, u64),
    /// A promo grant of credits expiring in so many hours.
    Promo(u64, u32),
    /// A refund of the n-th latest debit: all of it, or so many credits.
    Refund(u8, Option<u32>),
    /// Create or change member n, with a cap.
    Member(u8, Option<u32>),
    RemoveMember(u8),
    /// A debit (operation, quantity) for member n.
    MemberDebit(u8, u32, u8),
    /// Own alert settings: thresholds (a bit set over 5 % steps) and the forecast horizon.
    Alerts(Option<u32>, Option<Option<u32>>),
    Wait(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 1u32..20).prop_map(|(o, q)| Step::Debit(o, q)),
        2 => (0u8..4, 1u32..10, 1u32..(40 * 24)).prop_map(|(o, q, h)| Step::Hold(o, q, h)),
        1 => (0u8..8, proptest::option::of(0u32..60)).prop_map(|(h, c)| Step::Capture(h, c)),
        1 => (0u8..8).prop_map(Step::Release),
        1 => (0u8..4).prop_map(Step::Plan),
        1 => (0u8..4).prop_map(Step::Purchase),
        1 => (0u8..4, 1u64..500).prop_map(|(b, c)| Step::Grant(b, c)),
        1 => (1u64..200, 1u32..(40 * 24)).prop_map(|(c, h)| Step::Promo(c, h)),
        1 => (0u8..6, proptest::option::of(1u32..30)).prop_map(|(d, c)| Step::Refund(d, c)),
        1 => (0u8..3, proptest::option::of(0u32..60)).prop_map(|(m, c)| Step::Member(m, c)),
        1 => (0u8..3, 1u32..10, 0u8..3).prop_map(|(o, q, m)| Step::MemberDebit(o, q, m)),
        1 => (0u8..4).prop_map(Step::RemoveMember),
        1 => (proptest::option::of(0u32..(1 << 21)), proptest::option::of(proptest::option::of(1u32..100)))
            .prop_map(|(t, f)| Step::Alerts(t, f)),
        2 => (0u32..(50 * 24)).prop_map(Step::Wait),
    ]
}

/// The n-th latest debit of the log (0: the latest), as a refund names it.
fn nth_debit(b: &Books, n: u8) -> Option<DebitRef> {
    b.log
        .iter()
        .rev()
        .filter_map(DebitRef::from_event)
        .nth(n as usize)
}

fn member_name(m: u8) -> String {
    format!("m{m}")
}

fn to_command(s: &Step, i: usize, b: &Books, now: Ts) -> Option<Command> {
    let ops: Vec<&String> = b.pricing.operations.keys().collect();
    let plans: Vec<&String> = b.pricing.plans.keys().collect();
    let packs: Vec<&String> = b.pricing.packs.keys().collect();
    let key = format!("k{i}");
    let hold_id = |h: u8| b.acct.next_hold_id.saturating_sub(1 + h as u64).max(1);
    Some(match s {
        Step::Debit(o, q) => Command::Debit {
            operation: ops[*o as usize].clone(),
            quantity: *q,
            metadata: vec![],
            idempotency_key: key,
            member: None,
        },
        Step::Hold(o, q, h) => Command::PlaceHold {
            operation: ops[*o as usize].clone(),
            quantity: *q,
            ttl_ms: *h as i64 * 3_600_000,
            idempotency_key: key,
            member: None,
        },
        Step::Capture(h, c) => Command::Capture {
            hold_id: hold_id(*h),
            credits: c.map(|c| Credits(c as u64)),
            idempotency_key: Some(key),
        },
        Step::Release(h) => Command::Release {
            hold_id: hold_id(*h),
            idempotency_key: Some(key),
        },
        Step::Plan(p) => Command::ChangePlan {
            plan: plans[*p as usize].clone(),
            idempotency_key: key,
        },
        Step::Purchase(p) => Command::Purchase {
            pack: packs[*p as usize].clone(),
            payment_ref: key,
        },
        Step::Grant(bk, c) => Command::Grant {
            bucket: [Bucket::Monthly, Bucket::Free, Bucket::Packs, Bucket::Packs][*bk as usize],
            credits: Credits(*c),
            reason: "r".into(),
            idempotency_key: key,
            expires_at: None,
        },
        Step::Promo(c, h) => Command::Grant {
            bucket: Bucket::Promo,
            credits: Credits(*c),
            reason: "promo".into(),
            idempotency_key: key,
            expires_at: Some(now.plus_millis(*h as i64 * 3_600_000)),
        },
        Step::Refund(d, c) => {
            let debit = nth_debit(b, *d)?;
            let debit_key = b
                .log
                .iter()
                .find(|e| e.seq == debit.seq)
                .and_then(|e| e.body.idempotency_key())
                .expect("a debit has a key")
                .to_string();
            Command::Refund {
                debit_key,
                credits: c.map(|c| Credits(c as u64)),
                reason: "failed".into(),
                idempotency_key: key,
                debit: Some(Box::new(debit)),
            }
        }
        Step::Member(m, cap) => Command::SetMember {
            member: member_name(*m),
            cap: cap.map(|c| Credits(c as u64)),
            idempotency_key: key,
        },
        Step::RemoveMember(m) => Command::RemoveMember {
            member: member_name(*m),
            idempotency_key: key,
        },
        Step::MemberDebit(o, q, m) => Command::Debit {
            operation: ops[*o as usize].clone(),
            quantity: *q,
            metadata: vec![],
            idempotency_key: key,
            member: Some(member_name(*m)),
        },
        Step::Alerts(t, f) => Command::SetAlerts {
            thresholds: t.map(|bits| {
                (0..21u8)
                    .filter(|i| bits & (1 << i) != 0)
                    .map(|i| i * 5)
                    .rev()
                    .take(8)
                    .collect()
            }),
            forecast: match f {
                None => ForecastSetting::Config,
                Some(None) => ForecastSetting::Off,
                Some(Some(h)) => ForecastSetting::Hours(*h),
            },
            idempotency_key: key,
        },
        Step::Wait(_) => return None,
    })
}

/// Plays `steps` on a new account (plan index `plan`) from a fixed start: a wait moves
/// the clock and catches up; any other step becomes a command, handed to `each` once the
/// account is caught up; `check` runs after every step. Answers the books at the end.
pub(crate) fn play(
    plan: u8,
    steps: &[Step],
    mut each: impl FnMut(&mut Books, usize, Command, Ts) -> Result<(), TestCaseError>,
    mut check: impl FnMut(&Books, Ts) -> Result<(), TestCaseError>,
) -> Result<Books, TestCaseError> {
    let t0 = ts("2027-01-31T10:00:00Z");
    let plans: Vec<String> = Pricing::standard().plans.keys().cloned().collect();
    let mut b = Books::new(&plans[plan as usize], t0);
    let mut now = t0;
    for (i, s) in steps.iter().enumerate() {
        if let Step::Wait(h) = s {
            now = now.plus_millis(*h as i64 * 3_600_000);
            b.catch_up(now);
        } else {
            b.catch_up(now);
            let Some(cmd) = to_command(s, i, &b, now) else {
                check(&b, now)?;
                continue;
            };
            each(&mut b, i, cmd, now)?;
        }
        check(&b, now)?;
    }
    Ok(b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random histories: no bucket below zero (apply would panic), books balance after
    /// every step, replay equals live state, and snapshot + tail equals full replay.
    #[test]
    fn random_histories_keep_the_books(plan in 0u8..4, steps in proptest::collection::vec(step(), 1..80), cut in any::<prop::sample::Index>()) {
        let b = play(
            plan,
            &steps,
            |b, _, cmd, now| {
                let before = b.log.len();
                if b.run(cmd, now).is_err() {
                    // A refusal records nothing (the account was already caught up).
                    prop_assert_eq!(b.log.len(), before);
                }
                Ok(())
            },
            |b, now| {
                b.acct.check_books().map_err(TestCaseError::fail)?;
                prop_assert_eq!(b.acct.period, period_index(b.acct.anchor, now));
                Ok(())
            },
        )?;
        let full = b.replay(b.log.len());
        prop_assert_eq!(&full, &b.acct);
        // Snapshot at any point + the tail after it = the full replay.
        let at = cut.index(b.log.len());
        let mut snap = b.replay(at);
        for ev in &b.log[at..] { snap.apply(ev); }
        prop_assert_eq!(&snap, &full);
        // Sequence numbers have no gaps.
        for (i, ev) in b.log.iter().enumerate() { prop_assert_eq!(ev.seq, i as u64 + 1); }
        // Refunds never give back more than their debit took, source by source
        // (`Taken::minus` panics on a part its whole does not contain).
        let mut refunded: BTreeMap<u64, Taken> = BTreeMap::new();
        for ev in &b.log {
            if let EventBody::Refunded { debit_seq, part, .. } = &ev.body {
                let sum = refunded.entry(*debit_seq).or_default();
                *sum = sum.plus(part);
                let debit = DebitRef::from_event(&b.log[*debit_seq as usize - 1]).unwrap();
                let _left = debit.taken.minus(sum);
            }
        }
    }

    #[test]
    fn add_months_keeps_the_anchor_day_or_the_months_last(day in 1u8..=31, month in 1u8..=12, k in 0i64..200) {
        let days = time::Month::try_from(month).unwrap().length(2027);
        let day = day.min(days);
        let anchor = ts(&format!("2027-{month:02}-{day:02}T08:30:00Z"));
        let start = add_months(anchor, k);
        let next = add_months(anchor, k + 1);
        prop_assert!(start < next);
        prop_assert_eq!(period_index(anchor, start), k);
        prop_assert_eq!(period_index(anchor, next.plus_millis(-1)), k);
    }
}

/// The usage rollups recomputed from scratch out of an event log: every debit, and every
/// capture that spent something under its hold's operation, on its UTC day and hour (and
/// its member's), less what refunds gave back; then only the `USAGE_DAYS_KEPT` days and
/// `HOURS_KEPT` hours up to the newest one kept.
fn usage_from_log(log: &[Event]) -> crate::domain::usage::Usage {
    use crate::domain::usage::{Usage, HOURS_KEPT, HOUR_MS, USAGE_DAYS_KEPT};
    let mut u = Usage::default();
    let mut holds: BTreeMap<u64, (String, u32, Option<String>)> = BTreeMap::new();
    let (mut anchor, mut period) = (Ts(0), 0);
    let add = |u: &mut Usage, at: Ts, op: &str, count: u64, credits: Credits, m: Option<&str>| {
        let cell = u
            .days
            .entry(at.day_index())
            .or_default()
            .entry(op.to_string())
            .or_default();
        cell.count += count;
        cell.credits = cell.credits.plus(credits);
        if let Some(m) = m {
            let cell = u
                .members
                .entry(at.day_index())
                .or_default()
                .entry((m.to_string(), op.to_string()))
                .or_default();
            cell.count += count;
            cell.credits = cell.credits.plus(credits);
        }
        let h = u.hours.entry(at.0.div_euclid(HOUR_MS)).or_default();
        *h = h.plus(credits);
        u.period_credits = u.period_credits.plus(credits);
    };
    for ev in log {
        match &ev.body {
            EventBody::Created {
                anchor: a,
                period: p,
                ..
            } => (anchor, period) = (*a, *p),
            EventBody::Debited {
                operation,
                quantity,
                credits,
                member,
                ..
            } => add(
                &mut u,
                ev.at,
                operation,
                *quantity as u64,
                *credits,
                member.as_deref(),
            ),
            EventBody::HoldPlaced {
                hold_id,
                operation,
                quantity,
                member,
                ..
            } => {
                holds.insert(*hold_id, (operation.clone(), *quantity, member.clone()));
            }
            EventBody::HoldCaptured { hold_id, spent, .. } if !spent.total().is_zero() => {
                let (op, qty, m) = holds[hold_id].clone();
                add(&mut u, ev.at, &op, qty as u64, spent.total(), m.as_deref());
            }
            EventBody::Refunded {
                debit_at,
                operation,
                part,
                member,
                ..
            } => {
                let c = part.total();
                let less = |x: &mut Credits| *x = x.minus(c);
                if period_index(anchor, *debit_at) == period {
                    less(&mut u.period_credits);
                }
                let day = debit_at.day_index();
                if let Some(cell) = u.days.get_mut(&day).and_then(|d| d.get_mut(operation)) {
                    less(&mut cell.credits);
                }
                if let Some(m) = member {
                    let k = (m.clone(), operation.clone());
                    if let Some(cell) = u.members.get_mut(&day).and_then(|d| d.get_mut(&k)) {
                        less(&mut cell.credits);
                    }
                }
                if let Some(h) = u.hours.get_mut(&debit_at.0.div_euclid(HOUR_MS)) {
                    *h = Credits(h.get().saturating_sub(c.get()));
                }
            }
            EventBody::PeriodReset { period: p, .. } => {
                u.last_period_credits = Some(u.period_credits);
                u.period_credits = Credits::ZERO;
                period = *p;
            }
            _ => {}
        }
    }
    if let Some(newest) = u.days.keys().next_back().copied() {
        u.days.retain(|d, _| *d > newest - USAGE_DAYS_KEPT);
        u.members.retain(|d, _| *d > newest - USAGE_DAYS_KEPT);
    }
    if let Some(newest) = u.hours.keys().next_back().copied() {
        u.hours.retain(|h, _| *h > newest - HOURS_KEPT);
    }
    u
}

#[test]
fn a_capture_counts_under_the_holds_operation_on_its_day() {
    let t0 = ts("2027-01-10T10:00:00Z");
    let mut b = Books::new("growth", t0);
    b.run(
        Command::PlaceHold {
            operation: "video_generation".into(),
            quantity: 2,
            ttl_ms: 3 * DAY,
            idempotency_key: "h".into(),
            member: None,
        },
        t0,
    )
    .unwrap();
    let t1 = t0.plus_millis(DAY);
    b.run(
        Command::Capture {
            hold_id: 1,
            credits: Some(Credits(10)),
            idempotency_key: None,
        },
        t1,
    )
    .unwrap();
    let u = &b.acct.usage;
    assert!(!u.days.contains_key(&t0.day_index()), "a hold is not usage");
    let cell = u.days[&t1.day_index()]["video_generation"];
    assert_eq!((cell.count, cell.credits), (2, Credits(10)));
    assert_eq!(u.period_credits, Credits(10));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The rollups kept by `apply` equal a recomputation from the log, for random
    /// histories long enough (waits of up to 120 days) to push days out of the window.
    #[test]
    fn usage_rollups_equal_a_recomputation_from_the_log(
        plan in 0u8..4,
        steps in proptest::collection::vec(prop_oneof![
            8 => step(),
            1 => (0u32..(120 * 24)).prop_map(Step::Wait),
        ], 1..150),
    ) {
        let b = play(
            plan,
            &steps,
            |b, i, cmd, now| {
                // Keep the books funded so that debits (and so usage) keep happening.
                if b.acct.available() < Credits(100) {
                    let _ = b.run(Command::Purchase { pack: "pack_1000".into(), payment_ref: format!("p{i}") }, now);
                }
                let _ = b.run(cmd, now);
                Ok(())
            },
            |b, _| {
                prop_assert_eq!(&b.acct.usage, &usage_from_log(&b.log));
                Ok(())
            },
        )?;
        prop_assert_eq!(&b.replay(b.log.len()).usage, &b.acct.usage);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every event's alerts follow the rule, checked against the state before it: a
    /// threshold fires when remaining % reaches it while armed; it re-arms when remaining %
    /// rises above it through credits added (creation, purchase, grant, upgrade, reset),
    /// never through credits coming back from a hold, except 0 (exhaustion), which any
    /// rise above 0 re-arms.
    #[test]
    fn alerts_fire_once_and_rearm_only_on_credits_added(
        plan in 0u8..4,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let b = play(plan, &steps, |b, _, cmd, now| { let _ = b.run(cmd, now); Ok(()) }, |_, _| Ok(()))?;
        let mut before = Account::empty("acct-1");
        for ev in &b.log {
            let mut after = before.clone();
            after.apply(ev);
            if matches!(ev.body, EventBody::AlertsSet { .. }) {
                // New thresholds: the rule starts again from the state they leave.
                before = after;
                continue;
            }
            for &t in after.thresholds(&b.pricing) {
                let bit = 1u128 << t;
                let armed = before.alerts_fired & bit == 0;
                let below = alerts::at_or_below(after.available(), after.period_budget, t);
                let fires = below && armed;
                let rearms = !below && !armed && (ev.body.adds_credits() || t == 0);
                prop_assert_eq!(ev.alerts.fired & bit != 0, fires, "seq {} threshold {}: {:?}", ev.seq, t, ev.body);
                prop_assert_eq!(ev.alerts.rearmed & bit != 0, rearms, "seq {} threshold {}: {:?}", ev.seq, t, ev.body);
                if matches!(ev.body, EventBody::HoldReleased { .. } | EventBody::HoldCaptured { .. }) && t > 0 {
                    prop_assert!(ev.alerts.rearmed & bit == 0, "a hold's credits re-armed {}", t);
                }
            }
            before = after;
        }
    }
}

// ---- the second edition: promo blocks, refunds, members, alerts ----

fn promo(c: u64, key: &str, expires_at: Ts) -> Command {
    Command::Grant {
        bucket: Bucket::Promo,
        credits: Credits(c),
        reason: "launch".into(),
        idempotency_key: key.into(),
        expires_at: Some(expires_at),
    }
}

fn refund(b: &Books, key: &str, credits: Option<u64>, refund_key: &str) -> Command {
    let debit = b
        .log
        .iter()
        .find(|e| e.body.idempotency_key() == Some(key))
        .and_then(DebitRef::from_event);
    Command::Refund {
        debit_key: key.into(),
        credits: credits.map(Credits),
        reason: "job failed".into(),
        idempotency_key: refund_key.into(),
        debit: debit.map(Box::new),
    }
}

#[test]
fn promo_blocks_are_spent_soonest_expiring_first_and_expire_at_their_instant() {
    let t0 = ts("2026-11-10T00:00:00Z"); // the period ends 2026-12-10
    let mut b = Books::new("starter", t0); // 50 monthly + 50 free
    b.run(promo(10, "p1", ts("2026-11-20T00:00:00Z")), t0)
        .unwrap();
    b.run(promo(20, "p2", ts("2027-01-01T00:00:00Z")), t0)
        .unwrap();
    assert_eq!(b.acct.balances.promo, Credits(30));
    assert_eq!(b.acct.available(), Credits(130));
    // 65 credits: block 2 (soonest) 10, then monthly 50, then block 3 (after the reset) 5.
    let ev = b.run(debit("face_generation", 13, "d1"), t0).unwrap();
    let EventBody::Debited { taken, .. } = &ev.body else {
        panic!()
    };
    assert_eq!(taken.buckets.monthly, Credits(50));
    assert_eq!(taken.buckets.promo, Credits(15));
    let parts: Vec<(u64, u64)> = taken
        .blocks
        .iter()
        .map(|p| (p.grant_id, p.credits.get()))
        .collect();
    assert_eq!(parts, vec![(2, 10), (3, 5)]);
    assert!(!b.acct.promo.contains_key(&2), "an emptied block is gone");
    // Block 3 expires at its instant with its 15 left.
    b.catch_up(ts("2027-01-02T00:00:00Z"));
    let expiry = b
        .log
        .iter()
        .find(|e| matches!(e.body, EventBody::PromoExpired { .. }))
        .unwrap();
    assert_eq!(expiry.at, ts("2027-01-01T00:00:00Z"));
    assert_eq!(
        expiry.body,
        EventBody::PromoExpired {
            grant_id: 3,
            expired: Credits(15)
        }
    );
    assert_eq!(b.acct.balances.promo, Credits(0));
    b.acct.check_books().unwrap();
    // A promo grant needs a future instant, and an account a bounded number of blocks.
    let now = ts("2027-01-02T00:00:00Z");
    assert_eq!(
        b.run(promo(1, "p3", now), now).unwrap_err(),
        Refusal::ExpiryNotInFuture
    );
    let mut no_expiry = promo(1, "p4", now);
    if let Command::Grant { expires_at, .. } = &mut no_expiry {
        *expires_at = None;
    }
    assert_eq!(
        b.run(no_expiry, now).unwrap_err(),
        Refusal::ExpiryMismatch(Bucket::Promo)
    );
}

#[test]
fn refunds_go_back_where_they_came_from_and_expired_sources_expire() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("starter", t0);
    b.run(promo(10, "p1", ts("2026-11-12T00:00:00Z")), t0)
        .unwrap();
    // 70: promo 10, monthly 50, free 10.
    b.run(debit("face_generation", 14, "job-1"), t0).unwrap();
    assert_eq!(b.acct.available(), Credits(40));
    // A partial refund gives back what lasts longest first: free.
    let r = refund(&b, "job-1", Some(5), "r1");
    let ev = b.run(r, t0).unwrap();
    let EventBody::Refunded { returned, .. } = &ev.body else {
        panic!()
    };
    assert_eq!(returned.buckets.free, Credits(5));
    // After the block expired and the period ended, the rest: free 5 back, the monthly 50
    // and the block's 10 expire.
    let later = ts("2026-12-11T00:00:00Z");
    let r = refund(&b, "job-1", None, "r2");
    b.catch_up(later);
    let free_before = b.acct.balances.free;
    let ev = b.run(r, later).unwrap();
    assert_eq!(ev.body.refund_credits(), Some((Credits(65), Credits(60))));
    assert_eq!(b.acct.balances.free, free_before.plus(Credits(5)));
    b.acct.check_books().unwrap();
    // Nothing is left to refund; an unknown key is no debit.
    let r = refund(&b, "job-1", Some(1), "r3");
    assert_eq!(
        b.run(r, later).unwrap_err(),
        Refusal::RefundExceedsDebit {
            refundable: Credits(0),
            requested: Credits(1)
        }
    );
    let r = refund(&b, "job-9", None, "r4");
    assert_eq!(
        b.run(r, later).unwrap_err(),
        Refusal::DebitNotFound("job-9".into())
    );
    assert_eq!(b.acct.totals.refunded, Credits(70));
}

#[test]
fn a_refund_lifts_an_exhausted_account() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("free", t0); // 50 free
    b.run(debit("face_generation", 10, "all"), t0).unwrap();
    assert!(b.acct.paused());
    let ev = b.run(refund(&b, "all", Some(5), "r"), t0).unwrap();
    assert!(ev.alerts.replenished());
    assert!(!b.acct.paused());
}

#[test]
fn members_have_caps_per_period_and_refunds_give_use_back() {
    let t0 = ts("2026-11-10T00:00:00Z");
    let mut b = Books::new("growth", t0);
    let set = |cap: Option<u64>, key: &str| Command::SetMember {
        member: "brand-a".into(),
        cap: cap.map(Credits),
        idempotency_key: key.into(),
    };
    let member_debit = |qty: u32, key: &str| Command::Debit {
        operation: "sample_image".into(),
        quantity: qty,
        metadata: vec![],
        idempotency_key: key.into(),
        member: Some("brand-a".into()),
    };
    assert_eq!(
        b.run(member_debit(1, "d0"), t0).unwrap_err(),
        Refusal::MemberNotFound("brand-a".into())
    );
    b.run(set(Some(10), "m1"), t0).unwrap();
    b.run(member_debit(3, "d1"), t0).unwrap(); // 9
    assert_eq!(
        b.run(member_debit(1, "d2"), t0).unwrap_err(),
        Refusal::MemberCapReached {
            cap: Credits(10),
            used: Credits(9),
            required: Credits(3)
        }
    );
    b.run(refund(&b, "d1", Some(3), "r1"), t0).unwrap();
    assert_eq!(b.acct.members["brand-a"].used, Credits(6));
    b.run(member_debit(1, "d3"), t0).unwrap();
    // The use resets with the period; the cap stays.
    b.catch_up(ts("2026-12-10T00:00:00Z"));
    assert_eq!(b.acct.members["brand-a"].used, Credits(0));
    assert_eq!(b.acct.members["brand-a"].cap, Some(Credits(10)));
    let now = ts("2026-12-10T00:00:00Z");
    b.run(
        Command::RemoveMember {
            member: "brand-a".into(),
            idempotency_key: "rm".into(),
        },
        now,
    )
    .unwrap();
    assert_eq!(
        b.run(member_debit(1, "d4"), now).unwrap_err(),
        Refusal::MemberNotFound("brand-a".into())
    );
}

#[test]
fn the_forecast_alert_fires_once_per_period_on_the_burn_rate() {
    let t0 = ts("2026-11-10T00:00:00Z"); // next reset 2026-12-10
    let mut b = Books::new("agency", t0); // 550
                                          // 40 an hour for 10 hours: 400 in the last 24 hours, 150 left: out in 9 hours.
    let mut fired = vec![];
    for h in 0..10 {
        let at = t0.plus_millis(h * 3_600_000);
        let ev = b
            .run(debit("video_generation", 5, &format!("d{h}")), at)
            .unwrap();
        if let Some(p) = ev.alerts.forecast_fired {
            fired.push((h, p));
        }
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (h, projected) = fired[0];
    let at = t0.plus_millis(h * 3_600_000);
    assert!(projected > at && projected <= at.plus_millis(24 * 3_600_000));
    assert!(b.acct.forecast_fired);
    // A pack pushes the projection past twice the horizon: it re-arms.
    let ev = b
        .run(
            Command::Purchase {
                pack: "pack_1000".into(),
                payment_ref: "p".into(),
            },
            t0.plus_millis(10 * 3_600_000),
        )
        .unwrap();
    assert!(ev.alerts.forecast_rearmed);
    assert!(!b.acct.forecast_fired);
    // Turned off for this account: nothing fires however fast it burns.
    b.run(
        Command::SetAlerts {
            thresholds: Some(vec![50]),
            forecast: ForecastSetting::Off,
            idempotency_key: "a".into(),
        },
        t0.plus_millis(10 * 3_600_000),
    )
    .unwrap();
    assert_eq!(b.acct.thresholds(&b.pricing), &[50]);
    for h in 10..20 {
        let at = t0.plus_millis(h * 3_600_000);
        let ev = b
            .run(debit("video_generation", 5, &format!("e{h}")), at)
            .unwrap();
        assert!(ev.alerts.forecast_fired.is_none());
    }
}
