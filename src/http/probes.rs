//! What needs no account: `GET /healthz` (liveness), `GET /readyz` (storage open, recovery
//! done), `GET /metrics` (Prometheus text), `GET /v1/openapi.json` and `GET /v1/pricing`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;

use super::ask::Answer;
use super::error::ApiError;
use super::App;

/// The OpenAPI document of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");

/// A body that is not JSON, with its content type.
pub struct Text {
    pub content_type: &'static str,
    pub body: Bytes,
}

pub fn healthz() -> Answer {
    Ok((StatusCode::OK, json!({ "status": "ok" })))
}

pub fn readyz(app: &App) -> Answer {
    if app.ready.load(Ordering::Acquire) {
        Ok((StatusCode::OK, json!({ "status": "ready" })))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "recovery has not finished",
        )
        .retry_after(1))
    }
}

/// Every metric, with the book gauges refreshed for this scrape.
pub fn metrics(app: &App) -> Text {
    app.refresh_metrics();
    Text {
        content_type: "text/plain; version=0.0.4",
        body: Bytes::from(app.metrics.render()),
    }
}

pub fn openapi() -> Text {
    Text {
        content_type: "application/json",
        body: Bytes::from_static(OPENAPI.as_bytes()),
    }
}

/// Operations, plans, packs and thresholds as configured.
pub fn pricing(app: &App) -> Answer {
    let c = &app.config;
    Ok((
        StatusCode::OK,
        json!({
            "operations": c.operations,
            "plans": c.plans,
            "packs": c.packs.iter().map(|(k, p)| (k.clone(), json!({ "credits": p.credits, "price_cents": p.price_cents }))).collect::<serde_json::Map<_, _>>(),
            "free_tier": c.credits.free_tier,
            "thresholds": c.pricing().thresholds,
            "hold_ttl_seconds": c.credits.hold_ttl_seconds,
        }),
    ))
}
