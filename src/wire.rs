//! JSON forms shared by the API and the webhooks: the balances of an account and one feed
//! event. Both `http` and `webhooks` import them from here, so what a webhook POSTs is
//! what `/v1/events` lists, and the bucket names are spelt in one place.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::domain::{Buckets, Credits, Notice};
use crate::store::FeedEntry;

/// One value per bucket, under the bucket names: the object every per-bucket figure
/// (balances, `taken`, `returned`, a ledger entry's `change`) starts from.
pub fn per_bucket<T: Serialize>(monthly: T, free: T, packs: T) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("monthly".into(), json!(monthly));
    o.insert("free".into(), json!(free));
    o.insert("packs".into(), json!(packs));
    o
}

/// The credits of each bucket: `{monthly, free, packs}`.
pub fn buckets(b: &Buckets) -> Value {
    Value::Object(per_bucket(b.monthly.get(), b.free.get(), b.packs.get()))
}

/// The balances after an event: each bucket, `held` and `available`.
pub fn balances(after: &Buckets, held: Credits) -> Value {
    let mut o = per_bucket(after.monthly.get(), after.free.get(), after.packs.get());
    o.insert("held".into(), json!(held.get()));
    o.insert("available".into(), json!(after.total().get()));
    Value::Object(o)
}

/// One feed event as `/v1/events` lists it and a webhook POSTs it.
pub fn feed_entry(e: &FeedEntry) -> Value {
    let mut v = json!({
        "id": e.id,
        "type": e.notice.type_name(),
        "account": e.account,
        "seq": e.seq,
        "time": e.at.to_rfc3339(),
        "balances": balances(&e.balances, e.held),
    });
    match e.notice {
        Notice::Low { threshold } => v["threshold"] = json!(threshold),
        Notice::Exhausted => v["threshold"] = json!(0),
        _ => {}
    }
    v
}
