//! The second edition (SPEC section 5) against the real binary: promo blocks, refunds,
//! `affordable`, the account at a past instant, per-account and forecast alerts, members,
//! SIGKILL between the steps of each new flow, and refusals that leave no trace.

mod common;
use common::*;

use creditsd::domain::Ts;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers

/// Milliseconds since the epoch now (the daemon's clock: no `CREDITSD_TEST_NOW` here).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ms(rfc3339: &str) -> i64 {
    Ts::parse_rfc3339(rfc3339)
        .unwrap_or_else(|| panic!("not RFC 3339: {rfc3339}"))
        .millis()
}

fn rfc(ms: i64) -> String {
    Ts(ms).to_rfc3339()
}

const DAY_MS: i64 = 86_400_000;

fn grant(
    d: &Daemon,
    id: &str,
    bucket: &str,
    credits: u64,
    expires_at: Option<&str>,
    key: &str,
) -> (u16, Value) {
    let mut body = json!({ "bucket": bucket, "credits": credits, "reason": "promo test", "idempotency_key": key });
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    d.post(&format!("/v1/accounts/{id}/grants"), body)
}

fn promo(d: &Daemon, id: &str, credits: u64, expires_at: &str, key: &str) -> Value {
    let (s, v) = grant(d, id, "promo", credits, Some(expires_at), key);
    assert_eq!(s, 200, "{v}");
    v
}

fn refund(d: &Daemon, id: &str, debit_key: &str, credits: Option<u64>, key: &str) -> (u16, Value) {
    let mut body = json!({ "reason": "bad output", "idempotency_key": key });
    if let Some(c) = credits {
        body["credits"] = json!(c);
    }
    d.post(
        &format!("/v1/accounts/{id}/debits/{debit_key}/refund"),
        body,
    )
}

fn member_debit(d: &Daemon, id: &str, op: &str, qty: u64, member: &str, key: &str) -> (u16, Value) {
    d.post(
        &format!("/v1/accounts/{id}/debits"),
        json!({ "operation": op, "quantity": qty, "member": member, "idempotency_key": key }),
    )
}

fn set_member(d: &Daemon, id: &str, member: &str, cap: Value, key: &str) -> Value {
    let (s, v) = d.put(
        &format!("/v1/accounts/{id}/members/{member}"),
        json!({ "cap_per_period": cap, "idempotency_key": key }),
    );
    assert_eq!(s, 200, "{v}");
    v
}

fn ok(r: (u16, Value)) -> Value {
    assert_eq!(r.0, 200, "{}", r.1);
    r.1
}

/// Asserts a refusal with `status` and `code` and answers its error object.
fn refused(r: (u16, Value), status: u16, code: &str) -> Value {
    assert_eq!(
        (r.0, r.1["error"]["code"].as_str().unwrap_or("")),
        (status, code),
        "{}",
        r.1
    );
    r.1["error"].clone()
}

/// A 400 naming `field`.
fn bad(r: (u16, Value), field: &str) {
    let e = refused(r, 400, "invalid_request");
    assert_eq!(e["field"], field, "{e}");
}

/// What a refusal must not change: the account view (seq, balances, blocks, members,
/// alert settings) and the whole ledger.
fn trace(d: &Daemon, id: &str) -> (Value, Vec<Value>) {
    (d.account(id), full_ledger(d, id))
}

fn assert_no_trace(d: &Daemon, id: &str, before: &(Value, Vec<Value>), what: &str) {
    let after = trace(d, id);
    assert_eq!(after.0, before.0, "{what} changed the account");
    assert_eq!(after.1, before.1, "{what} changed the ledger");
}

/// `affordable` is `available / price`, rounded down, for every operation in the price list.
fn assert_affordable(pricing: &Value, v: &Value) {
    let available = v["balances"]["available"]
        .as_u64()
        .or_else(|| v["available"].as_u64())
        .unwrap_or_else(|| panic!("no available in {v}"));
    let ops = pricing["operations"].as_object().unwrap();
    let want: serde_json::Map<String, Value> = ops
        .iter()
        .map(|(op, price)| (op.clone(), json!(available / price.as_u64().unwrap())))
        .collect();
    assert_eq!(v["affordable"], Value::Object(want), "affordable of {v}");
}

fn pricing(d: &Daemon) -> Value {
    let (s, p) = d.get("/v1/pricing");
    assert_eq!(s, 200, "{p}");
    p
}

/// Polls the ledger until its newest entry is of `kind`.
fn wait_for_kind(d: &Daemon, id: &str, kind: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, ledger) = d.get(&format!("/v1/accounts/{id}/ledger?limit=5"));
        if let Some(e) = ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
        {
            return e.clone();
        }
        assert!(Instant::now() < deadline, "no {kind} entry: {ledger}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Feed entries of `account` (all of them: tests make few).
fn events(d: &Daemon, account: &str) -> Vec<Value> {
    let (s, v) = d.get("/v1/events?after=0&limit=1000");
    assert_eq!(s, 200, "{v}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["account"] == account)
        .cloned()
        .collect()
}

fn alert_types(v: &Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("no alerts in {v}"))
        .iter()
        .map(|a| a["type"].as_str().unwrap().to_string())
        .collect()
}

fn metrics(d: &Daemon) -> String {
    let (s, text) = d.raw_tcp("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close", b"");
    assert_eq!(s, 200, "{text}");
    text
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|f| f as u64)
}

/// `grant_id` of the account's open block expiring at `expires_at`.
fn block_id(d: &Daemon, id: &str, expires_at: &str) -> String {
    let a = d.account(id);
    a["promo_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| ms(b["expires_at"].as_str().unwrap()) == ms(expires_at))
        .unwrap_or_else(|| panic!("no block expiring at {expires_at}: {a}"))["grant_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A `taken`/`refunded` object: the three buckets always, plus the named promo blocks.
fn sources(monthly: u64, free: u64, packs: u64, blocks: &[(&str, u64)]) -> Value {
    let mut v = json!({ "monthly": monthly, "free": free, "packs": packs });
    for (g, c) in blocks {
        v[format!("promo:{g}")] = json!(c);
    }
    v
}

// ---------------------------------------------------------------------------------------
// Promo blocks

/// Ledger entries of one kind.
fn count_kind(ledger: &[Value], kind: &str) -> usize {
    ledger.iter().filter(|e| e["kind"] == kind).count()
}

/// After a restart: account `a`'s promo block expired exactly once (a replay does not
/// repeat the expiry), 50 credits are left, and the books audit clean after a graceful stop.
fn expired_once_then_audited(d: &mut Daemon) {
    assert_eq!(count_kind(&full_ledger(d, "a"), "promo_expired"), 1);
    assert_eq!(d.account("a")["available"], 50);
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

#[test]
fn promo_grants_need_a_future_expiry_and_only_promo_takes_one() {
    let d = Daemon::start("");
    d.create("a", "starter");
    let later = rfc(now_ms() + 5 * DAY_MS);
    let before = trace(&d, "a");
    bad(grant(&d, "a", "promo", 10, None, "p"), "expires_at");
    bad(grant(&d, "a", "packs", 10, Some(&later), "p"), "expires_at");
    bad(grant(&d, "a", "free", 10, Some(&later), "p"), "expires_at");
    bad(
        grant(&d, "a", "monthly", 10, Some(&later), "p"),
        "expires_at",
    );
    bad(
        grant(&d, "a", "promo", 10, Some(&rfc(now_ms() - 1000)), "p"),
        "expires_at",
    );
    bad(
        grant(&d, "a", "promo", 10, Some("next tuesday"), "p"),
        "expires_at",
    );
    assert_no_trace(&d, "a", &before, "refused promo grants");

    // The key was bound by none of them.
    let g = promo(&d, "a", 10, &later, "p");
    assert_eq!(g["duplicate"], false, "{g}");
    assert_eq!(ms(g["expires_at"].as_str().unwrap()), ms(&later), "{g}");
    assert_eq!(g["balances"]["promo"], 10, "{g}");
    assert_eq!(g["balances"]["available"], 110, "{g}");
    assert_affordable(&pricing(&d), &g);
    // Same key, same body: a duplicate; another expiry under it: a conflict.
    let again = promo(&d, "a", 10, &later, "p");
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), g["seq"].clone())
    );
    let before = trace(&d, "a");
    refused(
        grant(&d, "a", "promo", 10, Some(&rfc(now_ms() + 6 * DAY_MS)), "p"),
        409,
        "idempotency_conflict",
    );
    assert_no_trace(&d, "a", &before, "a conflicting promo grant");
    // A packs grant still takes no expiry and works as before.
    let (s, v) = grant(&d, "a", "packs", 5, None, "k");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"]["promo"], 10, "{v}");
    assert_eq!(v["balances"]["packs"], 5, "{v}");
}

#[test]
fn promo_blocks_are_listed_and_consumed_soonest_expiring_first_together_with_monthly() {
    let d = Daemon::start("");
    let created = d.create("a", "starter"); // 50 monthly (expire at next_reset_at), 50 free
    let reset = created["next_reset_at"].as_str().unwrap().to_string();
    let soon = rfc(now_ms() + 3 * DAY_MS); // before the reset
    let late = rfc(ms(&reset) + 30 * DAY_MS); // after it
    promo(&d, "a", 30, &late, "late");
    promo(&d, "a", 20, &soon, "soon");
    promo(&d, "a", 10, &reset, "tie"); // expires with monthly: monthly goes first
    let (gs, gt, gl) = (
        block_id(&d, "a", &soon),
        block_id(&d, "a", &reset),
        block_id(&d, "a", &late),
    );
    let a = d.account("a");
    let listed: Vec<(i64, u64)> = a["promo_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                ms(b["expires_at"].as_str().unwrap()),
                b["credits"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![(ms(&soon), 20), (ms(&reset), 10), (ms(&late), 30)],
        "blocks soonest expiring first: {a}"
    );
    assert_eq!(a["balances"]["promo"], 60, "{a}");
    assert_eq!(a["available"], 160, "{a}");
    let p = pricing(&d);
    assert_affordable(&p, &a);

    // 25: the soonest block (20), then monthly.
    let v = ok(d.debit("a", "face_generation", 5, "d1"));
    assert_eq!(v["taken"], sources(5, 0, 0, &[(&gs, 20)]), "{v}");
    assert_affordable(&p, &v);
    // 50: monthly (45) before the block expiring at the same instant (5).
    let v = ok(d.debit("a", "face_generation", 10, "d2"));
    assert_eq!(v["taken"], sources(45, 0, 0, &[(&gt, 5)]), "{v}");
    // 20: the rest of the tie block, then the late block.
    let v = ok(d.debit("a", "face_generation", 4, "d3"));
    assert_eq!(v["taken"], sources(0, 0, 0, &[(&gt, 5), (&gl, 15)]), "{v}");
    // 30: the late block runs out, then free.
    let v = ok(d.debit("a", "face_generation", 6, "d4"));
    assert_eq!(v["taken"], sources(0, 15, 0, &[(&gl, 15)]), "{v}");
    assert_eq!(
        v["balances"],
        json!({ "monthly": 0, "promo": 0, "free": 35, "packs": 0, "held": 0, "available": 35 })
    );
    let a = d.account("a");
    assert_eq!(a["promo_blocks"], json!([]), "{a}");
    assert_eq!(a["balances"]["promo"], 0);
    // The ledger records the promo change of each debit.
    let ledger = full_ledger(&d, "a");
    let promo_changes: Vec<i64> = ledger
        .iter()
        .filter(|e| e["kind"] == "debit")
        .map(|e| e["change"]["promo"].as_i64().unwrap())
        .collect();
    assert_eq!(promo_changes, vec![-15, -20, -5, -20], "newest first");
}

#[test]
fn a_promo_block_expires_at_its_own_instant_and_is_counted_in_the_books() {
    let mut d = Daemon::start("");
    d.create("a", "free"); // 50 free
    let expires = rfc(now_ms() + 2_500);
    let g = promo(&d, "a", 20, &expires, "p");
    let gid = block_id(&d, "a", &expires);
    let v = ok(d.debit("a", "face_generation", 1, "d")); // 5 from the block
    assert_eq!(v["taken"], sources(0, 0, 0, &[(&gid, 5)]), "{v}");
    // "r": a block emptied by a debit and reopened by its refund still expires.
    d.create("r", "free");
    promo(&d, "r", 10, &expires, "p");
    let rid = block_id(&d, "r", &expires);
    ok(d.debit("r", "face_generation", 2, "d"));
    assert_eq!(d.account("r")["promo_blocks"], json!([]));
    ok(refund(&d, "r", "d", None, "r"));
    assert_eq!(d.account("r")["promo_blocks"][0]["grant_id"], rid.as_str());
    // "h": a block wholly held when it expires; released later, the credits expire.
    d.create("h", "free");
    promo(&d, "h", 10, &expires, "p");
    let (s, h) = d.post(
        "/v1/accounts/h/holds",
        json!({ "operation": "face_generation", "quantity": 2, "idempotency_key": "h" }),
    );
    assert_eq!(s, 201, "{h}");
    let e = wait_for_kind(&d, "a", "promo_expired", 10);
    assert_eq!(
        e["time"], g["expires_at"],
        "at the block's instant, not when processed: {e}"
    );
    assert_eq!(ms(e["time"].as_str().unwrap()), ms(&expires));
    assert_eq!(e["grant_id"], gid.as_str(), "{e}");
    assert_eq!(e["bucket"], "promo", "{e}");
    assert_eq!(e["expired"], 15, "{e}");
    assert_eq!(e["change"]["promo"], -15, "{e}");
    assert_eq!(e["balance_after"]["promo"], 0, "{e}");
    assert_eq!(e["balance_after"]["available"], 50, "{e}");
    let a = d.account("a");
    assert_eq!(a["promo_blocks"], json!([]), "{a}");
    assert_eq!(
        (a["balances"]["promo"].clone(), a["available"].clone()),
        (json!(0), json!(50))
    );
    // The account as it stood just before and at the expiry.
    let (s, v) = d.get(&format!("/v1/accounts/a?at={}", rfc(ms(&expires) - 1)));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["balances"]["promo"], 15, "{v}");
    assert_eq!(v["promo_blocks"][0]["credits"], 15, "{v}");
    let (_, v) = d.get(&format!("/v1/accounts/a?at={}", rfc(ms(&expires))));
    assert_eq!(
        (v["balances"]["promo"].clone(), v["promo_blocks"].clone()),
        (json!(0), json!([])),
        "{v}"
    );
    // Counted as expired in the books.
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "creditsd_credits_expired_total{bucket=\"promo\"}"),
        Some(25),
        "{m}"
    );
    assert_eq!(
        metric(&m, "creditsd_credits_outstanding{bucket=\"promo\"}"),
        Some(0),
        "{m}"
    );
    let er = wait_for_kind(&d, "r", "promo_expired", 5);
    assert_eq!(
        (er["time"].clone(), er["expired"].clone()),
        (g["expires_at"].clone(), json!(10)),
        "{er}"
    );
    assert_eq!(d.account("r")["available"], 50);
    let released = ok(d.post(
        &format!(
            "/v1/accounts/h/holds/{}/release",
            h["hold_id"].as_str().unwrap()
        ),
        json!({}),
    ));
    assert_eq!(
        (released["expired"].clone(), released["credits"].clone()),
        (json!(10), json!(0)),
        "{released}"
    );
    let hv = d.account("h");
    assert_eq!(
        (
            hv["available"].clone(),
            hv["held"].clone(),
            hv["promo_blocks"].clone()
        ),
        (json!(50), json!(0), json!([])),
        "{hv}"
    );
    // A refund of credits taken from the expired block expires them instead.
    let r = ok(refund(&d, "a", "d", None, "r"));
    assert_eq!(r["credits"], 5, "{r}");
    assert_eq!(r["refunded"], sources(0, 0, 0, &[(&gid, 5)]), "{r}");
    assert_eq!(r["expired"], 5, "{r}");
    assert_eq!(r["balances"]["available"], 50, "{r}");
    assert_eq!(r["balances"]["promo"], 0, "{r}");
    assert_eq!(d.account("a")["promo_blocks"], json!([]));
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "creditsd_credits_expired_total{bucket=\"promo\"}"),
        Some(30),
        "{m}"
    );
    // Expired once: a restart replays it, does not repeat it.
    d.restart();
    expired_once_then_audited(&mut d);
}

#[test]
fn too_many_open_blocks_is_409_and_an_emptied_block_makes_room() {
    let d = Daemon::start("[limits]\npromo_blocks_max = 2\n");
    d.create("a", "free"); // no monthly: debits take the soonest block first
    let t1 = rfc(now_ms() + DAY_MS);
    let t2 = rfc(now_ms() + 2 * DAY_MS);
    let t3 = rfc(now_ms() + 3 * DAY_MS);
    promo(&d, "a", 10, &t1, "b1");
    promo(&d, "a", 10, &t2, "b2");
    let before = trace(&d, "a");
    let e = refused(
        grant(&d, "a", "promo", 10, Some(&t3), "b3"),
        409,
        "too_many_blocks",
    );
    assert_eq!(e["max"], 2, "{e}");
    assert_no_trace(&d, "a", &before, "a grant past promo_blocks_max");
    // Other buckets are not limited by it.
    ok(grant(&d, "a", "packs", 10, None, "packs"));
    // Emptying the soonest block leaves one open: the third fits now, a fourth does not.
    let g1 = block_id(&d, "a", &t1);
    let v = ok(d.debit("a", "face_generation", 2, "d"));
    assert_eq!(v["taken"], sources(0, 0, 0, &[(&g1, 10)]), "{v}");
    assert_eq!(v["balances"]["promo"], 10, "{v}");
    assert_eq!(d.account("a")["promo_blocks"].as_array().unwrap().len(), 1);
    promo(&d, "a", 10, &t3, "b3");
    let before = trace(&d, "a");
    refused(
        grant(&d, "a", "promo", 10, Some(&t3), "b4"),
        409,
        "too_many_blocks",
    );
    assert_no_trace(&d, "a", &before, "a grant past promo_blocks_max");
}

// ---------------------------------------------------------------------------------------
// Refunds

#[test]
fn partial_and_whole_refunds_go_back_to_the_buckets_they_came_from() {
    let mut d = Daemon::start("");
    d.create("a", "starter"); // 50 monthly, 50 free
    ok(d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay" }),
    ));
    let debit = ok(d.debit("a", "face_generation", 24, "job")); // 120
    assert_eq!(debit["taken"], sources(50, 50, 20, &[]), "{debit}");
    let p = pricing(&d);

    // What lasts longest goes back first: packs, then free, then monthly.
    let r1 = ok(refund(&d, "a", "job", Some(10), "r1"));
    assert_eq!(r1["kind"], "refund");
    assert_eq!(r1["debit_key"], "job");
    assert_eq!(r1["debit_seq"], debit["seq"]);
    assert_eq!(r1["credits"], 10);
    assert_eq!(r1["refunded"], sources(0, 0, 10, &[]), "{r1}");
    assert_eq!(
        r1["balances"],
        json!({ "monthly": 0, "promo": 0, "free": 0, "packs": 90, "held": 0, "available": 90 })
    );
    assert_affordable(&p, &r1);
    let r2 = ok(refund(&d, "a", "job", Some(15), "r2"));
    assert_eq!(r2["refunded"], sources(0, 5, 10, &[]), "{r2}");
    assert_eq!(r2["balances"]["available"], 105);

    // Several partials add up to at most the debit.
    let before = trace(&d, "a");
    let e = refused(
        refund(&d, "a", "job", Some(96), "r3"),
        409,
        "refund_exceeds_debit",
    );
    assert_eq!(e["refundable"], 95, "{e}");
    bad(refund(&d, "a", "job", Some(0), "r3"), "credits");
    let (s, v) = d.post(
        "/v1/accounts/a/debits/job/refund",
        json!({ "idempotency_key": "r3" }),
    );
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("reason")),
        "{v}"
    );
    assert_no_trace(&d, "a", &before, "refused refunds");

    // No credits: the rest of it.
    let r3 = ok(refund(&d, "a", "job", None, "r3"));
    assert_eq!(r3["credits"], 95, "{r3}");
    assert_eq!(r3["refunded"], sources(50, 45, 0, &[]), "{r3}");
    assert_eq!(
        r3["balances"],
        json!({ "monthly": 50, "promo": 0, "free": 50, "packs": 100, "held": 0, "available": 200 })
    );
    let before = trace(&d, "a");
    let e = refused(
        refund(&d, "a", "job", Some(1), "r4"),
        409,
        "refund_exceeds_debit",
    );
    assert_eq!(e["refundable"], 0, "{e}");
    let e = refused(
        refund(&d, "a", "job", None, "r4"),
        409,
        "refund_exceeds_debit",
    );
    assert_eq!(e["refundable"], 0, "{e}");
    assert_no_trace(&d, "a", &before, "a refund of a fully refunded debit");

    // The ledger: one refund entry per refund, naming the debit, with its change.
    let ledger = full_ledger(&d, "a");
    let refunds: Vec<(Value, Value, i64)> = ledger
        .iter()
        .filter(|e| e["kind"] == "refund")
        .map(|e| {
            let c = &e["change"];
            let sum = ["monthly", "promo", "free", "packs"]
                .iter()
                .map(|b| c[*b].as_i64().unwrap())
                .sum();
            (e["debit_key"].clone(), e["credits"].clone(), sum)
        })
        .collect();
    assert_eq!(
        refunds,
        vec![
            (json!("job"), json!(95), 95),
            (json!("job"), json!(15), 15),
            (json!("job"), json!(10), 10)
        ]
    );
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "creditsd_credits_refunded_total{bucket=\"packs\"}"),
        Some(20),
        "{m}"
    );
    // The books balance: granted = debited - refunded + expired + held + available.
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

#[test]
fn a_refund_is_applied_exactly_once_and_only_to_a_debit() {
    let d = Daemon::start("");
    d.create("a", "growth");
    d.create("b", "growth");
    ok(d.debit("a", "video_generation", 2, "job")); // 16
    ok(grant(&d, "a", "packs", 5, None, "a-grant"));
    let first = ok(refund(&d, "a", "job", Some(8), "r"));
    assert_eq!(first["duplicate"], false);
    let before = trace(&d, "a");
    let again = ok(refund(&d, "a", "job", Some(8), "r"));
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["credits"], 8);
    assert_no_trace(&d, "a", &before, "a duplicate refund");
    refused(
        refund(&d, "a", "job", Some(4), "r"),
        409,
        "idempotency_conflict",
    );
    refused(
        refund(&d, "a", "job", None, "r"),
        409,
        "idempotency_conflict",
    );
    refused(refund(&d, "a", "nope", None, "r9"), 404, "debit_not_found");
    // A grant's key is not a debit's.
    refused(
        refund(&d, "a", "a-grant", None, "r9"),
        404,
        "debit_not_found",
    );
    // Nor is the refund's own key.
    refused(refund(&d, "a", "r", None, "r9"), 404, "debit_not_found");
    assert_no_trace(&d, "a", &before, "refused refunds");
    // Keys are per account.
    let before_b = trace(&d, "b");
    refused(refund(&d, "b", "job", None, "r"), 404, "debit_not_found");
    assert_no_trace(&d, "b", &before_b, "a refund of another account's debit");
    refused(
        refund(&d, "ghost", "job", None, "r"),
        404,
        "account_not_found",
    );
    // The rest can still be refunded under a new key.
    let rest = ok(refund(&d, "a", "job", None, "r2"));
    assert_eq!(rest["credits"], 8, "{rest}");
    assert_eq!(d.account("a")["available"], 255);
}

#[test]
fn a_refund_that_lifts_an_exhausted_account_replenishes_it_and_wakes_a_parked_debit() {
    let d = Daemon::start("");
    d.create("p", "free"); // 50
    let drained = ok(d.debit("p", "face_generation", 10, "all"));
    assert!(
        alert_types(&drained).contains(&"balance.exhausted".to_string()),
        "{drained}"
    );
    let (refunded, parked) = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            d.post(
                "/v1/accounts/p/debits",
                json!({ "operation": "video_generation", "idempotency_key": "parked", "wait_seconds": 30 }),
            )
        });
        std::thread::sleep(Duration::from_millis(400));
        assert!(!waiter.is_finished(), "the debit should be parked");
        let r = ok(refund(&d, "p", "all", None, "r"));
        (r, waiter.join().unwrap())
    });
    assert!(
        alert_types(&refunded).contains(&"balance.replenished".to_string()),
        "{refunded}"
    );
    assert_eq!(refunded["balances"]["available"], 50, "{refunded}");
    assert_eq!(
        parked.0, 200,
        "the parked debit is served after the refund: {}",
        parked.1
    );
    assert_eq!(parked.1["taken"], sources(0, 8, 0, &[]), "{}", parked.1);
    assert_eq!(d.account("p")["available"], 42);
    let feed: Vec<Value> = events(&d, "p")
        .into_iter()
        .map(|e| e["type"].clone())
        .collect();
    let exhausted = feed.iter().position(|t| t == "balance.exhausted");
    let replenished = feed.iter().position(|t| t == "balance.replenished");
    assert!(
        exhausted.is_some() && replenished.is_some() && exhausted < replenished,
        "{feed:?}"
    );
}

// ---------------------------------------------------------------------------------------
// affordable

#[test]
fn affordable_is_available_over_price_rounded_down_in_every_answer() {
    let d = Daemon::start("");
    let p = pricing(&d);
    d.create("a", "growth"); // 250
    assert_affordable(&p, &d.account("a"));
    let v = ok(d.debit("a", "caption_generation", 3, "d")); // 247: 30 videos, 82 images
    assert_eq!(v["affordable"]["video_generation"], 30, "{v}");
    assert_eq!(v["affordable"]["sample_image"], 82, "{v}");
    assert_affordable(&p, &v);
    let dry = ok(d.post(
        "/v1/accounts/a/debits",
        json!({ "operation": "caption_generation", "idempotency_key": "dry", "dry_run": true }),
    ));
    assert_affordable(&p, &dry);
    assert_affordable(&p, &ok(grant(&d, "a", "packs", 4, None, "g")));
    assert_affordable(&p, &ok(refund(&d, "a", "d", Some(1), "r")));
    let (s, h) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "sample_image", "quantity": 3, "idempotency_key": "h" }),
    );
    assert_eq!(s, 201, "{h}");
    assert_affordable(&p, &h);
    let (s, h2) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "face_generation", "idempotency_key": "h2" }),
    );
    assert_eq!(s, 201, "{h2}");
    let hid = h["hold_id"].as_str().unwrap();
    let h2id = h2["hold_id"].as_str().unwrap();
    assert_affordable(
        &p,
        &ok(d.post(
            &format!("/v1/accounts/a/holds/{hid}/capture"),
            json!({ "credits": 4 }),
        )),
    );
    assert_affordable(
        &p,
        &ok(d.post(&format!("/v1/accounts/a/holds/{h2id}/release"), json!({}))),
    );
    assert_affordable(
        &p,
        &ok(d.post(
            "/v1/accounts/a/purchases",
            json!({ "pack": "pack_100", "payment_ref": "pay" }),
        )),
    );
    assert_affordable(
        &p,
        &ok(d.put(
            "/v1/accounts/a/plan",
            json!({ "plan": "agency", "idempotency_key": "up" }),
        )),
    );
    assert_affordable(&p, &set_member(&d, "a", "m", Value::Null, "m"));
    let (s, b) = d.post(
        "/v1/debits",
        json!({ "debits": [
            { "account": "a", "operation": "video_generation", "idempotency_key": "b1" },
            { "account": "a", "operation": "sample_image", "quantity": 7, "idempotency_key": "b2" },
        ] }),
    );
    assert_eq!(s, 200, "{b}");
    for item in b["results"].as_array().unwrap() {
        assert_eq!(item["code"], 200, "{item}");
        assert_affordable(&p, item);
    }
    let a = d.account("a");
    assert_affordable(&p, &a);
    let (_, past) = d.get(&format!("/v1/accounts/a?at={}", rfc(now_ms() - 1)));
    assert_affordable(&p, &past);
    // Zero credits: zero of everything.
    d.create("z", "free");
    let v = ok(d.debit("z", "face_generation", 10, "all"));
    assert_eq!(v["affordable"]["caption_generation"], 0, "{v}");
    assert_affordable(&p, &v);
}

// ---------------------------------------------------------------------------------------
// The account at a past instant

#[test]
fn the_account_at_a_past_instant_matches_the_ledger() {
    let d = Daemon::start("");
    let created = d.create("a", "growth");
    let p = pricing(&d);
    ok(d.debit("a", "sample_image", 2, "d1"));
    std::thread::sleep(Duration::from_millis(30));
    let (s, h) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "face_generation", "idempotency_key": "h" }),
    );
    assert_eq!(s, 201, "{h}");
    std::thread::sleep(Duration::from_millis(30));
    promo(&d, "a", 7, &rfc(now_ms() + 5 * DAY_MS), "p");
    std::thread::sleep(Duration::from_millis(30));
    ok(d.debit("a", "video_generation", 3, "d2"));
    ok(d.post(
        &format!(
            "/v1/accounts/a/holds/{}/release",
            h["hold_id"].as_str().unwrap()
        ),
        json!({}),
    ));
    let now = d.account("a");
    let ledger = full_ledger(&d, "a"); // newest first
    assert_eq!(ledger.len(), 6, "{ledger:?}");
    // At each entry's instant, and just before it, the account stands at the
    // balance_after of the newest entry at or before that instant.
    let created_at = ms(created["created_at"].as_str().unwrap());
    let mut instants: Vec<i64> = ledger
        .iter()
        .flat_map(|e| {
            let t = ms(e["time"].as_str().unwrap());
            [t - 1, t]
        })
        .filter(|t| *t >= created_at)
        .collect();
    instants.dedup();
    for at in instants {
        let e = ledger
            .iter()
            .find(|e| ms(e["time"].as_str().unwrap()) <= at)
            .unwrap();
        let (s, v) = d.get(&format!("/v1/accounts/a?at={}", rfc(at)));
        assert_eq!(s, 200, "{v}");
        let after = &e["balance_after"];
        for b in ["monthly", "promo", "free", "packs"] {
            assert_eq!(v["balances"][b], after[b], "{b} at {}: {v} vs {e}", rfc(at));
        }
        assert_eq!(v["available"], after["available"], "{v} vs {e}");
        assert_eq!(v["held"], after["held"], "{v} vs {e}");
        assert_eq!(v["seq"], e["seq"], "{v} vs {e}");
        assert_eq!(ms(v["as_of"].as_str().unwrap()), at, "{v}");
        assert_affordable(&p, &v);
    }
    // Between the hold and the release the hold is open, and the block after its grant.
    let hold_time = ms(h["time"].as_str().unwrap());
    let (_, v) = d.get(&format!("/v1/accounts/a?at={}", rfc(hold_time)));
    assert_eq!(v["holds"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["holds"][0]["hold_id"], h["hold_id"], "{v}");
    assert_eq!(v["promo_blocks"], json!([]), "{v}");
    // Same shape as now, apart from as_of.
    let (_, mut v) = d.get(&format!("/v1/accounts/a?at={}", rfc(now_ms())));
    assert!(v.as_object_mut().unwrap().remove("as_of").is_some());
    assert_eq!(v, now);

    // Before creation: 404; in the future: 400.
    refused(
        d.get(&format!("/v1/accounts/a?at={}", rfc(created_at - 1))),
        404,
        "account_not_found",
    );
    bad(
        d.get(&format!("/v1/accounts/a?at={}", rfc(now_ms() + 3_600_000))),
        "at",
    );
    bad(d.get("/v1/accounts/a?at=yesterday"), "at");
    refused(
        d.get(&format!("/v1/accounts/ghost?at={}", rfc(now_ms()))),
        404,
        "account_not_found",
    );
}

#[test]
fn the_account_before_the_retained_history_is_410() {
    let d = Daemon::start(
        "[storage]\nsnapshot_every = 5\nidempotency_ttl_seconds = 1\n\
         [history]\nretention = \"2 seconds\"\nprune_interval_ms = 200\n",
    );
    let created = d.create("r", "growth");
    for i in 0..12 {
        ok(d.debit("r", "sample_image", 1, &format!("old{i}")));
    }
    std::thread::sleep(Duration::from_millis(2500));
    ok(d.debit("r", "caption_generation", 1, "new"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while full_ledger(&d, "r").last().unwrap()["seq"] == 1 {
        assert!(Instant::now() < deadline, "history was not pruned");
        std::thread::sleep(Duration::from_millis(100));
    }
    let oldest = full_ledger(&d, "r").last().unwrap().clone();
    let at = rfc(ms(created["created_at"].as_str().unwrap()) + 1);
    let e = refused(
        d.get(&format!("/v1/accounts/r?at={at}")),
        410,
        "history_pruned",
    );
    assert!(e["history_starts_at"].is_string(), "{e}");
    // From the oldest entry kept on, the past is still there.
    let ledger = full_ledger(&d, "r");
    let t = ms(oldest["time"].as_str().unwrap());
    let e = ledger
        .iter()
        .find(|e| ms(e["time"].as_str().unwrap()) <= t)
        .unwrap();
    let (s, v) = d.get(&format!("/v1/accounts/r?at={}", rfc(t)));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["seq"], e["seq"], "{v}");
    assert_eq!(
        v["balances"]["monthly"], e["balance_after"]["monthly"],
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// Alerts per account, and the forecast alert

#[test]
fn alert_settings_are_validated_shown_and_fire_at_their_own_thresholds() {
    let d = Daemon::start("");
    d.create("a", "free"); // budget 50
    let a = d.account("a");
    assert_eq!(
        a["alerts"],
        json!({ "thresholds": [25, 10, 0], "thresholds_custom": false, "forecast_hours": 24, "forecast_custom": false }),
        "{a}"
    );
    let put = |body: Value| d.put("/v1/accounts/a/alerts", body);
    let before = trace(&d, "a");
    bad(
        put(json!({ "thresholds": [101], "idempotency_key": "x" })),
        "thresholds",
    );
    bad(
        put(json!({ "thresholds": [-1], "idempotency_key": "x" })),
        "thresholds",
    );
    bad(
        put(json!({ "thresholds": [50, 50], "idempotency_key": "x" })),
        "thresholds",
    );
    bad(
        put(json!({ "thresholds": [90, 80, 70, 60, 50, 40, 30, 20, 10], "idempotency_key": "x" })),
        "thresholds",
    );
    bad(
        put(json!({ "forecast_hours": 0, "idempotency_key": "x" })),
        "forecast_hours",
    );
    bad(
        put(json!({ "forecast_hours": 721, "idempotency_key": "x" })),
        "forecast_hours",
    );
    bad(put(json!({ "thresholds": [50] })), "idempotency_key");
    assert_no_trace(&d, "a", &before, "refused alert settings");

    // Eight distinct thresholds, 0 and 100 included, are fine (on another account).
    d.create("b", "free");
    let v = ok(d.put(
        "/v1/accounts/b/alerts",
        json!({ "thresholds": [0, 100, 10, 20, 30, 40, 50, 60], "idempotency_key": "eight" }),
    ));
    assert_eq!(
        v["thresholds"],
        json!([100, 60, 50, 40, 30, 20, 10, 0]),
        "{v}"
    );
    assert_eq!(d.account("b")["alerts"]["thresholds"], v["thresholds"]);
    let v = ok(put(
        json!({ "thresholds": [60, 30], "forecast_hours": null, "idempotency_key": "mine" }),
    ));
    assert_eq!(v["kind"], "alerts_set", "{v}");
    assert_eq!(v["thresholds_custom"], true, "{v}");
    assert_eq!(v["forecast_custom"], true, "{v}");
    let again = ok(put(
        json!({ "thresholds": [60, 30], "forecast_hours": null, "idempotency_key": "mine" }),
    ));
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), v["seq"].clone())
    );
    refused(
        put(json!({ "thresholds": [61], "idempotency_key": "mine" })),
        409,
        "idempotency_conflict",
    );
    let a = d.account("a");
    assert_eq!(
        a["alerts"],
        json!({ "thresholds": [60, 30], "thresholds_custom": true, "forecast_hours": null, "forecast_custom": true }),
        "{a}"
    );

    // 35 left (70%): nothing; 25 (50%): 60; 12 (24%): 30 only, not the config's 25 or 10.
    let v = ok(d.debit("a", "face_generation", 3, "d1"));
    assert_eq!(v["alerts"], json!([]), "{v}");
    let v = ok(d.debit("a", "face_generation", 2, "d2"));
    assert_eq!(
        v["alerts"],
        json!([{ "type": "balance.low", "threshold": 60 }]),
        "{v}"
    );
    let v = ok(d.debit("a", "caption_generation", 13, "d3"));
    assert_eq!(
        v["alerts"],
        json!([{ "type": "balance.low", "threshold": 30 }]),
        "{v}"
    );
    let low: Vec<Value> = events(&d, "a")
        .into_iter()
        .filter(|e| e["type"] == "balance.low")
        .map(|e| e["threshold"].clone())
        .collect();
    assert_eq!(low, vec![json!(60), json!(30)]);
    // Forecast off: a burn this fast raises no forecast alert.
    assert!(events(&d, "a")
        .iter()
        .all(|e| e["type"] != "balance.forecast_low"));

    // Leaving a field out follows the config again.
    let v = ok(put(json!({ "idempotency_key": "reset" })));
    assert_eq!(v["thresholds_custom"], false, "{v}");
    let a = d.account("a");
    assert_eq!(
        a["alerts"],
        json!({ "thresholds": [25, 10, 0], "thresholds_custom": false, "forecast_hours": 24, "forecast_custom": false }),
        "{a}"
    );
}

#[test]
fn the_forecast_alert_fires_once_when_the_burn_would_exhaust_the_account_within_its_horizon() {
    let d = Daemon::start("");
    d.create("a", "agency"); // 550
                             // 80 credits a debit: after n debits 550 - 80n left at a burn of 80n a day; within
                             // 24 h from the 4th on (230 left, 320 burned: 17.25 h).
    for n in 1..=3 {
        let v = ok(d.debit("a", "video_generation", 10, &format!("v{n}")));
        assert!(
            !alert_types(&v).contains(&"balance.forecast_low".to_string()),
            "{n}: {v}"
        );
    }
    let v = ok(d.debit("a", "video_generation", 10, "v4"));
    let fired: Vec<&Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "balance.forecast_low")
        .collect();
    assert_eq!(fired.len(), 1, "{v}");
    let projected = fired[0]["projected_exhaustion_at"].as_str().unwrap();
    let debit_at = ms(v["time"].as_str().unwrap());
    assert_eq!(ms(projected), debit_at + 230 * DAY_MS / 320, "{v}");
    // Not again in the same period, however fast the burn.
    for n in 5..=6 {
        let v = ok(d.debit("a", "video_generation", 10, &format!("v{n}")));
        assert!(
            !alert_types(&v).contains(&"balance.forecast_low".to_string()),
            "{n}: {v}"
        );
    }
    let feed: Vec<Value> = events(&d, "a")
        .into_iter()
        .filter(|e| e["type"] == "balance.forecast_low")
        .collect();
    assert_eq!(feed.len(), 1, "{feed:?}");
    assert_eq!(
        feed[0]["projected_exhaustion_at"],
        json!(projected),
        "{feed:?}"
    );
    assert_eq!(feed[0]["seq"], v["seq"], "{feed:?}");
    // Credits that move the projection past twice the horizon re-arm it: 1070 left at
    // 480 burned is 53.5 h. Then 990/560 (42.4 h), 910/640, 830/720 (27.7 h), 750/800
    // (22.5 h): the fourth debit fires again.
    ok(grant(&d, "a", "packs", 1000, None, "more"));
    let mut fired_at = None;
    for n in 7..=10 {
        let v = ok(d.debit("a", "video_generation", 10, &format!("v{n}")));
        if alert_types(&v).contains(&"balance.forecast_low".to_string()) {
            fired_at.get_or_insert(n);
        }
    }
    assert_eq!(fired_at, Some(10), "re-armed by the grant");
}

#[test]
fn a_longer_forecast_horizon_fires_earlier() {
    let d = Daemon::start("");
    d.create("a", "agency"); // 550
    ok(d.put(
        "/v1/accounts/a/alerts",
        json!({ "forecast_hours": 48, "idempotency_key": "f" }),
    ));
    assert_eq!(d.account("a")["alerts"]["forecast_hours"], 48);
    // 2 debits: 390 left at 160 a day, 58.5 h: not yet. 3: 310 at 240, 31 h: within 48 h.
    for n in 1..=2 {
        let v = ok(d.debit("a", "video_generation", 10, &format!("v{n}")));
        assert!(
            !alert_types(&v).contains(&"balance.forecast_low".to_string()),
            "{n}: {v}"
        );
    }
    let v = ok(d.debit("a", "video_generation", 10, "v3"));
    assert!(
        alert_types(&v).contains(&"balance.forecast_low".to_string()),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------
// Members

#[test]
fn members_are_created_changed_and_capped_within_the_pool() {
    let d = Daemon::start("");
    d.create("a", "growth"); // 250
    let v = set_member(&d, "a", "bob", json!(30), "m1");
    assert_eq!(
        (
            v["kind"].clone(),
            v["created"].clone(),
            v["cap_per_period"].clone()
        ),
        (json!("member_set"), json!(true), json!(30)),
        "{v}"
    );
    let v = set_member(&d, "a", "bob", json!(40), "m2");
    assert_eq!(
        (v["created"].clone(), v["cap_per_period"].clone()),
        (json!(false), json!(40)),
        "{v}"
    );
    let v = set_member(&d, "a", "alice", Value::Null, "m3");
    assert_eq!(
        (v["created"].clone(), v["cap_per_period"].clone()),
        (json!(true), Value::Null),
        "{v}"
    );
    let members = |d: &Daemon| {
        let mut m = d.account("a")["members"].as_array().unwrap().clone();
        m.sort_by_key(|x| x["member"].as_str().unwrap().to_string());
        m
    };
    assert_eq!(
        members(&d),
        vec![
            json!({ "member": "alice", "cap_per_period": null, "used_this_period": 0 }),
            json!({ "member": "bob", "cap_per_period": 40, "used_this_period": 0 }),
        ]
    );

    // Unknown members: 404, nothing taken.
    let before = trace(&d, "a");
    refused(
        member_debit(&d, "a", "caption_generation", 1, "ghost", "x"),
        404,
        "member_not_found",
    );
    refused(
        d.post(
            "/v1/accounts/a/holds",
            json!({ "operation": "caption_generation", "member": "ghost", "idempotency_key": "x" }),
        ),
        404,
        "member_not_found",
    );
    let (_, b) = d.post(
        "/v1/debits",
        json!({ "debits": [{ "account": "a", "operation": "caption_generation", "member": "ghost", "idempotency_key": "x" }] }),
    );
    assert_eq!(b["results"][0]["code"], 404, "{b}");
    assert_eq!(b["results"][0]["error"]["code"], "member_not_found", "{b}");
    bad(
        member_debit(&d, "a", "caption_generation", 1, "not a member id!", "x"),
        "member",
    );
    assert_no_trace(&d, "a", &before, "debits naming unknown members");

    // Within the cap; then past it: 402 though the pool has credits, nothing taken.
    let d1 = ok(member_debit(&d, "a", "video_generation", 3, "bob", "d1")); // 24
    assert_eq!(d1["member"], "bob", "{d1}");
    let before = trace(&d, "a");
    let e = refused(
        member_debit(&d, "a", "video_generation", 3, "bob", "d2"),
        402,
        "member_cap_reached",
    );
    assert_eq!(
        (e["cap"].clone(), e["used"].clone()),
        (json!(40), json!(24)),
        "{e}"
    );
    let e = refused(
        d.post("/v1/accounts/a/holds", json!({ "operation": "video_generation", "quantity": 3, "member": "bob", "idempotency_key": "h9" })),
        402,
        "member_cap_reached",
    );
    assert_eq!(e["used"], 24, "{e}");
    // A parked request on a cap does not wait for credits: it is refused at once.
    let started = Instant::now();
    refused(
        d.post("/v1/accounts/a/debits", json!({ "operation": "video_generation", "quantity": 3, "member": "bob", "idempotency_key": "d2", "wait_seconds": 5 })),
        402,
        "member_cap_reached",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_no_trace(&d, "a", &before, "debits past a member's cap");
    assert_eq!(d.account("a")["available"], 250 - 24);

    // A hold counts while open; its release gives the use back.
    let (s, h) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "sample_image", "quantity": 5, "member": "bob", "idempotency_key": "h" }),
    );
    assert_eq!(s, 201, "{h}");
    assert_eq!(h["member"], "bob");
    assert_eq!(members(&d)[1]["used_this_period"], 39);
    assert_eq!(d.account("a")["holds"][0]["member"], "bob");
    ok(d.post(
        &format!(
            "/v1/accounts/a/holds/{}/release",
            h["hold_id"].as_str().unwrap()
        ),
        json!({}),
    ));
    assert_eq!(members(&d)[1]["used_this_period"], 24);
    // A refund gives the use back too.
    let r = ok(refund(&d, "a", "d1", Some(10), "r"));
    assert_eq!(r["member"], "bob", "{r}");
    assert_eq!(members(&d)[1]["used_this_period"], 14);
    // Up to the cap exactly, in a batch item; then one more is refused.
    let (_, b) = d.post(
        "/v1/debits",
        json!({ "debits": [
            { "account": "a", "operation": "caption_generation", "quantity": 26, "member": "bob", "idempotency_key": "b1" },
            { "account": "a", "operation": "caption_generation", "member": "bob", "idempotency_key": "b2" },
        ] }),
    );
    assert_eq!(b["results"][0]["code"], 200, "{b}");
    assert_eq!(b["results"][0]["member"], "bob", "{b}");
    assert_eq!(b["results"][1]["code"], 402, "{b}");
    assert_eq!(
        b["results"][1]["error"]["code"], "member_cap_reached",
        "{b}"
    );
    assert_eq!(members(&d)[1]["used_this_period"], 40);
    // Raising the cap lets bob go on; alice has none.
    set_member(&d, "a", "bob", json!(41), "m4");
    ok(member_debit(&d, "a", "caption_generation", 1, "bob", "d3"));
    ok(member_debit(&d, "a", "video_generation", 10, "alice", "a1")); // 80
    ok(d.debit("a", "caption_generation", 2, "pool")); // no member
    assert_eq!(
        members(&d),
        vec![
            json!({ "member": "alice", "cap_per_period": null, "used_this_period": 80 }),
            json!({ "member": "bob", "cap_per_period": 41, "used_this_period": 41 }),
        ]
    );

    // Usage by member: credits net of the refund.
    let totals = |u: &Value, key: Option<&str>| {
        let mut t = std::collections::BTreeMap::<String, (u64, u64)>::new();
        for p in u["periods"].as_array().unwrap() {
            let ops = match key {
                Some(m) => &p["members"][m],
                None => &p["operations"],
            };
            for (op, c) in ops.as_object().into_iter().flatten() {
                let e = t.entry(op.clone()).or_default();
                e.0 += c["count"].as_u64().unwrap();
                e.1 += c["credits"].as_u64().unwrap();
            }
        }
        t
    };
    let (s, u) = d.get("/v1/accounts/a/usage?member=bob");
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["member"], "bob");
    let t = totals(&u, None);
    assert_eq!(t["video_generation"], (3, 14), "{t:?}");
    assert_eq!(t["caption_generation"], (27, 27), "{t:?}");
    assert_eq!(
        t.get("sample_image"),
        None,
        "a released hold is no usage: {t:?}"
    );
    let (s, u) = d.get("/v1/accounts/a/usage?group_by=member");
    assert_eq!(s, 200, "{u}");
    assert_eq!(totals(&u, Some("alice"))["video_generation"], (10, 80));
    assert_eq!(totals(&u, Some("bob"))["caption_generation"], (27, 27));
    let all = totals(&u, None);
    assert_eq!(all["caption_generation"], (29, 29), "{all:?}");

    // Removal: the member goes, its history stays.
    let before = trace(&d, "a");
    bad(
        d.call("DELETE", "/v1/accounts/a/members/bob", None),
        "idempotency_key",
    );
    refused(
        d.call(
            "DELETE",
            "/v1/accounts/a/members/carol?idempotency_key=del",
            None,
        ),
        404,
        "member_not_found",
    );
    assert_no_trace(&d, "a", &before, "refused removals");
    let v = ok(d.call(
        "DELETE",
        "/v1/accounts/a/members/bob?idempotency_key=del",
        None,
    ));
    assert_eq!(
        (v["kind"].clone(), v["member"].clone()),
        (json!("member_removed"), json!("bob")),
        "{v}"
    );
    let again = ok(d.call(
        "DELETE",
        "/v1/accounts/a/members/bob?idempotency_key=del",
        None,
    ));
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), v["seq"].clone())
    );
    assert_eq!(members(&d).len(), 1);
    assert_eq!(members(&d)[0]["member"], "alice");
    refused(
        member_debit(&d, "a", "caption_generation", 1, "bob", "d4"),
        404,
        "member_not_found",
    );
    let ledger = full_ledger(&d, "a");
    let bobs: Vec<&str> = ledger
        .iter()
        .filter(|e| e["member"] == "bob" && (e["kind"] == "debit" || e["kind"] == "hold"))
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(bobs, vec!["d3", "b1", "h", "d1"], "{ledger:?}");
    let removed = ledger
        .iter()
        .find(|e| e["kind"] == "member_removed")
        .unwrap();
    assert_eq!(removed["member"], "bob");
    // Set again, bob starts over with no use.
    let v = set_member(&d, "a", "bob", json!(5), "m5");
    assert_eq!(v["created"], true, "{v}");
    assert_eq!(members(&d)[1]["used_this_period"], 0);
}

#[test]
fn too_many_members_is_409() {
    let d = Daemon::start("[limits]\nmembers_max = 2\n");
    d.create("a", "growth");
    set_member(&d, "a", "m1", Value::Null, "k1");
    set_member(&d, "a", "m2", json!(5), "k2");
    let before = trace(&d, "a");
    let e = refused(
        d.put(
            "/v1/accounts/a/members/m3",
            json!({ "cap_per_period": 1, "idempotency_key": "k3" }),
        ),
        409,
        "too_many_members",
    );
    assert_eq!(e["max"], 2, "{e}");
    bad(
        d.put(
            "/v1/accounts/a/members/m1",
            json!({ "cap_per_period": -1, "idempotency_key": "k4" }),
        ),
        "cap_per_period",
    );
    assert_no_trace(&d, "a", &before, "refused member changes");
    // Changing an existing one is no new member.
    set_member(&d, "a", "m1", json!(9), "k5");
}

// ---------------------------------------------------------------------------------------
// kill -9 between the steps of each new flow

#[test]
fn a_promo_block_survives_sigkill_and_still_expires_on_time() {
    let mut d = Daemon::start("");
    d.create("a", "free");
    let expires = rfc(now_ms() + 4_000);
    let g = promo(&d, "a", 20, &expires, "p");
    d.kill9();
    d.start_again();
    let a = d.account("a");
    assert_eq!(a["promo_blocks"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["promo_blocks"][0]["expires_at"], g["expires_at"], "{a}");
    assert_eq!(a["balances"]["promo"], 20, "{a}");
    assert_eq!(promo(&d, "a", 20, &expires, "p")["duplicate"], true);
    let e = wait_for_kind(&d, "a", "promo_expired", 10);
    assert_eq!(e["time"], g["expires_at"], "{e}");
    assert_eq!(e["expired"], 20, "{e}");
    d.kill9();
    d.start_again();
    assert_eq!(count_kind(&full_ledger(&d, "a"), "grant"), 1);
    expired_once_then_audited(&mut d);
}

#[test]
fn a_refund_survives_sigkill_exactly_once() {
    let mut d = Daemon::start("");
    d.create("a", "starter");
    ok(d.debit("a", "face_generation", 12, "job")); // 60: 50 monthly, 10 free
    d.kill9();
    d.start_again();
    let r = ok(refund(&d, "a", "job", Some(25), "r"));
    assert_eq!(r["refunded"], sources(15, 10, 0, &[]), "{r}");
    d.kill9();
    d.start_again();
    let a = d.account("a");
    assert_eq!(
        (
            a["balances"]["monthly"].clone(),
            a["balances"]["free"].clone()
        ),
        (json!(15), json!(50)),
        "{a}"
    );
    let again = ok(refund(&d, "a", "job", Some(25), "r"));
    assert_eq!(
        (again["duplicate"].clone(), again["seq"].clone()),
        (json!(true), r["seq"].clone()),
        "{again}"
    );
    refused(
        refund(&d, "a", "job", Some(24), "r"),
        409,
        "idempotency_conflict",
    );
    let e = refused(
        refund(&d, "a", "job", Some(36), "r2"),
        409,
        "refund_exceeds_debit",
    );
    assert_eq!(e["refundable"], 35, "{e}");
    let ledger = full_ledger(&d, "a");
    assert_eq!(count_kind(&ledger, "refund"), 1, "{ledger:?}");
    assert_eq!(d.account("a")["available"], 65);
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

#[test]
fn a_member_and_its_use_survive_sigkill() {
    let mut d = Daemon::start("");
    d.create("a", "growth");
    set_member(&d, "a", "bob", json!(20), "m");
    d.kill9();
    d.start_again();
    let e = refused(
        member_debit(&d, "a", "video_generation", 3, "bob", "d1"),
        402,
        "member_cap_reached",
    );
    assert_eq!(
        (e["cap"].clone(), e["used"].clone()),
        (json!(20), json!(0)),
        "{e}"
    );
    ok(member_debit(&d, "a", "video_generation", 2, "bob", "d1")); // 16
    d.kill9();
    d.start_again();
    assert_eq!(d.account("a")["members"][0]["used_this_period"], 16);
    let e = refused(
        member_debit(&d, "a", "face_generation", 1, "bob", "d2"),
        402,
        "member_cap_reached",
    );
    assert_eq!(e["used"], 16, "{e}");
    ok(member_debit(&d, "a", "caption_generation", 4, "bob", "d2"));
    ok(d.call(
        "DELETE",
        "/v1/accounts/a/members/bob?idempotency_key=del",
        None,
    ));
    d.kill9();
    d.start_again();
    assert_eq!(d.account("a")["members"], json!([]));
    refused(
        member_debit(&d, "a", "caption_generation", 1, "bob", "d3"),
        404,
        "member_not_found",
    );
    let again = ok(d.call(
        "DELETE",
        "/v1/accounts/a/members/bob?idempotency_key=del",
        None,
    ));
    assert_eq!(again["duplicate"], true, "{again}");
}

#[test]
fn alert_settings_and_the_fired_forecast_survive_sigkill() {
    let mut d = Daemon::start("");
    d.create("a", "agency"); // 550
    ok(d.put(
        "/v1/accounts/a/alerts",
        json!({ "thresholds": [80, 5], "forecast_hours": 30, "idempotency_key": "al" }),
    ));
    d.kill9();
    d.start_again();
    assert_eq!(
        d.account("a")["alerts"],
        json!({ "thresholds": [80, 5], "thresholds_custom": true, "forecast_hours": 30, "forecast_custom": true })
    );
    // 150 of 550 (72.7% left): 80 fires; at 310 left / 240 burned: 31 h, not within 30.
    let v = ok(d.debit("a", "face_generation", 30, "d1"));
    assert_eq!(
        v["alerts"],
        json!([{ "type": "balance.low", "threshold": 80 }]),
        "{v}"
    );
    let v = ok(d.debit("a", "video_generation", 11, "d2")); // 88: 312 left, 238 burned
    assert!(
        !alert_types(&v).contains(&"balance.forecast_low".to_string()),
        "{v}"
    );
    let v = ok(d.debit("a", "video_generation", 1, "d3")); // 304 left, 246 burned: 29.7 h
    assert!(
        alert_types(&v).contains(&"balance.forecast_low".to_string()),
        "{v}"
    );
    d.kill9();
    d.start_again();
    // Fired once this period, across the crash.
    let v = ok(d.debit("a", "video_generation", 1, "d4"));
    assert!(
        !alert_types(&v).contains(&"balance.forecast_low".to_string()),
        "{v}"
    );
    let again = ok(d.put(
        "/v1/accounts/a/alerts",
        json!({ "thresholds": [80, 5], "forecast_hours": 30, "idempotency_key": "al" }),
    ));
    assert_eq!(again["duplicate"], true, "{again}");
    let feed: Vec<Value> = events(&d, "a")
        .into_iter()
        .filter(|e| e["type"] == "balance.forecast_low")
        .collect();
    assert_eq!(feed.len(), 1, "{feed:?}");
}

// ---------------------------------------------------------------------------------------
// A period reset

#[test]
fn a_reset_gives_members_a_new_period_and_a_refund_of_old_monthly_credits_expires_them() {
    let d = Daemon::start("[actors]\nsweep_interval_ms = 100\n");
    let boundary = now_ms() / 1000 + 3;
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "a", "plan": "starter", "billing_anchor": anchor_resetting_at(boundary) }),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        ms(v["next_reset_at"].as_str().unwrap()),
        boundary * 1000,
        "{v}"
    );
    set_member(&d, "a", "bob", json!(30), "m");
    let v = ok(member_debit(&d, "a", "face_generation", 5, "bob", "d")); // 25 monthly
    assert_eq!(v["taken"], sources(25, 0, 0, &[]), "{v}");
    refused(
        member_debit(&d, "a", "face_generation", 2, "bob", "d2"),
        402,
        "member_cap_reached",
    );
    let reset = wait_for_kind(&d, "a", "reset", 10);
    assert_eq!(
        ms(reset["time"].as_str().unwrap()),
        boundary * 1000,
        "{reset}"
    );
    let a = d.account("a");
    assert_eq!(a["members"][0]["used_this_period"], 0, "{a}");
    assert_eq!(a["balances"]["monthly"], 50, "{a}");
    // The debit's monthly credits belonged to the ended period: refunded, they expire.
    let r = ok(refund(&d, "a", "d", None, "r"));
    assert_eq!(r["refunded"], sources(25, 0, 0, &[]), "{r}");
    assert_eq!(r["expired"], 25, "{r}");
    assert_eq!(r["balances"]["monthly"], 50, "{r}");
    assert_eq!(r["balances"]["available"], 100, "{r}");
    // ... and give no use back to this period (bob has none to give back).
    assert_eq!(d.account("a")["members"][0]["used_this_period"], 0);
    ok(member_debit(&d, "a", "face_generation", 6, "bob", "d3")); // 30: the full cap
    let e = refused(
        member_debit(&d, "a", "caption_generation", 1, "bob", "d4"),
        402,
        "member_cap_reached",
    );
    assert_eq!(
        (e["cap"].clone(), e["used"].clone()),
        (json!(30), json!(30)),
        "{e}"
    );
}

#[test]
fn a_members_use_follows_what_its_holds_spend() {
    let d = Daemon::start("");
    d.create("a", "growth");
    set_member(&d, "a", "bob", json!(30), "m");
    let used = |d: &Daemon| d.account("a")["members"][0]["used_this_period"].clone();
    let place = |key: &str, qty: u64, ttl: u64| {
        let (s, h) = d.post(
            "/v1/accounts/a/holds",
            json!({ "operation": "video_generation", "quantity": qty, "member": "bob", "idempotency_key": key, "ttl_seconds": ttl }),
        );
        assert_eq!(s, 201, "{h}");
        h["hold_id"].as_str().unwrap().to_string()
    };
    let h1 = place("h1", 3, 600); // 24
    assert_eq!(used(&d), 24);
    // A partial capture keeps what was spent and gives back the rest.
    ok(d.post(
        &format!("/v1/accounts/a/holds/{h1}/capture"),
        json!({ "credits": 8 }),
    ));
    assert_eq!(used(&d), 8);
    // An expired hold gives its use back too.
    place("h2", 2, 1); // 16
    assert_eq!(used(&d), 24);
    let e = refused(
        member_debit(&d, "a", "video_generation", 1, "bob", "d"),
        402,
        "member_cap_reached",
    );
    assert_eq!(e["used"], 24, "{e}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while used(&d) != json!(8) {
        assert!(
            Instant::now() < deadline,
            "the expired hold kept bob's use: {}",
            d.account("a")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(member_debit(&d, "a", "video_generation", 2, "bob", "d"));
    assert_eq!(used(&d), 24);
}

#[test]
fn no_forecast_alert_when_the_period_resets_before_the_projected_exhaustion() {
    let d = Daemon::start("");
    // The period ends in 10 h; the burn below projects exhaustion in 17.25 h.
    let boundary = now_ms() / 1000 + 10 * 3600;
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "a", "plan": "agency", "billing_anchor": anchor_resetting_at(boundary) }),
    );
    assert_eq!(s, 201, "{v}");
    for n in 1..=4 {
        let v = ok(d.debit("a", "video_generation", 10, &format!("v{n}")));
        assert!(
            !alert_types(&v).contains(&"balance.forecast_low".to_string()),
            "{n}: {v}"
        );
    }
    // 150 left at 400 a day: 9 h, before the reset: now it fires.
    let v = ok(d.debit("a", "video_generation", 10, "v5"));
    assert!(
        alert_types(&v).contains(&"balance.forecast_low".to_string()),
        "{v}"
    );
}
