//! The container image: built from the repository's Dockerfile with podman, then run with the
//! environment of each example under deploy/ (compose, ECS, Kubernetes) against a PostgreSQL this
//! test starts: queries through it with psql, /readyz, `pgmux health`, a non-root uid, and a
//! SIGTERM drain that lets a running transaction finish and exits 0.
//!
//! No registry is reachable here, so the Dockerfile's two base images are replaced by build
//! arguments: the runtime base by a minimal Debian made with mmdebstrap (`.ci/container-base`),
//! and the Rust builder by a stand-in whose `cargo` puts in place the binary this test compiled on
//! the host from exactly the files the Dockerfile copies, with the Dockerfile's own cargo command.
//! Containers run with host networking (the only networking that works on this machine), so the
//! examples' listen ports are moved to free ones and their servers point at the test's
//! PostgreSQL; every other setting is the example's.
//!
//! Skipped (with a message) where podman is missing; under CI=true that is a failure.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{connect, eventually, http_get};
use pgmux::localpg::{ClusterOptions, LocalCluster};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BASE_IMAGE: &str = "localhost/pgmux-base:bookworm";
/// Uid and gid the Dockerfile runs pgmux as (distroless's `nonroot`).
const NONROOT: &str = "65532";
/// How this machine runs containers: runc with cgroupfs (podman's defaults fail here).
const PODMAN_GLOBAL: [&str; 4] = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];
const LIMITS: [&str; 6] = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--network", "host"];
/// The image's built-in shutdown_timeout (deploy/container/proxy.yaml).
const IMAGE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// The built image, or why the test is skipped.
struct Image {
    tag: String,
    commit: String,
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(PODMAN_GLOBAL);
    command
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The image, built once per test binary; `None` when the test must be skipped.
fn image() -> Option<&'static Image> {
    static IMAGE: OnceLock<Option<Image>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let missing: Vec<&str> = ["podman", "runc"].into_iter().filter(|t| !have(t)).collect();
            let base_missing = !podman().args(["image", "exists", BASE_IMAGE]).status().is_ok_and(|s| s.success());
            let missing =
                if missing.is_empty() && base_missing && !have("mmdebstrap") { vec!["mmdebstrap"] } else { missing };
            if !missing.is_empty() {
                let why = format!(
                    "container test skipped: {} not installed (apt-get install podman runc mmdebstrap; .ci/run does)",
                    missing.join(", ")
                );
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}, but CI=true");
                eprintln!("{why}");
                return None;
            }
            if base_missing {
                run(Command::new("bash").arg(Path::new(REPO).join(".ci/container-base")));
            }
            Some(build_image())
        })
        .as_ref()
}

/// The build stage of the Dockerfile: what it copies and its cargo command.
struct BuildStage {
    copies: Vec<String>,
    cargo: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let joined = dockerfile.replace("\\\n", " ");
    let stage = joined.split("\nFROM ").nth(1).expect("a FROM … AS build stage");
    let mut copies = Vec::new();
    let mut cargo = Vec::new();
    for line in stage.lines().map(str::trim) {
        if let Some(args) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = args.split_whitespace().collect();
            assert!(!words[0].starts_with("--"), "build stage COPY with options: {line}");
            let (dest, sources) = words.split_last().expect("COPY source… dest");
            // The test mirrors the repository layout: each source lands at its own name.
            for source in sources {
                let mirrored = *dest == "./" || dest.trim_start_matches("./").trim_end_matches('/') == *source;
                assert!(mirrored, "build stage COPY that renames: {line}");
            }
            copies.extend(sources.iter().map(|w| w.to_string()));
        } else if let Some(command) = line.strip_prefix("RUN ") {
            assert!(cargo.is_empty() && command.starts_with("cargo "), "build stage runs more than cargo: {line}");
            cargo = command.split_whitespace().map(str::to_owned).collect();
        }
    }
    assert!(!cargo.is_empty(), "no cargo command in the build stage");
    BuildStage { copies, cargo }
}

fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_pgmux"));
    bin.ancestors().nth(2).expect("target dir").to_path_buf()
}

/// Compiles exactly the files the build stage copies with its own cargo command (in a fixed
/// directory, mtimes kept, so an unchanged tree is not rebuilt); returns the binary.
fn compile_build_context(stage: &BuildStage, commit: &str) -> PathBuf {
    let context = target_dir().join("container-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).expect("context dir");
    for item in &stage.copies {
        run(Command::new("cp").arg("-a").arg(Path::new(REPO).join(item)).arg(&context));
    }
    // Where the compile keeps its artifacts: .ci/run points this at a cache outside the clone, so
    // that CI recompiles only pgmux itself after its first run on a machine.
    let build_target = std::env::var_os("CONTAINER_TEST_CARGO_TARGET")
        .map_or_else(|| target_dir().join("container-build"), PathBuf::from);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    run(Command::new(cargo)
        .args(&stage.cargo[1..])
        .current_dir(&context)
        .env("CARGO_TARGET_DIR", &build_target)
        .env("PGMUX_COMMIT", commit));
    eprintln!("container: build context compiled with `{}` in {:?}", stage.cargo.join(" "), started.elapsed());
    build_target.join("release/pgmux")
}

fn build_image() -> Image {
    let commit = Command::new("git")
        .args(["-C", REPO, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o))
        .unwrap_or_default();
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).expect("Dockerfile");
    let stage = build_stage(&dockerfile);
    let binary = compile_build_context(&stage, &commit);
    let pid = std::process::id();
    let tag = format!("localhost/pgmux-test:{pid}");
    let builder = format!("localhost/pgmux-test-builder:{pid}");
    remove_images_when_process_exits(&[&tag, &builder]);

    // The stand-in builder: the base image plus a `cargo` that accepts only the Dockerfile's
    // command and puts the host-compiled binary where that command would have.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(&binary, dir.path().join("pgmux")).expect("copy binary");
    let shim = format!(
        "#!/bin/sh\nset -e\n[ \"cargo $*\" = \"{}\" ] || {{ echo \"unexpected: cargo $*\" >&2; exit 1; }}\n\
         mkdir -p target/release\ncp /opt/prebuilt/pgmux target/release/pgmux\n",
        stage.cargo.join(" ")
    );
    std::fs::write(dir.path().join("cargo"), shim).expect("write shim");
    run(Command::new("chmod").arg("755").arg(dir.path().join("cargo")));
    let containerfile = format!("FROM {BASE_IMAGE}\nCOPY pgmux /opt/prebuilt/pgmux\nCOPY cargo /usr/local/bin/cargo\n");
    std::fs::write(dir.path().join("Containerfile"), containerfile).expect("write Containerfile");
    run(podman()
        .args(["build", "--quiet", "-t", &builder, "-f"])
        .arg(dir.path().join("Containerfile"))
        .arg(dir.path()));

    let started = Instant::now();
    run(podman()
        .args(["build", "--quiet", "--layers=false", "--format", "docker"])
        .args(LIMITS)
        .args(["--build-arg", &format!("BUILDER_IMAGE={builder}")])
        .args(["--build-arg", &format!("RUNTIME_BASE={BASE_IMAGE}")])
        .args(["--build-arg", &format!("PGMUX_COMMIT={commit}")])
        .args(["-t", &tag, "-f"])
        .arg(Path::new(REPO).join("Dockerfile"))
        .arg(REPO));
    let size = std::fs::metadata(&binary).map(|m| m.len() / 1_000_000).unwrap_or(0);
    eprintln!("container: image {tag} built from the Dockerfile in {:?} (binary {size} MB)", started.elapsed());
    Image { tag, commit }
}

fn remove_images_when_process_exits(tags: &[&str]) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; podman rmi -f {tags} >/dev/null 2>&1",
        pid = std::process::id(),
        tags = tags.join(" ")
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("container: cannot start the image cleanup watcher: {e}");
    }
}

/// PostgreSQL primary + replica with the examples' users: `app` (compose) and `orders` (ECS,
/// Kubernetes), password = name.
fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut opts = ClusterOptions::default();
        opts.users.push(("orders".into(), "orders".into()));
        opts.databases.push(("orders".into(), "orders".into()));
        let c = LocalCluster::start(opts).expect("start local PostgreSQL");
        c.stop_when_process_exits();
        c
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// How the test runs one example: its environment (with the test's stand-ins applied), secret
/// files to mount, extra podman options, and its health command.
struct Example {
    env: BTreeMap<String, String>,
    mounts: Vec<(PathBuf, String)>,
    options: Vec<String>,
    health: Vec<String>,
    /// Kept alive while the container runs (secret files).
    _dir: tempfile::TempDir,
    port: u16,
    admin: u16,
    reader: Option<u16>,
}

impl Example {
    fn new(env: BTreeMap<String, String>, health: Vec<String>) -> Example {
        let mut env = env;
        let c = cluster();
        let (port, admin) = (free_port(), free_port());
        env.insert("PGMUX_SERVERS".into(), format!("{},{}", c.addr(0), c.addr(1)));
        env.insert("PGMUX_LISTEN".into(), format!("0.0.0.0:{port}"));
        env.insert("PGMUX_ADMIN_LISTEN".into(), format!("0.0.0.0:{admin}"));
        let reader = env.contains_key("PGMUX_READER_LISTEN").then(free_port);
        if let Some(reader) = reader {
            env.insert("PGMUX_READER_LISTEN".into(), format!("0.0.0.0:{reader}"));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Example { env, mounts: Vec::new(), options: Vec::new(), health, _dir: dir, port, admin, reader }
    }

    /// A secret file holding `value`, mounted read-only at `target`.
    fn secret(&mut self, target: &str, value: &str) {
        let host = self._dir.path().join(format!("secret{}", self.mounts.len()));
        std::fs::write(&host, format!("{value}\n")).expect("write secret");
        // pgmux runs as a non-root uid: the file must be readable to it, as orchestrators make it.
        run(Command::new("chmod").arg("644").arg(&host));
        self.mounts.push((host, target.to_owned()));
    }

    fn podman_args(&self) -> Vec<String> {
        let mut args: Vec<String> = LIMITS.iter().map(|s| s.to_string()).collect();
        for (k, v) in &self.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for (host, target) in &self.mounts {
            args.extend(["-v".into(), format!("{}:{target}:ro", host.display())]);
        }
        args.extend(self.options.iter().cloned());
        args
    }

    /// `pgmux check` in the image with this environment: the configuration it would run.
    fn check(&self, image: &Image) -> String {
        let out = run(podman().args(["run", "--rm"]).args(self.podman_args()).arg(&image.tag).arg("check"));
        stdout(&out)
    }

    fn start(&self, image: &Image, name: &str) -> Container {
        let name = format!("pgmux-test-{name}-{}", std::process::id());
        let _ = podman().args(["rm", "-f", &name]).output();
        run(podman().args(["run", "-d", "--name", &name]).args(self.podman_args()).arg(&image.tag));
        Container { name }
    }
}

/// A running container, removed when dropped.
struct Container {
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

impl Container {
    async fn exec(&self, args: &[String]) -> Output {
        let mut command = tokio::process::Command::new("podman");
        command.args(PODMAN_GLOBAL).args(["exec", &self.name]).args(args);
        command.output().await.expect("podman exec")
    }

    fn inspect(&self, format: &str) -> String {
        stdout(&run(podman().args(["inspect", "--format", format, &self.name])))
    }

    fn logs(&self) -> String {
        let out = podman().args(["logs", &self.name]).output().expect("podman logs");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Polls the example's health command until it exits 0.
    async fn wait_healthy(&self, health: &[String]) {
        let healthy = eventually(Duration::from_secs(30), || async { self.exec(health).await.status.success() }).await;
        assert!(healthy, "{health:?} never succeeded; logs:\n{}", self.logs());
    }

    fn signal(&self, signal: &str) {
        run(podman().args(["kill", "--signal", signal, &self.name]));
    }

    /// Waits for the container to exit; returns its exit code.
    async fn exited(&self, within: Duration) -> i64 {
        let done = eventually(within, || async { self.inspect("{{.State.Status}}") == "exited" }).await;
        assert!(done, "still running after {within:?}; logs:\n{}", self.logs());
        self.inspect("{{.State.ExitCode}}").parse().expect("exit code")
    }

    /// The uid pgmux runs as, from the host's /proc.
    fn uid(&self) -> String {
        let pid = self.inspect("{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line").to_owned();
        line.split_whitespace().nth(1).expect("real uid").to_owned()
    }
}

/// psql through pgmux; Err with psql's message on failure.
async fn psql(port: u16, user: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-tA", "-c", sql])
        .arg(format!("host=127.0.0.1 port={port} user={user} dbname={db} connect_timeout=5"))
        .env("PGPASSWORD", user)
        .output()
        .await
        .expect("run psql");
    if out.status.success() { Ok(stdout(&out)) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().expect("a list").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}

/// The health command of a `["CMD", …]` health check.
fn cmd(value: &Value) -> Vec<String> {
    let mut command = strings(value);
    assert_eq!(command.first().map(String::as_str), Some("CMD"), "{command:?}");
    command.remove(0);
    command
}

fn seconds(text: &str) -> Duration {
    let n = text.trim_end_matches('s');
    Duration::from_secs(n.parse().unwrap_or_else(|_| panic!("not seconds: {text}")))
}

macro_rules! image_or_skip {
    () => {
        match tokio::task::spawn_blocking(image).await.expect("join") {
            Some(image) => image,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_identifies_itself_and_runs_as_non_root() {
    let image = image_or_skip!();
    let version = stdout(&run(podman().args(["run", "--rm"]).args(LIMITS).args([&image.tag, "--version"])));
    let commit = if image.commit.is_empty() { "unknown" } else { &image.commit };
    assert_eq!(version, format!("pgmux {} (commit {commit})", env!("CARGO_PKG_VERSION")));
    let labels = stdout(&run(podman().args(["image", "inspect", "--format", "{{json .Labels}}", &image.tag])));
    let labels: Value = serde_json::from_str(&labels).expect("labels");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"), "Dockerfile PGMUX_VERSION");
    assert_eq!(labels["org.opencontainers.image.revision"], image.commit.as_str());
    let user = stdout(&run(podman().args(["image", "inspect", "--format", "{{.Config.User}}", &image.tag])));
    assert_eq!(user, format!("{NONROOT}:{NONROOT}"));
    // The built-in configuration alone lacks exactly the servers and the users, and says so.
    let out = podman().args(["run", "--rm"]).args(LIMITS).args([&image.tag, "check"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("servers: is required (in the file, or set PGMUX_SERVERS)"), "{err}");
    assert!(err.contains("users: is required (in the file, or set PGMUX_USERS)"), "{err}");
}

/// deploy/compose: environment, secret file, health check; queries, /readyz, the image's own
/// HEALTHCHECK, uid; SIGTERM drains a running transaction and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_example_serves_and_drains_on_sigterm() {
    let image = image_or_skip!();
    let compose = yaml("deploy/compose/docker-compose.yml");
    let service = &compose["services"]["pgmux"];
    let env: BTreeMap<String, String> = service["environment"]
        .as_object()
        .expect("environment map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
        .collect();
    assert!(seconds(service["stop_grace_period"].as_str().expect("stop_grace_period")) > IMAGE_SHUTDOWN_TIMEOUT);
    let mut example = Example::new(env, cmd(&service["healthcheck"]["test"]));
    for secret in strings(&service["secrets"]) {
        example.secret(&format!("/run/secrets/{secret}"), "app");
    }
    assert!(example.check(image).contains("ok"));
    let c = example.start(image, "compose");
    c.wait_healthy(&example.health).await;

    assert_eq!(c.uid(), NONROOT, "pgmux runs as the image's non-root user");
    assert_eq!(psql(example.port, "app", "app", "select 40 + 2").await, Ok("42".into()));
    let reader = example.reader.expect("the compose example has a reader endpoint");
    assert_eq!(psql(reader, "app", "app", "select pg_is_in_recovery()").await, Ok("t".into()));
    let admin = format!("127.0.0.1:{}", example.admin).parse().expect("addr");
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let hc = podman().args(["healthcheck", "run", &c.name]).output().expect("podman healthcheck");
    assert!(hc.status.success(), "the image's HEALTHCHECK: {}", String::from_utf8_lossy(&hc.stderr));

    // A transaction is running when SIGTERM comes.
    let dsn = format!("host=127.0.0.1 port={} user=app password=app dbname=app", example.port);
    let client = connect(&dsn).await.expect("connect through the container");
    let table = format!("drained_{}", std::process::id());
    client.batch_execute(&format!("create table {table} (n int)")).await.expect("create");
    client.batch_execute(&format!("begin; insert into {table} values (1)")).await.expect("begin");
    let signalled = Instant::now();
    c.signal("TERM");
    let unready = eventually(Duration::from_secs(5), || async {
        let (code, body) = http_get(admin, "/readyz").await;
        code == 503 && body.contains("shutting down")
    })
    .await;
    assert!(unready, "/readyz did not turn 503 while draining");
    assert!(psql(example.port, "app", "app", "select 1").await.is_err(), "new clients refused while draining");
    client.batch_execute(&format!("insert into {table} values (2); commit")).await.expect("finish during drain");
    let code = c.exited(IMAGE_SHUTDOWN_TIMEOUT).await;
    let drained = signalled.elapsed();
    assert_eq!(code, 0, "exit code after the drain; logs:\n{}", c.logs());
    assert!(drained < IMAGE_SHUTDOWN_TIMEOUT, "drain took {drained:?}");
    eprintln!("container: SIGTERM to exit, with a transaction finishing meanwhile: {drained:?}");
    let rows = cluster().psql(0, "app", &format!("select count(*) from {table}")).expect("count");
    assert_eq!(rows.trim(), "2", "the transaction running at SIGTERM committed");
}

/// deploy/ecs: environment and secrets, its healthCheck command, stopTimeout above the drain, the
/// app waiting for HEALTHY; a second signal during a drain exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_example_is_healthy_and_a_second_signal_exits_at_once() {
    let image = image_or_skip!();
    let task: Value = serde_json::from_str(&read("deploy/ecs/task-definition.json")).expect("task definition");
    let containers = task["containerDefinitions"].as_array().expect("containers");
    let pgmux = containers.iter().find(|c| c["name"] == "pgmux").expect("pgmux container");
    let app = containers.iter().find(|c| c["name"] != "pgmux").expect("app container");
    assert_eq!(app["dependsOn"][0], serde_json::json!({"containerName": "pgmux", "condition": "HEALTHY"}));
    let mut env: BTreeMap<String, String> = pgmux["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_owned(), e["value"].as_str().expect("value").to_owned()))
        .collect();
    let shutdown = seconds(env.get("PGMUX_SHUTDOWN_TIMEOUT").map_or("20s", String::as_str));
    let stop = Duration::from_secs(pgmux["stopTimeout"].as_u64().expect("stopTimeout"));
    assert!(stop > shutdown, "stopTimeout {stop:?} must exceed shutdown_timeout {shutdown:?}");
    // Secrets arrive as environment variables: the test's password in place of Secrets Manager's.
    for secret in pgmux["secrets"].as_array().expect("secrets") {
        env.insert(secret["name"].as_str().expect("name").to_owned(), "orders".into());
    }
    let mut example = Example::new(env, cmd(&pgmux["healthCheck"]["command"]));
    if pgmux["readonlyRootFilesystem"] == true {
        example.options.push("--read-only".into());
    }
    assert!(example.check(image).contains("ok"));
    let c = example.start(image, "ecs");
    c.wait_healthy(&example.health).await;
    assert_eq!(psql(example.port, "orders", "orders", "select current_user").await, Ok("orders".into()));

    let dsn = format!("host=127.0.0.1 port={} user=orders password=orders dbname=orders", example.port);
    let client = connect(&dsn).await.expect("connect through the container");
    client.batch_execute("begin; select 1").await.expect("begin");
    c.signal("TERM");
    let admin = format!("127.0.0.1:{}", example.admin).parse().expect("addr");
    assert!(eventually(Duration::from_secs(5), || async { http_get(admin, "/readyz").await.0 == 503 }).await);
    let second = Instant::now();
    c.signal("INT");
    c.exited(Duration::from_secs(5)).await;
    let took = second.elapsed();
    assert!(took < Duration::from_secs(5), "second signal to exit: {took:?}");
    eprintln!("container: second signal during a drain to exit: {took:?} (shutdown_timeout {shutdown:?})");
    assert!(eventually(Duration::from_secs(5), || async { client.is_closed() }).await);
}

/// deploy/kubernetes: native sidecar with readiness on /readyz, liveness on /healthz, preStop,
/// the secret as a mounted file, read-only root and no capabilities; SIGTERM with no client exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_example_is_ready_on_readyz() {
    let image = image_or_skip!();
    let pod = yaml("deploy/kubernetes/pod.yaml");
    let spec = &pod["spec"];
    let sidecar = spec["initContainers"].as_array().expect("initContainers").iter().find(|c| c["name"] == "pgmux");
    let sidecar = sidecar.expect("pgmux init container");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let mut env = BTreeMap::new();
    for var in sidecar["env"].as_array().expect("env") {
        let value = var["value"].as_str().expect("literal values only in the sidecar").to_owned();
        env.insert(var["name"].as_str().expect("name").to_owned(), value);
    }
    let shutdown = seconds(env.get("PGMUX_SHUTDOWN_TIMEOUT").map_or("20s", String::as_str));
    let pre_stop = Duration::from_secs(sidecar["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("preStop"));
    let grace = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().expect("grace period"));
    assert!(grace > pre_stop + shutdown, "terminationGracePeriodSeconds {grace:?} <= preStop + shutdown_timeout");
    let readiness = &sidecar["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/readyz");
    assert_eq!(readiness["port"], 9930, "the image's admin port");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");

    let mut example = Example::new(env, vec!["/usr/local/bin/pgmux".into(), "health".into(), "--ready".into()]);
    let mount = sidecar["volumeMounts"][0]["mountPath"].as_str().expect("secret mount");
    for item in spec["volumes"][0]["secret"]["items"].as_array().expect("secret items") {
        example.secret(&format!("{mount}/{}", item["path"].as_str().expect("path")), "orders");
    }
    let security = &sidecar["securityContext"];
    if security["readOnlyRootFilesystem"] == true {
        example.options.push("--read-only".into());
    }
    for cap in strings(&security["capabilities"]["drop"]) {
        example.options.extend(["--cap-drop".into(), cap]);
    }
    assert!(example.check(image).contains("ok"));
    let c = example.start(image, "kubernetes");
    let admin = format!("127.0.0.1:{}", example.admin).parse().expect("addr");
    let listening =
        eventually(Duration::from_secs(30), || async { tokio::net::TcpStream::connect(admin).await.is_ok() }).await;
    assert!(listening, "admin endpoint never listened; logs:\n{}", c.logs());
    let ready = eventually(Duration::from_secs(30), || async { http_get(admin, "/readyz").await.0 == 200 }).await;
    assert!(ready, "/readyz never 200; logs:\n{}", c.logs());
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(psql(example.port, "orders", "orders", "select 1").await, Ok("1".into()));
    assert!(c.exec(&example.health).await.status.success());
    let signalled = Instant::now();
    c.signal("TERM");
    assert_eq!(c.exited(shutdown).await, 0, "logs:\n{}", c.logs());
    eprintln!("container: SIGTERM to exit with no client: {:?}", signalled.elapsed());
}
