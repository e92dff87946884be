//! Holds, batch debits and parked debits, against the real binary.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn hold(d: &Daemon, id: &str, op: &str, qty: u64, key: &str, ttl: Option<u64>) -> (u16, Value) {
    let mut body = json!({ "operation": op, "quantity": qty, "idempotency_key": key });
    if let Some(t) = ttl {
        body["ttl_seconds"] = json!(t);
    }
    d.post(&format!("/v1/accounts/{id}/holds"), body)
}

#[test]
fn partial_capture_spends_part_and_returns_the_rest() {
    let d = Daemon::start("");
    d.create("a", "starter"); // 50 monthly + 50 free
    let (s, h) = hold(&d, "a", "video_generation", 7, "h1", None); // 56: 50 monthly + 6 free
    assert_eq!(s, 201, "{h}");
    assert_eq!(h["hold_id"], "h1");
    assert_eq!(
        h["balances"],
        json!({ "monthly": 0, "promo": 0, "free": 44, "packs": 0, "held": 56, "available": 44 })
    );
    let a = d.account("a");
    assert_eq!(a["held"], 56);
    assert_eq!(a["holds"][0]["hold_id"], "h1");
    assert_eq!(a["holds"][0]["expires_at"], h["expires_at"]);
    let (s, c) = d.post("/v1/accounts/a/holds/h1/capture", json!({ "credits": 20 }));
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["credits"], 20);
    assert_eq!(c["spent"], json!({ "monthly": 20, "free": 0, "packs": 0 }));
    assert_eq!(
        c["returned"],
        json!({ "monthly": 30, "free": 6, "packs": 0 })
    );
    assert_eq!(
        c["balances"],
        json!({ "monthly": 30, "promo": 0, "free": 50, "packs": 0, "held": 0, "available": 80 })
    );
    // A closed hold cannot be captured or released again; an unknown one is 404.
    let (s, v) = d.post("/v1/accounts/a/holds/h1/capture", json!({}));
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("hold_closed")));
    let (s, v) = d.post("/v1/accounts/a/holds/h1/release", json!({}));
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("hold_closed")));
    let (s, v) = d.post("/v1/accounts/a/holds/h9/release", json!({}));
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("hold_not_found"))
    );
    let (s, v) = d.post("/v1/accounts/a/holds/nonsense/release", json!({}));
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("hold_not_found"))
    );
    assert_eq!(d.account("a")["available"], 80);
}

#[test]
fn capture_more_than_held_is_refused_and_release_gives_everything_back() {
    let d = Daemon::start("");
    d.create("a", "free");
    hold(&d, "a", "sample_image", 2, "h", None);
    let (s, v) = d.post("/v1/accounts/a/holds/h1/capture", json!({ "credits": 7 }));
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("credits")));
    let (s, v) = d.post("/v1/accounts/a/holds/h1/release", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["returned"],
        json!({ "monthly": 0, "free": 6, "packs": 0 })
    );
    let a = d.account("a");
    assert_eq!(
        (a["available"].clone(), a["held"].clone()),
        (json!(50), json!(0))
    );
    // A hold the account cannot cover is a 402 and holds nothing.
    let (s, v) = hold(&d, "a", "video_generation", 7, "big", None);
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (402, json!("insufficient_credits"))
    );
    // Capture with an idempotency key is idempotent.
    hold(&d, "a", "caption_generation", 4, "h2", None);
    let first = d.post(
        "/v1/accounts/a/holds/h2/capture",
        json!({ "credits": 3, "idempotency_key": "cap" }),
    );
    let again = d.post(
        "/v1/accounts/a/holds/h2/capture",
        json!({ "credits": 3, "idempotency_key": "cap" }),
    );
    assert_eq!(first.0, 200);
    assert_eq!(again.1["duplicate"], true);
    assert_eq!(again.1["seq"], first.1["seq"]);
}

#[test]
fn an_expired_hold_releases_itself_on_time() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (_, h) = hold(&d, "a", "face_generation", 2, "h", Some(1));
    assert_eq!(d.account("a")["available"], 40);
    std::thread::sleep(Duration::from_millis(1600));
    // Read the ledger first: the expiry must already be recorded by the actor's timer.
    let (_, ledger) = d.get("/v1/accounts/a/ledger?limit=1");
    let e = &ledger["entries"][0];
    assert_eq!(e["kind"], "release", "{ledger}");
    assert_eq!(e["reason"], "expired");
    assert_eq!(e["time"], h["expires_at"]);
    let a = d.account("a");
    assert_eq!(
        (a["available"].clone(), a["holds"].clone()),
        (json!(50), json!([]))
    );
}

#[test]
fn open_holds_survive_a_restart_and_keep_their_ttl() {
    let mut d = Daemon::start("");
    d.create("a", "growth");
    let (_, h1) = hold(&d, "a", "video_generation", 1, "long", Some(600));
    hold(&d, "a", "video_generation", 1, "short", Some(3));
    d.restart();
    let a = d.account("a");
    assert_eq!(a["holds"].as_array().unwrap().len(), 2, "{a}");
    assert_eq!(a["holds"][0]["expires_at"], h1["expires_at"]);
    std::thread::sleep(Duration::from_millis(3200));
    let a = d.account("a");
    assert_eq!(a["holds"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["held"], 8);
    let (s, v) = d.post("/v1/accounts/a/holds/h1/capture", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.account("a")["available"], 250 - 8);
}

#[test]
fn a_batch_with_one_bad_item_among_999_good_ones() {
    let d = Daemon::start("");
    let accounts = 10;
    for a in 0..accounts {
        d.create(&format!("b{a}"), "agency"); // 550 credits each
    }
    let mut items: Vec<Value> = (0..1000)
        .map(|i| json!({ "account": format!("b{}", i % accounts), "operation": "caption_generation", "idempotency_key": format!("item-{i}") }))
        .collect();
    items[500] = json!({ "account": "b0", "operation": "teleport", "idempotency_key": "bad" });
    let (s, v) = d.post("/v1/debits", json!({ "debits": items }));
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        if i == 500 {
            assert_eq!(r["code"], 400, "{r}");
            assert_eq!(r["error"]["field"], "operation");
        } else {
            assert_eq!(r["code"], 200, "{i}: {r}");
            assert_eq!(r["account"], format!("b{}", i % accounts));
            assert_eq!(r["idempotency_key"], format!("item-{i}"));
        }
    }
    // Items for one account keep their order: their seqs increase with the item index.
    let seqs: Vec<u64> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| i % accounts == 3)
        .map(|(_, r)| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for a in 0..accounts {
        let expected = if a == 0 { 550 - 99 } else { 550 - 100 };
        assert_eq!(d.account(&format!("b{a}"))["available"], expected);
    }
    // The same item again is the same request as the single debit with its fields.
    let (_, v) = d.post("/v1/debits", json!({ "debits": [{ "account": "b1", "operation": "caption_generation", "idempotency_key": "item-1" }] }));
    assert_eq!(v["results"][0]["duplicate"], true);
    let (s, v) = d.debit("b1", "caption_generation", 1, "item-1");
    assert_eq!((s, v["duplicate"].clone()), (200, json!(true)));
    let (s, v) = d.debit("b1", "caption_generation", 2, "item-1");
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("idempotency_conflict"))
    );
    // Limits: more than 1000 items, or none.
    let many: Vec<Value> = (0..1001).map(|i| json!({ "account": "b1", "operation": "caption_generation", "idempotency_key": format!("x{i}") })).collect();
    let (s, v) = d.post("/v1/debits", json!({ "debits": many }));
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("debits")));
    let (s, _) = d.post("/v1/debits", json!({ "debits": [] }));
    assert_eq!(s, 400);
    // An unknown account and an insufficient one fail alone.
    let (_, v) = d.post(
        "/v1/debits",
        json!({ "debits": [
            { "account": "ghost", "operation": "caption_generation", "idempotency_key": "g" },
            { "account": "b2", "operation": "video_generation", "quantity": 1000, "idempotency_key": "big" },
            { "account": "b2", "operation": "caption_generation", "idempotency_key": "ok" },
        ] }),
    );
    let statuses: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![404, 402, 200]);
}

#[test]
fn a_parked_debit_is_released_by_a_purchase() {
    let d = Daemon::start("");
    d.create("p", "free");
    d.debit("p", "face_generation", 9, "drain"); // 45 of 50
    let started = Instant::now();
    let answer = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            d.post("/v1/accounts/p/debits", json!({ "operation": "video_generation", "idempotency_key": "parked", "wait_seconds": 30 }))
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "the debit should be parked");
        let (s, _) = d.post(
            "/v1/accounts/p/purchases",
            json!({ "pack": "pack_100", "payment_ref": "pay" }),
        );
        assert_eq!(s, 200);
        waiter.join().unwrap()
    });
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        answer.1["taken"],
        json!({ "monthly": 0, "free": 5, "packs": 3 })
    );
    // It went through as soon as the pack arrived, far from its 30 s wait.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.account("p")["available"], 97);
}

#[test]
fn a_parked_debit_times_out_with_402() {
    let d = Daemon::start("");
    d.create("p", "free");
    let started = Instant::now();
    let (s, v) = d.post("/v1/accounts/p/debits", json!({ "operation": "video_generation", "quantity": 7, "idempotency_key": "k", "wait_seconds": 1 }));
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (402, json!("insufficient_credits")),
        "{v}"
    );
    assert_eq!(v["error"]["required"], 56);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it must wait: {:?}",
        started.elapsed()
    );
    // Nothing was recorded: the same key goes through once credits exist.
    d.post(
        "/v1/accounts/p/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay" }),
    );
    let (s, v) = d.post(
        "/v1/accounts/p/debits",
        json!({ "operation": "video_generation", "quantity": 7, "idempotency_key": "k" }),
    );
    assert_eq!((s, v["duplicate"].clone()), (200, json!(false)), "{v}");
}

#[test]
fn a_disconnected_parked_client_is_charged_nothing() {
    let d = Daemon::start("");
    d.create("p", "free");
    let body = r#"{"operation":"video_generation","quantity":7,"idempotency_key":"gone","wait_seconds":30}"#;
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&d.addr).unwrap();
        write!(s, "POST /v1/accounts/p/debits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Dropped here: the client hangs up while parked.
    }
    std::thread::sleep(Duration::from_millis(700));
    let (s, _) = d.post(
        "/v1/accounts/p/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay" }),
    );
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.account("p")["available"], 150);
    let ledger = full_ledger(&d, "p");
    assert!(ledger.iter().all(|e| e["kind"] != "debit"), "{ledger:?}");
}

#[test]
fn parked_debits_are_served_in_arrival_order() {
    let d = Daemon::start("");
    d.create("p", "free");
    d.debit("p", "face_generation", 10, "drain"); // 0 left
    let answers = std::thread::scope(|s| {
        let mut waiters = Vec::new();
        for i in 0..3 {
            let d = &d;
            waiters.push(s.spawn(move || {
                d.post("/v1/accounts/p/debits", json!({ "operation": "face_generation", "quantity": 10, "idempotency_key": format!("w{i}"), "wait_seconds": 20 }))
            }));
            std::thread::sleep(Duration::from_millis(150));
        }
        // 100 credits: the first two (50 each) fit, the third waits on.
        d.post(
            "/v1/accounts/p/purchases",
            json!({ "pack": "pack_100", "payment_ref": "pay" }),
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiters[2].is_finished());
        d.post(
            "/v1/accounts/p/grants",
            json!({ "bucket": "packs", "credits": 50, "reason": "r", "idempotency_key": "g" }),
        );
        waiters
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    let seqs: Vec<u64> = answers
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200, "{v}");
            v["seq"].as_u64().unwrap()
        })
        .collect();
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2], "{seqs:?}");
    assert_eq!(d.account("p")["available"], 0);
}

#[test]
fn a_parked_debit_behind_a_larger_one_is_applied_when_its_wait_ends_if_it_fits() {
    let d = Daemon::start("");
    d.create("p", "free");
    d.debit("p", "face_generation", 9, "drain"); // 5 left
    std::thread::scope(|s| {
        let head = s.spawn(|| d.post("/v1/accounts/p/debits", json!({ "operation": "video_generation", "quantity": 10, "idempotency_key": "head", "wait_seconds": 3 })));
        std::thread::sleep(Duration::from_millis(200));
        // Fits now, but waits its turn behind the head; when its own wait ends it goes through.
        let (s2, v2) = d.post("/v1/accounts/p/debits", json!({ "operation": "caption_generation", "idempotency_key": "small", "wait_seconds": 1 }));
        assert_eq!(s2, 200, "{v2}");
        assert_eq!(v2["balances"]["available"], 4);
        let (s1, v1) = head.join().unwrap();
        assert_eq!(
            (s1, v1["error"]["required"].clone()),
            (402, json!(80)),
            "{v1}"
        );
    });
}

#[test]
fn a_hold_expiry_reaches_the_feed_with_no_other_traffic() {
    let d = Daemon::start("");
    d.create("a", "free");
    hold(&d, "a", "sample_image", 1, "h", Some(1));
    // Nothing else happens: the expiry must still be made durable and published.
    let started = Instant::now();
    let (s, v) = d.get("/v1/events?after=0&wait_seconds=20");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"][0]["type"], "hold.expired", "{v}");
    assert_eq!(v["events"][0]["account"], "a");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
