//! Request parsing at the HTTP edge: any body goes through the JSON reader and every field
//! extractor the routes use (account ids, operations' fields, quantities, metadata, keys,
//! instants, query strings). Each must answer a value or a 4xx naming a field, never panic.
//!
//! Shared by the fuzz target and by `tests/fuzz_corpus.rs`, which replays the corpus.
use creditsd::config::Config;
use creditsd::http::{dto, query};
use std::sync::OnceLock;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse("").expect("the defaults are valid"))
}

pub fn run(data: &[u8]) {
    let limits = &config().limits;
    if let Ok(text) = std::str::from_utf8(data) {
        // Path segments and query strings are input too.
        if let Ok(pairs) = query::query_pairs(text) {
            let _ = query::query_u64(&pairs, "limit", 1, 1000);
        }
        let _ = dto::account_id(text, limits);
        let _ = dto::hold_id(text);
        let _ = dto::ts_param("from", text);
    }
    let Ok(obj) = dto::parse_object(data) else {
        return;
    };
    let _ = dto::only(&obj, &["id", "plan", "billing_anchor"]);
    let _ = dto::opt_str(&obj, "plan");
    let _ = dto::req_str(&obj, "id");
    let _ = dto::req_bounded(&obj, "reason", limits.reason_bytes_max);
    let _ = dto::opt_u64(&obj, "ttl_seconds", 1, limits.hold_ttl_seconds_max);
    let _ = dto::opt_u64(&obj, "credits", 1, u64::MAX);
    let _ = dto::opt_bool(&obj, "dry_run");
    let _ = dto::idempotency_key(&obj, limits);
    let _ = dto::quantity(&obj, limits);
    let _ = dto::metadata(&obj, limits);
    if let Some(serde_json::Value::Array(items)) = obj.get("debits") {
        for item in items.iter().take(limits.batch_items_max) {
            if let serde_json::Value::Object(o) = item {
                let _ = dto::quantity(o, limits);
                let _ = dto::metadata(o, limits);
                let _ = dto::idempotency_key(o, limits);
                if let Ok(Some(s)) = dto::opt_str(o, "account") {
                    let _ = dto::account_id(s, limits);
                }
            }
        }
    }
}
