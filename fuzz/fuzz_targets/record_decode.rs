//! cargo-fuzz entry point; the checks live in `fuzz/checks/record_decode.rs`.
#![no_main]

#[path = "../checks/record_decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
