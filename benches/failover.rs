//! Failover benchmark (`cargo bench --bench failover`): writers hammer a table while the primary
//! crashes and its replica is promoted, once through pgmux and once straight to PostgreSQL.
//!
//! Each target gets a fresh [`LocalCluster`] (primary + one streaming replica) and `FAILOVER_CLIENTS`
//! writers looping `INSERT … RETURNING id, inet_server_port()` in autocommit, as fast as they can:
//!
//! - `pgmux`: the pgmux binary runs as a child process in front of both nodes. A writer connects
//!   once and retries a failed statement on the same connection every `FAILOVER_RETRY`; only if pgmux
//!   closed the connection does it reconnect (counted: the goal is none).
//! - `direct`: the usual client-side failover, a multi-host connection string with
//!   `target_session_attrs=read-write`. A writer drops its connection on any error and reconnects
//!   every `FAILOVER_RETRY` until a node accepts writes.
//!
//! After `FAILOVER_WARMUP` the primary is stopped with `pg_ctl stop -m immediate` (a crash) and
//! `FAILOVER_PROMOTE_AFTER` later the replica is promoted, while a monitor polls its
//! `pg_is_in_recovery()` to time the instant it accepts writes. `inet_server_port()` tells which
//! node acknowledged each commit, so:
//!
//! - outage = first commit acknowledged by the new primary − last one acknowledged by the old;
//! - promotion done = the new primary accepting writes (crash + deliberate wait + `pg_ctl promote`);
//! - extra outage = first commit on the new primary − promotion done: what the client path adds.
//!
//! Writers keep going until each has committed on the new primary (or `FAILOVER_DEADLINE` after the
//! crash), then `FAILOVER_RUN_AFTER` more. Every acknowledged `(client, n)` is then looked up on the
//! new primary. Replication is asynchronous, so commits acknowledged but not yet streamed when the
//! primary died are lost through either target; the report counts them. The writers' role runs with
//! `synchronous_commit = FAILOVER_SYNCHRONOUS_COMMIT` (default `on`; the local clusters' default,
//! `off`, loses the last ~200 ms of commits).
//!
//! Progress goes to stderr, a markdown report to stdout; pgmux's log, its `/status` after the run
//! and the PostgreSQL logs go to `FAILOVER_LOG_DIR`. Nothing waits without a deadline.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pgmux::localpg::{ClusterOptions, LocalCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The table every writer inserts into.
const TABLE: &str = "CREATE TABLE t (id bigserial PRIMARY KEY, client int, n int, at timestamptz DEFAULT now()); \
                     ALTER TABLE t OWNER TO app";
/// Time allowed for one connection attempt (login included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for every writer's first commit, and for pgmux to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the monitor asks the promoted replica whether it is still in recovery.
const PROMOTION_POLL: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pgmux,
    Direct,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Pgmux => "pgmux",
            Target::Direct => "direct",
        }
    }
}

/// The environment knobs (see BENCHMARKS.md).
#[derive(Debug, Clone)]
struct Knobs {
    clients: usize,
    warmup: Duration,
    promote_after: Duration,
    run_after: Duration,
    deadline: Duration,
    retry: Duration,
    health_interval: Duration,
    pool_size: usize,
    /// `synchronous_commit` for the writers' role (the local clusters default to `off`).
    synchronous_commit: String,
    targets: Vec<Target>,
    /// Back-to-back runs of every target (fresh clusters each); more than one adds a summary.
    runs: usize,
    pgmux_bin: PathBuf,
    log_dir: PathBuf,
}

impl Knobs {
    fn from_env() -> Result<Knobs, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let dur = |name: &str, default: Duration| match var(name) {
            Some(v) => parse_duration(&v).ok_or(format!("{name}={v}: not a duration (e.g. 2s, 500ms)")),
            None => Ok(default),
        };
        let count = |name: &str, default: usize| match var(name) {
            Some(v) => v.trim().parse().ok().filter(|n| *n > 0).ok_or(format!("{name}={v}: not a positive number")),
            None => Ok(default),
        };
        let targets = match var("FAILOVER_TARGETS") {
            None => vec![Target::Pgmux, Target::Direct],
            Some(v) => v
                .split([' ', ','])
                .filter(|t| !t.is_empty())
                .map(|t| match t {
                    "pgmux" => Ok(Target::Pgmux),
                    "direct" => Ok(Target::Direct),
                    other => Err(format!("FAILOVER_TARGETS: unknown target {other:?} (pgmux, direct)")),
                })
                .collect::<Result<_, _>>()?,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        Ok(Knobs {
            clients: count("FAILOVER_CLIENTS", 20)?,
            warmup: dur("FAILOVER_WARMUP", Duration::from_secs(3))?,
            promote_after: dur("FAILOVER_PROMOTE_AFTER", Duration::from_secs(2))?,
            run_after: dur("FAILOVER_RUN_AFTER", Duration::from_secs(5))?,
            deadline: dur("FAILOVER_DEADLINE", Duration::from_secs(60))?,
            retry: dur("FAILOVER_RETRY", Duration::from_millis(20))?,
            health_interval: dur("FAILOVER_HEALTH_INTERVAL", Duration::from_millis(200))?,
            pool_size: count("FAILOVER_POOL_SIZE", 10)?,
            synchronous_commit: match var("FAILOVER_SYNCHRONOUS_COMMIT").as_deref().unwrap_or("on") {
                v @ ("on" | "off" | "local" | "remote_write" | "remote_apply") => v.to_string(),
                v => return Err(format!("FAILOVER_SYNCHRONOUS_COMMIT={v}: not a synchronous_commit setting")),
            },
            targets,
            runs: count("FAILOVER_RUNS", 1)?,
            pgmux_bin: var("PGMUX_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_pgmux").into()),
            log_dir: var("FAILOVER_LOG_DIR").map(PathBuf::from).unwrap_or_else(|| manifest.join("target/failover")),
        })
    }

    /// The knobs set in the environment, as the prefix of the command line that reproduces the run.
    fn command() -> String {
        let names = [
            "FAILOVER_CLIENTS",
            "FAILOVER_WARMUP",
            "FAILOVER_PROMOTE_AFTER",
            "FAILOVER_RUN_AFTER",
            "FAILOVER_DEADLINE",
            "FAILOVER_RETRY",
            "FAILOVER_HEALTH_INTERVAL",
            "FAILOVER_POOL_SIZE",
            "FAILOVER_SYNCHRONOUS_COMMIT",
            "FAILOVER_TARGETS",
            "FAILOVER_RUNS",
            "PGMUX_LOG",
        ];
        let set = names.iter().filter_map(|n| std::env::var(n).ok().map(|v| format!("{n}={v:?} ")));
        format!("{}cargo bench --bench failover", set.collect::<String>())
    }
}

/// `2s`, `1.5s`, `500ms`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let secs = number.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)? * scale;
    Some(Duration::from_secs_f64(secs))
}

/// One acknowledged INSERT: when it was sent and its reply arrived, the writer's sequence number `n`,
/// the row's id, and the port of the node that committed it.
#[derive(Debug, Clone, Copy)]
struct Commit {
    sent: Instant,
    at: Instant,
    n: i32,
    id: i64,
    port: i32,
}

/// What one writer saw.
#[derive(Debug, Default)]
struct ClientLog {
    commits: Vec<Commit>,
    errors: Vec<Failure>,
    /// Connections given up: closed under the writer (pgmux) or dropped after an error (direct).
    reconnects: u32,
}

/// A failed statement or connection attempt.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    /// SQLSTATE + message for server errors; connection failures start with `connect:`.
    message: String,
}

/// The writers' logs and their stop flag.
struct Writers {
    logs: Vec<Mutex<ClientLog>>,
    stop: AtomicBool,
}

impl Writers {
    fn log(&self, client: usize) -> std::sync::MutexGuard<'_, ClientLog> {
        self.logs[client].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writers whose latest commit came from the node on `port`.
    fn last_on(&self, port: i32) -> usize {
        (0..self.logs.len()).filter(|&i| self.log(i).commits.last().is_some_and(|c| c.port == port)).count()
    }

    fn committed(&self) -> usize {
        (0..self.logs.len()).filter(|&i| !self.log(i).commits.is_empty()).count()
    }
}

/// A server error as `SQLSTATE message`; anything else as tokio-postgres words it.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}", db.code().code(), db.message());
    }
    // "error connecting to server" alone hides which: the causes follow.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

async fn connect(dsn: &str) -> Result<Client, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(dsn, NoTls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(format!("connect: {}", describe(&e))),
        Err(_) => Err(format!("connect: no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// One writer: INSERT in autocommit until told to stop. See the module docs for the two policies.
async fn writer(client: usize, target: Target, dsn: Arc<str>, writers: Arc<Writers>, retry: Duration) {
    let mut conn: Option<Client> = None;
    let mut n = 0i32;
    while !writers.stop.load(Ordering::Relaxed) {
        if conn.as_ref().is_some_and(Client::is_closed) {
            conn = None;
            writers.log(client).reconnects += 1;
        }
        let Some(c) = conn.as_ref() else {
            match connect(&dsn).await {
                Ok(c) => conn = Some(c),
                Err(message) => {
                    writers.log(client).errors.push(Failure { at: Instant::now(), message });
                    tokio::time::sleep(retry).await;
                }
            }
            continue;
        };
        n += 1;
        let sql = format!("INSERT INTO t (client, n) VALUES ({client}, {n}) RETURNING id, inet_server_port()");
        let sent = Instant::now();
        let result = c.simple_query(&sql).await;
        let at = Instant::now();
        let row = result.map_err(|e| describe(&e)).and_then(|messages| {
            let row = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((r.get(0)?.parse().ok()?, r.get(1)?.parse().ok()?)),
                _ => None,
            });
            row.ok_or_else(|| "the INSERT returned no row".to_string())
        });
        match row {
            Ok((id, port)) => writers.log(client).commits.push(Commit { sent, at, n, id, port }),
            Err(message) => {
                let drop_conn = target == Target::Direct;
                {
                    let mut log = writers.log(client);
                    log.errors.push(Failure { at, message });
                    log.reconnects += u32::from(drop_conn);
                }
                if drop_conn {
                    conn = None;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// The pgmux child process; killed when dropped.
struct PgmuxChild {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl Drop for PgmuxChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let bound = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    bound.map(|a| a.port()).map_err(|e| format!("bind 127.0.0.1:0: {e}"))
}

fn pgmux_yaml(k: &Knobs, cluster: &LocalCluster, port: u16, admin_port: u16) -> String {
    format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\nservers: [{}, {}]\n\
         pool:\n  size: {}\nhealth:\n  interval: {}ms\nusers:\n  - name: app\n    password: app\n\
         shutdown_timeout: 0s\n",
        cluster.addr(0),
        cluster.addr(1),
        k.pool_size,
        k.health_interval.as_millis(),
    )
}

/// Starts pgmux in front of the cluster and waits until a client can run a query through it.
async fn start_pgmux(k: &Knobs, cluster: &LocalCluster, dir: &Path) -> Result<PgmuxChild, String> {
    let log = k.log_dir.join("pgmux.log");
    let mut last_problem = String::new();
    // A port found free may be taken before pgmux binds it: then try another.
    for _attempt in 0..3 {
        let (port, admin_port) = (free_port()?, free_port()?);
        let config = dir.join("pgmux.yaml");
        std::fs::write(&config, pgmux_yaml(k, cluster, port, admin_port)).map_err(|e| format!("write config: {e}"))?;
        let file = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let stderr = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&k.pgmux_bin);
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(file).stderr(stderr);
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("PGMUX_LOG").is_none() {
            cmd.env("PGMUX_LOG", "info");
        }
        let child = cmd.spawn().map_err(|e| format!("start {}: {e}", k.pgmux_bin.display()))?;
        let mut child = PgmuxChild { child, port, admin_port, log: log.clone() };
        let dsn = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.child.try_wait() {
                last_problem = format!("pgmux exited ({status}); see {}", log.display());
                break;
            }
            match connect(&dsn).await {
                Ok(c) => match c.simple_query("SELECT 1").await {
                    Ok(_) => return Ok(child),
                    Err(e) => last_problem = format!("SELECT 1 through pgmux: {}", describe(&e)),
                },
                Err(e) => last_problem = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err(format!("pgmux did not start: {last_problem}"))
}

/// GET `path` from pgmux's admin endpoint: the body, or why not.
async fn http_get(port: u16, path: &str) -> String {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: pgmux\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), fetch).await {
        Ok(Ok(text)) => text.split_once("\r\n\r\n").map_or(text.clone(), |(_, body)| body.to_string()),
        Ok(Err(e)) => format!("GET {path} failed: {e}"),
        Err(_) => format!("GET {path}: no answer within 5s"),
    }
}

type ReadySignal = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// Polls `pg_is_in_recovery()` on the node at `port` until it answers false, from a thread and runtime
/// of its own so the busy writers can't delay it: the reply instant of the first `false` is when the
/// node started accepting writes (to within a poll). `ready` says whether it could connect.
fn watch_promotion(
    port: i32,
    give_up_after: Duration,
) -> (ReadySignal, std::thread::JoinHandle<Result<Instant, String>>) {
    let (ready, ready_rx) = tokio::sync::oneshot::channel();
    let watch = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let runtime = runtime.map_err(|e| format!("monitor runtime: {e}"))?;
        runtime.block_on(async move {
            let monitor = connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")).await;
            let _ = ready.send(monitor.as_ref().map(drop).map_err(Clone::clone));
            let monitor = monitor?;
            let end = Instant::now() + give_up_after;
            while Instant::now() < end {
                let rows = monitor.simple_query("SELECT pg_is_in_recovery()").await;
                let at = Instant::now();
                let rows = rows.map_err(|e| format!("lost: {}", describe(&e)))?;
                if !rows.iter().any(|r| matches!(r, SimpleQueryMessage::Row(r) if r.get(0) == Some("t"))) {
                    return Ok(at);
                }
                tokio::time::sleep(PROMOTION_POLL).await;
            }
            Err(format!("still in recovery after {give_up_after:?}"))
        })
    });
    (ready_rx, watch)
}

/// Runs blocking cluster work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}

/// Everything measured for one target.
struct Outcome {
    target: Target,
    pg_version: String,
    clients: usize,
    old_port: i32,
    new_port: i32,
    crash_wall: SystemTime,
    crash_at: Instant,
    crash_cmd: Duration,
    promote_start: Instant,
    promote_cmd: Duration,
    /// The promoted node first answered `pg_is_in_recovery() = false`.
    writable_at: Instant,
    /// Every writer had committed on the new primary (None: not by the deadline).
    recovered_at: Option<Instant>,
    /// The window before the crash used for the throughput figure.
    warm_from: Instant,
    stopped_at: Instant,
    logs: Vec<ClientLog>,
    rows: RowCheck,
    /// When the `app` sessions open on the new primary at the end were started, in ms since the
    /// crash (pg_stat_activity): for pgmux, its pool refilling after the failover.
    sessions_started: Vec<i64>,
    pgmux_log: Option<PathBuf>,
    notes: Vec<String>,
}

async fn run_target(target: Target, k: &Knobs) -> Result<Outcome, String> {
    let name = target.name();
    eprintln!("[{name}] starting a fresh primary + replica");
    let cluster = blocking(|| LocalCluster::start(ClusterOptions::default())).await;
    let cluster = Arc::new(cluster.map_err(|e| format!("local cluster: {e}"))?);
    cluster.stop_when_process_exits();
    let c = cluster.clone();
    let role = format!("ALTER ROLE app SET synchronous_commit = '{}'", k.synchronous_commit);
    let pg_version = blocking(move || {
        c.psql(0, "app", TABLE)?;
        c.psql(0, "app", &role)?;
        c.wait_replicas_caught_up(Duration::from_secs(30))?;
        c.psql(0, "postgres", "SHOW server_version")
    })
    .await
    .map_err(|e| format!("create table: {e}"))?;
    let (old_port, new_port) = (i32::from(cluster.port(0)), i32::from(cluster.port(1)));
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;

    let mut pgmux = None;
    let dsn: Arc<str> = match target {
        Target::Pgmux => {
            let child = start_pgmux(k, &cluster, dir.path()).await?;
            let dsn = format!("host=127.0.0.1 port={} user=app password=app dbname=app", child.port);
            pgmux = Some(child);
            dsn.into()
        }
        Target::Direct => format!(
            "host=127.0.0.1,127.0.0.1 port={old_port},{new_port} user=app password=app dbname=app \
             target_session_attrs=read-write connect_timeout=5"
        )
        .into(),
    };

    eprintln!("[{name}] {} writers", k.clients);
    let logs = (0..k.clients).map(|_| Mutex::default()).collect();
    let writers = Arc::new(Writers { logs, stop: AtomicBool::new(false) });
    let tasks: Vec<_> =
        (0..k.clients).map(|i| tokio::spawn(writer(i, target, dsn.clone(), writers.clone(), k.retry))).collect();
    let started = Instant::now();
    while writers.committed() < k.clients && started.elapsed() < START_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut notes = Vec::new();
    if writers.committed() < k.clients {
        notes.push(format!("only {} of {} writers committed before the crash", writers.committed(), k.clients));
    }
    let warm_from = Instant::now();
    tokio::time::sleep(k.warmup).await;

    // The monitor connects before the crash, so the promotion is timed without a login in the way.
    let (ready, monitor) = watch_promotion(new_port, k.promote_after + Duration::from_secs(60));
    if let Ok(Err(e)) | Err(e) = ready.await.map_err(|_| "monitor thread gone".to_string()) {
        notes.push(format!("monitor: {e}"));
    }

    eprintln!("[{name}] crashing the primary (pg_ctl stop -m immediate)");
    let (crash_wall, crash_at) = (SystemTime::now(), Instant::now());
    let c = cluster.clone();
    blocking(move || c.stop(0, true)).await.map_err(|e| format!("crash the primary: {e}"))?;
    let crash_cmd = crash_at.elapsed();
    tokio::time::sleep_until((crash_at + k.promote_after).into()).await;

    eprintln!("[{name}] promoting the replica");
    let promote_start = Instant::now();
    let c = cluster.clone();
    let promote = tokio::task::spawn_blocking(move || c.promote(1).map(|()| Instant::now()));
    let promoted = tokio::time::timeout(Duration::from_secs(90), promote).await;
    let promote_done = match promoted {
        Ok(Ok(Ok(done))) => done,
        Ok(Ok(Err(e))) => return Err(format!("promote: {e}")),
        Ok(Err(e)) => return Err(format!("promote task: {e}")),
        Err(_) => return Err("promote: no answer within 90s".into()),
    };
    let promote_cmd = promote_done - promote_start;

    // The monitor gives up on its own deadline; once pg_ctl promote returned, it answers promptly.
    let writable_at = match blocking(move || monitor.join()).await {
        Ok(Ok(at)) => at,
        Ok(Err(e)) => {
            notes.push(format!("promotion timed by `pg_ctl promote` returning (monitor: {e})"));
            promote_done
        }
        Err(_) => {
            notes.push("promotion timed by `pg_ctl promote` returning (monitor panicked)".into());
            promote_done
        }
    };

    eprintln!("[{name}] waiting for every writer to commit on the new primary");
    let deadline = crash_at + k.deadline;
    while writers.last_on(new_port) < k.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_at = (writers.last_on(new_port) == k.clients).then(Instant::now);
    if recovered_at.is_some() {
        tokio::time::sleep(k.run_after).await;
    } else {
        let back = writers.last_on(new_port);
        notes
            .push(format!("only {back} of {} writers committed on the new primary within {:?}", k.clients, k.deadline));
    }
    writers.stop.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();
    for mut task in tasks {
        // A writer stuck in a statement is abandoned: its log is already in `writers`.
        if tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err() {
            task.abort();
            notes.push("a writer was still inside a statement at the end".into());
        }
    }
    let logs: Vec<ClientLog> =
        writers.logs.iter().map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner()))).collect();

    // A commit on the promoted node proves it took writes: a monitor poll delayed on this busy box
    // must not make the extra outage look negative.
    let first_new = logs.iter().filter_map(|l| l.commits.iter().find(|c| c.port == new_port)).map(|c| c.at).min();
    let writable_at = match first_new {
        Some(first) if first + Duration::from_millis(1) <= writable_at => {
            let late = ms(writable_at - first);
            let why = "after a writer's first commit there: promotion done set to that commit";
            notes.push(format!("the monitor saw the end of recovery {late} {why}"));
            first
        }
        Some(first) => writable_at.min(first),
        None => writable_at,
    };
    let sessions_started = sessions_started(new_port, crash_wall).await.unwrap_or_else(|e| {
        notes.push(format!("sessions on the new primary not read: {e}"));
        Vec::new()
    });
    let rows = check_rows(new_port, crash_at, &logs).await.unwrap_or_else(|e| {
        notes.push(format!("rows not checked: {e}"));
        RowCheck::default()
    });

    let pgmux_log = match pgmux.take() {
        Some(child) => {
            let status = http_get(child.admin_port, "/status").await;
            let _ = std::fs::write(k.log_dir.join("pgmux-status.json"), status);
            let log = child.log.clone();
            drop(child);
            Some(log)
        }
        None => None,
    };
    for node in 0..cluster.nodes() {
        let to = k.log_dir.join(format!("{name}-node{node}.log"));
        let _ = std::fs::copy(cluster.dir().join(format!("node{node}/log")), to);
    }
    blocking(move || drop(cluster)).await;
    Ok(Outcome {
        target,
        pg_version,
        clients: k.clients,
        old_port,
        new_port,
        crash_wall,
        crash_at,
        crash_cmd,
        promote_start,
        promote_cmd,
        writable_at,
        recovered_at,
        warm_from,
        stopped_at,
        logs,
        rows,
        sessions_started,
        pgmux_log,
        notes,
    })
}

/// `backend_start` of the `app` sessions on the node at `port`, in ms since `crash` (same clock).
async fn sessions_started(port: i32, crash: SystemTime) -> Result<Vec<i64>, String> {
    let c = connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")).await?;
    let sql = "SELECT extract(epoch FROM backend_start)::float8 FROM pg_stat_activity \
               WHERE usename = 'app' AND backend_type = 'client backend' ORDER BY 1";
    let rows = c.query(sql, &[]).await.map_err(|e| describe(&e))?;
    let crash = crash.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    Ok(rows.iter().map(|r| ((r.get::<_, f64>(0) - crash) * 1000.0).round() as i64).collect())
}

/// What the new primary holds, against what the writers were told. Rows are told apart by
/// `(client, n)`: ids are no good, as the new primary may hand out again sequence values that the old
/// one gave to commits it never shipped.
#[derive(Debug, Default)]
struct RowCheck {
    /// Acknowledged INSERTs absent from the new primary, acknowledged before the crash / after it.
    missing_before: usize,
    missing_after: usize,
    /// Rows whose INSERT got an error or no reply: committed although the writer can't know it.
    unacknowledged: usize,
    /// `(client, n)` present more than once: one INSERT executed twice.
    duplicates: usize,
    /// Ids acknowledged by both the old and the new primary (to different rows).
    reissued_ids: usize,
}

async fn check_rows(port: i32, crash_at: Instant, logs: &[ClientLog]) -> Result<RowCheck, String> {
    let c = connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=app")).await?;
    let rows = tokio::time::timeout(Duration::from_secs(30), c.query("SELECT client, n FROM t", &[])).await;
    let rows = rows.map_err(|_| "SELECT client, n FROM t: no answer within 30s".to_string())?;
    let mut present: HashMap<(i32, i32), usize> = HashMap::new();
    for row in rows.map_err(|e| describe(&e))? {
        *present.entry((row.get(0), row.get(1))).or_default() += 1;
    }
    let mut check = RowCheck { duplicates: present.values().filter(|&&n| n > 1).count(), ..RowCheck::default() };
    let mut acknowledged_present = 0;
    let mut ids: HashMap<i64, i32> = HashMap::new();
    for (client, log) in logs.iter().enumerate() {
        for commit in &log.commits {
            match (present.contains_key(&(client as i32, commit.n)), commit.at < crash_at) {
                (true, _) => acknowledged_present += 1,
                (false, true) => check.missing_before += 1,
                (false, false) => check.missing_after += 1,
            }
            if ids.insert(commit.id, commit.port).is_some_and(|port| port != commit.port) {
                check.reissued_ids += 1;
            }
        }
    }
    check.unacknowledged = present.len().saturating_sub(acknowledged_present);
    Ok(check)
}

/// The figures of one outcome.
struct Figures {
    outage: Option<Duration>,
    promotion: Duration,
    /// Signed milliseconds: the monitor polls, so a commit may land a moment before it sees the end.
    extra: Option<i64>,
    /// Per writer, sorted: its first commit on the new primary − promotion done (signed ms).
    extra_per_writer: Vec<i64>,
    /// Per-writer (first commit on the new primary − crash): median.
    back_median: Option<Duration>,
    back: usize,
    reconnects: u32,
    errors: usize,
    errors_after_promotion: usize,
    /// Commits the old primary acknowledged after the crash began.
    old_after_crash: usize,
    tps_before: f64,
    tps_after: Option<f64>,
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// `t − from` in signed milliseconds.
fn signed_ms(t: Instant, from: Instant) -> i64 {
    match t.checked_duration_since(from) {
        Some(d) => d.as_millis() as i64,
        None => -((from - t).as_millis() as i64),
    }
}

fn opt_signed_ms(v: Option<i64>) -> String {
    v.map_or("—".into(), |v| format!("{v} ms"))
}

impl Outcome {
    fn figures(&self) -> Figures {
        let all = || self.logs.iter().flat_map(|l| &l.commits);
        let last_old = all().filter(|c| c.port == self.old_port).map(|c| c.at).max();
        let first_new = all().filter(|c| c.port == self.new_port).map(|c| c.at).min();
        let firsts: Vec<Instant> =
            self.logs.iter().filter_map(|l| l.commits.iter().find(|c| c.port == self.new_port).map(|c| c.at)).collect();
        let mut extra_per_writer: Vec<i64> = firsts.iter().map(|&t| signed_ms(t, self.writable_at)).collect();
        extra_per_writer.sort();
        let rate = |from: Instant, to: Instant| {
            let n = all().filter(|c| c.at >= from && c.at < to).count();
            n as f64 / (to - from).as_secs_f64().max(1e-3)
        };
        Figures {
            outage: last_old.zip(first_new).map(|(a, b)| b.saturating_duration_since(a)),
            promotion: self.writable_at - self.crash_at,
            extra: first_new.map(|f| signed_ms(f, self.writable_at)),
            extra_per_writer,
            back_median: median(firsts.iter().map(|&t| t.saturating_duration_since(self.crash_at)).collect()),
            back: firsts.len(),
            reconnects: self.logs.iter().map(|l| l.reconnects).sum(),
            errors: self.logs.iter().map(|l| l.errors.len()).sum(),
            errors_after_promotion: self
                .logs
                .iter()
                .flat_map(|l| &l.errors)
                .filter(|e| e.at > self.writable_at)
                .count(),
            old_after_crash: all().filter(|c| c.port == self.old_port && c.at > self.crash_at).count(),
            tps_before: rate(self.warm_from, self.crash_at),
            tps_after: self.recovered_at.map(|r| rate(r, self.stopped_at)),
        }
    }

    /// Instant → signed milliseconds since the crash.
    fn rel(&self, t: Instant) -> String {
        match t.checked_duration_since(self.crash_at) {
            Some(d) => format!("+{}", ms(d)),
            None => format!("−{}", ms(self.crash_at - t)),
        }
    }

    /// The events of the failover, relative to the crash.
    fn timeline(&self) -> Vec<(String, String)> {
        let all = || self.logs.iter().flat_map(|l| &l.commits);
        let mut events = Vec::new();
        if let Some(t) = all().filter(|c| c.port == self.old_port).map(|c| c.at).max() {
            events.push((t, "last commit acknowledged by the old primary".to_string()));
        }
        events.push((self.crash_at, "`pg_ctl stop -m immediate` on the primary".into()));
        events.push((self.crash_at + self.crash_cmd, "… returned".into()));
        events.push((self.promote_start, "`pg_ctl promote` on the replica".into()));
        events.push((self.writable_at, "the replica answers `pg_is_in_recovery() = false`".into()));
        events.push((self.promote_start + self.promote_cmd, "… `pg_ctl promote` returned".into()));
        if let Some(t) = all().filter(|c| c.port == self.new_port).map(|c| c.at).min() {
            events.push((t, "first commit acknowledged by the new primary".into()));
        }
        if let Some(t) = self.recovered_at {
            events.push((t, format!("all {} writers have committed on the new primary", self.clients)));
        }
        events.sort_by_key(|e| e.0);
        events.into_iter().map(|(t, what)| (self.rel(t), what)).collect()
    }

    /// What became of each writer's statement outstanding when the old primary died: the first answer
    /// after the writer's last commit there was either an error or a commit on the new primary. With the
    /// longest any acknowledged INSERT waited.
    fn cut_off(&self) -> String {
        let (mut failed, mut held) = (0, Vec::new());
        for log in &self.logs {
            let Some(last_old) = log.commits.iter().filter(|c| c.port == self.old_port).map(|c| c.at).max() else {
                continue;
            };
            // Both lists are in time order.
            let next_commit = log.commits.iter().find(|c| c.at > last_old);
            let next_error = log.errors.iter().find(|e| e.at > last_old);
            match (next_commit, next_error) {
                (Some(c), e) if e.is_none_or(|e| c.at < e.at) => held.push(c.at),
                (_, Some(_)) => failed += 1,
                _ => {}
            }
        }
        let mut waits: Vec<&Commit> = self.logs.iter().flat_map(|l| &l.commits).collect();
        waits.sort_by_key(|c| std::cmp::Reverse(c.at - c.sent));
        let longest: Vec<String> = waits
            .iter()
            .take(3)
            .map(|c| format!("{} (sent {}, answered {})", ms(c.at - c.sent), self.rel(c.sent), self.rel(c.at)))
            .collect();
        let mut text = format!(
            "Longest waits for an acknowledged INSERT: {}. The statement each writer had outstanding when the \
             primary died: {failed} failed, {} were held and committed on the new primary",
            longest.join(", "),
            held.len(),
        );
        if let (Some(first), Some(last)) = (held.iter().min(), held.iter().max()) {
            text += &format!(" (answered {} to {} since the crash)", self.rel(*first), self.rel(*last));
        }
        text + "."
    }

    /// Each writer's first commit on the new primary − promotion done (ms, sorted), for writers that
    /// saw an error after the crash and for the others.
    fn back_by_error(&self) -> (Vec<i64>, Vec<i64>) {
        let (mut errored, mut clean) = (Vec::new(), Vec::new());
        for log in &self.logs {
            let Some(first) = log.commits.iter().find(|c| c.port == self.new_port) else { continue };
            let extra = signed_ms(first.at, self.writable_at);
            match log.errors.iter().any(|e| e.at > self.crash_at) {
                true => errored.push(extra),
                false => clean.push(extra),
            }
        }
        errored.sort();
        clean.sort();
        (errored, clean)
    }

    /// The most frequent errors writers saw: (count, first seen, message).
    fn top_errors(&self, n: usize) -> Vec<(usize, Instant, String)> {
        let mut by_message: BTreeMap<&str, (usize, Instant)> = BTreeMap::new();
        for e in self.logs.iter().flat_map(|l| &l.errors) {
            let entry = by_message.entry(e.message.as_str()).or_insert((0, e.at));
            entry.0 += 1;
            entry.1 = entry.1.min(e.at);
        }
        let mut top: Vec<_> = by_message.into_iter().map(|(m, (count, first))| (count, first, m.to_string())).collect();
        top.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top.truncate(n);
        top
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("—".into(), ms)
}

/// Seconds since midnight UTC of a wall-clock instant.
fn utc_seconds_of_day(t: SystemTime) -> f64 {
    let since_epoch = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (since_epoch.as_secs() % 86_400) as f64 + f64::from(since_epoch.subsec_micros()) / 1e6
}

fn clock(t: SystemTime) -> String {
    let s = utc_seconds_of_day(t);
    let whole = s as u64;
    format!("{:02}:{:02}:{:06.3}Z", whole / 3600, whole / 60 % 60, s - (whole - whole % 60) as f64)
}

/// pgmux log lines worth reading after a failover (warnings, errors, role and health changes),
/// grouped by message: (count, ms since the crash of the first, the line without its timestamp).
fn notable_log_lines(log: &Path, crash: SystemTime) -> Vec<(usize, String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let crash_sod = utc_seconds_of_day(crash);
    let mut seen: Vec<(usize, String, String)> = Vec::new();
    for line in text.lines() {
        let line = &strip_ansi(line);
        let notable = [" WARN ", " ERROR ", "primary changed", "server up", "server down", "rediscover"];
        if !notable.iter().any(|n| line.contains(n)) {
            continue;
        }
        // `2026-11-29T09:40:00.123456Z  WARN target: message` (tracing's text format, UTC).
        let (stamp, rest) = line.split_once(' ').unwrap_or(("", line));
        let sod = stamp.get(11..).and_then(|hms| {
            let mut parts = hms.trim_end_matches('Z').split(':');
            let h: f64 = parts.next()?.parse().ok()?;
            let m: f64 = parts.next()?.parse().ok()?;
            let s: f64 = parts.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        });
        let rel = sod.map_or(String::new(), |s| format!("{:+.0} ms", (s - crash_sod) * 1000.0));
        let rest = rest.trim().to_string();
        match seen.iter_mut().find(|(_, _, m)| *m == rest) {
            Some(entry) => entry.0 += 1,
            None => seen.push((1, rel, rest)),
        }
    }
    seen
}

/// The text of a line without its ANSI colour sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// Every run's per-writer figures: the promise is per writer (each back within 1 s of the
/// promotion), so the maximum matters more than the median.
fn summary(k: &Knobs, runs: &[Vec<Result<Outcome, String>>]) {
    println!("\n### Per-writer return over {} runs\n", runs.len());
    println!("Each writer's first commit on the new primary − promotion done (ms).\n");
    println!("| run | target | median | max | writers > 1 s | sorted per-writer extra |");
    println!("|--:|---|--:|--:|--:|---|");
    let mut worst: BTreeMap<&str, (usize, i64, usize)> = BTreeMap::new();
    for (i, results) in runs.iter().enumerate() {
        for result in results {
            let Ok(o) = result else {
                println!("| {} | failed | | | | |", i + 1);
                continue;
            };
            let f = o.figures();
            let max = f.extra_per_writer.last().copied().unwrap_or(i64::MAX);
            let late = f.extra_per_writer.iter().filter(|e| **e > 1000).count() + (o.clients - f.back);
            let w = worst.entry(o.target.name()).or_insert((0, i64::MIN, 0));
            w.0 += usize::from(late == 0);
            w.1 = w.1.max(max);
            w.2 += 1;
            let list: Vec<String> = f.extra_per_writer.iter().map(|e| e.to_string()).collect();
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                o.target.name(),
                opt_signed_ms(median(f.extra_per_writer.clone())),
                max,
                late,
                list.join(" ")
            );
        }
    }
    println!();
    for (target, (good, max, n)) in worst {
        println!(
            "- **{target}**: every one of {} writers back within 1 s of the promotion in {good}/{n} runs; \
             slowest writer over all runs {max} ms.",
            k.clients
        );
    }
}

fn report(k: &Knobs, results: &[Result<Outcome, String>]) {
    let pg_version = results.iter().flatten().next().map_or("?", |o| o.pg_version.as_str());
    let commit = git(&["log", "-1", "--format=%h %s"]);
    let dirty =
        if git(&["status", "--porcelain", "--", "src"]).is_empty() { "" } else { " + uncommitted changes in src/" };
    println!("## Failover: pgmux vs. client-side failover\n");
    println!("`{}`\n", Knobs::command());
    println!(
        "pgmux {commit}{dirty}; PostgreSQL {pg_version}; {} writers; primary crashed with `pg_ctl stop -m immediate` \
         after {} of writes, replica promoted {} after the crash; pgmux `pool.size: {}`, `health.interval: {}ms`; \
         writers retry every {} and run with `synchronous_commit = {}`.\n",
        k.clients,
        ms(k.warmup),
        ms(k.promote_after),
        k.pool_size,
        k.health_interval.as_millis(),
        ms(k.retry),
        k.synchronous_commit,
    );
    println!(
        "| target | outage | promotion done | extra outage (first write after promotion done) | per-client median \
         extra (max) | writers back | reconnects | client errors (after promotion done) | acknowledged rows lost | \
         rows duplicated |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for result in results {
        match result {
            Ok(o) => {
                let f = o.figures();
                println!(
                    "| {} | {} | {} | {} | {} ({}) | {}/{} | {} | {} ({}) | {} | {} |",
                    o.target.name(),
                    opt_ms(f.outage),
                    ms(f.promotion),
                    opt_signed_ms(f.extra),
                    opt_signed_ms(median(f.extra_per_writer.clone())),
                    opt_signed_ms(f.extra_per_writer.last().copied()),
                    f.back,
                    o.clients,
                    f.reconnects,
                    f.errors,
                    f.errors_after_promotion,
                    o.rows.missing_before + o.rows.missing_after,
                    o.rows.duplicates,
                );
            }
            Err(e) => println!("| failed: {} | | | | | | | | | |", e.replace('|', "/").replace('\n', " ")),
        }
    }
    println!(
        "\n- **outage**: first commit acknowledged by the new primary − last acknowledged by the old one, over all \
         writers (client-side instants; `inet_server_port()` names the node).\n\
         - **promotion done**: crash → the replica answers `pg_is_in_recovery() = false` (polled every {} ms from \
         a thread of its own; a writer's commit there, if earlier, counts instead); includes the deliberate {} wait \
         before `pg_ctl promote`.\n\
         - **extra outage**: first commit on the new primary − promotion done, i.e. what the client path adds to \
         the promotion. Outage − promotion done = extra outage + (crash − last commit on the old primary).\n\
         - **per-client**: each writer's first commit on the new primary − promotion done.\n\
         - **reconnects**: connections given up (pgmux: closed under the writer; direct: dropped after an error, \
         which is how client-side failover works).\n\
         - **rows lost**: acknowledged INSERTs whose `(client, n)` is not on the new primary. Replication is \
         asynchronous and the writers run with `synchronous_commit = {}`: commits not yet streamed when the \
         primary died are lost, through either target. **rows duplicated**: one writer's INSERT present twice \
         (executed again after a first attempt committed).\n",
        PROMOTION_POLL.as_millis(),
        ms(k.promote_after),
        k.synchronous_commit,
    );
    let pgmux_met = results.iter().flatten().find(|o| o.target == Target::Pgmux).map(|o| {
        let f = o.figures();
        let fast = f.extra.is_some_and(|e| e <= 1000) && f.back == o.clients;
        (fast, f.reconnects == 0)
    });
    match pgmux_met {
        Some((fast, kept)) => println!(
            "Goal (extra outage ≤ 1 s through pgmux, no reconnects): extra outage {}, reconnects {}.\n",
            if fast { "met" } else { "**not met**" },
            if kept { "met" } else { "**not met**" }
        ),
        None => println!("Goal: not measured (no pgmux run).\n"),
    }
    for o in results.iter().flatten() {
        let f = o.figures();
        println!("### {}\n", o.target.name());
        println!(
            "Crash at {} UTC. Writes/s: {:.0} before the crash, {} after every writer was back. Median writer back \
             {} after the crash. Commits acknowledged by the old primary after the crash began: {}. Acknowledged \
             rows lost on the new primary: {} from before the crash, {} from after; rows present whose INSERT got \
             an error or no reply: {}; ids handed out again by the new primary: {}. `pg_ctl promote` took {}. {}\n",
            clock(o.crash_wall),
            f.tps_before,
            f.tps_after.map_or("—".into(), |t| format!("{t:.0}")),
            opt_ms(f.back_median),
            f.old_after_crash,
            o.rows.missing_before,
            o.rows.missing_after,
            o.rows.unacknowledged,
            o.rows.reissued_ids,
            ms(o.promote_cmd),
            o.cut_off(),
        );
        let (errored, clean) = o.back_by_error();
        let list = |v: &[i64]| {
            if v.is_empty() { "none".to_string() } else { v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ") }
        };
        println!(
            "Each writer's first commit on the new primary, ms after promotion done — writers that saw an error \
             after the crash: {}; the others: {}.\n",
            list(&errored),
            list(&clean)
        );
        if !o.sessions_started.is_empty() {
            let since_promotion = signed_ms(o.writable_at, o.crash_at);
            let started: Vec<String> = o.sessions_started.iter().map(|t| (t - since_promotion).to_string()).collect();
            println!(
                "Sessions of `app` open on the new primary at the end ({}), started ms after promotion done \
                 (`pg_stat_activity.backend_start`): {}.\n",
                match o.target {
                    Target::Pgmux => "pgmux's pool, and its prober's from before the crash",
                    Target::Direct => "the writers",
                },
                started.join(", ")
            );
        }
        println!("| since crash | event |\n|--:|---|");
        for (at, what) in o.timeline() {
            println!("| {at} | {what} |");
        }
        let top = o.top_errors(6);
        if !top.is_empty() {
            println!("\n| errors | first seen | client error |\n|--:|--:|---|");
            for (count, first, message) in top {
                println!("| {count} | {} | `{}` |", o.rel(first), message.replace('|', "/").replace('`', "'"));
            }
        }
        for note in &o.notes {
            println!("\nNote: {note}");
        }
        if let Some(log) = &o.pgmux_log {
            let lines = notable_log_lines(log, o.crash_wall);
            println!("\npgmux log `{}`: {} notable distinct lines", log.display(), lines.len());
            if !lines.is_empty() {
                println!("\n| count | first (since crash) | line |\n|--:|--:|---|");
                for (count, rel, line) in lines.iter().take(15) {
                    let line: String = line.chars().take(240).collect();
                    println!("| {count} | {rel} | `{}` |", line.replace('|', "/").replace('`', "'"));
                }
            }
        }
        println!();
    }
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets no minute-long run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("failover bench: run it with `cargo bench --bench failover`");
        return std::process::ExitCode::SUCCESS;
    }
    let knobs = match Knobs::from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("failover bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&knobs.log_dir) {
        eprintln!("failover bench: create {}: {e}", knobs.log_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let started = Instant::now();
    let runs = runtime.block_on(async {
        let mut runs = Vec::new();
        for run in 1..=knobs.runs {
            let mut results = Vec::new();
            for &target in &knobs.targets {
                eprintln!("failover bench: run {run}/{}, {}", knobs.runs, target.name());
                let result = run_target(target, &knobs).await;
                if let Err(e) = &result {
                    eprintln!("[{}] failed: {e}", target.name());
                }
                results.push(result);
            }
            runs.push(results);
        }
        runs
    });
    eprintln!("failover bench: done in {:.0?}; logs (last run) in {}", started.elapsed(), knobs.log_dir.display());
    let results = runs.last().expect("at least one run");
    report(&knobs, results);
    if runs.len() > 1 {
        summary(&knobs, &runs);
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    if results.iter().all(Result::is_ok) { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
