//! The admin console's commands, PgBouncer-style: parsing one statement (case-insensitive) and
//! running it against the proxy. SHOW reads one snapshot; PAUSE, RESUME, RELOAD and SHUTDOWN act.

use std::time::Duration;

use tokio::time::Instant;

use super::snapshot::snapshot;
use super::tables::{self, Table};
use crate::error::ClientError;
use crate::state::ProxyState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Show(Topic),
    Pause,
    Resume,
    Reload,
    Shutdown,
}

/// What SHOW can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Help,
    Pools,
    Clients,
    Servers,
    Stats,
    Pins,
    Topology,
    State,
    Config,
    Version,
}

const TOPICS: &[(&str, Topic)] = &[
    ("HELP", Topic::Help),
    ("POOLS", Topic::Pools),
    ("CLIENTS", Topic::Clients),
    ("SERVERS", Topic::Servers),
    ("STATS", Topic::Stats),
    ("PINS", Topic::Pins),
    ("TOPOLOGY", Topic::Topology),
    ("STATE", Topic::State),
    ("CONFIG", Topic::Config),
    ("VERSION", Topic::Version),
];

/// PgBouncer console words pgmux does not offer: refused as unsupported, not as a typo.
const PGBOUNCER_ONLY: &[&str] = &[
    "SUSPEND",
    "KILL",
    "KILL_CLIENT",
    "DISABLE",
    "ENABLE",
    "RECONNECT",
    "WAIT_CLOSE",
    "SET",
    "DATABASES",
    "USERS",
    "LISTS",
    "FDS",
    "SOCKETS",
    "ACTIVE_SOCKETS",
    "MEM",
    "DNS_HOSTS",
    "DNS_ZONES",
    "TOTALS",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "PEERS",
    "PEER_POOLS",
];

/// How often PAUSE looks whether the running transactions have finished.
const PAUSE_POLL: Duration = Duration::from_millis(10);

pub const HELP: &str = "pgmux admin console commands:
  SHOW POOLS | CLIENTS | SERVERS | STATS | PINS | TOPOLOGY | STATE | CONFIG | VERSION | HELP
  PAUSE     hold new transactions; returns once running ones have finished
  RESUME    release them
  RELOAD    (not supported yet)
  SHUTDOWN  stop accepting clients and drain, like SIGTERM";

/// What a command answers (besides errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A result set, completed with the tag `SHOW`.
    Rows(Table),
    /// A command tag, with a notice to send first.
    Done { tag: &'static str, notice: Option<String> },
}

/// Parses one statement (no `;`). Words are case-insensitive and may be separated by any whitespace.
pub fn parse(statement: &str) -> Result<Command, ClientError> {
    let words: Vec<String> = statement.split_whitespace().map(str::to_ascii_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", topic] => match TOPICS.iter().find(|(name, _)| name == topic) {
            Some((_, topic)) => Ok(Command::Show(*topic)),
            None if PGBOUNCER_ONLY.contains(topic) => Err(pgbouncer_only(&format!("SHOW {topic}"))),
            None => {
                Err(ClientError::ConsoleSyntax(format!("unknown SHOW topic \"{topic}\"; SHOW HELP lists the commands")))
            }
        },
        ["PAUSE"] => Ok(Command::Pause),
        ["RESUME"] => Ok(Command::Resume),
        ["RELOAD"] => Ok(Command::Reload),
        ["SHUTDOWN"] => Ok(Command::Shutdown),
        ["PAUSE" | "RESUME", _] => Err(ClientError::ConsoleUnsupported(
            "PAUSE and RESUME of one database are not supported: PAUSE holds every pool".into(),
        )),
        [first, ..] if PGBOUNCER_ONLY.contains(first) => Err(pgbouncer_only(first)),
        _ => Err(ClientError::ConsoleSyntax(format!(
            "unknown admin console command \"{}\"; SHOW HELP lists the commands",
            statement.trim()
        ))),
    }
}

fn pgbouncer_only(what: &str) -> ClientError {
    ClientError::ConsoleUnsupported(format!("{what} is a PgBouncer command that pgmux does not offer; see SHOW HELP"))
}

/// Runs one command.
pub async fn execute(ctx: &ProxyState, command: Command) -> Result<Reply, ClientError> {
    match command {
        Command::Show(topic) => Ok(show(ctx, topic)),
        Command::Pause => pause(ctx).await,
        Command::Resume => Ok(resume(ctx)),
        Command::Reload => reload(ctx),
        Command::Shutdown => Ok(shutdown(ctx)),
    }
}

fn show(ctx: &ProxyState, topic: Topic) -> Reply {
    let table = match topic {
        Topic::Help => return Reply::Done { tag: "SHOW", notice: Some(HELP.into()) },
        Topic::Config => tables::key_values(ctx.config.load().effective()),
        Topic::Version => tables::version(),
        Topic::Pools => tables::pools(&snapshot(ctx)),
        Topic::Clients => tables::clients(&snapshot(ctx)),
        Topic::Servers => tables::servers(&snapshot(ctx)),
        Topic::Stats => tables::stats(&snapshot(ctx)),
        Topic::Pins => tables::pins(&snapshot(ctx)),
        Topic::Topology => tables::topology(&snapshot(ctx)),
        Topic::State => tables::state(&snapshot(ctx)),
    };
    Reply::Rows(table)
}

/// Closes the pause gate, then waits (up to `shutdown_timeout`) until no transaction holds a server
/// connection. Pinned clients and clients in session mode keep their connection between
/// transactions and are neither held nor waited for; the notice says how many there are.
async fn pause(ctx: &ProxyState) -> Result<Reply, ClientError> {
    let newly = ctx.pause.pause();
    tracing::warn!(event = "pause", already = !newly, "PAUSE: new transactions are held until RESUME");
    let limit = ctx.config.load().shutdown_timeout;
    let deadline = Instant::now() + limit;
    let keeping = loop {
        let s = snapshot(ctx);
        let busy = s.transactions_running() + s.passing_pause;
        if busy == 0 || s.draining {
            break s.holding_between_transactions();
        }
        if Instant::now() >= deadline {
            tracing::warn!(event = "pause_timeout", busy, "PAUSE: transactions still running");
            return Err(ClientError::PauseTimeout { waited: limit, busy });
        }
        tokio::time::sleep(PAUSE_POLL).await;
    };
    let mut notes = Vec::new();
    if !newly {
        notes.push("pgmux was already paused".to_owned());
    }
    if keeping > 0 {
        notes.push(format!(
            "{keeping} client(s) keep their server connection between transactions (pinned, or session mode) and are not held"
        ));
    }
    Ok(Reply::Done { tag: "PAUSE", notice: (!notes.is_empty()).then(|| notes.join("; ")) })
}

fn resume(ctx: &ProxyState) -> Reply {
    let was = ctx.pause.resume();
    tracing::warn!(event = "resume", was_paused = was, "RESUME: transactions flow again");
    Reply::Done { tag: "RESUME", notice: (!was).then(|| "pgmux was not paused".to_owned()) }
}

/// Re-reads and applies the configuration file, as SIGHUP does; says which keys changed.
fn reload(ctx: &ProxyState) -> Result<Reply, ClientError> {
    match crate::reload::reload_and_log(ctx, "console") {
        Ok(changed) => {
            let notice = if changed.is_empty() {
                "nothing changed".to_owned()
            } else {
                format!("changed: {}", changed.join(", "))
            };
            Ok(Reply::Done { tag: "RELOAD", notice: Some(notice) })
        }
        Err(e) => Err(ClientError::ReloadRefused(e.to_string())),
    }
}

/// As SIGTERM: stop accepting, let running transactions finish (up to `shutdown_timeout`), exit.
fn shutdown(ctx: &ProxyState) -> Reply {
    tracing::warn!(event = "shutdown", "SHUTDOWN from the admin console: draining");
    ctx.draining.cancel();
    Reply::Done { tag: "SHUTDOWN", notice: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_case_insensitive_words() {
        assert_eq!(parse("show pools").ok(), Some(Command::Show(Topic::Pools)));
        assert_eq!(parse("  SHOW\tClients\n").ok(), Some(Command::Show(Topic::Clients)));
        assert_eq!(parse("Pause").ok(), Some(Command::Pause));
        assert_eq!(parse("resume").ok(), Some(Command::Resume));
        assert_eq!(parse("RELOAD").ok(), Some(Command::Reload));
        assert_eq!(parse("shutdown").ok(), Some(Command::Shutdown));
        for (name, topic) in TOPICS {
            assert_eq!(parse(&format!("show {}", name.to_lowercase())).ok(), Some(Command::Show(*topic)));
        }
    }

    #[test]
    fn unknown_input_is_a_syntax_error() {
        for text in ["SELECT 1", "SHOW", "SHOW POOLS NOW", "SHOW FOO", "PAUSE PLEASE NOW"] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.sqlstate(), "42601", "{text}: {err}");
        }
        assert!(parse("show foo").expect_err("unknown").to_string().contains("SHOW HELP"));
    }

    #[test]
    fn pgbouncer_only_commands_are_unsupported() {
        for text in ["SHOW DATABASES", "suspend", "KILL app", "PAUSE app", "set x = 1"] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.sqlstate(), "0A000", "{text}: {err}");
        }
    }
}
