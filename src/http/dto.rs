//! JSON at the edge: reading request fields with errors that name them, and rendering
//! domain values. The wire format is versioned by the `/v1` prefix; it converts from the
//! domain explicitly here, so the domain can change without changing the wire.

use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::config::Limits;
use crate::domain::{
    Account, Bucket, Buckets, Credits, Event, EventBody, ForecastSetting, Hold, Pricing,
    ReleaseReason, Ts,
};
use crate::wire::{balances, buckets, grant_id, per_bucket, taken};

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
    bounded(name, req_str(obj, name)?, max)
}

/// `s` (the field or parameter `name`) if it is 1..=max bytes.
pub fn bounded(name: &str, s: &str, max: usize) -> Result<String, ApiError> {
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
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match whole_number(v) {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer from {min} to {max}"),
            )),
        },
    }
}

/// A JSON number that is a non-negative integer, as JSON Schema reads it: `5`, `5.0` or
/// `5e0` (up to 2^53, where doubles are exact), not `5.5`.
pub fn whole_number(v: &Value) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let Value::Number(n) = v else {
        return None;
    };
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
            .map(|f| f as u64)
    })
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

/// `member` of a debit, batch item or hold: absent, or an id like an account's.
pub fn member(obj: &Object, limits: &Limits) -> Result<Option<String>, ApiError> {
    opt_str(obj, "member")?
        .map(|m| member_id(m, limits))
        .transpose()
}

/// A member id: the same rules as an account id.
pub fn member_id(m: &str, limits: &Limits) -> Result<String, ApiError> {
    account_id(m, limits).map_err(|e| ApiError {
        field: Some("member".into()),
        message: e.message.replace("an account id", "a member id"),
        ..e
    })
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
                    ForecastLow {
                        projected_exhaustion_at,
                    } => Some(json!({
                        "type": n.type_name(),
                        "projected_exhaustion_at": projected_exhaustion_at.to_rfc3339(),
                    })),
                    _ => None,
                }
            })
            .collect(),
    )
}

/// What `available` buys: for each operation, how many times it can run.
pub fn affordable(pricing: &Pricing, available: Credits) -> Value {
    Value::Object(
        pricing
            .affordable(available)
            .map(|(op, n)| (op.to_string(), json!(n)))
            .collect(),
    )
}

/// The answer to a mutation, rendered from its event alone so a duplicate gets the same
/// (`affordable` from the prices in force).
pub fn event_answer(
    account: &str,
    ev: &Event,
    duplicate: bool,
    dry_run: bool,
    pricing: &Pricing,
) -> Value {
    let mut o = Map::new();
    o.insert("account".into(), json!(account));
    if !dry_run {
        o.insert("seq".into(), json!(ev.seq));
    }
    o.insert("kind".into(), json!(ev.body.kind()));
    o.insert("time".into(), json!(ev.at.to_rfc3339()));
    entry_fields(&mut o, &ev.body);
    put_grant_id(&mut o, ev);
    o.insert("balances".into(), balances(&ev.after, ev.held_after));
    o.insert("affordable".into(), affordable(pricing, ev.after.total()));
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
                    ..Buckets::default()
                }),
            );
        }
        EventBody::Debited {
            operation,
            quantity,
            credits,
            taken: t,
            idempotency_key,
            metadata,
            member,
        } => {
            put("operation", json!(operation));
            put("quantity", json!(quantity));
            put("credits", json!(credits.get()));
            put("taken", taken(t));
            put_member(&mut put, member.as_deref());
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
            expires_at,
        } => {
            put("bucket", json!(bucket.name()));
            put("credits", json!(credits.get()));
            put("reason", json!(reason));
            put_key(&mut put, Some(idempotency_key));
            if let Some(at) = expires_at {
                put("expires_at", json!(at.to_rfc3339()));
            }
        }
        EventBody::HoldPlaced {
            hold_id,
            operation,
            quantity,
            credits,
            taken: t,
            expires_at,
            idempotency_key,
            member,
        } => {
            put("hold_id", json!(format!("h{hold_id}")));
            put("operation", json!(operation));
            put("quantity", json!(quantity));
            put("credits", json!(credits.get()));
            put("taken", taken(t));
            put("expires_at", json!(expires_at.to_rfc3339()));
            put_member(&mut put, member.as_deref());
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
            put("spent", taken(spent));
            put("returned", taken(returned));
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
            put("returned", taken(returned));
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
        EventBody::Refunded {
            debit_key,
            debit_seq,
            operation,
            part,
            returned,
            reason,
            idempotency_key,
            member,
            ..
        } => {
            put("debit_key", json!(debit_key));
            put("debit_seq", json!(debit_seq));
            put("operation", json!(operation));
            let (credits, expired) = body.refund_credits().expect("a refund");
            put("credits", json!(credits.get()));
            put("refunded", taken(part));
            put("returned", taken(returned));
            put("expired", json!(expired.get()));
            put("reason", json!(reason));
            put_member(&mut put, member.as_deref());
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::PromoExpired {
            grant_id: g,
            expired,
        } => {
            put("bucket", json!(Bucket::Promo.name()));
            put("grant_id", json!(grant_id(*g)));
            put("credits", json!(expired.get()));
            put("expired", json!(expired.get()));
        }
        EventBody::AlertsSet {
            thresholds,
            in_effect,
            forecast,
            idempotency_key,
        } => {
            put("thresholds", json!(in_effect));
            put("thresholds_custom", json!(thresholds.is_some()));
            // The config's horizon at the time is not recorded: only a custom one shows.
            put(
                "forecast_custom",
                json!(*forecast != ForecastSetting::Config),
            );
            if *forecast != ForecastSetting::Config {
                put("forecast_hours", forecast_value(*forecast, None));
            }
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::MemberSet {
            member,
            cap,
            created,
            idempotency_key,
        } => {
            put("member", json!(member));
            put("cap_per_period", json!(cap.map(Credits::get)));
            put("created", json!(created));
            put_key(&mut put, Some(idempotency_key));
        }
        EventBody::MemberRemoved {
            member,
            idempotency_key,
        } => {
            put("member", json!(member));
            put_key(&mut put, Some(idempotency_key));
        }
    }
}

/// A promo grant opens a block named after the grant's seq (`g12`). (Grants have no dry
/// run.)
fn put_grant_id(o: &mut Object, ev: &Event) {
    if let EventBody::Granted {
        expires_at: Some(_),
        ..
    } = ev.body
    {
        o.insert("grant_id".into(), json!(grant_id(ev.seq)));
    }
}

fn put_member(put: &mut impl FnMut(&str, Value), member: Option<&str>) {
    if let Some(m) = member {
        put("member", json!(m));
    }
}

/// `forecast_hours` as the API shows it: hours, or `null` for off; the config's setting
/// shows the config's (`config`).
fn forecast_value(f: ForecastSetting, config: Option<u32>) -> Value {
    match f {
        ForecastSetting::Hours(h) => json!(h),
        ForecastSetting::Off => Value::Null,
        ForecastSetting::Config => json!(config),
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
    put_grant_id(&mut o, ev);
    let d = |a: Credits, b: Credits| a.get() as i128 - b.get() as i128;
    let mut change = per_bucket(|b| d(ev.after.get(b), prev.0.get(b)));
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
        "taken": taken(&h.taken),
        "placed_at": h.placed_at.to_rfc3339(),
        "expires_at": h.expires_at.to_rfc3339(),
        "member": h.member,
    })
}

/// `GET /v1/accounts/{id}`: one consistent read of the actor's state (or of the state
/// at a past instant, rebuilt from the log).
pub fn account_view(a: &Account, pricing: &Pricing) -> Value {
    let holds: Vec<Value> = a.holds.values().map(hold_view).collect();
    let available = a.available();
    let mut blocks: Vec<_> = a.promo.values().collect();
    blocks.sort_by_key(|b| (b.expires_at, b.grant_id));
    let blocks: Vec<Value> = blocks
        .into_iter()
        .map(|b| {
            json!({
                "grant_id": grant_id(b.grant_id),
                "credits": b.credits.get(),
                "expires_at": b.expires_at.to_rfc3339(),
            })
        })
        .collect();
    let members: Vec<Value> = a
        .members
        .iter()
        .map(|(name, m)| {
            json!({
                "member": name,
                "cap_per_period": m.cap.map(Credits::get),
                "used_this_period": m.used.get(),
            })
        })
        .collect();
    json!({
        "id": a.id,
        "plan": a.plan,
        "pending_plan": a.pending_plan,
        "status": status(available),
        "balances": buckets(&a.balances),
        "available": available.get(),
        "affordable": affordable(pricing, available),
        "held": a.held().get(),
        "holds": holds,
        "promo_blocks": blocks,
        "members": members,
        "alerts": {
            "thresholds": a.thresholds(pricing),
            "thresholds_custom": a.alert_settings.thresholds.is_some(),
            "forecast_hours": forecast_value(a.alert_settings.forecast, pricing.forecast_hours),
            "forecast_custom": a.alert_settings.forecast != ForecastSetting::Config,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_written_as_floats_are_integers_up_to_2_53() {
        let parse = |s: &str| whole_number(&parse_object(s.as_bytes()).unwrap()["n"]);
        assert_eq!(parse(r#"{"n": 5}"#), Some(5));
        assert_eq!(parse(r#"{"n": 5.0}"#), Some(5));
        assert_eq!(parse(r#"{"n": 1e3}"#), Some(1000));
        // Exact only with serde_json's `float_roundtrip`: without it this parses to .5.
        assert_eq!(
            parse(r#"{"n": 3809301393341874.0}"#),
            Some(3_809_301_393_341_874)
        );
        assert_eq!(parse(r#"{"n": 5.5}"#), None);
        assert_eq!(parse(r#"{"n": -1}"#), None);
        assert_eq!(parse(r#"{"n": "5"}"#), None);
    }
}
