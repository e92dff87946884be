//! JSON forms shared by the API and the webhooks: the balances of an account and one feed
//! event. Both `http` and `webhooks` import them from here, so what a webhook POSTs is
//! what `/v1/events` lists, and the bucket names are spelt in one place.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::domain::{Bucket, Buckets, Credits, Notice, Taken};
use crate::store::FeedEntry;

/// One value per bucket, under the bucket names: the object every per-bucket figure
/// (balances, a ledger entry's `change`) starts from.
pub fn per_bucket<T: Serialize>(value: impl Fn(Bucket) -> T) -> Map<String, Value> {
    Bucket::ALL
        .into_iter()
        .map(|b| (b.name().to_string(), json!(value(b))))
        .collect()
}

/// The credits of each bucket: `{monthly, promo, free, packs}`.
pub fn buckets(b: &Buckets) -> Value {
    Value::Object(per_bucket(|k| b.get(k).get()))
}

/// A promo block's id as the API names it (`g12`: the grant recorded at seq 12).
pub fn grant_id(id: u64) -> String {
    format!("g{id}")
}

/// Credits by source, as `taken`, `spent` and `returned` show them: `monthly`, `free`
/// and `packs` always, and `promo:g12` for each promo block, so the values add up to the
/// credits moved.
pub fn taken(t: &Taken) -> Value {
    let mut o = Map::new();
    for b in [Bucket::Monthly, Bucket::Free, Bucket::Packs] {
        o.insert(b.name().into(), json!(t.buckets.get(b).get()));
    }
    for p in &t.blocks {
        o.insert(
            format!("promo:{}", grant_id(p.grant_id)),
            json!(p.credits.get()),
        );
    }
    Value::Object(o)
}

/// The balances after an event: each bucket, `held` and `available`.
pub fn balances(after: &Buckets, held: Credits) -> Value {
    let mut o = per_bucket(|k| after.get(k).get());
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
        Notice::ForecastLow {
            projected_exhaustion_at,
        } => v["projected_exhaustion_at"] = json!(projected_exhaustion_at.to_rfc3339()),
        _ => {}
    }
    v
}
