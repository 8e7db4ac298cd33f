//! Throwaway local PostgreSQL clusters (one primary + streaming replicas) for tests and `pgmux demo`.
//!
//! Blocking std code: call it from sync code or `spawn_blocking`. It runs the PostgreSQL binaries
//! of the machine, as the `postgres` OS user when we are root (the server refuses to run as root).

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PG_LIB: &str = "/usr/lib/postgresql";
/// A port found free may be taken before the server binds it: then retry with a fresh one.
const START_ATTEMPTS: usize = 3;
/// Cleared so that the caller's environment can't point our tools at another server.
const PG_ENV: &str = "PGDATA PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE";

/// How non-superusers authenticate over TCP (the last, catch-all `host` line of pg_hba.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAuth {
    #[default]
    ScramSha256,
    Md5,
    /// Cleartext password.
    Password,
    Trust,
}

impl HostAuth {
    fn hba_method(self) -> &'static str {
        match self {
            HostAuth::ScramSha256 => "scram-sha-256",
            HostAuth::Md5 => "md5",
            HostAuth::Password => "password",
            HostAuth::Trust => "trust",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub replicas: usize,
    /// Login roles `(name, password)`, created on the primary before the replicas are cloned.
    pub users: Vec<(String, String)>,
    /// `(database, owner)`.
    pub databases: Vec<(String, String)>,
    pub max_connections: u32,
    pub auth: HostAuth,
    /// `ssl = on` with this certificate and key (PEM files, copied into each data dir).
    pub ssl: Option<SslFiles>,
    /// pg_hba.conf lines placed before the catch-all `host` line (the first matching line wins).
    pub extra_hba: Vec<String>,
}

/// A server certificate (chain, leaf first) and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct SslFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas: 1,
            users: vec![("app".into(), "app".into())],
            databases: vec![("app".into(), "app".into())],
            max_connections: 300,
            auth: HostAuth::ScramSha256,
            ssl: None,
            extra_hba: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "no PostgreSQL binaries found ({0}): install the Debian package `postgresql` \
         (e.g. `apt-get install postgresql`) or set PGMUX_PG_BIN to its bin directory"
    )]
    NotInstalled(String),
    #[error(
        "running as root but there is no `postgres` OS user to run the servers as: install \
         the Debian package `postgresql` (e.g. `apt-get install postgresql`)"
    )]
    NoPostgresUser,
    /// What was being done, and the I/O error.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The command line, and its exit status with stderr (for `pg_ctl start`, the server log).
    #[error("`{0}` failed: {1}")]
    Command(String, String),
    #[error("node {0} does not exist: the cluster has {1} nodes")]
    NoSuchNode(usize, usize),
    #[error("no running primary: every running node is in recovery")]
    NoPrimary,
    #[error("replicas not caught up after {0:?}: {1}")]
    CatchUpTimeout(Duration, String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPgError {
    let what = what.into();
    move |source| LocalPgError::Io(what, source)
}

/// A running cluster in its own temp dir; dropping it stops every node and removes the dir.
#[derive(Debug)]
pub struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    /// `None` once shut down.
    root: Option<tempfile::TempDir>,
    /// `(uid, gid)` of `postgres` when we are root.
    run_as: Option<(u32, u32)>,
    /// One per node dir made; 0 until the node's first start.
    ports: Vec<u16>,
}

impl LocalCluster {
    pub fn start(opts: ClusterOptions) -> Result<LocalCluster, LocalPgError> {
        let bin = find_bin(std::env::var_os("PGMUX_PG_BIN"), Path::new(PG_LIB))?;
        let postgres = || Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?));
        let run_as = match effective_uid() {
            0 => Some(postgres().ok_or(LocalPgError::NoPostgresUser)?),
            _ => None,
        };
        let base = temp_base(run_as.is_some());
        let root = tempfile::Builder::new().prefix("pgmux-pg-").tempdir_in(&base);
        let root = root.map_err(io_err(format!("create a temp dir in {}", base.display())))?;
        let (dir, root, ports) = (root.path().to_path_buf(), Some(root), Vec::new());
        // From here on, Drop stops whatever was started if a later step fails.
        let mut cluster = LocalCluster { bin, dir, root, run_as, ports };
        cluster.own(&cluster.dir)?;
        cluster.init_primary(&opts, None)?;
        cluster.create_roles(&opts)?;
        for _ in 0..opts.replicas {
            cluster.add_replica(None)?;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> usize {
        self.ports.len()
    }

    /// Node 0 is the initial primary, 1.. the replicas. Panics if out of range, like indexing.
    pub fn port(&self, node: usize) -> u16 {
        self.ports[node]
    }

    pub fn addr(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.port(node))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql` as superuser `postgres` over the node's unix socket; `-tA` output, trimmed.
    pub fn psql(&self, node: usize, db: &str, sql: &str) -> Result<String, LocalPgError> {
        self.check(node)?;
        run(self.psql_cmd(node, db).arg("-c").arg(sql))
    }

    pub fn stop(&self, node: usize, immediate: bool) -> Result<(), LocalPgError> {
        self.check(node)?;
        let mode = if immediate { "immediate" } else { "fast" };
        let args = ["-m", mode, "-w", "-t", "60", "stop"];
        run(self.pg_ctl(node).args(args)).map(drop)
    }

    /// Starts a stopped node again, on its same port.
    pub fn start_node(&self, node: usize) -> Result<(), LocalPgError> {
        self.check(node)?;
        self.pg_ctl_start(node)
    }

    pub fn promote(&self, node: usize) -> Result<(), LocalPgError> {
        self.check(node)?;
        run(self.pg_ctl(node).args("-w -t 60 promote".split(' '))).map(drop)
    }

    /// Restarts `node` as a streaming replica of `primary` (a planned switchover's last step, after
    /// `primary` was promoted): stops it (fast, if running), adds `standby.signal` and a
    /// `primary_conninfo` pointing at `primary`, starts it. It follows the new timeline
    /// (`recovery_target_timeline = latest`) as long as it had not written past the promotion
    /// point: stopping the old primary with `-m fast` before promoting ensures that.
    pub fn demote(&self, node: usize, primary: usize) -> Result<(), LocalPgError> {
        self.check(node)?;
        self.check(primary)?;
        let data = self.data_dir(node);
        if data.join("postmaster.pid").exists() {
            self.stop(node, false)?;
        }
        self.write_file(&data.join("standby.signal"), "")?;
        let auto = data.join("postgresql.auto.conf");
        let conf = fs::read_to_string(&auto).map_err(io_err("read postgresql.auto.conf"))?;
        let conf: String =
            conf.lines().filter(|l| !l.starts_with("primary_conninfo")).map(|l| format!("{l}\n")).collect();
        let conninfo = format!("host=127.0.0.1 port={} user=postgres application_name=node{node}", self.ports[primary]);
        self.write_file(&auto, &format!("{conf}primary_conninfo = {}\n", literal(&conninfo)))?;
        self.pg_ctl_start(node)
    }

    /// Waits until every running standby has replayed the WAL that the primary (the first running
    /// node not in recovery) had at the call. A standby following another primary never will.
    pub fn wait_replicas_caught_up(&self, timeout: Duration) -> Result<(), LocalPgError> {
        let deadline = Instant::now() + timeout;
        let (mut primary, mut standbys) = (None, Vec::new());
        for node in 0..self.nodes() {
            // A node that doesn't answer is down: nothing to wait for.
            let in_recovery = self.psql(node, "postgres", "SELECT pg_is_in_recovery()");
            match in_recovery.as_deref() {
                Ok("t") => standbys.push(node),
                Ok(_) => _ = primary.get_or_insert(node),
                Err(_) => {}
            }
        }
        let primary = primary.ok_or(LocalPgError::NoPrimary)?;
        // With synchronous_commit = off the write position can lag behind commits. A synchronous
        // commit that wrote WAL (the message) flushes all WAL before it, so the position read next
        // covers every earlier commit. (The insert position may point past a page header, which
        // replay never reports.)
        let flush = "SELECT set_config('synchronous_commit', 'on', true), \
                     pg_logical_emit_message(true, 'pgmux', '')";
        self.psql(primary, "postgres", flush)?;
        let target = self.psql(primary, "postgres", "SELECT pg_current_wal_lsn()")?;
        let check = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        for node in standbys {
            let mut pause = Duration::from_millis(5);
            loop {
                let last = self.psql(node, "postgres", &check);
                if matches!(last.as_deref(), Ok("t")) {
                    break;
                }
                if Instant::now() >= deadline {
                    let last = last.unwrap_or_else(|e| e.to_string());
                    let detail = format!("node {node} not replayed up to {target} (check: {last})");
                    return Err(LocalPgError::CatchUpTimeout(timeout, detail));
                }
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Replaces the cluster by a new one on the same ports, as when a managed database is
    /// re-provisioned or restored at the same addresses: every node is stopped (immediate), its
    /// data removed, node 0 made anew by initdb (a new system identifier, timeline 1) and the
    /// others cloned from it again.
    pub fn rebuild(&mut self, opts: &ClusterOptions) -> Result<(), LocalPgError> {
        for node in 0..self.nodes() {
            if self.data_dir(node).join("postmaster.pid").exists() {
                run(self.pg_ctl(node).args("-m immediate -w -t 30 stop".split(' ')))?;
            }
            let dir = self.node_dir(node);
            fs::remove_dir_all(&dir).map_err(io_err(format!("remove {}", dir.display())))?;
        }
        let ports = std::mem::take(&mut self.ports);
        self.init_primary(opts, ports.first().copied())?;
        self.create_roles(opts)?;
        for &port in ports.iter().skip(1) {
            self.add_replica(Some(port))?;
        }
        Ok(())
    }

    /// Stops every node (immediate) and removes the directory. Idempotent.
    pub fn shutdown(&mut self) {
        let Some(root) = self.root.take() else { return };
        for node in 0..self.nodes() {
            if self.data_dir(node).join("postmaster.pid").exists() {
                let args = "-m immediate -w -t 30 stop".split(' ');
                let _ = run(self.pg_ctl(node).args(args));
            }
        }
        let _ = root.close();
    }

    fn check(&self, node: usize) -> Result<(), LocalPgError> {
        match self.nodes() {
            nodes if node >= nodes => Err(LocalPgError::NoSuchNode(node, nodes)),
            _ => Ok(()),
        }
    }

    /// `nodeN/` holds the node's unix socket, its log and its data dir.
    /// For a cluster that lives in a `static` (whose Drop never runs): a detached watcher stops the
    /// servers (SIGQUIT, an immediate shutdown) and removes the directory once this process is gone.
    pub fn stop_when_process_exits(&self) {
        let pid = std::process::id();
        let pidfiles: Vec<String> =
            (0..self.ports.len()).map(|n| format!("'{}'", self.data_dir(n).join("postmaster.pid").display())).collect();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
             for f in {files}; do [ -f \"$f\" ] && p=$(head -1 \"$f\") && kill -QUIT \"$p\" 2>/dev/null && \
               while kill -0 \"$p\" 2>/dev/null; do sleep 0.1; done; done; rm -rf '{dir}'",
            files = pidfiles.join(" "),
            dir = self.dir.display()
        );
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("localpg: cannot start the cleanup watcher: {e}");
        }
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}"))
    }

    fn data_dir(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("data")
    }

    fn own(&self, path: &Path) -> Result<(), LocalPgError> {
        let Some((uid, gid)) = self.run_as else {
            return Ok(());
        };
        let chowned = chown(path, Some(uid), Some(gid));
        chowned.map_err(io_err(format!("chown {}", path.display())))
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<(), LocalPgError> {
        let written = fs::write(path, contents);
        written.map_err(io_err(format!("write {}", path.display())))?;
        self.own(path)
    }

    /// A command running one of the PostgreSQL tools, as `postgres` when we are root.
    fn pg_cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        // Our own cwd and HOME may be closed to `postgres`; the cluster dir is its own.
        cmd.current_dir(&self.dir).env("HOME", &self.dir);
        cmd.stdin(Stdio::null());
        PG_ENV.split(' ').for_each(|var| _ = cmd.env_remove(var));
        if let Some((uid, gid)) = self.run_as {
            // As root, std also drops the supplementary groups when it switches uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn pg_ctl(&self, node: usize) -> Command {
        let mut cmd = self.pg_cmd("pg_ctl");
        cmd.arg("-D").arg(self.data_dir(node));
        cmd
    }

    fn psql_cmd(&self, node: usize, db: &str) -> Command {
        let mut cmd = self.pg_cmd("psql");
        cmd.args("-X -q -tA -v ON_ERROR_STOP=1 -U postgres -d".split(' '));
        cmd.arg(db).arg("-h").arg(self.node_dir(node));
        cmd.arg("-p").arg(self.ports[node].to_string());
        cmd
    }

    /// `pg_ctl start`; its error carries what the server logged, as pg_ctl only says to look there.
    fn pg_ctl_start(&self, node: usize) -> Result<(), LocalPgError> {
        let log = self.node_dir(node).join("log");
        let logged = fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut cmd = self.pg_ctl(node);
        cmd.arg("-l").arg(&log);
        match run(cmd.args("-w -t 60 start".split(' '))) {
            Ok(_) => Ok(()),
            Err(LocalPgError::Command(command, output)) => {
                let text = fs::read(&log).unwrap_or_default();
                let from = logged.max(text.len().saturating_sub(2000));
                let new = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
                let output = format!("{output}\n{}", new.trim());
                Err(LocalPgError::Command(command, output))
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the next node's dir; its port (`port`, or 0 until `launch` finds one) is kept.
    fn new_node(&mut self, port: Option<u16>) -> Result<usize, LocalPgError> {
        let dir = self.node_dir(self.nodes());
        fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        self.own(&dir)?;
        self.ports.push(port.unwrap_or(0));
        Ok(self.nodes() - 1)
    }

    /// First start of a node whose data dir is ready: gives it a free port (unless it has one
    /// already) and its socket dir.
    fn launch(&mut self, node: usize) -> Result<(), LocalPgError> {
        let socket_dir = literal(&self.node_dir(node).to_string_lossy());
        let fixed = self.ports[node] != 0;
        for attempt in 1..=START_ATTEMPTS {
            if !fixed {
                self.ports[node] = free_port(&self.ports)?;
            }
            let port = self.ports[node];
            let conf = format!("port = {port}\nunix_socket_directories = {socket_dir}\n");
            self.write_file(&self.data_dir(node).join("node.conf"), &conf)?;
            match self.pg_ctl_start(node) {
                Err(e) if !fixed && attempt < START_ATTEMPTS && e.to_string().contains("already in use") => {}
                result => return result,
            }
        }
        unreachable!("the last attempt returns")
    }

    fn init_primary(&mut self, opts: &ClusterOptions, port: Option<u16>) -> Result<(), LocalPgError> {
        let node = self.new_node(port)?;
        let data = self.data_dir(node);
        let initdb = "-U postgres -A trust -E UTF8 --locale=C --no-sync -D".split(' ');
        run(self.pg_cmd("initdb").args(initdb).arg(&data))?;
        // Port and socket dir live in node.conf, so the replicas cloned from this dir share the
        // rest and rewrite only that file.
        let path = data.join("postgresql.conf");
        let mut conf = fs::read_to_string(&path).map_err(io_err("read postgresql.conf"))?;
        conf += &format!(
            "\n# pgmux localpg\nlisten_addresses = '127.0.0.1'\nmax_connections = {}\n\
             wal_level = replica\nhot_standby = on\nmax_wal_senders = 10\n\
             wal_keep_size = '256MB'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = '128MB'\ninclude 'node.conf'\n",
            opts.max_connections
        );
        if let Some(ssl) = &opts.ssl {
            conf += &self.install_ssl(&data, ssl)?;
        }
        self.write_file(&path, &conf)?;
        // The first matching line wins.
        let extra: String = opts.extra_hba.iter().map(|l| format!("{l}\n")).collect();
        let hba = format!(
            "local all all trust\nhost replication postgres 127.0.0.1/32 trust\n\
             host all postgres 127.0.0.1/32 trust\n{extra}host all all 127.0.0.1/32 {}\n",
            opts.auth.hba_method()
        );
        self.write_file(&data.join("pg_hba.conf"), &hba)?;
        self.launch(node)
    }

    /// Copies the certificate and key into the data dir, readable by the server only (it refuses a
    /// key others can read), and returns the settings that use them (relative to the data dir, so
    /// replicas cloned from it use their own copies).
    fn install_ssl(&self, data: &Path, ssl: &SslFiles) -> Result<String, LocalPgError> {
        use std::os::unix::fs::PermissionsExt;
        for (from, to) in [(&ssl.cert, "server.crt"), (&ssl.key, "server.key")] {
            let to = data.join(to);
            fs::copy(from, &to).map_err(io_err(format!("copy {} to {}", from.display(), to.display())))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))
                .map_err(io_err(format!("chmod {}", to.display())))?;
            self.own(&to)?;
        }
        Ok("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".into())
    }

    fn create_roles(&self, opts: &ClusterOptions) -> Result<(), LocalPgError> {
        let md5 = opts.auth == HostAuth::Md5;
        let encryption = if md5 { "md5" } else { "scram-sha-256" };
        let mut sql = vec![format!("SET password_encryption = '{encryption}'")];
        for (user, pw) in &opts.users {
            let (user, pw) = (ident(user), literal(pw));
            sql.push(format!("CREATE ROLE {user} LOGIN PASSWORD {pw}"));
        }
        for (db, owner) in &opts.databases {
            let (db, owner) = (ident(db), ident(owner));
            sql.push(format!("CREATE DATABASE {db} OWNER {owner}"));
        }
        // One session; each -c runs on its own, as CREATE DATABASE refuses a transaction block.
        let mut cmd = self.psql_cmd(0, "postgres");
        sql.iter().for_each(|s| _ = cmd.arg("-c").arg(s));
        run(&mut cmd).map(drop)
    }

    fn add_replica(&mut self, port: Option<u16>) -> Result<(), LocalPgError> {
        let node = self.new_node(port)?;
        let mut cmd = self.pg_cmd("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-p", &self.ports[0].to_string()]);
        // -c fast: the default spread checkpoint takes about a minute.
        cmd.args("-U postgres -R -X stream -c fast --no-sync -D".split(' '));
        run(cmd.arg(self.data_dir(node)))?;
        self.launch(node)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs a command to completion: its stdout, trimmed, or an error carrying its stderr.
fn run(cmd: &mut Command) -> Result<String, LocalPgError> {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    let program = cmd.get_program().to_string_lossy();
    let command = format!("{program} {}", args.join(" "));
    let out = cmd.output().map_err(io_err(format!("run {command}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let output = format!("{}: {}\n{stdout}", out.status, stderr.trim());
    Err(LocalPgError::Command(command, output.trim().to_string()))
}

/// `PGMUX_PG_BIN` if set, else the newest `<lib>/<version>/bin` that has initdb and pg_ctl.
fn find_bin(env: Option<OsString>, lib: &Path) -> Result<PathBuf, LocalPgError> {
    let usable = |bin: &Path| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file();
    if let Some(dir) = env.filter(|d| !d.is_empty()).map(PathBuf::from) {
        let searched = format!("PGMUX_PG_BIN={} has no pg_ctl or initdb", dir.display());
        return usable(&dir).then_some(dir).ok_or(LocalPgError::NotInstalled(searched));
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir(lib).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
        let bin = entry.path().join("bin");
        if let Some(version) = version.filter(|_| usable(&bin)) {
            best = best.max(Some((version, bin)));
        }
    }
    let searched = format!("{}/*/bin; PGMUX_PG_BIN unset", lib.display());
    best.map(|(_, bin)| bin).ok_or(LocalPgError::NotInstalled(searched))
}

fn effective_uid() -> u32 {
    // /proc/self belongs to the effective uid; `id -u` where there is no /proc.
    let proc_self = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    proc_self.or_else(|| id(&["-u"])).unwrap_or(u32::MAX)
}

/// What `id <args>` prints, as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = run(Command::new("id").args(args)).ok()?;
    out.parse().ok()
}

/// Where the cluster goes: the temp dir, unless socket paths under it would overflow sun_path
/// (~107 bytes) or, as root, one of its ancestors would stop `postgres`.
fn temp_base(as_root: bool) -> PathBuf {
    let tmp = std::env::temp_dir();
    let traversable = |p: &Path| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0);
    if tmp.as_os_str().len() <= 64 && (!as_root || tmp.ancestors().all(traversable)) {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

fn free_port(taken: &[u16]) -> Result<u16, LocalPgError> {
    loop {
        let bound = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let port = bound.map_err(io_err("bind 127.0.0.1:0"))?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATCH_UP: Duration = Duration::from_secs(30);

    fn single(auth: HostAuth) -> LocalCluster {
        let opts = ClusterOptions { replicas: 0, auth, ..ClusterOptions::default() };
        LocalCluster::start(opts).unwrap()
    }

    /// Command lines naming `dir`: postmasters (`postgres -D <dir>/nodeN/data`) still running.
    fn postmasters_under(dir: &Path) -> Vec<String> {
        let procs = fs::read_dir("/proc").unwrap().flatten();
        let cmdlines = procs.filter_map(|p| fs::read(p.path().join("cmdline")).ok());
        let cmdlines = cmdlines.map(|c| String::from_utf8_lossy(&c).replace('\0', " "));
        cmdlines.filter(|c| c.contains(&*dir.to_string_lossy())).collect()
    }

    #[test]
    fn replica_follows_restarts_and_is_promoted() {
        let mut c = LocalCluster::start(ClusterOptions::default()).unwrap();
        assert_eq!(c.nodes(), 2);
        assert_eq!(c.addr(1), format!("127.0.0.1:{}", c.port(1)));
        assert_eq!(c.psql(0, "app", "SELECT pg_is_in_recovery()").unwrap(), "f");
        assert_eq!(c.psql(1, "app", "SELECT pg_is_in_recovery()").unwrap(), "t");
        let create = "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)";
        c.psql(0, "app", create).unwrap();
        c.wait_replicas_caught_up(CATCH_UP).unwrap();
        assert_eq!(c.psql(1, "app", "SELECT sum(v) FROM t").unwrap(), "3");
        let err = c.psql(1, "app", "INSERT INTO t VALUES (3)").unwrap_err();
        assert!(err.to_string().contains("read-only transaction"), "{err}");

        c.stop(1, false).unwrap();
        assert!(c.psql(1, "app", "SELECT 1").is_err());
        c.psql(0, "app", "INSERT INTO t VALUES (3)").unwrap();
        c.wait_replicas_caught_up(CATCH_UP).unwrap(); // stopped standbys are not waited for
        c.start_node(1).unwrap();
        c.wait_replicas_caught_up(CATCH_UP).unwrap();
        assert_eq!(c.psql(1, "app", "SELECT sum(v) FROM t").unwrap(), "6");

        c.stop(0, true).unwrap();
        c.promote(1).unwrap();
        c.psql(1, "app", "INSERT INTO t VALUES (4)").unwrap();
        let missing = c.psql(2, "app", "SELECT 1");
        assert!(matches!(missing, Err(LocalPgError::NoSuchNode(2, 2))));
        let dir = c.dir().to_path_buf();
        c.shutdown();
        c.shutdown();
        assert!(!dir.exists() && postmasters_under(&dir).is_empty());
    }

    fn app_logs_in_over_tcp(auth: HostAuth, stored_prefix: &str) {
        let c = single(auth);
        let port = c.port(0);
        let conn = |pw: &str| format!("host=127.0.0.1 port={port} user=app password={pw} dbname=app");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let tls = tokio_postgres::NoTls;
            let (client, connection) = tokio_postgres::connect(&conn("app"), tls).await.unwrap();
            let connection = tokio::spawn(connection);
            let row = client.query_one("SELECT current_user::text", &[]);
            let row = row.await.unwrap();
            assert_eq!(row.get::<_, String>(0), "app");
            drop(client);
            connection.await.unwrap().unwrap();
            assert!(tokio_postgres::connect(&conn("wrong"), tls).await.is_err());
        });
        let sql = "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'app'";
        assert_eq!(c.psql(0, "postgres", sql).unwrap(), stored_prefix);
    }

    #[test]
    fn app_logs_in_with_scram() {
        app_logs_in_over_tcp(HostAuth::ScramSha256, "SCR");
    }

    #[test]
    fn app_logs_in_with_md5() {
        app_logs_in_over_tcp(HostAuth::Md5, "md5");
    }

    #[test]
    fn drop_stops_the_servers_when_a_test_panics() {
        let seen = std::sync::Mutex::new(None);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let c = single(HostAuth::Trust);
            *seen.lock().unwrap() = Some(c.dir().to_path_buf());
            assert_eq!(postmasters_under(c.dir()).len(), 1);
            panic!("a test fails while its cluster runs");
        }));
        assert!(result.is_err());
        let dir = seen.into_inner().unwrap().unwrap();
        assert!(!dir.exists() && postmasters_under(&dir).is_empty());
    }

    #[test]
    fn finds_the_newest_installed_version() {
        let lib = tempfile::tempdir().unwrap();
        let lib = lib.path();
        for tool in ["9.6/bin/pg_ctl", "9.6/bin/initdb", "15/bin/pg_ctl", "15/bin/initdb"] {
            fs::create_dir_all(lib.join(tool).parent().unwrap()).unwrap();
            fs::write(lib.join(tool), "").unwrap();
        }
        fs::create_dir_all(lib.join("16/bin")).unwrap(); // no server tools
        assert_eq!(find_bin(None, lib).unwrap(), lib.join("15/bin"));
        let env = Some(lib.join("9.6/bin").into());
        assert_eq!(find_bin(env, lib).unwrap(), lib.join("9.6/bin"));
        let advice = "Debian package `postgresql` (e.g. `apt-get install postgresql`)";
        let no_tools = find_bin(Some(lib.join("16/bin").into()), lib).unwrap_err();
        let no_versions = find_bin(None, &lib.join("none")).unwrap_err();
        assert!(no_tools.to_string().contains(advice) && no_versions.to_string().contains(advice));
        assert_eq!(ident("a\"b") + &literal("it's"), "\"a\"\"b\"'it''s'");
    }
}
