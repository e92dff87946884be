//! Criterion benchmark of the actor round trip over a real sled store: a debit sent to an
//! account's actor, written ahead, and answered (after the group fsync in `sync` mode).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::sync::oneshot;

use creditsd::actor::{Msg, Mutation, Registry, Reply, Services, SystemClock};
use creditsd::domain::{Bucket, Command, Credits, Pricing};
use creditsd::store::journal::{Durability, JournalObserver};
use creditsd::store::{Journal, SledStore, Store};

struct NoObserver;
impl JournalObserver for NoObserver {
    fn group_committed(&self, _: usize, _: Duration) {}
}

fn setup(
    rt: &tokio::runtime::Runtime,
    durability: Durability,
    accounts: usize,
) -> (Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 64 << 20).unwrap());
    let (journal, _) = Journal::<Reply>::start(
        store.clone(),
        durability,
        65_536,
        8192,
        std::time::Duration::ZERO,
        Box::new(NoObserver),
    );
    let registry = Registry::new();
    registry.start(Arc::new(Services {
        store,
        journal,
        pricing: Pricing::standard(),
        clock: Arc::new(SystemClock::real()),
        snapshot_every: 1000,
        idempotency_ttl_ms: 7 * 86_400_000,
        mailbox_max: 4096,
        parked_max: 16,
        idle_timeout: Duration::from_secs(300),
    }));
    rt.block_on(async {
        for a in 0..accounts {
            let id = format!("acct-{a}");
            let (tx, rx) = oneshot::channel();
            registry
                .send(
                    &id,
                    Msg::Create {
                        plan: "free".into(),
                        anchor: None,
                        reply: tx,
                    },
                )
                .ok()
                .unwrap();
            rx.await.unwrap().unwrap();
            let grant = Command::Grant {
                bucket: Bucket::Packs,
                credits: Credits(1 << 40),
                reason: "bench".into(),
                idempotency_key: "fund".into(),
                expires_at: None,
            };
            send(&registry, &id, grant).await;
        }
    });
    (registry, dir)
}

async fn send(registry: &Registry, id: &str, cmd: Command) {
    let (tx, rx) = oneshot::channel();
    let m = Msg::Mutate(Box::new(Mutation {
        cmd,
        dry_run: false,
        wait: Duration::ZERO,
        reply: tx,
    }));
    registry.send(id, m).ok().unwrap();
    rx.await.unwrap().unwrap();
}

fn debit(n: u64) -> Command {
    Command::Debit {
        operation: "caption_generation".into(),
        quantity: 1,
        metadata: vec![],
        idempotency_key: format!("k{n}"),
        member: None,
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut n = 0u64;
    for (name, durability) in [
        (
            "periodic",
            Durability::Periodic {
                interval: Duration::from_millis(50),
            },
        ),
        ("sync", Durability::Sync),
    ] {
        let (registry, _dir) = setup(&rt, durability, 64);
        let mut g = c.benchmark_group(format!("actor_{name}"));
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        g.bench_function("one debit round trip", |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(send(&registry, "acct-0", debit(n)))
            })
        });
        const CONCURRENT: u64 = 512;
        g.throughput(Throughput::Elements(CONCURRENT));
        g.bench_function("512 concurrent debits over 64 accounts", |b| {
            b.iter(|| {
                let base = n;
                n += CONCURRENT;
                rt.block_on(async {
                    let mut tasks = Vec::with_capacity(CONCURRENT as usize);
                    for i in 0..CONCURRENT {
                        let r = registry.clone();
                        tasks.push(tokio::spawn(async move {
                            send(&r, &format!("acct-{}", i % 64), debit(base + i)).await
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
        });
        g.finish();
    }
}

criterion_group!(actor, benches);
criterion_main!(actor);
