//! The edges a new user and a skeptical billing engineer hit first, each through the real
//! daemon: calendar days that break shortcuts, reads that must never stop the service, an
//! audit of a directory that holds no store, HTTP conventions, and alert re-arming.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Polls the ledger until its newest entry has `kind`, or panics after `secs`.
fn wait_for_kind(d: &Daemon, id: &str, kind: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, ledger) = d.get(&format!("/v1/accounts/{id}/ledger"));
        if ledger["entries"][0]["kind"] == kind {
            return ledger["entries"][0].clone();
        }
        assert!(Instant::now() < deadline, "no {kind} entry: {ledger}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn secs_of(rfc3339: &str) -> i64 {
    creditsd::domain::Ts::parse_rfc3339(rfc3339)
        .unwrap()
        .millis()
        / 1000
}

/// The period rolls over at its boundary on the days where a calendar shortcut breaks:
/// month ends, leap days, the 1st after a short month. Each daemon starts its clock at
/// the chosen "today" (test builds only) and must reset exactly when the period ends.
#[test]
fn periods_roll_over_on_awkward_days() {
    let todays = [
        "2026-12-01T12:00:00Z",
        "2027-01-31T23:59:50Z",
        "2027-02-28T12:00:00Z",
        "2028-02-29T12:00:00Z",
        "2027-03-01T00:00:00Z",
        "2027-03-31T12:00:00Z",
        "2026-04-30T23:59:55Z",
    ];
    let threads: Vec<_> = todays
        .iter()
        .map(|today| {
            let today = today.to_string();
            std::thread::spawn(move || {
                let d = Daemon::start_with_env(
                    "[actors]\nsweep_interval_ms = 100\n",
                    &[("CREDITSD_TEST_NOW", &today)],
                );
                let boundary = secs_of(&today) + 4;
                let anchor = anchor_resetting_at(boundary);
                let (s, v) = d.post(
                    "/v1/accounts",
                    json!({ "id": "r", "plan": "starter", "billing_anchor": anchor }),
                );
                assert_eq!(s, 201, "{today}: {v}");
                assert_eq!(v["next_reset_at"], json!(time_rfc3339(boundary)), "{today}");
                assert_eq!(d.debit("r", "sample_image", 10, "k").0, 200);
                let reset = wait_for_kind(&d, "r", "reset", 20);
                assert_eq!(reset["time"], json!(time_rfc3339(boundary)), "{today}");
                assert_eq!(reset["expired"], 20, "{today}");
                let a = d.account("r");
                assert_eq!(a["period_start"], json!(time_rfc3339(boundary)), "{today}");
                assert_eq!(a["balances"]["monthly"], 50, "{today}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_forecast_past_the_calendar_is_null_and_the_daemon_lives() {
    let d = Daemon::start("");
    d.create("rich", "free");
    let (s, v) = d.post(
        "/v1/accounts/rich/grants",
        json!({ "bucket": "packs", "credits": 500_000, "reason": "r", "idempotency_key": "g" }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.debit("rich", "caption_generation", 1, "c").0, 200);
    let (s, v) = d.get("/v1/accounts/rich/forecast");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["projected_exhaustion_at"], Value::Null, "{v}");
    assert_eq!(v["credits_7d"], 1);
    // Still serving.
    assert_eq!(d.get("/v1/accounts/rich").0, 200);
}

#[test]
fn a_forecast_nine_days_after_the_last_debit_on_huge_packs_is_null() {
    let mut d = Daemon::start_with_env("", &[("CREDITSD_TEST_NOW", "2027-05-01T10:00:00Z")]);
    d.create("p", "free");
    for i in 0..100 {
        let (s, v) = d.post(
            "/v1/accounts/p/purchases",
            json!({ "pack": "pack_1000", "payment_ref": format!("ch_{i}") }),
        );
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(d.debit("p", "caption_generation", 1, "c").0, 200);
    d.set_env("CREDITSD_TEST_NOW", "2027-05-10T10:00:00Z");
    d.restart();
    let (s, v) = d.get("/v1/accounts/p/forecast");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["credits_7d"], 0, "{v}");
    assert_eq!(v["credits_30d"], 1, "{v}");
    assert_eq!(v["projected_exhaustion_at"], Value::Null, "{v}");
    assert_eq!(d.get("/healthz").0, 200);
}

#[test]
fn audit_refuses_a_directory_without_a_store_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let missing = tmp.path().join("no").join("such").join("dir");
    let (ok, out) = audit(&config, &missing);
    assert!(!ok, "{out}");
    assert!(out.contains("holds no creditsd store"), "{out}");
    assert!(!missing.exists(), "audit created {}", missing.display());
    assert!(!tmp.path().join("no").exists());

    // A store that exists but holds no account is no audit either.
    let mut d = Daemon::start("");
    assert!(d.terminate().success());
    let (ok, out) = d.audit();
    assert!(!ok, "{out}");
    assert!(out.contains("holds no accounts"), "{out}");
}

#[test]
fn unknown_sub_paths_are_404_and_a_405_says_what_is_allowed() {
    let d = Daemon::start("");
    d.create("x", "free");
    for (method, path) in [
        ("GET", "/v1/accounts/x/balance"),
        ("POST", "/v1/accounts/x/refunds"),
        ("GET", "/v1/accounts/x/holds/h1/foo"),
        ("GET", "/v1/nothing"),
    ] {
        let (s, v) = d.call(method, path, None);
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (404, json!("not_found")),
            "{method} {path}"
        );
    }
    let (s, text) = d.raw_tcp(
        &format!(
            "DELETE /v1/accounts/x HTTP/1.1\r\nHost: {}\r\nConnection: close",
            d.addr
        ),
        b"",
    );
    assert_eq!(s, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    let (s, text) = d.raw_tcp(
        &format!(
            "PUT /v1/accounts HTTP/1.1\r\nHost: {}\r\nConnection: close",
            d.addr
        ),
        b"",
    );
    assert_eq!(s, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, post, head"),
        "{text}"
    );
}

#[test]
fn head_answers_like_get_without_a_body() {
    let d = Daemon::start("");
    d.create("x", "free");
    let (s, text) = d.raw_tcp(
        &format!(
            "HEAD /v1/accounts/x HTTP/1.1\r\nHost: {}\r\nConnection: close",
            d.addr
        ),
        b"",
    );
    assert_eq!(s, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    assert_eq!(body, "", "a HEAD answer has no body");
}

#[test]
fn percent_encoded_ids_are_decoded_before_they_are_checked() {
    let d = Daemon::start("");
    d.create("org:team.1_a-B", "free");
    d.create("mx-1", "free");
    let (s, v) = d.get("/v1/accounts/org%3Ateam.1_a-B");
    assert_eq!((s, v["id"].clone()), (200, json!("org:team.1_a-B")), "{v}");
    let (s, v) = d.get("/v1/accounts/mx%2D1");
    assert_eq!((s, v["id"].clone()), (200, json!("mx-1")), "{v}");
    let (s, v) = d.get("/v1/accounts/mx%2D1/ledger");
    assert_eq!(s, 200, "{v}");
    // An encoded slash decodes to a character no id has.
    let (s, v) = d.get("/v1/accounts/mx%2F1");
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("account")),
        "{v}"
    );
}

#[test]
fn a_repeated_json_member_is_refused_naming_it_and_changes_nothing() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.raw(
        "POST",
        "/v1/accounts/a/debits",
        r#"{"operation":"face_generation","operation":"caption_generation","idempotency_key":"k"}"#,
    );
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("operation")),
        "{v}"
    );
    let (s, v) = d.raw(
        "POST",
        "/v1/accounts/a/debits",
        r#"{"operation":"caption_generation","idempotency_key":"k","metadata":{"a":"1","a":"2"}}"#,
    );
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("a")), "{v}");
    assert_eq!(d.account("a")["available"], 50);
    // The key was not bound: the same key with a good body debits.
    assert_eq!(d.debit("a", "caption_generation", 1, "k").0, 200);
}

#[test]
fn unknown_query_parameters_are_refused_on_every_route() {
    let d = Daemon::start("");
    d.create("a", "free");
    for path in [
        "/v1/accounts/a?x=1",
        "/v1/pricing?x=1",
        "/healthz?x=1",
        "/readyz?x=1",
        "/metrics?x=1",
        "/v1/accounts/a/forecast?x=1",
        "/v1/accounts/a/ledger?x=1",
        "/v1/accounts/a/usage?x=1",
        "/v1/events?x=1",
        "/v1/accounts?x=1",
        "/v1/accounts/a/holds?x=1",
    ] {
        let (s, v) = d.get(path);
        assert_eq!(
            (s, v["error"]["field"].clone()),
            (400, json!("x")),
            "{path}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.ends_with("expected one of "), "{path}: {msg}");
    }
    let (s, v) = d.post(
        "/v1/accounts/a/debits?dry=1",
        json!({ "operation": "caption_generation", "idempotency_key": "q" }),
    );
    assert_eq!((s, v["error"]["field"].clone()), (400, json!("dry")), "{v}");
    let (_, v) = d.get("/v1/accounts/a/forecast?x=1");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("takes no query parameters"));
    assert_eq!(d.account("a")["available"], 50);
}

#[test]
fn a_declared_non_json_body_is_415() {
    let d = Daemon::start("");
    d.create("a", "free");
    let body = r#"{"operation":"caption_generation","idempotency_key":"k"}"#;
    let (s, text) = d.raw_tcp(
        &format!(
            "POST /v1/accounts/a/debits HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close",
            d.addr,
            body.len()
        ),
        body.as_bytes(),
    );
    assert_eq!(s, 415, "{text}");
    assert!(text.contains("unsupported_media_type"), "{text}");
    let (s, text) = d.raw_tcp(
        &format!(
            "POST /v1/accounts/a/debits HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close",
            d.addr,
            body.len()
        ),
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{text}");
    assert_eq!(d.account("a")["available"], 49);
}

#[test]
fn a_401_asks_for_a_bearer_token() {
    let hash = creditsd::http::auth::hash_token("secret");
    let d = Daemon::start(&format!(
        "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"read\"]\n"
    ));
    let (s, text) = d.raw_tcp(
        &format!(
            "GET /v1/pricing HTTP/1.1\r\nHost: {}\r\nConnection: close",
            d.addr
        ),
        b"",
    );
    assert_eq!(s, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );
}

/// Reserving and releasing spends nothing: it must not send the same low-balance notice
/// (an email) again and again. Only added credits re-arm a threshold above 0.
#[test]
fn holding_and_releasing_sends_one_low_balance_notice() {
    let d = Daemon::start("");
    d.create("a", "free"); // 50 free credits: a budget of 50
    for i in 0..3 {
        // 5 captions × 8 = 40 of 50: remaining 20 %, at or below 25 %.
        let (s, v) = d.post(
            "/v1/accounts/a/holds",
            json!({ "operation": "video_generation", "quantity": 5, "idempotency_key": format!("h{i}") }),
        );
        assert_eq!(s, 201, "{v}");
        let hold = v["hold_id"].as_str().unwrap().to_string();
        let (s, v) = d.post(&format!("/v1/accounts/a/holds/{hold}/release"), json!({}));
        assert_eq!(s, 200, "{v}");
    }
    let low = |d: &Daemon| {
        let (_, v) = d.get("/v1/events?after=0&limit=1000");
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "balance.low" && e["threshold"] == 25)
            .count()
    };
    assert_eq!(low(&d), 1);
    // A purchase adds credits: the threshold re-arms, and spending down fires it again.
    let (s, _) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "p" }),
    );
    assert_eq!(s, 200);
    let (s, _) = d.debit("a", "video_generation", 15, "spend"); // 120 of 150: 20 %
    assert_eq!(s, 200);
    assert_eq!(low(&d), 2);
}

#[test]
fn the_openapi_document_is_served_without_a_token() {
    let hash = creditsd::http::auth::hash_token("secret");
    let d = Daemon::start(&format!(
        "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"read\"]\n"
    ));
    let (s, v) = d.get("/v1/openapi.json");
    assert_eq!(s, 200, "{v}");
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        v["openapi"]
    );
    for path in ["/v1/accounts", "/v1/accounts/{id}/debits", "/v1/events"] {
        assert!(v["paths"].get(path).is_some(), "{path} is not described");
    }
}

/// "13 months" of history are at least 393 days (12 months are a year, and the shortest
/// month adds 28 days), not 13 × 28 = 364: a 380-day idempotency TTL fits inside them.
#[test]
fn retention_in_months_is_measured_in_calendar_months() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |ttl_days: u64| {
        let path = tmp.path().join(format!("c{ttl_days}.toml"));
        std::fs::write(
            &path,
            format!(
                "[storage]\nidempotency_ttl_seconds = {}\n[history]\nretention = \"13 months\"\n",
                ttl_days * 86_400
            ),
        )
        .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(380);
    assert!(ok, "{err}");
    let (ok, err) = check(394);
    assert!(!ok);
    assert!(err.contains("history.retention"), "{err}");
}

/// JSON Schema (and so the OpenAPI document) reads `5.0` as the integer 5: so does the
/// daemon; a real fraction is refused and changes nothing.
#[test]
fn integers_written_with_a_zero_fraction_are_integers() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.raw(
        "POST",
        "/v1/accounts/a/debits",
        r#"{"operation":"caption_generation","quantity":5.0,"idempotency_key":"k"}"#,
    );
    assert_eq!((s, v["credits"].clone()), (200, json!(5)), "{v}");
    // The same request written with an integer is the same request: a duplicate.
    let (s, v) = d.debit("a", "caption_generation", 5, "k");
    assert_eq!((s, v["duplicate"].clone()), (200, json!(true)), "{v}");
    let (s, v) = d.raw(
        "POST",
        "/v1/accounts/a/debits",
        r#"{"operation":"caption_generation","quantity":2.5,"idempotency_key":"j"}"#,
    );
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("quantity")),
        "{v}"
    );
    assert_eq!(d.account("a")["available"], 45);
}
