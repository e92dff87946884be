//! The HTTP ceiling for `benches/compare.sh`: a bare hyper 1 server that reads a POST body
//! and answers a small JSON object, on the same runtime settings as creditsd. Whatever
//! creditsd does beyond this (JSON, actors, sled, fsync) is what the comparison measures.
//!
//! `cargo run --release --example hello -- 127.0.0.1:8641`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut r = Response::new(Full::new(Bytes::from(format!(
        r#"{{"ok":true,"read":{body}}}"#
    ))));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8641".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("binding");
    eprintln!(
        "listening on http://{}",
        listener.local_addr().expect("address")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        stream.set_nodelay(true).ok();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello))
                .await;
        });
    }
}
