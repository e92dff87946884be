//! Usage history, trends and forecast over HTTP, against the real binary: ledger pages
//! that tile the history while debits arrive, usage rollups per operation, the forecast
//! on a known pattern, and retention pruning that leaves balances and audit intact.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

fn ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn bad_param(d: &Daemon, path: &str, field: &str) {
    let (s, v) = d.get(path);
    assert_eq!(s, 400, "{path}: {v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{path}: {v}");
    assert_eq!(v["error"]["field"], field, "{path}: {v}");
}

/// Newest first, seqs top..=bottom without a gap or a repeat, and each entry's balances
/// are the older entry's plus its change.
fn assert_tiles(entries: &[Value], top: u64, bottom: u64) {
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (bottom..=top).rev().collect();
    assert_eq!(seqs, want, "ledger pages must tile the history exactly");
    for w in entries.windows(2) {
        let (newer, older) = (&w[0], &w[1]);
        for b in ["monthly", "free", "packs", "held"] {
            assert_eq!(
                older["balance_after"][b].as_i64().unwrap() + newer["change"][b].as_i64().unwrap(),
                newer["balance_after"][b].as_i64().unwrap(),
                "bucket {b} between seq {} and {}",
                older["seq"],
                newer["seq"]
            );
        }
    }
}

/// Pages through the whole ledger with a small limit.
fn ledger_pages(d: &Daemon, id: &str, limit: u64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/v1/accounts/{id}/ledger?limit={limit}");
    loop {
        let (s, v) = d.get(&path);
        assert_eq!(s, 200, "{v}");
        let page = v["entries"].as_array().unwrap();
        assert!(page.len() as u64 <= limit);
        out.extend(page.iter().cloned());
        match v["next"].as_str() {
            Some(n) => path = format!("/v1/accounts/{id}/ledger?limit={limit}&before={n}"),
            None => return out,
        }
    }
}

#[test]
fn ledger_pages_tile_the_history_while_debits_keep_arriving() {
    let d = Arc::new(Daemon::start(""));
    d.create("busy", "growth");
    let (s, _) = d.post(
        "/v1/accounts/busy/purchases",
        json!({ "pack": "pack_1000", "payment_ref": "p1" }),
    );
    assert_eq!(s, 200);
    const DEBITS: u64 = 200;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (d, done) = (d.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..DEBITS {
                let (s, v) = d.post(
                    "/v1/accounts/busy/debits",
                    json!({ "operation": "caption_generation", "idempotency_key": format!("c{i}"), "metadata": { "job": i.to_string() } }),
                );
                assert_eq!(s, 200, "{v}");
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut passes = 0;
    while !done.load(Ordering::Acquire) || passes == 0 {
        let entries = ledger_pages(&d, "busy", 7);
        let top = entries[0]["seq"].as_u64().unwrap();
        assert_tiles(&entries, top, 1);
        passes += 1;
    }
    writer.join().unwrap();
    let all = ledger_pages(&d, "busy", 13);
    assert_tiles(&all, DEBITS + 2, 1);
    assert!(passes >= 1);

    // Every field the billing page shows, on a debit entry.
    let e = &all[0];
    assert_eq!(e["kind"], "debit");
    assert_eq!(e["operation"], "caption_generation");
    assert_eq!(e["quantity"], 1);
    assert_eq!(e["credits"], 1);
    assert_eq!(e["idempotency_key"], format!("c{}", DEBITS - 1));
    assert_eq!(e["metadata"], json!({ "job": (DEBITS - 1).to_string() }));
    assert_eq!(e["change"]["monthly"], -1);
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        e["balance_after"]["available"],
        d.account("busy")["available"]
    );
    assert_eq!(all[DEBITS as usize]["kind"], "purchase");
    assert_eq!(all[DEBITS as usize + 1]["kind"], "account_created");

    // Limit: default 50, at most 500; a bad cursor or limit is a 400 naming it.
    let (_, v) = d.get("/v1/accounts/busy/ledger");
    assert_eq!(v["entries"].as_array().unwrap().len(), 50);
    assert_eq!(v["next"], "153");
    let (_, v) = d.get("/v1/accounts/busy/ledger?limit=500");
    assert_eq!(v["entries"].as_array().unwrap().len(), DEBITS as usize + 2);
    assert_eq!(v["next"], Value::Null);
    let (_, v) = d.get("/v1/accounts/busy/ledger?before=2");
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    bad_param(&d, "/v1/accounts/busy/ledger?limit=501", "limit");
    bad_param(&d, "/v1/accounts/busy/ledger?limit=0", "limit");
    bad_param(&d, "/v1/accounts/busy/ledger?before=abc", "before");
    bad_param(&d, "/v1/accounts/busy/ledger?before=0", "before");
    bad_param(&d, "/v1/accounts/busy/ledger?before=-3", "before");
    let (s, v) = d.get("/v1/accounts/nobody/ledger");
    assert_eq!((s, &v["error"]["code"]), (404, &json!("account_not_found")));
}

/// Sums a usage answer's periods per operation.
fn usage_totals(v: &Value) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for p in v["periods"].as_array().unwrap() {
        let mut sum = (0, 0);
        for (op, c) in p["operations"].as_object().unwrap() {
            let e = out.entry(op.clone()).or_insert((0, 0));
            e.0 += c["count"].as_u64().unwrap();
            e.1 += c["credits"].as_u64().unwrap();
            sum.0 += c["count"].as_u64().unwrap();
            sum.1 += c["credits"].as_u64().unwrap();
        }
        assert_eq!(
            (p["count"].as_u64().unwrap(), p["credits"].as_u64().unwrap()),
            sum
        );
    }
    out
}

#[test]
fn usage_counts_and_credits_per_operation_match_the_debits_made() {
    let mut d = Daemon::start("");
    d.create("u", "agency");
    let mut rng = Rng::from_time();
    let seed = rng.0;
    let prices = [
        ("face_generation", 5),
        ("sample_image", 3),
        ("video_generation", 8),
        ("caption_generation", 1),
    ];
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for i in 0..40 {
        let (op, price) = prices[rng.below(4) as usize];
        let qty = 1 + rng.below(3);
        let (s, v) = d.debit("u", op, qty, &format!("k{i}"));
        assert_eq!(s, 200, "seed {seed}: {v}");
        let e = want.entry(op.to_string()).or_default();
        e.0 += qty;
        e.1 += qty * price;
        // A retry of the same request is not usage again.
        if i % 10 == 0 {
            let (s, v) = d.debit("u", op, qty, &format!("k{i}"));
            assert_eq!((s, &v["duplicate"]), (200, &json!(true)));
        }
    }
    // Refused requests are not usage.
    assert_eq!(d.debit("u", "video_generation", 10_000, "too-big").0, 402);
    // A captured hold is usage of its operation (what it spent); a released one is not.
    let (s, v) = d.post(
        "/v1/accounts/u/holds",
        json!({ "operation": "video_generation", "quantity": 2, "idempotency_key": "h1" }),
    );
    assert_eq!(s, 201, "{v}");
    let h1 = v["hold_id"].as_str().unwrap().to_string();
    let (s, v) = d.post(
        &format!("/v1/accounts/u/holds/{h1}/capture"),
        json!({ "credits": 10 }),
    );
    assert_eq!(s, 200, "{v}");
    let e = want.entry("video_generation".into()).or_default();
    e.0 += 2;
    e.1 += 10;
    let (_, v) = d.post(
        "/v1/accounts/u/holds",
        json!({ "operation": "face_generation", "quantity": 1, "idempotency_key": "h2" }),
    );
    let h2 = v["hold_id"].as_str().unwrap().to_string();
    let (s, _) = d.post(&format!("/v1/accounts/u/holds/{h2}/release"), json!({}));
    assert_eq!(s, 200);

    let from = rfc3339(now_ms() - 2 * DAY_MS);
    let to = rfc3339(now_ms() + DAY_MS);
    let days = format!("/v1/accounts/u/usage?from={from}&to={to}&granularity=day");
    let (s, v) = d.get(&days);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["granularity"], "day");
    let periods = v["periods"].as_array().unwrap();
    assert!((3..=4).contains(&periods.len()), "{v}");
    for p in periods {
        assert_eq!(
            ms(p["end"].as_str().unwrap()) - ms(p["start"].as_str().unwrap()),
            DAY_MS
        );
        assert!(p["start"].as_str().unwrap().ends_with("T00:00:00Z"));
    }
    assert_eq!(usage_totals(&v), want, "seed {seed}: {v}");

    let (s, v) = d.get("/v1/accounts/u/usage?granularity=month");
    assert_eq!(s, 200, "{v}");
    let months = v["periods"].as_array().unwrap();
    assert!((12..=13).contains(&months.len()), "{v}");
    assert!(months[0]["start"]
        .as_str()
        .unwrap()
        .ends_with("-01T00:00:00Z"));
    assert_eq!(usage_totals(&v), want, "seed {seed}: {v}");
    let debited: u64 = want.values().map(|c| c.1).sum();
    assert_eq!(d.account("u")["available"], 550 - debited);

    // Rollups survive a graceful restart and a crash (snapshot + replay).
    d.restart();
    assert_eq!(usage_totals(&d.get(&days).1), want, "after restart");
    d.kill9();
    d.start_again();
    assert_eq!(usage_totals(&d.get(&days).1), want, "after kill -9");

    bad_param(&d, "/v1/accounts/u/usage?granularity=week", "granularity");
    bad_param(&d, "/v1/accounts/u/usage?from=yesterday", "from");
    bad_param(&d, "/v1/accounts/u/usage?to=2026-13-01T00:00:00Z", "to");
    bad_param(
        &d,
        "/v1/accounts/u/usage?from=2027-02-01T00:00:00Z&to=2027-01-01T00:00:00Z",
        "from",
    );
    bad_param(&d, "/v1/accounts/u/usage?from=1971-01-01T00:00:00Z", "from");
    bad_param(&d, "/v1/accounts/u/usage?step=day", "step");
    let (s, _) = d.get("/v1/accounts/nobody/usage");
    assert_eq!(s, 404);
}

#[test]
fn forecast_on_a_known_usage_pattern() {
    let d = Daemon::start("");
    // The current period ends in 3 s (an anchor in the future: the period before it is
    // current), so the test sees a whole period with known usage end.
    let anchor_ms = (now_ms() / 1000 + 4) * 1000;
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "f", "plan": "starter", "billing_anchor": rfc3339(anchor_ms) }),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["available"], 100);
    let (s, v) = d.debit("f", "face_generation", 12, "k1"); // 60 credits
    assert_eq!(s, 200, "{v}");

    let (s, f) = d.get("/v1/accounts/f/forecast");
    assert_eq!(s, 200, "{f}");
    let as_of = ms(f["as_of"].as_str().unwrap());
    // The 7-day window runs from the UTC midnight six days before today up to now.
    let start_7d = ms(f["window_7d_start"].as_str().unwrap());
    assert_eq!(start_7d, (as_of.div_euclid(DAY_MS) - 6) * DAY_MS);
    let start_30d = ms(f["window_30d_start"].as_str().unwrap());
    assert_eq!(start_30d, (as_of.div_euclid(DAY_MS) - 29) * DAY_MS);
    let window = as_of - start_7d;
    let rate = |credits: f64, window: i64| {
        (credits * DAY_MS as f64 / window as f64 * 1000.0).round() / 1000.0
    };
    assert_eq!(f["credits_7d"], 60);
    assert_eq!(f["credits_30d"], 60);
    assert_eq!(f["burn_rate_7d"].as_f64().unwrap(), rate(60.0, window));
    assert_eq!(
        f["burn_rate_30d"].as_f64().unwrap(),
        rate(60.0, as_of - start_30d)
    );
    // 40 left at 60 per window: exhausted two thirds of a window from now.
    assert_eq!(f["available"], 40);
    assert_eq!(
        ms(f["projected_exhaustion_at"].as_str().unwrap()),
        as_of + 40 * window / 60
    );
    // No period has ended since the account was created: nothing to suggest yet.
    assert_eq!(f["last_period"], Value::Null);
    assert_eq!(f["suggested_plan"], Value::Null);

    // After the boundary: the period that ended used 60 credits, more than starter's 50.
    std::thread::sleep(Duration::from_millis(
        (anchor_ms - now_ms()).max(0) as u64 + 300,
    ));
    let (s, f) = d.get("/v1/accounts/f/forecast");
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["last_period"]["credits"], 60, "{f}");
    assert_eq!(ms(f["last_period"]["end"].as_str().unwrap()), anchor_ms);
    assert_eq!(f["suggested_plan"], "growth");
    assert_eq!(f["available"], 90); // a new starter allocation + 40 free left
    assert_eq!(f["credits_7d"], 60);

    // An account without usage burns nothing and runs out never.
    d.create("idle", "free");
    let (_, f) = d.get("/v1/accounts/idle/forecast");
    assert_eq!(f["burn_rate_7d"].as_f64(), Some(0.0));
    assert_eq!(f["burn_rate_30d"].as_f64(), Some(0.0));
    assert_eq!(f["projected_exhaustion_at"], Value::Null);
    bad_param(&d, "/v1/accounts/idle/forecast?x=1", "x");
    assert_eq!(d.get("/v1/accounts/nobody/forecast").0, 404);
}

#[test]
fn retention_prunes_old_ledger_entries_and_keeps_balances_and_audit() {
    let mut d = Daemon::start(
        "[storage]\nsnapshot_every = 5\nidempotency_ttl_seconds = 1\n\
         [history]\nretention = \"2 seconds\"\nprune_interval_ms = 200\n",
    );
    d.create("r", "growth");
    for i in 0..12 {
        assert_eq!(d.debit("r", "sample_image", 1, &format!("old{i}")).0, 200);
    }
    // Snapshots at seq 5 and 10; once older than 2 s, events 1..=9 may go (the pruner
    // stays strictly below the latest snapshot).
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..3 {
        assert_eq!(
            d.debit("r", "caption_generation", 1, &format!("new{i}")).0,
            200
        );
    }
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = full_ledger(&d, "r");
        if entries.last().unwrap()["seq"] == 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        entries.last().unwrap()["seq"],
        10,
        "the ledger is cut at the prune point"
    );
    assert_tiles(&entries, 16, 10);
    // The oldest entry left still shows its change, from the base snapshot.
    assert_eq!(entries.last().unwrap()["change"]["monthly"], -3);
    // seq 10 is the ninth debit (seq 1 is the creation).
    assert_eq!(
        entries.last().unwrap()["balance_after"]["monthly"],
        200 - 27
    );
    let (_, v) = d.get("/v1/accounts/r/ledger?limit=4&before=13");
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    assert_eq!(v["next"], Value::Null, "the ledger ends at the prune point");
    let (_, v) = d.get("/v1/accounts/r/ledger?limit=7&before=10");
    assert_eq!(v["entries"], json!([]));
    assert_eq!(v["next"], Value::Null);
    assert!(d.log_text().contains("pruned history"), "{}", d.log_text());

    // Balances and usage are untouched: 12 images and 3 captions.
    let check = |d: &Daemon| {
        let a = d.account("r");
        assert_eq!(a["balances"]["monthly"], 200 - 36 - 3, "{a}");
        assert_eq!(a["available"], 250 - 39, "{a}");
        let (_, u) = d.get("/v1/accounts/r/usage");
        let t = usage_totals(&u);
        assert_eq!(t["sample_image"], (12, 36));
        assert_eq!(t["caption_generation"], (3, 3));
    };
    check(&d);
    d.restart();
    check(&d);
    d.kill9();
    d.start_again();
    check(&d);
    assert_eq!(d.debit("r", "caption_generation", 1, "after").0, 200);
    assert!(d.terminate().success());
    let (ok, out) = d.audit();
    assert!(ok, "audit after pruning: {out}");
}
