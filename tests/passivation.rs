//! Idle accounts passivate (snapshot, then their task stops) and come back on demand with
//! the same books and the same idempotency answers.

mod common;
use common::*;

use std::time::{Duration, Instant};

/// The value of an unlabelled metric in `/metrics`, 0 when absent.
fn metric(d: &Daemon, name: &str) -> f64 {
    let text = ureq::get(&d.url("/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls until `cond` holds; not a timed assertion: the bound only stops a hung test.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_account_passivates_and_answers_the_same_afterwards() {
    let mut d = Daemon::start("[actors]\nidle_timeout_ms = 200\n");
    d.create("sleepy", "starter");
    d.create("busy", "free");
    let (s, first) = d.debit("sleepy", "sample_image", 2, "job-1");
    assert_eq!(s, 200, "{first}");
    let (s, _) = d.debit("busy", "caption_generation", 1, "b-1");
    assert_eq!(s, 200);

    eventually("both accounts passivate", || {
        metric(&d, "creditsd_account_passivations_total") >= 2.0
            && metric(&d, "creditsd_accounts_active") == 0.0
    });

    // Reactivated from its snapshot: same books, and the key still answers its first answer.
    let acct = d.account("sleepy");
    assert_eq!(acct["available"], 50 + 50 - 6);
    assert_eq!(acct["balances"]["monthly"], 44);
    let (s, again) = d.debit("sleepy", "sample_image", 2, "job-1");
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["balances"], first["balances"]);
    let (s, v) = d.debit("sleepy", "sample_image", 1, "job-2");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["seq"], first["seq"].as_u64().unwrap() + 1);
    assert_eq!(v["balances"]["available"], 91);
    // A key reused with another body is still a conflict after passivation.
    let (s, v) = d.debit("sleepy", "face_generation", 1, "job-1");
    assert_eq!(s, 409, "{v}");

    // And it passivates again, every time it goes idle.
    eventually("it passivates a second time", || {
        metric(&d, "creditsd_account_passivations_total") >= 3.0
    });
    assert_eq!(d.account("sleepy")["available"], 91);

    assert!(d.terminate().success());
    let (ok, out) = d.audit();
    assert!(ok, "audit after passivations: {out}");
}

#[test]
fn accounts_stay_active_while_in_use_with_the_default_timeout() {
    let d = Daemon::start("");
    d.create("a", "free");
    for i in 0..5 {
        let (s, _) = d.debit("a", "caption_generation", 1, &format!("k{i}"));
        assert_eq!(s, 200);
    }
    // The gauge counts the registry at each scrape.
    eventually("the account counts as active", || {
        metric(&d, "creditsd_accounts_active") == 1.0
    });
    assert_eq!(metric(&d, "creditsd_account_passivations_total"), 0.0);
}
