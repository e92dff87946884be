//! Webhooks: one delivery task per `[[webhooks]]` entry. Each reads the durable feed
//! (`Store::feed_after`, up to the journal's durable watermark), POSTs every event of the
//! types it wants, signed, one at a time in feed order, retrying with exponential backoff,
//! and persists its cursor (`Store::set_feed_cursor`) after each event so that a restart
//! resumes where it stopped.
//!
//! It touches nothing of the accounts: it only reads what is already durable, holds one
//! page of the feed at a time, and is never waited on, so a slow or dead endpoint can
//! neither delay a debit nor grow memory; it only falls behind (and, past the feed's
//! retention, misses events, which it logs).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::WebhookConfig;
use crate::domain::Notice;
use crate::metrics as m;
use crate::store::{FeedEntry, Store};

pub const SIGNATURE_HEADER: &str = "x-creditsd-signature";
pub const EVENT_ID_HEADER: &str = "x-creditsd-event-id";

/// Feed entries read per page.
const PAGE_MAX: usize = 100;

/// `sha256=<hex HMAC-SHA256 of body with secret>`, the value of `X-Creditsd-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Starts one delivery task per webhook.
pub fn start(hooks: &[WebhookConfig], store: Arc<dyn Store>, durable: watch::Receiver<u64>) {
    if hooks.is_empty() {
        return;
    }
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build_http();
    for hook in hooks {
        tracing::info!(webhook = hook.name(), url = %hook.url, "starting webhook delivery");
        tokio::spawn(run(
            hook.clone(),
            store.clone(),
            durable.clone(),
            client.clone(),
        ));
    }
}

fn storage_failed(hook: &WebhookConfig, e: crate::store::StorageError) -> ! {
    crate::fail_stop(&format!("webhook {:?}: {e}", hook.name()))
}

async fn run(
    hook: WebhookConfig,
    store: Arc<dyn Store>,
    mut durable: watch::Receiver<u64>,
    client: Client<HttpConnector, Full<Bytes>>,
) {
    let name = hook.name().to_string();
    let wanted = |n: Notice| match &hook.events {
        None => true,
        Some(types) => types.iter().any(|t| t == n.type_name()),
    };
    let mut cursor = match store.feed_cursor(&name) {
        Ok(Some(c)) => c,
        Ok(None) => {
            // A new webhook starts at the end of the durable feed: what happened before
            // it existed is in /v1/events, not owed to it.
            let start = durable.borrow().saturating_sub(1);
            store
                .set_feed_cursor(&name, start)
                .unwrap_or_else(|e| storage_failed(&hook, e));
            start
        }
        Err(e) => storage_failed(&hook, e),
    };
    loop {
        let below = *durable.borrow_and_update();
        let page = store
            .feed_after(cursor, below, PAGE_MAX)
            .unwrap_or_else(|e| storage_failed(&hook, e));
        if page.is_empty() {
            if durable.changed().await.is_err() {
                return; // the journal is gone: shutting down
            }
            continue;
        }
        if page[0].id > cursor + 1 {
            tracing::warn!(
                webhook = %name,
                missed = page[0].id - cursor - 1,
                "feed entries were pruned before this webhook delivered them"
            );
        }
        for entry in &page {
            if wanted(entry.notice) {
                deliver(&hook, &client, entry).await;
            }
            cursor = entry.id;
            store
                .set_feed_cursor(&name, cursor)
                .unwrap_or_else(|e| storage_failed(&hook, e));
        }
    }
}

/// Delivers one event, retrying until a 2xx (or until `attempts_max`).
async fn deliver(
    hook: &WebhookConfig,
    client: &Client<HttpConnector, Full<Bytes>>,
    entry: &FeedEntry,
) {
    let body = Bytes::from(
        serde_json::to_vec(&crate::wire::feed_entry(entry)).expect("JSON values serialize"),
    );
    let signature = signature(hook.secret.as_bytes(), &body);
    let mut backoff = Duration::from_millis(hook.backoff_initial_ms);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&hook.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("creditsd-webhook"))
            .header(SIGNATURE_HEADER, signature.as_str())
            .header(EVENT_ID_HEADER, entry.id)
            .body(Full::new(body.clone()))
            .expect("validated URL and plain headers");
        let timeout = Duration::from_millis(hook.timeout_ms);
        let failure = match tokio::time::timeout(timeout, client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "result" => "delivered")
                    .increment(1);
                return;
            }
            Ok(Ok(resp)) => format!("answered {}", resp.status()),
            Ok(Err(e)) => format!("request failed: {e}"),
            Err(_) => format!("no answer within {} ms", hook.timeout_ms),
        };
        metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "result" => "failed").increment(1);
        if hook.attempts_max > 0 && attempt >= hook.attempts_max {
            metrics::counter!(m::WEBHOOK_DELIVERIES_TOTAL, "result" => "given_up").increment(1);
            tracing::error!(webhook = hook.name(), id = entry.id, attempt, %failure, "giving up on this event");
            return;
        }
        tracing::warn!(webhook = hook.name(), id = entry.id, attempt, %failure, retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(hook.backoff_max_ms));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
