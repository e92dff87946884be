//! `GET /v1/events?after=&limit=&wait_seconds=`: the durable notification feed, read
//! through `Reads` up to the journal's durable watermark, with a long poll.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::ask::Answer;
use super::query::{only_params, page_limit, query_u64};
use super::App;

pub async fn feed(app: &App, pairs: &[(String, String)]) -> Answer {
    only_params(pairs, &["after", "limit", "wait_seconds"])?;
    let limits = &app.config.limits;
    // The cursor is opaque to clients: today the decimal id of the last event seen.
    let after = query_u64(pairs, "after", 0, u64::MAX)?.unwrap_or(0);
    let limit = page_limit(pairs, limits.events_page_default, limits.events_page_max)?;
    let wait = query_u64(pairs, "wait_seconds", 0, limits.wait_seconds_max)?.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut durable = app.registry.services().journal.feed_durable();
    loop {
        let below = *durable.borrow_and_update();
        let entries = app.reads.feed_page(after, below, limit)?;
        if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
            // Always the cursor to ask with next: past the last event, or where the
            // client already was when nothing new arrived.
            let next = entries.last().map_or(after, |e| e.id).to_string();
            let events: Vec<Value> = entries.iter().map(crate::wire::feed_entry).collect();
            return Ok((StatusCode::OK, json!({ "events": events, "next": next })));
        }
        if let Ok(Err(_)) = tokio::time::timeout_at(deadline, durable.changed()).await {
            // The journal is gone (shutting down): nothing new will become durable.
            tokio::time::sleep_until(deadline).await;
        }
    }
}
