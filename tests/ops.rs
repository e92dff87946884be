//! Operating creditsd, against the real binary: Prometheus metrics that move with the
//! books (and stay right across a crash), the systemd notify protocol, bearer-token auth,
//! refusing to expose itself without tokens, config validation, and the deploy files.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// One scrape of `/metrics`: `name{labels}` → value, labels sorted by name.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn of(d: &Daemon) -> Scrape {
        let text = ureq::get(&d.url("/metrics"))
            .call()
            .expect("scraping /metrics")
            .into_string()
            .unwrap();
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let mut ls: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                    ls.sort();
                    (n, ls.join(","))
                }
                None => (series, String::new()),
            };
            out.insert(format!("{name}{{{labels}}}"), value.parse().unwrap());
        }
        Scrape(out)
    }

    /// The value of `name` with exactly `labels` (`k="v"` pairs, any order); 0 when absent
    /// (a counter that never moved is not rendered).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut ls: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        ls.sort();
        self.0
            .get(&format!("{name}{{{}}}", ls.join(",")))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|k| k.starts_with(&format!("{name}{{")))
    }
}

fn outstanding(s: &Scrape) -> [f64; 4] {
    ["monthly", "free", "packs", "held"]
        .map(|b| s.get("creditsd_credits_outstanding", &[("bucket", b)]))
}

#[test]
fn metrics_move_with_the_books_and_outstanding_survives_a_crash() {
    let mut d = Daemon::start("");
    d.create("a", "starter"); // free 50, monthly 50
    d.create("b", "free"); // free 50
    d.create("c", "free"); // free 50
    assert_eq!(d.debit("a", "face_generation", 2, "k1").0, 200); // 10 from monthly
    assert_eq!(d.debit("a", "face_generation", 2, "k1").0, 200); // duplicate
    assert_eq!(d.debit("a", "face_generation", 3, "k1").0, 409); // conflict
    assert_eq!(d.debit("a", "teleport", 1, "k2").0, 400); // invalid
    assert_eq!(d.debit("b", "video_generation", 7, "k3").0, 402); // 56 > 50: insufficient
    let (s, v) = d.post(
        "/v1/accounts/b/purchases",
        json!({ "pack": "pack_100", "payment_ref": "pay-1" }),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post(
        "/v1/accounts/a/grants",
        json!({ "bucket": "free", "credits": 7, "reason": "support", "idempotency_key": "g1" }),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post(
        "/v1/accounts/b/holds",
        json!({ "operation": "sample_image", "quantity": 2, "idempotency_key": "h1" }),
    );
    assert_eq!(s, 201, "{v}"); // 6 from b's free into held
    let hold = v["hold_id"].as_str().unwrap().to_string();
    assert_eq!(d.debit("c", "caption_generation", 50, "all").0, 200); // c is exhausted

    let m = Scrape::of(&d);
    let debited = |op, plan| {
        m.get(
            "creditsd_credits_debited_total",
            &[("operation", op), ("plan", plan)],
        )
    };
    assert_eq!(debited("face_generation", "starter"), 10.0);
    assert_eq!(debited("caption_generation", "free"), 50.0);
    let debits = |r| m.get("creditsd_debits_total", &[("result", r)]);
    assert_eq!(
        [
            debits("ok"),
            debits("duplicate"),
            debits("conflict"),
            debits("invalid"),
            debits("insufficient")
        ],
        [2.0, 1.0, 1.0, 1.0, 1.0]
    );
    let granted = |b| m.get("creditsd_credits_granted_total", &[("bucket", b)]);
    assert_eq!(
        [granted("monthly"), granted("free"), granted("packs")],
        [50.0, 157.0, 100.0]
    );
    assert_eq!(
        m.get("creditsd_revenue_cents_total", &[("pack", "pack_100")]),
        900.0
    );
    let before = outstanding(&m);
    // monthly: a 50 − 10; free: a 50 + 7, b 50 − 6, c 0; packs: b 100; held: b 6.
    assert_eq!(before, [40.0, 101.0, 100.0, 6.0]);
    assert_eq!(m.get("creditsd_accounts", &[]), 3.0);
    assert_eq!(m.get("creditsd_accounts_paused", &[]), 1.0);
    assert!(m.get("creditsd_accounts_active", &[]) >= 3.0);
    assert_eq!(
        m.get("creditsd_notices_total", &[("type", "balance.exhausted")]),
        1.0
    );
    assert_eq!(
        m.get("creditsd_notices_total", &[("type", "purchase.completed")]),
        1.0
    );
    for h in [
        "creditsd_http_request_duration_seconds_bucket",
        "creditsd_group_commit_size_bucket",
        "creditsd_fsync_duration_seconds_bucket",
        "creditsd_recovery_duration_seconds_bucket",
    ] {
        assert!(m.has(h), "{h} missing");
    }
    assert!(
        m.get(
            "creditsd_http_request_duration_seconds_count",
            &[("route", "debit")]
        ) >= 5.0
    );
    // No account id ever becomes a label.
    assert!(!m
        .0
        .keys()
        .any(|k| k.contains("\"a\"") || k.contains("\"b\"")));

    // SIGKILL: no shutdown snapshot. The totals come back from disk for every account,
    // though no account has been activated since.
    d.kill9();
    d.start_again();
    let m = Scrape::of(&d);
    assert_eq!(outstanding(&m), before);
    assert_eq!(m.get("creditsd_accounts", &[]), 3.0);
    assert_eq!(m.get("creditsd_accounts_paused", &[]), 1.0);
    assert_eq!(m.get("creditsd_accounts_active", &[]), 0.0);
    // And they keep moving from there; a release gives the hold back to `free`.
    let (s, v) = d.post(&format!("/v1/accounts/b/holds/{hold}/release"), json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.debit("a", "sample_image", 1, "k4").0, 200);
    let m = Scrape::of(&d);
    assert_eq!(outstanding(&m), [37.0, 107.0, 100.0, 0.0]);
    assert_eq!(
        m.get(
            "creditsd_credits_debited_total",
            &[("operation", "sample_image"), ("plan", "starter")]
        ),
        3.0
    );
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

/// Receives datagrams until one contains `want`, or panics after `within`.
fn expect_notify(sock: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {want} on the notify socket; got {seen:?}");
}

#[test]
fn notify_protocol_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    // As systemd does: WATCHDOG_USEC, and WATCHDOG_PID set to the daemon's own pid (the
    // harness execs it from a shell that sets it to `$$`). 400 ms: the watchdog task pings
    // every 200 ms while the journal answers.
    let mut d = Daemon::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "$$"),
        ],
    );
    let first = expect_notify(&sock, "READY=1", Duration::from_secs(30));
    assert!(!first.iter().any(|m| m.contains("STOPPING=1")), "{first:?}");
    // READY came after the listener was bound: the API answers.
    assert_eq!(d.get("/readyz").0, 200);
    expect_notify(&sock, "WATCHDOG=1", Duration::from_secs(30));
    assert!(d.terminate().success());
    expect_notify(&sock, "STOPPING=1", Duration::from_secs(30));
}

const TOKENS: [(&str, &str); 4] = [
    ("reader", "read"),
    ("pipeline", "debit"),
    ("billing", "billing"),
    ("ops", "admin"),
];

fn hash_token(token: &str) -> String {
    let out = Command::new(BIN)
        .args(["hash-token", token])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A request with an optional `Authorization` header value: the status.
fn status(d: &Daemon, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> u16 {
    let mut req = ureq::request(method, &d.url(path));
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("transport error: {e}"),
    }
}

#[test]
fn every_auth_case() {
    // The config is generated from `creditsd hash-token`'s output, as an operator would.
    let mut toml = String::new();
    for (name, scope) in TOKENS {
        toml += &format!(
            "[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            hash_token(&format!("secret-{name}"))
        );
    }
    // hash-token also reads the token from stdin, so it stays out of shell history.
    let mut child = Command::new(BIN)
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"secret-ops\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hash_token("secret-ops")
    );
    assert_eq!(hash_token("secret-ops").len(), 64);

    let d = Daemon::start(&toml);
    let bearer = |name: &str| format!("Bearer secret-{name}");
    let (reader, pipeline, billing, ops) = (
        bearer("reader"),
        bearer("pipeline"),
        bearer("billing"),
        bearer("ops"),
    );
    let create = |auth: Option<&str>, id: &str| {
        status(
            &d,
            "POST",
            "/v1/accounts",
            auth,
            Some(json!({ "id": id, "plan": "starter" })),
        )
    };
    // 401: no token, a wrong token, a right token in the wrong scheme.
    assert_eq!(create(None, "x"), 401);
    assert_eq!(create(Some("Bearer secret-nobody"), "x"), 401);
    assert_eq!(create(Some("Basic secret-billing"), "x"), 401);
    assert_eq!(create(Some("Bearer "), "x"), 401);
    // 403: valid tokens without the scope. 201 with it.
    assert_eq!(create(Some(&reader), "x"), 403);
    assert_eq!(create(Some(&pipeline), "x"), 403);
    assert_eq!(create(Some(&billing), "acct"), 201);
    // Nothing was created by the refused requests.
    assert_eq!(status(&d, "GET", "/v1/accounts/x", Some(&ops), None), 404);

    let debit = |auth: Option<&str>, key: &str| {
        status(
            &d,
            "POST",
            "/v1/accounts/acct/debits",
            auth,
            Some(json!({ "operation": "caption_generation", "idempotency_key": key })),
        )
    };
    assert_eq!(debit(None, "d0"), 401);
    assert_eq!(debit(Some(&reader), "d1"), 403);
    assert_eq!(debit(Some(&billing), "d2"), 403);
    assert_eq!(debit(Some(&pipeline), "d3"), 200);
    assert_eq!(debit(Some(&ops), "d4"), 200); // admin implies debit

    for path in [
        "/v1/accounts/acct",
        "/v1/accounts/acct/ledger",
        "/v1/accounts/acct/usage",
        "/v1/accounts/acct/forecast",
        "/v1/events",
        "/v1/pricing",
    ] {
        assert_eq!(status(&d, "GET", path, None, None), 401, "{path}");
        assert_eq!(
            status(&d, "GET", path, Some(&pipeline), None),
            403,
            "{path}"
        );
        assert_eq!(status(&d, "GET", path, Some(&reader), None), 200, "{path}");
        assert_eq!(status(&d, "GET", path, Some(&ops), None), 200, "{path}");
    }
    let purchase = |auth: Option<&str>, r: &str| {
        status(
            &d,
            "POST",
            "/v1/accounts/acct/purchases",
            auth,
            Some(json!({ "pack": "pack_100", "payment_ref": r })),
        )
    };
    assert_eq!(purchase(Some(&pipeline), "p1"), 403);
    assert_eq!(purchase(Some(&billing), "p2"), 200);
    assert_eq!(purchase(Some(&ops), "p3"), 200); // admin implies billing
    let plan = |auth: Option<&str>, key: &str| {
        status(
            &d,
            "PUT",
            "/v1/accounts/acct/plan",
            auth,
            Some(json!({ "plan": "growth", "idempotency_key": key })),
        )
    };
    assert_eq!(plan(Some(&reader), "u1"), 403);
    assert_eq!(plan(Some(&billing), "u2"), 200);
    // Grants are operator adjustments: admin only, not billing.
    let grant = |auth: Option<&str>, key: &str| {
        status(
            &d,
            "POST",
            "/v1/accounts/acct/grants",
            auth,
            Some(
                json!({ "bucket": "free", "credits": 5, "reason": "support", "idempotency_key": key }),
            ),
        )
    };
    assert_eq!(grant(Some(&billing), "g1"), 403);
    assert_eq!(grant(Some(&ops), "g2"), 200);
    // Probes and the scrape stay open: Prometheus and systemd carry no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(&d, "GET", path, None, None), 200, "{path}");
    }
    // The 403 names the missing scope, never the token.
    let err = ureq::get(&d.url("/v1/pricing"))
        .set("Authorization", &pipeline)
        .call()
        .unwrap_err();
    let ureq::Error::Status(403, r) = err else {
        panic!("{err}")
    };
    let body: Value = r.into_json().unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("read"));
    assert!(!d.log_text().contains("secret-"));
}

#[test]
fn no_tokens_means_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without [[auth.tokens]]"),
        "{err}"
    );
    // check-config says the same about a file that asks for it.
    std::fs::write(&config, "[server]\nlisten = \"0.0.0.0:8640\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to listen"));
    // On loopback without tokens it serves, and says that auth is off.
    let d = Daemon::start("");
    assert!(
        d.log_text().contains("authentication is off"),
        "{}",
        d.log_text()
    );
}

#[test]
fn check_config_and_serve_refuse_broken_files_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "0".repeat(64);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            "[server]\nlisten = \"127.0.0.1:8640\"\nlistn = \"x\"\n".into(),
            "listn",
        ),
        (
            "unknown section",
            "[metrics]\nenabled = true\n".into(),
            "metrics",
        ),
        (
            "bad type",
            "[storage]\nsnapshot_every = \"many\"\n".into(),
            "snapshot_every",
        ),
        (
            "price 0",
            "[operations]\nface_generation = 0\n".into(),
            "operations.face_generation",
        ),
        (
            "threshold 101",
            "[credits]\nthresholds = [25, 101]\n".into(),
            "credits.thresholds",
        ),
        (
            "missing free plan",
            "[plans]\nstarter = 50\n".into(),
            "plans.free",
        ),
        (
            "bad token hash",
            "[[auth.tokens]]\nname = \"x\"\nsha256 = \"abc\"\nscopes = [\"read\"]\n".into(),
            "auth.tokens[0].sha256",
        ),
        (
            "unknown scope",
            format!("[[auth.tokens]]\nname = \"x\"\nsha256 = \"{hash}\"\nscopes = [\"root\"]\n"),
            "auth.tokens[0].scopes",
        ),
        (
            "bad log format",
            "[log]\nformat = \"xml\"\n".into(),
            "log.format",
        ),
    ];
    for (what, text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let check = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "{what}: check-config accepted it");
        assert!(err.contains(key), "{what}: {key} not named in {err}");
        let serve = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&serve.stderr);
        assert!(!serve.status.success(), "{what}: serve started");
        assert!(err.contains(key), "{what}: serve: {key} not named in {err}");
        assert!(
            !dir.path().join("data").exists(),
            "{what}: serve opened storage"
        );
    }
    // The shipped config.toml passes.
    let ok = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Every metric name the dashboard and the alerting rules use is one the daemon exports,
/// and both files parse (python3 is on the CI image; `scripts/check-deploy` also runs
/// promtool when it is installed).
#[test]
fn dashboards_and_rules_use_real_metric_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/scripts/deploy_names.py"))
        .arg(format!("{root}/deploy/grafana/creditsd.json"))
        .arg(format!("{root}/deploy/prometheus/creditsd-rules.yml"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let source = std::fs::read_to_string(format!("{root}/src/metrics.rs")).unwrap();
    // Statement by statement: rustfmt breaks a long declaration after its `=`.
    let exported: Vec<&str> = source
        .split(';')
        .filter_map(|stmt| stmt.split_once("pub const ")?.1.split('"').nth(1))
        .filter(|n| n.starts_with("creditsd_"))
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(&base),
            "{name} is used in deploy/ but not exported by src/metrics.rs"
        );
    }
}

#[test]
fn logs_are_json_lines_when_configured() {
    let d = Daemon::start("[log]\nformat = \"json\"\n");
    assert_eq!(d.get("/healthz").0, 200);
    let log = d.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on http://"))
            && v["level"] == "INFO"),
        "{log}"
    );
}

/// The checkpointer runs in the live daemon: writes older than a second are written into
/// their own keys in the background (the metrics move), while reads keep answering the
/// same books before, during and after.
#[test]
fn the_checkpointer_writes_layers_in_the_background() {
    // A layer a second (the default is 4 s), so the test waits one second, not four.
    let d = Daemon::start("[storage]\ncheckpoint_after_ms = 1000\n");
    d.create("cp", "agency");
    assert_eq!(d.debit("cp", "caption_generation", 1, "c1").0, 200);
    assert_eq!(
        Scrape::of(&d).get("creditsd_checkpoint_keys_total", &[]),
        0.0
    );
    // The active layer freezes at the first group commit once it is a second old.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(d.debit("cp", "caption_generation", 1, "c2").0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys = Scrape::of(&d).get("creditsd_checkpoint_keys_total", &[]);
        if keys > 0.0 || Instant::now() > deadline {
            break keys;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The creation's event, snapshot, idempotency record, totals and wake-up index, and the
    // two debits' events and idempotency records, at least.
    assert!(keys >= 5.0, "checkpointed {keys} keys");
    assert!(Scrape::of(&d).has("creditsd_checkpoint_duration_seconds_count"));
    assert_eq!(d.account("cp")["available"], 550 - 2);
    let (_, v) = d.debit("cp", "caption_generation", 1, "c1");
    assert_eq!(v["duplicate"], true, "{v}");
}

/// A real scrape, after traffic that moves every kind of metric, passes Prometheus's own
/// checker (`promtool check metrics`: HELP text, types, units, names), and every metric
/// has its HELP line.
#[test]
fn a_scrape_passes_promtool() {
    let d = Daemon::start("");
    d.create("a", "starter");
    d.debit("a", "sample_image", 2, "k1");
    d.debit("a", "face_generation", 100, "k2"); // 402
    d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "p" }),
    );
    d.get("/v1/accounts/a/ledger");
    let text = ureq::get(&d.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert!(types >= 10, "{text}");
    assert_eq!(helps, types, "a metric without HELP text:\n{text}");
    let promtool = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/promtool-env"))
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "promtool-env: {}",
        String::from_utf8_lossy(&promtool.stderr)
    );
    let promtool = String::from_utf8(promtool.stdout).unwrap();
    let mut check = Command::new(promtool.trim())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
