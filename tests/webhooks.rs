//! Webhook delivery and feed retention, against the real binary and a real local
//! receiver (a small HTTP server on 127.0.0.1 that checks signatures).

mod common;
use common::*;

/// The feed of the first edition's notices: the forecast alert, which a fast spend-down
/// also fires, is off here (`tests/second_edition.rs` tests it).
const NO_FORECAST: &str = "[alerts]\nforecast_hours = 0\n";

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    id: u64,
    body: Value,
    signature_ok: bool,
    answered: u16,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    /// Requests still to answer 500.
    fail_next: Arc<AtomicUsize>,
    /// While set, every request is answered 500.
    failing: Arc<AtomicBool>,
}

impl Receiver {
    fn start(secret: &str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/credits", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            got: Default::default(),
            fail_next: Default::default(),
            failing: Default::default(),
        };
        let (got, fail_next, failing) = (r.got.clone(), r.fail_next.clone(), r.failing.clone());
        let secret = secret.as_bytes().to_vec();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let fail = failing.load(Ordering::SeqCst)
                    || fail_next
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                if let Some(d) = serve(stream, &secret, if fail { 500 } else { 200 }) {
                    got.lock().unwrap().push(d);
                }
            }
        });
        r
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Ids answered 200, in arrival order.
    fn delivered_ids(&self) -> Vec<u64> {
        self.deliveries()
            .iter()
            .filter(|d| d.answered == 200)
            .map(|d| d.id)
            .collect()
    }

    /// Waits (bounded) until every id of `ids` has been answered 200.
    fn wait_for(&self, ids: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.delivered_ids();
            if ids.iter().all(|id| got.contains(id)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {ids:?}, delivered {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one HTTP/1.1 request, checks its signature, answers `status` and closes.
fn serve(stream: TcpStream, secret: &[u8], status: u16) -> Option<Delivery> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    // A connection closed before any request (a daemon stopping while its client had one
    // open) delivers nothing.
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    assert!(
        request_line.starts_with("POST /hooks/credits "),
        "{request_line}"
    );
    let (mut length, mut signature) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "x-creditsd-signature" => signature = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let reason = if status == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let mut out = &stream;
    let _ = out.write_all(
        format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    Some(Delivery {
        id: body["id"].as_u64().unwrap(),
        body,
        signature_ok: signature == expected,
        answered: status,
    })
}

fn feed(d: &Daemon) -> Vec<Value> {
    let (s, v) = d.get("/v1/events?after=0&limit=1000");
    assert_eq!(s, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

fn hook(url: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret = \"{secret}\"\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\n{extra}\n"
    )
}

/// A starter account spent to zero (low 25, low 10, exhausted), a purchase (completed,
/// replenished), an upgrade (plan.changed): 6 feed events.
fn busy_day(d: &Daemon, account: &str) {
    d.create(account, "starter");
    for i in 0..20 {
        let (s, v) = d.debit(account, "face_generation", 1, &format!("{account}-{i}"));
        assert_eq!(s, 200, "{v}");
    }
    let (s, _) = d.post(
        &format!("/v1/accounts/{account}/purchases"),
        json!({ "pack": "pack_100", "payment_ref": format!("{account}-pay") }),
    );
    assert_eq!(s, 200);
    let (s, _) = d.put(
        &format!("/v1/accounts/{account}/plan"),
        json!({ "plan": "growth", "idempotency_key": format!("{account}-up") }),
    );
    assert_eq!(s, 200);
}

#[test]
fn webhooks_receive_the_feed_signed_and_filtered_by_type() {
    let all = Receiver::start("s3cret");
    let low = Receiver::start("other-secret");
    let d = Daemon::start(&format!(
        "{NO_FORECAST}{}{}",
        hook(&all.url, "s3cret", ""),
        hook(&low.url, "other-secret", "events = [\"balance.low\"]"),
    ));
    busy_day(&d, "a");
    let events = feed(&d);
    assert_eq!(events.len(), 6, "{events:?}");
    all.wait_for(&ids(&events));
    let got = all.deliveries();
    assert!(got.iter().all(|g| g.signature_ok), "{got:?}");
    assert!(got.iter().all(|g| g.answered == 200), "{got:?}");
    // Exactly the feed: the same JSON, once each, in order.
    let bodies: Vec<Value> = got.iter().map(|g| g.body.clone()).collect();
    assert_eq!(bodies, events);

    let lows: Vec<Value> = events
        .iter()
        .filter(|e| e["type"] == "balance.low")
        .cloned()
        .collect();
    assert_eq!(lows.len(), 2);
    low.wait_for(&ids(&lows));
    // The last feed event (plan.changed) is after every low one, and was delivered to
    // `all`; `low` has been given its chance to send it and did not.
    std::thread::sleep(Duration::from_millis(300));
    let got = low.deliveries();
    assert!(got.iter().all(|g| g.signature_ok), "{got:?}");
    let bodies: Vec<Value> = got.iter().map(|g| g.body.clone()).collect();
    assert_eq!(bodies, lows);
}

#[test]
fn a_failing_receiver_gets_everything_in_order_after_retries() {
    let r = Receiver::start("k");
    r.fail_next.store(7, Ordering::SeqCst);
    let d = Daemon::start(&format!("{NO_FORECAST}{}", hook(&r.url, "k", "")));
    busy_day(&d, "a");
    busy_day(&d, "b");
    let events = feed(&d);
    assert_eq!(events.len(), 12, "{events:?}");
    let expected = ids(&events);
    r.wait_for(&expected);
    let got = r.deliveries();
    assert!(got.iter().all(|g| g.signature_ok), "{got:?}");
    assert_eq!(got.iter().filter(|g| g.answered == 500).count(), 7);
    // Every id arrives, in order; a repeat is only a retry of the id just attempted.
    let mut attempted: Vec<u64> = got.iter().map(|g| g.id).collect();
    attempted.dedup();
    assert_eq!(attempted, expected);
    assert_eq!(r.delivered_ids(), expected, "each once, once it succeeded");
}

#[test]
fn delivery_resumes_after_a_restart_where_it_stopped() {
    let r = Receiver::start("k");
    let mut d = Daemon::start(&format!("{NO_FORECAST}{}", hook(&r.url, "k", "")));
    busy_day(&d, "a");
    let first = ids(&feed(&d));
    r.wait_for(&first);

    // The endpoint goes down; new events wait for it.
    r.failing.store(true, Ordering::SeqCst);
    busy_day(&d, "b");
    let all = ids(&feed(&d));
    assert_eq!(all.len(), 12);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.deliveries().iter().any(|g| g.answered == 500) {
        assert!(Instant::now() < deadline, "no attempt reached the receiver");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.restart();
    let seen_before_restart = r.deliveries().len();
    r.failing.store(false, Ordering::SeqCst);
    r.wait_for(&all);
    // Nothing delivered before the restart is sent again: the cursor was persisted.
    let after_restart: Vec<u64> = r.deliveries()[seen_before_restart..]
        .iter()
        .map(|g| g.id)
        .collect();
    assert!(
        after_restart.iter().all(|id| !first.contains(id)),
        "{after_restart:?}"
    );
    assert_eq!(r.delivered_ids(), all);
}

#[test]
fn a_dead_endpoint_does_not_hold_up_debits() {
    // A port nobody listens on: every attempt is refused and retried forever.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&format!(
        "{NO_FORECAST}{}",
        hook(&format!("http://127.0.0.1:{port}/x"), "k", "")
    ));
    busy_day(&d, "a");
    busy_day(&d, "b");
    assert_eq!(feed(&d).len(), 12);
    assert_eq!(d.account("b")["plan"], "growth");
    let (_, metrics) = d.raw_tcp("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close", b"");
    assert!(
        metrics.contains("creditsd_webhook_deliveries_total{result=\"failed\"}"),
        "{metrics}"
    );
}

#[test]
fn the_feed_keeps_only_its_retention_and_ids_never_repeat() {
    let mut d = Daemon::start(&format!(
        "{NO_FORECAST}[feed]\nretention_events_max = 3\nprune_interval_ms = 50\n"
    ));
    busy_day(&d, "a");
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let events = feed(&d);
        if events.len() == 3 {
            break events;
        }
        assert!(Instant::now() < deadline, "not pruned: {events:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ids(&kept), vec![4, 5, 6]);
    d.restart();
    let (s, _) = d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "again" }),
    );
    assert_eq!(s, 200);
    let events = feed(&d);
    assert_eq!(events.last().unwrap()["id"], 7, "{events:?}");
    assert_eq!(events.last().unwrap()["type"], "purchase.completed");
}

#[test]
fn the_feed_prunes_by_age_but_keeps_the_newest_entry() {
    let mut d = Daemon::start(&format!(
        "{NO_FORECAST}[feed]\nretention_seconds = 1\nprune_interval_ms = 50\n"
    ));
    busy_day(&d, "a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while feed(&d).len() > 1 {
        assert!(Instant::now() < deadline, "not pruned: {:?}", feed(&d));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ids(&feed(&d)), vec![6]);
    d.restart();
    d.post(
        "/v1/accounts/a/purchases",
        json!({ "pack": "pack_100", "payment_ref": "again" }),
    );
    assert_eq!(ids(&feed(&d)).last(), Some(&7));
}
