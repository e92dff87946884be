//! The HTTP/1.1 JSON front end (hyper 1): accept loop and limits in `server`, one
//! function per route in `routes`, JSON in `dto`, errors in `error`, tokens in `auth`.
//! It turns requests into actor messages and replies into JSON; it holds no books.

pub mod auth;
pub mod dto;
pub mod error;
pub mod route;
pub mod routes;
pub mod server;
pub mod usage;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::actor::Registry;
use crate::config::Config;
use crate::store::Store;

/// What every request handler shares.
pub struct App {
    pub config: Config,
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
    pub auth: auth::Auth,
    /// Storage open and recovery done.
    pub ready: AtomicBool,
}

#[cfg(test)]
mod render_tests;
