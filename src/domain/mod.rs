//! The books, as pure functions of state, command and time.
//!
//! Nothing here knows tokio, sled, hyper, any wire or disk format, the rest of the crate or
//! the system clock: `now` is an argument, so the calendar (the 31st, leap days, skipped
//! periods) is tested without waiting. The store keeps its own record types and converts
//! (`store/records.rs`), so these types change without touching stored data. `decide` holds every rule and answers an event or a refusal; `apply` only
//! records an event and cannot fail (a broken invariant there is a bug and panics).

pub mod account;
pub mod alerts;
pub mod credits;
pub mod event;
pub mod pricing;
pub mod time;
pub mod usage;

pub use account::{Account, Command, DebitRef, Hold, Member, PromoBlock, Refusal};
pub use alerts::AlertChange;
pub use credits::{BlockPart, Bucket, Buckets, Credits, Taken};
pub use event::{Event, EventBody, ForecastSetting, Notice, ReleaseReason};
pub use pricing::{Pack, Pricing};
pub use time::Ts;
