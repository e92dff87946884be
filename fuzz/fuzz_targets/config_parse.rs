//! cargo-fuzz entry point; the checks live in `fuzz/checks/config_parse.rs`.
#![no_main]

#[path = "../checks/config_parse.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run(data));
