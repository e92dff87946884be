//! The Python side, run by `cargo test` against the release binary (built here first,
//! `cargo build --release`): the client's type check (`mypy --strict`), its tests
//! (pytest, driving the real daemon), the API check (the OpenAPI document validated,
//! served, and held against the real daemon by schemathesis), and the console's browser
//! tests (selenium and headless chromium, `tests/console`). `scripts/python-env` makes
//! the pinned venv first (PyPI), `scripts/browser-env` makes sure of chromium; a missing
//! Python, browser or a failed install fails these tests, never skips them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release daemon, built once per run of this binary: what operators run.
fn release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo)
            .args(["build", "--release", "--locked", "--bin", "creditsd"])
            .current_dir(root()));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        target.join("release/creditsd")
    })
}

/// The venv, made once per run of this binary (its tests share it).
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = root().join(".venv-py");
        run(Command::new(root().join("scripts/python-env")).env("CREDITSD_VENV", &venv));
        venv
    })
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{text}",
        out.status
    );
    // The last lines say what ran (test counts, schemathesis's summary).
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    for line in tail.iter().rev() {
        println!("{line}");
    }
}

#[test]
fn the_client_type_checks_strictly() {
    let venv = venv();
    run(Command::new(venv.join("bin/mypy"))
        .arg("--config-file")
        .arg(root().join("clients/python/pyproject.toml"))
        .arg(root().join("clients/python/src")));
}

#[test]
fn the_client_tests_pass_against_the_real_daemon() {
    let venv = venv();
    run(Command::new(venv.join("bin/pytest"))
        .args(["-q", "-p", "no:cacheprovider"])
        .arg(root().join("clients/python/tests"))
        .env("CREDITSD_BIN", release_binary())
        .current_dir(root()));
}

#[test]
fn the_daemon_answers_as_its_openapi_document_says() {
    let venv = venv();
    run(Command::new(root().join("scripts/api-check"))
        .env("CREDITSD_BIN", release_binary())
        .env("CREDITSD_VENV", venv)
        .env("API_CHECK_REPORT_DIR", root().join("target/api-check")));
}

#[test]
fn the_console_works_in_a_real_browser() {
    let venv = venv();
    run(Command::new(root().join("scripts/browser-env")).env("CREDITSD_VENV", venv));
    // Writes docs/console.png, the account page at 1280 px.
    run(Command::new(venv.join("bin/pytest"))
        .args(["-q", "-p", "no:cacheprovider", "--durations=3"])
        .arg(root().join("tests/console"))
        .env("CREDITSD_BIN", release_binary())
        .current_dir(root()));
}
