//! Debits: `POST /v1/accounts/{id}/debits` (one, optionally a dry run or a parked wait),
//! `POST /v1/debits` (a batch whose items succeed or fail on their own) and
//! `POST /v1/accounts/{id}/debits/{debit_key}/refund`.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::ask::{answer, mutate, Answer};
use super::dto::{self, Object};
use super::error::ApiError;
use super::query::only_params;
use super::App;
use crate::actor::{ActorError, Msg, Mutation};
use crate::domain::{Command, Credits};
use crate::metrics as m;

/// `operation`, one of the configured operations.
pub(super) fn operation(app: &App, obj: &Object) -> Result<String, ApiError> {
    dto::known(
        &app.config.operations,
        "operation",
        dto::req_str(obj, "operation")?,
    )
}

/// The fields shared by a single debit and a batch item.
pub(super) fn debit_command(app: &App, obj: &Object) -> Result<Command, ApiError> {
    let limits = &app.config.limits;
    Ok(Command::Debit {
        operation: operation(app, obj)?,
        quantity: dto::quantity(obj, limits)?,
        metadata: dto::metadata(obj, limits)?,
        idempotency_key: dto::idempotency_key(obj, limits)?,
        member: dto::member(obj, limits)?,
    })
}

pub async fn debit(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(
        &obj,
        &[
            "operation",
            "quantity",
            "idempotency_key",
            "metadata",
            "member",
            "dry_run",
            "wait_seconds",
        ],
    )?;
    let cmd = debit_command(app, &obj)
        .inspect_err(|_| metrics::counter!(m::DEBITS_TOTAL, "result" => "invalid").increment(1))?;
    let dry_run = dto::opt_bool(&obj, "dry_run")?;
    mutate(
        app,
        &id,
        cmd,
        dry_run,
        dto::wait(&obj, &app.config.limits)?,
        StatusCode::OK,
    )
    .await
}

pub async fn batch(app: &App, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["debits"])?;
    let items = match obj.get("debits") {
        Some(Value::Array(items)) => items,
        _ => return Err(ApiError::invalid("debits", "debits must be an array")),
    };
    let max = app.config.limits.batch_items_max;
    if items.is_empty() || items.len() > max {
        return Err(ApiError::invalid(
            "debits",
            format!("a batch has 1 to {max} items"),
        ));
    }
    // Send everything first, so the whole batch shares group commits, then collect in order.
    let mut waiting = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = (|| {
            let Value::Object(o) = item else {
                return Err(ApiError::invalid(
                    &format!("debits[{i}]"),
                    "each item must be an object",
                ));
            };
            dto::only(
                o,
                &[
                    "account",
                    "operation",
                    "quantity",
                    "idempotency_key",
                    "metadata",
                    "member",
                ],
            )?;
            let account = dto::account_id(dto::req_str(o, "account")?, &app.config.limits)?;
            Ok((account, debit_command(app, o)?))
        })();
        waiting.push(match parsed {
            Err(e) => {
                metrics::counter!(m::DEBITS_TOTAL, "result" => "invalid").increment(1);
                Err(e)
            }
            Ok((account, cmd)) => {
                let (tx, rx) = oneshot::channel();
                let msg = Msg::Mutate(Box::new(Mutation {
                    cmd,
                    dry_run: false,
                    wait: Duration::ZERO,
                    reply: tx,
                }));
                match app.registry.send(&account, msg) {
                    Ok(()) => Ok((account, rx)),
                    Err((e, _)) => Err(e.into()),
                }
            }
        });
    }
    let mut results = Vec::with_capacity(waiting.len());
    for w in waiting {
        let r = match w {
            Ok((account, rx)) => match rx.await.unwrap_or(Err(ActorError::Unavailable)) {
                Ok(outcome) => answer(app, &account, outcome, StatusCode::OK),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        // `code` is the HTTP status the single request would have had; a debit's own
        // `status` (the account's, active or paused) stays what it is in that answer.
        results.push(match r {
            Ok((code, mut v)) => {
                v["code"] = json!(code.as_u16());
                v
            }
            Err(e) => {
                let mut v = e.body();
                v["code"] = json!(e.status.as_u16());
                v
            }
        });
    }
    Ok((StatusCode::OK, json!({ "results": results })))
}

/// `POST /v1/accounts/{id}/debits/{debit_key}/refund` `{credits?, reason, idempotency_key}`:
/// gives back up to what the debit under `debit_key` took and was not yet refunded.
pub async fn refund(
    app: &App,
    id: &str,
    debit_key: &str,
    pairs: &[(String, String)],
    body: &[u8],
) -> Answer {
    only_params(pairs, &[])?;
    let limits = &app.config.limits;
    let id = dto::account_id(id, limits)?;
    let debit_key = dto::bounded("debit_key", debit_key, limits.idempotency_key_bytes_max)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["credits", "reason", "idempotency_key"])?;
    let credits = dto::opt_u64(&obj, "credits", 1, Credits::MAX.get())?.map(Credits);
    let cmd = Command::Refund {
        debit_key,
        credits,
        reason: dto::req_bounded(&obj, "reason", limits.reason_bytes_max)?,
        idempotency_key: dto::idempotency_key(&obj, limits)?,
        debit: None,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}
