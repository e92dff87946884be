//! Low-balance alerts and the durable event feed, against the real binary.

mod common;
use common::*;

/// The feed of the first edition's notices: the forecast alert, which a fast spend-down
/// also fires, is off here (`tests/second_edition.rs` tests it).
const NO_FORECAST: &str = "[alerts]\nforecast_hours = 0\n";

use std::time::{Duration, Instant};

/// The whole feed from the start, following `next` page by page.
fn feed(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let (s, v) = d.get(&format!("/v1/events?after={after}&limit=1000"));
        assert_eq!(s, 200, "{v}");
        let events = v["events"].as_array().unwrap().clone();
        if events.is_empty() {
            // Nothing new: the cursor stays where the client is.
            assert_eq!(v["next"], json!(after.to_string()), "{v}");
            return out;
        }
        after = v["next"].as_str().unwrap().parse().unwrap();
        assert_eq!(events.last().unwrap()["id"], after);
        out.extend(events);
    }
}

/// `(type, threshold)` of one account's feed events, in feed order.
fn kinds_of(events: &[Value], account: &str) -> Vec<(String, Option<u64>)> {
    events
        .iter()
        .filter(|e| e["account"] == account)
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["threshold"].as_u64(),
            )
        })
        .collect()
}

fn k(t: &str, threshold: Option<u64>) -> (String, Option<u64>) {
    (t.to_string(), threshold)
}

fn assert_ids_strictly_increase(events: &[Value]) {
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn starter_spent_down_step_by_step_alerts_once_each_then_rearm_after_purchase() {
    let d = Daemon::start(NO_FORECAST);
    // starter: 50 monthly + 50 free = a period budget of 100.
    let acct = d.create("s", "starter");
    assert_eq!(acct["available"], 100);
    let mut fired = Vec::new();
    // 20 debits of 5 credits: 95, 90, ... 0.
    for step in 1..=20u64 {
        let (s, v) = d.debit("s", "face_generation", 1, &format!("f{step}"));
        assert_eq!(s, 200, "{v}");
        let available = 100 - 5 * step;
        assert_eq!(v["balances"]["available"], available);
        let expected = match available {
            25 => json!([{ "type": "balance.low", "threshold": 25 }]),
            10 => json!([{ "type": "balance.low", "threshold": 10 }]),
            0 => json!([{ "type": "balance.exhausted", "threshold": 0 }]),
            _ => json!([]),
        };
        assert_eq!(v["alerts"], expected, "after the debit to {available}");
        assert_eq!(
            v["status"],
            if available == 0 { "paused" } else { "active" }
        );
        if expected != json!([]) {
            fired.push(available);
        }
    }
    assert_eq!(fired, vec![25, 10, 0]);

    // Paused: debits are refused, reads work.
    assert_eq!(d.account("s")["status"], "paused");
    let (s, v) = d.debit("s", "caption_generation", 1, "refused");
    assert_eq!(s, 402, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_credits");

    // A purchase replenishes and re-arms every threshold (100 of a budget of 200 is 50 %).
    let (s, v) = d.post(
        "/v1/accounts/s/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay-1" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["alerts"], json!([{ "type": "balance.replenished" }]));
    assert_eq!(v["status"], "active");
    assert_eq!(d.account("s")["status"], "active");
    // The refused key leaves no trace: it goes through now.
    let (s, v) = d.debit("s", "caption_generation", 1, "refused");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["alerts"], json!([]));
    // 99 left of 200: 25 % is 50, so 49 more credits (to 50) fire 25 again, not before.
    let (s, v) = d.debit("s", "caption_generation", 48, "down-to-51");
    assert_eq!((s, v["alerts"].clone()), (200, json!([])), "{v}");
    let (s, v) = d.debit("s", "caption_generation", 1, "down-to-50");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"]["available"], 50);
    assert_eq!(
        v["alerts"],
        json!([{ "type": "balance.low", "threshold": 25 }])
    );

    // The feed says the same, once each, in order.
    let events = feed(&d);
    assert_ids_strictly_increase(&events);
    assert_eq!(
        kinds_of(&events, "s"),
        vec![
            k("balance.low", Some(25)),
            k("balance.low", Some(10)),
            k("balance.exhausted", Some(0)),
            k("purchase.completed", None),
            k("balance.replenished", None),
            k("balance.low", Some(25)),
        ]
    );
    let low = &events[0];
    assert_eq!(low["account"], "s");
    assert_eq!(
        low["balances"],
        json!({ "monthly": 0, "promo": 0, "free": 25, "packs": 0, "held": 0, "available": 25 })
    );
    assert!(low["time"].as_str().unwrap().ends_with('Z'), "{low}");
    let exhausted = &events[2];
    assert_eq!(exhausted["balances"]["available"], 0);
}

#[test]
fn a_parked_debit_resumes_when_a_purchase_replenishes() {
    let d = Daemon::start(NO_FORECAST);
    d.create("p", "free");
    let (s, _) = d.debit("p", "face_generation", 10, "all");
    assert_eq!(s, 200);
    assert_eq!(d.account("p")["status"], "paused");
    let addr = d.addr.clone();
    let parked = std::thread::spawn(move || {
        ureq::post(&format!("http://{addr}/v1/accounts/p/debits"))
            .send_json(json!({ "operation": "face_generation", "idempotency_key": "parked", "wait_seconds": 30 }))
            .map(|r| (r.status(), r.into_json::<Value>().unwrap()))
            .map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (s, v) = d.post(
        "/v1/accounts/p/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay" }),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = parked.join().unwrap().expect("the parked debit answers");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"]["available"], 95);
    let types: Vec<_> = kinds_of(&feed(&d), "p")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "balance.low",
            "balance.low",
            "balance.exhausted",
            "purchase.completed",
            "balance.replenished"
        ]
    );
}

#[test]
fn reset_plan_change_purchase_and_hold_expiry_are_in_the_feed() {
    let d = Daemon::start(&format!("{NO_FORECAST}[actors]\nsweep_interval_ms = 100\n"));
    // The period of `r` ends two seconds from now.
    let anchor = anchor_resetting_at(now_secs() + 2);
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "r", "plan": "starter", "billing_anchor": anchor }),
    );
    assert_eq!(s, 201, "{v}");
    let reset_at = v["next_reset_at"].as_str().unwrap().to_string();
    d.create("x", "starter");
    let (s, _) = d.put(
        "/v1/accounts/x/plan",
        json!({ "plan": "growth", "idempotency_key": "up" }),
    );
    assert_eq!(s, 200);
    let (s, _) = d.post(
        "/v1/accounts/x/purchases",
        json!({ "pack": "pack_250", "payment_ref": "pay" }),
    );
    assert_eq!(s, 200);
    let (s, v) = d.post(
        "/v1/accounts/x/holds",
        json!({ "operation": "video_generation", "idempotency_key": "h", "ttl_seconds": 1 }),
    );
    assert_eq!(s, 201, "{v}");
    let hold_id = v["hold_id"].clone();

    // Wait (long polls, bounded) for the reset and the expiry to be announced.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = feed(&d);
        let has = |t: &str| events.iter().any(|e| e["type"] == t);
        if has("period.reset") && has("hold.expired") {
            break events;
        }
        assert!(Instant::now() < deadline, "missing events: {events:?}");
        let after = events
            .last()
            .map(|e| e["id"].as_u64().unwrap())
            .unwrap_or(0);
        d.get(&format!("/v1/events?after={after}&wait_seconds=2"));
    };
    assert_ids_strictly_increase(&events);
    let reset: Vec<_> = events.iter().filter(|e| e["account"] == "r").collect();
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert_eq!(reset[0]["type"], "period.reset");
    assert_eq!(reset[0]["time"], json!(reset_at));
    assert_eq!(reset[0]["balances"]["monthly"], 50);
    assert_eq!(
        kinds_of(&events, "x"),
        vec![
            k("plan.changed", None),
            k("purchase.completed", None),
            k("hold.expired", None),
        ]
    );
    let expired = events.iter().find(|e| e["type"] == "hold.expired").unwrap();
    assert_eq!(expired["balances"]["held"], 0);
    assert_eq!(
        expired["balances"]["available"],
        50 + 50 + 150 + 250,
        "the expired hold's credits are back"
    );
    let a = d.account("x");
    assert_eq!(a["held"], 0, "{a}");
    assert_eq!(a["holds"], json!([]), "{hold_id} is still open: {a}");
}

#[test]
fn a_long_poll_wakes_when_an_event_arrives() {
    let d = Daemon::start(NO_FORECAST);
    d.create("w", "free");
    let (s, v) = d.get("/v1/events?after=0&wait_seconds=0");
    assert_eq!((s, v.clone()), (200, json!({ "events": [], "next": "0" })));
    let addr = d.addr.clone();
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let v: Value = ureq::get(&format!("http://{addr}/v1/events?after=0&wait_seconds=30"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        (v, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (s, _) = d.post(
        "/v1/accounts/w/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay" }),
    );
    assert_eq!(s, 200);
    let (v, waited) = poll.join().unwrap();
    assert_eq!(v["events"][0]["type"], "purchase.completed", "{v}");
    assert_eq!(v["next"], json!(v["events"][0]["id"].to_string()));
    // Woken by the event, not by the end of the wait (generous margin: 30 s wait).
    assert!(waited < Duration::from_secs(15), "{waited:?}");
}

#[test]
fn the_feed_is_identical_across_a_restart_and_a_sigkill() {
    let mut d = Daemon::start(NO_FORECAST);
    d.create("a", "starter");
    d.create("b", "free");
    for i in 0..20 {
        d.debit("a", "face_generation", 1, &format!("a{i}"));
    }
    d.post(
        "/v1/accounts/b/purchases",
        json!({ "pack": "pack_100", "payment_ref": "p" }),
    );
    let before = feed(&d);
    assert_eq!(before.len(), 4, "{before:?}");
    d.restart();
    assert_eq!(feed(&d), before);

    d.put(
        "/v1/accounts/b/plan",
        json!({ "plan": "agency", "idempotency_key": "up" }),
    );
    d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_500", "payment_ref": "p2" }),
    );
    let before = feed(&d);
    assert_eq!(before.len(), 7, "{before:?}");
    d.kill9();
    d.start_again();
    assert_eq!(feed(&d), before);
    // Ids keep increasing after the crash; none is handed out twice.
    d.post(
        "/v1/accounts/b/purchases",
        json!({ "pack": "pack_100", "payment_ref": "p3" }),
    );
    let after = feed(&d);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert_ids_strictly_increase(&after);
}
