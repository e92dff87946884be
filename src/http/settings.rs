//! An account's settings: `PUT .../alerts` (its own alert thresholds and forecast horizon)
//! and its members (`PUT`/`DELETE .../members/{member}`: characters, brands or seats that
//! share the account's pool, each with an optional cap per billing period).

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;

use super::ask::{mutate, Answer};
use super::dto;
use super::error::ApiError;
use super::query::only_params;
use super::App;
use crate::domain::{Command, Credits, ForecastSetting};

/// At most this many thresholds per account.
pub const THRESHOLDS_MAX: usize = 8;
/// The forecast horizon, in hours: 1 to 30 days.
pub const FORECAST_HOURS_MAX: u64 = 720;

/// `PUT /v1/accounts/{id}/alerts` `{thresholds?, forecast_hours?, idempotency_key}`: a field
/// left out follows the config; `forecast_hours: null` turns the forecast alert off.
pub async fn alerts(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["thresholds", "forecast_hours", "idempotency_key"])?;
    let thresholds = match obj.get("thresholds") {
        None => None,
        Some(Value::Array(items)) => Some(thresholds(items)?),
        Some(_) => {
            return Err(ApiError::invalid(
                "thresholds",
                "thresholds must be an array of percentages",
            ))
        }
    };
    let forecast = match obj.get("forecast_hours") {
        None => ForecastSetting::Config,
        Some(Value::Null) => ForecastSetting::Off,
        Some(_) => ForecastSetting::Hours(
            dto::opt_u64(&obj, "forecast_hours", 1, FORECAST_HOURS_MAX)?
                .expect("present and not null") as u32,
        ),
    };
    let cmd = Command::SetAlerts {
        thresholds,
        forecast,
        idempotency_key: dto::idempotency_key(&obj, &app.config.limits)?,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

/// 0 to 100, distinct, at most `THRESHOLDS_MAX`; kept highest first, as the config's.
fn thresholds(items: &[Value]) -> Result<Vec<u8>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "thresholds",
            format!(
                "thresholds are at most {THRESHOLDS_MAX} distinct whole percentages from 0 to 100"
            ),
        )
    };
    if items.len() > THRESHOLDS_MAX {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        let t = dto::whole_number(v).filter(|t| *t <= 100).ok_or_else(bad)? as u8;
        if out.contains(&t) {
            return Err(bad());
        }
        out.push(t);
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

/// `PUT /v1/accounts/{id}/members/{member}` `{cap_per_period?, idempotency_key}`: creates
/// the member or changes its cap (`null` or left out: no cap).
pub async fn put_member(
    app: &App,
    id: &str,
    member: &str,
    pairs: &[(String, String)],
    body: &[u8],
) -> Answer {
    only_params(pairs, &[])?;
    let limits = &app.config.limits;
    let id = dto::account_id(id, limits)?;
    let member = dto::member_id(member, limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["cap_per_period", "idempotency_key"])?;
    let cap = dto::opt_u64(&obj, "cap_per_period", 0, Credits::MAX.get())?.map(Credits);
    let cmd = Command::SetMember {
        member,
        cap,
        idempotency_key: dto::idempotency_key(&obj, limits)?,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

/// `DELETE /v1/accounts/{id}/members/{member}?idempotency_key=`: removes it; its history
/// stays in the ledger and the usage.
pub async fn delete_member(
    app: &App,
    id: &str,
    member: &str,
    pairs: &[(String, String)],
) -> Answer {
    only_params(pairs, &["idempotency_key"])?;
    let limits = &app.config.limits;
    let id = dto::account_id(id, limits)?;
    let member = dto::member_id(member, limits)?;
    let key = pairs
        .iter()
        .find(|(k, _)| k == "idempotency_key")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let key = dto::bounded("idempotency_key", key, limits.idempotency_key_bytes_max)?;
    let cmd = Command::RemoveMember {
        member,
        idempotency_key: key,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}
