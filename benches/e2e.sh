#!/usr/bin/env bash
# End-to-end benchmark of pgmux with pgbench, on throwaway PostgreSQL servers. Two scenarios:
#
#   pooling   direct PostgreSQL vs PgBouncer vs pgmux, side by side, on one primary
#   replicas  read-mostly: two streaming replicas of that primary are made (pg_basebackup), and
#             pgmux's main endpoint (everything on the primary) is set against its reader endpoint
#             (`reader_listen`: every transaction on a replica), reporting where the queries landed
#
# Prints a markdown report (paste it into BENCHMARKS.md).
#
#   bash benches/e2e.sh                              # both scenarios
#   BENCH_SCENARIOS=replicas bash benches/e2e.sh     # only the read-mostly one (no PgBouncer needed)
#
# Environment knobs (defaults in brackets):
#   BENCH_SCENARIOS [pooling replicas]  which scenarios to run, in this order
#   BENCH_SECONDS  [15]   duration of each measured pgbench run (-T)
#   BENCH_ROUNDS   [1]    how many times every (mode, target) pair is run; the report shows medians
#   BENCH_CLIENTS  [100]  pgbench -c
#   BENCH_JOBS     [2]    pgbench -j
#   BENCH_SCALE    [10]   pgbench -i -s
#   BENCH_WARMUP   [3]    seconds of unmeasured warm-up per target before the first round (0: none)
#   BENCH_MODES    ["simple extended prepared"]  pgbench -M modes of the pooling scenario
#   BENCH_REPLICA_MODES ["simple prepared"]      pgbench -M modes of the replicas scenario
#   BENCH_STATS_SETTLE [11] replicas scenario: seconds waited after each run before reading
#                         pg_stat_database (a busy backend publishes its counters at most once a
#                         second, an idle one within 10 s: without the wait the tail of one run
#                         would be counted in the next)
#   PG_BIN         [newest /usr/lib/postgresql/*/bin]
#   PGBOUNCER_BIN  [pgbouncer on PATH, else /usr/sbin/pgbouncer; apt-get installed if missing]
#   PGMUX_WORKERS  [0]    pgmux `workers:` (0 = one thread per CPU; PgBouncer is single-threaded)
#   PGMUX_BIN      [unset: `cargo build --release` then target/release/pgmux; set: use as is, no build]
#
# What is measured, per (mode, target): TPS without connection time, mean latency, failed
# transactions (all from pgbench), and CPU time per 1,000 transactions of: the proxy (utime+stime of
# its process from /proc/PID/stat, all threads included), PostgreSQL (postmaster + backends, of
# every server running), pgbench, and "other" (the rest of the machine's busy time from /proc/stat:
# kernel interrupt work, and any background load - a large figure there means the run was
# disturbed). Every target sees the same workload: pgbench -S, scram-sha-256 authentication
# everywhere, proxies in transaction mode with 20 server connections (per server, for pgmux). PgBouncer
# 1.18 cannot run -M prepared in transaction mode (it does not track prepared statements); it is
# run anyway and its outcome reported as measured. The replicas scenario adds, per run and server,
# the delta of sum(xact_commit) over pg_stat_database (read as superuser over the unix socket).
#
# Runs as root (then PostgreSQL and PgBouncer run as the `postgres` OS user: both refuse root) or as
# an ordinary user. Needs: PostgreSQL server + client binaries (pg_basebackup for replicas),
# python3 (free ports), cargo unless PGMUX_BIN is set. Uses only loopback and free ports; removes
# everything it started on exit.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
CMDLINE=""  # the command as typed, with the knobs that were set in the environment
for v in BENCH_SCENARIOS BENCH_SECONDS BENCH_ROUNDS BENCH_CLIENTS BENCH_JOBS BENCH_SCALE BENCH_WARMUP \
  BENCH_MODES BENCH_REPLICA_MODES BENCH_STATS_SETTLE PG_BIN PGBOUNCER_BIN PGMUX_WORKERS PGMUX_BIN; do
  if [ -n "${!v+x}" ]; then CMDLINE+="$v=$(printf '%q' "${!v}") "; fi
done
CMDLINE+="bash benches/e2e.sh${*:+ $*}"

BENCH_SCENARIOS=${BENCH_SCENARIOS:-pooling replicas}
BENCH_SECONDS=${BENCH_SECONDS:-15}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
BENCH_CLIENTS=${BENCH_CLIENTS:-100}
BENCH_JOBS=${BENCH_JOBS:-2}
BENCH_SCALE=${BENCH_SCALE:-10}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_MODES=${BENCH_MODES:-simple extended prepared}
BENCH_REPLICA_MODES=${BENCH_REPLICA_MODES:-simple prepared}
BENCH_STATS_SETTLE=${BENCH_STATS_SETTLE:-11}
POOL_SIZE=20                       # PgBouncer default_pool_size and pgmux pool.size
TARGETS=(direct pgbouncer pgmux)   # base order; rotated every round so drift hits all alike

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
T_START=$SECONDS

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in BENCH_SECONDS BENCH_ROUNDS BENCH_CLIENTS BENCH_JOBS BENCH_SCALE BENCH_WARMUP BENCH_STATS_SETTLE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[ "$BENCH_SECONDS" -gt 0 ] && [ "$BENCH_ROUNDS" -gt 0 ] || die "BENCH_SECONDS and BENCH_ROUNDS must be > 0"
for m in $BENCH_MODES $BENCH_REPLICA_MODES; do
  case $m in simple | extended | prepared) ;; *) die "unknown pgbench mode '$m' in BENCH_MODES/BENCH_REPLICA_MODES" ;; esac
done
WANT_POOLING=0 WANT_REPLICAS=0
for sc in $BENCH_SCENARIOS; do
  case $sc in
  pooling) WANT_POOLING=1 ;;
  replicas) WANT_REPLICAS=1 ;;
  *) die "unknown scenario '$sc' in BENCH_SCENARIOS (pooling, replicas)" ;;
  esac
done
[ $WANT_POOLING = 1 ] || [ $WANT_REPLICAS = 1 ] || die "BENCH_SCENARIOS names no scenario"

# PostgreSQL and PgBouncer refuse to run as root: run them as the postgres OS user then.
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
# Each client costs a proxy one file descriptor, and the soft limit is often 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
as_pg() { if [ $IS_ROOT = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A free TCP port on loopback: bind port 0 and let the kernel choose. (Tiny race until the server
# binds it; acceptable on a bench box, and far better than a fixed port.)
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# Cleanup: stop everything we started and remove the temp dir, on success, failure or Ctrl-C.
# ---------------------------------------------------------------------------------------------
WORK=""
PG_STARTED=0
declare -A PORT=() PID=()   # per target: listen port; proxy pid (the process whose CPU we read)
declare -A WRAPPER=()       # per proxy: pid of the runuser/background job that owns it, to reap
# A measured target is an endpoint of a proxy process: the replicas scenario measures two endpoints
# (main, reader) of one pgmux (process name pgmuxr). Targets not listed here are their own process.
declare -A PROC_OF=([main]=pgmuxr [reader]=pgmuxr)
REPLICAS=()                 # data dirs of the replicas started, to stop on exit

# stop_pid PID SIGNAL: signal one process we started, wait up to 5 s, then SIGKILL it.
stop_pid() {
  local pid=$1 sig=$2 i
  [ -n "$pid" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_proxy() { # target
  local t=$1
  # pgmux: SIGINT closes at once. PgBouncer: SIGTERM is its immediate shutdown (SIGINT waits).
  case $t in pgmux | pgmuxr) stop_pid "${PID[$t]:-}" INT ;; pgbouncer) stop_pid "${PID[$t]:-}" TERM ;; esac
  if [ -n "${WRAPPER[$t]:-}" ]; then
    stop_pid "${WRAPPER[$t]}" TERM
    wait "${WRAPPER[$t]}" 2>/dev/null || true
  fi
  PID[$t]=""; WRAPPER[$t]=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_proxy pgmuxr
  stop_proxy pgmux
  stop_proxy pgbouncer
  local d
  for d in "${REPLICAS[@]}"; do
    as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  if [ $PG_STARTED = 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -m immediate -w stop >/dev/null 2>&1
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ $rc != 0 ] && [ $rc != 130 ] && [ $rc != 143 ]; then # a hint before the logs vanish
      for f in "$WORK"/{postgres,pgbouncer,pgmux,replica1,replica2,pgmuxr}.log; do
        [ -s "$f" ] && { log "--- tail of $(basename "$f")"; tail -n 5 "$f" >&2; }
      done
    fi
    cd / && rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Preflight: find PostgreSQL, install PgBouncer if missing, build pgmux.
# ---------------------------------------------------------------------------------------------
PG_BIN=${PG_BIN:-$({ ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1)}
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pgbench" ] ||
  die "no PostgreSQL binaries (initdb, pgbench) in '$PG_BIN': apt-get install postgresql, or set PG_BIN"
command -v python3 >/dev/null || die "python3 is needed to pick free ports"
[ $IS_ROOT = 0 ] || id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"

PGBOUNCER_BIN=${PGBOUNCER_BIN:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
if [ $WANT_POOLING = 1 ] && [ ! -x "$PGBOUNCER_BIN" ]; then
  [ $IS_ROOT = 1 ] || die "PgBouncer not found: apt-get install pgbouncer (as root), or set PGBOUNCER_BIN"
  log "installing pgbouncer"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq pgbouncer >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }
  PGBOUNCER_BIN=/usr/sbin/pgbouncer
fi

if [ -z "${PGMUX_BIN:-}" ]; then
  # cargo itself decides whether target/release/pgmux is missing or stale: a no-op when fresh.
  command -v cargo >/dev/null || die "cargo not found: install Rust, or set PGMUX_BIN to a built pgmux"
  log "cargo build --release (may wait on the cargo lock)"
  cargo build --release --bin pgmux --manifest-path "$REPO/Cargo.toml" ||
    die "cargo build --release failed"
  PGMUX_BIN="$REPO/target/release/pgmux"
fi
[ -x "$PGMUX_BIN" ] || die "pgmux binary '$PGMUX_BIN' is not executable"

CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')
PGB_VERSION=""
[ $WANT_POOLING = 0 ] || PGB_VERSION=$("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $NF}')
if [ $WANT_REPLICAS = 1 ]; then
  [ -x "$PG_BIN/pg_basebackup" ] || die "no pg_basebackup in '$PG_BIN' (needed by the replicas scenario)"
fi
PGMUX_VERSION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  PGMUX_VERSION="$PGMUX_VERSION+uncommitted"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgmux-e2e.XXXXXX")
[ $IS_ROOT = 1 ] && chown postgres: "$WORK"
cd "$WORK" # the postgres user must be able to stat its working directory

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway primary tuned for benchmarking, not durability.
# ---------------------------------------------------------------------------------------------
PORT[direct]=$(free_port)
log "starting PostgreSQL $PG_VERSION on 127.0.0.1:${PORT[direct]} in $WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  >"$WORK/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
cat >>"$WORK/pgdata/postgresql.conf" <<EOF
port = ${PORT[direct]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
# First matching line wins: the superuser over the socket without a password (also for replication
# connections, pg_basebackup's and the replicas' WAL streams, which "all" does not cover), everyone
# over TCP (pgbench, the proxies) with SCRAM. Replicas copy this file.
printf '%s\n' "local all postgres trust" "local replication postgres trust" \
  "host all all 127.0.0.1/32 scram-sha-256" >"$WORK/pgdata/pg_hba.conf"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w -t 60 start >/dev/null ||
  die "PostgreSQL did not start"
PG_STARTED=1

psql_super() { as_pg "$PG_BIN/psql" -X -q -h "$WORK" -p "${PORT[direct]}" -U postgres "$@"; }
psql_super -v ON_ERROR_STOP=1 -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app" \
  >/dev/null
# PgBouncer gets the exact SCRAM verifier PostgreSQL stores: clients authenticate against it, and
# PgBouncer reuses the client's proof to log in to the server (its documented SCRAM pass-through).
# pgmux likewise derives its verifier once at start-up, so neither proxy pays PBKDF2 per client.
APP_VERIFIER=$(psql_super -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
[[ $APP_VERIFIER == SCRAM-SHA-256* ]] || die "role app has no SCRAM verifier ('$APP_VERIFIER')"

export PGPASSWORD=app PGSSLMODE=disable PGCONNECT_TIMEOUT=10 # same for every target
log "pgbench -i -s $BENCH_SCALE"
"$PG_BIN/pgbench" -i -s "$BENCH_SCALE" -q -h 127.0.0.1 -p "${PORT[direct]}" -U app app \
  >"$WORK/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -n 3 "$WORK/pgbench-init.log")"

# ---------------------------------------------------------------------------------------------
# The proxies of the pooling scenario (pgmuxr, the replicas scenario's pgmux, is configured there).
# Both: transaction pooling, $POOL_SIZE server connections, scram-sha-256 clients, quiet logging
# (PgBouncer without per-connection log lines, pgmux at warn).
# ---------------------------------------------------------------------------------------------
PORT[pgbouncer]=$(free_port)
PORT[pgmux]=$(free_port)

cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=${PORT[direct]} dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 2000
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
printf '"app" "%s"\n' "$APP_VERIFIER" >"$WORK/userlist.txt"

cat >"$WORK/pgmux.yaml" <<EOF
listen: 127.0.0.1:${PORT[pgmux]}
servers: [127.0.0.1:${PORT[direct]}]
pool:
  mode: transaction
  size: $POOL_SIZE
users:
  - name: app
    password: app
workers: ${PGMUX_WORKERS:-0}
EOF
[ $IS_ROOT = 1 ] && chown postgres: "$WORK"/pgbouncer.ini "$WORK"/userlist.txt

# wait_ready TARGET: until a real query through it succeeds (or 30 s pass).
wait_ready() {
  local t=$1 i
  for i in $(seq 150); do
    timeout 10 "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "${PORT[$t]}" -U app -d app -c 'SELECT 1' \
      >/dev/null 2>&1 && return 0
    if [ -n "${PID[$t]:-}" ] && ! kill -0 "${PID[$t]}" 2>/dev/null; then break; fi
    sleep 0.2
  done
  die "$t does not answer on 127.0.0.1:${PORT[$t]}: $(tail -n 3 "$WORK/$t.log" 2>/dev/null)"
}

# wait_reader: until reader-endpoint transactions have landed on both replicas (before pgmux's
# prober has seen a replica they fall back to the primary), or 30 s pass: each try is a new client
# asking `inet_server_port()` of a server in recovery; ties between idle replicas rotate.
wait_reader() {
  local i port seen=" "
  for i in $(seq 150); do
    port=$(timeout 10 "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "${PORT[reader]}" -U app -d app \
      -c 'SELECT CASE WHEN pg_is_in_recovery() THEN inet_server_port() END' 2>/dev/null) || port=""
    [ -n "$port" ] && [[ $seen != *" $port "* ]] && seen+="$port "
    if [[ $seen == *" ${NODE_PORT[1]} "* && $seen == *" ${NODE_PORT[2]} "* ]]; then
      log "reader endpoint reaches both replicas (after $((i / 5)).$((i % 5 * 2)) s)"
      return 0
    fi
    kill -0 "${PID[pgmuxr]}" 2>/dev/null || die "pgmux exited: $(tail -n 3 "$WORK/pgmuxr.log")"
    sleep 0.2
  done
  [ "$seen" != " " ] || die "pgmux's reader endpoint reached no replica in 30 s: $(tail -n 3 "$WORK/pgmuxr.log")"
  log "warning: in 30 s the reader endpoint reached only the replica on port(s)$seen"
}

start_proxy() { # process: pgbouncer, pgmux (pooling scenario) or pgmuxr (replicas scenario)
  local t=$1 i
  case $t in
  pgbouncer)
    rm -f "$WORK/pgbouncer.pid"
    # runuser stays as the parent, so the pid to measure comes from PgBouncer's pidfile.
    as_pg "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini" >>"$WORK/pgbouncer.log" 2>&1 &
    WRAPPER[$t]=$!
    for i in $(seq 100); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
    [ -s "$WORK/pgbouncer.pid" ] || die "PgBouncer did not start: $(tail -n 3 "$WORK/pgbouncer.log")"
    PID[$t]=$(cat "$WORK/pgbouncer.pid")
    ;;
  pgmux | pgmuxr)
    # bash execs a simple background command, so $! is pgmux itself.
    PGMUX_LOG=warn "$PGMUX_BIN" --config "$WORK/$t.yaml" >>"$WORK/$t.log" 2>&1 &
    PID[$t]=$!
    ;;
  esac
  wait_ready "$t"
  if [ "$t" = pgmuxr ]; then
    PID[main]=${PID[$t]} PID[reader]=${PID[$t]} # both endpoints are this one process
    wait_reader
  fi
}

# ---------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------
# CPU ticks of one process, all its threads included: "utime stime", or "" if it is gone. Fields
# counted after the ")" that closes the command name, which may itself contain spaces.
proc_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo ""; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'
}
# CPU ticks of PostgreSQL, every server running (the primary, and the replicas once made): each
# postmaster and its children (backends, background workers, WAL sender/receiver), each with the
# times of its own reaped children; backends that exited and were reaped are in the postmaster's
# cutime/cstime. Processes may vanish while /proc is read: cat's complaint is ignored.
PG_DATA_DIRS=("$WORK/pgdata")
pg_ticks() {
  local d pms=""
  for d in "${PG_DATA_DIRS[@]}"; do pms+=" $(head -n 1 "$d/postmaster.pid")"; done
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v pms="$pms" 'BEGIN { n = split(pms, a, " "); for (i = 1; i <= n; i++) pm[a[i]] = 1 }
                       { pid = $1; sub(/^.*\) /, ""); if ((pid in pm) || ($2 in pm)) t += $12 + $13 + $14 + $15 }
                       END { print t + 0 }'
}
# Committed transactions so far on each server of the replicas scenario (primary, replica1,
# replica2), space-separated: sum(xact_commit) over pg_stat_database, as the superuser over the
# server's unix socket; "-" for a server that does not answer.
NODE_NAME=() NODE_PORT=() NODE_SOCK=()
node_commits() {
  local i v out=""
  for i in "${!NODE_NAME[@]}"; do
    v=$(as_pg timeout 10 "$PG_BIN/psql" -X -At -h "${NODE_SOCK[$i]}" -p "${NODE_PORT[$i]}" -U postgres \
      -d postgres -c 'SELECT sum(xact_commit) FROM pg_stat_database' 2>/dev/null) || v=""
    [[ $v =~ ^[0-9]+$ ]] || v=-
    out+="${out:+ }$v"
  done
  echo "$out"
}
# CPU ticks of this script's reaped children: timeout and the pgbench it waits for.
client_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
# Busy CPU ticks of the whole machine (all cores): user nice system irq softirq steal.
box_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# pgbench_run TARGET MODE OUTFILE ARGS...: pgbench -S with the common options. The timeout guards
# against a proxy that stops answering (pgbench would wait forever on an unanswered query);
# --foreground keeps pgbench in our process group, so Ctrl-C reaches it at once; timeout then exits
# 130 rather than dying of the signal, which bash takes as "handled": stop here ourselves.
pgbench_run() {
  local t=$1 mode=$2 out=$3 rc=0; shift 3
  timeout --foreground -k 10 $((BENCH_SECONDS + BENCH_WARMUP + 120)) \
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "${PORT[$t]}" -U app -S -M "$mode" --no-vacuum \
    -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" "$@" app >"$out" 2>&1 || rc=$?
  case $rc in 130) log "interrupted"; exit 130 ;; 143) log "terminated"; exit 143 ;; esac
  return $rc
}

# One line per run: round mode target status tps lat failed tx proxy_ms box_ms wall_ms note pg_ms
# client_ms proxy_sys_ms (CPU times in ms over the whole pgbench run, connection set-up included),
# then, with NODE_STATS=1, one column per server: its committed transactions during the run.
RESULTS_POOLING="$WORK/results.tsv" RESULTS_REPLICAS="$WORK/results-replicas.tsv"
: >"$RESULTS_POOLING"; : >"$RESULTS_REPLICAS"
RESULTS=$RESULTS_POOLING NODE_STATS=0 TAB=$'\t'

# measure ROUND MODE TARGET: one measured pgbench run, one line appended to $RESULTS.
measure() {
  local round=$1 mode=$2 t=$3 rc=0
  local out="$WORK/run-$round-$mode-$t.txt" pid=${PID[$t]:-}
  local p0 p1 b0 b1 w0 w1 g0 g1 c0 c1 pu0 ps0 pu1 ps1 n0="" n1="" landed=""
  [ "$NODE_STATS" = 0 ] || n0=$(node_commits) # first: its psql processes are not pgbench's CPU
  g0=$(pg_ticks); c0=$(client_ticks); p0=$(proc_ticks "$pid"); b0=$(box_ticks); w0=$(now_ms)
  pgbench_run "$t" "$mode" "$out" -T "$BENCH_SECONDS" || rc=$?
  p1=$(proc_ticks "$pid"); b1=$(box_ticks); w1=$(now_ms)
  sleep 0.3 # let the postmaster reap backends of a direct run, so their CPU lands in its cutime
  c1=$(client_ticks); g1=$(pg_ticks)
  if [ "$NODE_STATS" = 1 ]; then
    # Backends publish their counters at most once a second while busy, and within 10 s of going
    # idle: wait for the run's tail to land before counting (and before the next run's start).
    sleep "$BENCH_STATS_SETTLE"
    n1=$(node_commits)
    landed=$(awk -v a="$n0" -v b="$n1" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
      for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? "\t" : ""), \
        ((x[i] ~ /^[0-9]+$/ && y[i] ~ /^[0-9]+$/) ? y[i] - x[i] : "") }')
  fi

  local tps lat failed tx aborted proxy_ms="" proxy_sys_ms="" status=ok note=""
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  aborted=$(grep -c 'aborted in command' "$out" || true)
  if [ -n "$p0" ] && [ -n "$p1" ]; then
    read -r pu0 ps0 <<<"$p0"; read -r pu1 ps1 <<<"$p1"
    proxy_ms=$(((pu1 + ps1 - pu0 - ps0) * 1000 / CLK_TCK)) proxy_sys_ms=$(((ps1 - ps0) * 1000 / CLK_TCK))
  fi

  if [ $rc = 124 ] || [ $rc = 137 ]; then
    status=failed note="pgbench timed out (target stopped answering)"
  elif [ $rc != 0 ] || [ -z "$tps" ]; then
    status=failed
    note="pgbench exit $rc"
    [ "$aborted" -gt 0 ] && note="$note, $aborted of $BENCH_CLIENTS clients aborted, ${tx:-0} tx done"
    note="$note: $(grep -m 1 -E 'ERROR|FATAL|error:' "$out" | sed 's/^pgbench: error: //' | cut -c 1-200)"
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    status=failed note="$t exited during the run. $note"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\n' "$round" "$mode" "$t" \
    "$status" "${tps:-}" "${lat:-}" "${failed:-}" "${tx:-0}" "$proxy_ms" \
    $(((b1 - b0) * 1000 / CLK_TCK)) $((w1 - w0)) "$note" $(((g1 - g0) * 1000 / CLK_TCK)) \
    $(((c1 - c0) * 1000 / CLK_TCK)) "$proxy_sys_ms" "${n1:+$TAB$landed}" >>"$RESULTS"
  log "round $round  $(printf '%-8s %-9s' "$mode" "$t")  $status  tps=${tps:--} lat=${lat:--}ms" \
    "failed=${failed:--} tx=${tx:-0}${proxy_ms:+ proxy_cpu=${proxy_ms}ms}${landed:+ xacts per server: ${landed//$TAB/ }}${note:+  ($note)}"

  # A failed run may leave a proxy with stray state (e.g. prepared statements on its server
  # connections): restart it so the next scenario starts clean.
  if [ $status = failed ] && [ "$t" != direct ]; then
    local proc=${PROC_OF[$t]:-$t}
    log "restarting $proc after the failed run"
    stop_proxy "$proc"
    start_proxy "$proc"
  fi
}

# ---------------------------------------------------------------------------------------------
# Scenario "pooling": warm-up, connection cost, then the measured rounds
# ---------------------------------------------------------------------------------------------
declare -A CONNECT_MS=()
scenario_pooling() {
  local round mode t i c0 c1 order
  log "scenario pooling: PgBouncer $PGB_VERSION on :${PORT[pgbouncer]}, pgmux $PGMUX_VERSION on :${PORT[pgmux]}"
  PID[direct]=""
  start_proxy pgbouncer
  start_proxy pgmux
  if [ "$BENCH_WARMUP" -gt 0 ]; then
    log "warm-up: ${BENCH_WARMUP}s per target (fills the pools and the buffer cache)"
    for t in "${TARGETS[@]}"; do
      pgbench_run "$t" simple "$WORK/warmup-$t.txt" -T "$BENCH_WARMUP" ||
        log "warning: warm-up against $t failed: $(grep -m 1 -E 'ERROR|FATAL|error:' "$WORK/warmup-$t.txt")"
    done
  fi

  # Connection cost: each client connects (SCRAM), runs one transaction and leaves. The proxy CPU
  # this takes is part of every measured run's figure too (each run opens $BENCH_CLIENTS clients).
  for t in pgbouncer pgmux; do
    c0=$(proc_ticks "${PID[$t]}")
    pgbench_run "$t" simple "$WORK/connect-$t.txt" -t 1 || true
    c1=$(proc_ticks "${PID[$t]}")
    CONNECT_MS[$t]=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" \
      'BEGIN { split(a, x, " "); split(b, y, " "); print (y[1] + y[2] - x[1] - x[2]) * 1000 / hz }')
  done

  RESULTS=$RESULTS_POOLING NODE_STATS=0
  for round in $(seq "$BENCH_ROUNDS"); do
    # Rotate the target order every round so neither position (first after a mode switch, last
    # before it) always falls on the same target.
    order=()
    for i in "${!TARGETS[@]}"; do order+=("${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}"); done
    for mode in $BENCH_MODES; do
      for t in "${order[@]}"; do
        # PgBouncer 1.18 keeps no track of prepared statements in transaction mode: run it anyway
        # and report the outcome as measured.
        measure "$round" "$mode" "$t"
      done
    done
  done
  # Idle from here on, but they hold 2 x $POOL_SIZE connections to the primary: stop them.
  stop_proxy pgmux
  stop_proxy pgbouncer
}

# ---------------------------------------------------------------------------------------------
# Scenario "replicas": two streaming replicas, pgmux's main endpoint vs its reader endpoint
# ---------------------------------------------------------------------------------------------
# make_replica N: replica N of the primary (pg_basebackup over the primary's unix socket, WAL
# streamed during the copy, fast checkpoint; -R writes primary_conninfo and standby.signal), on a
# port and unix socket directory of its own, started, answering and in recovery.
make_replica() {
  local name=replica$1 dir="$WORK/replica$1" sock="$WORK/replica$1.sock" port i v=""
  port=$(free_port)
  as_pg mkdir -p "$sock"
  as_pg timeout 300 "$PG_BIN/pg_basebackup" -h "$WORK" -p "${PORT[direct]}" -U postgres -D "$dir" \
    -R -X stream -c fast --no-sync >"$WORK/$name-basebackup.log" 2>&1 ||
    die "pg_basebackup for $name failed: $(tail -n 3 "$WORK/$name-basebackup.log")"
  # The primary's settings are copied with the data; the last occurrence of a setting wins.
  cat >>"$dir/postgresql.conf" <<EOF

# $name of the benchmark primary
port = $port
unix_socket_directories = '$sock'
hot_standby = on
EOF
  REPLICAS+=("$dir") # from here on, cleanup stops it
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$WORK/$name.log" -w -t 60 start >/dev/null ||
    die "$name did not start: $(tail -n 3 "$WORK/$name.log")"
  for i in $(seq 150); do
    v=$(as_pg timeout 10 "$PG_BIN/psql" -X -At -h "$sock" -p "$port" -U postgres -d app \
      -c 'SELECT pg_is_in_recovery()' 2>/dev/null) || v=""
    [ "$v" = t ] && break
    sleep 0.2
  done
  [ "$v" = t ] || die "$name on :$port does not answer as a standby (pg_is_in_recovery: '$v')"
  PG_DATA_DIRS+=("$dir")
  NODE_NAME+=("$name") NODE_PORT+=("$port") NODE_SOCK+=("$sock")
  log "$name streaming from the primary on 127.0.0.1:$port (socket in $sock)"
}

REPLICA_TARGETS=(main reader) # base order; rotated every round
scenario_replicas() {
  local round mode t i order
  NODE_NAME=(primary) NODE_PORT=("${PORT[direct]}") NODE_SOCK=("$WORK")
  log "scenario replicas: pg_basebackup -R -X stream -c fast, twice"
  make_replica 1
  make_replica 2

  PORT[main]=$(free_port)
  PORT[reader]=$(free_port)
  PORT[pgmuxr]=${PORT[main]}
  cat >"$WORK/pgmuxr.yaml" <<EOF
listen: 127.0.0.1:${PORT[main]}
reader_listen: 127.0.0.1:${PORT[reader]}
servers: [127.0.0.1:${NODE_PORT[0]}, 127.0.0.1:${NODE_PORT[1]}, 127.0.0.1:${NODE_PORT[2]}]
pool:
  mode: transaction
  size: $POOL_SIZE
users:
  - name: app
    password: app
health:
  interval: 1s
workers: ${PGMUX_WORKERS:-0}
EOF
  log "starting pgmux $PGMUX_VERSION: main endpoint :${PORT[main]}, reader endpoint :${PORT[reader]}"
  start_proxy pgmuxr

  if [ "$BENCH_WARMUP" -gt 0 ]; then
    log "warm-up: ${BENCH_WARMUP}s per endpoint (fills the pools and the replicas' buffer caches)"
    for t in "${REPLICA_TARGETS[@]}"; do
      pgbench_run "$t" simple "$WORK/warmup-$t.txt" -T "$BENCH_WARMUP" ||
        log "warning: warm-up against $t failed: $(grep -m 1 -E 'ERROR|FATAL|error:' "$WORK/warmup-$t.txt")"
    done
  fi
  log "waiting ${BENCH_STATS_SETTLE}s for the servers' statistics to settle"
  sleep "$BENCH_STATS_SETTLE"

  RESULTS=$RESULTS_REPLICAS NODE_STATS=1
  for round in $(seq "$BENCH_ROUNDS"); do
    order=()
    for i in "${!REPLICA_TARGETS[@]}"; do
      order+=("${REPLICA_TARGETS[$(((i + round - 1) % ${#REPLICA_TARGETS[@]}))]}")
    done
    for mode in $BENCH_REPLICA_MODES; do
      for t in "${order[@]}"; do measure "$round" "$mode" "$t"; done
    done
  done
  NODE_STATS=0
}

# ---------------------------------------------------------------------------------------------
# Run the scenarios
# ---------------------------------------------------------------------------------------------
# Anything else busy on the machine skews every figure: measure how busy it is while our own
# processes sit idle, and say so (each run's "other" CPU column shows it too).
b0=$(box_ticks); sleep 2; b1=$(box_ticks)
IDLE_BUSY=$(((b1 - b0) * 100 / (2 * CLK_TCK * NPROC)))
if [ "$IDLE_BUSY" -ge 10 ]; then
  log "warning: the machine is ${IDLE_BUSY}% busy before the runs: something else is running, results will be noisy"
fi
for sc in $BENCH_SCENARIOS; do "scenario_$sc"; done
ELAPSED=$((SECONDS - T_START))

# ---------------------------------------------------------------------------------------------
# Report (markdown on stdout; progress went to stderr)
# ---------------------------------------------------------------------------------------------
# Shared by both scenarios' tables: the median of A[k, 1..n], and a cell ("—" when empty).
AWK_LIB='
  function med(A, k, n,    v, i, j, x) {
    if (n == 0) return "";
    for (i = 1; i <= n; i++) v[i] = A[k, i] + 0;
    for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2;
  }
  function cell(x, fmt) { return x == "" ? "—" : sprintf(fmt, x) }'

report_pooling() {
  echo
  echo "### Pooling: direct PostgreSQL vs PgBouncer vs pgmux"
  echo
  echo "- Workload: \`pgbench -S --no-vacuum -c $BENCH_CLIENTS -j $BENCH_JOBS -T $BENCH_SECONDS\` on scale $BENCH_SCALE," \
    "$BENCH_ROUNDS round(s), medians shown; targets interleaved per mode, order rotated per round"
  echo "- Proxies: transaction mode, $POOL_SIZE server connections, clients authenticate with scram-sha-256" \
    "(direct: scram-sha-256 too); PgBouncer max_client_conn 2000"
  echo "- Connection cost ($BENCH_CLIENTS clients each connect, run 1 tx, leave): PgBouncer ${CONNECT_MS[pgbouncer]} ms CPU," \
    "pgmux ${CONNECT_MS[pgmux]} ms CPU (clock tick $((1000 / CLK_TCK)) ms)"
  echo "- CPU columns: ms of CPU time per 1,000 transactions over the whole run (connection set-up included);" \
    "proxy CPU in kernel = its system time share (syscalls); other = machine busy time - proxy - PostgreSQL -" \
    "pgbench (kernel interrupt work and background load: large means the run was disturbed)"
  echo
  awk -F'\t' -v MODES="$BENCH_MODES" -v ROUNDS="$BENCH_ROUNDS" "$AWK_LIB"'
    {
      k = $2 SUBSEP $3; runs[k]++
      if ($4 != "ok") { bad[k]++; note[k] = note[k] sprintf("\n- %s / %s, round %s: %s", $2, $3, $1, $12); next }
      i = ++ok[k]
      TPS[k, i] = $5; LAT[k, i] = $6; FAIL[k, i] = $7
      PG[k, i] = $13 * 1000 / $8; CLI[k, i] = $14 * 1000 / $8
      OTH[k, i] = ($10 - $9 - $13 - $14) * 1000 / $8 # machine busy time nobody above accounts for
      if ($9 != "") { hasCPU[k] = 1; CPU[k, i] = $9 * 1000 / $8; PCT[k, i] = 100 * $9 / $11; SYS[k, i] = 100 * $15 / ($9 > 0 ? $9 : 1) }
    }
    END {
      nm = split(MODES, modes, " "); split("direct pgbouncer pgmux", tg, " ")
      name["direct"] = "direct"; name["pgbouncer"] = "PgBouncer"; name["pgmux"] = "pgmux"
      print "| mode | target | TPS | mean latency (ms) | failed tx | proxy CPU ms / 1k tx | proxy CPU (% of a core) | proxy CPU in kernel | PostgreSQL CPU ms / 1k tx | pgbench CPU ms / 1k tx | other CPU ms / 1k tx |"
      print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
      for (m = 1; m <= nm; m++) for (j = 1; j <= 3; j++) {
        k = modes[m] SUBSEP tg[j]; n = ok[k] + 0
        if (!runs[k]) continue
        if (n == 0) { printf "| %s | %s | failed | — | — | — | — | — | — | — | — |\n", modes[m], name[tg[j]]; continue }
        tps[k] = med(TPS, k, n); cpu[k] = hasCPU[k] ? med(CPU, k, n) : ""
        flag = bad[k] ? sprintf(" (%d/%d runs failed)", bad[k], runs[k]) : ""
        printf "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s |\n", modes[m], name[tg[j]],
          cell(tps[k], "%.0f"), flag, cell(med(LAT, k, n), "%.3f"), cell(med(FAIL, k, n), "%d"),
          cell(cpu[k], "%.1f"), cell(hasCPU[k] ? med(PCT, k, n) : "", "%.0f%%"),
          cell(hasCPU[k] ? med(SYS, k, n) : "", "%.0f%%"),
          cell(med(PG, k, n), "%.1f"), cell(med(CLI, k, n), "%.1f"), cell(med(OTH, k, n), "%.1f")
      }
      print ""
      print "| mode | pgmux TPS / PgBouncer TPS | pgmux TPS / direct TPS | pgmux CPU per 1k tx / PgBouncer |"
      print "|---|--:|--:|--:|"
      for (m = 1; m <= nm; m++) {
        d = modes[m] SUBSEP "direct"; b = modes[m] SUBSEP "pgbouncer"; x = modes[m] SUBSEP "pgmux"
        r1 = (tps[x] != "" && tps[b] > 0) ? sprintf("%.2f×", tps[x] / tps[b]) : "—"
        r2 = (tps[x] != "" && tps[d] > 0) ? sprintf("%.2f×", tps[x] / tps[d]) : "—"
        r3 = (cpu[x] != "" && cpu[b] > 0) ? sprintf("%.2f×", cpu[x] / cpu[b]) : "—"
        printf "| %s | %s | %s | %s |\n", modes[m], r1, r2, r3
      }
      for (k in note) notes = notes note[k]
      if (notes != "") { print ""; printf "Failed runs:%s\n", notes }
    }' "$RESULTS_POOLING"

  if [ "$BENCH_ROUNDS" -gt 1 ]; then
    echo
    echo "<details><summary>Every run</summary>"
    echo
    echo "| round | mode | target | status | TPS | latency ms | failed tx | tx | proxy CPU ms (kernel) | PostgreSQL CPU ms | pgbench CPU ms | machine CPU ms | wall ms |"
    echo "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
      $1, $2, $3, $4, $5, $6, $7, $8, ($9 == "" ? "" : $9 " (" $15 ")"), $13, $14, $10, $11}' "$RESULTS_POOLING"
    echo
    echo "</details>"
  fi
}

report_replicas() {
  echo
  echo "### Read-mostly: reader endpoint vs primary"
  echo
  echo "- Servers: a primary (127.0.0.1:${NODE_PORT[0]}) and two streaming replicas of it, replica1" \
    "(:${NODE_PORT[1]}) and replica2 (:${NODE_PORT[2]}), made after \`pgbench -i\` with" \
    "\`pg_basebackup -R -X stream -c fast\`, hot_standby on; all three on this box, same settings"
  echo "- pgmux: \`servers: [primary, replica1, replica2]\`, transaction mode, \`pool.size: $POOL_SIZE\` per server," \
    "\`health.interval: 1s\`; measured once its reader endpoint had reached both replicas." \
    "main = its \`listen\` endpoint (every transaction on the primary), reader = its \`reader_listen\`" \
    "endpoint (every transaction on a replica: fewest borrowed connections, ties rotate)"
  echo "- Workload: \`pgbench -S --no-vacuum -c $BENCH_CLIENTS -j $BENCH_JOBS -T $BENCH_SECONDS\` on scale $BENCH_SCALE," \
    "$BENCH_ROUNDS round(s), medians shown; endpoints interleaved per mode, order rotated per round"
  echo "- Where it landed: per server, the change of \`SELECT sum(xact_commit) FROM pg_stat_database\`" \
    "(superuser, unix socket) from just before a run to ${BENCH_STATS_SETTLE} s after it (backends publish" \
    "their counters late), as a share of the three servers' total; the last column is that total over" \
    "pgbench's transaction count (the counting queries add 2 per server and run; pgmux's health probes" \
    "touch no table, so PostgreSQL publishes their commits only when the probe connection closes)"
  echo "- CPU columns: ms of CPU time per 1,000 transactions over the whole run; PostgreSQL = all three" \
    "servers; other = machine busy time - pgmux - PostgreSQL - pgbench"
  echo
  awk -F'\t' -v MODES="$BENCH_REPLICA_MODES" "$AWK_LIB"'
    {
      k = $2 SUBSEP $3; runs[k]++
      if ($4 != "ok") { bad[k]++; note[k] = note[k] sprintf("\n- %s / %s, round %s: %s", $2, $3, $1, $12); next }
      i = ++ok[k]
      TPS[k, i] = $5; LAT[k, i] = $6; FAIL[k, i] = $7
      PG[k, i] = $13 * 1000 / $8; CLI[k, i] = $14 * 1000 / $8
      OTH[k, i] = ($10 - $9 - $13 - $14) * 1000 / $8
      if ($9 != "") { hasCPU[k] = 1; CPU[k, i] = $9 * 1000 / $8 }
      tot = $16 + $17 + $18
      if ($16 != "" && $17 != "" && $18 != "" && tot > 0) {
        hasN[k] = 1; S0[k, i] = 100 * $16 / tot; S1[k, i] = 100 * $17 / tot; S2[k, i] = 100 * $18 / tot
        CNT[k, i] = tot / $8
      }
    }
    END {
      nm = split(MODES, modes, " "); split("main reader", tg, " ")
      name["main"] = "pgmux main endpoint (primary)"; name["reader"] = "pgmux reader endpoint (replicas)"
      print "| mode | endpoint | TPS | mean latency (ms) | failed tx | pgmux CPU ms / 1k tx | PostgreSQL CPU ms / 1k tx | pgbench CPU ms / 1k tx | other CPU ms / 1k tx | on primary | on replica1 | on replica2 | server xacts / pgbench tx |"
      print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
      for (m = 1; m <= nm; m++) for (j = 1; j <= 2; j++) {
        k = modes[m] SUBSEP tg[j]; n = ok[k] + 0
        if (!runs[k]) continue
        if (n == 0) { printf "| %s | %s | failed | — | — | — | — | — | — | — | — | — | — |\n", modes[m], name[tg[j]]; continue }
        tps[k] = med(TPS, k, n); cpu[k] = hasCPU[k] ? med(CPU, k, n) : ""
        flag = bad[k] ? sprintf(" (%d/%d runs failed)", bad[k], runs[k]) : ""
        printf "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", modes[m], name[tg[j]],
          cell(tps[k], "%.0f"), flag, cell(med(LAT, k, n), "%.3f"), cell(med(FAIL, k, n), "%d"),
          cell(cpu[k], "%.1f"), cell(med(PG, k, n), "%.1f"), cell(med(CLI, k, n), "%.1f"), cell(med(OTH, k, n), "%.1f"),
          cell(hasN[k] ? med(S0, k, n) : "", "%.1f%%"), cell(hasN[k] ? med(S1, k, n) : "", "%.1f%%"),
          cell(hasN[k] ? med(S2, k, n) : "", "%.1f%%"), cell(hasN[k] ? med(CNT, k, n) : "", "%.3f")
      }
      print ""
      print "| mode | reader TPS / main TPS | reader pgmux CPU per 1k tx / main |"
      print "|---|--:|--:|"
      for (m = 1; m <= nm; m++) {
        a = modes[m] SUBSEP "main"; b = modes[m] SUBSEP "reader"
        r1 = (tps[b] != "" && tps[a] > 0) ? sprintf("%.2f×", tps[b] / tps[a]) : "—"
        r2 = (cpu[b] != "" && cpu[a] > 0) ? sprintf("%.2f×", cpu[b] / cpu[a]) : "—"
        printf "| %s | %s | %s |\n", modes[m], r1, r2
      }
      for (k in note) notes = notes note[k]
      if (notes != "") { print ""; printf "Failed runs:%s\n", notes }
    }' "$RESULTS_REPLICAS"

  echo
  echo "<details><summary>Every run (transactions committed per server during the run)</summary>"
  echo
  echo "| round | mode | endpoint | status | TPS | latency ms | failed tx | tx | pgmux CPU ms (kernel) | PostgreSQL CPU ms | pgbench CPU ms | machine CPU ms | wall ms | primary xacts | replica1 xacts | replica2 xacts |"
  echo "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
    $1, $2, $3, $4, $5, $6, $7, $8, ($9 == "" ? "" : $9 " (" $15 ")"), $13, $14, $10, $11, $16, $17, $18}' "$RESULTS_REPLICAS"
  echo
  echo "</details>"
}

echo
echo "## pgbench -S end to end: pgmux"
echo
echo "- Date: $STARTED_AT; took ${ELAPSED}s; scenarios: $BENCH_SCENARIOS"
echo "- Command: \`$CMDLINE\`"
echo "- Machine: $NPROC CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), $(uname -sr);" \
  "${IDLE_BUSY}% busy with the benchmark idle, just before the runs"
echo "- Versions: PostgreSQL $PG_VERSION,${PGB_VERSION:+ PgBouncer $PGB_VERSION,} pgmux $PGMUX_VERSION ($PGMUX_BIN)"
for sc in $BENCH_SCENARIOS; do "report_$sc"; done
