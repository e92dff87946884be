//! Criterion benchmarks of the pure domain and the record codec.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use creditsd::domain::{time, Account, Command, Pricing, Ts};
use creditsd::store::codec;
use creditsd::store::records::EventRecordV3;

fn account() -> (Account, Pricing) {
    let p = Pricing::standard();
    let ev = Account::create("bench-account", "agency", Ts(0), Ts(0), &p).unwrap();
    let mut a = Account::empty("bench-account");
    a.apply(&ev);
    // Enough credits that every iteration succeeds.
    let grant = Command::Grant {
        bucket: creditsd::domain::Bucket::Packs,
        credits: creditsd::domain::Credits(1 << 50),
        reason: "bench".into(),
        idempotency_key: "g".into(),
        expires_at: None,
    };
    let body = a.decide(&grant, Ts(0), &p).unwrap();
    a.record(body, Ts(0), &p);
    (a, p)
}

fn benches(c: &mut Criterion) {
    let (mut a, p) = account();
    let cmd = Command::Debit {
        operation: "sample_image".into(),
        quantity: 1,
        metadata: vec![],
        idempotency_key: "job-123456".into(),
        member: None,
    };
    c.bench_function("decide+record one debit", |b| {
        b.iter(|| {
            let body = a.decide(black_box(&cmd), Ts(1), &p).unwrap();
            black_box(a.record(body, Ts(1), &p));
        })
    });
    let body = a.decide(&cmd, Ts(1), &p).unwrap();
    let ev = a.clone().record(body, Ts(1), &p);
    let bytes = codec::encode(&EventRecordV3::from(&ev));
    c.bench_function("encode debit event", |b| {
        b.iter(|| black_box(codec::encode(&EventRecordV3::from(black_box(&ev)))))
    });
    c.bench_function("decode debit event", |b| {
        b.iter(|| {
            let r = codec::decode::<EventRecordV3>(b"k", black_box(&bytes)).unwrap();
            black_box(creditsd::domain::Event::from(r))
        })
    });
    let anchor = Ts::parse_rfc3339("2020-01-31T10:00:00Z").unwrap();
    let now = Ts::parse_rfc3339("2026-11-24T19:50:06Z").unwrap();
    c.bench_function("period_index over 7 years", |b| {
        b.iter(|| black_box(time::period_index(black_box(anchor), black_box(now))))
    });
}

criterion_group!(domain, benches);
criterion_main!(domain);
