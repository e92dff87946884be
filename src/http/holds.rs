//! Holds: `POST .../holds` (reserve), `POST .../holds/{hold_id}/capture` and
//! `.../release` (close), and `GET .../holds` (the open holds, paged).

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::ask::{mutate, view, Answer};
use super::debits::operation;
use super::dto;
use super::error::ApiError;
use super::query::{only_params, page_limit};
use super::App;
use crate::domain::{Command, Credits};

pub async fn place(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(
        &obj,
        &[
            "operation",
            "quantity",
            "idempotency_key",
            "ttl_seconds",
            "wait_seconds",
            "member",
        ],
    )?;
    let limits = &app.config.limits;
    let ttl = dto::opt_u64(&obj, "ttl_seconds", 1, limits.hold_ttl_seconds_max)?
        .unwrap_or(app.config.credits.hold_ttl_seconds);
    let cmd = Command::PlaceHold {
        operation: operation(app, &obj)?,
        quantity: dto::quantity(&obj, limits)?,
        ttl_ms: ttl as i64 * 1000,
        idempotency_key: dto::idempotency_key(&obj, limits)?,
        member: dto::member(&obj, limits)?,
    };
    mutate(
        app,
        &id,
        cmd,
        false,
        dto::wait(&obj, &app.config.limits)?,
        StatusCode::CREATED,
    )
    .await
}

pub async fn close(
    app: &App,
    id: &str,
    hold: &str,
    capture: bool,
    pairs: &[(String, String)],
    body: &[u8],
) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let hold_id = dto::hold_id(hold).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "hold_not_found",
            format!("{hold:?} is not a hold id (they look like h1)"),
        )
    })?;
    let obj = dto::parse_object(body)?;
    let limits = &app.config.limits;
    let key = match dto::opt_str(&obj, "idempotency_key")? {
        Some(_) => Some(dto::idempotency_key(&obj, limits)?),
        None => None,
    };
    let cmd = if capture {
        dto::only(&obj, &["credits", "idempotency_key"])?;
        let credits = dto::opt_u64(&obj, "credits", 0, Credits::MAX.get())?.map(Credits);
        Command::Capture {
            hold_id,
            credits,
            idempotency_key: key,
        }
    } else {
        dto::only(&obj, &["idempotency_key"])?;
        Command::Release {
            hold_id,
            idempotency_key: key,
        }
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

/// `GET /v1/accounts/{id}/holds?limit=&after=`: the open holds, oldest first, paged by
/// hold id (`next` is the last hold id of the page, `null` on the last page).
pub async fn list(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &["limit", "after"])?;
    let limits = &app.config.limits;
    let limit = page_limit(pairs, limits.list_page_default, limits.list_page_max)?;
    let after = match pairs.iter().find(|(k, _)| k == "after") {
        Some((_, v)) => dto::hold_id(v).ok_or_else(|| {
            ApiError::invalid(
                "after",
                format!("{v:?} is not a hold id (they look like h1)"),
            )
        })?,
        None => 0,
    };
    let acct = view(app, &id).await?;
    let page: Vec<&crate::domain::Hold> = acct
        .holds
        .range(after + 1..)
        .map(|(_, h)| h)
        .take(limit + 1)
        .collect();
    let next = match page.get(limit.wrapping_sub(1)) {
        Some(h) if page.len() > limit => json!(format!("h{}", h.id)),
        _ => Value::Null,
    };
    let holds: Vec<Value> = page.iter().take(limit).map(|h| dto::hold_view(h)).collect();
    Ok((
        StatusCode::OK,
        json!({ "account": id, "holds": holds, "next": next }),
    ))
}
