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
    let every = Duration::from_millis(config.prune_interval_ms);
    crate::periodic::every(every, "pruned the feed", move || {
        let below = store
            .feed_next_id()
            .saturating_sub(config.retention_events_max);
        let cutoff = match config.retention_seconds {
            0 => crate::domain::Ts(i64::MIN),
            s => clock
                .now()
                .plus_millis(-(s.min(i64::MAX as u64 / 1000) as i64 * 1000)),
        };
        let n = store.prune_feed(below, cutoff)?;
        Ok((n > 0).then(|| format!("removed {n} old feed entries")))
    })
    .await
}
