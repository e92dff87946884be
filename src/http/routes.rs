//! One function per route. Each parses and validates its input (a bad field is a 400
//! naming it, before anything is sent to an actor), asks the account's actor, and renders
//! the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::auth::Denied;
use super::dto::{self, Object};
use super::error::ApiError;
use super::route::{self, Matched, Route};
use super::App;
use crate::actor::{ActorError, Msg, Mutation, Outcome, Reply};
use crate::domain::{Bucket, Command, Credits};
use crate::metrics as m;

pub type Resp = Response<Full<Bytes>>;
type Answer = Result<(StatusCode, Value), ApiError>;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let (route, answer) = dispatch(&app, req).await;
    let resp = match answer {
        Ok(Routed::Json(status, v)) => json_response(status, &v),
        Ok(Routed::Text(content_type, body)) => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Err(e) => error_response(&e),
    };
    metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route)
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
    Text(&'static str, Bytes),
}

fn json(a: Answer) -> Result<Routed, ApiError> {
    a.map(|(s, v)| Routed::Json(s, v))
}

/// The OpenAPI document of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");

async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
) -> (&'static str, Result<Routed, ApiError>) {
    let matched = match route::resolve(req.method(), req.uri().path()) {
        Ok(m) => m,
        Err(e) => return ("other", Err(e)),
    };
    let route = matched.route;
    let label = route.label();
    match serve(app, req, matched).await {
        Ok(r) => (label, Ok(r)),
        Err(e) => (label, Err(e)),
    }
}

async fn serve(app: &Arc<App>, req: Request<Incoming>, m: Matched) -> Result<Routed, ApiError> {
    let route = m.route;
    if let Some(scope) = route.scope() {
        let header = req.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        match app.auth.check(header, scope) {
            Ok(()) => {}
            Err(Denied::Unauthenticated) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid `Authorization: Bearer <token>` is required",
                )
                .header("www-authenticate", "Bearer realm=\"creditsd\""))
            }
            Err(Denied::Forbidden { token, scope }) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("token {token:?} lacks the {:?} scope", scope.name()),
                ))
            }
        }
    }
    let pairs = query_pairs(req.uri().query().unwrap_or(""))?;
    if route.takes_body() {
        json_content_type(&req)?;
    }
    let limits = &app.config.limits;
    let body_max = if route == Route::BatchDebits {
        limits.batch_body_bytes_max
    } else {
        limits.body_bytes_max
    };
    let body_timeout = Duration::from_millis(app.config.server.body_read_timeout_ms);
    let body = read_body(req, body_max, body_timeout).await?;
    if !route.takes_body() && !body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "this route takes no request body",
        ));
    }
    let id = m.account.as_str();
    match route {
        Route::Healthz | Route::Readyz | Route::Metrics | Route::OpenApi | Route::Pricing => {
            only_params(&pairs, &[])?
        }
        _ => {}
    }
    match route {
        Route::Healthz => Ok(Routed::Json(StatusCode::OK, json!({ "status": "ok" }))),
        Route::Readyz => {
            if app.ready.load(std::sync::atomic::Ordering::Acquire) {
                Ok(Routed::Json(StatusCode::OK, json!({ "status": "ready" })))
            } else {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "recovery has not finished",
                )
                .retry_after(1))
            }
        }
        Route::Metrics => {
            app.metrics.run_upkeep();
            m::refresh(&app.store.totals(), app.registry.active());
            Ok(Routed::Text(
                "text/plain; version=0.0.4",
                Bytes::from(app.metrics.render()),
            ))
        }
        Route::OpenApi => Ok(Routed::Text(
            "application/json",
            Bytes::from_static(OPENAPI.as_bytes()),
        )),
        Route::Pricing => Ok(Routed::Json(StatusCode::OK, pricing(app))),
        Route::ListAccounts => json(list_accounts(app, &pairs)),
        Route::CreateAccount => json(create_account(app, &pairs, &body).await),
        Route::GetAccount => json(get_account(app, id, &pairs).await),
        Route::Debit => json(debit(app, id, &pairs, &body).await),
        Route::BatchDebits => json(batch(app, &pairs, &body).await),
        Route::ListHolds => json(list_holds(app, id, &pairs).await),
        Route::PlaceHold => json(hold(app, id, &pairs, &body).await),
        Route::Capture | Route::Release => {
            json(close_hold(app, id, &m.hold, route == Route::Capture, &pairs, &body).await)
        }
        Route::Plan => json(plan(app, id, &pairs, &body).await),
        Route::Purchase => json(purchase(app, id, &pairs, &body).await),
        Route::Grant => json(grant(app, id, &pairs, &body).await),
        Route::Ledger => json(ledger(app, id, &pairs).await),
        Route::Usage => json(super::usage::usage(app, id, &pairs).await),
        Route::Forecast => json(super::usage::forecast(app, id, &pairs).await),
        Route::Events => json(events(app, &pairs).await),
    }
}

/// A body is JSON: a declared `Content-Type` must be `application/json` (or a `+json`
/// type); one that declares something else is 415 rather than being read as JSON anyway.
fn json_content_type(req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(v) = req.headers().get(CONTENT_TYPE) else {
        return Ok(());
    };
    let media = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("bodies are JSON: Content-Type {media:?} is not application/json"),
        ))
    }
}

/// An oversized body is answered 413 at once, and what the client goes on sending is
/// read and thrown away, up to this many times the limit and within the body timeout, so
/// that a client still writing reads its 413 instead of a broken pipe.
const OVERSIZE_DRAIN_FACTOR: u64 = 4;

/// Reads a body of at most `max` bytes within `timeout`. Too large is a 413 (from
/// `Content-Length` when declared), too slow a 408: neither holds a connection slot past
/// the timeout.
async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is limited to {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let deadline = tokio::time::Instant::now() + timeout;
    let drain_max = (max as u64).saturating_mul(OVERSIZE_DRAIN_FACTOR);
    let mut body = req.into_body();
    if declared.is_some_and(|len| len > max as u64) {
        tokio::spawn(drain(body, drain_max, deadline));
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the body did not arrive within {} ms", timeout.as_millis()),
                ))
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(ApiError::invalid(
                    "body",
                    format!("could not read the body: {e}"),
                ))
            }
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if buf.len() + data.len() > max {
                    tokio::spawn(drain(body, drain_max, deadline));
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
    }
}

/// A drain stops when the client has been quiet this long: one still writing sends
/// continuously, one that declared a body it never sends should not keep its slot.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Reads and discards the rest of a refused body, at most `bytes_max`, until `deadline`
/// or `DRAIN_IDLE` without data; dropping the body then lets hyper close the connection.
async fn drain(mut body: Incoming, bytes_max: u64, deadline: tokio::time::Instant) {
    let mut seen = 0u64;
    loop {
        let wait = deadline.min(tokio::time::Instant::now() + DRAIN_IDLE);
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(wait, body.frame()).await else {
            return;
        };
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > bytes_max {
            return;
        }
    }
}

/// Sends a message to an account's actor and waits for its answer.
pub(crate) async fn ask(
    app: &App,
    id: &str,
    make: impl FnOnce(oneshot::Sender<Reply>) -> Msg,
) -> Result<Outcome, ApiError> {
    let (tx, rx) = oneshot::channel();
    if let Err((e, _)) = app.registry.send(id, make(tx)) {
        return Err(e.into());
    }
    Ok(rx.await.unwrap_or(Err(ActorError::Unavailable))?)
}

fn answer(id: &str, outcome: Outcome, status: StatusCode) -> Answer {
    match outcome {
        Outcome::Applied { event, duplicate } => {
            Ok((status, dto::event_answer(id, &event, duplicate, false)))
        }
        Outcome::DryRun { event } => {
            Ok((StatusCode::OK, dto::event_answer(id, &event, false, true)))
        }
        Outcome::View(acct) => Ok((StatusCode::OK, dto::account_view(&acct))),
    }
}

async fn mutate(
    app: &App,
    id: &str,
    cmd: Command,
    dry_run: bool,
    wait: Duration,
    status: StatusCode,
) -> Answer {
    let outcome = ask(app, id, |reply| {
        Msg::Mutate(Box::new(Mutation {
            cmd,
            dry_run,
            wait,
            reply,
        }))
    })
    .await?;
    answer(id, outcome, status)
}

fn pricing(app: &App) -> Value {
    let c = &app.config;
    json!({
        "operations": c.operations,
        "plans": c.plans,
        "packs": c.packs.iter().map(|(k, p)| (k.clone(), json!({ "credits": p.credits, "price_cents": p.price_cents }))).collect::<serde_json::Map<_, _>>(),
        "free_tier": c.credits.free_tier,
        "thresholds": c.pricing().thresholds,
        "hold_ttl_seconds": c.credits.hold_ttl_seconds,
    })
}

async fn create_account(app: &App, pairs: &[(String, String)], body: &[u8]) -> Answer {
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
    let plan = known(
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
        Outcome::Applied { .. } => get_account(app, &id, &[])
            .await
            .map(|(_, v)| (StatusCode::CREATED, v)),
        other => answer(&id, other, StatusCode::CREATED),
    }
}

const PAGE_LIMIT_DEFAULT: u64 = 100;
const PAGE_LIMIT_MAX: u64 = 1000;

/// `GET /v1/accounts?limit=&after=`: account ids in byte order, cursor-paged (`next` is
/// the last id of the page, `null` on the last page). Ids only: listing reads no account.
fn list_accounts(app: &App, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &["limit", "after"])?;
    let limit =
        query_u64(pairs, "limit", 1, PAGE_LIMIT_MAX)?.unwrap_or(PAGE_LIMIT_DEFAULT) as usize;
    let after = match pairs.iter().find(|(k, _)| k == "after") {
        Some((_, v)) => Some(
            dto::account_id(v, &app.config.limits).map_err(|e| ApiError {
                field: Some("after".into()),
                ..e
            })?,
        ),
        None => None,
    };
    let mut ids = app
        .store
        .accounts_page(after.as_deref(), limit + 1)
        .map_err(|e| ApiError::from(ActorError::from(e)))?;
    let more = ids.len() > limit;
    ids.truncate(limit);
    let next = match ids.last() {
        Some(last) if more => json!(last),
        _ => Value::Null,
    };
    let accounts: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
    Ok((
        StatusCode::OK,
        json!({ "accounts": accounts, "next": next }),
    ))
}

/// `GET /v1/accounts/{id}/holds?limit=&after=`: the open holds, oldest first, paged by
/// hold id (`next` is the last hold id of the page, `null` on the last page).
async fn list_holds(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &["limit", "after"])?;
    let limit =
        query_u64(pairs, "limit", 1, PAGE_LIMIT_MAX)?.unwrap_or(PAGE_LIMIT_DEFAULT) as usize;
    let after = match pairs.iter().find(|(k, _)| k == "after") {
        Some((_, v)) => dto::hold_id(v).ok_or_else(|| {
            ApiError::invalid(
                "after",
                format!("{v:?} is not a hold id (they look like h1)"),
            )
        })?,
        None => 0,
    };
    let Outcome::View(acct) = ask(app, &id, |reply| Msg::Get { reply }).await? else {
        unreachable!("Get answers a view")
    };
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

async fn get_account(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let outcome = ask(app, &id, |reply| Msg::Get { reply }).await?;
    answer(&id, outcome, StatusCode::OK)
}

fn operation(app: &App, obj: &Object) -> Result<String, ApiError> {
    known(
        &app.config.operations,
        "operation",
        dto::req_str(obj, "operation")?,
    )
}

/// `value` if it names an entry of a configured table (operations, plans, packs), else a
/// 400 naming `field`: checked here so an unknown name never reaches an actor.
fn known<V>(
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

fn wait(app: &App, obj: &Object) -> Result<Duration, ApiError> {
    Ok(Duration::from_secs(
        dto::opt_u64(obj, "wait_seconds", 0, app.config.limits.wait_seconds_max)?.unwrap_or(0),
    ))
}

/// The fields shared by a single debit and a batch item.
fn debit_command(app: &App, obj: &Object) -> Result<Command, ApiError> {
    let limits = &app.config.limits;
    Ok(Command::Debit {
        operation: operation(app, obj)?,
        quantity: dto::quantity(obj, limits)?,
        metadata: dto::metadata(obj, limits)?,
        idempotency_key: dto::idempotency_key(obj, limits)?,
    })
}

async fn debit(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
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
            "dry_run",
            "wait_seconds",
        ],
    )?;
    let cmd = debit_command(app, &obj)
        .inspect_err(|_| metrics::counter!(m::DEBITS_TOTAL, "result" => "invalid").increment(1))?;
    let dry_run = dto::opt_bool(&obj, "dry_run")?;
    mutate(app, &id, cmd, dry_run, wait(app, &obj)?, StatusCode::OK).await
}

async fn batch(app: &App, pairs: &[(String, String)], body: &[u8]) -> Answer {
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
                Ok(outcome) => answer(&account, outcome, StatusCode::OK),
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

async fn hold(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
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
    };
    mutate(app, &id, cmd, false, wait(app, &obj)?, StatusCode::CREATED).await
}

async fn close_hold(
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

async fn plan(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["plan", "idempotency_key"])?;
    let plan = known(&app.config.plans, "plan", dto::req_str(&obj, "plan")?)?;
    let cmd = Command::ChangePlan {
        plan,
        idempotency_key: dto::idempotency_key(&obj, &app.config.limits)?,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

async fn purchase(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["pack", "payment_ref"])?;
    let pack = known(&app.config.packs, "pack", dto::req_str(&obj, "pack")?)?;
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

async fn grant(app: &App, id: &str, pairs: &[(String, String)], body: &[u8]) -> Answer {
    only_params(pairs, &[])?;
    let id = dto::account_id(id, &app.config.limits)?;
    let obj = dto::parse_object(body)?;
    dto::only(&obj, &["bucket", "credits", "reason", "idempotency_key"])?;
    let bucket_name = dto::req_str(&obj, "bucket")?;
    let bucket = Bucket::parse(bucket_name).ok_or_else(|| {
        ApiError::invalid(
            "bucket",
            format!("unknown bucket {bucket_name:?}; expected monthly, free or packs"),
        )
    })?;
    let credits = dto::opt_u64(&obj, "credits", 1, Credits::MAX.get())?
        .ok_or_else(|| ApiError::invalid("credits", "credits is required"))?;
    let limits = &app.config.limits;
    let cmd = Command::Grant {
        bucket,
        credits: Credits(credits),
        reason: dto::req_bounded(&obj, "reason", limits.reason_bytes_max)?,
        idempotency_key: dto::idempotency_key(&obj, limits)?,
    };
    mutate(app, &id, cmd, false, Duration::ZERO, StatusCode::OK).await
}

/// `a=1&b=2` into pairs, percent-decoded; a malformed escape is a 400, and so is a
/// parameter given twice (which of the two would count is nobody's guess).
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |s: &str| route::percent_decode(s, true);
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(ApiError::invalid(
                    "query",
                    format!("malformed query parameter {p:?}"),
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(j, _)| j == k) {
            return Err(ApiError::invalid(
                k,
                format!("parameter {k:?} is given twice"),
            ));
        }
    }
    Ok(pairs)
}

pub fn query_u64(
    pairs: &[(String, String)],
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer from {min} to {max}"),
            )),
        },
    }
}

pub(crate) fn only_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) if allowed.is_empty() => Err(ApiError::invalid(
            k,
            format!("unknown parameter {k:?}; this route takes no query parameters"),
        )),
        Some((k, _)) => Err(ApiError::invalid(
            k,
            format!(
                "unknown parameter {k:?}; expected one of {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

const LEDGER_LIMIT_DEFAULT: u64 = 50;
const LEDGER_LIMIT_MAX: u64 = 500;

async fn ledger(app: &App, id: &str, pairs: &[(String, String)]) -> Answer {
    let id = dto::account_id(id, &app.config.limits)?;
    only_params(pairs, &["limit", "before"])?;
    let limit =
        query_u64(pairs, "limit", 1, LEDGER_LIMIT_MAX)?.unwrap_or(LEDGER_LIMIT_DEFAULT) as usize;
    let before = query_u64(pairs, "before", 1, u64::MAX)?;
    // Through the actor: 404 for an unknown account, and the seq it has reached.
    let Outcome::View(acct) = ask(app, &id, |reply| Msg::Get { reply }).await? else {
        unreachable!("Get answers a view")
    };
    let before = before.unwrap_or(acct.seq + 1).min(acct.seq + 1);
    // One more than the page, for the change of the page's oldest entry.
    let events = app
        .store
        .events_before(&id, before, limit + 1)
        .map_err(|e| ApiError::from(ActorError::from(e)))?;
    // The oldest entry left after a retention prune changes from the base snapshot.
    let base = match events.last() {
        Some(last) if events.len() <= limit && last.seq > 1 => app
            .store
            .base(&id)
            .map_err(|e| ApiError::from(ActorError::from(e)))?
            .filter(|b| b.seq + 1 == last.seq)
            .map(|b| (b.balances, b.held())),
        _ => None,
    };
    let entries: Vec<Value> = events
        .iter()
        .take(limit)
        .enumerate()
        .map(|(i, ev)| {
            let prev = events
                .get(i + 1)
                .map(|p| (p.after, p.held_after))
                .or(base)
                .unwrap_or_default();
            dto::ledger_entry(ev, prev)
        })
        .collect();
    let next = match events.get(limit.saturating_sub(1)) {
        Some(last) if events.len() > limit && entries.len() == limit => json!(last.seq.to_string()),
        _ => Value::Null,
    };
    Ok((StatusCode::OK, json!({ "entries": entries, "next": next })))
}

const EVENTS_LIMIT_DEFAULT: u64 = 100;
const EVENTS_LIMIT_MAX: u64 = 1000;

async fn events(app: &App, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &["after", "limit", "wait_seconds"])?;
    // The cursor is opaque to clients: today the decimal id of the last event seen.
    let after = query_u64(pairs, "after", 0, u64::MAX)?.unwrap_or(0);
    let limit =
        query_u64(pairs, "limit", 1, EVENTS_LIMIT_MAX)?.unwrap_or(EVENTS_LIMIT_DEFAULT) as usize;
    let wait =
        query_u64(pairs, "wait_seconds", 0, app.config.limits.wait_seconds_max)?.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut durable = app.registry.services().journal.feed_durable();
    loop {
        let below = *durable.borrow_and_update();
        let entries = app
            .store
            .feed_after(after, below, limit)
            .map_err(|e| ApiError::from(ActorError::from(e)))?;
        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
            // Always the cursor to ask with next: past the last event, or where the
            // client already was when nothing new arrived.
            let next = entries.last().map_or(after, |e| e.id).to_string();
            let events: Vec<Value> = entries.iter().map(dto::feed_entry).collect();
            return Ok((StatusCode::OK, json!({ "events": events, "next": next })));
        }
        if let Ok(Err(_)) = tokio::time::timeout_at(deadline, durable.changed()).await {
            // The journal is gone (shutting down): nothing new will become durable.
            tokio::time::sleep_until(deadline).await;
        }
    }
}
