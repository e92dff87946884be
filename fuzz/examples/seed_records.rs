//! Writes valid records of every type into fuzz/corpus/record_decode, as the fuzzer's
//! starting points: `cargo run --example seed_records` from fuzz/.

use creditsd::domain::{Account, Command, Pricing, Ts};
use creditsd::store::codec::encode;
use creditsd::store::records::{AccountRecordV2, EventRecordV3, IdemRecordV1};
use creditsd::store::IdemRecord;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/record_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let p = Pricing::standard();
    let created = Account::create("acct", "growth", Ts(0), Ts(5), &p).unwrap();
    let mut acct = Account::empty("acct");
    acct.apply(&created);
    let mut records = vec![("created", encode(&EventRecordV3::from(&created)))];
    let cmds = [
        Command::Debit {
            operation: "sample_image".into(),
            quantity: 3,
            metadata: vec![("job".into(), "17".into())],
            idempotency_key: "k1".into(),
        },
        Command::PlaceHold {
            operation: "video_generation".into(),
            quantity: 1,
            ttl_ms: 900_000,
            idempotency_key: "h1".into(),
        },
        Command::Purchase {
            pack: "pack_100".into(),
            payment_ref: "ch_1".into(),
        },
    ];
    for (i, cmd) in cmds.iter().enumerate() {
        let body = acct.decide(cmd, Ts(10 + i as i64), &p).unwrap();
        let ev = acct.record(body, Ts(10 + i as i64), &p.thresholds);
        records.push((
            ["debit", "hold", "purchase"][i],
            encode(&EventRecordV3::from(&ev)),
        ));
    }
    records.push(("account", encode(&AccountRecordV2::from(&acct))));
    let idem = IdemRecord {
        fingerprint: [7; 16],
        seq: 2,
        at: Ts(10),
    };
    records.push(("idem", encode(&IdemRecordV1::from(&idem))));
    for (name, bytes) in records {
        // The target reads a first byte that picks the key shape (even: a fixed key).
        let mut framed = vec![0u8];
        framed.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), framed).unwrap();
    }
}
