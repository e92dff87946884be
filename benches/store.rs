//! Cost of one `SledStore::append` of a debit (no fsync: that is the journal's, per group),
//! from one thread and from 4 threads writing 4 different accounts at once. Run before and
//! after a change to the write path to see what it costs (README, "Operating it").

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use creditsd::domain::{Account, Bucket, Command, Credits, Event, Pricing, Ts};
use creditsd::store::{Append, SledStore, Store};

/// Debit events 1..=n of one account with plenty of credits, ready to append in order.
fn debit_events(id: &str, n: u64) -> Vec<Event> {
    let p = Pricing::standard();
    let mut a = Account::empty(id);
    a.apply(&Account::create(id, "agency", Ts(0), Ts(0), &p).unwrap());
    let grant = Command::Grant {
        bucket: Bucket::Packs,
        credits: Credits(1 << 50),
        reason: "bench".into(),
        idempotency_key: "g".into(),
        expires_at: None,
    };
    let body = a.decide(&grant, Ts(0), &p).unwrap();
    let mut out = vec![a.record(body, Ts(0), &p)];
    let cmd = Command::Debit {
        operation: "sample_image".into(),
        quantity: 1,
        metadata: vec![],
        idempotency_key: "job".into(),
        member: None,
    };
    while (out.len() as u64) < n {
        let body = a.decide(&cmd, Ts(1), &p).unwrap();
        out.push(a.record(body, Ts(1), &p));
    }
    out
}

fn append_all(store: &SledStore, id: &str, events: &[Event]) {
    for ev in events {
        store
            .append(
                id,
                Append {
                    events: std::slice::from_ref(ev),
                    ..Default::default()
                },
            )
            .unwrap();
    }
}

fn benches(c: &mut Criterion) {
    const PER_ITER: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path(), 64 << 20).unwrap());
    let mut g = c.benchmark_group("store");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    for threads in [1usize, 4] {
        let name = format!("append 1000 debits, {threads} thread(s)");
        let mut round = 0u64;
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let work: Vec<(String, Vec<Event>)> = (0..threads)
                        .map(|t| {
                            let id = format!("acct-{threads}-{round}-{t}");
                            let evs = debit_events(&id, PER_ITER);
                            (id, evs)
                        })
                        .collect();
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for (id, evs) in &work {
                            let store = &store;
                            s.spawn(move || append_all(store, id, evs));
                        }
                    });
                    total += started.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(store, benches);
criterion_main!(store);
