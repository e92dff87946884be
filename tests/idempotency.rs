//! Idempotency through the real daemon and its filter (`src/store/idem_filter.rs`): a
//! fresh key's lookup is answered by the filter (no sled read, counted in `/metrics`),
//! and keys bound before a restart, kill -9 or clean, are still duplicates, while the
//! filter is being rebuilt from sled at open and after.

mod common;

use std::time::{Duration, Instant};

use common::*;

const BUILT: &str = "built the idempotency filter";

/// `creditsd_idempotency_lookups_total` answered by `by` (0 before it first moves).
fn lookups(d: &Daemon, by: &str) -> f64 {
    metric(
        d,
        &format!("creditsd_idempotency_lookups_total{{answered_by=\"{by}\"}}"),
    )
}

fn metric(d: &Daemon, series: &str) -> f64 {
    let text = ureq::get(&d.url("/metrics"))
        .call()
        .expect("scraping /metrics")
        .into_string()
        .unwrap();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Waits until the log holds `n` lines saying the filter was built; answers the last.
fn built(d: &Daemon, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = d.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(BUILT)).collect();
        if lines.len() >= n {
            return lines[n - 1].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the filter was not built:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every key in `first` answers again as a duplicate: its first answer, byte for byte
/// but `duplicate`, and the books do not move.
fn all_duplicates(d: &Daemon, first: &[(String, Value)]) {
    let available = d.account("a")["available"].clone();
    for (key, answer) in first {
        let (s, mut v) = d.debit("a", "caption_generation", 1, key);
        assert_eq!(
            (s, v["duplicate"].clone()),
            (200, json!(true)),
            "{key}: {v}"
        );
        v["duplicate"] = json!(false);
        assert_eq!(&v, answer, "{key}");
    }
    assert_eq!(d.account("a")["available"], available);
}

fn fresh(d: &Daemon, keys: std::ops::Range<u32>) -> Vec<(String, Value)> {
    keys.map(|i| {
        let key = format!("k{i}");
        let (s, v) = d.debit("a", "caption_generation", 1, &key);
        assert_eq!(
            (s, v["duplicate"].clone()),
            (200, json!(false)),
            "{key}: {v}"
        );
        (key, v)
    })
    .collect()
}

#[test]
fn duplicates_survive_restarts_while_and_after_the_filter_is_rebuilt() {
    // Layers checkpointed quickly, so some keys are in sled and some only in the log.
    let mut d = Daemon::start("[storage]\ncheckpoint_after_ms = 100\n");
    assert!(built(&d, 1).contains("keys=0"), "{}", d.log_text());
    assert_eq!(
        metric(&d, "creditsd_idempotency_filter_bytes"),
        0.0,
        "nothing allocated before the first key"
    );
    d.create("a", "agency");
    let mut first = fresh(&d, 0..40);
    // Fresh keys: answered by the filter, none read from sled.
    assert_eq!(lookups(&d, "filter"), 40.0);
    assert_eq!(lookups(&d, "sled"), 0.0);
    assert_eq!(
        metric(&d, "creditsd_idempotency_filter_bytes"),
        (20 << 20) as f64 / 5.0,
        "one generation of the default budget"
    );
    std::thread::sleep(Duration::from_millis(600)); // these reach sled
    first.extend(fresh(&d, 40..80)); // these are in the log, maybe not in sled yet
    all_duplicates(&d, &first);

    // kill -9, and a restart whose filter is held back: lookups read sled meanwhile.
    d.kill9();
    d.set_env(creditsd::daemon::TEST_FILTER_BUILD_DELAY_VAR, "3000");
    d.start_again();
    let started = Instant::now();
    all_duplicates(&d, &first[..20]);
    // Unless this machine took most of the delay to answer them, they were answered
    // while the filter was not built yet: from sled, none by the filter.
    if started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(built_count(&d), 1, "{}", d.log_text());
        assert_eq!(lookups(&d, "filter"), 0.0);
        assert_eq!(lookups(&d, "sled"), 20.0);
    }
    let line = built(&d, 2);
    assert!(line.contains("keys=80"), "{line}");
    all_duplicates(&d, &first);
    let before = lookups(&d, "filter");
    first.extend(fresh(&d, 80..120));
    assert_eq!(lookups(&d, "filter") - before, 40.0);

    // A clean stop and start: everything is in sled, and the filter holds it all.
    d.set_env(creditsd::daemon::TEST_FILTER_BUILD_DELAY_VAR, "0");
    d.restart();
    let line = built(&d, 3);
    assert!(line.contains("keys=120"), "{line}");
    all_duplicates(&d, &first);
    let sled = lookups(&d, "sled");
    assert_eq!(sled, 120.0, "a bound key is read from sled");
    fresh(&d, 120..160);
    assert_eq!(lookups(&d, "filter"), 40.0);
    assert_eq!(lookups(&d, "sled"), sled);
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

fn built_count(d: &Daemon) -> usize {
    d.log_text().lines().filter(|l| l.contains(BUILT)).count()
}
