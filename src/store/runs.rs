//! Where events lie in the write-ahead log. An event is written once, in its mutation's log
//! record, and stays there: sled holds no copy of it, only *runs*, one key per account per
//! checkpoint, saying where its consecutive events lie (`R‖account‖0‖first` →
//! `records::RunRecordV1`: the first sequence number, then each event's segment, offset
//! and length). A read finds the run holding a sequence number with one seek backwards
//! from it, then reads the event's bytes where they lie; the event record's own CRC checks
//! them. The checkpointer (and the replay at open) is the only writer of runs, through
//! `EventIndex`, the overlay's `Index` for event keys.

use std::ops::Bound;

use super::codec::{decode, encode};
use super::kv::Kv;
use super::overlay::Index;
use super::records::RunRecordV1;
use super::segment_log::Pos;
use super::StorageError;

/// The tag of event keys (`E‖account‖0‖seq`), whose values stay in the log.
pub const EVENT: u8 = b'E';
/// The tag of run keys.
pub const RUN: u8 = b'R';

/// Consecutive events of one account: `positions[i]` is event `first + i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub positions: Vec<Pos>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.positions.len() as u64
    }

    fn get(&self, seq: u64) -> Option<Pos> {
        let i = seq.checked_sub(self.first)?;
        self.positions.get(usize::try_from(i).ok()?).copied()
    }
}

impl From<&Run> for RunRecordV1 {
    fn from(r: &Run) -> Self {
        RunRecordV1 {
            first: r.first,
            events: r
                .positions
                .iter()
                .map(|p| (p.segment, p.offset, p.len))
                .collect(),
        }
    }
}

impl From<RunRecordV1> for Run {
    fn from(r: RunRecordV1) -> Self {
        Run {
            first: r.first,
            positions: r
                .events
                .into_iter()
                .map(|(segment, offset, len)| Pos {
                    segment,
                    offset,
                    len,
                })
                .collect(),
        }
    }
}

fn keyed(tag: u8, account: &[u8], n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 10);
    k.push(tag);
    k.extend_from_slice(account);
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The key of an event, `E‖account‖0‖seq` (its value stays in the log).
pub fn event_key(account: &[u8], seq: u64) -> Vec<u8> {
    keyed(EVENT, account, seq)
}

pub fn run_key(account: &[u8], first: u64) -> Vec<u8> {
    keyed(RUN, account, first)
}

/// The account and sequence number of an event key `E‖account‖0‖seq`.
pub fn parse_event_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() < 10 || key[0] != EVENT || key[key.len() - 9] != 0 {
        return None;
    }
    let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    Some((&key[1..key.len() - 9], seq))
}

fn decode_run(key: &[u8], bytes: &[u8]) -> Result<Run, StorageError> {
    decode::<RunRecordV1>(key, bytes).map(Run::from)
}

/// The run holding `seq`, or the nearest below it (with its key).
fn run_at_or_below(
    kv: &dyn Kv,
    account: &[u8],
    seq: u64,
) -> Result<Option<(Vec<u8>, Run)>, StorageError> {
    let lo = Bound::Included(run_key(account, 0));
    let hi = Bound::Included(run_key(account, seq));
    match kv.range(lo, hi, true).next() {
        Some(r) => {
            let (k, v) = r?;
            let run = decode_run(&k, &v)?;
            Ok(Some((k, run)))
        }
        None => Ok(None),
    }
}

/// Where event `seq` of `account` lies, if a run holds it.
pub fn find(kv: &dyn Kv, account: &[u8], seq: u64) -> Result<Option<Pos>, StorageError> {
    Ok(run_at_or_below(kv, account, seq)?.and_then(|(_, run)| run.get(seq)))
}

/// Up to `limit` indexed events of `account` with `seq >= from` (ascending), or with
/// `seq < from` (descending, with `rev`), and where each lies.
pub fn positions(
    kv: &dyn Kv,
    account: &[u8],
    from: u64,
    rev: bool,
    limit: usize,
) -> Result<Vec<(u64, Pos)>, StorageError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    if rev {
        let Some(top) = from.checked_sub(1) else {
            return Ok(out);
        };
        let lo = Bound::Included(run_key(account, 0));
        let hi = Bound::Included(run_key(account, top));
        for r in kv.range(lo, hi, true) {
            let (k, v) = r?;
            let run = decode_run(&k, &v)?;
            let mut seq = run.end().min(from);
            while seq > run.first {
                seq -= 1;
                out.push((seq, run.get(seq).expect("inside the run")));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        return Ok(out);
    }
    let take = |run: &Run, out: &mut Vec<(u64, Pos)>| {
        for seq in run.first.max(from)..run.end() {
            out.push((seq, run.get(seq).expect("inside the run")));
            if out.len() == limit {
                return false;
            }
        }
        true
    };
    let start = match run_at_or_below(kv, account, from)? {
        Some((k, run)) => {
            if !take(&run, &mut out) {
                return Ok(out);
            }
            Bound::Excluded(k)
        }
        None => Bound::Included(run_key(account, 0)),
    };
    let hi = Bound::Included(run_key(account, u64::MAX));
    for r in kv.range(start, hi, false) {
        let (k, v) = r?;
        if !take(&decode_run(&k, &v)?, &mut out) {
            break;
        }
    }
    Ok(out)
}

/// The first record of the oldest segment any run points into (`u64::MAX` when no run
/// does): the segments before it hold no indexed event. One seek per account: an
/// account's first run holds its oldest event, and its events lie in the log in order.
pub fn oldest_segment(kv: &dyn Kv) -> Result<u64, StorageError> {
    let mut oldest = u64::MAX;
    let mut lo = Bound::Included(vec![RUN]);
    loop {
        let first = kv.range(lo, Bound::Excluded(vec![RUN + 1]), false).next();
        let Some(r) = first else {
            return Ok(oldest);
        };
        let (k, v) = r?;
        let run = decode_run(&k, &v)?;
        if let Some(p) = run.positions.first() {
            oldest = oldest.min(p.segment);
        }
        // The next account's runs: past every `R‖account‖0‖…`.
        let mut next = k[..k.len() - 9].to_vec();
        next.push(1);
        lo = Bound::Included(next);
    }
}

/// Splits key-ordered event positions into runs of consecutive events, by account.
fn runs_of<'a>(puts: &[(&'a [u8], Pos)]) -> Vec<(&'a [u8], Run)> {
    let mut out: Vec<(&[u8], Run)> = Vec::new();
    for &(key, pos) in puts {
        let Some((account, seq)) = parse_event_key(key) else {
            continue;
        };
        match out.last_mut() {
            Some((a, run)) if *a == account && run.end() == seq => run.positions.push(pos),
            _ => out.push((
                account,
                Run {
                    first: seq,
                    positions: vec![pos],
                },
            )),
        }
    }
    out
}

/// The overlay's `Index` for event keys: the checkpointer hands it a layer's events, and
/// it writes their runs.
pub struct EventIndex;

impl Index for EventIndex {
    fn located(&self, key: &[u8]) -> bool {
        key.first() == Some(&EVENT)
    }

    /// Any segment may hold events still kept: only retention deletes segments.
    fn floor(&self) -> u64 {
        0
    }

    fn write(
        &self,
        kv: &dyn Kv,
        puts: &[(&[u8], Pos)],
        deletes: &[&[u8]],
    ) -> Result<(), StorageError> {
        debug_assert!(
            puts.windows(2).all(|w| w[0].0 < w[1].0),
            "puts in key order"
        );
        for (account, run) in runs_of(puts) {
            // A run written again (a replay over a checkpoint the crash cut short) holds
            // at least what it held: the same first event, and the records after it.
            kv.insert(
                &run_key(account, run.first),
                &encode(&RunRecordV1::from(&run)),
            )?;
        }
        for key in deletes {
            // An earlier release's copy in sled, if any.
            kv.remove(key)?;
        }
        let mut deleted: Vec<(&[u8], u64)> =
            deletes.iter().filter_map(|k| parse_event_key(k)).collect();
        deleted.sort_unstable();
        let mut i = 0;
        while i < deleted.len() {
            let account = deleted[i].0;
            let j = i + deleted[i..].partition_point(|d| d.0 == account);
            forget(kv, account, &deleted[i..j])?;
            i = j;
        }
        Ok(())
    }
}

/// Takes the events `gone` (sorted, all of `account`) out of its runs: a run left empty is
/// removed, one with a hole is split, one that lost its first events moves to the key of
/// its new first. New keys are written before old ones are removed, so a crash between
/// leaves overlapping runs that agree, and the replay of the deletes finishes the job.
fn forget(kv: &dyn Kv, account: &[u8], gone: &[(&[u8], u64)]) -> Result<(), StorageError> {
    let (Some(lo), Some(hi)) = (gone.first().map(|g| g.1), gone.last().map(|g| g.1)) else {
        return Ok(());
    };
    let start = match run_at_or_below(kv, account, lo)? {
        Some((k, _)) => k,
        None => run_key(account, lo),
    };
    let runs: Vec<(Vec<u8>, Run)> = kv
        .range(
            Bound::Included(start),
            Bound::Included(run_key(account, hi)),
            false,
        )
        .map(|r| r.and_then(|(k, v)| decode_run(&k, &v).map(|run| (k, run))))
        .collect::<Result<_, _>>()?;
    for (key, run) in runs {
        let mut pieces: Vec<Run> = Vec::new();
        for seq in run.first..run.end() {
            if gone.binary_search_by(|g| g.1.cmp(&seq)).is_ok() {
                continue;
            }
            let pos = run.get(seq).expect("inside the run");
            match pieces.last_mut() {
                Some(p) if p.end() == seq => p.positions.push(pos),
                _ => pieces.push(Run {
                    first: seq,
                    positions: vec![pos],
                }),
            }
        }
        if pieces.len() == 1 && pieces[0] == run {
            continue;
        }
        for p in &pieces {
            kv.insert(&run_key(account, p.first), &encode(&RunRecordV1::from(p)))?;
        }
        if pieces.first().map_or(true, |p| p.first != run.first) {
            kv.remove(&key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::SledKv;

    fn pos(n: u64) -> Pos {
        Pos {
            segment: n / 10,
            offset: n * 100,
            len: 50 + n as u32,
        }
    }

    fn ev(account: &str, seq: u64) -> Vec<u8> {
        event_key(account.as_bytes(), seq)
    }

    fn put(kv: &dyn Kv, account: &str, seqs: std::ops::Range<u64>) {
        let keys: Vec<Vec<u8>> = seqs.clone().map(|s| ev(account, s)).collect();
        let puts: Vec<(&[u8], Pos)> = keys
            .iter()
            .zip(seqs)
            .map(|(k, s)| (k.as_slice(), pos(s)))
            .collect();
        EventIndex.write(kv, &puts, &[]).unwrap();
    }

    fn all(kv: &dyn Kv, account: &str) -> Vec<u64> {
        positions(kv, account.as_bytes(), 0, false, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(s, p)| {
                assert_eq!(p, pos(s));
                s
            })
            .collect()
    }

    #[test]
    fn runs_find_every_event_both_ways_and_forget_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        put(&kv, "a", 1..4);
        put(&kv, "b", 1..3);
        put(&kv, "a", 4..9);
        put(&kv, "a", 9..10);
        put(&kv, "ab", 1..2);
        assert_eq!(all(&kv, "a"), (1..10).collect::<Vec<_>>());
        assert_eq!(all(&kv, "b"), vec![1, 2]);
        assert_eq!(all(&kv, "ab"), vec![1]);
        for s in 1..10 {
            assert_eq!(find(&kv, b"a", s).unwrap(), Some(pos(s)));
        }
        assert_eq!(find(&kv, b"a", 10).unwrap(), None);
        assert_eq!(find(&kv, b"a", 0).unwrap(), None);
        let page = |from, rev, limit| -> Vec<u64> {
            positions(&kv, b"a", from, rev, limit)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        assert_eq!(page(3, false, 3), vec![3, 4, 5]);
        assert_eq!(page(5, true, 3), vec![4, 3, 2]);
        assert_eq!(page(100, true, 2), vec![9, 8]);
        assert_eq!(page(1, true, 2), Vec::<u64>::new());
        assert_eq!(oldest_segment(&kv).unwrap(), 0);

        // Retention deletes from the bottom; a hole splits a run.
        let gone: Vec<Vec<u8>> = (1..6).map(|s| ev("a", s)).chain([ev("a", 7)]).collect();
        let gone: Vec<&[u8]> = gone.iter().map(|k| k.as_slice()).collect();
        EventIndex.write(&kv, &[], &gone).unwrap();
        assert_eq!(all(&kv, "a"), vec![6, 8, 9]);
        assert_eq!(find(&kv, b"a", 7).unwrap(), None);
        assert_eq!(find(&kv, b"a", 8).unwrap(), Some(pos(8)));
        assert_eq!(all(&kv, "b"), vec![1, 2]);
        // Deleting again changes nothing.
        EventIndex.write(&kv, &[], &gone).unwrap();
        assert_eq!(all(&kv, "a"), vec![6, 8, 9]);
        assert_eq!(oldest_segment(&kv).unwrap(), 0);
        let b: Vec<Vec<u8>> = (1..3).map(|s| ev("b", s)).collect();
        let b: Vec<&[u8]> = b.iter().map(|k| k.as_slice()).collect();
        EventIndex.write(&kv, &[], &b).unwrap();
        assert!(all(&kv, "b").is_empty());
    }

    #[test]
    fn the_oldest_segment_is_the_minimum_over_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(oldest_segment(&kv).unwrap(), u64::MAX);
        put(&kv, "z", 35..40);
        put(&kv, "m", 21..25);
        put(&kv, "m", 40..45);
        assert_eq!(oldest_segment(&kv).unwrap(), 2);
    }
}
