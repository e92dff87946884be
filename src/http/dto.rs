//! JSON at the edge: reading request fields with errors that name them, and rendering
//! domain values. The wire format is versioned by the `/v1` prefix; it converts from the
//! domain explicitly here, so the domain can change without changing the wire.

use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::config::Limits;
use crate::domain::{Account, Buckets, Credits, Event, EventBody, Hold, ReleaseReason, Ts};
use crate::wire::{balances, buckets, per_bucket};

pub type Object = Map<String, Value>;

pub fn parse_object(bytes: &[u8]) -> Result<Object, ApiError> {
    if bytes.is_empty() {
        return Ok(Object::new());
    }
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(m))) => Ok(m),
        Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
        Err(e) => {
            let msg = e.to_string();
            match msg
                .strip_prefix(DUPLICATE)
                .and_then(|r| r.split_once('\u{0}'))
            {
                Some((field, _)) => Err(ApiError::invalid(
                    field,
                    format!("member {field:?} appears more than once in an object"),
                )),
                None => Err(ApiError::invalid("body", format!("malformed JSON: {msg}"))),
            }
        }
    }
}

/// The start of the error a repeated member raises: the member's name follows, then a NUL.
const DUPLICATE: &str = "duplicate member ";

/// A JSON value whose objects have distinct member names. serde_json keeps the last of
/// repeated members; a body that says `operation` twice is refused instead, for the
/// reason unknown fields are refused: which one the client meant is not ours to guess.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Object::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{k}\u{0}")));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Refuses fields the endpoint does not know: a misspelt `quantitiy` must not debit 1.
pub fn only(obj: &Object, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(
            k,
            format!(
                "unknown field {k:?}; expected one of {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

pub fn opt_str<'a>(obj: &'a Object, name: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
    }
}

pub fn req_str<'a>(obj: &'a Object, name: &str) -> Result<&'a str, ApiError> {
    opt_str(obj, name)?.ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
}

/// A required string of 1..=max bytes.
pub fn req_bounded(obj: &Object, name: &str, max: usize) -> Result<String, ApiError> {
    let s = req_str(obj, name)?;
    if s.is_empty() || s.len() > max {
        return Err(ApiError::invalid(
            name,
            format!("{name} must be 1 to {max} bytes"),
        ));
    }
    Ok(s.to_string())
}

/// An integer field. A number written with a zero fraction (`5.0`, `1e3`) is that
/// integer, as JSON Schema reads it (up to 2^53, where doubles are exact); `5.5` is not.
pub fn opt_u64(obj: &Object, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
                .map(|f| f as u64)
        }) {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer from {min} to {max}"),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            name,
            format!("{name} must be an integer from {min} to {max}"),
        )),
    }
}

pub fn opt_bool(obj: &Object, name: &str) -> Result<bool, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(
            name,
            format!("{name} must be true or false"),
        )),
    }
}

pub fn idempotency_key(obj: &Object, limits: &Limits) -> Result<String, ApiError> {
    req_bounded(obj, "idempotency_key", limits.idempotency_key_bytes_max)
}

pub fn quantity(obj: &Object, limits: &Limits) -> Result<u32, ApiError> {
    Ok(opt_u64(obj, "quantity", 1, limits.quantity_max as u64)?.unwrap_or(1) as u32)
}

/// `metadata`: an object of at most `metadata_keys_max` string values, `metadata_bytes_max`
/// bytes of keys and values in all. Kept in key order so the fingerprint is stable.
pub fn metadata(obj: &Object, limits: &Limits) -> Result<Vec<(String, String)>, ApiError> {
    let m = match obj.get("metadata") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata",
                "metadata must be an object of strings",
            ))
        }
    };
    if m.len() > limits.metadata_keys_max {
        return Err(ApiError::invalid(
            "metadata",
            format!("at most {} keys", limits.metadata_keys_max),
        ));
    }
    let mut out = Vec::with_capacity(m.len());
    let mut bytes = 0;
    for (k, v) in m {
        let Value::String(v) = v else {
            return Err(ApiError::invalid(
                "metadata",
                format!("metadata.{k} must be a string"),
            ));
        };
        bytes += k.len() + v.len();
        out.push((k.clone(), v.clone()));
    }
    if bytes > limits.metadata_bytes_max {
        return Err(ApiError::invalid(
            "metadata",
            format!(
                "at most {} bytes of keys and values",
                limits.metadata_bytes_max
            ),
        ));
    }
    out.sort();
    Ok(out)
}

pub fn valid_account_id(id: &str, limits: &Limits) -> bool {
    (1..=limits.account_id_bytes_max).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub fn account_id(id: &str, limits: &Limits) -> Result<String, ApiError> {
    if valid_account_id(id, limits) {
        Ok(id.to_string())
    } else {
        Err(ApiError::invalid(
            "account",
            format!(
                "an account id is 1 to {} characters of A-Z a-z 0-9 . _ : -",
                limits.account_id_bytes_max
            ),
        ))
    }
}

/// `h{n}` with n ≥ 1 written canonically: `h01` or `h+1` names no hold.
pub fn hold_id(s: &str) -> Option<u64> {
    let n: u64 = s.strip_prefix('h')?.parse().ok().filter(|n| *n > 0)?;
    (format!("h{n}") == s).then_some(n)
}

/// `value` if it names an entry of a configured table (operations, plans, packs), else a
/// 400 naming `field`: checked here so an unknown name never reaches an actor.
pub fn known<V>(
    table: &std::collections::BTreeMap<String, V>,
    field: &str,
    value: &str,
) -> Result<String, ApiError> {
    if table.contains_key(value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            format!("unknown {field} {value:?} (see /v1/pricing)"),
        ))
    }
}

/// `wait_seconds` of a debit or a hold: 0 (the default) to `limits.wait_seconds_max`.
pub fn wait(obj: &Object, limits: &Limits) -> Result<std::time::Duration, ApiError> {
    Ok(std::time::Duration::from_secs(
        opt_u64(obj, "wait_seconds", 0, limits.wait_seconds_max)?.unwrap_or(0),
    ))
}

fn status(available: Credits) -> &'static str {
    if available.is_zero() {
        "paused"
    } else {
        "active"
    }
}

pub fn alerts(ev: &Event) -> Value {
    Value::Array(
        ev.notices()
            .into_iter()
            .filter_map(|n| {
                use crate::domain::Notice::*;
                match n {
                    Low { threshold } => {
                        Some(json!({ "type": n.type_name(), "threshold": threshold }))
                    }
                    Exhausted => Some(json!({ "type": n.type_name(), "threshold": 0 })),
                    Replenished => Some(json!({ "type": n.type_name() })),
                    _ => None,
                }
            })
            .collect(),
    )
}

/// The answer to a mutation, rendered from its event alone so a duplicate gets the same.
pub fn event_answer(account: &str, ev: &Event, duplicate: bool, dry_run: bool) -> Value {
    let mut o = Map::new();
    o.insert("account".into(), json!(account));
    if !dry_run {
        o.insert("seq".into(), json!(ev.seq));
    }
    o.insert("kind".into(), json!(ev.body.kind()));
    o.insert("time".into(), json!(ev.at.to_rfc3339()));
    entry_fields(&mut o, &ev.body);
    o.insert("balances".into(), balances(&ev.after, ev.held_after));
    o.insert("status".into(), json!(status(ev.after.total())));
    o.insert("alerts".into(), alerts(ev));
    o.insert("duplicate".into(), json!(duplicate));
    o.insert("dry_run".into(), json!(dry_run));
    Value::Object(o)
}

/// An idempotency key, left out when the request had none (captures, releases and
/// expiries may have none).
fn put_key(put: &mut impl FnMut(&str, Value), key: Option<&str>) {
    if let Some(key) = key {
        put("idempotency_key", json!(key));
    }
}

/// The kind-specific fields of an event, shared by mutation answers and the ledger.
pub fn entry_fields(o: &mut Object, body: &EventBody) {
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    match body {
        EventBody::Created {
            plan,
            anchor,
            free,
            monthly,
            ..
        } => {
            put("plan", json!(plan));
            put("billing_anchor", json!(anchor.to_rfc3339()));
            put("credits", json!(free.plus(*monthly).get()));
            put(
                "change",
                buckets(&Buckets {
                    monthly: *monthly,
                    free: *free,
                    packs: Credits::ZERO,
                }),
            );
        }
        EventBody::Debited {
            operation,
            quantity,
            credits,
            taken,
            idempotency_key,
            metadata,
        } => {
            put("operation", json!(operation));
            put("quantity", json!(quantity));
            put("credits", json!(credits.get()));
            put("taken", buckets(taken));
            put_key(&mut put, Some(idempotency_key));
            put(
                "metadata",
                Value::Object(
                    metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect(),
                ),
            );
        }
        EventBody::PeriodReset {
            period,
            expired,
            plan,
            allocation,
        } => {
            put("period", json!(period));
            put("plan", json!(plan));
            put("expired", json!(expired.get()));
            put("credits", json!(allocation.get()));
        }
        EventBody::PlanChanged {
            from,
            to,
            immediate,
            effective_at,
            granted,
            idempotency_key,
        } => {
            put("from", json!(from));
            put("plan", json!(to));
            put("pending", json!(!immediate));
            put("effective_at", json!(effective_at.to_rfc3339()));
            put("credits", json!(granted.get()));
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::Purchased {
            pack,
            credits,
            price_cents,
            payment_ref,
        } => {
            put("pack", json!(pack));
            put("credits", json!(credits.get()));
            put("price_cents", json!(price_cents));
            put("payment_ref", json!(payment_ref));
        }
        EventBody::Granted {
            bucket,
            credits,
            reason,
            idempotency_key,
        } => {
            put("bucket", json!(bucket.name()));
            put("credits", json!(credits.get()));
            put("reason", json!(reason));
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::HoldPlaced {
            hold_id,
            operation,
            quantity,
            credits,
            taken,
            expires_at,
            idempotency_key,
        } => {
            put("hold_id", json!(format!("h{hold_id}")));
            put("operation", json!(operation));
            put("quantity", json!(quantity));
            put("credits", json!(credits.get()));
            put("taken", buckets(taken));
            put("expires_at", json!(expires_at.to_rfc3339()));
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::HoldCaptured {
            hold_id,
            operation,
            quantity,
            spent,
            returned,
            expired,
            idempotency_key,
        } => {
            put("hold_id", json!(format!("h{hold_id}")));
            if !operation.is_empty() {
                put("operation", json!(operation));
                put("quantity", json!(quantity));
            }
            put("credits", json!(spent.total().get()));
            put("spent", buckets(spent));
            put("returned", buckets(returned));
            put("expired", json!(expired.get()));
            put_key(&mut put, idempotency_key.as_deref());
        }
        EventBody::HoldReleased {
            hold_id,
            returned,
            expired,
            reason,
            idempotency_key,
        } => {
            put("hold_id", json!(format!("h{hold_id}")));
            put("credits", json!(returned.total().get()));
            put("returned", buckets(returned));
            put("expired", json!(expired.get()));
            put(
                "reason",
                json!(match reason {
                    ReleaseReason::Released => "released",
                    ReleaseReason::Expired => "expired",
                }),
            );
            put_key(&mut put, idempotency_key.as_deref());
        }
    }
}

/// One ledger entry: the event, its change from `prev` (the balances and held credits
/// right before it) and the balances after it.
pub fn ledger_entry(ev: &Event, prev: (Buckets, Credits)) -> Value {
    let mut o = Map::new();
    o.insert("seq".into(), json!(ev.seq));
    o.insert("time".into(), json!(ev.at.to_rfc3339()));
    o.insert("kind".into(), json!(ev.body.kind()));
    entry_fields(&mut o, &ev.body);
    let d = |a: Credits, b: Credits| a.get() as i128 - b.get() as i128;
    let mut change = per_bucket(
        d(ev.after.monthly, prev.0.monthly),
        d(ev.after.free, prev.0.free),
        d(ev.after.packs, prev.0.packs),
    );
    change.insert("held".into(), json!(d(ev.held_after, prev.1)));
    o.insert("change".into(), Value::Object(change));
    o.insert("balance_after".into(), balances(&ev.after, ev.held_after));
    o.insert("alerts".into(), alerts(ev));
    Value::Object(o)
}

/// An open hold, as the account view and the holds list show it.
pub fn hold_view(h: &Hold) -> Value {
    json!({
        "hold_id": format!("h{}", h.id),
        "operation": h.operation,
        "quantity": h.quantity,
        "credits": h.credits.get(),
        "taken": buckets(&h.taken),
        "placed_at": h.placed_at.to_rfc3339(),
        "expires_at": h.expires_at.to_rfc3339(),
    })
}

/// `GET /v1/accounts/{id}`: one consistent read of the actor's state.
pub fn account_view(a: &Account) -> Value {
    let holds: Vec<Value> = a.holds.values().map(hold_view).collect();
    let available = a.available();
    json!({
        "id": a.id,
        "plan": a.plan,
        "pending_plan": a.pending_plan,
        "status": status(available),
        "balances": buckets(&a.balances),
        "available": available.get(),
        "held": a.held().get(),
        "holds": holds,
        "billing_anchor": a.anchor.to_rfc3339(),
        "period_start": a.period_start().to_rfc3339(),
        "next_reset_at": a.next_reset_at().to_rfc3339(),
        "period_budget": a.period_budget.get(),
        "created_at": a.created_at.to_rfc3339(),
        "seq": a.seq,
    })
}

pub fn ts_param(name: &str, s: &str) -> Result<Ts, ApiError> {
    Ts::parse_rfc3339(s).ok_or_else(|| {
        ApiError::invalid(
            name,
            format!(
                "{name} must be an RFC 3339 instant from {} to {}, like 2026-11-24T19:50:06Z",
                crate::domain::time::TS_MIN.to_rfc3339(),
                crate::domain::time::TS_MAX.to_rfc3339()
            ),
        )
    })
}
