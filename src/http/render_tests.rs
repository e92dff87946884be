//! Every account state the API can reach renders: the account view, each ledger entry,
//! usage and the forecast, for random histories with grants up to the bound and waits of
//! years (the domain's own history driver, `domain::account::tests::play`). A read must
//! never stop the service (a panic on the live path is exit 70).

use proptest::prelude::*;

use super::{dto, reports};
use crate::domain::account::tests::{play, Step};
use crate::domain::time::TS_MAX;
use crate::domain::usage::{Granularity, Slice};
use crate::domain::{Account, Credits, Pricing, Ts};

/// Steps as the API can send them, with the extremes it accepts: grants of up to the
/// bound, quantities up to 10000, waits from hours to years.
fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 1u32..=10_000).prop_map(|(o, q)| Step::Debit(o, q)),
        1 => (0u8..4, 1u32..100, 1u32..(7 * 24)).prop_map(|(o, q, h)| Step::Hold(o, q, h)),
        1 => (0u8..8, proptest::option::of(0u32..1000)).prop_map(|(h, c)| Step::Capture(h, c)),
        1 => (0u8..8).prop_map(Step::Release),
        1 => (0u8..4).prop_map(Step::Plan),
        1 => (0u8..4).prop_map(Step::Purchase),
        2 => (0u8..3, prop_oneof![1u64..1000, 1u64..=Credits::MAX.get()]).prop_map(|(b, c)| Step::Grant(b, c)),
        1 => (1u64..200, 1u32..(40 * 24)).prop_map(|(c, h)| Step::Promo(c, h)),
        1 => (0u8..6, proptest::option::of(1u32..30)).prop_map(|(d, c)| Step::Refund(d, c)),
        1 => (0u8..3, proptest::option::of(0u32..60)).prop_map(|(m, c)| Step::Member(m, c)),
        1 => (0u8..3, 1u32..10, 0u8..3).prop_map(|(o, q, m)| Step::MemberDebit(o, q, m)),
        2 => prop_oneof![0u32..48, 0u32..(24 * 400), 0u32..(24 * 365 * 10)].prop_map(Step::Wait),
    ]
}

fn render_views(acct: &Account, now: Ts, p: &Pricing) {
    let _ = dto::account_view(acct, p);
    for h in acct.holds.values() {
        let _ = dto::hold_view(h);
    }
    let _ = reports::forecast_view(acct, now, p);
    for g in [Granularity::Day, Granularity::Month] {
        for slice in [Slice::All, Slice::ByMember, Slice::Member("m0".into())] {
            let from = now.plus_millis(-30 * 86_400_000);
            let _ = reports::usage_periods(acct, from, now, g, 1000, &slice);
        }
    }
    // The ends of the range the API accepts.
    let _ = reports::forecast_view(acct, TS_MAX, p);
    let _ = reports::usage_periods(
        acct,
        TS_MAX.plus_millis(-86_400_000),
        TS_MAX,
        Granularity::Month,
        1000,
        &Slice::ByMember,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_reachable_state_renders(plan in 0u8..4, steps in proptest::collection::vec(step(), 1..60)) {
        let b = play(
            plan,
            &steps,
            |b, _, cmd, now| {
                let _ = b.run(cmd, now);
                Ok(())
            },
            |b, now| {
                prop_assert!(b.acct.available().get() + b.acct.held().get() <= Credits::MAX.get());
                render_views(&b.acct, now, &b.pricing);
                Ok(())
            },
        )?;
        let mut prev = Default::default();
        for ev in &b.log {
            let _ = dto::ledger_entry(ev, prev);
            let _ = dto::event_answer(&b.acct.id, ev, false, false, &b.pricing);
            prev = (ev.after, ev.held_after);
        }
    }
}
