//! Accounts: `POST /v1/accounts` (create), `GET /v1/accounts/{id}` (one consistent read
//! through its actor) and `GET /v1/accounts` (ids, paged from the store).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::ask::{answer, ask, Answer};
use super::dto;
use super::error::ApiError;
use super::query::{only_params, page_limit};
use super::App;
use crate::actor::{Msg, Outcome};

pub async fn create(app: &App, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["id", "plan", "billing_anchor"])?;
    let id = dto::account_id(
        dto::req_str(&obj, "id").map_err(|_| ApiError::invalid("id", "id is required"))?,
        &app.config.limits,
    )
    .map_err(|e| ApiError {
        field: Some("id".into()),
        ..e
    })?;
    let plan = dto::known(
        &app.config.plans,
        "plan",
        dto::opt_str(&obj, "plan")?.unwrap_or("free"),
    )?;
    let anchor = dto::opt_str(&obj, "billing_anchor")?
        .map(|s| dto::ts_param("billing_anchor", s))
        .transpose()?;
    let outcome = ask(app, &id, |reply| Msg::Create {
        plan,
        anchor,
        reply,
    })
    .await?;
    match outcome {
        Outcome::Applied { .. } => get(app, &id, &[])
            .await
            .map(|(_, v)| (StatusCode::CREATED, v)),
        other => answer(app, &id, other, StatusCode::CREATED),
    }
}

/// `GET /v1/accounts/{id}` (now, through its actor) and `?at=` (as it stood then, from
/// its log).
pub async fn get(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &["at"])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let at = pairs
        .iter()
        .find(|(k, _)| k == "at")
        .map(|(_, v)| dto::ts_param("at", v))
        .transpose()?;
    let outcome = ask(app, &id, |reply| Msg::Get { reply }).await?;
    let Some(at) = at else {
        return answer(app, &id, outcome, StatusCode::OK);
    };
    let services = app.registry.services();
    let now = services.clock.now();
    if at > now {
        return Err(ApiError::invalid(
            "at",
            format!("at must not be in the future (now is {})", now.to_rfc3339()),
        ));
    }
    let acct = app.reads.account_at(&id, at, &services.pricing)?;
    let mut v = dto::account_view(&acct, &services.pricing);
    v["as_of"] = json!(at.to_rfc3339());
    Ok((StatusCode::OK, v))
}

/// `GET /v1/accounts?limit=&after=`: account ids in byte order, cursor-paged (`next` is
/// the last id of the page, `null` on the last page). Ids only: listing reads no account.
pub fn list(app: &App, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &["limit", "after"])?;
    let limits = &app.config.limits;
    let limit = page_limit(pairs, limits.list_page_default, limits.list_page_max)?;
    let after = match pairs.iter().find(|(k, _)| k == "after") {
        Some((_, v)) => Some(dto::account_id(v, limits).map_err(|e| ApiError {
            field: Some("after".into()),
            ..e
        })?),
        None => None,
    };
    let page = app.reads.accounts_page(after.as_deref(), limit)?;
    let next = match page.ids.last() {
        Some(last) if page.more => json!(last),
        _ => Value::Null,
    };
    let accounts: Vec<Value> = page.ids.iter().map(|id| json!({ "id": id })).collect();
    Ok((
        StatusCode::OK,
        json!({ "accounts": accounts, "next": next }),
    ))
}
