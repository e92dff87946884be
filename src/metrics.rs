//! Metric names in one place, and the helpers that move them with the books. Labels are
//! bounded sets (operation, plan, bucket, pack, result, route): never an account id.
//! Each constant is named as its metric: the name without `creditsd_`, in upper case
//! (`DEBITS_TOTAL` is `creditsd_debits_total`), so one grep finds both. It imports only
//! the domain: the gauges of the whole books are handed to `refresh` as numbers.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{Bucket, Command, Event, EventBody};

pub const CREDITS_DEBITED_TOTAL: &str = "creditsd_credits_debited_total";
pub const CREDITS_GRANTED_TOTAL: &str = "creditsd_credits_granted_total";
pub const CREDITS_EXPIRED_TOTAL: &str = "creditsd_credits_expired_total";
pub const CREDITS_OUTSTANDING: &str = "creditsd_credits_outstanding";
pub const CREDITS_REFUNDED_TOTAL: &str = "creditsd_credits_refunded_total";
pub const MEMBER_CAP_REFUSALS_TOTAL: &str = "creditsd_member_cap_refusals_total";
pub const DEBITS_TOTAL: &str = "creditsd_debits_total";
pub const MUTATIONS_TOTAL: &str = "creditsd_mutations_total";
pub const REVENUE_CENTS_TOTAL: &str = "creditsd_revenue_cents_total";
pub const ACCOUNTS_ACTIVE: &str = "creditsd_accounts_active";
pub const ACCOUNT_PASSIVATIONS_TOTAL: &str = "creditsd_account_passivations_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "creditsd_http_request_duration_seconds";
pub const HTTP_RESPONSES_TOTAL: &str = "creditsd_http_responses_total";
pub const GROUP_COMMIT_SIZE: &str = "creditsd_group_commit_size";
pub const FSYNC_DURATION_SECONDS: &str = "creditsd_fsync_duration_seconds";
pub const SNAPSHOTS_TOTAL: &str = "creditsd_snapshots_total";
pub const ACCOUNT_ACTIVATION_DURATION_SECONDS: &str =
    "creditsd_account_activation_duration_seconds";
pub const RECOVERY_DURATION_SECONDS: &str = "creditsd_recovery_duration_seconds";
pub const MAILBOX_REJECTIONS_TOTAL: &str = "creditsd_mailbox_rejections_total";
/// Webhook attempts by result: `delivered`, `failed` (will retry), `given_up`.
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "creditsd_webhook_deliveries_total";
pub const SNAPSHOT_DURATION_SECONDS: &str = "creditsd_snapshot_duration_seconds";
/// How long the checkpointer took to write one frozen overlay layer into sled, and how
/// many keys it wrote (`store::overlay`).
pub const CHECKPOINT_DURATION_SECONDS: &str = "creditsd_checkpoint_duration_seconds";
pub const CHECKPOINT_KEYS_TOTAL: &str = "creditsd_checkpoint_keys_total";
/// Idempotency lookups by where they were answered: `overlay` (a key bound in the last
/// second or so), `filter` (a fresh key, no disk read), `sled` (the filter said maybe, or
/// is still being built at open); and the filter's memory (`store::idem_filter`).
pub const IDEMPOTENCY_LOOKUPS_TOTAL: &str = "creditsd_idempotency_lookups_total";
pub const IDEMPOTENCY_FILTER_BYTES: &str = "creditsd_idempotency_filter_bytes";
/// Merges of the idempotency index's blocks (`store::idem_index`).
pub const IDEMPOTENCY_MERGES_TOTAL: &str = "creditsd_idempotency_merges_total";
pub const ACCOUNTS: &str = "creditsd_accounts";
pub const ACCOUNTS_PAUSED: &str = "creditsd_accounts_paused";
pub const NOTICES_TOTAL: &str = "creditsd_notices_total";

/// How often gauges are refreshed and histograms upkept when nobody scrapes.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

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
    describe();
    handle
}

/// The HELP text and unit of every metric, as `/metrics` shows them.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CREDITS_DEBITED_TOTAL,
        "Credits spent, by operation and plan (debits and captured holds)."
    );
    describe_counter!(
        CREDITS_GRANTED_TOTAL,
        "Credits added, by bucket (free tier, allocations, upgrades, packs, grants)."
    );
    describe_counter!(CREDITS_EXPIRED_TOTAL, "Credits expired, by bucket: monthly (what was left at a reset), promo (what was left of a block at its expiry), hold (credits coming back from a hold to a monthly period or promo block that has ended), and monthly or promo for refunded credits whose source has ended.");
    describe_counter!(
        CREDITS_REFUNDED_TOTAL,
        "Credits refunded, by the bucket the refunded debit took them from."
    );
    describe_counter!(
        MEMBER_CAP_REFUSALS_TOTAL,
        "Debits and holds refused because they would take a member past its cap."
    );
    describe_gauge!(
        CREDITS_OUTSTANDING,
        "Credits held by all accounts now, by bucket (monthly, free, packs, held)."
    );
    describe_counter!(
        DEBITS_TOTAL,
        "Debit requests, by result (ok, duplicate, insufficient, conflict, invalid)."
    );
    describe_counter!(
        MUTATIONS_TOTAL,
        "Mutations other than debits, by kind and result."
    );
    describe_counter!(REVENUE_CENTS_TOTAL, "Pack revenue in cents, by pack.");
    describe_gauge!(ACCOUNTS_ACTIVE, "Accounts with a live actor in memory now.");
    describe_counter!(
        ACCOUNT_PASSIVATIONS_TOTAL,
        "Actors stopped after their idle timeout (snapshot written first)."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by route."
    );
    describe_counter!(
        HTTP_RESPONSES_TOTAL,
        "HTTP answers, by route and status code."
    );
    describe_histogram!(
        GROUP_COMMIT_SIZE,
        Unit::Count,
        "Replies released by one group commit."
    );
    describe_histogram!(
        FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one group commit's write, flush and fsync."
    );
    describe_counter!(SNAPSHOTS_TOTAL, "Account snapshots written.");
    describe_histogram!(
        ACCOUNT_ACTIVATION_DURATION_SECONDS,
        Unit::Seconds,
        "Time to activate an account (snapshot and log tail)."
    );
    describe_histogram!(
        RECOVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Time to open the store at start (write-ahead log records replayed)."
    );
    describe_counter!(
        MAILBOX_REJECTIONS_TOTAL,
        "Requests refused with 429 because an account's mailbox was full."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Webhook delivery attempts, by hook and result (delivered, failed, given_up)."
    );
    describe_histogram!(
        SNAPSHOT_DURATION_SECONDS,
        Unit::Seconds,
        "Time to write an account snapshot."
    );
    describe_histogram!(
        CHECKPOINT_DURATION_SECONDS,
        Unit::Seconds,
        "Time the checkpointer took to write one overlay layer into its keys."
    );
    describe_counter!(
        CHECKPOINT_KEYS_TOTAL,
        "Keys the checkpointer wrote from overlay layers."
    );
    describe_counter!(
        IDEMPOTENCY_LOOKUPS_TOTAL,
        "Idempotency key lookups, by where they were answered: overlay (bound moments ago), filter (fresh, no disk read), sled (the filter said maybe, or is being built)."
    );
    describe_gauge!(
        IDEMPOTENCY_FILTER_BYTES,
        "Memory of the idempotency filter's live generations (at most storage.idempotency_filter_bytes)."
    );
    describe_counter!(
        IDEMPOTENCY_MERGES_TOTAL,
        "Merges of the idempotency index's blocks (ten blocks of one slice and level into one of the next)."
    );
    describe_gauge!(ACCOUNTS, "Accounts in the store.");
    describe_gauge!(
        ACCOUNTS_PAUSED,
        "Accounts with nothing available (generation paused)."
    );
    describe_counter!(NOTICES_TOTAL, "Notices put on the feed, by type.");
}

fn granted(bucket: &'static str, credits: u64) {
    if credits > 0 {
        metrics::counter!(CREDITS_GRANTED_TOTAL, "bucket" => bucket).increment(credits);
    }
}

fn expired(bucket: &'static str, credits: u64) {
    if credits > 0 {
        metrics::counter!(CREDITS_EXPIRED_TOTAL, "bucket" => bucket).increment(credits);
    }
}

/// A refusal of a debit or hold because of a member's cap.
pub fn member_cap_refused() {
    metrics::counter!(MEMBER_CAP_REFUSALS_TOTAL).increment(1);
}

/// Sets the gauges that describe the whole books: the credits outstanding in each bucket
/// (`(bucket, credits)`, from the store's totals, kept on disk with every write, so right
/// after a restart for every account), the accounts, the paused ones, and the actors in
/// memory.
pub fn refresh(
    outstanding: &[(&'static str, i128)],
    accounts: i128,
    paused: i128,
    actors_in_memory: usize,
) {
    for (bucket, v) in outstanding {
        metrics::gauge!(CREDITS_OUTSTANDING, "bucket" => *bucket).set(*v as f64);
    }
    metrics::gauge!(ACCOUNTS).set(accounts as f64);
    metrics::gauge!(ACCOUNTS_PAUSED).set(paused as f64);
    metrics::gauge!(ACCOUNTS_ACTIVE).set(actors_in_memory as f64);
}

/// Moves the book-keeping metrics by what one recorded event did.
pub fn record_event(ev: &Event, plan: &str) {
    match &ev.body {
        EventBody::Created { free, monthly, .. } => {
            granted("free", free.get());
            granted("monthly", monthly.get());
        }
        EventBody::Debited {
            operation, credits, ..
        } => {
            metrics::counter!(CREDITS_DEBITED_TOTAL, "operation" => operation.clone(), "plan" => plan.to_string()).increment(credits.get());
        }
        EventBody::PeriodReset {
            expired: e,
            allocation,
            ..
        } => {
            expired("monthly", e.get());
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
        EventBody::HoldPlaced { .. } => {}
        EventBody::HoldCaptured {
            spent, expired: e, ..
        } => {
            metrics::counter!(CREDITS_DEBITED_TOTAL, "operation" => "hold_capture", "plan" => plan.to_string()).increment(spent.total().get());
            expired("hold", e.get());
        }
        EventBody::HoldReleased { expired: e, .. } => expired("hold", e.get()),
        EventBody::Refunded { part, returned, .. } => {
            for b in Bucket::ALL {
                let c = part.buckets.get(b).get();
                if c > 0 {
                    metrics::counter!(CREDITS_REFUNDED_TOTAL, "bucket" => b.name()).increment(c);
                }
                expired(b.name(), c - returned.buckets.get(b).get());
            }
        }
        EventBody::PromoExpired { expired: e, .. } => expired("promo", e.get()),
        EventBody::AlertsSet { .. }
        | EventBody::MemberSet { .. }
        | EventBody::MemberRemoved { .. } => {}
    }
    for notice in ev.notices() {
        metrics::counter!(NOTICES_TOTAL, "type" => notice.type_name()).increment(1);
    }
}

/// Counts a debit-like request by result (`ok`, `insufficient`, `duplicate`, `invalid`,
/// `conflict`); other mutations count under `creditsd_mutations_total`.
pub fn count_result(cmd: &Command, result: &'static str) {
    match cmd {
        Command::Debit { .. } => metrics::counter!(DEBITS_TOTAL, "result" => result).increment(1),
        Command::PlaceHold { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "hold", "result" => result).increment(1)
        }
        Command::Capture { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "capture", "result" => result).increment(1)
        }
        Command::Release { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "release", "result" => result).increment(1)
        }
        Command::ChangePlan { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "plan", "result" => result).increment(1)
        }
        Command::Purchase { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "purchase", "result" => result)
                .increment(1)
        }
        Command::Grant { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "grant", "result" => result).increment(1)
        }
        Command::Refund { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "refund", "result" => result).increment(1)
        }
        Command::SetAlerts { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "alerts", "result" => result).increment(1)
        }
        Command::SetMember { .. } | Command::RemoveMember { .. } => {
            metrics::counter!(MUTATIONS_TOTAL, "kind" => "member", "result" => result).increment(1)
        }
    }
}

#[cfg(test)]
mod tests {
    /// `(constant, metric)` of every metric name declared in this file.
    fn names() -> Vec<(String, String)> {
        include_str!("metrics.rs")
            .split(';')
            .filter_map(|stmt| {
                let decl = stmt.split_once("pub const ")?.1;
                let metric = decl.split('"').nth(1)?;
                let constant = decl.split(':').next()?;
                Some((constant.trim().to_string(), metric.to_string()))
            })
            .filter(|(_, metric)| {
                metric.starts_with("creditsd_")
                    && metric.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .collect()
    }

    #[test]
    fn every_constant_is_named_as_its_metric() {
        let names = names();
        assert!(names.len() >= 20, "{names:?}");
        for (constant, metric) in names {
            let expected = metric["creditsd_".len()..].to_uppercase();
            assert_eq!(constant, expected, "the constant of {metric}");
        }
    }
}
