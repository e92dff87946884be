//! cargo-fuzz entry point; the checks live in `fuzz/checks/json_request.rs`.
#![no_main]

#[path = "../checks/json_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
