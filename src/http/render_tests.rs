//! Every account state the API can reach renders: the account view, each ledger entry,
//! usage and the forecast, for random histories with grants up to the bound and waits of
//! years. A read must never stop the service (a panic on the live path is exit 70).

use proptest::prelude::*;

use super::{dto, reports};
use crate::domain::time::TS_MAX;
use crate::domain::usage::Granularity;
use crate::domain::{Account, Bucket, Command, Credits, Pricing, Ts};

#[derive(Clone, Debug)]
enum Step {
    Debit(u8, u32),
    Hold(u8, u32, u32),
    Capture(Option<u64>),
    Release,
    Plan(u8),
    Purchase(u8),
    Grant(u8, u64),
    /// Hours to wait, up to years.
    Wait(u32),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 1u32..=10_000).prop_map(|(o, q)| Step::Debit(o, q)),
        1 => (0u8..4, 1u32..100, 1u32..(7 * 24)).prop_map(|(o, q, h)| Step::Hold(o, q, h)),
        1 => proptest::option::of(0u64..1000).prop_map(Step::Capture),
        1 => Just(Step::Release),
        1 => (0u8..4).prop_map(Step::Plan),
        1 => (0u8..4).prop_map(Step::Purchase),
        2 => (0u8..3, prop_oneof![1u64..1000, 1u64..=Credits::MAX.get()]).prop_map(|(b, c)| Step::Grant(b, c)),
        2 => prop_oneof![0u32..48, 0u32..(24 * 400), 0u32..(24 * 365 * 10)].prop_map(Step::Wait),
    ]
}

fn command(s: &Step, i: usize, acct: &Account, p: &Pricing) -> Option<Command> {
    let ops: Vec<&String> = p.operations.keys().collect();
    let key = format!("k{i}");
    let last_hold = acct.next_hold_id.saturating_sub(1).max(1);
    Some(match s {
        Step::Debit(o, q) => Command::Debit {
            operation: ops[*o as usize].clone(),
            quantity: *q,
            metadata: vec![],
            idempotency_key: key,
        },
        Step::Hold(o, q, h) => Command::PlaceHold {
            operation: ops[*o as usize].clone(),
            quantity: *q,
            ttl_ms: *h as i64 * 3_600_000,
            idempotency_key: key,
        },
        Step::Capture(c) => Command::Capture {
            hold_id: last_hold,
            credits: c.map(Credits),
            idempotency_key: None,
        },
        Step::Release => Command::Release {
            hold_id: last_hold,
            idempotency_key: None,
        },
        Step::Plan(n) => Command::ChangePlan {
            plan: p.plans.keys().nth(*n as usize)?.clone(),
            idempotency_key: key,
        },
        Step::Purchase(n) => Command::Purchase {
            pack: p.packs.keys().nth(*n as usize)?.clone(),
            payment_ref: key,
        },
        Step::Grant(b, c) => Command::Grant {
            bucket: Bucket::ALL[*b as usize],
            credits: Credits(*c),
            reason: "r".into(),
            idempotency_key: key,
        },
        Step::Wait(_) => return None,
    })
}

fn render_ledger(acct: &Account, log: &[crate::domain::Event]) {
    let mut prev = Default::default();
    for ev in log {
        let _ = dto::ledger_entry(ev, prev);
        let _ = dto::event_answer(&acct.id, ev, false, false);
        prev = (ev.after, ev.held_after);
    }
}

fn render_views(acct: &Account, now: Ts, p: &Pricing) {
    let _ = dto::account_view(acct);
    for h in acct.holds.values() {
        let _ = dto::hold_view(h);
    }
    let _ = reports::forecast_view(acct, now, p);
    for g in [Granularity::Day, Granularity::Month] {
        let _ = reports::usage_periods(acct, now.plus_millis(-30 * 86_400_000), now, g, 1000);
    }
    // The ends of the range the API accepts.
    let _ = reports::forecast_view(acct, TS_MAX, p);
    let _ = reports::usage_periods(
        acct,
        TS_MAX.plus_millis(-86_400_000),
        TS_MAX,
        Granularity::Month,
        1000,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_reachable_state_renders(plan in 0usize..4, steps in proptest::collection::vec(step(), 1..60)) {
        let p = Pricing::standard();
        let t0 = Ts::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let plan = p.plans.keys().nth(plan).unwrap().clone();
        let created = Account::create("a", &plan, t0, t0, &p).unwrap();
        let mut acct = Account::empty("a");
        acct.apply(&created);
        let mut log = vec![created];
        let mut now = t0;
        for (i, s) in steps.iter().enumerate() {
            if let Step::Wait(h) = s {
                // The daemon's clock never passes the calendar's end.
                now = now.plus_millis(*h as i64 * 3_600_000).min(TS_MAX.plus_millis(-86_400_000));
            }
            while let Some((at, body)) = acct.next_due(now, &p) {
                log.push(acct.record(body, at, &p.thresholds));
            }
            if let Some(cmd) = command(s, i, &acct, &p) {
                if let Ok(body) = acct.decide(&cmd, now, &p) {
                    log.push(acct.record(body, now, &p.thresholds));
                }
            }
            acct.check_books().map_err(TestCaseError::fail)?;
            prop_assert!(acct.available().get() + acct.held().get() <= Credits::MAX.get());
            render_views(&acct, now, &p);
        }
        render_ledger(&acct, &log);
    }
}
