//! Test harness: starts the real `creditsd` binary on 127.0.0.1:0 with a generated config
//! and a temporary sled directory, and speaks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_creditsd");

pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
    /// Extra environment for the child (`start_with_env`); `NOTIFY_SOCKET` is removed
    /// unless given here, so a test run under systemd does not talk to the real manager.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts with the defaults of `config.toml` plus `extra` TOML.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with_env(extra, &[])
    }

    /// Like `start`, with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_prepared(extra, env, |_| {})
    }

    /// As `start`, after `prepare` has been given the data directory's path (still
    /// absent), e.g. to mount a small filesystem there.
    pub fn start_with(extra: &str, prepare: impl FnOnce(&Path)) -> Daemon {
        Daemon::start_prepared(extra, &[], prepare)
    }

    /// `start_with` and `start_with_env` together.
    pub fn start_prepared(
        extra: &str,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, extra).expect("writing config");
        let mut d = Daemon {
            child: None,
            addr: String::new(),
            dir,
            config_path,
            log: Arc::new(Mutex::new(Vec::new())),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(90))
                .build(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        prepare(&d.data_dir());
        d.spawn();
        d
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        // `WATCHDOG_PID=$$` asks for the daemon's own pid, as systemd sets it: the daemon is
        // then exec'd from a shell that exports its `$$`.
        let own_pid = self
            .env
            .iter()
            .any(|(k, v)| k == "WATCHDOG_PID" && v == "$$");
        let mut cmd = if own_pid {
            let mut c = Command::new("sh");
            c.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .envs(
                self.env
                    .iter()
                    .filter(|(k, v)| !(k == "WATCHDOG_PID" && v == "$$"))
                    .map(|(k, v)| (k, v)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning creditsd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = line.find("listening on http://").map(|i| {
                    line[i + "listening on http://".len()..]
                        // Human lines end the address with a space, JSON lines with a quote.
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("")
                        .to_string()
                });
                // Logged before the address is handed over: a test that starts reading
                // the log once the daemon is up finds the line there.
                log.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        self.addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "creditsd did not report its address; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                )
            });
        self.child = Some(child);
    }

    /// Sets an environment variable for the next (re)start, e.g. `CREDITSD_TEST_NOW`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no drain, no snapshot, no final flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the daemon to exit on its own (e.g. fail-stop) and answers its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.take().expect("running").wait().unwrap()
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert!(self.terminate().success(), "graceful stop failed");
        }
        self.spawn();
    }

    /// Starts again after a kill9.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("transport error: {e}"))
    }

    /// Like `call`, but a transport failure (the daemon died) is an `Err`, not a panic.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let req = self.agent.request(method, &self.url(path));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        try_read(res)
    }

    /// Sends `body` as it is (malformed JSON, huge bodies).
    pub fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        read(
            self.agent
                .request(method, &self.url(path))
                .set("Content-Type", "application/json")
                .send_string(body),
        )
    }

    /// Writes `head` (request line and headers, without the final blank line) and then
    /// `body` on a fresh connection and answers the status line and the rest as text.
    pub fn raw_tcp(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut bytes = format!("{head}\r\n\r\n").into_bytes();
        bytes.extend_from_slice(body);
        self.raw_bytes(&bytes, false)
    }

    /// Writes `bytes` as they are on a fresh connection (half-closing it after them when
    /// `shutdown`) and answers the status (0 if none) and everything read back.
    pub fn raw_bytes(&self, bytes: &[u8], shutdown: bool) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(bytes);
        if shutdown {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(&body))
    }
    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(&body))
    }

    pub fn create(&self, id: &str, plan: &str) -> Value {
        let (s, v) = self.post("/v1/accounts", json!({ "id": id, "plan": plan }));
        assert_eq!(s, 201, "{v}");
        v
    }

    pub fn debit(&self, id: &str, op: &str, qty: u64, key: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/accounts/{id}/debits"),
            json!({ "operation": op, "quantity": qty, "idempotency_key": key }),
        )
    }

    pub fn account(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/accounts/{id}"));
        assert_eq!(s, 200, "{v}");
        v
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Runs `creditsd audit` on this daemon's data directory (the daemon must be stopped).
    pub fn audit(&self) -> (bool, String) {
        audit(&self.config_path, &self.data_dir())
    }
}

pub fn audit(config: &Path, data: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn read(res: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    try_read(res).unwrap_or_else(|e| panic!("transport error: {e}"))
}

fn try_read(res: Result<ureq::Response, ureq::Error>) -> Result<(u16, Value), String> {
    match res {
        Ok(r) => {
            let s = r.status();
            r.into_json().map(|v| (s, v)).map_err(|e| e.to_string())
        }
        Err(ureq::Error::Status(s, r)) => Ok((s, r.into_json().unwrap_or(Value::Null))),
        Err(e) => Err(e.to_string()),
    }
}

/// A tiny deterministic PRNG (xorshift64*), so a failing run can print its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn from_time() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(t | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every ledger entry of an account, newest first, following the cursor.
pub fn full_ledger(d: &Daemon, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(b) => format!("/v1/accounts/{id}/ledger?limit=500&before={b}"),
            None => format!("/v1/accounts/{id}/ledger?limit=500"),
        };
        let (s, v) = d.get(&path);
        assert_eq!(s, 200, "{v}");
        out.extend(v["entries"].as_array().unwrap().iter().cloned());
        match v["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => return out,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An anchor (RFC 3339) whose billing period ends exactly `secs` (seconds since the epoch),
/// computed with the daemon's own calendar: one calendar month back is not always right
/// (from the 31st it lands on a clamped day whose period ends weeks later).
pub fn anchor_resetting_at(secs: i64) -> String {
    let (anchor, _) =
        creditsd::domain::time::anchor_for_boundary(creditsd::domain::Ts(secs * 1000));
    anchor.to_rfc3339()
}

/// Seconds since the epoch as RFC 3339 (UTC), without pulling a date crate into tests.
pub fn time_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Replaces `to`'s contents with a copy of `from`'s.
pub fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
