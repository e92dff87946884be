//! The one typed configuration, loaded from `config.toml`. Every key has a default (the
//! values of `SPEC.md`), unknown keys are refused, and `validate` names the bad key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{Credits, Pack, Pricing};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub actors: ActorConfig,
    pub limits: Limits,
    pub credits: CreditsConfig,
    pub operations: BTreeMap<String, u64>,
    pub plans: BTreeMap<String, u64>,
    pub packs: BTreeMap<String, PackConfig>,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub feed: crate::feed::FeedConfig,
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    pub history: crate::history::HistoryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// A client that has not sent its request head within this time is dropped.
    pub header_read_timeout_ms: u64,
    /// A request body must arrive whole within this time, or the answer is 408.
    pub body_read_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    Sync,
    Periodic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub durability: DurabilityMode,
    pub flush_interval_ms: u64,
    pub snapshot_every: u64,
    pub idempotency_ttl_seconds: u64,
    /// Replies waiting for the group commit; a full queue slows actors, then fills mailboxes.
    pub journal_queue_max: usize,
    /// Replies released by one fsync at most.
    pub group_commit_max: usize,
    pub cache_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorConfig {
    /// Messages waiting for one account; a full mailbox answers 429 with Retry-After.
    pub mailbox_max: usize,
    /// How often idle accounts are swept for due resets and hold expiries.
    pub sweep_interval_ms: u64,
    /// An account that handled nothing for this long is snapshotted and its task stops
    /// (passivation); the next message reactivates it from the snapshot.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub account_id_bytes_max: usize,
    pub idempotency_key_bytes_max: usize,
    pub quantity_max: u32,
    pub body_bytes_max: usize,
    pub batch_body_bytes_max: usize,
    pub batch_items_max: usize,
    pub metadata_keys_max: usize,
    pub metadata_bytes_max: usize,
    pub reason_bytes_max: usize,
    pub wait_seconds_max: u64,
    pub hold_ttl_seconds_max: u64,
    pub holds_open_max: usize,
    /// Ledger entries in one page (`GET .../ledger`) when `limit` is not given (count).
    pub ledger_page_default: usize,
    /// The largest `limit` of a ledger page (count).
    pub ledger_page_max: usize,
    /// Feed events in one answer of `GET /v1/events` when `limit` is not given (count).
    pub events_page_default: usize,
    /// The largest `limit` of `GET /v1/events` (count).
    pub events_page_max: usize,
    /// Items in one page of a list (`GET /v1/accounts`, `GET .../holds`) when `limit` is
    /// not given (count).
    pub list_page_default: usize,
    /// The largest `limit` of a list page (count).
    pub list_page_max: usize,
    /// Periods (days or months) one usage answer may span (count).
    pub usage_periods_max: usize,
}

impl Limits {
    /// The JSON of one batch item with every field at its limit and no escapes: the
    /// longest id, operation name, quantity and key, and `metadata_keys_max` members
    /// whose names and values fill `metadata_bytes_max` (each member adds `"":"",`).
    pub fn batch_item_bytes_max(&self, operation_name_max: usize) -> usize {
        let fixed =
            r#"{"account":"","operation":"","quantity":,"idempotency_key":"","metadata":{}},"#;
        fixed.len()
            + self.account_id_bytes_max
            + operation_name_max
            + self.quantity_max.to_string().len()
            + self.idempotency_key_bytes_max
            + self.metadata_bytes_max
            + self.metadata_keys_max * r#""":"","#.len()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    pub free_tier: u64,
    pub thresholds: Vec<u8>,
    pub hold_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    pub credits: u64,
    pub price_cents: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the bearer token (`creditsd hash-token`).
    pub sha256: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `creditsd=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        let p = Pricing::standard();
        Config {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            actors: ActorConfig::default(),
            limits: Limits::default(),
            credits: CreditsConfig::default(),
            operations: p
                .operations
                .iter()
                .map(|(k, v)| (k.clone(), v.get()))
                .collect(),
            plans: p.plans.iter().map(|(k, v)| (k.clone(), v.get())).collect(),
            packs: p
                .packs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        PackConfig {
                            credits: v.credits.get(),
                            price_cents: v.price_cents,
                        },
                    )
                })
                .collect(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            feed: Default::default(),
            webhooks: Vec::new(),
            history: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8640".into(),
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data"),
            durability: DurabilityMode::Sync,
            flush_interval_ms: 50,
            snapshot_every: 1000,
            idempotency_ttl_seconds: 7 * 24 * 3600,
            journal_queue_max: 65_536,
            group_commit_max: 8192,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            mailbox_max: 1024,
            sweep_interval_ms: 1000,
            idle_timeout_ms: 300_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            account_id_bytes_max: 64,
            idempotency_key_bytes_max: 128,
            quantity_max: 10_000,
            body_bytes_max: 64 * 1024,
            // 1000 items at every limit are ~1.5 MB (`Limits::batch_item_bytes_max`); 4 MiB
            // leaves room for their strings written with escapes.
            batch_body_bytes_max: 4 * 1024 * 1024,
            batch_items_max: 1000,
            metadata_keys_max: 16,
            metadata_bytes_max: 1024,
            reason_bytes_max: 1024,
            wait_seconds_max: 60,
            hold_ttl_seconds_max: 7 * 24 * 3600,
            holds_open_max: 1000,
            ledger_page_default: 50,
            ledger_page_max: 500,
            events_page_default: 100,
            events_page_max: 1000,
            list_page_default: 100,
            list_page_max: 1000,
            usage_periods_max: 1000,
        }
    }
}

impl Default for CreditsConfig {
    fn default() -> Self {
        CreditsConfig {
            free_tier: 50,
            thresholds: vec![25, 10, 0],
            hold_ttl_seconds: 900,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// A configuration error, naming the key it is about.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// Scopes a token may carry.
pub const SCOPES: [&str; 4] = ["read", "debit", "billing", "admin"];

/// The largest price, allocation or pack: keeps `price × quantity_max` and a lifetime of
/// resets far from u64's limit.
const AMOUNT_MAX: u64 = 1_000_000_000;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid value for `{key}`: {why}")));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return bad("server.listen", "expected IP:PORT, like 127.0.0.1:8640");
        }
        for (key, v) in [
            ("server.connections_max", self.server.connections_max as u64),
            (
                "server.body_read_timeout_ms",
                self.server.body_read_timeout_ms,
            ),
            ("storage.flush_interval_ms", self.storage.flush_interval_ms),
            ("storage.snapshot_every", self.storage.snapshot_every),
            (
                "storage.idempotency_ttl_seconds",
                self.storage.idempotency_ttl_seconds,
            ),
            (
                "storage.journal_queue_max",
                self.storage.journal_queue_max as u64,
            ),
            (
                "storage.group_commit_max",
                self.storage.group_commit_max as u64,
            ),
            ("actors.mailbox_max", self.actors.mailbox_max as u64),
            ("actors.sweep_interval_ms", self.actors.sweep_interval_ms),
            ("actors.idle_timeout_ms", self.actors.idle_timeout_ms),
            (
                "limits.account_id_bytes_max",
                self.limits.account_id_bytes_max as u64,
            ),
            (
                "limits.idempotency_key_bytes_max",
                self.limits.idempotency_key_bytes_max as u64,
            ),
            ("limits.quantity_max", self.limits.quantity_max as u64),
            ("limits.body_bytes_max", self.limits.body_bytes_max as u64),
            (
                "limits.batch_body_bytes_max",
                self.limits.batch_body_bytes_max as u64,
            ),
            ("limits.batch_items_max", self.limits.batch_items_max as u64),
            (
                "limits.hold_ttl_seconds_max",
                self.limits.hold_ttl_seconds_max,
            ),
            ("limits.holds_open_max", self.limits.holds_open_max as u64),
            (
                "limits.ledger_page_default",
                self.limits.ledger_page_default as u64,
            ),
            (
                "limits.events_page_default",
                self.limits.events_page_default as u64,
            ),
            (
                "limits.list_page_default",
                self.limits.list_page_default as u64,
            ),
            (
                "limits.usage_periods_max",
                self.limits.usage_periods_max as u64,
            ),
            ("credits.hold_ttl_seconds", self.credits.hold_ttl_seconds),
            ("history.prune_interval_ms", self.history.prune_interval_ms),
            ("history.prune_events_max", self.history.prune_events_max),
        ] {
            if v == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        let op_name_max = self.operations.keys().map(String::len).max().unwrap_or(0);
        let batch_needs =
            self.limits.batch_items_max * self.limits.batch_item_bytes_max(op_name_max) + 16;
        if self.limits.batch_body_bytes_max < batch_needs {
            return bad(
                "limits.batch_body_bytes_max",
                &format!(
                    "must fit limits.batch_items_max items at every limit: at least {batch_needs} bytes"
                ),
            );
        }
        match crate::history::Retention::parse(&self.history.retention) {
            Err(why) => return bad("history.retention", &why),
            // A key must not outlive the event it answers with.
            Ok(r) if r.min_millis() < self.storage.idempotency_ttl_seconds as i64 * 1000 => {
                return bad(
                    "history.retention",
                    "shorter than storage.idempotency_ttl_seconds",
                )
            }
            Ok(_) => {}
        }
        for (default_key, default, max_key, max) in [
            (
                "limits.ledger_page_default",
                self.limits.ledger_page_default,
                "limits.ledger_page_max",
                self.limits.ledger_page_max,
            ),
            (
                "limits.events_page_default",
                self.limits.events_page_default,
                "limits.events_page_max",
                self.limits.events_page_max,
            ),
            (
                "limits.list_page_default",
                self.limits.list_page_default,
                "limits.list_page_max",
                self.limits.list_page_max,
            ),
        ] {
            if default > max {
                return bad(default_key, &format!("larger than {max_key}"));
            }
        }
        if self.limits.wait_seconds_max > 3600 {
            return bad("limits.wait_seconds_max", "at most 3600");
        }
        if self.credits.hold_ttl_seconds > self.limits.hold_ttl_seconds_max {
            return bad(
                "credits.hold_ttl_seconds",
                "larger than limits.hold_ttl_seconds_max",
            );
        }
        if self.credits.free_tier > AMOUNT_MAX {
            return bad("credits.free_tier", "at most 1000000000");
        }
        for t in &self.credits.thresholds {
            if *t > 100 {
                return bad("credits.thresholds", "every threshold must be in 0..=100");
            }
        }
        if self.operations.is_empty() {
            return bad("operations", "at least one operation is needed");
        }
        for (name, price) in &self.operations {
            if *price == 0 || *price > AMOUNT_MAX {
                return bad(
                    &format!("operations.{name}"),
                    "a price must be in 1..=1000000000",
                );
            }
        }
        if !self.plans.contains_key("free") {
            return bad(
                "plans.free",
                "the `free` plan must exist (cancel moves accounts to it)",
            );
        }
        for (name, alloc) in &self.plans {
            if *alloc > AMOUNT_MAX {
                return bad(
                    &format!("plans.{name}"),
                    "an allocation must be at most 1000000000",
                );
            }
        }
        for (name, pack) in &self.packs {
            if pack.credits == 0 || pack.credits > AMOUNT_MAX {
                return bad(
                    &format!("packs.{name}.credits"),
                    "must be in 1..=1000000000",
                );
            }
        }
        for (name, table) in [("operations", &self.operations), ("plans", &self.plans)] {
            for key in table.keys() {
                if !valid_name(key) {
                    return bad(&format!("{name}.{key}"), "names are 1-64 of [a-z0-9_]");
                }
            }
        }
        for key in self.packs.keys() {
            if !valid_name(key) {
                return bad(&format!("packs.{key}"), "names are 1-64 of [a-z0-9_]");
            }
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return bad("log.format", "expected \"human\" or \"json\"");
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
                return bad(
                    &format!("auth.tokens[{i}].sha256"),
                    "expected 64 hex digits (creditsd hash-token)",
                );
            }
            for s in &t.scopes {
                if !SCOPES.contains(&s.as_str()) {
                    return bad(
                        &format!("auth.tokens[{i}].scopes"),
                        "scopes are read, debit, billing, admin",
                    );
                }
            }
        }
        self.feed.validate()?;
        crate::webhooks::validate(&self.webhooks)
    }

    pub fn pricing(&self) -> Pricing {
        let mut thresholds = self.credits.thresholds.clone();
        thresholds.sort_unstable_by(|a, b| b.cmp(a));
        thresholds.dedup();
        Pricing {
            operations: self
                .operations
                .iter()
                .map(|(k, v)| (k.clone(), Credits(*v)))
                .collect(),
            plans: self
                .plans
                .iter()
                .map(|(k, v)| (k.clone(), Credits(*v)))
                .collect(),
            packs: self
                .packs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Pack {
                            credits: Credits(v.credits),
                            price_cents: v.price_cents,
                        },
                    )
                })
                .collect(),
            free_tier: Credits(self.credits.free_tier),
            thresholds,
            holds_open_max: self.limits.holds_open_max,
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_spec_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.pricing().price("video_generation"), Some(Credits(8)));
        assert_eq!(c.pricing().thresholds, vec![25, 10, 0]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[operations]\nface_generation = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("operations.face_generation"), "{e}");
        let e = Config::parse("[server]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = Config::parse("[storage]\nsnapshot_evry = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("snapshot_evry"), "{e}");
        let e = Config::parse("[credits]\nthresholds = [25, 101]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credits.thresholds"), "{e}");
        let e = Config::parse("[plans]\nstarter = 50\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plans.free"), "{e}");
        let e = Config::parse("[storage]\ndurability = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("durability"), "{e}");
    }

    #[test]
    fn the_shipped_config_toml_is_valid_and_matches_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let c = Config::parse(&text).unwrap();
        let d = Config::default();
        assert_eq!(c.operations, d.operations);
        assert_eq!(c.plans, d.plans);
        assert_eq!(c.storage.path, d.storage.path);
        assert_eq!(c.server.listen, d.server.listen);
    }
}
