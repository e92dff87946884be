//! One name per meaning in the answers, bounds that keep JSON exact, lists with cursors,
//! and the lifecycle edges (a second daemon, SIGTERM with parked debits, old data).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn batch_items_carry_the_http_code_and_the_accounts_status() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (s, v) = d.post(
        "/v1/debits",
        json!({ "debits": [
            { "account": "a", "operation": "face_generation", "quantity": 10, "idempotency_key": "k1" },
            { "account": "a", "operation": "caption_generation", "idempotency_key": "k2" },
            { "account": "nobody", "operation": "caption_generation", "idempotency_key": "k3" },
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["code"], 200, "{v}");
    assert_eq!(
        r[0]["status"], "paused",
        "the account's state after the debit: {v}"
    );
    assert_eq!(r[1]["code"], 402, "{v}");
    assert_eq!(r[1]["error"]["code"], "insufficient_credits");
    assert_eq!(r[2]["code"], 404, "{v}");
    assert!(r[1].get("status").is_none(), "{v}");
}

#[test]
fn cursors_are_opaque_strings_in_the_ledger_and_the_feed() {
    let d = Daemon::start("");
    d.create("a", "free");
    for i in 0..3 {
        d.debit("a", "caption_generation", 1, &format!("k{i}"));
    }
    let (_, v) = d.get("/v1/accounts/a/ledger?limit=2");
    assert!(v["next"].is_string(), "{v}");
    let (_, v) = d.get(&format!(
        "/v1/accounts/a/ledger?limit=2&before={}",
        v["next"].as_str().unwrap()
    ));
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["next"], Value::Null);

    assert_eq!(d.debit("a", "caption_generation", 47, "big").0, 200); // 47 → 0: notices
    let (_, v) = d.get("/v1/events?after=0&limit=1");
    let next = v["next"].as_str().expect("a string cursor").to_string();
    let (_, v) = d.get(&format!("/v1/events?after={next}"));
    assert!(!v["events"].as_array().unwrap().is_empty(), "{v}");
    let last = v["next"].as_str().unwrap().to_string();
    // Nothing new: the cursor to ask with stays where the client is.
    let (_, v) = d.get(&format!("/v1/events?after={last}"));
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["next"], json!(last));
}

#[test]
fn captures_and_releases_without_a_key_show_none_and_captures_name_their_operation() {
    let d = Daemon::start("");
    d.create("a", "free");
    let (_, h) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "sample_image", "quantity": 2, "idempotency_key": "h" }),
    );
    let (s, c) = d.post(
        &format!(
            "/v1/accounts/a/holds/{}/capture",
            h["hold_id"].as_str().unwrap()
        ),
        json!({}),
    );
    assert_eq!(s, 200, "{c}");
    assert!(c.get("idempotency_key").is_none(), "{c}");
    assert_eq!(
        (c["operation"].clone(), c["quantity"].clone()),
        (json!("sample_image"), json!(2))
    );
    let (_, h2) = d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "caption_generation", "idempotency_key": "h2" }),
    );
    let (s, r) = d.post(
        &format!(
            "/v1/accounts/a/holds/{}/release",
            h2["hold_id"].as_str().unwrap()
        ),
        json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert!(r.get("idempotency_key").is_none(), "{r}");
    let ledger = full_ledger(&d, "a");
    let capture = ledger.iter().find(|e| e["kind"] == "capture").unwrap();
    assert_eq!(capture["operation"], "sample_image", "{capture}");
    assert_eq!(capture["quantity"], 2, "{capture}");
    assert_eq!(capture["credits"], 6);
}

#[test]
fn grants_are_bounded_so_every_balance_stays_exact_in_json() {
    let d = Daemon::start("");
    d.create("a", "free");
    let grant = |credits: u64, key: &str| {
        d.post(
            "/v1/accounts/a/grants",
            json!({ "bucket": "packs", "credits": credits, "reason": "r", "idempotency_key": key }),
        )
    };
    let (s, v) = grant(1 << 63, "g0");
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("credits")),
        "{v}"
    );
    let max = (1u64 << 53) - 1;
    let (s, v) = grant(max, "g1");
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("credits")),
        "{v}"
    );
    let (s, v) = grant(1_000_000_000_000, "g2");
    assert_eq!(s, 200, "{v}");
    let (s, v) = grant(max - 1_000_000_000_000, "g3");
    assert_eq!(
        (s, v["error"]["field"].clone()),
        (400, json!("credits")),
        "{v}"
    );
    let available = d.account("a")["available"].as_u64().unwrap();
    assert_eq!(available, 1_000_000_000_050);
}

#[test]
fn a_batch_of_1000_items_at_every_limit_fits_the_batch_body() {
    let d = Daemon::start("");
    let account = "a".repeat(64);
    d.create(&account, "free");
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("k{i:02}"), json!("v".repeat(1024 / 16 - 3))))
        .collect();
    let items: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "account": account,
                "operation": "video_generation",
                "quantity": 10000,
                "idempotency_key": format!("{i:0128}"),
                "metadata": metadata,
            })
        })
        .collect();
    let body = serde_json::to_string(&json!({ "debits": items })).unwrap();
    assert!(body.len() > 1024 * 1024, "the body is {} bytes", body.len());
    let (s, v) = d.raw("POST", "/v1/debits", &body);
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["code"] == 402), "{}", results[0]);
}

#[test]
fn a_second_daemon_on_a_data_dir_in_use_exits_75_naming_the_lock() {
    let d = Daemon::start("");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&d.config_path)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("in use") && err.contains("lock"), "{err}");
    assert!(
        err.contains(&d.data_dir().join("db").display().to_string()),
        "{err}"
    );
}

#[test]
fn instants_out_of_range_are_refused_saying_the_range() {
    let d = Daemon::start("");
    let (s, v) = d.post(
        "/v1/accounts",
        json!({ "id": "a", "billing_anchor": "9999-01-01T00:00:00Z" }),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("1970-01-01T00:00:00Z") && msg.contains("9000-01-01T00:00:00Z"),
        "{msg}"
    );
}

#[test]
fn sigterm_answers_parked_debits_at_once() {
    let mut d = Daemon::start("");
    d.create("a", "free");
    d.debit("a", "face_generation", 10, "all"); // 0 left
    let url = d.url("/v1/accounts/a/debits");
    let parked = std::thread::spawn(move || {
        let started = Instant::now();
        let r = ureq::post(&url).send_json(json!({
            "operation": "caption_generation", "idempotency_key": "wait", "wait_seconds": 60
        }));
        let (status, retry) = match r {
            Ok(r) => (r.status(), r.header("retry-after").map(str::to_string)),
            Err(ureq::Error::Status(s, r)) => (s, r.header("retry-after").map(str::to_string)),
            Err(e) => panic!("{e}"),
        };
        (status, retry, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    assert!(d.terminate().success());
    let (status, retry, _) = parked.join().unwrap();
    assert_eq!(status, 503);
    assert!(retry.is_some(), "a 503 carries Retry-After");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the stop waited {:?} for a parked debit",
        stopping.elapsed()
    );
}

#[test]
fn a_retry_that_takes_over_a_parked_debit_waits_its_own_time() {
    let d = Daemon::start("");
    d.create("a", "free");
    d.debit("a", "face_generation", 10, "all");
    let url = d.url("/v1/accounts/a/debits");
    let first = std::thread::spawn(move || {
        match ureq::post(&url).send_json(json!({
            "operation": "caption_generation", "idempotency_key": "same", "wait_seconds": 8
        })) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let (s, _) = d.post(
        "/v1/accounts/a/debits",
        json!({ "operation": "caption_generation", "idempotency_key": "same", "wait_seconds": 1 }),
    );
    let waited = started.elapsed();
    assert_eq!(s, 402);
    assert!(
        waited < Duration::from_secs(4),
        "the retry waited {waited:?}"
    );
    // The superseded request was answered 503.
    assert_eq!(first.join().unwrap(), 503);
}

#[test]
fn holds_and_accounts_are_listed_with_cursors() {
    let d = Daemon::start("");
    for id in ["c", "a", "b", "d"] {
        d.create(id, "free");
    }
    let (s, v) = d.get("/v1/accounts?limit=3");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["accounts"],
        json!([{ "id": "a" }, { "id": "b" }, { "id": "c" }])
    );
    let (_, v) = d.get(&format!(
        "/v1/accounts?limit=3&after={}",
        v["next"].as_str().unwrap()
    ));
    assert_eq!(v["accounts"], json!([{ "id": "d" }]));
    assert_eq!(v["next"], Value::Null);

    for i in 0..3 {
        let (s, _) = d.post(
            "/v1/accounts/a/holds",
            json!({ "operation": "caption_generation", "idempotency_key": format!("h{i}") }),
        );
        assert_eq!(s, 201);
    }
    d.post("/v1/accounts/a/holds/h2/release", json!({}));
    let (s, v) = d.get("/v1/accounts/a/holds?limit=1");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["holds"][0]["hold_id"], "h1");
    assert_eq!(v["next"], "h1");
    let (_, v) = d.get("/v1/accounts/a/holds?after=h1");
    let ids: Vec<&str> = v["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hold_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["h3"]);
    assert_eq!(v["next"], Value::Null);
    assert_eq!(d.get("/v1/accounts/nobody/holds").0, 404);
}

#[test]
fn a_non_canonical_hold_id_names_no_hold() {
    let d = Daemon::start("");
    d.create("a", "free");
    d.post(
        "/v1/accounts/a/holds",
        json!({ "operation": "caption_generation", "idempotency_key": "h" }),
    );
    for bad in ["h01", "h+1", "H1"] {
        let (s, v) = d.post(&format!("/v1/accounts/a/holds/{bad}/capture"), json!({}));
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (404, json!("hold_not_found")),
            "{bad}"
        );
    }
    assert_eq!(d.account("a")["held"], 1);
}

/// An account view less what the second edition added, each checked to be what an account
/// of the first edition has (no promo, no members, the config's alerts): the fields 0.1.0
/// answered, to compare with its answers.
fn first_edition_view(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    assert!(o.remove("affordable").unwrap().is_object());
    assert_eq!(o.remove("promo_blocks").unwrap(), json!([]));
    assert_eq!(o.remove("members").unwrap(), json!([]));
    let alerts = o.remove("alerts").unwrap();
    assert_eq!(alerts["thresholds_custom"], json!(false), "{alerts}");
    assert_eq!(alerts["forecast_custom"], json!(false), "{alerts}");
    let balances = o["balances"].as_object_mut().unwrap();
    assert_eq!(balances.remove("promo").unwrap(), json!(0));
    for h in o["holds"].as_array_mut().unwrap() {
        assert_eq!(
            h.as_object_mut().unwrap().remove("member").unwrap(),
            Value::Null
        );
    }
    v
}

/// The stores of release 0.1.0 (`tests/fixtures/v0.1.0/make.sh`, run with that release's
/// binary): one stopped cleanly and one killed with SIGKILL.
const FIXTURES: [&str; 2] = ["stopped", "killed"];

fn fixture(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v0.1.0")
        .join(kind)
}

/// Starts the daemon on a copy of the fixture `kind`'s data, `prepare`d once copied. The
/// fixture was written at 21:35 on 2026-12-01; the daemon starts an hour later, so its
/// keys are still remembered and nothing has expired or reset.
fn start_on_fixture(kind: &str, prepare: impl FnOnce(&Path)) -> Daemon {
    Daemon::start_prepared(
        "",
        &[("CREDITSD_TEST_NOW", "2026-12-01T22:35:00Z")],
        |data| {
            copy_dir(&fixture(kind).join("data"), data);
            prepare(data);
        },
    )
}

/// What release 0.1.0 answered on the fixture `kind` is what `d` answers: the same books
/// and ledger, an old request's duplicate; it takes new writes, and audits clean.
fn answers_as_release_0_1_0(kind: &str, mut d: Daemon) {
    let fixture = fixture(kind);
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture.join(name)).unwrap()).unwrap()
    };
    let old_ledger = read("fx-1.ledger.json");
    let old = old_ledger["entries"].as_array().unwrap();
    let new = full_ledger(&d, "fx-1");
    assert_eq!(new.len(), old.len(), "{kind}");
    for (o, n) in old.iter().zip(&new) {
        for f in [
            "seq",
            "time",
            "kind",
            "credits",
            "balance_after",
            "change",
            "taken",
        ] {
            // The second edition's `promo` bucket is new: 0 for data written before it.
            let mut n_f = n[f].clone();
            if let Some(m) = n_f.as_object_mut().filter(|_| o[f].get("promo").is_none()) {
                if let Some(p) = m.remove("promo") {
                    assert_eq!(p, 0, "{kind}: field {f}.promo of {n}");
                }
            }
            assert_eq!(o[f], n_f, "{kind}: field {f} of {o}");
        }
    }
    // 0.1.0 recorded no operation in captures: today's ledger leaves it out for them.
    let capture = new.iter().find(|e| e["kind"] == "capture").unwrap();
    assert!(capture.get("operation").is_none(), "{capture}");
    for id in ["fx-1", "fx-2"] {
        let view = first_edition_view(d.account(id));
        assert_eq!(view, read(&format!("{id}.json")), "{kind}: {id}");
    }
    // A duplicate of an old request answers as the first time.
    let (s, v) = d.debit("fx-2", "caption_generation", 1, "c1");
    assert_eq!(
        (s, v["duplicate"].clone()),
        (200, json!(true)),
        "{kind}: {v}"
    );
    assert_eq!(d.debit("fx-2", "caption_generation", 1, "new").0, 200);
    assert!(d.terminate().success());
    let (ok, out) = d.audit();
    assert!(ok, "{kind}: {out}");
}

/// Data written by release 0.1.0, opened by today's binary as it is, gives the same books,
/// audits clean, and takes new writes.
#[test]
fn a_store_written_by_release_0_1_0_opens_with_the_same_books() {
    for kind in FIXTURES {
        answers_as_release_0_1_0(kind, start_on_fixture(kind, |_| {}));
    }
}

/// `creditsd migrate` with an empty config on `data`: its exit code and its output.
fn migrate(data: &Path) -> (Option<i32>, String) {
    let config = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(config.path())
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The count a migrate report gives a kind of record: (rewritten, of how many).
fn rewritten(report: &str, name: &str) -> (u64, u64) {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no line for {name}: {report}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

/// Each fixture store migrated (every old record rewritten; a second run rewrites
/// nothing) answers as release 0.1.0 did, and audits clean.
#[test]
fn a_store_written_by_release_0_1_0_migrates_and_answers_the_same() {
    use creditsd::store::format::STORE_FORMAT;
    for kind in FIXTURES {
        let d = start_on_fixture(kind, |data| {
            let (code, out) = migrate(data);
            assert_eq!(code, Some(0), "{kind}: {out}");
            let formats = format!("format 1 at open, {STORE_FORMAT} now");
            assert!(out.contains(&formats), "{kind}: {out}");
            let (events, of) = rewritten(&out, "events");
            assert!(events > 40 && events == of, "{kind}: {out}");
            assert_eq!(
                rewritten(&out, "account snapshots"),
                (2, 2),
                "{kind}: {out}"
            );
            let (feed, of) = rewritten(&out, "feed entries");
            assert!(feed > 0 && feed == of, "{kind}: {out}");
            let (_, idem) = rewritten(&out, "idempotency records");
            assert!(idem > 40, "{kind}: {out}");

            assert!(
                out.contains(&format!("{events} events moved into the log")),
                "{kind}: {out}"
            );
            println!("{kind}: {out}");

            let (code, again) = migrate(data);
            assert_eq!(code, Some(0), "{kind}: {again}");
            let formats = format!("format {STORE_FORMAT} at open, {STORE_FORMAT} now");
            assert!(again.contains(&formats), "{kind}: {again}");
            assert!(
                again.contains("migrated: 0 records rewritten"),
                "{kind}: {again}"
            );
            // No event is left in sled: each is where today's are, in the log.
            assert_eq!(rewritten(&again, "events"), (0, 0), "{kind}: {again}");
        });
        answers_as_release_0_1_0(kind, d);
    }
}

#[test]
fn migrate_refuses_a_directory_without_a_store_and_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("typo");
    let (code, out) = migrate(&nowhere);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("holds no creditsd store"), "{out}");
    assert!(!nowhere.exists(), "migrate created {}", nowhere.display());

    let d = Daemon::start("");
    d.create("a", "free");
    let (code, out) = migrate(&d.data_dir());
    assert_eq!(code, Some(75), "{out}");
    assert!(
        out.contains("in use") && out.contains("stop the daemon"),
        "{out}"
    );
    assert_eq!(d.account("a")["available"], 50);
}

/// Every file and directory under `dir` with the SHA-256 of its bytes.
fn hash_tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(name + "/", String::new());
                todo.push(path);
            } else {
                out.insert(
                    name,
                    hex::encode(Sha256::digest(std::fs::read(&path).unwrap())),
                );
            }
        }
    }
    out
}

/// A store whose marker says a format newer than this build's (as a later release will
/// write) is refused by the daemon, by audit and by migrate, each saying so with exit 65,
/// and not one byte of it changes.
#[test]
fn a_store_of_a_newer_format_is_refused_and_left_as_it_is() {
    use creditsd::store::format::{marker, FORMAT_KEY, STORE_FORMAT};
    use creditsd::store::kv::{Kv, SledKv};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture("stopped").join("data"), &data);
    drop(creditsd::store::SledStore::open(&data, 1 << 20).unwrap());
    {
        let kv = SledKv::open(&data, 1 << 20).unwrap();
        kv.insert(&FORMAT_KEY, &marker(STORE_FORMAT + 1)).unwrap();
        kv.sync().unwrap();
    }
    // sled, opening a database whose page-table snapshot (`snap.*`) is behind its log,
    // writes a new one: its own cache of where its pages are, whoever opens it. Opened
    // once, it is up to date, and what is compared below is what creditsd writes.
    drop(SledKv::open(&data, 1 << 20).unwrap());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let before = hash_tree(&data);
    assert!(
        before.contains_key("log/") && before.contains_key("db"),
        "{before:?}"
    );
    let expected = [
        "written by a newer creditsd".to_string(),
        format!("store format {}", STORE_FORMAT + 1),
        format!("reads formats 1 to {STORE_FORMAT}"),
        "nothing was changed".to_string(),
        data.display().to_string(),
    ];
    for command in ["serve", "audit", "migrate"] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg(command).arg("--config").arg(&config);
        if command == "serve" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let out = cmd.arg("--data-dir").arg(&data).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{command}: {err}");
        for e in &expected {
            assert!(err.contains(e.as_str()), "{command}: no {e:?} in {err}");
        }
        assert_eq!(hash_tree(&data), before, "{command} changed the store");
    }
}
