//! Billing: `PUT .../plan` (change plan), `POST .../purchases` (a pack) and
//! `POST .../grants` (an operator's adjustment).

use std::time::Duration;

use hyper::StatusCode;

use super::ask::{mutate, Answer};
use super::dto;
use super::error::ApiError;
use super::query::only_params;
use super::App;
use crate::domain::{Bucket, Command, Credits};

pub async fn plan(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["plan", "idempotency_key"])?;
    let plan = dto::known(&app.config.plans, "plan", dto::req_str(&obj, "plan")?)?;
    let cmd = Command::ChangePlan {
        plan,
        idempotency_key: dto::idempotency_key(&obj, &app.config.limits)?,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

pub async fn purchase(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["pack", "payment_ref"])?;
    let pack = dto::known(&app.config.packs, "pack", dto::req_str(&obj, "pack")?)?;
    let payment_ref = dto::req_bounded(
        &obj,
        "payment_ref",
        app.config.limits.idempotency_key_bytes_max,
    )?;
    mutate(
        app,
        &id,
        Command::Purchase { pack, payment_ref },
        false,
        Duration::ZERO,
        StatusCode::OK,
    )
    .await
}

pub async fn grant(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(
        &obj,
        &[
            "bucket",
            "credits",
            "reason",
            "idempotency_key",
            "expires_at",
        ],
    )?;
    let bucket_name = dto::req_str(&obj, "bucket")?;
    let bucket = Bucket::parse(bucket_name).ok_or_else(|| {
        ApiError::invalid(
            "bucket",
            format!("unknown bucket {bucket_name:?}; expected monthly, promo, free or packs"),
        )
    })?;
    let expires_at = dto::opt_str(&obj, "expires_at")?
        .map(|s| dto::ts_param("expires_at", s))
        .transpose()?;
    match (bucket, expires_at) {
        (Bucket::Promo, None) => {
            return Err(ApiError::invalid(
                "expires_at",
                "a promo grant needs expires_at (RFC 3339, in the future)",
            ))
        }
        (b, Some(_)) if b != Bucket::Promo => {
            return Err(ApiError::invalid(
                "expires_at",
                format!(
                    "only promo credits expire; {} credits take no expires_at",
                    b.name()
                ),
            ))
        }
        _ => {}
    }
    let credits = dto::opt_u64(&obj, "credits", 1, Credits::MAX.get())?
        .ok_or_else(|| ApiError::invalid("credits", "credits is required"))?;
    let limits = &app.config.limits;
    let cmd = Command::Grant {
        bucket,
        credits: Credits(credits),
        reason: dto::req_bounded(&obj, "reason", limits.reason_bytes_max)?,
        idempotency_key: dto::idempotency_key(&obj, limits)?,
        expires_at,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}
