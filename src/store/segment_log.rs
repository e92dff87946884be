//! The write-ahead log: append-only segment files under `<data>/log/`, one per run of
//! group records, named by the number of the first record they hold (`<n>.seg`, twenty
//! digits, so names sort as numbers do).
//!
//! A group commit is **one** write of its records, back to back, and **one** `fdatasync`
//! of the segment. Each record is framed:
//!
//! ```text
//! len u32 LE | crc u32 LE | version u8 | flags u8 | number u64 LE | payload (len bytes)
//! ```
//!
//! `crc` is the CRC32C of everything else in the frame (length, version, flags, number,
//! payload). `number` goes up by one per record with no gap across segments; `flags` has
//! `FIRST_IN_WRITE` on the first record of each write. Segments are preallocated
//! (`segment_bytes`, zeros), created with an fsync of the directory, and a new one is
//! started when the next write does not fit.
//!
//! At open (`SegmentLog::open`) every record after the covered number (what the
//! checkpointer has written into sled) is handed to the caller, oldest first. Zeros after
//! the last record are the preallocation: a clean end. A frame that does not check out (a
//! bad length, version or CRC, a number out of sequence, garbage where zeros belong) in
//! the last segment is a torn or lost tail if nothing after it starts a later write: the
//! file is cut there (truncated, then preallocated again) and the cut is logged with its
//! size. Anything else — damage in an older segment, or a damaged record followed by an
//! intact later write, or a missing segment — is corruption before the tail: a hard error,
//! because records that were acknowledged would be lost.
//!
//! Why a write can only be torn at the tail: only the journal thread appends, and it
//! fdatasyncs each write before the next; a failed fdatasync is fail-stop. So after a crash
//! at most the last write is not durable, and whatever of it the disk kept (nothing, a
//! prefix, some of its sectors) lies after every durable record.
//!
//! The files are reached through `LogFiles`, so that the simulator can put a disk beneath
//! that tears writes, loses unsynced tails, fails fsyncs and runs out of space.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::StorageError;

/// The frame's format version.
pub const LOG_FORMAT_V1: u8 = 1;
/// `flags`: this record starts a write (a group commit).
pub const FIRST_IN_WRITE: u8 = 1;
/// Bytes of a frame before its payload.
pub const HEADER: usize = 18;
/// The default size a segment is preallocated to (`storage.segment_bytes`).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Where some bytes lie in the log: a segment (by its name, the number of its first
/// record), the offset in it, the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// Where a record starts: its segment and the offset in it.
pub type At = (u64, u64);

/// The files of the log, by segment number. The daemon's is `FsLogFiles`; the simulator
/// has one that injects faults.
pub trait LogFiles: Send + Sync + 'static {
    /// The segments present, in any order.
    fn list(&self) -> Result<Vec<u64>, StorageError>;
    /// The whole content of a segment.
    fn read(&self, segment: u64) -> Result<Vec<u8>, StorageError>;
    /// `len` bytes of a segment from `offset` (durable ones: a value the checkpointer
    /// has indexed).
    fn read_at(&self, segment: u64, offset: u64, len: u32) -> Result<Vec<u8>, StorageError>;
    /// Creates a segment of `len` zero bytes (preallocated) and makes its existence
    /// durable (an fsync of the directory).
    fn create(&self, segment: u64, len: u64) -> Result<(), StorageError>;
    /// Writes `bytes` at `offset` (durable only after `sync`).
    fn write(&self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), StorageError>;
    /// `fdatasync` of the segment: every write to it before the call is durable.
    fn sync(&self, segment: u64) -> Result<(), StorageError>;
    /// Cuts the segment at `len`, preallocates it again up to `prealloc` bytes of zeros,
    /// and makes both durable.
    fn cut(&self, segment: u64, len: u64, prealloc: u64) -> Result<(), StorageError>;
    /// Deletes a segment (no fsync of the directory: a segment that comes back after a
    /// crash is one already covered, and is deleted again).
    fn remove(&self, segment: u64) -> Result<(), StorageError>;
}

fn io(what: String, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what}: {e}"))
}

/// Segment files in a directory of the file system.
pub struct FsLogFiles {
    dir: PathBuf,
    /// Open handles, by segment (the one being appended to, mostly).
    open: Mutex<HashMap<u64, std::sync::Arc<File>>>,
    /// Handles read through (`read_at`), by segment: a few dozen at most.
    readers: Mutex<HashMap<u64, std::sync::Arc<File>>>,
}

impl FsLogFiles {
    /// The log directory `dir` (created, and its parent fsynced, if missing).
    pub fn open(dir: &Path) -> Result<FsLogFiles, StorageError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| io(format!("creating {}", dir.display()), e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(FsLogFiles {
            dir: dir.to_path_buf(),
            open: Mutex::default(),
            readers: Mutex::default(),
        })
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:020}.seg"))
    }

    fn file(&self, segment: u64) -> Result<std::sync::Arc<File>, StorageError> {
        let mut open = lock(&self.open);
        if let Some(f) = open.get(&segment) {
            return Ok(f.clone());
        }
        let path = self.path(segment);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        let f = std::sync::Arc::new(f);
        // Only the newest few are ever written; older handles are dropped.
        if open.len() >= 4 {
            open.clear();
        }
        open.insert(segment, f.clone());
        Ok(f)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("fsync of directory {}", dir.display()), e))
}

/// Allocates `len` bytes of the file (zeros), so that appends neither find the disk full
/// nor change the file's size.
fn preallocate(f: &File, len: u64, path: &Path) -> Result<(), StorageError> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid open descriptor; fallocate only reads its arguments.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // A file system without fallocate (tmpfs has it; some do not): size it at least.
        return f
            .set_len(len)
            .map_err(|e| io(format!("sizing {}", path.display()), e));
    }
    Err(io(format!("preallocating {}", path.display()), e))
}

impl LogFiles for FsLogFiles {
    fn list(&self) -> Result<Vec<u64>, StorageError> {
        let what = || format!("reading {}", self.dir.display());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(what(), e))? {
            let entry = entry.map_err(|e| io(what(), e))?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".seg"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(n);
        }
        Ok(out)
    }

    fn read(&self, segment: u64) -> Result<Vec<u8>, StorageError> {
        let path = self.path(segment);
        std::fs::read(&path).map_err(|e| io(format!("reading {}", path.display()), e))
    }

    fn read_at(&self, segment: u64, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        use std::os::unix::fs::FileExt;
        let path = self.path(segment);
        let f = {
            let mut readers = lock(&self.readers);
            match readers.get(&segment) {
                Some(f) => f.clone(),
                None => {
                    let f = std::sync::Arc::new(
                        File::open(&path)
                            .map_err(|e| io(format!("opening {}", path.display()), e))?,
                    );
                    if readers.len() >= 64 {
                        readers.clear();
                    }
                    readers.insert(segment, f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0; len as usize];
        f.read_exact_at(&mut buf, offset)
            .map_err(|e| io(format!("reading {} at byte {offset}", path.display()), e))?;
        Ok(buf)
    }

    fn create(&self, segment: u64, len: u64) -> Result<(), StorageError> {
        let path = self.path(segment);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(format!("creating {}", path.display()), e))?;
        preallocate(&f, len, &path)?;
        f.sync_all()
            .map_err(|e| io(format!("fsync of {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        lock(&self.open).insert(segment, std::sync::Arc::new(f));
        Ok(())
    }

    fn write(&self, segment: u64, offset: u64, bytes: &[u8]) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt;
        self.file(segment)?
            .write_all_at(bytes, offset)
            .map_err(|e| io(format!("writing {}", self.path(segment).display()), e))
    }

    fn sync(&self, segment: u64) -> Result<(), StorageError> {
        self.file(segment)?
            .sync_data()
            .map_err(|e| io(format!("fdatasync of {}", self.path(segment).display()), e))
    }

    fn cut(&self, segment: u64, len: u64, prealloc: u64) -> Result<(), StorageError> {
        let path = self.path(segment);
        let f = self.file(segment)?;
        f.set_len(len)
            .map_err(|e| io(format!("truncating {}", path.display()), e))?;
        preallocate(&f, prealloc.max(len), &path)?;
        f.sync_all()
            .map_err(|e| io(format!("fsync of {}", path.display()), e))
    }

    fn remove(&self, segment: u64) -> Result<(), StorageError> {
        lock(&self.open).remove(&segment);
        lock(&self.readers).remove(&segment);
        let path = self.path(segment);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("deleting {}", path.display()), e)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends one framed record to `out`.
pub fn frame_into(out: &mut Vec<u8>, number: u64, flags: u8, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(LOG_FORMAT_V1);
    out.push(flags);
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC32C of a frame, its own `crc` field left out.
fn frame_crc(frame: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&frame[..4]);
    crc32c::crc32c_append(crc, &frame[8..])
}

/// A frame read back: its number, flags, payload and total size.
struct Frame<'a> {
    number: u64,
    flags: u8,
    payload: &'a [u8],
    size: usize,
}

/// The frame at the start of `bytes`, if one checks out.
fn parse(bytes: &[u8]) -> Result<Frame<'_>, &'static str> {
    if bytes.len() < HEADER {
        return Err("a frame header cut short");
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if bytes[8] != LOG_FORMAT_V1 {
        return Err("an unknown frame version");
    }
    if len > bytes.len() - HEADER {
        return Err("a length past the end of the segment");
    }
    let frame = &bytes[..HEADER + len];
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if frame_crc(frame) != stored {
        return Err("a CRC32C mismatch");
    }
    Ok(Frame {
        number: u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes")),
        flags: bytes[9],
        payload: &frame[HEADER..],
        size: HEADER + len,
    })
}

/// Whether some intact frame after `from` starts a write later than record `after`: then
/// the damage at `from` is not a torn tail (acknowledged records lie beyond it).
fn later_write_after(bytes: &[u8], from: usize, after: Option<u64>) -> bool {
    let mut at = from + 1;
    while at + HEADER <= bytes.len() {
        // Cheap tests first: most of a damaged tail is zeros.
        if bytes[at + 8] == LOG_FORMAT_V1 && bytes[at + 9] & FIRST_IN_WRITE != 0 {
            if let Ok(f) = parse(&bytes[at..]) {
                if f.flags & FIRST_IN_WRITE != 0 && after.map_or(true, |a| f.number > a) {
                    return true;
                }
            }
        }
        at += 1;
    }
    false
}

struct Active {
    segment: u64,
    /// Where the next write goes.
    offset: u64,
    /// The segment's preallocated size.
    len: u64,
}

struct LogState {
    /// Segments present, oldest first (the last is the active one, once there is one).
    segments: Vec<u64>,
    active: Option<Active>,
    /// The next record's number.
    next: u64,
    /// A write failed: the log takes no more (fail-stop; the process is about to exit).
    broken: bool,
    buf: Vec<u8>,
}

/// What `open` found.
pub struct Replay {
    /// Records handed to the caller (after the covered number).
    pub records: usize,
    /// Bytes of a torn tail cut from the last segment (0: none).
    pub cut_bytes: u64,
}

pub struct SegmentLog {
    files: Box<dyn LogFiles>,
    segment_bytes: u64,
    state: Mutex<LogState>,
}

fn corrupt(segment: u64, offset: usize, reason: String) -> StorageError {
    StorageError::Corrupt {
        key: format!("log/{segment:020}.seg at byte {offset}"),
        reason,
    }
}

impl SegmentLog {
    /// Reads the log: hands every record numbered `covered` or more to `apply`, oldest
    /// first (`apply(number, payload)`), cuts a torn tail, and answers the log, ready to
    /// append after the last record. Corruption before the tail is an error.
    pub fn open(
        files: Box<dyn LogFiles>,
        segment_bytes: u64,
        covered: u64,
        covered_at: Option<At>,
        mut apply: impl FnMut(u64, Pos, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(SegmentLog, Replay), StorageError> {
        let mut segments = files.list()?;
        segments.sort_unstable();
        // The records below `covered` are in sled (and the events among them are read
        // where they lie, checked by their own checksums): reading starts at the segment
        // holding record `covered`, at the byte where it starts when that is known.
        let start = match covered_at {
            Some((segment, offset)) => Some(match segments.binary_search(&segment) {
                Ok(i) => (i, offset),
                // Record `covered` did not fit there and started a segment of its own;
                // the one before, all covered, may be gone.
                Err(_) => match segments.binary_search(&covered) {
                    Ok(i) => (i, 0),
                    Err(_) => {
                        return Err(corrupt(
                            segment,
                            0,
                            format!("the segment holding record {covered} is missing"),
                        ))
                    }
                },
            }),
            None => None,
        };
        let first_needed = match start {
            Some((i, _)) => i,
            None => segments.iter().rposition(|&s| s <= covered).unwrap_or(0),
        };
        let mut replay = Replay {
            records: 0,
            cut_bytes: 0,
        };
        let mut expected: Option<u64> = None;
        let mut active = None;
        for (i, &segment) in segments.iter().enumerate().skip(first_needed) {
            let last = i + 1 == segments.len();
            let bytes = files.read(segment)?;
            match expected {
                None if segment > covered => {
                    return Err(corrupt(
                        segment,
                        0,
                        format!(
                            "the log starts at record {segment}, but sled covers records \
                             below {covered} only: a segment is missing"
                        ),
                    ))
                }
                Some(e) if e != segment => {
                    return Err(corrupt(
                        segment,
                        0,
                        format!("the previous segment ends before record {e}: records are missing"),
                    ))
                }
                _ => {}
            }
            let (mut want, mut at) = match start {
                Some((_, offset)) if i == first_needed => (covered, offset as usize),
                _ => (segment, 0usize),
            };
            if at > bytes.len() {
                return Err(corrupt(
                    segment,
                    at,
                    format!("record {covered} starts past the end of its segment"),
                ));
            }
            let mut last_number = None;
            let end = loop {
                if at == bytes.len() || bytes[at..].iter().all(|&b| b == 0) {
                    break at;
                }
                let bad = match parse(&bytes[at..]) {
                    Ok(f) if f.number == want => {
                        if f.number >= covered {
                            let pos = Pos {
                                segment,
                                offset: (at + HEADER) as u64,
                                len: f.payload.len() as u32,
                            };
                            apply(f.number, pos, f.payload)?;
                            replay.records += 1;
                        }
                        last_number = Some(f.number);
                        want += 1;
                        at += f.size;
                        continue;
                    }
                    Ok(f) => format!("record {} where {want} belongs", f.number),
                    Err(reason) => reason.to_string(),
                };
                if !last || later_write_after(&bytes, at, last_number) {
                    return Err(corrupt(
                        segment,
                        at,
                        format!(
                            "{bad}, before the end of the log: acknowledged records would be \
                             lost; refusing to open (restore the data directory from a backup)"
                        ),
                    ));
                }
                let garbage = bytes.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1);
                replay.cut_bytes = (garbage - at) as u64;
                tracing::warn!(
                    segment = format!("{segment:020}.seg"),
                    offset = at,
                    cut_bytes = replay.cut_bytes,
                    reason = bad.as_str(),
                    "cut a torn tail from the write-ahead log ({} bytes after its last whole record)",
                    replay.cut_bytes
                );
                files.cut(segment, at as u64, segment_bytes.max(bytes.len() as u64))?;
                break at;
            };
            expected = Some(want);
            if last {
                active = Some(Active {
                    segment,
                    offset: end as u64,
                    len: (bytes.len() as u64).max(segment_bytes),
                });
            }
        }
        let next = expected.unwrap_or(covered).max(covered);
        let log = SegmentLog {
            files,
            segment_bytes,
            state: Mutex::new(LogState {
                segments,
                active,
                next,
                broken: false,
                buf: Vec::new(),
            }),
        };
        Ok((log, replay))
    }

    /// The number the next record gets.
    pub fn next(&self) -> u64 {
        lock(&self.state).next
    }

    /// Where the next write goes if it is `n` bytes and starts with record `first`: the
    /// active segment's end if it fits (or the segment is empty), else a new segment
    /// named `first`. `append` puts it exactly there.
    pub fn placement(&self, first: u64, n: u64) -> At {
        match &lock(&self.state).active {
            Some(a) if a.offset + n <= a.len || a.offset == 0 => (a.segment, a.offset),
            _ => (first, 0),
        }
    }

    /// Where the last write ended (`None` before the first segment).
    pub fn end(&self) -> Option<At> {
        lock(&self.state)
            .active
            .as_ref()
            .map(|a| (a.segment, a.offset))
    }

    /// The bytes at `pos` (written and made durable before).
    pub fn read_at(&self, pos: Pos) -> Result<Vec<u8>, StorageError> {
        self.files.read_at(pos.segment, pos.offset, pos.len)
    }

    /// Appends records numbered from `first` (which must be `next()`), in one write to the
    /// log, and makes them durable with one fdatasync. Any failure leaves the log broken:
    /// the caller is fail-stop.
    /// Answers where the write went (`placement`), `None` when there was nothing to write.
    pub fn append(&self, first: u64, payloads: &[&[u8]]) -> Result<Option<At>, StorageError> {
        if payloads.is_empty() {
            return Ok(None);
        }
        let mut s = lock(&self.state);
        if s.broken {
            return Err(StorageError::Io(
                "the write-ahead log failed earlier".into(),
            ));
        }
        assert_eq!(first, s.next, "records are appended in sequence");
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        for (i, p) in payloads.iter().enumerate() {
            let flags = if i == 0 { FIRST_IN_WRITE } else { 0 };
            frame_into(&mut buf, first + i as u64, flags, p);
        }
        let r = self.write_synced(&mut s, first, &buf);
        s.buf = buf;
        match r {
            Ok(at) => {
                s.next = first + payloads.len() as u64;
                Ok(Some(at))
            }
            Err(e) => {
                s.broken = true;
                Err(e)
            }
        }
    }

    fn write_synced(&self, s: &mut LogState, first: u64, buf: &[u8]) -> Result<At, StorageError> {
        let n = buf.len() as u64;
        // The rule `placement` answers by.
        let fits = s
            .active
            .as_ref()
            .is_some_and(|a| a.offset + n <= a.len || a.offset == 0);
        if !fits {
            let len = self.segment_bytes.max(n);
            self.files.create(first, len)?;
            s.segments.push(first);
            s.active = Some(Active {
                segment: first,
                offset: 0,
                len,
            });
        }
        let a = s.active.as_mut().expect("an active segment");
        let at = (a.segment, a.offset);
        self.files.write(a.segment, a.offset, buf)?;
        self.files.sync(a.segment)?;
        a.offset += n;
        Ok(at)
    }

    /// Deletes the segments whose records are all below `covered` (never the active one).
    /// Answers how many.
    pub fn remove_covered(&self, covered: u64) -> Result<usize, StorageError> {
        let doomed: Vec<u64> = {
            let s = lock(&self.state);
            let active = s.active.as_ref().map(|a| a.segment);
            s.segments
                .windows(2)
                .filter(|w| w[1] <= covered && Some(w[0]) != active)
                .map(|w| w[0])
                .collect()
        };
        for &segment in &doomed {
            self.files.remove(segment)?;
        }
        lock(&self.state).segments.retain(|s| !doomed.contains(s));
        Ok(doomed.len())
    }

    /// Segments present (oldest first).
    pub fn segments(&self) -> Vec<u64> {
        lock(&self.state).segments.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, covered: u64) -> (SegmentLog, Vec<(u64, Vec<u8>)>, Replay) {
        let mut got = Vec::new();
        let (log, replay) = SegmentLog::open(
            Box::new(FsLogFiles::open(dir).unwrap()),
            4096,
            covered,
            None,
            |n, _, p| {
                got.push((n, p.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        (log, got, replay)
    }

    fn seg_path(dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("{n:020}.seg"))
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, got, _) = open(dir.path(), 0);
            assert!(got.is_empty());
            for i in 0..20u64 {
                let p = vec![i as u8; 700];
                log.append(i, &[&p]).unwrap();
            }
            assert!(log.segments().len() > 3, "{:?}", log.segments());
            // Covered below 10: the segments wholly below go.
            let removed = log.remove_covered(10).unwrap();
            assert!(removed > 0);
        }
        let (log, got, replay) = open(dir.path(), 10);
        assert_eq!(replay.cut_bytes, 0);
        let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (10..20).collect::<Vec<_>>());
        assert!(got.iter().all(|(n, p)| p == &vec![*n as u8; 700]));
        assert_eq!(log.next(), 20);
        log.append(20, &[b"more", b"and more"]).unwrap();
        drop(log);
        let (_, got, _) = open(dir.path(), 19);
        assert_eq!(got.len(), 3);
    }

    /// What sled covers is where record `covered` starts: the end of a segment when the
    /// record did not fit there and started the next one, which may be all that is left.
    #[test]
    fn reading_starts_where_the_first_record_not_covered_starts() {
        let dir = tempfile::tempdir().unwrap();
        let end;
        {
            let (log, _, _) = open(dir.path(), 0);
            log.append(0, &[&[1; 1000], &[2; 1000]]).unwrap();
            end = log.end().unwrap();
            log.append(2, &[&[3; 4000]]).unwrap(); // does not fit: segment 2
            assert_eq!(log.segments(), vec![0, 2]);
        }
        let reopen = |at: Option<At>| {
            let mut got = Vec::new();
            let files = Box::new(FsLogFiles::open(dir.path()).unwrap());
            SegmentLog::open(files, 4096, 2, at, |n, _, _| {
                got.push(n);
                Ok(())
            })
            .map(|(log, _)| (log.next(), got))
        };
        assert_eq!(reopen(Some(end)).unwrap(), (3, vec![2]));
        assert_eq!(reopen(None).unwrap(), (3, vec![2]));
        {
            let (log, _, _) = open(dir.path(), 2);
            assert_eq!(log.remove_covered(2).unwrap(), 1);
        }
        assert_eq!(reopen(Some(end)).unwrap(), (3, vec![2]));
        std::fs::remove_file(seg_path(dir.path(), 2)).unwrap();
        let Err(err) = reopen(Some(end)) else {
            panic!("refused")
        };
        assert!(
            err.to_string()
                .contains("the segment holding record 2 is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_logged_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seg;
        {
            let (log, _, _) = open(dir.path(), 0);
            log.append(0, &[b"one", b"two"]).unwrap();
            log.append(2, &[b"three"]).unwrap();
            seg = log.segments()[0];
        }
        let path = seg_path(dir.path(), seg);
        let clean = std::fs::read(&path).unwrap();
        let third = 2 * HEADER + 6;
        // A torn last write: a prefix of record 2, then zeros.
        let mut torn = clean.clone();
        for b in &mut torn[third + 10..third + HEADER + 5] {
            *b = 0;
        }
        std::fs::write(&path, &torn).unwrap();
        let (log, got, replay) = open(dir.path(), 0);
        assert_eq!(got.len(), 2);
        assert_eq!(replay.cut_bytes, 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        log.append(2, &[b"three again"]).unwrap();
        drop(log);
        let (_, got, replay) = open(dir.path(), 0);
        assert_eq!(got[2], (2, b"three again".to_vec()));
        assert_eq!(replay.cut_bytes, 0);

        // A flipped byte in record 0, with the later write intact: a hard error.
        let mut bad = std::fs::read(&path).unwrap();
        bad[HEADER] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let err = SegmentLog::open(
            Box::new(FsLogFiles::open(dir.path()).unwrap()),
            4096,
            0,
            None,
            |_, _, _| Ok(()),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("CRC32C"), "{err}");
        assert!(
            err.to_string().contains("before the end of the log"),
            "{err}"
        );
    }

    #[test]
    fn frames_refuse_every_flipped_byte() {
        let mut buf = Vec::new();
        frame_into(&mut buf, 7, FIRST_IN_WRITE, b"payload");
        let f = parse(&buf).unwrap();
        assert_eq!((f.number, f.flags, f.payload), (7, 1, &b"payload"[..]));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(parse(&bad).is_err(), "flipped bit {bit} of byte {i}");
            }
        }
        // Cut short anywhere: refused too.
        for n in 0..buf.len() {
            assert!(parse(&buf[..n]).is_err(), "cut at {n}");
        }
    }
}
