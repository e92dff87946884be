//! The `creditsd` command line: serve, check-config, audit, migrate, hash-token.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use creditsd::config::Config;
use creditsd::store::{SledStore, StorageError, Store};

/// mimalloc instead of glibc's malloc: the hot path allocates small, short-lived buffers
/// (JSON, keys, records) on several threads, and glibc's malloc/free took about 15% of the
/// daemon's CPU under load (README, "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "creditsd", version, about = "Credits accounting daemon")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default command).
    Serve {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Overrides [server] listen (127.0.0.1:0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Overrides [storage] path.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file; a bad value is named by its key.
    CheckConfig {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Replay every account's log and check the books; non-zero exit on any mismatch.
    Audit {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Rewrite every record of an earlier release's layout in today's, with the daemon
    /// stopped; a second run rewrites nothing.
    Migrate {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the SHA-256 of a token for [[auth.tokens]] (reads stdin without an argument).
    HashToken { token: Option<String> },
}

fn load(
    path: &std::path::Path,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> Result<Config, String> {
    let mut config = Config::load(path).map_err(|e| e.to_string())?;
    if let Some(d) = data_dir {
        config.storage.path = d;
    }
    if let Some(l) = listen {
        config.server.listen = l.to_string();
    }
    Ok(config)
}

/// Opens the store of an existing data directory for `audit` or `migrate` (`command`),
/// which `done` names in the past tense. Opening a directory that holds no store would
/// create one: a typo in --data-dir must not read as a store audited or migrated, so it
/// is exit 2 with nothing created. A directory in use is 75, a store of a newer release
/// 65 (nothing was changed), any other failure 2.
fn open_existing(command: &str, done: &str, config: &Config) -> Result<Arc<SledStore>, ExitCode> {
    let path = &config.storage.path;
    if !path.join("db").is_file() {
        eprintln!(
            "creditsd {command}: {} holds no creditsd store (no db file); nothing {done}",
            path.display()
        );
        return Err(ExitCode::from(2));
    }
    creditsd::daemon::open_store(config).map_err(|e| {
        match &e {
            StorageError::Locked { .. } => {
                eprintln!("creditsd {command}: {e} (stop the daemon first)")
            }
            StorageError::Newer { .. } => eprintln!("creditsd {command}: {e}"),
            _ => eprintln!("creditsd {command}: opening {}: {e}", path.display()),
        }
        ExitCode::from(creditsd::daemon::open_exit_code(&e))
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Installs the SIGTERM and SIGINT handlers now, before the daemon says it is ready (a
/// signal that arrived between the ready line and a lazily installed handler would kill
/// the process instead of stopping it gracefully), and answers the future of either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Cmd::Serve {
        config: "config.toml".into(),
        listen: None,
        data_dir: None,
    });
    match command {
        Cmd::Serve {
            config,
            listen,
            data_dir,
        } => {
            let config = match load(&config, data_dir, listen) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("creditsd: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            creditsd::install_fail_stop_panic_hook();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let stop = {
                let _context = runtime.enter();
                shutdown_signal()
            };
            match runtime.block_on(creditsd::daemon::run(config, stop)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("creditsd: {e}");
                    ExitCode::from(e.exit_code)
                }
            }
        }
        Cmd::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => match creditsd::daemon::check_exposure(&c) {
                Ok(()) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Audit { config, data_dir } => {
            let config = match load(&config, data_dir, None) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("creditsd: {e}");
                    return ExitCode::from(2);
                }
            };
            let path = &config.storage.path;
            let store = match open_existing("audit", "audited", &config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            creditsd::install_fail_stop_panic_hook();
            let report = creditsd::audit::audit(&*store);
            if report.accounts == 0 && report.problems.is_empty() {
                eprintln!(
                    "creditsd audit: the store at {} holds no accounts; nothing audited",
                    path.display()
                );
                return ExitCode::from(2);
            }
            for p in &report.problems {
                println!("PROBLEM {p}");
            }
            println!(
                "audited {} accounts, {} events: {} problems",
                report.accounts,
                report.events,
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Migrate { config, data_dir } => {
            let config = match load(&config, data_dir, None) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("creditsd: {e}");
                    return ExitCode::from(2);
                }
            };
            let started = std::time::Instant::now();
            let store = match open_existing("migrate", "migrated", &config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            creditsd::install_fail_stop_panic_hook();
            migrate(&store, &config.storage.path, started)
        }
        Cmd::HashToken { token } => {
            let token = token.unwrap_or_else(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
                s.trim_end_matches(['\n', '\r']).to_string()
            });
            println!("{}", creditsd::http::auth::hash_token(&token));
            ExitCode::SUCCESS
        }
    }
}

/// `creditsd migrate` on an open store: the run (which closes the store: every write in
/// sled) and its report. Exit 0 when done; 1 when a record stopped it (named); 74 on a
/// storage failure. `started` is when the store began opening.
fn migrate(store: &SledStore, path: &std::path::Path, started: std::time::Instant) -> ExitCode {
    let report = match creditsd::store::migrate::migrate(store) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "creditsd migrate: {e}; stopped there (what was rewritten before it is kept, \
                 and reads the same)"
            );
            let _ = store.close();
            return ExitCode::from(match e {
                StorageError::Io(_) => 74,
                _ => 1,
            });
        }
    };
    println!(
        "store at {}: format {} at open, {} now",
        path.display(),
        report.format_before,
        report.format_after
    );
    for k in &report.kinds {
        println!(
            "  {:<20} {:>9} rewritten of {}",
            k.name, k.rewritten, k.seen
        );
    }
    if report.event_copies_dropped > 0 {
        println!(
            "  {} events moved into the log: their copies deleted from sled",
            report.event_copies_dropped
        );
    }
    if report.idempotency_copies_dropped > 0 {
        println!(
            "  {} idempotency records moved into the index's blocks: their keys deleted from sled",
            report.idempotency_copies_dropped
        );
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "migrated: {} records rewritten in today's layout in {:.1} ms ({:.1} ms with opening \
         and closing the store)",
        report.rewritten(),
        ms(report.elapsed),
        ms(started.elapsed())
    );
    ExitCode::SUCCESS
}
