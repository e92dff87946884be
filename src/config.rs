//! The one typed configuration, loaded from `config.toml`: every section, each field with
//! its unit (ms, seconds, bytes, count, credits). Every key has a default (the values of
//! `SPEC.md`), unknown keys are refused, and `validate` names the bad key. It imports
//! only the domain: the modules that run what it configures import it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper::Uri;
use serde::Deserialize;

use crate::domain::time::add_months;
use crate::domain::{Credits, Notice, Pack, Pricing, Ts};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub actors: ActorConfig,
    pub limits: Limits,
    pub credits: CreditsConfig,
    pub alerts: AlertsConfig,
    /// `[operations]`: the price of each operation (credits).
    pub operations: BTreeMap<String, u64>,
    /// `[plans]`: the monthly allocation of each plan (credits).
    pub plans: BTreeMap<String, u64>,
    /// `[packs.NAME]`: the credit packs for sale.
    pub packs: BTreeMap<String, PackConfig>,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub feed: FeedConfig,
    /// `[[webhooks]]`: where the durable feed is delivered.
    pub webhooks: Vec<WebhookConfig>,
    pub history: HistoryConfig,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to serve on (`IP:PORT`); without tokens only loopback is allowed.
    pub listen: String,
    /// Connections served at once (count); more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// A client that has not sent its request head within this time is dropped (ms).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive whole within this time, or the answer is 408 (ms).
    pub body_read_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing connections (ms).
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    Sync,
    Periodic,
}

/// `[storage]`: sled, durability, snapshots, idempotency keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the sled database (created if missing).
    pub path: PathBuf,
    /// `sync`: acknowledge after the group commit's fsync; `periodic`: at once.
    pub durability: DurabilityMode,
    /// In `periodic` mode, how often the journal fsyncs (ms).
    pub flush_interval_ms: u64,
    /// An account is snapshotted every this many events (count).
    pub snapshot_every: u64,
    /// How long an idempotency key is remembered (seconds).
    pub idempotency_ttl_seconds: u64,
    /// How often keys older than `idempotency_ttl_seconds` are deleted (ms).
    pub idempotency_prune_interval_ms: u64,
    /// Memory for the filter of the idempotency keys on disk, which answers a fresh key's
    /// lookup without reading sled (bytes; 0 turns it off, and every lookup reads sled).
    /// The default holds 10M keys within the TTL at under 1 % false positives
    /// (`store::idem_filter`; docs/durability.md).
    pub idempotency_filter_bytes: u64,
    /// Replies waiting for the group commit (count); a full queue slows actors, then
    /// fills mailboxes.
    pub journal_queue_max: usize,
    /// Replies released by one fsync at most (count).
    pub group_commit_max: usize,
    /// In `sync` mode, how long a group commit waits for more mutations to join it when
    /// fewer than `group_commit_max` are waiting (µs; 0: none). Bigger groups write fewer
    /// partial log pages and spend less CPU in fsync, at that much latency.
    pub group_commit_delay_us: u64,
    /// sled's page cache (bytes).
    pub cache_bytes: u64,
    /// The overlay's active layer is handed to the checkpointer when it holds this many
    /// keys (count)...
    pub checkpoint_keys: usize,
    /// ...or when its first write is this old (ms).
    pub checkpoint_after_ms: u64,
    /// Layers waiting for the checkpointer, at most (count); past them, and past
    /// `checkpoint_active_keys_max` keys in the active layer, group commits wait for the
    /// checkpointer (back-pressure).
    pub checkpoint_layers_max: usize,
    /// Keys the active layer may hold while every frozen layer waits (count).
    pub checkpoint_active_keys_max: usize,
    /// Write-ahead log segments (`<path>/log/*.seg`) are preallocated to this size, and a
    /// new one starts when a group commit does not fit (bytes).
    pub segment_bytes: u64,
}

/// `[actors]`: one task per account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorConfig {
    /// Messages waiting for one account (count); a full mailbox answers 429 with
    /// Retry-After.
    pub mailbox_max: usize,
    /// Debits and holds one account keeps parked (`wait_seconds`) until credits arrive
    /// (count); one more is answered 429.
    pub parked_max: usize,
    /// How often idle accounts are swept for due resets and hold expiries (ms).
    pub sweep_interval_ms: u64,
    /// An account that handled nothing for this long is snapshotted and its task stops
    /// (passivation); the next message reactivates it from the snapshot (ms).
    pub idle_timeout_ms: u64,
}

/// `[limits]`: the bounds of requests and of paged answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Length of an account id (bytes).
    pub account_id_bytes_max: usize,
    /// Length of an idempotency key or a `payment_ref` (bytes).
    pub idempotency_key_bytes_max: usize,
    /// `quantity` of a debit or a hold (count).
    pub quantity_max: u32,
    /// A request body, but for the batch endpoint's (bytes).
    pub body_bytes_max: usize,
    /// The body of `POST /v1/debits` (bytes).
    pub batch_body_bytes_max: usize,
    /// Items of one batch (count).
    pub batch_items_max: usize,
    /// Members of a debit's `metadata` (count).
    pub metadata_keys_max: usize,
    /// A debit's `metadata`, keys and values together (bytes).
    pub metadata_bytes_max: usize,
    /// A grant's `reason` (bytes).
    pub reason_bytes_max: usize,
    /// The longest `wait_seconds` a debit, a hold or a feed poll may ask for (seconds).
    pub wait_seconds_max: u64,
    /// The longest `ttl_seconds` of a hold (seconds).
    pub hold_ttl_seconds_max: u64,
    /// Open holds of one account (count).
    pub holds_open_max: usize,
    /// Open promo blocks of one account (count).
    pub promo_blocks_max: usize,
    /// Members of one account (count).
    pub members_max: usize,
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
        let fixed = r#"{"account":"","operation":"","quantity":,"idempotency_key":"","metadata":{},"member":""},"#;
        fixed.len()
            + 2 * self.account_id_bytes_max
            + operation_name_max
            + self.quantity_max.to_string().len()
            + self.idempotency_key_bytes_max
            + self.metadata_bytes_max
            + self.metadata_keys_max * r#""":"","#.len()
    }
}

/// `[credits]`: the free tier, alerts and holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// Granted once into the `free` bucket when an account is created (credits).
    pub free_tier: u64,
    /// Low-balance alert thresholds (percent remaining, 0-100; 0 is exhaustion).
    pub thresholds: Vec<u8>,
    /// A hold's time to live when the request gives none (seconds).
    pub hold_ttl_seconds: u64,
}

/// `[alerts]`: the forecast alert (`balance.forecast_low`) for accounts that set none.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Warn when the last 24 hours' burn rate runs the account out within this many hours
    /// (1-720; 0 turns the alert off).
    pub forecast_hours: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { forecast_hours: 24 }
    }
}

/// `[packs.NAME]`: one credit pack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    /// Added to the `packs` bucket (credits).
    pub credits: u64,
    /// Recorded with the purchase (cents).
    pub price_cents: u64,
}

/// `[auth]`: bearer tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`; none: authentication is off and only loopback is served.
    pub tokens: Vec<TokenConfig>,
}

/// `[[auth.tokens]]`: one token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Names the token in logs and 403 answers.
    pub name: String,
    /// Hex SHA-256 of the bearer token (`creditsd hash-token`; 64 hex digits).
    pub sha256: String,
    /// What the token may do: names of `Scope::ALL`.
    pub scopes: Vec<String>,
}

/// What a token may do. `admin` implies every other scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Debit,
    Billing,
    Admin,
}

impl Scope {
    /// Every scope: the one list config validation, the docs and auth go by.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Debit, Scope::Billing, Scope::Admin];

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Debit => "debit",
            Scope::Billing => "billing",
            Scope::Admin => "admin",
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter (`info`, `creditsd=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

/// `[feed]`: retention of the durable notification feed (`F‖id` entries).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Entries kept at most; the oldest beyond it are pruned (count).
    pub retention_events_max: u64,
    /// Entries older than this are pruned; 0 keeps them whatever their age (seconds).
    pub retention_seconds: u64,
    /// How often pruning runs (ms).
    pub prune_interval_ms: u64,
}

/// `[[webhooks]]`: one endpoint the durable feed is delivered to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the webhook's cursor in storage (1-256 bytes); defaults to the URL.
    /// Changing it (or the URL when there is no name) starts a new cursor at the end of
    /// the feed.
    pub name: Option<String>,
    /// `http://host:port/path`. https is not spoken (docs/operations.md).
    pub url: String,
    /// Key of the HMAC-SHA256 in `X-Creditsd-Signature`.
    pub secret: String,
    /// Event types to deliver (`balance.low`, ...); omitted: every type.
    pub events: Option<Vec<String>>,
    /// One attempt's time limit (ms).
    #[serde(default = "webhook_defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Wait after the first failed attempt; it doubles after each failure... (ms)
    #[serde(default = "webhook_defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// ...up to this (ms).
    #[serde(default = "webhook_defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Attempts per event before it is given up (logged and counted) and delivery goes
    /// on with the next (count); 0 (the default) never gives up: at-least-once delivery.
    #[serde(default)]
    pub attempts_max: u32,
}

mod webhook_defaults {
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn backoff_initial_ms() -> u64 {
        500
    }
    pub fn backoff_max_ms() -> u64 {
        60_000
    }
}

impl WebhookConfig {
    /// The name of its cursor: `name`, else the URL.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }
}

/// `[history]`: retention of the accounts' event logs (the ledger).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How long the ledger keeps events: `"13 months"`, `"90 days"`, `"12 hours"`,
    /// `"30 seconds"` (a number and a unit; months are calendar months). See `Retention`.
    pub retention: String,
    /// How often the pruner runs (ms).
    pub prune_interval_ms: u64,
    /// Events deleted per account per pass, at most, in one commit (count).
    pub prune_events_max: u64,
}

/// A parsed retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    Months(i64),
    Millis(i64),
}

impl Retention {
    pub fn parse(s: &str) -> Result<Retention, String> {
        let mut parts = s.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected a number and a unit, like \"13 months\"".into());
        };
        let n: i64 = match n.parse() {
            Ok(n) if (1..=1200).contains(&n) => n,
            _ => return Err("the number must be an integer from 1 to 1200".into()),
        };
        let unit_ms = match unit.trim_end_matches('s') {
            "month" => return Ok(Retention::Months(n)),
            "day" => 86_400_000,
            "hour" => 3_600_000,
            "minute" => 60_000,
            "second" => 1_000,
            _ => return Err("the unit is one of months, days, hours, minutes, seconds".into()),
        };
        Ok(Retention::Millis(n * unit_ms))
    }

    /// Events at or after this instant are kept.
    pub fn cutoff(self, now: Ts) -> Ts {
        match self {
            Retention::Months(n) => add_months(now, -n),
            Retention::Millis(ms) => now.plus_millis(-ms),
        }
    }

    /// The shortest this retention can be, for comparing with other durations: for
    /// months, the shortest `now - cutoff(now)` over every day of a whole 400-year
    /// Gregorian cycle (so leap days, short months and century years are all met):
    /// 28 days for "1 month", 393 days for "13 months", not n × 28 days.
    pub fn min_millis(self) -> i64 {
        const DAY_MS: i64 = 86_400_000;
        const CYCLE_DAYS: i64 = 146_097;
        // 2000-01-01: a cycle from there meets every calendar case once.
        const START: Ts = Ts(946_684_800_000);
        match self {
            Retention::Months(n) => (0..CYCLE_DAYS)
                .map(|d| {
                    let now = START.plus_millis(d * DAY_MS);
                    now.millis() - add_months(now, -n).millis()
                })
                .min()
                .unwrap_or(0),
            Retention::Millis(ms) => ms,
        }
    }
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
            alerts: AlertsConfig::default(),
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
            feed: FeedConfig::default(),
            webhooks: Vec::new(),
            history: HistoryConfig::default(),
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
            idempotency_prune_interval_ms: 3_600_000,
            idempotency_filter_bytes: 20 << 20,
            journal_queue_max: 65_536,
            group_commit_max: 8192,
            group_commit_delay_us: 0,
            cache_bytes: 256 * 1024 * 1024,
            checkpoint_keys: 200_000,
            checkpoint_after_ms: 4000,
            checkpoint_layers_max: 2,
            checkpoint_active_keys_max: 2_000_000,
            segment_bytes: 64 << 20,
        }
    }
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            mailbox_max: 1024,
            parked_max: 1024,
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
            promo_blocks_max: 100,
            members_max: 1000,
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

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            retention_events_max: 1_000_000,
            retention_seconds: 30 * 24 * 3600,
            prune_interval_ms: 60_000,
        }
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: "13 months".into(),
            prune_interval_ms: 3_600_000,
            prune_events_max: 10_000,
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

/// The largest price, allocation or pack: keeps `price × quantity_max` and a lifetime of
/// resets far from u64's limit.
const AMOUNT_MAX: u64 = 1_000_000_000;

/// The bounds of `storage.idempotency_filter_bytes` when it is not 0 (bytes): a few words
/// per generation at least, 64 GiB at most.
pub const IDEMPOTENCY_FILTER_BYTES: (u64, u64) = (4096, 1 << 36);

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
            (
                "storage.checkpoint_keys",
                self.storage.checkpoint_keys as u64,
            ),
            (
                "storage.checkpoint_after_ms",
                self.storage.checkpoint_after_ms,
            ),
            (
                "storage.checkpoint_layers_max",
                self.storage.checkpoint_layers_max as u64,
            ),
            (
                "storage.checkpoint_active_keys_max",
                self.storage.checkpoint_active_keys_max as u64,
            ),
            (
                "storage.idempotency_prune_interval_ms",
                self.storage.idempotency_prune_interval_ms,
            ),
            ("storage.segment_bytes", self.storage.segment_bytes),
            ("actors.mailbox_max", self.actors.mailbox_max as u64),
            ("actors.parked_max", self.actors.parked_max as u64),
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
                "limits.promo_blocks_max",
                self.limits.promo_blocks_max as u64,
            ),
            ("limits.members_max", self.limits.members_max as u64),
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
            ("feed.retention_events_max", self.feed.retention_events_max),
            ("feed.prune_interval_ms", self.feed.prune_interval_ms),
        ] {
            if v == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.storage.group_commit_delay_us > 10_000 {
            return bad(
                "storage.group_commit_delay_us",
                "at most 10000 (10 ms): it adds to every durable reply",
            );
        }
        let filter = self.storage.idempotency_filter_bytes;
        let (min, max) = IDEMPOTENCY_FILTER_BYTES;
        if filter != 0 && !(min..=max).contains(&filter) {
            return bad(
                "storage.idempotency_filter_bytes",
                &format!("must be 0 (off) or between {min} and {max} bytes"),
            );
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
        match Retention::parse(&self.history.retention) {
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
        if self.alerts.forecast_hours > 720 {
            return bad(
                "alerts.forecast_hours",
                "the forecast horizon is 1 to 720 hours (0: off)",
            );
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
                if Scope::parse(s).is_none() {
                    let names: Vec<&str> = Scope::ALL.iter().map(|s| s.name()).collect();
                    return bad(
                        &format!("auth.tokens[{i}].scopes"),
                        &format!("scopes are {}", names.join(", ")),
                    );
                }
            }
        }
        validate_webhooks(&self.webhooks)
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
            promo_blocks_max: self.limits.promo_blocks_max,
            members_max: self.limits.members_max,
            forecast_hours: (self.alerts.forecast_hours > 0).then_some(self.alerts.forecast_hours),
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }
}

/// Checks every `[[webhooks]]` entry; the error names the key.
fn validate_webhooks(hooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    let bad = |i: usize, key: &str, why: &str| {
        Err(ConfigError(format!(
            "invalid value for `webhooks[{i}].{key}`: {why}"
        )))
    };
    for (i, h) in hooks.iter().enumerate() {
        match h.url.parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {}
            Ok(u) if u.scheme_str() == Some("https") => {
                return bad(
                    i,
                    "url",
                    "https is not supported: creditsd sends webhooks over plain http; \
                     deliver to a local TLS-terminating proxy (or read /v1/events) instead",
                )
            }
            _ => return bad(i, "url", "expected an absolute http:// URL"),
        }
        if h.secret.is_empty() {
            return bad(i, "secret", "must not be empty");
        }
        if let Some(events) = &h.events {
            if events.is_empty() {
                return bad(i, "events", "must not be empty (omit it for every type)");
            }
            for e in events {
                if !Notice::TYPES.contains(&e.as_str()) {
                    return bad(
                        i,
                        "events",
                        &format!("unknown type {e:?}; expected {}", Notice::TYPES.join(", ")),
                    );
                }
            }
        }
        if h.name().is_empty() || h.name().len() > 256 {
            return bad(i, "name", "1 to 256 bytes");
        }
        for (key, v) in [
            ("timeout_ms", h.timeout_ms),
            ("backoff_initial_ms", h.backoff_initial_ms),
            ("backoff_max_ms", h.backoff_max_ms),
        ] {
            if v == 0 {
                return bad(i, key, "must be greater than 0");
            }
        }
        if h.backoff_max_ms < h.backoff_initial_ms {
            return bad(i, "backoff_max_ms", "smaller than backoff_initial_ms");
        }
        if hooks[..i].iter().any(|o| o.name() == h.name()) {
            return bad(
                i,
                "name",
                "two webhooks share a cursor name; give each a distinct `name`",
            );
        }
    }
    Ok(())
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
        for (toml, key) in [
            (
                "[operations]\nface_generation = 0\n",
                "operations.face_generation",
            ),
            ("[server]\nlisten = \"nope\"\n", "server.listen"),
            ("[storage]\nsnapshot_evry = 3\n", "snapshot_evry"),
            ("[credits]\nthresholds = [25, 101]\n", "credits.thresholds"),
            ("[plans]\nstarter = 50\n", "plans.free"),
            ("[storage]\ndurability = \"sometimes\"\n", "durability"),
        ] {
            let e = Config::parse(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
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

    fn err(toml: &str) -> String {
        Config::parse(toml).unwrap_err().to_string()
    }

    #[test]
    fn config_refuses_https_unknown_types_and_shared_cursors() {
        let e = err("[[webhooks]]\nurl = \"https://example.test/h\"\nsecret = \"s\"\n");
        assert!(
            e.contains("webhooks[0].url") && e.contains("https is not supported"),
            "{e}"
        );
        let e = err("[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s\"\nevents = [\"balance.lo\"]\n");
        assert!(
            e.contains("webhooks[0].events") && e.contains("balance.lo"),
            "{e}"
        );
        let one = "[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s\"\n";
        let e = err(&format!("{one}{one}"));
        assert!(e.contains("webhooks[1].name"), "{e}");
        let e = err("[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"\"\n");
        assert!(e.contains("webhooks[0].secret"), "{e}");
        let c = Config::parse(&format!(
            "{one}events = [\"balance.low\", \"hold.expired\"]\n"
        ))
        .unwrap();
        assert_eq!(c.webhooks[0].name(), "http://127.0.0.1:9/h");
        assert_eq!(c.webhooks[0].attempts_max, 0);
    }

    #[test]
    fn retention_parses_units_and_refuses_nonsense() {
        assert_eq!(Retention::parse("13 months"), Ok(Retention::Months(13)));
        assert_eq!(Retention::parse("1 month"), Ok(Retention::Months(1)));
        let day = 86_400_000;
        assert_eq!(Retention::Months(1).min_millis(), 28 * day);
        assert_eq!(Retention::Months(12).min_millis(), 365 * day);
        assert_eq!(Retention::Months(13).min_millis(), 393 * day);
        assert_eq!(Retention::parse("2 seconds"), Ok(Retention::Millis(2_000)));
        assert_eq!(
            Retention::parse("90 days"),
            Ok(Retention::Millis(90 * 86_400_000))
        );
        for bad in [
            "",
            "13",
            "months",
            "0 days",
            "-1 days",
            "3 weeks",
            "1 day extra",
        ] {
            assert!(Retention::parse(bad).is_err(), "{bad:?}");
        }
        let now = Ts::parse_rfc3339("2027-03-31T00:00:00Z").unwrap();
        assert_eq!(
            Retention::Months(1).cutoff(now),
            Ts::parse_rfc3339("2027-02-28T00:00:00Z").unwrap()
        );
    }

    #[test]
    fn bounds_once_hard_coded_keep_their_defaults_and_are_checked() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        for c in [Config::default(), Config::parse(&text).unwrap()] {
            let l = &c.limits;
            assert_eq!((l.ledger_page_default, l.ledger_page_max), (50, 500));
            assert_eq!((l.events_page_default, l.events_page_max), (100, 1000));
            assert_eq!((l.list_page_default, l.list_page_max), (100, 1000));
            assert_eq!(l.usage_periods_max, 1000);
            assert_eq!(c.actors.parked_max, 1024);
            assert_eq!(c.storage.idempotency_prune_interval_ms, 3_600_000);
        }
        let e = err("[limits]\nledger_page_default = 501\n");
        assert!(e.contains("limits.ledger_page_default"), "{e}");
        let e = err("[actors]\nparked_max = 0\n");
        assert!(e.contains("actors.parked_max"), "{e}");
        let e = err("[storage]\nidempotency_prune_interval_ms = 0\n");
        assert!(e.contains("storage.idempotency_prune_interval_ms"), "{e}");
        for bad in ["1", "4095", "68719476737"] {
            let e = err(&format!("[storage]\nidempotency_filter_bytes = {bad}\n"));
            assert!(e.contains("storage.idempotency_filter_bytes"), "{e}");
        }
        for good in ["0", "4096", "68719476736"] {
            let c = Config::parse(&format!("[storage]\nidempotency_filter_bytes = {good}\n"));
            assert_eq!(
                c.unwrap().storage.idempotency_filter_bytes.to_string(),
                good
            );
        }
        let sha = "0".repeat(64);
        let e = err(&format!(
            "[[auth.tokens]]\nname = \"t\"\nsha256 = \"{sha}\"\nscopes = [\"root\"]\n"
        ));
        assert!(
            e.contains("auth.tokens[0].scopes") && e.contains("read, debit, billing, admin"),
            "{e}"
        );
    }
}
