//! Retention of the durable notification feed (`F‖id` entries): the background task that
//! prunes the oldest entries, as `[feed]` (`config::FeedConfig`) says. It deletes feed entries only;
//! the accounts' event logs (the ledger) are never touched.

use std::sync::Arc;
use std::time::Duration;

use crate::actor::Clock;
use crate::config::FeedConfig;
use crate::store::Store;

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
