//! What an account did: `GET /v1/accounts/{id}/ledger` (its events, newest first, paged
//! from the store through `Reads`), `.../usage` (usage trends) and `.../forecast`, the
//! last two rendered from the rollups the account's actor keeps (`domain::usage`). All
//! three ask the actor first (`Msg::Get`), so they see every applied mutation; usage and
//! the forecast cost the same whatever the history's length.

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::ask::{view, Answer};
use super::dto;
use super::error::ApiError;
use super::query::{only_params, page_limit, query_u64};
use super::App;
use crate::domain::account::smallest_plan_covering;
use crate::domain::time::add_months;
use crate::domain::usage::{self, Granularity, Slice, UsageCell, DAY_MS};
use crate::domain::{Account, Pricing, Ts};

/// Default ranges when `from` is not given.
const DAY_RANGE_DEFAULT_DAYS: i64 = 30;
const MONTH_RANGE_DEFAULT_MONTHS: i64 = 12;

fn cell(c: &UsageCell) -> Value {
    json!({ "count": c.count, "credits": c.credits.get() })
}

/// `GET /v1/accounts/{id}/ledger?limit=&before=`: every event with its change and the
/// balances after it, newest first; `next` is the `before` of the next page.
pub async fn ledger(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &["limit", "before"])?;
    let limits = &app.config.limits;
    let limit = page_limit(pairs, limits.ledger_page_default, limits.ledger_page_max)?;
    let before = query_u64(pairs, "before", 1, u64::MAX)?;
    // Through the actor: 404 for an unknown account, and the seq it has reached.
    let acct = view(app, &id).await?;
    let before = before.unwrap_or(acct.seq + 1).min(acct.seq + 1);
    let page = app.reads.ledger_page(&id, before, limit)?;
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|(ev, prev)| dto::ledger_entry(ev, *prev))
        .collect();
    let next = page.next.map_or(Value::Null, |seq| json!(seq.to_string()));
    Ok((StatusCode::OK, json!({ "entries": entries, "next": next })))
}

pub async fn usage(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &["from", "to", "granularity", "member", "group_by"])?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let granularity = match param("granularity") {
        None | Some("day") => Granularity::Day,
        Some("month") => Granularity::Month,
        Some(g) => {
            return Err(ApiError::invalid(
                "granularity",
                format!("unknown granularity {g:?}; expected day or month"),
            ))
        }
    };
    let now = app.registry.services().clock.now();
    let to = param("to")
        .map(|s| dto::ts_param("to", s))
        .transpose()?
        .unwrap_or(now);
    let from = match param("from") {
        Some(s) => dto::ts_param("from", s)?,
        None => match granularity {
            Granularity::Day => to.plus_millis(-DAY_RANGE_DEFAULT_DAYS * DAY_MS),
            Granularity::Month => add_months(to, -MONTH_RANGE_DEFAULT_MONTHS),
        },
    };
    if from >= to {
        return Err(ApiError::invalid("from", "from must be before to"));
    }
    let slice = match (param("member"), param("group_by")) {
        (None, None) => Slice::All,
        (Some(m), None) => Slice::Member(dto::member_id(m, &app.config.limits)?),
        (None, Some("member")) => Slice::ByMember,
        (None, Some(g)) => {
            return Err(ApiError::invalid(
                "group_by",
                format!("unknown group_by {g:?}; expected member"),
            ))
        }
        (Some(_), Some(_)) => return Err(ApiError::invalid(
            "group_by",
            "member= (one member's usage) and group_by=member (each member's) exclude each other",
        )),
    };
    let acct = view(app, &id).await?;
    let max = app.config.limits.usage_periods_max;
    let periods = usage_periods(&acct, from, to, granularity, max, &slice).map_err(|max| {
        ApiError::invalid(
            "from",
            format!("the range from..to spans more than {max} periods"),
        )
    })?;
    Ok((
        StatusCode::OK,
        json!({
            "account": id,
            "granularity": match granularity { Granularity::Day => "day", Granularity::Month => "month" },
            "from": from.to_rfc3339(),
            "to": to.to_rfc3339(),
            "member": match &slice { Slice::Member(m) => json!(m), _ => Value::Null },
            "periods": periods,
        }),
    ))
}

/// Credits per day, to the thousandth (a rate for display, not money).
fn rate(r: usage::BurnRate) -> f64 {
    (r.per_day() * 1000.0).round() / 1000.0
}

pub async fn forecast(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &[])?;
    let acct = view(app, &id).await?;
    let now: Ts = app.registry.services().clock.now();
    Ok((
        StatusCode::OK,
        forecast_view(&acct, now, &app.registry.services().pricing),
    ))
}

/// The forecast of `acct` at `now`: a pure function of the state, total for every state
/// the API can reach (a property test renders it for random histories).
pub fn forecast_view(acct: &Account, now: Ts, pricing: &Pricing) -> Value {
    let f = usage::forecast(&acct.usage, now, acct.available());
    let last_period = acct.usage.last_period_credits.map(|credits| {
        json!({
            "start": add_months(acct.anchor, acct.period - 1).to_rfc3339(),
            "end": acct.period_start().to_rfc3339(),
            "credits": credits.get(),
        })
    });
    let suggested = acct
        .usage
        .last_period_credits
        .and_then(|c| smallest_plan_covering(pricing, c));
    json!({
        "account": acct.id,
        "as_of": now.to_rfc3339(),
        "available": acct.available().get(),
        "burn_rate_7d": rate(f.burn_7d),
        "burn_rate_30d": rate(f.burn_30d),
        "credits_7d": f.burn_7d.credits.get(),
        "credits_30d": f.burn_30d.credits.get(),
        "window_7d_start": now.plus_millis(-f.burn_7d.window_ms).to_rfc3339(),
        "window_30d_start": now.plus_millis(-f.burn_30d.window_ms).to_rfc3339(),
        "projected_exhaustion_at": f.exhaustion_at.map(|t| t.to_rfc3339()),
        "plan": acct.plan,
        "last_period": last_period,
        "suggested_plan": suggested,
    })
}

/// The usage periods of `acct` over `[from, to)`, or `max` when there would be more.
pub fn usage_periods(
    acct: &Account,
    from: Ts,
    to: Ts,
    granularity: Granularity,
    max: usize,
    slice: &Slice,
) -> Result<Vec<Value>, usize> {
    let periods = usage::report(&acct.usage, from, to, granularity, max, slice)?;
    let ops = |ops: &std::collections::BTreeMap<String, UsageCell>| {
        ops.iter()
            .map(|(op, c)| (op.clone(), cell(c)))
            .collect::<Map<_, _>>()
    };
    Ok(periods
        .iter()
        .map(|p| {
            let total = p.total();
            let mut v = json!({
                "start": p.start.to_rfc3339(),
                "end": p.end.to_rfc3339(),
                "count": total.count,
                "credits": total.credits.get(),
                "operations": ops(&p.operations),
            });
            if let Some(members) = &p.members {
                v["members"] = members
                    .iter()
                    .map(|(m, o)| (m.clone(), Value::Object(ops(o))))
                    .collect::<Map<_, _>>()
                    .into();
            }
            v
        })
        .collect())
}
