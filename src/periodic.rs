//! Background passes over the store (feed retention, history retention, expired
//! idempotency keys): one loop for all of them.

use std::time::Duration;

use crate::store::StorageError;

/// Runs `pass` on a blocking thread every `every`, forever. What a pass reports
/// (`Some(line)`) is logged after `what` ("pruned history: removed ..."); a storage error
/// stops the process (fail-stop); a pass that panics is logged and the next one runs.
pub async fn every<F>(every: Duration, what: &'static str, pass: F)
where
    F: Fn() -> Result<Option<String>, StorageError> + Clone + Send + 'static,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::task::spawn_blocking(pass.clone()).await {
            Ok(Ok(Some(line))) => tracing::info!("{what}: {line}"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => crate::fail_stop(&format!("{what}: {e}")),
            Err(e) => tracing::error!(error = %e, "{what}: the pass failed"),
        }
    }
}
