//! Request bodies: the `Content-Type` check (415), reading within the size bound (413)
//! and the body timeout (408), and draining what a client goes on sending after a 413.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::route::Route;
use crate::config::Config;

/// The body of a request to `route`: JSON (by its declared type) when the route takes
/// one, at most the route's bound (the batch endpoint has its own), whole within
/// `server.body_read_timeout_ms`; a route that takes no body refuses a non-empty one.
pub async fn read(
    req: Request<Incoming>,
    route: Route,
    config: &Config,
) -> Result<Bytes, ApiError> {
    if route.takes_body() {
        json_content_type(&req)?;
    }
    let max = if route == Route::BatchDebits {
        config.limits.batch_body_bytes_max
    } else {
        config.limits.body_bytes_max
    };
    let timeout = Duration::from_millis(config.server.body_read_timeout_ms);
    let body = read_body(req, max, timeout).await?;
    if !route.takes_body() && !body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "this route takes no request body",
        ));
    }
    Ok(body)
}

/// A body is JSON: a declared `Content-Type` must be `application/json` (or a `+json`
/// type); one that declares something else is 415 rather than being read as JSON anyway.
pub fn json_content_type(req: &Request<Incoming>) -> Result<(), ApiError> {
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
pub async fn read_body(
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
