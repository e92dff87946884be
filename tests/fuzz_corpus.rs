//! Replays the fuzzers' corpora (fuzz/corpus/TARGET: the seeds and every input cargo-fuzz
//! kept for new coverage, including any that once failed) through the same checks the
//! fuzz targets run, so `cargo test` guards what fuzzing found without needing cargo-fuzz
//! or nightly flags. Running the fuzzers themselves: `fuzz/run.sh TARGET SECONDS`.

use std::path::Path;

#[path = "../fuzz/checks/record_decode.rs"]
mod record_decode;

#[path = "../fuzz/checks/json_request.rs"]
mod json_request;

#[path = "../fuzz/checks/config_parse.rs"]
mod config_parse;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: input {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    n
}

#[test]
fn record_decode_corpus() {
    replay("record_decode", record_decode::run);
}

#[test]
fn json_request_corpus() {
    replay("json_request", json_request::run);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", config_parse::run);
}
