//! Crash safety of the real binary: concurrent debits with unique keys, SIGKILL at random
//! moments, restart, re-send what was never answered; every acknowledged debit must be in
//! the books exactly once, and `creditsd audit` must pass.

mod common;
use common::*;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const ACCOUNTS: usize = 6;
const THREADS: usize = 12;
const KILLS: usize = 5;
const FUNDS: u64 = 10_000_000;

#[derive(Clone, Debug)]
struct Sent {
    account: String,
    body: Value,
}

#[test]
fn every_acknowledged_debit_survives_sigkill_exactly_once() {
    let mut rng = Rng::from_time();
    let seed = rng.0;
    eprintln!("crash test seed {seed}");
    let mut d = Daemon::start("[storage]\nsnapshot_every = 16\n");
    for a in 0..ACCOUNTS {
        d.create(&format!("acct-{a}"), "growth");
        let (s, v) = d.post(
            &format!("/v1/accounts/acct-{a}/grants"),
            json!({ "bucket": "packs", "credits": FUNDS, "reason": "crash test", "idempotency_key": "fund" }),
        );
        assert_eq!(s, 200, "{v}");
    }
    let acked: Mutex<HashMap<String, (String, u64)>> = Mutex::new(HashMap::new());
    let mut unanswered: Vec<(String, Sent)> = Vec::new();
    let ops = [
        "face_generation",
        "sample_image",
        "video_generation",
        "caption_generation",
    ];

    for round in 0..KILLS {
        // Re-send what the last crash left unanswered: each must now be applied or be a
        // duplicate of a write that was durable but never acknowledged.
        for (key, sent) in unanswered.drain(..) {
            let (s, v) = d.post(
                &format!("/v1/accounts/{}/debits", sent.account),
                sent.body.clone(),
            );
            assert_eq!(s, 200, "seed {seed}: re-sent {key}: {v}");
            acked
                .lock()
                .unwrap()
                .insert(key, (sent.account.clone(), v["credits"].as_u64().unwrap()));
        }
        let lost: Mutex<Vec<(String, Sent)>> = Mutex::new(Vec::new());
        let kill_after = Duration::from_millis(150 + rng.below(500));
        let pid = d.pid();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (d, acked, lost) = (&d, &acked, &lost);
                let mut rng =
                    Rng(seed
                        ^ ((round * THREADS + t) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                scope.spawn(move || {
                    for n in 0.. {
                        let account = format!("acct-{}", rng.below(ACCOUNTS as u64));
                        let key = format!("r{round}-t{t}-n{n}");
                        let body = json!({
                            "operation": ops[rng.below(4) as usize],
                            "quantity": 1 + rng.below(5),
                            "idempotency_key": key,
                        });
                        match d.try_call(
                            "POST",
                            &format!("/v1/accounts/{account}/debits"),
                            Some(&body),
                        ) {
                            Ok((200, v)) => {
                                assert_eq!(v["duplicate"], false, "seed {seed}: {v}");
                                acked
                                    .lock()
                                    .unwrap()
                                    .insert(key, (account, v["credits"].as_u64().unwrap()));
                            }
                            Ok((s, v)) => panic!("seed {seed}: unexpected {s}: {v}"),
                            Err(_) => {
                                lost.lock().unwrap().push((key, Sent { account, body }));
                                return;
                            }
                        }
                    }
                });
            }
            std::thread::sleep(kill_after);
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        });
        d.kill9(); // reap
        unanswered = lost.into_inner().unwrap();
        d.start_again();
    }
    for (key, sent) in unanswered.drain(..) {
        let (s, v) = d.post(
            &format!("/v1/accounts/{}/debits", sent.account),
            sent.body.clone(),
        );
        assert_eq!(s, 200, "seed {seed}: {v}");
        acked
            .lock()
            .unwrap()
            .insert(key, (sent.account.clone(), v["credits"].as_u64().unwrap()));
    }

    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() > 100,
        "seed {seed}: only {} debits acknowledged",
        acked.len()
    );
    for a in 0..ACCOUNTS {
        let id = format!("acct-{a}");
        let ledger = full_ledger(&d, &id);
        let mut seen: HashMap<String, u64> = HashMap::new();
        for e in ledger.iter().filter(|e| e["kind"] == "debit") {
            let key = e["idempotency_key"].as_str().unwrap().to_string();
            assert!(
                seen.insert(key.clone(), e["credits"].as_u64().unwrap())
                    .is_none(),
                "seed {seed}: {key} applied twice"
            );
        }
        let mine: HashMap<&String, u64> = acked
            .iter()
            .filter(|(_, (acc, _))| *acc == id)
            .map(|(k, (_, c))| (k, *c))
            .collect();
        for (key, credits) in &mine {
            assert_eq!(
                seen.get(*key),
                Some(credits),
                "seed {seed}: acknowledged {key} is missing from {id}"
            );
        }
        // Every debit in the books was acknowledged (possibly after a re-send).
        assert_eq!(
            seen.len(),
            mine.len(),
            "seed {seed}: {id} has debits nobody was told about"
        );
        let spent: u64 = mine.values().sum();
        let acct = d.account(&id);
        assert_eq!(
            acct["available"].as_u64().unwrap(),
            FUNDS + 200 + 50 - spent,
            "seed {seed}: {id} balance"
        );
        // Sequence numbers are gap-free.
        let seqs: Vec<u64> = ledger.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).rev().collect::<Vec<_>>(),
            "seed {seed}"
        );
    }
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "seed {seed}: {report}");
    eprintln!(
        "crash test: {} acknowledged debits survived {KILLS} SIGKILLs",
        acked.len()
    );
}

/// A graceful stop closes the store: the checkpointer writes every layer and covers every
/// log record, so the next start replays nothing. After a SIGKILL the books are the
/// same whether or not records were left to replay.
#[test]
fn a_graceful_stop_leaves_nothing_to_replay() {
    const REPLAYED: &str = "replayed the write-ahead log records";
    let mut d = Daemon::start("");
    d.create("a", "agency");
    for i in 0..30 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("k{i}")).0,
            200
        );
    }
    d.restart();
    assert!(!d.log_text().contains(REPLAYED), "{}", d.log_text());
    assert_eq!(d.account("a")["available"], 550 - 30);
    let (_, v) = d.debit("a", "caption_generation", 1, "k7");
    assert_eq!(v["duplicate"], true, "{v}");
    for i in 30..60 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("k{i}")).0,
            200
        );
    }
    d.kill9();
    d.start_again();
    assert_eq!(d.account("a")["available"], 550 - 60);
    let (_, v) = d.debit("a", "caption_generation", 1, "k59");
    assert_eq!(v["duplicate"], true, "{v}");
    assert!(d.terminate().success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
}

/// A big group commit (here one batch of 1000 debits in `periodic` mode, so that they all
/// share one sync) is one write to the segment log, never a sled item: sled 0.34 writes
/// anything over 128 KiB to a blob file of its own, which was ten times slower. The books
/// survive a SIGKILL after the sync.
#[test]
fn big_groups_go_to_the_log_and_make_no_sled_blob_files() {
    let mut d = Daemon::start("[storage]\ndurability = \"periodic\"\nflush_interval_ms = 200");
    for i in 0..10 {
        d.create(&format!("g{i}"), "agency");
    }
    let metadata = json!({ "pipeline": "x".repeat(200) });
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({ "account": format!("g{}", i % 10), "operation": "caption_generation", "idempotency_key": format!("big-{i}"), "metadata": metadata }))
        .collect();
    let (s, v) = d.post("/v1/debits", json!({ "debits": items }));
    assert_eq!(s, 200, "{v}");
    // Past the next periodic sync, then no clean shutdown.
    std::thread::sleep(Duration::from_millis(600));
    d.kill9();
    let blobs: Vec<_> = std::fs::read_dir(d.data_dir().join("blobs"))
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
    d.start_again();
    for i in 0..10 {
        assert_eq!(d.account(&format!("g{i}"))["available"], 550 - 100);
    }
}
