//! `pgmux storm`: a connection-storm benchmark for any PostgreSQL endpoint (pgmux, PgBouncer,
//! PostgreSQL itself). One tokio task per simulated client, started on the schedule of a shape
//! (`shape`), connecting with tokio-postgres (`target`); what happens is folded by one collector
//! task (`record`) and reported at the end (`report`, `html`), with the backend connection count
//! sampled on the side (`sample`).

pub mod html;
pub mod record;
pub mod report;
pub mod sample;
pub mod shape;
pub mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::parse_duration;
use record::{ErrorKey, Event, Phase, Recorder};
use report::Report;
use sample::Source;
use shape::{Plan, ShapeKind};
use target::Target;

/// Exit status for a storm in which some attempt failed.
pub const EXIT_FAILURES: u8 = 1;
/// Exit status for options that do not make a storm.
pub const EXIT_USAGE: u8 = 2;

/// `pgmux storm SHAPE --dsn DSN ...`
#[derive(clap::Args, Debug)]
pub struct StormArgs {
    /// burst: --clients N at once; rate: --rate R new clients/s for --duration T; hold: --clients
    /// N stay connected for --duration T running --rate R queries/s between them; ramp: the
    /// connection rate rises from 0 to --rate R over --duration T.
    #[arg(value_enum)]
    pub shape: ShapeKind,
    /// The endpoint, in libpq form: `host=... port=... user=... password=... dbname=...
    /// sslmode=... sslrootcert=...` or a postgres:// URL. PGPASSWORD fills a missing password.
    #[arg(long, env = "PGMUX_STORM_DSN")]
    pub dsn: String,
    /// Clients (burst, hold).
    #[arg(long)]
    pub clients: Option<u64>,
    /// New connections per second (rate, ramp: the final rate), or queries per second (hold).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the shape lasts (rate, ramp, hold), e.g. `30s`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Queries each client runs right after connecting.
    #[arg(long, default_value_t = 1)]
    pub queries: u32,
    /// The query (simple protocol).
    #[arg(long, default_value = "SELECT 1")]
    pub query: String,
    /// A client that is not logged in within this long counts as failed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// The PostgreSQL server behind the proxy (libpq DSN): its client backends for the target's
    /// database and user are counted every 100 ms.
    #[arg(long, conflicts_with = "admin")]
    pub server_dsn: Option<String>,
    /// pgmux's admin endpoint, `http://host:port`: its `pgmux_server_connections` gauge for the
    /// target's database and user is read every 100 ms.
    #[arg(long)]
    pub admin: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page with charts.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No live progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs the storm to the end and prints the report; the exit status (0 clean, 1 failures, 2 usage).
pub fn run(args: StormArgs) -> u8 {
    let usage = |e: String| {
        eprintln!("pgmux storm: {e}");
        EXIT_USAGE
    };
    let plan = match Plan::new(args.shape, args.clients, args.rate, args.duration, args.queries) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let target = match Target::parse(&args.dsn) {
        Ok(t) => t,
        Err(e) => return usage(format!("--dsn: {e}")),
    };
    // Fail before the storm, not after it, when the page cannot be written.
    if let Some(path) = &args.html
        && let Err(e) = std::fs::File::create(path)
    {
        return usage(format!("--html {}: {e}", path.display()));
    }
    // Every client is a file descriptor (two when the target is in this process).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < plan.clients + 64 => {
            eprintln!("pgmux storm: warning: RLIMIT_NOFILE is {n}, fewer than {} clients need", plan.clients)
        }
        Ok(_) => {}
        Err(e) => eprintln!("pgmux storm: warning: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("pgmux-storm").build() {
        Ok(rt) => rt,
        Err(e) => return usage(format!("cannot start runtime: {e}")),
    };
    rt.block_on(storm(args, plan, target))
}

/// What every client task shares.
struct Shared {
    target: Target,
    plan: Plan,
    query: String,
    connect_timeout: Duration,
    start: Instant,
    events: UnboundedSender<Event>,
    /// Clients past their connect and first queries (for `hold`), connected and failed ones.
    settled: AtomicU64,
    all_settled: Notify,
    connected: AtomicU64,
    failed: AtomicU64,
    /// When the hold phase ends, once every client has settled.
    hold_end: watch::Receiver<Option<Instant>>,
    /// Ctrl-C: clients still running stop and count as failed, the report covers what happened.
    interrupted: CancellationToken,
}

impl Shared {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn settle(&self) {
        if self.settled.fetch_add(1, Ordering::AcqRel) + 1 == self.plan.clients {
            self.all_settled.notify_one();
        }
    }
}

/// Settles its client once, however the client's work ends (finished, failed, or dropped).
struct Settle<'a>(&'a Shared);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.0.settle();
    }
}

async fn storm(args: StormArgs, plan: Plan, target: Target) -> u8 {
    let source = match sampler_source(&args, &target).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgmux storm: {e}");
            return EXIT_USAGE;
        }
    };
    let source_name = source.as_ref().map(Source::name);
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let mut rec = Recorder::default();
        while let Some(e) = rx.recv().await {
            rec.record(e);
        }
        rec
    });
    let start = Instant::now();
    let stop = CancellationToken::new();
    let sampler = source.map(|s| tokio::spawn(s.run(start, events.clone(), stop.clone())));
    let (hold_tx, hold_end) = watch::channel(None);
    let shared = Arc::new(Shared {
        target: target.clone(),
        plan: plan.clone(),
        query: args.query.clone(),
        connect_timeout: args.connect_timeout,
        start,
        events,
        settled: AtomicU64::new(0),
        all_settled: Notify::new(),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        hold_end,
        interrupted: CancellationToken::new(),
    });
    watch_ctrl_c(shared.interrupted.clone());
    let progress = (!args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| tokio::spawn(progress(shared.clone(), stop.clone())));

    let attempts = launch(&shared, hold_tx).await;
    let elapsed = start.elapsed();
    stop.cancel();
    for task in [sampler, progress].into_iter().flatten() {
        let _ = task.await;
    }
    drop(shared);
    let Ok(rec) = collector.await else {
        eprintln!("pgmux storm: the collector failed");
        return EXIT_FAILURES;
    };
    let report = Report::build(target.describe(), plan, args.query, attempts, elapsed, &rec, source_name);
    output(&report, args.json, args.html.as_deref())
}

/// The backend sampler asked for, connected (or checked) before the storm starts.
async fn sampler_source(args: &StormArgs, target: &Target) -> Result<Option<Source>, String> {
    match (&args.server_dsn, &args.admin) {
        (Some(dsn), _) => Source::server(dsn, target).await.map(Some),
        (None, Some(url)) => Source::admin(url, target).await.map(Some),
        (None, None) => Ok(None),
    }
}

/// Ctrl-C cancels `interrupted`. Registered before any client starts, so an early one is not lost
/// to the default action (ending the process without a report).
fn watch_ctrl_c(interrupted: CancellationToken) {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(mut sigint) => {
            tokio::spawn(async move {
                if sigint.recv().await.is_some() {
                    interrupted.cancel();
                }
            });
        }
        Err(e) => eprintln!("pgmux storm: warning: Ctrl-C will not stop the storm cleanly: {e}"),
    }
}

/// Starts the clients on the shape's schedule, opens the hold phase once all have settled, and
/// waits for every client to finish; the number of clients started.
async fn launch(shared: &Arc<Shared>, hold_tx: watch::Sender<Option<Instant>>) -> u64 {
    let plan = &shared.plan;
    let clients = TaskTracker::new();
    let mut attempts = 0;
    for i in 0..plan.clients {
        let at = shared.start + plan.start_offset(i);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shared.interrupted.cancelled() => break,
        }
        clients.spawn(client(shared.clone(), i));
        attempts += 1;
    }
    clients.close();
    if plan.shape == ShapeKind::Hold {
        tokio::select! {
            _ = shared.all_settled.notified() => {}
            _ = shared.interrupted.cancelled() => {}
        }
        let _ = hold_tx.send(Some(Instant::now() + plan.hold_for()));
    }
    clients.wait().await;
    if shared.interrupted.is_cancelled() {
        eprintln!("pgmux storm: interrupted after {attempts} of {} clients started", plan.clients);
    }
    attempts
}

/// Prints the report and writes the page; the exit status.
fn output(report: &Report, json: bool, html: Option<&std::path::Path>) -> u8 {
    let text = if json {
        serde_json::to_string_pretty(report).map(|j| j + "\n").unwrap_or_else(|e| format!("JSON: {e}\n"))
    } else {
        report.to_text()
    };
    // A closed stdout (`| head`) is no reason to panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if let Some(path) = html {
        match html::render(report).map(|page| std::fs::write(path, page).map_err(|e| e.to_string())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                eprintln!("pgmux storm: --html {}: {e}", path.display());
                return EXIT_FAILURES;
            }
        }
    }
    if report.clean() { 0 } else { EXIT_FAILURES }
}

/// One simulated client, start to finish; reports success or its first failure.
async fn client(s: Arc<Shared>, i: u64) {
    let outcome = tokio::select! {
        r = session(&s, i) => r,
        _ = s.interrupted.cancelled() => Err(ErrorKey::other(Phase::Query, "interrupted (Ctrl-C)")),
    };
    match outcome {
        Ok(()) => s.send(Event::Succeeded),
        Err(error) => {
            s.failed.fetch_add(1, Ordering::Relaxed);
            s.send(Event::Failed { at: s.start.elapsed(), error });
        }
    }
}

async fn session(s: &Shared, i: u64) -> Result<(), ErrorKey> {
    let settle = Settle(s);
    let begun = Instant::now();
    let (client, conn) = match tokio::time::timeout(s.connect_timeout, s.target.config.connect(s.target.tls.clone()))
        .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(ErrorKey::from_pg(Phase::Connect, &e)),
        Err(_) => return Err(ErrorKey::other(Phase::Connect, format!("not logged in within {:?}", s.connect_timeout))),
    };
    s.send(Event::Connected { at: s.start.elapsed(), latency: begun.elapsed() });
    s.connected.fetch_add(1, Ordering::Relaxed);
    // The connection is driven here too: one task per client.
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = work(s, i, &client, settle) => r,
        r = &mut conn => Err(match r {
            Err(e) => ErrorKey::from_pg(Phase::Query, &e),
            Ok(()) => ErrorKey::other(Phase::Query, "the server closed the connection"),
        }),
    };
    drop(client);
    if result.is_ok() {
        // Dropping the client sends Terminate; let it go out before the socket closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    }
    result
}

async fn work(s: &Shared, i: u64, client: &tokio_postgres::Client, settle: Settle<'_>) -> Result<(), ErrorKey> {
    for _ in 0..s.plan.queries {
        query(s, client).await?;
    }
    drop(settle);
    if s.plan.shape != ShapeKind::Hold {
        return Ok(());
    }
    let mut end = s.hold_end.clone();
    let Ok(end) = end.wait_for(Option::is_some).await.map(|e| e.unwrap_or_else(Instant::now)) else {
        return Ok(());
    };
    if let Some((every, phase)) = s.plan.hold_ticks(i) {
        let mut next = end - s.plan.hold_for() + phase;
        while next < end {
            tokio::time::sleep_until(next).await;
            query(s, client).await?;
            next += every;
        }
    }
    tokio::time::sleep_until(end).await;
    Ok(())
}

async fn query(s: &Shared, client: &tokio_postgres::Client) -> Result<(), ErrorKey> {
    let t = Instant::now();
    client.simple_query(&s.query).await.map_err(|e| ErrorKey::from_pg(Phase::Query, &e))?;
    s.send(Event::Query { latency: t.elapsed() });
    Ok(())
}

/// The live progress line on stderr (a terminal only).
async fn progress(s: Arc<Shared>, stop: CancellationToken) {
    let bar = indicatif::ProgressBar::new(s.plan.clients);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} settled  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        bar.set_position(s.settled.load(Ordering::Relaxed));
        let (ok, failed) = (s.connected.load(Ordering::Relaxed), s.failed.load(Ordering::Relaxed));
        bar.set_message(format!("connected {ok}  failed {failed}"));
    }
    bar.finish_and_clear();
}
