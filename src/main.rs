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
    if workers > 1 {
        return serve_on_cores(config, path, workers);
    }
    // One worker: tokio's single-threaded scheduler, without the work-stealing queues, the hand-offs
    // between searching and parked workers and the per-batch poll statistics (BENCHMARKS.md: ~5%
    // fewer instructions per transaction than the multi-threaded one with one worker).
    let rt = match one_core("pgmux-worker") {
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
        run(proxy, path, shutdown).await
    })
}

/// A single-threaded runtime, its threads (the blocking pool's) named `name`.
fn one_core(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().thread_name(name).build()
}

/// Several workers: one single-threaded runtime per worker, each on its own thread, accepting on its
/// own socket of each listener, with its own shard of every pool (`Proxy::bind_on_cores`). A session
/// stays on the core that accepted it, with server connections that core drives: no work stealing,
/// no wake-up handed to another thread (BENCHMARKS.md: fewer instructions per transaction than
/// tokio's multi-threaded scheduler).
fn serve_on_cores(config: Config, path: Option<PathBuf>, workers: usize) -> ExitCode {
    let runtimes = match (0..workers).map(|i| one_core(&format!("pgmux-core-{i}"))).collect::<Result<Vec<_>, _>>() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cores = pgmux::pool::cores::Cores::new(runtimes.iter().map(|r| r.handle().clone()).collect());
    let mut runtimes = runtimes.into_iter();
    let Some(first) = runtimes.next() else {
        return ExitCode::FAILURE;
    };
    // The other cores run what core 0 hands them (their accept loops, their clients) until it is done.
    let done = tokio_util::sync::CancellationToken::new();
    let mut threads = Vec::new();
    for (i, rt) in runtimes.enumerate() {
        let until = done.clone();
        let thread = std::thread::Builder::new().name(format!("pgmux-core-{}", i + 1)).spawn(move || {
            rt.block_on(until.cancelled());
        });
        match thread {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("cannot start a core's thread: {e}");
                done.cancel();
                return ExitCode::FAILURE;
            }
        }
    }
    let code = first.block_on(async {
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
    done.cancel();
    for t in threads {
        let _ = t.join();
    }
    code
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
