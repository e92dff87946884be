//! Storage faults in the real daemon: a disk that fills up (a real ENOSPC from a tiny
//! tmpfs mounted on the data directory) is fail-stop — nothing unacknowledged, a clear log
//! line, exit code 74 — and after restart on a larger disk the books are whole. A corrupt
//! record (bytes flipped in sled itself) is reported by `creditsd audit` and by the
//! account's own requests (500 `storage_corrupt` naming the key) while other accounts work.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{json, Daemon, Value};

/// Unmounts (lazily: the daemon may still hold files) when the test ends, pass or fail.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> bool {
    std::fs::create_dir_all(at).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_is_fail_stop_and_the_books_are_whole_after_restart() {
    let mut mounted = false;
    // Segments of 256 KiB: the default 64 MiB would not fit at all.
    let mut d = Daemon::start_with("[storage]\nsegment_bytes = 262144\n", |data| {
        mounted = mount_tmpfs(data, "3m")
    });
    if !mounted {
        // Mounting needs root (CI containers and this project's sandbox run as root).
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _mount = Mount(d.data_dir());
    d.create("big", "agency");
    let (s, v) = d.post(
        "/v1/accounts/big/grants",
        json!({"bucket": "packs", "credits": 1_000_000_000u64, "reason": "test", "idempotency_key": "g"}),
    );
    assert_eq!(s, 200, "{v}");
    d.create("small", "starter");

    // 1 KiB of metadata per debit fills 3 MiB within a few thousand debits.
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("m{i}"), Value::String("x".repeat(60))))
        .collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut acknowledged = 0u64;
    let mut refused = None;
    for i in 1..=20_000u64 {
        let res = agent
            .post(&d.url("/v1/accounts/big/debits"))
            .send_json(json!({"operation": "caption_generation", "idempotency_key": format!("k{i}"), "metadata": metadata}));
        match res {
            Ok(r) if r.status() == 200 => acknowledged = i,
            Ok(r) => panic!("unexpected status {} before the disk filled", r.status()),
            Err(ureq::Error::Status(code, r)) => {
                refused = Some(format!("{code} {}", r.into_string().unwrap_or_default()));
                break;
            }
            // The process stopped: the connection closed without an answer.
            Err(_) => break,
        }
    }
    assert!(
        refused.is_none(),
        "a storage failure must not be answered: {refused:?}"
    );
    assert!(acknowledged > 0 && acknowledged < 20_000, "{acknowledged}");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(74), "log:\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("storage failure") && log.contains("No space left on device"),
        "log must say why it stopped:\n{log}"
    );

    // More room, as an operator would make; then the books are whole.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(d.data_dir())
        .status()
        .unwrap();
    assert!(grown.success());
    let (ok, report) = d.audit();
    assert!(ok, "{report}");
    d.start_again();
    let big = d.account("big");
    let spent = 1_000_000_550 - big["available"].as_u64().unwrap();
    assert!(
        spent == acknowledged || spent == acknowledged + 1,
        "every acknowledged debit must be in the books, plus at most the one that was \
         written but never answered: {acknowledged} acknowledged, {big}"
    );
    // The last acknowledged key is a duplicate now; the next one is either new or the
    // write that was durable but never answered — never applied twice.
    let (s, v) = d.post(
        "/v1/accounts/big/debits",
        json!({"operation": "caption_generation", "idempotency_key": format!("k{acknowledged}"), "metadata": metadata}),
    );
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "{v}");
    let (s, _) = d.post(
        "/v1/accounts/big/debits",
        json!({"operation": "caption_generation", "idempotency_key": format!("k{}", acknowledged + 1), "metadata": metadata}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        d.account("big")["available"].as_u64().unwrap(),
        1_000_000_550 - acknowledged - 1
    );
    assert_eq!(d.account("small")["available"], 100);
    let (s, _) = d.debit("small", "face_generation", 1, "s1");
    assert_eq!(s, 200);
}

fn event_key(account: &str, seq: u64) -> Vec<u8> {
    [b"E", account.as_bytes(), &[0], &seq.to_be_bytes()].concat()
}

#[test]
fn a_corrupt_record_fails_its_account_only() {
    let mut d = Daemon::start("");
    for id in ["good", "bad", "badsnap"] {
        d.create(id, "starter");
        let (s, v) = d.debit(id, "sample_image", 2, "first");
        assert_eq!(s, 200, "{v}");
    }
    // SIGKILL, so that no shutdown snapshot covers the debit: activation must read it.
    d.kill9();
    // Opening the store replays the write-ahead log records (so the next open starts
    // reading the log after them); the event stays where it lies in the log, and a byte of
    // it is flipped there: the log's own frame is not read again, the event's checksum
    // is.
    drop(creditsd::store::SledStore::open(&d.data_dir(), 1 << 20).unwrap());
    {
        let key = event_key("bad", 2);
        let (seg, at) = log_value(&d.data_dir(), &key);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[at + 3] ^= 0x5a;
        std::fs::write(&seg, &bytes).unwrap();
        let db = sled::Config::new().path(d.data_dir()).open().unwrap();
        let mut snap = db.get(b"Sbadsnap").unwrap().expect("the snapshot").to_vec();
        snap[0] = 9; // an unknown format version, with a valid checksum
        let n = snap.len();
        let crc = crc32fast::hash(&snap[..n - 4]).to_le_bytes();
        snap[n - 4..].copy_from_slice(&crc);
        db.insert(b"Sbadsnap", snap).unwrap();
        db.flush().unwrap();
    }

    let (ok, report) = d.audit();
    assert!(!ok, "audit must fail:\n{report}");
    assert!(
        report.contains("Ebad#2") && report.contains("checksum"),
        "{report}"
    );
    assert!(
        report.contains("Sbadsnap") && report.contains("version 9"),
        "{report}"
    );
    assert!(report.contains("2 problems"), "{report}");

    d.start_again();
    for (id, key) in [("bad", "Ebad#2"), ("badsnap", "Sbadsnap")] {
        let (s, v) = d.get(&format!("/v1/accounts/{id}"));
        assert_eq!(s, 500, "{v}");
        assert_eq!(v["error"]["code"], "storage_corrupt", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(key), "{msg}");
        let (s, v) = d.debit(id, "sample_image", 1, "second");
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (500, Some("storage_corrupt"))
        );
    }
    // The others keep working, reads and writes.
    assert_eq!(d.account("good")["available"], 94);
    let (s, v) = d.debit("good", "sample_image", 1, "second");
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.account("good")["available"], 91);
    d.create("newcomer", "free");
    assert!(
        d.log_text().contains("Ebad#2"),
        "the log names the bad record"
    );
}

/// Where the value of the write of `key` starts in the log (its segment file and offset):
/// a write is `1 | key length u32 LE | key | value length u32 LE | value`.
fn log_value(data: &Path, key: &[u8]) -> (PathBuf, usize) {
    let seg = only_segment(data);
    let bytes = std::fs::read(&seg).unwrap();
    let mut op = vec![1];
    op.extend_from_slice(&(key.len() as u32).to_le_bytes());
    op.extend_from_slice(key);
    let at = bytes
        .windows(op.len())
        .position(|w| w == op.as_slice())
        .expect("the write is in the log");
    (seg, at + op.len() + 4)
}

/// Where each record of a segment starts.
fn frames(bytes: &[u8]) -> Vec<usize> {
    use creditsd::store::segment_log::HEADER;
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() && bytes[at..at + HEADER].iter().any(|&b| b != 0) {
        out.push(at);
        at += HEADER + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

/// The one segment of the write-ahead log (a small store never starts a second).
fn only_segment(data: &Path) -> PathBuf {
    let segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].clone()
}

/// A torn tail of the write-ahead log (garbage after its last whole record, as a write
/// cut short by a crash leaves) is cut at the next start, with a log line saying how many
/// bytes; nothing acknowledged is lost. Damage before the tail (a flipped byte in an early
/// record, later records intact) is refused: the store does not open, and says where.
#[test]
fn a_torn_log_tail_is_cut_and_damage_before_it_is_refused() {
    // No checkpoint while it runs: the records after an open stay to be replayed.
    let mut d = Daemon::start("[storage]\ncheckpoint_after_ms = 3600000\n");
    d.create("a", "agency");
    for i in 0..20 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("k{i}")).0,
            200
        );
    }
    d.kill9();
    let seg = only_segment(&d.data_dir());
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 100].fill(0xab);
    std::fs::write(&seg, &bytes).unwrap();

    d.start_again();
    let log = d.log_text();
    assert!(
        log.contains("cut a torn tail from the write-ahead log (100 bytes"),
        "{log}"
    );
    assert_eq!(d.account("a")["available"], 550 - 20);
    for i in 20..25 {
        assert_eq!(
            d.debit("a", "caption_generation", 1, &format!("k{i}")).0,
            200
        );
    }
    let (_, v) = d.debit("a", "caption_generation", 1, "k3");
    assert_eq!(v["duplicate"], true, "{v}");
    d.kill9();

    // A flipped byte in the record of k20 (five writes from the end, one per debit),
    // which the next open must replay, with the later writes intact.
    let mut bytes = std::fs::read(&seg).unwrap();
    let starts = frames(&bytes);
    let k20 = starts[starts.len() - 5];
    bytes[k20 + creditsd::store::segment_log::HEADER + 2] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let (ok, report) = d.audit();
    assert!(!ok, "{report}");
    assert!(
        report.contains("log/") && report.contains("CRC32C") && report.contains("refusing to open"),
        "{report}"
    );
}
