//! Accounts as actors: one tokio task per active account owns its `Account` and applies
//! its messages one at a time, without locks. The registry finds or starts the task; a
//! cheap handle sends it messages with a reply channel inside.
//!
//! An actor decides, writes ahead to the store, applies, then hands its reply to the
//! journal, which sends it once the write is durable. It does not know HTTP or JSON.

pub mod account_actor;
pub mod core;
pub mod fingerprint;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::domain::{Account, Command, Event, Pricing, Refusal, Ts};
use crate::store::{Journal, Store};

pub use registry::Registry;

/// The wall clock, behind a trait so that tests of the actor can drive time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Ts;
}

/// The system clock, optionally shifted by a fixed offset (see `SystemClock::from_env`).
pub struct SystemClock {
    offset_ms: i64,
}

/// The variable a test sets to start a daemon at a chosen instant (RFC 3339). Honoured only
/// by debug builds (what `cargo test` runs); a release build always reads the real clock.
pub const TEST_NOW_VAR: &str = "CREDITSD_TEST_NOW";

impl SystemClock {
    /// The real clock.
    pub fn real() -> SystemClock {
        SystemClock { offset_ms: 0 }
    }

    /// The real clock, or in a debug build with `CREDITSD_TEST_NOW` set, a clock that starts
    /// at that instant and runs at the real rate from there. A release build ignores the
    /// variable (and says so), so the daemon in production always keeps real time.
    pub fn from_env() -> Result<SystemClock, String> {
        let Ok(value) = std::env::var(TEST_NOW_VAR) else {
            return Ok(SystemClock::real());
        };
        if !cfg!(debug_assertions) {
            tracing::warn!("{TEST_NOW_VAR} is set and ignored: release builds keep real time");
            return Ok(SystemClock::real());
        }
        let start = Ts::parse_rfc3339(&value)
            .ok_or_else(|| format!("{TEST_NOW_VAR}={value:?} is not an RFC 3339 instant"))?;
        let offset_ms = start.millis() - SystemClock::real().now().millis();
        tracing::warn!(now = %start.to_rfc3339(), "test build: the clock starts at {TEST_NOW_VAR}");
        Ok(SystemClock { offset_ms })
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Ts {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        Ts(d.as_millis() as i64).plus_millis(self.offset_ms)
    }
}

/// What every actor shares.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub journal: Journal<Reply>,
    pub pricing: Pricing,
    pub clock: Arc<dyn Clock>,
    pub snapshot_every: u64,
    pub idempotency_ttl_ms: i64,
    pub mailbox_max: usize,
    pub parked_max: usize,
    /// Idle time after which an actor snapshots and stops (see `AccountActor::passivate`).
    pub idle_timeout: Duration,
}

/// What an account answers.
#[derive(Debug)]
pub enum Outcome {
    /// A mutation was recorded (or had been: `duplicate`). Sent only once durable.
    Applied { event: Event, duplicate: bool },
    /// What the mutation would record; nothing was written.
    DryRun { event: Event },
    /// The account as it is now.
    View(Arc<Account>),
}

#[derive(Debug, Clone)]
pub enum ActorError {
    NotFound,
    Exists,
    Refused(Refusal),
    IdempotencyConflict {
        key: String,
    },
    /// A record of this account failed its checks; other accounts keep working.
    Corrupt(String),
    /// The mailbox is full: come back after the hinted delay.
    Overloaded,
    /// The daemon is shutting down.
    Unavailable,
}

pub type Reply = Result<Outcome, ActorError>;
pub type ReplyTx = oneshot::Sender<Reply>;

pub enum Msg {
    Create {
        plan: String,
        anchor: Option<Ts>,
        reply: ReplyTx,
    },
    Get {
        reply: ReplyTx,
    },
    Mutate(Box<Mutation>),
    /// The sweep found this account due at `indexed_at` in the wake-up index.
    Wake {
        indexed_at: Ts,
    },
    /// The daemon is stopping: answer every parked request now (503).
    Unpark,
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

pub struct Mutation {
    pub cmd: Command,
    pub dry_run: bool,
    /// How long an account short of credits may park the request (0: answer 402 now).
    pub wait: Duration,
    pub reply: ReplyTx,
}
