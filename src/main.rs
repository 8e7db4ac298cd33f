//! The `pgmux` command: parse the CLI, set up logging, load the config, run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::admin::healthcheck;
use pgmux::app::Proxy;
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
            pgmux::demo::run(port)
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

/// Serves until SIGTERM has drained (exit 0) or a second signal / SIGINT cut it short.
fn serve(config: Config, path: Option<PathBuf>) -> ExitCode {
    raise_fd_limit();
    // 0: one per CPU the process may use (cgroup quotas count: a sidecar limited to one CPU gets one).
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // One worker: tokio's single-threaded scheduler, without the work-stealing queues, the hand-offs
    // between searching and parked workers and the per-batch poll statistics (BENCHMARKS.md: ~5%
    // fewer instructions per transaction than the multi-threaded one with one worker).
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().thread_name("pgmux-worker");
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = Shutdown::default();
        let proxy = match Proxy::bind(&config, &shutdown).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        *proxy.ctx.config_path.lock().unwrap_or_else(|e| e.into_inner()) = path;
        pgmux::listener::watch_signals(shutdown.clone());
        // On a worker, not on this thread: a client task the accept loop spawns then starts on
        // the worker that accepted it, instead of being handed across threads (a wake-up each).
        let serving = tokio::spawn(proxy.run(shutdown));
        match serving.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the proxy task failed");
                ExitCode::FAILURE
            }
        }
    })
}
