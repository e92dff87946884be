//! `handle`: one request in, one response out. It resolves the route (`route`), checks
//! the token's scope (`auth`), reads the query (`query`) and the body (`body`), calls the
//! route's handler (one module per resource), renders the answer and records the request's
//! metrics. Each handler parses and validates its input (a bad field is a 400 naming it,
//! before anything is sent to an actor), asks the account's actor, and renders the answer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::ask::Answer;
use super::error::ApiError;
use super::probes::{self, Text};
use super::query::{only_params, query_pairs};
use super::route::{self, Matched, Route};
use super::{accounts, billing, body, console, debits, events, holds, reports, settings, App};
use crate::metrics as m;

pub type Resp = Response<Full<Bytes>>;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let (route, answer) = dispatch(&app, req).await;
    let resp = match answer {
        Ok(Routed::Json(status, v)) => json_response(status, &v),
        Ok(Routed::Text(Text { content_type, body })) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Ok(Routed::Page(asset)) => console::response(asset),
        Err(e) => error_response(&e),
    };
    metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::HTTP_RESPONSES_TOTAL, "route" => route, "code" => resp.status().as_str().to_string())
        .increment(1);
    resp
}

pub fn json_response(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).expect("JSON values serialize"),
    )));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error_response(e: &ApiError) -> Resp {
    let mut r = json_response(e.status, &e.body());
    if let Some(s) = e.retry_after_s {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    for (name, value) in e.headers.iter().flat_map(|h| h.iter()) {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    r
}

enum Routed {
    Json(StatusCode, Value),
    Text(Text),
    Page(&'static console::Asset),
}

fn json(a: Answer) -> Result<Routed, ApiError> {
    a.map(|(s, v)| Routed::Json(s, v))
}

async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
) -> (&'static str, Result<Routed, ApiError>) {
    let matched = match route::resolve(req.method(), req.uri().path()) {
        Ok(m) => m,
        Err(e) => return ("other", Err(e)),
    };
    let label = matched.route.label();
    (label, serve(app, req, matched).await)
}

async fn serve(app: &Arc<App>, req: Request<Incoming>, m: Matched) -> Result<Routed, ApiError> {
    let route = m.route;
    if let Some(scope) = route.scope() {
        let header = req.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        app.auth.authorize(header, scope)?;
    }
    let pairs = query_pairs(req.uri().query().unwrap_or(""))?;
    // The console's file is named by the path (the route table knows only `/console/*`).
    let page = (route == Route::Console).then(|| console::asset(req.uri().path()));
    let body = body::read(req, route, &app.config).await?;
    let id = m.account.as_str();
    match route {
        Route::Healthz
        | Route::Readyz
        | Route::Metrics
        | Route::OpenApi
        | Route::Pricing
        | Route::Console => only_params(&pairs, &[])?,
        _ => {}
    }
    match route {
        Route::Healthz => json(probes::healthz()),
        Route::Readyz => json(probes::readyz(app)),
        Route::Metrics => Ok(Routed::Text(probes::metrics(app))),
        Route::OpenApi => Ok(Routed::Text(probes::openapi())),
        Route::Pricing => json(probes::pricing(app)),
        Route::ListAccounts => json(accounts::list(app, &pairs)),
        Route::CreateAccount => json(accounts::create(app, &pairs, &body).await),
        Route::GetAccount => json(accounts::get(app, id, &pairs).await),
        Route::Debit => json(debits::debit(app, id, &pairs, &body).await),
        Route::BatchDebits => json(debits::batch(app, &pairs, &body).await),
        Route::ListHolds => json(holds::list(app, id, &pairs).await),
        Route::PlaceHold => json(holds::place(app, id, &pairs, &body).await),
        Route::Capture | Route::Release => {
            let capture = route == Route::Capture;
            json(holds::close(app, id, &m.sub, capture, &pairs, &body).await)
        }
        Route::Refund => json(debits::refund(app, id, &m.sub, &pairs, &body).await),
        Route::Alerts => json(settings::alerts(app, id, &pairs, &body).await),
        Route::PutMember => json(settings::put_member(app, id, &m.sub, &pairs, &body).await),
        Route::DeleteMember => json(settings::delete_member(app, id, &m.sub, &pairs).await),
        Route::Plan => json(billing::plan(app, id, &pairs, &body).await),
        Route::Purchase => json(billing::purchase(app, id, &pairs, &body).await),
        Route::Grant => json(billing::grant(app, id, &pairs, &body).await),
        Route::Ledger => json(reports::ledger(app, id, &pairs).await),
        Route::Usage => json(reports::usage(app, id, &pairs).await),
        Route::Forecast => json(reports::forecast(app, id, &pairs).await),
        Route::Events => json(events::feed(app, &pairs).await),
        Route::Console => Ok(Routed::Page(page.expect("a console route")?)),
    }
}
