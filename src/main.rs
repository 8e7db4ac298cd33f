//! The `pgmux` command: parse the CLI, set up logging, load the config, run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::admin::healthcheck;
use pgmux::app::{Proxy, runtime};
use pgmux::config::{Config, LogFormat, Source, process_vars};
use pgmux::listener::Shutdown;

/// `0.1.0 (commit 0123abc)`: the commit is given at build time (`PGMUX_COMMIT`, as the Dockerfile
/// does), else `unknown`.
fn version() -> String {
    let commit = option_env!("PGMUX_COMMIT").filter(|c| !c.is_empty()).unwrap_or("unknown");
    format!("{} (commit {commit})", env!("CARGO_PKG_VERSION"))
}

#[derive(Parser)]
#[command(version = version(), about = "A PostgreSQL connection-pooling proxy")]
struct Cli {
    /// Configuration file, with PGMUX_* variables laid over it. Default: ./proxy.yaml if it
    /// exists, else the PGMUX_* variables alone (an empty value also means that).
    #[arg(long, global = true, env = "PGMUX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration (file and PGMUX_* variables, as pgmux would run it) and print
    /// every problem.
    Check,
    /// Ask the running pgmux's admin endpoint whether it is alive (/healthz) or, with --ready,
    /// ready for clients (/readyz); exit 0 if so, else 1. For container health checks.
    Health {
        /// Check readiness (/readyz: accepting clients, a primary known, not draining).
        #[arg(long)]
        ready: bool,
        /// The admin endpoint, `host:port`; default: `admin_listen` from the configuration.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Start a throwaway local PostgreSQL primary + replica and pgmux in front of them.
    Demo {
        /// Port for pgmux to listen on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
    /// Benchmark a connection storm against any PostgreSQL endpoint (pgmux, PgBouncer, PostgreSQL)
    /// and report failures by SQLSTATE and latency percentiles; exit 0 if every attempt succeeded,
    /// 1 if some failed, 2 on usage errors.
    Storm(pgmux::storm::StormArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGMUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: a log file or a container log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = Source::choose(cli.config);
    match cli.command {
        Some(Command::Check) => match source.load(&process_vars()) {
            Ok(_) => {
                println!("{}: ok", source.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid config:\n{e}", source.describe());
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo { port }) => {
            init_logging(LogFormat::Text);
            // The demo's settings are its own; only the runtime shape follows `PGMUX_WORKERS`
            // (the benchmark scripts measure one or two workers through it).
            let workers = std::env::var("PGMUX_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(0);
            pgmux::demo::run(port, workers)
        }
        Some(Command::Health { ready, addr }) => health(&source, ready, addr),
        Some(Command::Storm(args)) => ExitCode::from(pgmux::storm::run(args)),
        None => {
            let config = match source.load(&process_vars()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid config:\n{e}", source.describe());
                    return ExitCode::FAILURE;
                }
            };
            init_logging(config.log_format);
            tracing::info!(version = %version(), config = %source.describe(), "starting");
            serve(config, source.file().map(PathBuf::from))
        }
    }
}

/// `pgmux health`: exit 0 when the endpoint answers 200, else 1 with the reason on stderr.
fn health(source: &Source, ready: bool, addr: Option<String>) -> ExitCode {
    let addr = match addr {
        Some(addr) => addr,
        None => match source.load(&process_vars()) {
            Ok(Config { admin_listen: Some(listen), .. }) => healthcheck::local_target(&listen),
            Ok(_) => {
                eprintln!("pgmux health: {}", healthcheck::HealthError::NoEndpoint);
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("pgmux health: {}: invalid config:\n{e}", source.describe());
                return ExitCode::FAILURE;
            }
        },
    };
    match healthcheck::check(&addr, ready) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgmux health: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each client and server connection is a file descriptor: lift the soft limit to the hard one.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
}

/// Serves until SIGTERM has drained (exit 0) or a second signal / SIGINT cut it short, on
/// `workers` single-threaded runtimes (see `app::runtime`; one: PgBouncer's shape).
fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    raise_fd_limit();
    let workers = runtime::count(config.workers);
    let served = runtime::run_on_workers(workers, |cores| async move {
        let shutdown = Shutdown::default();
        let proxy = match Proxy::bind_on_cores(&config, &shutdown, cores).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        run(proxy, path, shutdown).await
    });
    served.unwrap_or_else(|e| {
        eprintln!("cannot start runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Serves until shutdown.
async fn run(proxy: Proxy, path: Option<PathBuf>, shutdown: Shutdown) -> ExitCode {
    *proxy.ctx.config_path.lock().unwrap_or_else(|e| e.into_inner()) = path;
    pgmux::listener::watch_signals(shutdown.clone());
    let serving = tokio::spawn(proxy.run(shutdown));
    match serving.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the proxy task failed");
            ExitCode::FAILURE
        }
    }
}
