//! The config parser: any text is a valid config or an error naming the bad key, never a
//! panic; a config that validates yields a usable tariff.
//!
//! Shared by the fuzz target and by `tests/fuzz_corpus.rs`, which replays the corpus.
use creditsd::config::Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        let pricing = config.pricing();
        assert!(pricing.plans.contains_key("free"));
        let _ = config.listen_addr();
    }
}
