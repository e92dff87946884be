//! The HTTP/1.1 JSON front end (hyper 1). It turns requests into actor messages and
//! replies into JSON; it holds no books.
//!
//! - `server`: accept loop, connection bound, header timeout, graceful drain.
//! - `routes`: `handle`, the dispatch of one request; `route`: the route table (path
//!   shapes, methods, scopes, metric labels).
//! - handlers by resource: `accounts`, `debits`, `holds`, `billing`, `reports` (ledger,
//!   usage, forecast), `events` (the feed), `probes` (health, metrics, document, pricing),
//!   `console` (the operators' page at `/console`, embedded).
//! - beneath them: `ask` (the call to an account's actor), `reads` (the one read API over
//!   the store), `body` and `query` (request input), `dto` (JSON in and out), `error`
//!   (stable codes), `auth` (bearer tokens).

pub mod accounts;
pub mod ask;
pub mod auth;
pub mod billing;
pub mod body;
pub mod console;
pub mod debits;
pub mod dto;
pub mod error;
pub mod events;
pub mod holds;
pub mod probes;
pub mod query;
pub mod reads;
pub mod reports;
pub mod route;
pub mod routes;
pub mod server;
pub mod settings;

use std::sync::atomic::AtomicBool;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::actor::Registry;
use crate::config::Config;

/// What every request handler shares.
pub struct App {
    pub config: Config,
    pub registry: Registry,
    /// The store, for the reads that do not go through an actor.
    pub reads: reads::Reads,
    pub metrics: PrometheusHandle,
    pub auth: auth::Auth,
    /// Storage open and recovery done.
    pub ready: AtomicBool,
}

impl App {
    /// Upkeeps the histograms and sets the book gauges from the store's totals and the
    /// actors in memory: on every scrape, and every `metrics::UPKEEP_INTERVAL` between.
    pub fn refresh_metrics(&self) {
        self.metrics.run_upkeep();
        let t = self.reads.totals();
        crate::metrics::refresh(
            &[
                ("monthly", t.monthly),
                ("promo", t.promo),
                ("free", t.free),
                ("packs", t.packs),
                ("held", t.held),
            ],
            t.accounts,
            t.paused,
            self.registry.active(),
        );
    }
}

#[cfg(test)]
mod render_tests;
