//! The `creditsd` command line: serve, check-config, audit, hash-token.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use creditsd::config::Config;

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
            // Opening a directory that holds no store would create one and report clean
            // books: a typo in --data-dir must not read as an audit that passed.
            let path = &config.storage.path;
            if !path.join("db").is_file() {
                eprintln!(
                    "creditsd audit: {} holds no creditsd store (no db file); nothing audited",
                    path.display()
                );
                return ExitCode::from(2);
            }
            let store = match creditsd::daemon::open_store(&config) {
                Ok(s) => s,
                Err(e @ creditsd::store::StorageError::Locked { .. }) => {
                    eprintln!("creditsd audit: {e} (stop the daemon first)");
                    return ExitCode::from(creditsd::daemon::EXIT_DATA_DIR_IN_USE);
                }
                Err(e @ creditsd::store::StorageError::Newer { .. }) => {
                    eprintln!("creditsd audit: {e}");
                    return ExitCode::from(creditsd::daemon::EXIT_STORE_NEWER);
                }
                Err(e) => {
                    eprintln!("creditsd audit: opening {}: {e}", path.display());
                    return ExitCode::from(2);
                }
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
