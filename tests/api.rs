//! The HTTP API of the core daemon, against the real binary.

mod common;
use common::*;

#[test]
fn the_credits_page_numbers() {
    let d = Daemon::start("");
    let acct = d.create("influencer-1", "free");
    assert_eq!(acct["available"], 50);
    assert_eq!(acct["balances"]["free"], 50);
    assert_eq!(acct["status"], "active");
    for i in 0..15 {
        let (s, v) = d.debit("influencer-1", "sample_image", 1, &format!("img-{i}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["credits"], 3);
    }
    let (s, v) = d.debit("influencer-1", "video_generation", 1, "video-1");
    assert_eq!(s, 402, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_credits");
    assert_eq!(v["error"]["required"], 8);
    assert_eq!(v["error"]["available"], 5);
    assert_eq!(d.account("influencer-1")["available"], 5);
    // A refused request leaves no trace: after a pack, the same key goes through.
    let (s, _) = d.post(
        "/v1/accounts/influencer-1/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay-1" }),
    );
    assert_eq!(s, 200);
    let (s, v) = d.debit("influencer-1", "video_generation", 1, "video-1");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["taken"], json!({ "monthly": 0, "free": 5, "packs": 3 }));
    assert_eq!(v["balances"]["available"], 97);
}

#[test]
fn debits_take_monthly_then_free_then_packs_and_report_balances() {
    let d = Daemon::start("");
    d.create("a", "starter");
    d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_250", "payment_ref": "p" }),
    );
    let (s, v) = d.debit("a", "face_generation", 21, "k"); // 105 credits
    assert_eq!(s, 200);
    assert_eq!(v["taken"], json!({ "monthly": 50, "free": 50, "packs": 5 }));
    assert_eq!(
        v["balances"],
        json!({ "monthly": 0, "promo": 0, "free": 0, "packs": 245, "held": 0, "available": 245 })
    );
}

#[test]
fn dry_run_answers_and_changes_nothing() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.post("/v1/accounts/a/debits", json!({ "operation": "video_generation", "quantity": 2, "idempotency_key": "k", "dry_run": true }));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["credits"], 16);
    assert_eq!(v["balances"]["available"], 34);
    assert_eq!(d.account("a")["available"], 50);
    // The key was not bound by the dry run.
    let (s, v) = d.debit("a", "caption_generation", 1, "k");
    assert_eq!((s, v["credits"].clone()), (200, json!(1)));
    let (s, v) = d.post("/v1/accounts/a/debits", json!({ "operation": "video_generation", "quantity": 7, "idempotency_key": "k2", "dry_run": true }));
    assert_eq!(s, 402, "{v}");
}

#[test]
fn idempotency_same_body_duplicate_other_body_conflict_across_restart() {
    let mut d = Daemon::start("");
    d.create("a", "growth");
    let body = json!({ "operation": "sample_image", "quantity": 2, "idempotency_key": "job-7", "metadata": { "job": "7" } });
    let (s1, first) = d.post("/v1/accounts/a/debits", body.clone());
    assert_eq!(s1, 200);
    let (s2, again) = d.post("/v1/accounts/a/debits", body.clone());
    assert_eq!(s2, 200);
    assert_eq!(again["duplicate"], true);
    let mut expect = first.clone();
    expect["duplicate"] = json!(true);
    assert_eq!(again, expect);
    let (s, v) = d.post(
        "/v1/accounts/a/debits",
        json!({ "operation": "sample_image", "quantity": 3, "idempotency_key": "job-7" }),
    );
    assert_eq!(s, 409);
    assert_eq!(v["error"]["code"], "idempotency_conflict");
    d.restart();
    let (s, v) = d.post("/v1/accounts/a/debits", body);
    assert_eq!(s, 200);
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["seq"], first["seq"]);
    assert_eq!(d.account("a")["available"], 250 - 6);
    // Keys are scoped to an account.
    d.create("b", "free");
    let (s, v) = d.debit("b", "sample_image", 2, "job-7");
    assert_eq!((s, v["duplicate"].clone()), (200, json!(false)));
}

#[test]
fn purchases_are_idempotent_by_payment_ref_and_record_the_price() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_500", "payment_ref": "ch_1" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["price_cents"], 3500);
    assert_eq!(v["balances"]["packs"], 500);
    let (_, v) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_500", "payment_ref": "ch_1" }),
    );
    assert_eq!(v["duplicate"], true);
    let (s, v) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "ch_1" }),
    );
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("idempotency_conflict"))
    );
    assert_eq!(d.account("a")["balances"]["packs"], 500);
}

#[test]
fn plan_upgrade_now_downgrade_pending() {
    let d = Daemon::start("");
    d.create("a", "starter");
    let (s, v) = d.put(
        "/v1/accounts/a/plan",
        json!({ "plan": "agency", "idempotency_key": "up" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["credits"], 450);
    assert_eq!(v["pending"], false);
    let a = d.account("a");
    assert_eq!(
        (a["plan"].clone(), a["balances"]["monthly"].clone()),
        (json!("agency"), json!(500))
    );
    let (s, v) = d.put(
        "/v1/accounts/a/plan",
        json!({ "plan": "free", "idempotency_key": "cancel" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending"], true);
    assert_eq!(v["effective_at"], a["next_reset_at"]);
    let a = d.account("a");
    assert_eq!(a["plan"], "agency");
    assert_eq!(a["pending_plan"], "free");
    assert_eq!(a["balances"]["monthly"], 500);
    let (s, v) = d.put(
        "/v1/accounts/a/plan",
        json!({ "plan": "platinum", "idempotency_key": "x" }),
    );
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("plan")));
}

#[test]
fn period_rolls_over_at_the_boundary_even_when_idle() {
    let d = Daemon::start("[actors]\nsweep_interval_ms = 100\n");
    // An anchor whose period ends two seconds from now (by the daemon's own calendar).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let anchor = anchor_resetting_at(now + 2);
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "r", "plan": "starter", "billing_anchor": anchor }),
    );
    assert_eq!(s, 201, "{v}");
    let reset_at = v["next_reset_at"].as_str().unwrap().to_string();
    d.debit("r", "sample_image", 10, "k"); // 30 of the 50 monthly
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let (_, ledger) = d.get("/v1/accounts/r/ledger");
    let reset = &ledger["entries"][0];
    assert_eq!(reset["kind"], "reset", "{ledger}");
    assert_eq!(reset["time"], json!(reset_at));
    assert_eq!(reset["expired"], 20);
    let a = d.account("r");
    assert_eq!(
        a["balances"],
        json!({ "monthly": 50, "promo": 0, "free": 50, "packs": 0 })
    );
    assert_eq!(a["period_start"], json!(reset_at));
}

#[test]
fn grants_go_to_the_named_bucket() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.post("/v1/accounts/a/grants", json!({ "bucket": "packs", "credits": 30, "reason": "support ticket 12", "idempotency_key": "g1" }));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"]["packs"], 30);
    let (s, v) = d.post(
        "/v1/accounts/a/grants",
        json!({ "bucket": "gold", "credits": 30, "reason": "r", "idempotency_key": "g2" }),
    );
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("bucket")));
    let (s, v) = d.post(
        "/v1/accounts/a/grants",
        json!({ "bucket": "free", "credits": u64::MAX, "reason": "r", "idempotency_key": "g3" }),
    );
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("credits")),
        "{v}"
    );
}

#[test]
fn bad_input_is_a_4xx_naming_the_field_and_changes_nothing() {
    let d = Daemon::start("");
    d.create("a", "free");
    let debits = "/v1/accounts/a/debits";
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({ "operation": "sample_image", "quantity": -1, "idempotency_key": "k" }),
            400,
            "quantity",
        ),
        (
            json!({ "operation": "sample_image", "quantity": 0, "idempotency_key": "k" }),
            400,
            "quantity",
        ),
        (
            json!({ "operation": "sample_image", "quantity": 10001, "idempotency_key": "k" }),
            400,
            "quantity",
        ),
        (
            json!({ "operation": "sample_image", "quantity": 1e30, "idempotency_key": "k" }),
            400,
            "quantity",
        ),
        (
            json!({ "operation": "sample_image", "quantity": "2", "idempotency_key": "k" }),
            400,
            "quantity",
        ),
        (
            json!({ "operation": "teleport", "idempotency_key": "k" }),
            400,
            "operation",
        ),
        (
            json!({ "operation": 5, "idempotency_key": "k" }),
            400,
            "operation",
        ),
        (json!({ "idempotency_key": "k" }), 400, "operation"),
        (
            json!({ "operation": "sample_image" }),
            400,
            "idempotency_key",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "" }),
            400,
            "idempotency_key",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "x".repeat(129) }),
            400,
            "idempotency_key",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "k", "quantitiy": 2 }),
            400,
            "quantitiy",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "k", "metadata": { "a": 1 } }),
            400,
            "metadata",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "k", "metadata": { "a": "x".repeat(1100) } }),
            400,
            "metadata",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "k", "wait_seconds": 61 }),
            400,
            "wait_seconds",
        ),
        (
            json!({ "operation": "sample_image", "idempotency_key": "k", "dry_run": "yes" }),
            400,
            "dry_run",
        ),
    ];
    for (body, status, field) in cases {
        let (s, v) = d.post(debits, body.clone());
        assert_eq!(s, status, "{body} -> {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
    for raw in [
        "{",
        "[1,2]",
        "\"str\"",
        "{\"operation\": \"sample_image\",}",
        "null",
    ] {
        let (s, v) = d.raw("POST", debits, raw);
        assert_eq!(s, 400, "{raw} -> {v}");
        assert_eq!(v["error"]["field"], "body", "{raw} -> {v}");
    }
    // A declared length over the limit is refused before the body is read.
    let head = format!("POST {debits} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000\r\nConnection: close");
    let (s, text) = d.raw_tcp(&head, b"");
    assert_eq!(s, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    // So is a chunked body that turns out too long.
    let chunk = "x".repeat(70_000);
    let body = format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len());
    let head = format!(
        "POST {debits} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close"
    );
    let (s, text) = d.raw_tcp(&head, body.as_bytes());
    assert_eq!(s, 413, "{text}");
    // Bad account ids, unknown accounts, unknown routes and methods.
    let (s, v) = d.debit("bad id!", "sample_image", 1, "k");
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("account")));
    let (s, v) = d.debit(&"x".repeat(65), "sample_image", 1, "k");
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.debit("ghost", "sample_image", 1, "k");
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("account_not_found"))
    );
    let (s, _) = d.get("/v1/nothing");
    assert_eq!(s, 404);
    let (s, v) = d.call("DELETE", "/v1/accounts/a", None);
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    for (body, field) in [
        (json!({ "plan": "free" }), "id"),
        (json!({ "id": "ok", "plan": "gold" }), "plan"),
        (
            json!({ "id": "ok", "billing_anchor": "last tuesday" }),
            "billing_anchor",
        ),
        (json!({ "id": "has space" }), "id"),
    ] {
        let (s, v) = d.post("/v1/accounts", body.clone());
        assert_eq!(
            (s, v["error"]["field"].clone()),
            (400, json!(field)),
            "{body} -> {v}"
        );
    }
    let (s, v) = d.post("/v1/accounts", json!({ "id": "a" }));
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("account_exists"))
    );
    let (s, v) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_3", "payment_ref": "p" }),
    );
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("pack")));
    // Nothing above changed the account.
    let a = d.account("a");
    assert_eq!(a["available"], 50);
    assert_eq!(a["seq"], 1);
}

#[test]
fn graceful_restart_keeps_everything() {
    let mut d = Daemon::start("[storage]\nsnapshot_every = 7\n");
    d.create("a", "growth");
    d.create("b", "free");
    for i in 0..20 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("a{i}")).0,
            200
        );
    }
    d.post(
        "/v1/accounts/b/purchases",
        json!({ "pack": "pack_100", "payment_ref": "p" }),
    );
    d.put(
        "/v1/accounts/a/plan",
        json!({ "plan": "starter", "idempotency_key": "down" }),
    );
    let before = (d.account("a"), d.account("b"));
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
    d.start_again();
    assert_eq!((d.account("a"), d.account("b")), before);
}

#[test]
fn pricing_health_and_readiness() {
    let d = Daemon::start("[operations]\nsample_image = 4\nface_generation = 5\n");
    let (s, p) = d.get("/v1/pricing");
    assert_eq!(s, 200);
    assert_eq!(
        p["operations"],
        json!({ "face_generation": 5, "sample_image": 4 })
    );
    assert_eq!(p["plans"]["growth"], 200);
    assert_eq!(
        p["packs"]["pack_1000"],
        json!({ "credits": 1000, "price_cents": 6000 })
    );
    assert_eq!(p["thresholds"], json!([25, 10, 0]));
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/readyz").0, 200);
    let (s, v) = d.debit("nobody", "video_generation", 1, "k");
    assert_eq!(s, 400, "video_generation is not configured here: {v}");
}

#[test]
fn an_oversized_body_sent_whole_gets_its_413_and_a_slow_body_a_408() {
    let d = Daemon::start("[server]\nbody_read_timeout_ms = 500\n");
    d.create("a", "free");
    // A client that writes its whole 70 KB body before reading must read the 413, not a
    // broken pipe: the server drains what it refuses (up to 4x the limit).
    let huge = format!(
        "{{\"operation\":\"sample_image\",\"idempotency_key\":\"k\",\"metadata\":{{\"a\":\"{}\"}}}}",
        "x".repeat(70_000)
    );
    for _ in 0..20 {
        let (s, v) = d.raw("POST", "/v1/accounts/a/debits", &huge);
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (413, json!("body_too_large")),
            "{v}"
        );
    }
    // A body that trickles is cut off when its time is up, with a 408.
    let head = "POST /v1/accounts/a/debits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100";
    let started = std::time::Instant::now();
    let (s, text) = d.raw_tcp(head, b"{\"operation\":");
    assert_eq!(s, 408, "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.account("a")["available"], 50);
}
