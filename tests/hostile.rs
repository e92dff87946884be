//! Hostile and heavy clients against the real daemon: malformed HTTP, oversized heads and
//! bodies, clients too slow to send their head, more connections than allowed, and a
//! burst far beyond one account's mailbox. None of it gets a 500 or a wrong balance.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{json, Daemon, Value};

/// Sends `bytes` on a fresh connection, half-closes, and answers the status of what came
/// back (0 when the server closed without an answer).
fn exchange(d: &Daemon, bytes: &[u8]) -> (u16, String) {
    d.raw_bytes(bytes, true)
}

fn still_serving(d: &Daemon) {
    let (s, v) = d.get("/healthz");
    assert_eq!(s, 200, "{v}");
}

#[test]
fn malformed_http_and_oversized_input_are_4xx_or_a_closed_connection() {
    let d = Daemon::start("");
    d.create("acct", "starter");
    let huge_header = format!(
        "GET /v1/accounts/acct HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(2 << 20)
    );
    let big_body = "x".repeat(70_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", vec![0, 1, 2, 0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']),
        ("bad request line", b"HELLO THERE\r\n\r\n".to_vec()),
        ("bad version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        (
            "header without colon",
            b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "two content lengths",
            b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n{}".to_vec(),
        ),
        (
            "content length beyond the body",
            b"POST /v1/accounts/acct/debits HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"operation\"".to_vec(),
        ),
        (
            "bad chunked encoding",
            b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
        ),
        ("a 2 MiB header", huge_header.into_bytes()),
        (
            "a body over 64 KiB",
            format!(
                "POST /v1/accounts/acct/debits HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big_body}",
                big_body.len()
            )
            .into_bytes(),
        ),
        (
            "a chunked body over 64 KiB",
            format!(
                "POST /v1/accounts/acct/debits HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big_body}\r\n0\r\n\r\n",
                big_body.len()
            )
            .into_bytes(),
        ),
        (
            "JSON nested 100000 deep",
            {
                let body = "[".repeat(100_000);
                format!(
                    "POST /v1/debits HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            },
        ),
        (
            "invalid UTF-8 in JSON",
            b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"id\":\"\xff\xfe\"}".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let (status, text) = exchange(&d, &bytes);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{what}: answered {status}, want a 4xx or a closed connection:\n{}",
            &text[..text.len().min(400)]
        );
        still_serving(&d);
    }
    // The body limit has its own code. It is answered from the declared length before the
    // body is read, so send only the head (a client still writing would see a broken pipe).
    let (s, text) = d.raw_tcp(
        "POST /v1/accounts/acct/debits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70016\r\nConnection: close",
        b"",
    );
    assert_eq!(s, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    // Nothing of it touched the books.
    assert_eq!(d.account("acct")["available"], 100);
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let d = Daemon::start("[server]\nconnections_max = 2\nheader_read_timeout_ms = 300\n");
    // Two clients take both connection slots and dribble half a request head.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        })
        .collect();
    // A third is served once the header timeout has freed a slot: it waits, never fails.
    let (s, v) = d.get("/healthz");
    assert_eq!(s, 200, "{v}");
    // The slow ones were disconnected (EOF or a 408), not left holding their slots.
    for s in &mut slow {
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        assert!(
            r.is_ok(),
            "a slow client must be disconnected, got {r:?} after {:?}",
            String::from_utf8_lossy(&out)
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    // Many more clients than connections, each served in turn.
    let d = Arc::new(d);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || (0..5).map(|_| d.get("/v1/pricing").0).collect::<Vec<_>>())
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().iter().all(|&s| s == 200));
    }
}

#[test]
fn a_burst_beyond_the_mailbox_is_429_with_retry_after_and_the_books_stay_right() {
    let d = Daemon::start("[actors]\nmailbox_max = 2\n");
    d.create("hot", "free");
    let (s, v) = d.post(
        "/v1/accounts/hot/grants",
        json!({"bucket": "packs", "credits": 1_000_000, "reason": "load", "idempotency_key": "g"}),
    );
    assert_eq!(s, 200, "{v}");
    let start = d.account("hot")["available"].as_u64().unwrap();
    let d = Arc::new(d);

    // Batches of 300 items to the one account overflow a mailbox of 2 at once; single
    // debits race them. Every answer is a success or a 429, never a 500.
    let mut threads = Vec::new();
    for t in 0..4 {
        let d = d.clone();
        threads.push(std::thread::spawn(move || {
            let mut ok = 0u64;
            let mut overloaded = Vec::new();
            for b in 0..3 {
                let items: Vec<Value> = (0..300)
                    .map(|i| json!({"account": "hot", "operation": "caption_generation", "idempotency_key": format!("b{t}-{b}-{i}")}))
                    .collect();
                let (s, v) = d.post("/v1/debits", json!({ "debits": items }));
                assert_eq!(s, 200, "{v}");
                for (i, r) in v["results"].as_array().unwrap().iter().enumerate() {
                    match r["code"].as_u64() {
                        Some(200) => ok += 1,
                        Some(429) => {
                            assert_eq!(r["error"]["code"], "overloaded", "{r}");
                            overloaded.push(format!("b{t}-{b}-{i}"));
                        }
                        _ => panic!("batch item answered {r}"),
                    }
                }
            }
            (ok, overloaded)
        }));
    }
    for t in 0..8 {
        let d = d.clone();
        threads.push(std::thread::spawn(move || {
            let agent = ureq::agent();
            let mut ok = 0u64;
            let mut overloaded = Vec::new();
            for i in 0..40 {
                let res = agent.post(&d.url("/v1/accounts/hot/debits")).send_json(
                    json!({"operation": "caption_generation", "idempotency_key": format!("s{t}-{i}")}),
                );
                match res {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Err(ureq::Error::Status(429, r)) => {
                        let retry = r.header("Retry-After").map(str::to_string);
                        let v: Value = r.into_json().unwrap();
                        assert_eq!(v["error"]["code"], "overloaded", "{v}");
                        assert!(
                            retry.and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1),
                            "429 without a Retry-After"
                        );
                        overloaded.push(format!("s{t}-{i}"));
                    }
                    other => panic!("single debit answered {other:?}"),
                }
            }
            (ok, overloaded)
        }));
    }
    let (mut ok, mut overloaded) = (0, Vec::new());
    for t in threads {
        let (o, v) = t.join().unwrap();
        ok += o;
        overloaded.extend(v);
    }
    assert!(
        !overloaded.is_empty(),
        "a mailbox of 2 must overflow under this burst"
    );
    assert!(ok > 0);
    // Exactly the successes were debited (caption = 1 credit each), nothing else.
    let after = d.account("hot")["available"].as_u64().unwrap();
    assert_eq!(
        start - after,
        ok,
        "{ok} ok, {} overloaded",
        overloaded.len()
    );
    // A refused (429) key leaves no trace: retried now, it is applied, not a duplicate.
    let (s, v) = d.debit("hot", "caption_generation", 1, &overloaded[0]);
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(d.account("hot")["available"].as_u64().unwrap(), after - 1);
    let mut d = Arc::try_unwrap(d).ok().expect("threads joined");
    assert!(d.terminate().success());
    let (clean, report) = d.audit();
    assert!(clean, "{report}");
    assert!(!d.log_text().contains("panicked"));
}
