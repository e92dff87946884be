//! Storage: the `Store` trait the rest of the daemon sees, its sled implementation, the
//! record codec, and the journal that makes writes durable in groups.
//!
//! Only this module knows sled. Key layout (one sled tree, so one write is one atomic
//! batch): `R‖account‖0‖first` a run, where the account's consecutive events from `first`
//! lie in the log (`runs.rs`; the events themselves, `E‖account‖0‖seq`, stay in the log
//! and never reach sled, but for an earlier release's), `S‖account` snapshot, `I‖account‖0‖key`
//! idempotency record, `F‖id` feed entry, `W‖instant‖account` wake-up index,
//! `C‖name` a feed consumer's cursor (a webhook's last delivered feed id),
//! `B‖account` base snapshot: the state at the retention prune point, where the log
//! now begins (`history.rs`), `T‖shard` book totals (`totals.rs`), `L` the number of
//! the first write-ahead log record not yet covered by sled and where it starts
//! (`overlay.rs`), and `V` the store format marker (`format.rs`: absent in a store of
//! format 1). The log itself is segment files under `<data>/log/` (`segment_log.rs`):
//! every write reaches its own key above (an event, its run) through the overlay and the
//! checkpointer, and is durable once its log record is.
//! (`L‖n`, nine bytes, were the group records of earlier releases, replayed at open.)

pub mod codec;
pub mod format;
pub mod idem_filter;
pub mod idem_index;
pub mod journal;
pub mod kv;
pub mod legacy;
pub mod migrate;
pub mod overlay;
pub mod records;
pub mod recovery;
pub mod runs;
pub mod segment_log;
pub mod sled_store;
pub mod totals;

use crate::domain::{Account, Buckets, Credits, Event, Notice, Ts};

pub use journal::Journal;
pub use sled_store::SledStore;
pub use totals::BookTotals;

#[derive(Debug, Clone)]
pub enum StorageError {
    /// The disk or sled failed. Fail-stop: nothing after it is acknowledged.
    Io(String),
    /// A record failed its checksum, version or decoding. Reported, never skipped.
    Corrupt { key: String, reason: String },
    /// Another process holds the data directory's lock (a second daemon, or an audit
    /// run while the daemon serves). Nothing was opened or changed.
    Locked { path: String },
    /// The store's format marker (`format.rs`) says a format newer than this build reads:
    /// it was written by a newer release. Refused before anything was written.
    Newer {
        found: u32,
        known: u32,
        /// The data directory, when opened from one.
        path: Option<String>,
    },
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Io(e) => write!(f, "storage I/O error: {e}"),
            StorageError::Corrupt { key, reason } => {
                write!(f, "corrupt record at key {key}: {reason}")
            }
            StorageError::Locked { path } => write!(
                f,
                "the data directory is in use: another process holds the lock on {path}"
            ),
            StorageError::Newer { found, known, path } => write!(
                f,
                "the store{} was written by a newer creditsd: it is in store format \
                 {found}, and this build reads formats 1 to {known}; nothing was changed \
                 (run the release that wrote it, or a later one)",
                path.as_ref()
                    .map(|p| format!(" at {p}"))
                    .unwrap_or_default()
            ),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// What an idempotency key is bound to: the request's fingerprint and the event it made.
/// Stored as `records::IdemRecordV1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemRecord {
    pub fingerprint: [u8; 16],
    pub seq: u64,
    pub at: Ts,
}

/// One entry of the durable notification feed. Stored as `records::FeedEntryRecordV2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub id: u64,
    pub account: String,
    pub seq: u64,
    pub at: Ts,
    pub notice: Notice,
    pub balances: Buckets,
    pub held: Credits,
}

/// Everything one mutation writes, applied atomically.
#[derive(Debug, Default)]
pub struct Append<'a> {
    pub events: &'a [Event],
    /// Idempotency records to bind (the key of the event they point to).
    pub idempotency: Vec<(&'a str, IdemRecord)>,
    pub snapshot: Option<&'a Account>,
    /// Moves the account in the wake-up index: (old, new).
    pub wakeup: Option<(Option<Ts>, Ts)>,
}

/// The books on disk, as the actors and the audit need them. Writes become visible to
/// reads at once and durable at the next `sync`.
pub trait Store: Send + Sync + 'static {
    fn append(&self, account: &str, append: Append<'_>) -> Result<(), StorageError>;
    /// The latest snapshot written in today's layout (one of an earlier release is stale:
    /// `None`, and recovery replays from the base).
    fn snapshot(&self, account: &str) -> Result<Option<Account>, StorageError>;
    /// Events with `seq > after`, in order.
    /// Up to `limit` events with `seq >= from`, oldest first.
    fn events_from(
        &self,
        account: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError>;
    /// Up to `limit` events with `seq < before`, newest first.
    fn events_before(
        &self,
        account: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StorageError>;
    fn event(&self, account: &str, seq: u64) -> Result<Option<Event>, StorageError>;
    fn idempotency(&self, account: &str, key: &str) -> Result<Option<IdemRecord>, StorageError>;
    /// Deletes idempotency records bound before `cutoff`; answers how many.
    fn prune_idempotency(&self, cutoff: Ts) -> Result<u64, StorageError>;
    /// Every account that has a snapshot (every account: creation writes one).
    fn accounts(&self) -> Result<Vec<String>, StorageError>;
    /// Up to `limit` account ids after `after` (exclusive), in byte order.
    fn accounts_page(&self, after: Option<&str>, limit: usize)
        -> Result<Vec<String>, StorageError>;
    /// Drops a stale entry of the wake-up index.
    fn remove_wakeup(&self, account: &str, at: Ts) -> Result<(), StorageError>;
    /// Accounts whose next reset or hold expiry is at or before `now`.
    fn due_accounts(&self, now: Ts, limit: usize) -> Result<Vec<(Ts, String)>, StorageError>;
    /// Feed entries with `id > after` and `id < below`, oldest first.
    fn feed_after(
        &self,
        after: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<FeedEntry>, StorageError>;
    /// Outstanding credits by bucket and account counts over every account, as written so
    /// far (moved atomically with the events; see `totals.rs`).
    fn totals(&self) -> BookTotals;
    /// One past the highest feed id written so far.
    fn feed_next_id(&self) -> u64;
    /// Deletes feed entries, oldest first, while their id is below `below` or their time
    /// is before `cutoff`; the newest entry always stays, because its id is where ids go
    /// on from after a restart. Answers how many were deleted.
    fn prune_feed(&self, below: u64, cutoff: Ts) -> Result<u64, StorageError>;
    /// The feed id a named consumer (a webhook) has handled everything up to.
    fn feed_cursor(&self, name: &str) -> Result<Option<u64>, StorageError>;
    fn set_feed_cursor(&self, name: &str, id: u64) -> Result<(), StorageError>;
    /// The state at the retention prune point, where the log now begins, if pruned.
    fn base(&self, account: &str) -> Result<Option<Account>, StorageError>;
    /// In one atomic commit: writes `base` (the state at its seq) and deletes the events
    /// `from..=base.seq`. Only the retention pruner calls it, and only below the latest
    /// snapshot, where the account's actor never writes.
    fn prune_history(&self, account: &str, from: u64, base: &Account) -> Result<(), StorageError>;
    /// Deletes the write-ahead log's segments that hold neither an event still kept nor
    /// a record sled does not cover yet (after retention). Answers how many.
    fn remove_unindexed_segments(&self) -> Result<usize, StorageError>;
    /// Makes every write made before the call durable: one write of its records to the
    /// segment log and one fdatasync (sled is not written here).
    fn sync(&self) -> Result<(), StorageError>;
    /// At a clean shutdown: `sync`, and leave the disk so that the next open has nothing
    /// to recover. Writes after it are not guaranteed to become durable.
    fn close(&self) -> Result<(), StorageError> {
        self.sync()
    }
}
