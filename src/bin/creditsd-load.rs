//! `creditsd-load`: drives a running daemon over HTTP/1.1 keep-alive and reports
//! throughput, latency percentiles (HDR histogram) and errors; then checks the books.
//!
//! It owns nothing of the daemon: it speaks only its public HTTP API, so it measures what
//! a pipeline would see. Setup (create + fund every account) is not timed. With
//! `--template`, it posts a JSON template to any server instead (the HTTP ceiling in
//! `benches/compare.sh`), and neither sets up nor verifies anything.
//!
//! Books check: for every account, `available` before the run minus `available` after
//! equals the credits of the debits acknowledged with 200 during the run. A request that
//! failed in flight (connection error) is counted apart, because its fate is unknown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
enum Dist {
    Uniform,
    Zipf,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for creditsd (HTTP/1.1 keep-alive, HDR latency)")]
struct Args {
    /// host:port of the server.
    #[arg(long, default_value = "127.0.0.1:8640")]
    addr: String,
    /// Concurrent keep-alive connections (one request in flight on each).
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Accounts the debits spread over.
    #[arg(short = 'a', long, default_value_t = 10_000)]
    accounts: usize,
    /// How account ids are drawn.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: Dist,
    /// Zipf exponent (with `--dist zipf`).
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// 0: single debits (`POST /v1/accounts/{id}/debits`); B > 0: batches of B through
    /// `POST /v1/debits`.
    #[arg(short = 'b', long, default_value_t = 0)]
    batch: usize,
    /// Run for this many seconds...
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration_s: f64,
    /// ...or stop after this many requests (overrides `--duration-s`).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// The operation debited.
    #[arg(long, default_value = "caption_generation")]
    operation: String,
    /// Account ids are `{prefix}{index}`.
    #[arg(long, default_value = "load-")]
    prefix: String,
    /// Credits granted to each account (into `packs`) at setup.
    #[arg(long, default_value_t = 1_000_000_000)]
    fund: u64,
    /// Accounts already exist and are funded: do not create or fund.
    #[arg(long)]
    skip_setup: bool,
    /// Only create and fund the accounts, then exit.
    #[arg(long)]
    setup_only: bool,
    /// Only read every account once (`GET /v1/accounts/{id}`, over `--setup-connections`)
    /// and report the latency: on a freshly started daemon, every read is a cold activation.
    #[arg(long)]
    reads: bool,
    /// Do not read every account before and after to check the books.
    #[arg(long)]
    no_verify: bool,
    /// Connections used for setup and verification.
    #[arg(long, default_value_t = 64)]
    setup_connections: usize,
    /// Bearer token, when the daemon has `[[auth.tokens]]`.
    #[arg(long)]
    token: Option<String>,
    /// Generic mode: POST this body to `--path` instead of creditsd debits. `{account}`,
    /// `{key}` and `{n}` are replaced per request.
    #[arg(long)]
    template: Option<String>,
    #[arg(long, default_value = "/")]
    path: String,
    /// Print one JSON line with the figures (for scripts) after the report.
    #[arg(long)]
    json: bool,
    /// Pid of the server: report its CPU time and bytes written to disk per acknowledged
    /// debit (from /proc), figures that a busy shared machine disturbs less than rates.
    #[arg(long)]
    pid: Option<u32>,
    /// Seed of the account choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: small, fast, deterministic per connection; quality is ample for picking accounts.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws account indexes: uniform, or Zipf through a cumulative table (rank 0 is hottest).
enum Picker {
    Uniform(usize),
    Zipf(Vec<f64>),
}

impl Picker {
    fn new(n: usize, dist: Dist, s: f64) -> Picker {
        match dist {
            Dist::Uniform => Picker::Uniform(n),
            Dist::Zipf => {
                let mut cdf = Vec::with_capacity(n);
                let mut acc = 0.0;
                for k in 1..=n {
                    acc += 1.0 / (k as f64).powf(s);
                    cdf.push(acc);
                }
                for c in &mut cdf {
                    *c /= acc;
                }
                Picker::Zipf(cdf)
            }
        }
    }
    fn pick(&self, rng: &mut Rng) -> usize {
        match self {
            Picker::Uniform(n) => (rng.next_u64() % *n as u64) as usize,
            Picker::Zipf(cdf) => {
                let u = rng.unit();
                cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
            }
        }
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true).ok();
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

struct Client {
    addr: String,
    host: String,
    auth: Option<String>,
    sender: Option<Sender>,
}

impl Client {
    fn new(args: &Args) -> Client {
        Client {
            addr: args.addr.clone(),
            host: args.addr.clone(),
            auth: args.token.as_ref().map(|t| format!("Bearer {t}")),
            sender: None,
        }
    }

    /// One request; reconnects once if the kept-alive connection had gone.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        if !self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            self.sender = Some(connect(&self.addr).await?);
        }
        let sender = self.sender.as_mut().expect("connected");
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if let Some(a) = &self.auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = match body {
            Some(b) => req
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(b))),
            None => req.body(Full::new(Bytes::new())),
        }
        .map_err(|e| e.to_string())?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

#[derive(Deserialize)]
struct DebitAnswer {
    #[serde(default)]
    credits: u64,
    #[serde(default)]
    account: String,
    /// The HTTP status of a batch item (`status` is the account's).
    #[serde(default)]
    code: serde_json::Value,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<DebitAnswer>,
}

#[derive(Deserialize)]
struct AccountAnswer {
    available: u64,
}

/// What one connection saw.
struct Tally {
    latency_us: Histogram<u64>,
    requests: u64,
    debits_ok: u64,
    /// Non-200 answers (or non-200 batch items), by status.
    refused: HashMap<u16, u64>,
    /// Requests that failed in flight: their effect is unknown.
    transport_errors: u64,
    /// Acknowledged credits per account index.
    credits: HashMap<usize, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            requests: 0,
            debits_ok: 0,
            refused: HashMap::new(),
            transport_errors: 0,
            credits: HashMap::new(),
        }
    }
    fn merge(&mut self, o: Tally) {
        self.latency_us.add(&o.latency_us).expect("same bounds");
        self.requests += o.requests;
        self.debits_ok += o.debits_ok;
        self.transport_errors += o.transport_errors;
        for (k, v) in o.refused {
            *self.refused.entry(k).or_default() += v;
        }
        for (k, v) in o.credits {
            *self.credits.entry(k).or_default() += v;
        }
    }
}

fn account_id(args: &Args, i: usize) -> String {
    format!("{}{}", args.prefix, i)
}

/// A setup task: the (index, value) pairs it produced.
type Worker<T> = tokio::task::JoinHandle<Result<Vec<(usize, T)>, String>>;

/// Runs `f(client, i)` for every i in 0..n over `conns` connections.
async fn for_each_account<F, Fut, T>(args: &Args, n: usize, f: F) -> Result<Vec<T>, String>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Client, Result<T, String>)> + Send,
    T: Send + 'static + Default + Clone,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<Worker<T>> = Vec::new();
    for _ in 0..args.setup_connections.max(1) {
        let next = next.clone();
        let f = f.clone();
        let mut client = Client::new(args);
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(usize, T)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok(out);
                }
                let (c, r) = f(client, i).await;
                client = c;
                out.push((i, r?));
            }
        }));
    }
    let mut all = vec![T::default(); n];
    for t in tasks {
        for (i, v) in t.await.map_err(|e| e.to_string())?? {
            all[i] = v;
        }
    }
    Ok(all)
}

async fn setup(args: &Args) -> Result<(), String> {
    let a = Arc::new(args.clone());
    let started = Instant::now();
    for_each_account(args, args.accounts, move |mut c, i| {
        let a = a.clone();
        async move {
            let id = account_id(&a, i);
            let r = async {
                let (s, b) = c
                    .call(
                        Method::POST,
                        "/v1/accounts",
                        Some(format!(r#"{{"id":"{id}"}}"#)),
                    )
                    .await?;
                if s != StatusCode::CREATED && s != StatusCode::CONFLICT {
                    return Err(format!(
                        "creating {id}: {s} {}",
                        String::from_utf8_lossy(&b)
                    ));
                }
                if a.fund > 0 {
                    let body = format!(
                        r#"{{"bucket":"packs","credits":{},"reason":"load test","idempotency_key":"fund-{}"}}"#,
                        a.fund, a.prefix
                    );
                    let (s, b) = c
                        .call(Method::POST, &format!("/v1/accounts/{id}/grants"), Some(body))
                        .await?;
                    if s != StatusCode::OK && s != StatusCode::CREATED {
                        return Err(format!(
                            "funding {id}: {s} {}",
                            String::from_utf8_lossy(&b)
                        ));
                    }
                }
                Ok(())
            }
            .await;
            (c, r)
        }
    })
    .await?;
    eprintln!(
        "setup: {} accounts created and funded in {:.1} s",
        args.accounts,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn balances(args: &Args) -> Result<Vec<u64>, String> {
    let a = Arc::new(args.clone());
    for_each_account(args, args.accounts, move |mut c, i| {
        let a = a.clone();
        async move {
            let id = account_id(&a, i);
            let r = async {
                let (s, b) = c
                    .call(Method::GET, &format!("/v1/accounts/{id}"), None)
                    .await?;
                if s != StatusCode::OK {
                    return Err(format!("reading {id}: {s}"));
                }
                serde_json::from_slice::<AccountAnswer>(&b)
                    .map(|v| v.available)
                    .map_err(|e| format!("reading {id}: {e}"))
            }
            .await;
            (c, r)
        }
    })
    .await
}

async fn cold_reads(args: &Args) -> Result<(), String> {
    let a = Arc::new(args.clone());
    let started = Instant::now();
    let latencies = for_each_account(args, args.accounts, move |mut c, i| {
        let a = a.clone();
        async move {
            let id = account_id(&a, i);
            let t = Instant::now();
            let r = match c
                .call(Method::GET, &format!("/v1/accounts/{id}"), None)
                .await
            {
                Ok((StatusCode::OK, _)) => Ok(t.elapsed().as_micros() as u64),
                Ok((s, _)) => Err(format!("reading {id}: {s}")),
                Err(e) => Err(e),
            };
            (c, r)
        }
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for us in latencies {
        h.saturating_record(us.max(1));
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "reads    {} accounts in {secs:.1} s ({:.0}/s)  p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms",
        args.accounts,
        args.accounts as f64 / secs,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    Ok(())
}

/// One connection's loop: build, send, time, tally, until the bound is reached.
async fn drive(
    args: Arc<Args>,
    picker: Arc<Picker>,
    conn: usize,
    deadline: Instant,
    budget: Arc<AtomicU64>,
) -> Tally {
    let mut t = Tally::new();
    let mut rng = Rng::new(args.seed.wrapping_add(conn as u64 * 7919));
    let mut client = Client::new(&args);
    let run = std::process::id();
    let mut n: u64 = 0;
    loop {
        if args.requests.is_some() {
            if budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_err()
            {
                break;
            }
        } else if Instant::now() >= deadline {
            break;
        }
        n += 1;
        let mut picked = Vec::with_capacity(args.batch.max(1));
        let (path, body) = if let Some(tpl) = &args.template {
            let i = picker.pick(&mut rng);
            let body = tpl
                .replace("{account}", &account_id(&args, i))
                .replace("{key}", &format!("k{run}-{conn}-{n}"))
                .replace("{n}", &n.to_string());
            (args.path.clone(), body)
        } else if args.batch == 0 {
            let i = picker.pick(&mut rng);
            picked.push(i);
            (
                format!("/v1/accounts/{}/debits", account_id(&args, i)),
                format!(
                    r#"{{"operation":"{}","idempotency_key":"k{run}-{conn}-{n}"}}"#,
                    args.operation
                ),
            )
        } else {
            let mut body = String::with_capacity(args.batch * 100);
            body.push_str(r#"{"debits":["#);
            for j in 0..args.batch {
                let i = picker.pick(&mut rng);
                picked.push(i);
                if j > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    r#"{{"account":"{}","operation":"{}","idempotency_key":"k{run}-{conn}-{n}-{j}"}}"#,
                    account_id(&args, i),
                    args.operation
                ));
            }
            body.push_str("]}");
            ("/v1/debits".to_string(), body)
        };
        let started = Instant::now();
        let r = client.call(Method::POST, &path, Some(body)).await;
        let us = started.elapsed().as_micros() as u64;
        t.latency_us.saturating_record(us.max(1));
        t.requests += 1;
        let (status, bytes) = match r {
            Ok(x) => x,
            Err(e) => {
                if t.transport_errors == 0 {
                    eprintln!("connection {conn}: {e}");
                }
                t.transport_errors += 1;
                continue;
            }
        };
        if args.template.is_some() {
            if status.is_success() {
                t.debits_ok += 1;
            } else {
                *t.refused.entry(status.as_u16()).or_default() += 1;
            }
            continue;
        }
        if status != StatusCode::OK {
            *t.refused.entry(status.as_u16()).or_default() += picked.len() as u64;
            continue;
        }
        if args.batch == 0 {
            match serde_json::from_slice::<DebitAnswer>(&bytes) {
                Ok(a) => {
                    t.debits_ok += 1;
                    *t.credits.entry(picked[0]).or_default() += a.credits;
                }
                Err(_) => t.transport_errors += 1,
            }
        } else {
            match serde_json::from_slice::<BatchAnswer>(&bytes) {
                Ok(a) if a.results.len() == picked.len() => {
                    for (r, i) in a.results.iter().zip(&picked) {
                        if r.code == 200u16 {
                            debug_assert_eq!(r.account, account_id(&args, *i));
                            t.debits_ok += 1;
                            *t.credits.entry(*i).or_default() += r.credits;
                        } else {
                            *t.refused
                                .entry(r.code.as_u64().unwrap_or(0) as u16)
                                .or_default() += 1;
                        }
                    }
                }
                _ => t.transport_errors += 1,
            }
        }
    }
    t
}

/// CPU seconds (user + system) and bytes written to the block layer by a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let written = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux we run on.
    Some((ticks / 100.0, written))
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("creditsd-load: {e}");
            std::process::exit(2);
        }
    }
}

/// Returns whether the books balanced (always true without verification).
async fn run(args: Args) -> Result<bool, String> {
    let generic = args.template.is_some();
    if !generic && !args.skip_setup && !args.reads {
        setup(&args).await?;
    }
    if args.setup_only {
        return Ok(true);
    }
    if args.reads {
        return cold_reads(&args).await.map(|()| true);
    }
    let verify = !generic && !args.no_verify;
    let before = if verify {
        Some(balances(&args).await?)
    } else {
        None
    };
    let args = Arc::new(args);
    let picker = Arc::new(Picker::new(args.accounts, args.dist, args.zipf_s));
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(0)));
    let proc_before = args.pid.and_then(proc_usage);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration_s);
    let tasks: Vec<_> = (0..args.connections)
        .map(|c| {
            tokio::spawn(drive(
                args.clone(),
                picker.clone(),
                c,
                deadline,
                budget.clone(),
            ))
        })
        .collect();
    let mut total = Tally::new();
    for t in tasks {
        total.merge(t.await.map_err(|e| e.to_string())?);
    }
    let secs = started.elapsed().as_secs_f64();
    let h = &total.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let refused: u64 = total.refused.values().sum();
    println!(
        "{} connections, {} accounts ({:?}), {}: {:.1} s",
        args.connections,
        args.accounts,
        args.dist,
        if generic {
            format!("template POST {}", args.path)
        } else if args.batch == 0 {
            "single debits".to_string()
        } else {
            format!("batches of {}", args.batch)
        },
        secs
    );
    println!(
        "requests {:>10}  {:>10.0} req/s",
        total.requests,
        total.requests as f64 / secs
    );
    println!(
        "ok       {:>10}  {:>10.0} /s",
        total.debits_ok,
        total.debits_ok as f64 / secs
    );
    println!(
        "latency  p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms  max {:.3} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    println!(
        "errors   refused {refused} {:?}  transport {}",
        total.refused, total.transport_errors
    );
    // CPU µs and bytes written per acknowledged debit, when the server's pid is known.
    let mut server = None;
    if let (Some(b), Some(a)) = (proc_before, args.pid.and_then(proc_usage)) {
        let per = |x: f64| x / total.debits_ok.max(1) as f64;
        let (cpu, bytes) = (per((a.0 - b.0) * 1e6), per(a.1.saturating_sub(b.1) as f64));
        println!("server   cpu {cpu:.1} us/debit  disk written {bytes:.0} bytes/debit");
        server = Some((cpu, bytes));
    }
    let mut balanced = true;
    if let Some(before) = before {
        let after = balances(&args).await?;
        let mut acked = 0u64;
        let mut gone = 0u64;
        let mut wrong = 0usize;
        for i in 0..args.accounts {
            let a = total.credits.get(&i).copied().unwrap_or(0);
            let g = before[i].saturating_sub(after[i]);
            acked += a;
            gone += g;
            if a != g {
                wrong += 1;
            }
        }
        balanced = wrong == 0;
        println!(
            "books    acknowledged {acked} credits, gone {gone} credits, accounts differing {wrong}: {}",
            if balanced { "BALANCED" } else { "MISMATCH" }
        );
        if !balanced && total.transport_errors > 0 {
            println!(
                "         ({} requests failed in flight; their effect is unknown)",
                total.transport_errors
            );
        }
    }
    if args.json {
        println!(
            r#"{{"ok_per_s":{:.1},"req_per_s":{:.1},"p50_ms":{:.3},"p99_ms":{:.3},"p999_ms":{:.3},"refused":{},"transport_errors":{},"balanced":{},"cpu_us_per_debit":{},"bytes_per_debit":{}}}"#,
            total.debits_ok as f64 / secs,
            total.requests as f64 / secs,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            refused,
            total.transport_errors,
            balanced,
            server.map_or("null".to_string(), |s| format!("{:.1}", s.0)),
            server.map_or("null".to_string(), |s| format!("{:.0}", s.1)),
        );
    }
    Ok(balanced)
}
