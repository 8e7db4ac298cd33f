#!/usr/bin/env bash
# End-to-end benchmark of pgmux with pgbench, on throwaway PostgreSQL servers. Three scenarios:
#
#   pooling   direct PostgreSQL vs PgBouncer vs pgmux, side by side, on one primary
#   latency   one client's latency through PgBouncer and through pgmux, both measured at once
#   replicas  read-mostly: two streaming replicas of that primary are made (pg_basebackup), and
#             pgmux's main endpoint (everything on the primary) is set against its reader endpoint
#             (`reader_listen`: every transaction on a replica), reporting where the queries landed
#
# Prints a markdown report (paste it into BENCHMARKS.md).
#
#   bash benches/e2e.sh                              # both scenarios
#   BENCH_SCENARIOS=replicas bash benches/e2e.sh     # only the read-mostly one (no PgBouncer needed)
#   BENCH_SCENARIOS=pooling BENCH_CLIENTS="100 2000 10000" bash benches/e2e.sh   # cost as clients grow
#   BENCH_SCENARIOS=pooling BENCH_TLS=1 bash benches/e2e.sh                      # clients over TLS
#   BENCH_SCENARIOS=latency BENCH_ROUNDS=9 BENCH_SECONDS=5 bash benches/e2e.sh    # single client
#   PGMUX_BASELINE_BIN=/tmp/pgmux-main BENCH_CALLGRIND=1 BENCH_SCENARIOS=pooling bash benches/e2e.sh  # A/B
#
# Environment knobs (defaults in brackets):
#   BENCH_SCENARIOS [pooling replicas]  which scenarios to run, in this order (latency: on request)
#   BENCH_SECONDS  [15]   length of the transaction phase of each measured run: pgbench's -T counts
#                         from before its clients connect, so -T is this plus an allowance for the
#                         connection phase (1.5 x the slowest target's measured connect time + 2 s)
#   BENCH_ROUNDS   [3]    how many times every (clients, mode, target) is run; the report shows medians
#   BENCH_CLIENTS  [100]  pgbench -c; a list ("100 2000 10000") runs the pooling scenario at each
#                         count (every round: each count in turn, every mode x target); direct
#                         PostgreSQL is skipped for counts above what its max_connections leaves free;
#                         the replicas scenario uses the first count
#   BENCH_JOBS     [2]    pgbench -j
#   BENCH_SCALE    [10]   pgbench -i -s
#   BENCH_WARMUP   [3]    seconds of unmeasured warm-up per target before the first round (0: none)
#   BENCH_MODES    ["simple extended prepared"]  pgbench -M modes of the pooling scenario
#   BENCH_REPLICA_MODES ["simple prepared"]      pgbench -M modes of the replicas scenario
#   BENCH_STATS_SETTLE [11] replicas scenario: seconds waited after each run before reading
#                         pg_stat_database (a busy backend publishes its counters at most once a
#                         second, an idle one within 10 s: without the wait the tail of one run
#                         would be counted in the next)
#   BENCH_TLS      [0]    1: the pooling scenario's clients connect with sslmode=require to every
#                         target (a self-signed RSA-2048 certificate made with openssl: PgBouncer
#                         client_tls_sslmode=require, pgmux tls.mode: require, PostgreSQL ssl=on
#                         for direct); the proxies still talk plaintext to PostgreSQL
#   BENCH_CALLGRIND [0]   1: after the pooling scenario, benches/callgrind.sh measures pgmux's
#                         instructions per transaction (and pgmux-base's), added to the report
#   PG_BIN         [newest /usr/lib/postgresql/*/bin]
#   PGBOUNCER_BIN  [pgbouncer on PATH, else /usr/sbin/pgbouncer; apt-get installed if missing]
#                         Debian 12's is 1.18; `PGBOUNCER_BIN=$(bash benches/pgbouncer-build.sh)`
#                         measures Debian 13's 1.24, which runs -M prepared too
#   PGMUX_WORKERS  [0]    pgmux `workers:` (0 = one thread per CPU; PgBouncer is single-threaded)
#   PGMUX_BIN      [unset: `cargo build --release` then target/release/pgmux; set: use as is, no build]
#   PGMUX_BASELINE_BIN [unset] another pgmux binary: A/B in one run, as target `pgmux-base` (same
#                         config, own port and process) in the pooling scenario's rotation
#   PGMUX_BASELINE_WORKERS [PGMUX_WORKERS] pgmux-base's `workers:` (PGMUX_BASELINE_BIN may be the
#                         same binary: an A/B of the worker count)
#
# What is measured, per (clients, mode, target): TPS without connection time, mean latency, failed
# transactions (all from pgbench), and CPU time per 1,000 transactions of: the proxy (utime+stime of
# its process from /proc/PID/stat, all threads included), PostgreSQL (postmaster + backends, of
# every server running), pgbench, and "other" (the rest of the machine's busy time from /proc/stat:
# kernel interrupt work, and any background load - a large figure there means the run was
# disturbed). Pooling scenario: CPU is counted over the transaction phase only. pgbench runs with
# --progress 1; a helper reading its progress lines (benches' own python3, no forks) snapshots the
# CPU counters as each line arrives. pgbench's thread 0 prints its first line just after every
# client has connected (or at 1 s, if connecting took less), so the window runs from that first
# line to the last one, and its transaction count is the sum of the later lines' tps x interval.
# The connection phase (pgbench start -> first line) is reported separately as proxy CPU per login
# (minus the window's per-transaction cost times the transactions of the first line's interval).
# Every target sees the same workload: pgbench -S, scram-sha-256 authentication
# everywhere, proxies in transaction mode with 20 server connections (per server, for pgmux). PgBouncer
# 1.18 cannot run -M prepared in transaction mode (it does not track prepared statements); it is
# run anyway and its outcome reported as measured. PgBouncer 1.21 and later get
# max_prepared_statements = 200 and run it (PGBOUNCER_BIN: e.g. what benches/pgbouncer-build.sh
# builds). The replicas scenario adds, per run and server, the delta of sum(xact_commit) over
# pg_stat_database (read as superuser over the unix socket); its CPU figures stay over the whole
# pgbench run (connection set-up included).
#
# File descriptors: the script raises its soft limit to the hard one (pgbench and pgmux inherit it);
# PgBouncer, started through runuser (whose PAM session applies pam_limits, often 1024), raises its
# own soft limit the same way and the script checks /proc/PID/limits. pgmux needs one fd per
# client, TLS or not (before efa0f5a, three per TLS client: pgmux-base builds that old may not fit);
# the script warns when a count cannot fit.
#
# Runs as root (then PostgreSQL and PgBouncer run as the `postgres` OS user: both refuse root) or as
# an ordinary user. Needs: PostgreSQL server + client binaries (pg_basebackup for replicas),
# python3 (free ports, progress helper), openssl for BENCH_TLS, valgrind for BENCH_CALLGRIND, cargo
# unless PGMUX_BIN is set. Uses only loopback and free ports; removes everything it started on exit.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
CMDLINE=""  # the command as typed, with the knobs that were set in the environment
for v in BENCH_SCENARIOS BENCH_SECONDS BENCH_ROUNDS BENCH_CLIENTS BENCH_JOBS BENCH_SCALE BENCH_WARMUP \
  BENCH_MODES BENCH_REPLICA_MODES BENCH_STATS_SETTLE BENCH_TLS BENCH_CALLGRIND PG_BIN PGBOUNCER_BIN \
  PGMUX_WORKERS PGMUX_BIN PGMUX_BASELINE_BIN PGMUX_BASELINE_WORKERS; do
  if [ -n "${!v+x}" ]; then CMDLINE+="$v=$(printf '%q' "${!v}") "; fi
done
CMDLINE+="bash benches/e2e.sh${*:+ $*}"

BENCH_SCENARIOS=${BENCH_SCENARIOS:-pooling replicas}
BENCH_SECONDS=${BENCH_SECONDS:-15}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-100}
BENCH_JOBS=${BENCH_JOBS:-2}
BENCH_SCALE=${BENCH_SCALE:-10}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_MODES=${BENCH_MODES:-simple extended prepared}
BENCH_REPLICA_MODES=${BENCH_REPLICA_MODES:-simple prepared}
BENCH_STATS_SETTLE=${BENCH_STATS_SETTLE:-11}
BENCH_TLS=${BENCH_TLS:-0}
BENCH_CALLGRIND=${BENCH_CALLGRIND:-0}
PGMUX_BASELINE_BIN=${PGMUX_BASELINE_BIN:-}
# pgmux refuses PGMUX_* variables it does not know (src/config/env.rs NOT_SETTINGS lists the
# repository's own): keep these knobs out of the proxies' environment, for old baselines too.
# PGMUX_WORKERS is a pgmux setting (it would override the config file's `workers:`, which is
# how pgmux-base gets its own): the config files carry it instead.
export -n PGMUX_BASELINE_BIN PGMUX_BASELINE_WORKERS PGMUX_WORKERS
POOL_SIZE=20                       # PgBouncer default_pool_size and pgmux pool.size
PG_MAX_CONNECTIONS=300             # the primary's max_connections
TARGETS=(direct pgbouncer pgmux)   # base order; rotated every round so drift hits all alike
[ -z "$PGMUX_BASELINE_BIN" ] || TARGETS+=(pgmux-base)
PROXIES=("${TARGETS[@]:1}")        # the proxy targets: each its own process

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
T_START=$SECONDS

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in BENCH_SECONDS BENCH_ROUNDS BENCH_JOBS BENCH_SCALE BENCH_WARMUP BENCH_STATS_SETTLE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
read -r -a CLIENT_COUNTS <<<"$BENCH_CLIENTS"
[ ${#CLIENT_COUNTS[@]} -gt 0 ] || die "BENCH_CLIENTS names no client count"
MIN_CLIENTS=${CLIENT_COUNTS[0]} MAX_CLIENTS=${CLIENT_COUNTS[0]}
for n in "${CLIENT_COUNTS[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS must be whole numbers > 0, got '$n'"
  [ "$n" -ge "$MIN_CLIENTS" ] || MIN_CLIENTS=$n
  [ "$n" -le "$MAX_CLIENTS" ] || MAX_CLIENTS=$n
done
case $BENCH_TLS in 0 | 1) ;; *) die "BENCH_TLS must be 0 or 1, got '$BENCH_TLS'" ;; esac
case $BENCH_CALLGRIND in 0 | 1) ;; *) die "BENCH_CALLGRIND must be 0 or 1, got '$BENCH_CALLGRIND'" ;; esac
[ "$BENCH_SECONDS" -gt 0 ] && [ "$BENCH_ROUNDS" -gt 0 ] || die "BENCH_SECONDS and BENCH_ROUNDS must be > 0"
for m in $BENCH_MODES $BENCH_REPLICA_MODES; do
  case $m in simple | extended | prepared) ;; *) die "unknown pgbench mode '$m' in BENCH_MODES/BENCH_REPLICA_MODES" ;; esac
done
WANT_POOLING=0 WANT_REPLICAS=0 # WANT_POOLING: a scenario with PgBouncer (pooling, latency)
for sc in $BENCH_SCENARIOS; do
  case $sc in
  pooling | latency) WANT_POOLING=1 ;;
  replicas) WANT_REPLICAS=1 ;;
  *) die "unknown scenario '$sc' in BENCH_SCENARIOS (pooling, latency, replicas)" ;;
  esac
done
[ $WANT_POOLING = 1 ] || [ $WANT_REPLICAS = 1 ] || die "BENCH_SCENARIOS names no scenario"

# PostgreSQL and PgBouncer refuse to run as root: run them as the postgres OS user then.
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
# Each client costs a proxy one file descriptor (pgmux: three over TLS), pgbench one, and the soft
# limit is often 1024: take the hard limit (pgbench and pgmux inherit it; PgBouncer, started through
# runuser's PAM session, raises its own in start_proxy).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
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
  case $t in pgmux | pgmux-base | pgmuxr) stop_pid "${PID[$t]:-}" INT ;; pgbouncer) stop_pid "${PID[$t]:-}" TERM ;; esac
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
  stop_proxy pgmux-base
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
      for f in "$WORK"/{postgres,pgbouncer,pgmux,pgmux-base,replica1,replica2,pgmuxr}.log; do
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
[ -z "$PGMUX_BASELINE_BIN" ] || [ -x "$PGMUX_BASELINE_BIN" ] ||
  die "baseline pgmux binary '$PGMUX_BASELINE_BIN' (PGMUX_BASELINE_BIN) is not executable"
[ "$BENCH_TLS" = 0 ] || command -v openssl >/dev/null || die "BENCH_TLS=1 needs openssl (apt-get install openssl)"
if [ "$BENCH_CALLGRIND" = 1 ]; then
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    die "BENCH_CALLGRIND=1 needs valgrind (apt-get install valgrind)"
  command -v pgbench >/dev/null || die "BENCH_CALLGRIND=1 needs pgbench on PATH (benches/callgrind.sh calls it)"
fi
# File descriptors the largest client count needs: pgbench one per client, a proxy one per client
# plus its server connections.
FD_NEED_PGBENCH=$((MAX_CLIENTS + 50)) FD_NEED_PROXY=$((MAX_CLIENTS + 200))
if [ "$FD_NEED_PGBENCH" -gt "$NOFILE" ]; then
  die "pgbench needs ~$FD_NEED_PGBENCH file descriptors for $MAX_CLIENTS clients, the limit is $NOFILE (ulimit -Hn)"
fi
if [ $WANT_POOLING = 1 ] && [ "$FD_NEED_PROXY" -gt "$NOFILE" ]; then
  log "warning: pgmux needs ~$FD_NEED_PROXY file descriptors for $MAX_CLIENTS clients$([ "$BENCH_TLS" = 1 ] && echo ' over TLS')," \
    "the limit is $NOFILE (ulimit -Hn): expect failed runs at that count"
fi

CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')
PGB_VERSION=""
[ $WANT_POOLING = 0 ] || PGB_VERSION=$("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $NF}')
# pgb_at_least MAJOR MINOR: whether the PgBouncer measured is that version or newer.
pgb_at_least() {
  local major=${PGB_VERSION%%.*} rest=${PGB_VERSION#*.}
  local minor=${rest%%.*}
  [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 1
  ((major > $1 || (major == $1 && minor >= $2)))
}
if [ $WANT_REPLICAS = 1 ]; then
  [ -x "$PG_BIN/pg_basebackup" ] || die "no pg_basebackup in '$PG_BIN' (needed by the replicas scenario)"
fi
PGMUX_VERSION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  PGMUX_VERSION="$PGMUX_VERSION+uncommitted"
fi
# What the binaries say of themselves (the checkout's commit above need not be what PGMUX_BIN was
# built from).
PGMUX_VERSION_LINE=$("$PGMUX_BIN" --version 2>/dev/null | head -n 1) || PGMUX_VERSION_LINE="?"
PGMUX_BASE_VERSION_LINE=""
if [ -n "$PGMUX_BASELINE_BIN" ]; then
  PGMUX_BASE_VERSION_LINE=$("$PGMUX_BASELINE_BIN" --version 2>/dev/null | head -n 1) || PGMUX_BASE_VERSION_LINE="?"
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
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
# BENCH_TLS: one self-signed certificate for every target (PostgreSQL for direct, both proxies), its
# key readable by the postgres user only (PostgreSQL insists; pgmux as root reads it anyway).
if [ "$BENCH_TLS" = 1 ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >"$WORK/openssl.log" 2>&1 ||
    die "openssl could not make a certificate: $(tail -n 3 "$WORK/openssl.log")"
  chmod 600 "$WORK/tls.key"
  [ $IS_ROOT = 1 ] && chown postgres: "$WORK/tls.key" "$WORK/tls.crt"
  cat >>"$WORK/pgdata/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = '$WORK/tls.crt'
ssl_key_file = '$WORK/tls.key'
EOF
fi
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
[ -z "$PGMUX_BASELINE_BIN" ] || PORT[pgmux-base]=$(free_port)
# Client limits: room for the largest client count plus the script's own probes, never below the
# 2,000 (PgBouncer) this script always used; pgmux's default (10,000) likewise kept as a floor.
PGB_MAX_CLIENT_CONN=$((MAX_CLIENTS + 100 > 2000 ? MAX_CLIENTS + 100 : 2000))
PGMUX_MAX_CONNECTIONS=$((MAX_CLIENTS + 100 > 10000 ? MAX_CLIENTS + 100 : 10000))
# Direct PostgreSQL takes a client count only if max_connections (300) leaves room for it next to
# the proxies' idle pools, superuser_reserved_connections (3) and a margin (health probes, psql).
DIRECT_MAX_CLIENTS=$((PG_MAX_CONNECTIONS - 3 - 10 - POOL_SIZE * ${#PROXIES[@]}))

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
max_client_conn = $PGB_MAX_CLIENT_CONN
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
server_tls_sslmode = disable
EOF
# PgBouncer 1.21 and later track protocol-level prepared statements in transaction mode when
# max_prepared_statements > 0 (1.18, Debian 12's, cannot: its -M prepared runs fail); pgmux tracks
# them always. 200 is PgBouncer 1.22's default, set here for 1.21 too.
if pgb_at_least 1 21; then
  echo "max_prepared_statements = 200" >>"$WORK/pgbouncer.ini"
fi
if [ "$BENCH_TLS" = 1 ]; then
  cat >>"$WORK/pgbouncer.ini" <<EOF
client_tls_sslmode = require
client_tls_key_file = $WORK/tls.key
client_tls_cert_file = $WORK/tls.crt
EOF
fi
printf '"app" "%s"\n' "$APP_VERIFIER" >"$WORK/userlist.txt"

# pgmux and pgmux-base (PGMUX_BASELINE_BIN) get the same configuration, each its own port.
write_pgmux_config() { # file port workers
  cat >"$1" <<EOF
listen: 127.0.0.1:$2
servers: [127.0.0.1:${PORT[direct]}]
pool:
  mode: transaction
  size: $POOL_SIZE
clients:
  max_connections: $PGMUX_MAX_CONNECTIONS
users:
  - name: app
    password: app
workers: $3
EOF
  if [ "$BENCH_TLS" = 1 ]; then
    cat >>"$1" <<EOF
tls:
  mode: require
  cert_file: $WORK/tls.crt
  key_file: $WORK/tls.key
EOF
  fi
}
write_pgmux_config "$WORK/pgmux.yaml" "${PORT[pgmux]}" "${PGMUX_WORKERS:-0}"
[ -z "$PGMUX_BASELINE_BIN" ] ||
  write_pgmux_config "$WORK/pgmux-base.yaml" "${PORT[pgmux-base]}" "${PGMUX_BASELINE_WORKERS:-${PGMUX_WORKERS:-0}}"
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

# The soft limit on open files of a running process, from /proc/PID/limits.
proc_nofile() { awk '/^Max open files/ {print $4}' "/proc/$1/limits" 2>/dev/null; }

start_proxy() { # process: pgbouncer, pgmux, pgmux-base (pooling scenario) or pgmuxr (replicas scenario)
  local t=$1 i n
  case $t in
  pgbouncer)
    rm -f "$WORK/pgbouncer.pid"
    # runuser stays as the parent, so the pid to measure comes from PgBouncer's pidfile. runuser's
    # PAM session applies pam_limits (soft nofile often 1024): raise it again, then exec PgBouncer.
    as_pg sh -c 'ulimit -n "$0" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' "$NOFILE" \
      "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini" >>"$WORK/pgbouncer.log" 2>&1 &
    WRAPPER[$t]=$!
    for i in $(seq 100); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
    [ -s "$WORK/pgbouncer.pid" ] || die "PgBouncer did not start: $(tail -n 3 "$WORK/pgbouncer.log")"
    PID[$t]=$(cat "$WORK/pgbouncer.pid")
    ;;
  pgmux | pgmux-base | pgmuxr)
    # bash execs a simple background command, so $! is pgmux itself.
    local bin=$PGMUX_BIN
    [ "$t" = pgmux-base ] && bin=$PGMUX_BASELINE_BIN
    PGMUX_LOG=warn "$bin" --config "$WORK/$t.yaml" >>"$WORK/$t.log" 2>&1 &
    PID[$t]=$!
    ;;
  esac
  wait_ready "$t"
  n=$(proc_nofile "${PID[$t]}")
  if [ "$t" != pgmuxr ] && [ -n "$n" ] && [ "$n" != unlimited ] && [ "$n" -lt $((MAX_CLIENTS + 100)) ]; then
    log "warning: $t may open only $n files (/proc/${PID[$t]}/limits), fewer than $MAX_CLIENTS clients need"
  fi
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
postmaster_pids() {
  local d pms=""
  for d in "${PG_DATA_DIRS[@]}"; do pms+=" $(head -n 1 "$d/postmaster.pid")"; done
  echo "$pms"
}
pg_ticks() {
  local pms
  pms=$(postmaster_pids)
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

# The progress helper of measured runs: reads pgbench's stderr (from a FIFO), appends every line to
# the run's output file, and for each `progress:` line appends one tab-separated snapshot to the
# ticks file: wall ms, pgbench's seconds since its threads started, tps of the interval, proxy
# utime, proxy stime (empty without a proxy), PostgreSQL ticks (as pg_ticks), pgbench's own ticks
# (all threads; found as the pgbench process whose stderr is this FIFO), machine busy ticks (as
# box_ticks). Python reads /proc without forking, so snapshots cost next to nothing.
# pgbench 15 prints its first progress line right after all its clients have connected (thread 0
# reports on entering its transaction loop once a report is due: at 1 s, or at once if connecting
# took longer), then one per second.
cat >"$WORK/progress.py" <<'EOF'
import os, re, sys, time
proxy, pms, out_path, ticks_path, fifo = sys.argv[1], set(sys.argv[2].split()), sys.argv[3], sys.argv[4], sys.argv[5]
PROGRESS = re.compile(r'^progress: ([0-9.]+) s, ([0-9.]+) tps')
def stat(pid):
    with open('/proc/%s/stat' % pid) as f:
        s = f.read()
    return s[s.rindex(')') + 2:].split()   # [0] state, [1] ppid, [11] utime, [12] stime, [13] cutime, [14] cstime
def pg_ticks():
    t = 0
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            f = stat(pid)
        except (OSError, ValueError, IndexError):
            continue
        if pid in pms or f[1] in pms:
            t += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return t
def find_pgbench():
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            if os.readlink('/proc/%s/fd/2' % pid) == fifo and open('/proc/%s/comm' % pid).read().strip() == 'pgbench':
                return pid
        except OSError:
            pass
    return None
def box_ticks():
    with open('/proc/stat') as f:
        v = f.readline().split()
    return int(v[1]) + int(v[2]) + int(v[3]) + int(v[6]) + int(v[7]) + int(v[8])
pgbench = None
with open(out_path, 'a') as out, open(ticks_path, 'a') as ticks:
    for line in sys.stdin:
        m = PROGRESS.match(line)
        if m:
            now = time.time()
            pu = ps = ''
            if proxy:
                try:
                    f = stat(proxy); pu, ps = f[11], f[12]
                except (OSError, ValueError, IndexError):
                    pass
            pg = pg_ticks()
            pgbench = pgbench or find_pgbench()
            pb = ''
            if pgbench:
                try:
                    f = stat(pgbench); pb = int(f[11]) + int(f[12])
                except (OSError, ValueError, IndexError):
                    pass
            ticks.write('%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\n' % (now * 1000, m.group(1), m.group(2), pu, ps, pg, pb, box_ticks()))
            ticks.flush()
        out.write(line)
        out.flush()
EOF
PROGRESS_FIFO="$WORK/pgbench-stderr.fifo"
mkfifo "$PROGRESS_FIFO"

CLIENTS=${CLIENT_COUNTS[0]} # pgbench -c of the runs now (the pooling scenario steps through the list)
T_EXTRA=0                   # seconds added to -T for the connection phase (set per client count)
# pgbench_run TARGET MODE OUTFILE ARGS...: pgbench -S with the common options. The timeout guards
# against a proxy that stops answering (pgbench would wait forever on an unanswered query);
# --foreground keeps pgbench in our process group, so Ctrl-C reaches it at once; timeout then exits
# 130 rather than dying of the signal, which bash takes as "handled": stop here ourselves.
# With ERR_TO set, pgbench's stderr goes there (the progress FIFO) and its stdout is appended to
# OUTFILE; otherwise both replace OUTFILE.
pgbench_run() {
  local t=$1 mode=$2 out=$3 rc=0; shift 3
  local limit=$((BENCH_SECONDS + BENCH_WARMUP + T_EXTRA + 120 + CLIENTS / 50))
  local cmd=("$PG_BIN/pgbench" -h 127.0.0.1 -p "${PORT[$t]}" -U app -S -M "$mode" --no-vacuum
    -c "$CLIENTS" -j "$BENCH_JOBS" "$@" app)
  if [ -n "${ERR_TO:-}" ]; then
    timeout --foreground -k 10 "$limit" "${cmd[@]}" >>"$out" 2>"$ERR_TO" || rc=$?
  else
    timeout --foreground -k 10 "$limit" "${cmd[@]}" >"$out" 2>&1 || rc=$?
  fi
  case $rc in 130) log "interrupted"; exit 130 ;; 143) log "terminated"; exit 143 ;; esac
  return $rc
}

# One line per run, tab-separated:
#   1-15  round mode target status tps lat failed tx proxy_ms box_ms wall_ms note pg_ms client_ms
#         proxy_sys_ms (CPU times in ms over the whole pgbench run, connection set-up included);
#   16-18 with NODE_STATS=1, per server (primary, replica1, replica2): its committed transactions
#         during the run (empty otherwise);
#   19    clients (pgbench -c);
#   20    pgbench's "initial connection time" (ms);
#   21-27 the transaction phase (from pgbench's first progress line to its last, see progress.py):
#         wall ms, transactions, proxy ms, proxy system ms, PostgreSQL ms, machine busy ms, pgbench ms
#         (empty when pgbench printed fewer than two progress lines);
#   28-33 the connection phase (pgbench start to its first progress line): wall ms, proxy ms,
#         transactions in the first progress interval, PostgreSQL ms, pgbench ms, and the first
#         line's time (pgbench's seconds since its threads started: 1.0 if connecting took less).
RESULTS_POOLING="$WORK/results.tsv" RESULTS_REPLICAS="$WORK/results-replicas.tsv"
: >"$RESULTS_POOLING"; : >"$RESULTS_REPLICAS"
RESULTS=$RESULTS_POOLING NODE_STATS=0 TAB=$'\t'

# measure ROUND MODE TARGET: one measured pgbench run, one line appended to $RESULTS.
measure() {
  local round=$1 mode=$2 t=$3 rc=0
  local out="$WORK/run-$CLIENTS-$round-$mode-$t.txt" pid=${PID[$t]:-}
  local ticks="$WORK/run-$CLIENTS-$round-$mode-$t.ticks" helper
  local p0 p1 b0 b1 w0 w1 g0 g1 c0 c1 pu0 ps0 pu1 ps1 n0="" n1="" landed=$'\t\t' win conn_ms
  [ "$NODE_STATS" = 0 ] || n0=$(node_commits) # first: its psql processes are not pgbench's CPU
  : >"$out"; : >"$ticks"
  # shellcheck disable=SC2094 # the helper reads the FIFO and only compares the path to pgbench's fd 2
  python3 "$WORK/progress.py" "$pid" "$(postmaster_pids)" "$out" "$ticks" "$PROGRESS_FIFO" <"$PROGRESS_FIFO" &
  helper=$!
  g0=$(pg_ticks); c0=$(client_ticks); p0=$(proc_ticks "$pid"); b0=$(box_ticks); w0=$(now_ms)
  ERR_TO=$PROGRESS_FIFO pgbench_run "$t" "$mode" "$out" -T $((BENCH_SECONDS + T_EXTRA)) -P 1 || rc=$?
  p1=$(proc_ticks "$pid"); b1=$(box_ticks); w1=$(now_ms)
  wait "$helper" || log "warning: the progress helper failed (exit $?)"
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
    [ "$(awk -F'\t' '{print NF}' <<<"$landed")" = 3 ] || landed=$'\t\t' # three columns, always
  fi

  # The two phases, from the helper's snapshots (see the column list above).
  win=$(awk -F'\t' -v p0="$p0" -v g0="$g0" -v b0="$b0" -v w0="$w0" -v ms=$((1000 / CLK_TCK)) '
    { n++; W[n] = $1; R[n] = $2; T[n] = $3; P[n] = ($4 == "" ? "" : $4 + $5); S[n] = $5; G[n] = $6; X[n] = $7; B[n] = $8 }
    END {
      # pgbench may be gone (exited, reaped) by the time its last line is read: end the window at
      # the last snapshot that has its CPU too.
      if (X[1] != "") while (n > 1 && X[n] == "") n--
      if (n < 2) { printf "\t\t\t\t\t\t\t\t\t\t\t\t"; exit } # 13 empty columns
      tx = 0; for (i = 2; i <= n; i++) tx += T[i] * (R[i] - R[i - 1])
      split(p0, a, " "); pz = (p0 == "" ? "" : a[1] + a[2])
      pw = (P[1] == "" || P[n] == "") ? "" : (P[n] - P[1]) * ms
      sw = (P[1] == "" || P[n] == "") ? "" : (S[n] - S[1]) * ms
      lp = (pz == "" || P[1] == "") ? "" : (P[1] - pz) * ms
      printf "%d\t%.0f\t%s\t%s\t%d\t%d\t%s\t%d\t%s\t%.0f\t%d\t%s\t%s", W[n] - W[1], tx, pw, sw, (G[n] - G[1]) * ms,
        (B[n] - B[1]) * ms, (X[n] == "" || X[1] == "") ? "" : (X[n] - X[1]) * ms, W[1] - w0, lp, T[1] * R[1],
        (G[1] - g0) * ms, X[1] == "" ? "" : X[1] * ms, R[1]
    }' "$ticks")
  conn_ms=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$out")

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
    [ "$aborted" -gt 0 ] && note="$note, $aborted of $CLIENTS clients aborted, ${tx:-0} tx done"
    note="$note: $(grep -m 1 -E 'ERROR|FATAL|error:' "$out" | sed 's/^pgbench: error: //' | cut -c 1-200)"
  fi
  if [ $status = ok ] && [ -z "${win%%"$TAB"*}" ]; then
    status=failed note="fewer than two progress lines from pgbench: no transaction phase to measure (connecting took longer than -T $((BENCH_SECONDS + T_EXTRA))?)"
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    status=failed note="$t exited during the run. $note"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" "$t" \
    "$status" "${tps:-}" "${lat:-}" "${failed:-}" "${tx:-0}" "$proxy_ms" \
    $(((b1 - b0) * 1000 / CLK_TCK)) $((w1 - w0)) "$note" $(((g1 - g0) * 1000 / CLK_TCK)) \
    $(((c1 - c0) * 1000 / CLK_TCK)) "$proxy_sys_ms" "$landed" "$CLIENTS" "${conn_ms:-}" "$win" >>"$RESULTS"
  local wtx wproxy
  wtx=$(cut -f 2 <<<"$win") wproxy=$(cut -f 3 <<<"$win")
  log "c=$CLIENTS round $round  $(printf '%-8s %-10s' "$mode" "$t")  $status  tps=${tps:--} lat=${lat:--}ms" \
    "failed=${failed:--} tx=${tx:-0}${proxy_ms:+ proxy_cpu=${proxy_ms}ms}" \
    "${wtx:+window: tx=$wtx${wproxy:+ proxy_cpu=${wproxy}ms}}${conn_ms:+ connect=${conn_ms}ms}" \
    "${n1:+ xacts per server: ${landed//$TAB/ }}${note:+  ($note)}"

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
declare -A CONNECT_MS=() CONNECT_TIME=() T_EXTRA_OF=() CALLGRIND_IR=()
DIRECT_SKIPPED=()  # client counts direct PostgreSQL was left out of
# targets_for N: the targets run at N clients (direct only if PostgreSQL has room for N).
targets_for() {
  local t
  for t in "${TARGETS[@]}"; do
    [ "$t" = direct ] && [ "$1" -gt "$DIRECT_MAX_CLIENTS" ] && continue
    echo "$t"
  done
}
# run_callgrind NAME BIN: benches/callgrind.sh (pgmux demo under valgrind, 3,000 SELECT 1), sets
# CALLGRIND_IR[NAME] to its Ir per transaction (empty if it failed).
run_callgrind() {
  local name=$1 bin=$2 port line
  port=$(free_port)
  log "callgrind: $name ($bin) on :$port, 3000 transactions (a minute or more)"
  line=$(cd "$WORK" && PGSSLMODE=disable timeout 1200 bash "$REPO/benches/callgrind.sh" "$bin" "$port" 3000 2>&1 |
    tee "$WORK/callgrind-$name.log" | tail -n 1) || true
  # callgrind.sh leaves its files in /tmp, named by port: keep its pgbench log, drop the rest.
  cp /tmp/cg-pgbench."$port".log "$WORK/callgrind-$name-pgbench.log" 2>/dev/null || true
  rm -f /tmp/cg."$port".* /tmp/cg-demo."$port".log /tmp/cg-pgbench."$port".log
  if [[ $line =~ =\ ([0-9]+)\ Ir/tx$ ]]; then
    CALLGRIND_IR[$name]=${BASH_REMATCH[1]}
    log "callgrind: $name ${CALLGRIND_IR[$name]} Ir per transaction"
  else
    CALLGRIND_IR[$name]=""
    log "warning: callgrind for $name failed: $line"
  fi
}

scenario_pooling() {
  local round mode t i c0 c1 order n ms max targets
  log "scenario pooling: PgBouncer $PGB_VERSION on :${PORT[pgbouncer]}, pgmux $PGMUX_VERSION on :${PORT[pgmux]}$(
    [ -z "$PGMUX_BASELINE_BIN" ] || echo ", pgmux-base on :${PORT[pgmux-base]}"); clients: ${CLIENT_COUNTS[*]}$([ "$BENCH_TLS" = 1 ] && echo '; TLS')"
  [ "$BENCH_TLS" = 0 ] || export PGSSLMODE=require # every client of this scenario, psql probes included
  PID[direct]=""
  for t in "${PROXIES[@]}"; do start_proxy "$t"; done
  if [ "$BENCH_WARMUP" -gt 0 ]; then
    CLIENTS=$MIN_CLIENTS T_EXTRA=0
    log "warm-up: ${BENCH_WARMUP}s per target at $CLIENTS clients (fills the pools and the buffer cache)"
    for t in $(targets_for "$CLIENTS"); do
      pgbench_run "$t" simple "$WORK/warmup-$t.txt" -T "$BENCH_WARMUP" ||
        log "warning: warm-up against $t failed: $(grep -m 1 -E 'ERROR|FATAL|error:' "$WORK/warmup-$t.txt")"
    done
  fi

  RESULTS=$RESULTS_POOLING NODE_STATS=0
  for n in "${CLIENT_COUNTS[@]}"; do
    CLIENTS=$n T_EXTRA=0
    mapfile -t targets < <(targets_for "$n")
    if [ "$n" -gt "$DIRECT_MAX_CLIENTS" ]; then
      DIRECT_SKIPPED+=("$n")
      log "$n clients: direct PostgreSQL skipped (max_connections $PG_MAX_CONNECTIONS leaves room for $DIRECT_MAX_CLIENTS)"
    fi
    # Connection cost: each client connects (SCRAM), runs one transaction and leaves; the proxy CPU
    # this takes is reported per login. pgbench's "initial connection time" of these runs sizes the
    # connection-phase allowance added to -T (pgbench's -T clock starts before its clients connect).
    max=0
    for t in "${targets[@]}"; do
      c0=$(proc_ticks "${PID[$t]:-}")
      pgbench_run "$t" simple "$WORK/connect-$n-$t.txt" -t 1 ||
        log "warning: connection run against $t at $n clients failed: $(grep -m 1 -E 'ERROR|FATAL|error:' "$WORK/connect-$n-$t.txt")"
      c1=$(proc_ticks "${PID[$t]:-}")
      if [ "$t" != direct ]; then
        CONNECT_MS[$n,$t]=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" \
          'BEGIN { if (a == "" || b == "") exit; split(a, x, " "); split(b, y, " "); print (y[1] + y[2] - x[1] - x[2]) * 1000 / hz }')
      fi
      ms=$(sed -n 's/^initial connection time = \([0-9]*\).*/\1/p' "$WORK/connect-$n-$t.txt")
      CONNECT_TIME[$n,$t]=$ms
      [ -z "$ms" ] || [ "$ms" -le "$max" ] || max=$ms
    done
    T_EXTRA=$(((max * 3 / 2 + 999) / 1000 + 2))
    T_EXTRA_OF[$n]=$T_EXTRA
    log "$n clients: slowest connect ${max} ms, pgbench -T $((BENCH_SECONDS + T_EXTRA))"
  done

  # Every round runs every client count in turn, so the cost-as-clients-grow ratio compares runs
  # minutes apart, not one count's rounds against another's a quarter of an hour later (this box's
  # load drifts by more than the 10% that ratio is asked to stay within).
  for round in $(seq "$BENCH_ROUNDS"); do
    for n in "${CLIENT_COUNTS[@]}"; do
      CLIENTS=$n T_EXTRA=${T_EXTRA_OF[$n]}
      mapfile -t targets < <(targets_for "$n")
      # Rotate the target order every round so neither position (first after a mode switch, last
      # before it) always falls on the same target.
      order=()
      for i in "${!targets[@]}"; do order+=("${targets[$(((i + round - 1) % ${#targets[@]}))]}"); done
      for mode in $BENCH_MODES; do
        for t in "${order[@]}"; do
          # PgBouncer 1.18 keeps no track of prepared statements in transaction mode: run it anyway
          # and report the outcome as measured (1.21 and later track them: see pgbouncer.ini).
          measure "$round" "$mode" "$t"
        done
      done
    done
  done
  CLIENTS=${CLIENT_COUNTS[0]} T_EXTRA=0
  # Idle from here on, but they hold $POOL_SIZE connections each to the primary: stop them.
  for t in "${PROXIES[@]}"; do stop_proxy "$t"; done
  export PGSSLMODE=disable

  if [ "$BENCH_CALLGRIND" = 1 ]; then
    run_callgrind pgmux "$PGMUX_BIN"
    [ -z "$PGMUX_BASELINE_BIN" ] || run_callgrind pgmux-base "$PGMUX_BASELINE_BIN"
  fi
}

# ---------------------------------------------------------------------------------------------
# Scenario "latency": one client per proxy, every proxy at once
# ---------------------------------------------------------------------------------------------
# A lone client's latency is mostly the time the machine takes to wake a sleeping process: on a
# small VM it moves by half between consecutive runs against one target, far more than one proxy
# differs from another (an idle CPU is slow to wake; a busy one is not). So each round runs one
# `pgbench -S -c 1` against every proxy at the same time: all see the same machine, and the report
# gives each round's difference to PgBouncer and their median.
# One line per (round, target): round target status latency_ms tps
RESULTS_LATENCY="$WORK/results-latency.tsv"
: >"$RESULTS_LATENCY"
scenario_latency() {
  local round t out lat tps status CLIENTS=1 BENCH_JOBS=1 T_EXTRA=0
  local -A runner=()
  log "scenario latency: one client each against ${PROXIES[*]}, all at once; $BENCH_ROUNDS round(s) of ${BENCH_SECONDS}s"
  for t in "${PROXIES[@]}"; do start_proxy "$t"; done
  for t in "${PROXIES[@]}"; do
    pgbench_run "$t" simple "$WORK/latency-warmup-$t.txt" -T 2 ||
      log "warning: warm-up against $t failed: $(grep -m 1 -E 'ERROR|FATAL|error:' "$WORK/latency-warmup-$t.txt")"
  done
  for round in $(seq "$BENCH_ROUNDS"); do
    for t in "${PROXIES[@]}"; do
      pgbench_run "$t" simple "$WORK/latency-$round-$t.txt" -T "$BENCH_SECONDS" &
      runner[$t]=$!
    done
    for t in "${PROXIES[@]}"; do
      status=ok
      wait "${runner[$t]}" || status=failed
      out="$WORK/latency-$round-$t.txt"
      lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out")
      tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$out")
      [ -n "$lat" ] || status=failed
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$status" "${lat:-}" "${tps:-}" >>"$RESULTS_LATENCY"
      log "latency round $round  $(printf '%-10s' "$t")  $status  lat=${lat:--}ms tps=${tps:--}"
    done
  done
  for t in "${PROXIES[@]}"; do stop_proxy "$t"; done
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

# Medians per (clients, mode, target) of the pooling runs, as awk arrays (shared by the tables below):
# tps, lat, fail, cpu (proxy ms / 1k tx), pct (% of a core), sys (kernel share), pg, cli, oth
# (ms / 1k tx), login (proxy µs per login), win (measured seconds); runs/ok/bad counts and notes.
AWK_POOLING_MEDIANS='
  {
    c = $19; k = c SUBSEP $2 SUBSEP $3; runs[k]++
    if ($4 != "ok") { bad[k]++; note[k] = note[k] sprintf("\n- %s clients, %s / %s, round %s: %s", c, $2, $3, $1, $12); next }
    i = ++ok[k]; tx = $22 > 0 ? $22 : 1
    TPS[k, i] = $5; LAT[k, i] = $6; FAIL[k, i] = $7; WIN[k, i] = $21 / 1000
    PG[k, i] = $25 * 1000 / tx
    if ($27 != "") { # pgbench found by the helper (always, unless it died at once)
      ncli[k]++; CLI[k, ncli[k]] = $27 * 1000 / tx
      OTH[k, ncli[k]] = ($26 - $23 - $25 - $27) * 1000 / tx # machine busy time nobody above accounts for
      BUSY[k, ncli[k]] = $21 > 0 ? $26 / $21 : 0 # CPUs the machine kept busy in the window
    }
    if ($23 != "") {
      hasCPU[k] = 1; CPU[k, i] = $23 * 1000 / tx; PCT[k, i] = 100 * $23 / ($21 > 0 ? $21 : 1)
      SYS[k, i] = 100 * $24 / ($23 > 0 ? $23 : 1)
      # Only when connecting took over a second: else the first progress line came at 1 s, after
      # a good share of a second of transactions, and what is left after subtracting them is noise.
      if ($33 > 1.05) { l = $29 - $30 * $23 / tx; nl[k]++; LOGIN[k, nl[k]] = (l > 0 ? l : 0) * 1000 / c }
    }
  }
  function medians(    k, n) {
    for (k in runs) {
      n = ok[k] + 0; if (n == 0) continue
      tps[k] = med(TPS, k, n); lat[k] = med(LAT, k, n); fail[k] = med(FAIL, k, n); win[k] = med(WIN, k, n)
      pg[k] = med(PG, k, n); cli[k] = med(CLI, k, ncli[k] + 0); oth[k] = med(OTH, k, ncli[k] + 0)
      busy[k] = med(BUSY, k, ncli[k] + 0)
      if (hasCPU[k]) { cpu[k] = med(CPU, k, n); pct[k] = med(PCT, k, n); sys[k] = med(SYS, k, n); login[k] = med(LOGIN, k, nl[k] + 0) }
    }
  }
  function ratio(a, b) { return (a != "" && b > 0) ? sprintf("%.2f×", a / b) : "—" }
  BEGIN {
    name["direct"] = "direct"; name["pgbouncer"] = "PgBouncer"; name["pgmux"] = "pgmux"; name["pgmux-base"] = "pgmux-base"
  }'

report_latency() {
  echo
  echo "### Single-client latency: PgBouncer and pgmux at the same time"
  echo
  echo "- Workload: \`pgbench -S --no-vacuum -c 1 -j 1 -T $BENCH_SECONDS\` against ${PROXIES[*]} at once (one" \
    "client each), $BENCH_ROUNDS round(s); pgbench's mean latency in µs; the difference to PgBouncer per round"
  echo
  awk -F'\t' -v targets="${PROXIES[*]}" "$AWK_LIB"'
    BEGIN { n = split(targets, T, " "); name["pgbouncer"] = "PgBouncer" }
    { if ($3 == "ok") L[$1, $2] = $4 * 1000; if ($1 > R) R = $1 }
    END {
      head = "| round |"; rule = "|--:|"
      for (i = 1; i <= n; i++) { head = head " " (T[i] in name ? name[T[i]] : T[i]) " |"; rule = rule "--:|" }
      for (i = 2; i <= n; i++) { head = head " " T[i] " − PgBouncer |"; rule = rule "--:|" }
      print head; print rule
      for (r = 1; r <= R; r++) {
        line = "| " r " |"
        for (i = 1; i <= n; i++) {
          v[i] = ((r, T[i]) in L) ? L[r, T[i]] : ""
          line = line " " cell(v[i], "%.0f") " |"
          if (v[i] != "") { m[i]++; M[i, m[i]] = v[i] }
        }
        for (i = 2; i <= n; i++) {
          d = (v[i] != "" && v[1] != "") ? v[i] - v[1] : ""
          line = line " " cell(d, "%+.0f") " |"
          if (d != "") { k[i]++; D[i, k[i]] = d }
        }
        print line
      }
      line = "| median |"
      for (i = 1; i <= n; i++) line = line " " cell(med(M, i, m[i] + 0), "%.0f") " |"
      for (i = 2; i <= n; i++) line = line " **" cell(med(D, i, k[i] + 0), "%+.0f") "** |"
      print line
    }' "$RESULTS_LATENCY"
}

report_pooling() {
  local n tls_line="" base_col=""
  [ -z "$PGMUX_BASELINE_BIN" ] || base_col=" vs pgmux-base"
  echo
  echo "### Pooling: direct PostgreSQL vs PgBouncer vs pgmux$base_col"
  echo
  echo "- Workload: \`pgbench -S --no-vacuum -c N -j $BENCH_JOBS -T (${BENCH_SECONDS} + connection allowance) -P 1\`" \
    "on scale $BENCH_SCALE, N = ${CLIENT_COUNTS[*]}; $BENCH_ROUNDS round(s) per N, medians shown; targets interleaved" \
    "per mode, order rotated per round"
  if [ "$BENCH_TLS" = 1 ]; then
    tls_line="; **clients over TLS** (\`sslmode=require\`, self-signed RSA-2048 certificate): PgBouncer" 
    tls_line+=" \`client_tls_sslmode = require\`, pgmux \`tls.mode: require\`, direct PostgreSQL \`ssl = on\`;"
    tls_line+=" proxies to PostgreSQL in plaintext; libpq's default channel_binding=prefer uses SCRAM-SHA-256-PLUS"
    tls_line+=" where offered (pgmux offers it over TLS)"
  fi
  echo "- Proxies: transaction mode, $POOL_SIZE server connections each, clients authenticate with scram-sha-256" \
    "(direct: scram-sha-256 too); PgBouncer max_client_conn $PGB_MAX_CLIENT_CONN, pgmux clients.max_connections" \
    "$PGMUX_MAX_CONNECTIONS$tls_line${PGMUX_BASELINE_BIN:+; pgmux-base = the same configuration run by $PGMUX_BASELINE_BIN${PGMUX_BASELINE_WORKERS:+ with workers: $PGMUX_BASELINE_WORKERS}}"
  if [ ${#DIRECT_SKIPPED[@]} -gt 0 ]; then
    echo "- Direct PostgreSQL skipped at ${DIRECT_SKIPPED[*]} clients: max_connections $PG_MAX_CONNECTIONS," \
      "less the proxies' pools (${#PROXIES[@]} × $POOL_SIZE), superuser_reserved_connections and a margin," \
      "leaves room for $DIRECT_MAX_CLIENTS"
  fi
  echo "- CPU columns count the **transaction phase only**: from pgbench's first progress line (printed once every" \
    "client has connected, or at 1 s) to its last, CPU counters snapshotted as each line arrives; transactions =" \
    "sum of the later lines' tps × interval; \"measured s\" is that window. Proxy CPU in kernel = its system time" \
    "share (syscalls); other = machine busy time - proxy - PostgreSQL - pgbench (kernel interrupt work and" \
    "background load: large means the run was disturbed)"
  echo "- Proxy CPU µs per login: proxy CPU from pgbench's start to its first progress line (every client connects" \
    "with SCRAM$([ "$BENCH_TLS" = 1 ] && echo ' over TLS')), less the transactions of that first interval at the" \
    "run's per-transaction cost, divided by N; shown only where connecting took over 1 s (else pgbench's" \
    "first line comes at 1 s, after most of a second of transactions, and the remainder is noise: see the login" \
    "run line of each client count instead; clock tick $((1000 / CLK_TCK)) ms)"
  for n in "${CLIENT_COUNTS[@]}"; do
    echo
    echo "#### $n clients"
    echo
    local conn="" ctime="" t
    for t in "${PROXIES[@]}"; do
      [ -z "${CONNECT_MS[$n,$t]:-}" ] || conn+="${conn:+, }$t $(awk -v m="${CONNECT_MS[$n,$t]}" -v n="$n" \
        'BEGIN { printf "%.0f", m * 1000 / n }') µs"
    done
    for t in "${TARGETS[@]}"; do
      [ -z "${CONNECT_TIME[$n,$t]:-}" ] || ctime+="${ctime:+, }$t ${CONNECT_TIME[$n,$t]} ms"
    done
    echo "- Login run (each of $n clients connects, runs 1 tx, leaves): proxy CPU per client ${conn:-—};" \
      "pgbench initial connection time ${ctime:-—}; measured runs: pgbench -T $((BENCH_SECONDS + ${T_EXTRA_OF[$n]:-0}))" \
      "(the slowest of those × 1.5, + 2 s, + $BENCH_SECONDS)"
    echo
    awk -F'\t' -v N="$n" -v MODES="$BENCH_MODES" -v TARGETS="${TARGETS[*]}" "$AWK_LIB$AWK_POOLING_MEDIANS"'
      END {
        medians(); nm = split(MODES, modes, " "); nt = split(TARGETS, tg, " ")
        print "| mode | target | TPS | mean latency (ms) | failed tx | proxy CPU ms / 1k tx | proxy CPU (% of a core) | proxy CPU in kernel | PostgreSQL CPU ms / 1k tx | pgbench CPU ms / 1k tx | other CPU ms / 1k tx | proxy CPU µs per login | measured s |"
        print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        for (m = 1; m <= nm; m++) for (j = 1; j <= nt; j++) {
          k = N SUBSEP modes[m] SUBSEP tg[j]
          if (!runs[k]) continue
          if (!ok[k]) { printf "| %s | %s | failed | — | — | — | — | — | — | — | — | — | — |\n", modes[m], name[tg[j]]; continue }
          flag = bad[k] ? sprintf(" (%d/%d runs failed)", bad[k], runs[k]) : ""
          printf "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", modes[m], name[tg[j]],
            cell(tps[k], "%.0f"), flag, cell(lat[k], "%.3f"), cell(fail[k], "%d"), cell(cpu[k], "%.1f"),
            cell(pct[k], "%.0f%%"), cell(sys[k], "%.0f%%"), cell(pg[k], "%.1f"), cell(cli[k], "%.1f"),
            cell(oth[k], "%.1f"), cell(login[k], "%.0f"), cell(win[k], "%.1f")
        }
        print ""
        base = (TARGETS ~ /pgmux-base/)
        printf "| mode | pgmux TPS / PgBouncer TPS | pgmux TPS / direct TPS | pgmux CPU per 1k tx / PgBouncer | pgmux CPU per login / PgBouncer |%s\n",
          base ? " pgmux CPU per 1k tx / pgmux-base | pgmux CPU per login / pgmux-base |" : ""
        print "|---|--:|--:|--:|--:|" (base ? "--:|--:|" : "")
        for (m = 1; m <= nm; m++) {
          d = N SUBSEP modes[m] SUBSEP "direct"; b = N SUBSEP modes[m] SUBSEP "pgbouncer"
          x = N SUBSEP modes[m] SUBSEP "pgmux"; y = N SUBSEP modes[m] SUBSEP "pgmux-base"
          printf "| %s | %s | %s | %s | %s |%s\n", modes[m], ratio(tps[x], tps[b]), ratio(tps[x], tps[d]),
            ratio(cpu[x], cpu[b]), ratio(login[x], login[b]),
            base ? sprintf(" %s | %s |", ratio(cpu[x], cpu[y]), ratio(login[x], login[y])) : ""
        }
        for (k in note) { split(k, kk, SUBSEP); if (kk[1] == N) notes = notes note[k] }
        if (notes != "") { print ""; printf "Failed runs:%s\n", notes }
        # Issue 17 asks for prepared >= 1.5x pgmux own simple TPS. On a saturated box TPS follows the
        # CPU a transaction costs everyone, so the run also gives the most any proxy could reach: one
        # that spent nothing but the kernel time of its socket calls (pgmux own, measured here).
        s = N SUBSEP "simple" SUBSEP "pgmux"; p = N SUBSEP "prepared" SUBSEP "pgmux"
        if (tps[s] > 0 && tps[p] > 0 && cpu[p] != "" && busy[p] > 0) {
          kern = cpu[p] * sys[p] / 100; need = pg[p] + cli[p] + oth[p] + kern
          printf "\n- `-M prepared` TPS / own simple TPS: pgmux %s, direct %s. Ceiling for a proxy spending no user time: %.2f busy CPUs (pgmux prepared runs) over PostgreSQL %.1f + pgbench %.1f + other %.1f + pgmux kernel %.1f µs per prepared tx = %.0f TPS, %s pgmux simple TPS\n",
            ratio(tps[p], tps[s]), ratio(tps[N SUBSEP "prepared" SUBSEP "direct"], tps[N SUBSEP "simple" SUBSEP "direct"]),
            busy[p], pg[p], cli[p], oth[p], kern, busy[p] * 1e6 / need, ratio(busy[p] * 1e6 / need, tps[s])
        }
      }' "$RESULTS_POOLING"
  done

  if [ ${#CLIENT_COUNTS[@]} -gt 1 ]; then
    echo
    echo "#### Cost as clients grow: proxy CPU ms per 1k tx at N clients (and / at $MIN_CLIENTS clients; its user and kernel parts)"
    echo
    awk -F'\t' -v COUNTS="${CLIENT_COUNTS[*]}" -v MINN="$MIN_CLIENTS" -v MODES="$BENCH_MODES" \
      -v TARGETS="${PROXIES[*]}" "$AWK_LIB$AWK_POOLING_MEDIANS"'
      # Each round runs every count in turn: the ratio within a round compares runs minutes apart.
      $4 == "ok" && $23 != "" { RC[$19, $2, $3, $1] = $23 * 1000 / ($22 > 0 ? $22 : 1); if ($1 > nr) nr = $1 }
      END {
        medians(); nm = split(MODES, modes, " "); nt = split(TARGETS, tg, " "); nc = split(COUNTS, cs, " ")
        h = "| mode | proxy |"; u = "|---|---|"
        for (c = 1; c <= nc; c++) { h = h " " cs[c] " clients |"; u = u "--:|" }
        print h " " cs[nc] " / " cs[1] " by round (median) | login µs at " cs[1] " → " cs[nc] " |"; print u "---|--:|"
        for (m = 1; m <= nm; m++) for (j = 1; j <= nt; j++) {
          z = MINN SUBSEP modes[m] SUBSEP tg[j]; line = sprintf("| %s | %s |", modes[m], name[tg[j]])
          for (c = 1; c <= nc; c++) {
            k = cs[c] SUBSEP modes[m] SUBSEP tg[j]
            # Split by the kernel share: the kernel part grows with sockets for any proxy, the
            # user part is the proxy itself: its code and memory.
            line = line " " (cpu[k] == "" ? "—" : sprintf("%.1f (%s; user %.1f + kernel %.1f)", cpu[k],
              ratio(cpu[k], cpu[z]), cpu[k] * (100 - sys[k]) / 100, cpu[k] * sys[k] / 100)) " |"
          }
          each = ""; np = 0; delete PR
          for (r = 1; r <= nr; r++) {
            lo = cs[1] SUBSEP modes[m] SUBSEP tg[j] SUBSEP r; hi = cs[nc] SUBSEP modes[m] SUBSEP tg[j] SUBSEP r
            if (!(lo in RC) || !(hi in RC) || RC[lo] <= 0) continue
            PR[1, ++np] = RC[hi] / RC[lo]; each = each (each == "" ? "" : " / ") sprintf("%.2f", PR[1, np])
          }
          line = line " " (np ? sprintf("%s (**%.2f×**)", each, med(PR, 1, np)) : "—") " |"
          a = cs[1] SUBSEP modes[m] SUBSEP tg[j]; b = cs[nc] SUBSEP modes[m] SUBSEP tg[j]
          print line " " cell(login[a], "%.0f") " → " cell(login[b], "%.0f") " |"
        }
      }' "$RESULTS_POOLING"
  fi

  if [ "$BENCH_CALLGRIND" = 1 ]; then
    echo
    echo "- pgmux Ir per transaction (benches/callgrind.sh: \`pgmux demo\` under callgrind, 10 clients," \
      "3,000 \`SELECT 1\` after 2,000 of warm-up, plaintext): pgmux ${CALLGRIND_IR[pgmux]:-failed}$(
        [ -z "$PGMUX_BASELINE_BIN" ] || echo ", pgmux-base ${CALLGRIND_IR[pgmux-base]:-failed}")$(
        [ -n "$PGMUX_BASELINE_BIN" ] && [ -n "${CALLGRIND_IR[pgmux]:-}" ] && [ -n "${CALLGRIND_IR[pgmux-base]:-}" ] &&
          awk -v a="${CALLGRIND_IR[pgmux]}" -v b="${CALLGRIND_IR[pgmux-base]}" 'BEGIN { printf " (%.3f×)", a / b }')"
  fi

  if [ "$BENCH_ROUNDS" -gt 1 ] || [ ${#CLIENT_COUNTS[@]} -gt 1 ]; then
    echo
    echo "<details><summary>Every run (whole pgbench run, connection set-up included, then the measured window)</summary>"
    echo
    echo "| clients | round | mode | target | status | TPS | latency ms | failed tx | tx | proxy CPU ms (kernel) | PostgreSQL CPU ms | pgbench CPU ms | machine CPU ms | wall ms | connect ms (pgbench) | window ms | window tx | window proxy CPU ms | login-phase proxy CPU ms |"
    echo "|--:|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
      $19, $1, $2, $3, $4, $5, $6, $7, $8, ($9 == "" ? "" : $9 " (" $15 ")"), $13, $14, $10, $11, $20, $21, $22, $23, $29}' "$RESULTS_POOLING"
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
  echo "- Workload: \`pgbench -S --no-vacuum -c $CLIENTS -j $BENCH_JOBS -T $BENCH_SECONDS\` on scale $BENCH_SCALE," \
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
echo "- Versions: PostgreSQL $PG_VERSION,${PGB_VERSION:+ PgBouncer $PGB_VERSION,} pgmux $PGMUX_VERSION ($PGMUX_BIN:" \
  "\`$PGMUX_VERSION_LINE\`)${PGMUX_BASELINE_BIN:+; pgmux-base $PGMUX_BASELINE_BIN: \`$PGMUX_BASE_VERSION_LINE\`}"
for sc in $BENCH_SCENARIOS; do "report_$sc"; done
