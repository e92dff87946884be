//! Retention of the durable notification feed (`F‖id` entries): the `[feed]` config and
//! the background task that prunes the oldest entries. It deletes feed entries only;
//! the accounts' event logs (the ledger) are never touched.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::actor::Clock;
use crate::config::ConfigError;
use crate::store::Store;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Entries kept at most; the oldest beyond it are pruned.
    pub retention_events_max: u64,
    /// Entries older than this are pruned; 0 keeps them whatever their age.
    pub retention_seconds: u64,
    /// How often pruning runs.
    pub prune_interval_ms: u64,
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

impl FeedConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retention_events_max == 0 {
            return Err(ConfigError(
                "invalid value for `feed.retention_events_max`: must be greater than 0".into(),
            ));
        }
        if self.prune_interval_ms == 0 {
            return Err(ConfigError(
                "invalid value for `feed.prune_interval_ms`: must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Prunes the feed every `prune_interval_ms`, forever. A consumer whose cursor is older
/// than what is kept continues from the oldest entry kept (webhooks log how many events
/// they missed).
pub async fn prune(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: FeedConfig) {
    let mut tick = tokio::time::interval(Duration::from_millis(config.prune_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let below = store
            .feed_next_id()
            .saturating_sub(config.retention_events_max);
        let cutoff = match config.retention_seconds {
            0 => crate::domain::Ts(i64::MIN),
            s => clock
                .now()
                .plus_millis(-(s.min(i64::MAX as u64 / 1000) as i64 * 1000)),
        };
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.prune_feed(below, cutoff)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "pruned old feed entries"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => crate::fail_stop(&format!("pruning the feed: {e}")),
            Err(e) => tracing::error!(error = %e, "feed pruning task failed"),
        }
    }
}
