//! The accept loop: a named bound on connections (a semaphore), a header-read timeout for
//! slow clients, and graceful shutdown (stop accepting, let in-flight requests finish up
//! to the drain timeout). `run` takes a bound listener and a shutdown future, so tests
//! and the daemon inject both.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::routes;
use super::App;

pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let server_cfg = app.config.server.clone();
    let connections = Arc::new(Semaphore::new(server_cfg.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server_cfg.header_read_timeout_ms))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // Wait for a connection slot first: past the bound, clients wait in the kernel's
        // accept queue rather than in our memory.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(routes::handle(app, req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let drain = Duration::from_millis(server_cfg.drain_timeout_ms);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(drain) => tracing::warn!(drain_ms = drain.as_millis() as u64, "drain timeout: closing the remaining connections"),
    }
}
