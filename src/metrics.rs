//! Metric names in one place, and the helpers that move them with the books. Labels are
//! bounded sets (operation, plan, bucket, pack, result, route): never an account id.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{Command, Event, EventBody};

pub const CREDITS_DEBITED_TOTAL: &str = "creditsd_credits_debited_total";
pub const CREDITS_GRANTED_TOTAL: &str = "creditsd_credits_granted_total";
pub const CREDITS_EXPIRED_TOTAL: &str = "creditsd_credits_expired_total";
pub const CREDITS_OUTSTANDING: &str = "creditsd_credits_outstanding";
pub const DEBITS_TOTAL: &str = "creditsd_debits_total";
pub const REQUESTS_TOTAL: &str = "creditsd_mutations_total";
pub const REVENUE_CENTS_TOTAL: &str = "creditsd_revenue_cents_total";
pub const ACCOUNTS_ACTIVE: &str = "creditsd_accounts_active";
pub const HTTP_REQUEST_SECONDS: &str = "creditsd_http_request_duration_seconds";
pub const GROUP_COMMIT_SIZE: &str = "creditsd_group_commit_size";
pub const FSYNC_SECONDS: &str = "creditsd_fsync_duration_seconds";
pub const SNAPSHOTS_TOTAL: &str = "creditsd_snapshots_total";
pub const ACTIVATION_SECONDS: &str = "creditsd_account_activation_duration_seconds";
pub const RECOVERY_SECONDS: &str = "creditsd_recovery_duration_seconds";
pub const MAILBOX_REJECTIONS_TOTAL: &str = "creditsd_mailbox_rejections_total";
/// Webhook attempts by result: `delivered`, `failed` (will retry), `given_up`.
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "creditsd_webhook_deliveries_total";

/// Installs the global recorder and answers the handle `/metrics` renders from.
pub fn install() -> PrometheusHandle {
    let latency = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 8192.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .expect("non-empty buckets")
        .set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_SIZE.into()), &sizes)
        .expect("non-empty buckets");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // A second install (tests in one process) keeps the first recorder; the handle still renders.
    let _ = metrics::set_global_recorder(recorder);
    handle
}

fn outstanding(bucket: &'static str, delta: i128) {
    if delta != 0 {
        metrics::gauge!(CREDITS_OUTSTANDING, "bucket" => bucket).increment(delta as f64);
    }
}

fn granted(bucket: &'static str, credits: u64) {
    if credits > 0 {
        metrics::counter!(CREDITS_GRANTED_TOTAL, "bucket" => bucket).increment(credits);
        outstanding(bucket, credits as i128);
    }
}

fn buckets_delta(b: &crate::domain::Buckets, sign: i128) {
    outstanding("monthly", sign * b.monthly.get() as i128);
    outstanding("free", sign * b.free.get() as i128);
    outstanding("packs", sign * b.packs.get() as i128);
}

/// Moves the book-keeping metrics by what one recorded event did.
pub fn record_event(ev: &Event, plan: &str) {
    match &ev.body {
        EventBody::Created { free, monthly, .. } => {
            granted("free", free.get());
            granted("monthly", monthly.get());
        }
        EventBody::Debited {
            operation,
            credits,
            taken,
            ..
        } => {
            metrics::counter!(CREDITS_DEBITED_TOTAL, "operation" => operation.clone(), "plan" => plan.to_string()).increment(credits.get());
            buckets_delta(taken, -1);
        }
        EventBody::PeriodReset {
            expired,
            allocation,
            ..
        } => {
            if expired.get() > 0 {
                metrics::counter!(CREDITS_EXPIRED_TOTAL, "bucket" => "monthly")
                    .increment(expired.get());
            }
            outstanding("monthly", -(expired.get() as i128));
            granted("monthly", allocation.get());
        }
        EventBody::PlanChanged { granted: g, .. } => granted("monthly", g.get()),
        EventBody::Purchased {
            pack,
            credits,
            price_cents,
            ..
        } => {
            granted("packs", credits.get());
            metrics::counter!(REVENUE_CENTS_TOTAL, "pack" => pack.clone()).increment(*price_cents);
        }
        EventBody::Granted {
            bucket, credits, ..
        } => granted(bucket.name(), credits.get()),
        EventBody::HoldPlaced { credits, taken, .. } => {
            buckets_delta(taken, -1);
            outstanding("held", credits.get() as i128);
        }
        EventBody::HoldCaptured {
            spent,
            returned,
            expired,
            ..
        } => {
            let held = spent.total().get() + returned.total().get() + expired.get();
            outstanding("held", -(held as i128));
            buckets_delta(returned, 1);
            metrics::counter!(CREDITS_DEBITED_TOTAL, "operation" => "hold_capture", "plan" => plan.to_string()).increment(spent.total().get());
            if expired.get() > 0 {
                metrics::counter!(CREDITS_EXPIRED_TOTAL, "bucket" => "monthly")
                    .increment(expired.get());
            }
        }
        EventBody::HoldReleased {
            returned, expired, ..
        } => {
            outstanding("held", -((returned.total().get() + expired.get()) as i128));
            buckets_delta(returned, 1);
            if expired.get() > 0 {
                metrics::counter!(CREDITS_EXPIRED_TOTAL, "bucket" => "monthly")
                    .increment(expired.get());
            }
        }
    }
}

/// Counts a debit-like request by result (`ok`, `insufficient`, `duplicate`, `invalid`,
/// `conflict`); other mutations count under `creditsd_mutations_total`.
pub fn count_result(cmd: &Command, result: &'static str) {
    match cmd {
        Command::Debit { .. } => metrics::counter!(DEBITS_TOTAL, "result" => result).increment(1),
        Command::PlaceHold { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "hold", "result" => result).increment(1)
        }
        Command::Capture { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "capture", "result" => result).increment(1)
        }
        Command::Release { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "release", "result" => result).increment(1)
        }
        Command::ChangePlan { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "plan", "result" => result).increment(1)
        }
        Command::Purchase { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "purchase", "result" => result).increment(1)
        }
        Command::Grant { .. } => {
            metrics::counter!(REQUESTS_TOTAL, "kind" => "grant", "result" => result).increment(1)
        }
    }
}
