//! The `pgmux` command: parse the CLI, set up logging, load the config, run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::app::Proxy;
use pgmux::config::{Config, LogFormat};
use pgmux::listener::Shutdown;

#[derive(Parser)]
#[command(version, about = "A PostgreSQL connection-pooling proxy")]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "PGMUX_CONFIG", default_value = "proxy.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print every problem.
    Check,
    /// Start a throwaway local PostgreSQL primary + replica and pgmux in front of them.
    Demo {
        /// Port for pgmux to listen on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
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
    match cli.command {
        Some(Command::Check) => match Config::load(&cli.config) {
            Ok(_) => {
                println!("{}: ok", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid config:\n{e}", cli.config.display());
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo { port }) => {
            init_logging(LogFormat::Text);
            pgmux::demo::run(port)
        }
        None => {
            let config = match Config::load(&cli.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid config:\n{e}", cli.config.display());
                    return ExitCode::FAILURE;
                }
            };
            init_logging(config.log_format);
            serve(config, cli.config)
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

fn serve(config: Config, path: std::path::PathBuf) -> ExitCode {
    raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("pgmux-worker");
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
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
        *proxy.ctx.config_path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
        pgmux::listener::watch_signals(shutdown.clone());
        proxy.run(shutdown).await;
        ExitCode::SUCCESS
    })
}
