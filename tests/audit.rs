//! `creditsd audit` finds what is wrong: books that do not balance, a snapshot that is not
//! its replay, a gap in sequence numbers. The records are written with the real store.

mod common;
use common::*;

use creditsd::domain::{Account, Buckets, Command, Credits, Event, Pricing, Ts};
use creditsd::store::{Append, SledStore, Store};

fn history(id: &str) -> (Vec<Event>, Account) {
    let p = Pricing::standard();
    let created = Account::create(id, "starter", Ts(0), Ts(0), &p).unwrap();
    let mut acct = Account::empty(id);
    acct.apply(&created);
    let mut events = vec![created];
    for i in 0..3 {
        let cmd = Command::Debit {
            operation: "sample_image".into(),
            quantity: 1,
            metadata: vec![],
            idempotency_key: format!("k{i}"),
            member: None,
        };
        let body = acct.decide(&cmd, Ts(1000), &p).unwrap();
        events.push(acct.record(body, Ts(1000), &p));
    }
    (events, acct)
}

fn write(store: &SledStore, id: &str, events: &[Event], snapshot: &Account) {
    store
        .append(
            id,
            Append {
                events,
                snapshot: Some(snapshot),
                ..Default::default()
            },
        )
        .unwrap();
}

#[test]
fn audit_passes_good_books_and_reports_each_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    {
        let store = SledStore::open(&data, 1 << 20).unwrap();
        let (events, acct) = history("good");
        write(&store, "good", &events, &acct);
        store.sync().unwrap();
    }
    let (ok, report) = audit(&config, &data);
    assert!(ok, "{report}");
    assert!(
        report.contains("audited 1 accounts, 4 events: 0 problems"),
        "{report}"
    );

    {
        let store = SledStore::open(&data, 1 << 20).unwrap();
        // An event whose recorded balances are not what replay reaches.
        let (mut events, acct) = history("tampered");
        events[2].after = Buckets {
            monthly: Credits(49),
            ..events[2].after
        };
        write(&store, "tampered", &events, &acct);
        // A snapshot that is not the replay of its log.
        let (events, mut acct) = history("bad-snapshot");
        acct.balances.packs = Credits(1000);
        write(&store, "bad-snapshot", &events, &acct);
        // A gap in the sequence.
        let (mut events, acct) = history("gap");
        events.remove(1);
        write(&store, "gap", &events, &acct);
        store.sync().unwrap();
    }
    let (ok, report) = audit(&config, &data);
    assert!(!ok, "{report}");
    assert!(
        report.contains("PROBLEM account tampered: corrupt record at key Etampered#3"),
        "{report}"
    );
    assert!(
        report.contains("PROBLEM account bad-snapshot: snapshot at seq 4 differs"),
        "{report}"
    );
    assert!(
        report.contains("PROBLEM account gap: corrupt record at key Egap#3: the log jumps"),
        "{report}"
    );
    assert!(report.contains("3 problems"), "{report}");
}

#[test]
fn periodic_durability_serves_and_keeps_state_across_a_graceful_restart() {
    let mut d = Daemon::start("[storage]\ndurability = \"periodic\"\nflush_interval_ms = 20\n");
    d.create("a", "growth");
    for i in 0..50 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("k{i}")).0,
            200
        );
    }
    let before = d.account("a");
    assert_eq!(before["available"], 200);
    d.restart();
    assert_eq!(d.account("a"), before);
    let (_, v) = d.debit("a", "caption_generation", 1, "k7");
    assert_eq!(v["duplicate"], true);
}

#[test]
fn an_account_whose_log_does_not_replay_is_refused_alone() {
    let mut d = Daemon::start("");
    d.create("good", "free");
    assert!(d.terminate().success());
    {
        let store = SledStore::open(&d.data_dir(), 1 << 20).unwrap();
        let (mut events, _) = history("tampered");
        events[3].after = Buckets {
            packs: Credits(7),
            ..events[3].after
        };
        write(&store, "tampered", &events, &Account::empty("tampered"));
        // The snapshot is from before the damage, so activation must replay the bad event.
        let mut snap = Account::empty("tampered");
        for ev in &events[..2] {
            snap.apply(ev);
        }
        store
            .append(
                "tampered",
                Append {
                    snapshot: Some(&snap),
                    ..Default::default()
                },
            )
            .unwrap();
        store.sync().unwrap();
    }
    d.start_again();
    let (s, v) = d.get("/v1/accounts/tampered");
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (500, json!("storage_corrupt")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("seq 4"),
        "{v}"
    );
    let (s, _) = d.debit("tampered", "caption_generation", 1, "k");
    assert_eq!(s, 500);
    // Every other account keeps working, and the daemon is still up.
    assert_eq!(d.debit("good", "caption_generation", 1, "k").0, 200);
    assert_eq!(d.account("good")["available"], 49);
}
