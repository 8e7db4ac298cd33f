#!/usr/bin/env bash
# Connection storms against pgmux and PgBouncer, side by side in one run, driven by `pgmux storm`
# (SCRAM logins, `SELECT 1`, transaction pooling, 20 server connections each) on a throwaway
# PostgreSQL server. Three storms, each against a freshly started proxy:
#
#   burst  STORM_BURST clients connect at once, run one query, leave
#   rate   STORM_RATE new clients per second for STORM_RATE_SECONDS, each runs one query and leaves
#   hold   STORM_HOLD clients connect at once and stay STORM_HOLD_SECONDS (idle)
#
# Reported per storm and proxy: attempts, failures (grouped), connect latency p50/p90/p99/max,
# connects/s, the proxy's CPU per 1,000 logins (utime+stime from /proc/PID/stat before/after the
# storm, all threads), and for hold the proxy's RSS per held client (highest VmRSS sampled during
# the hold minus VmRSS before the storm, over the clients held); then pgmux/PgBouncer ratios.
# Prints a markdown report (paste it into BENCHMARKS.md); progress goes to stderr.
#
#   bash benches/storm.sh                      # the full scenario: 10,000 / 500/s for 30 s / 10,000
#   STORM_SCALE=0.1 bash benches/storm.sh      # a quick run: every size and duration × 0.1
#
# Environment knobs (defaults in brackets; sizes and rate-storm duration are multiplied by
# STORM_SCALE):
#   STORM_SCALE         [1]
#   STORM_BURST         [10000]  clients in the burst
#   STORM_RATE          [500]    new clients per second in the rate storm (not scaled)
#   STORM_RATE_SECONDS  [30]     length of the rate storm
#   STORM_HOLD          [10000]  clients held
#   STORM_HOLD_SECONDS  [10]     how long they are held (not scaled)
#   STORM_SHAPES        [burst rate hold]
#   PG_BIN, PGBOUNCER_BIN, PGMUX_BIN, PGMUX_WORKERS: as in benches/e2e.sh
#
# PgBouncer's own limits are raised so that they are not what is measured: max_client_conn and the
# file descriptor limit (ulimit -n, set to the hard limit for everything started here) cover the
# largest storm, and both proxies get listen_backlog 4096. Runs as root (PostgreSQL and PgBouncer
# then run as the `postgres` OS user: both refuse root) or as an ordinary user. Uses only loopback
# and free ports; removes everything it started on exit.
set -euo pipefail

CMDLINE=""
for v in STORM_SCALE STORM_BURST STORM_RATE STORM_RATE_SECONDS STORM_HOLD STORM_HOLD_SECONDS STORM_SHAPES \
  PG_BIN PGBOUNCER_BIN PGMUX_BIN PGMUX_WORKERS; do
  if [ -n "${!v+x}" ]; then CMDLINE+="$v=$(printf '%q' "${!v}") "; fi
done
CMDLINE+="bash benches/storm.sh"

STORM_SCALE=${STORM_SCALE:-1}
scaled() { python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$STORM_SCALE"; }
STORM_BURST=$(scaled "${STORM_BURST:-10000}")
STORM_RATE=${STORM_RATE:-500}
STORM_RATE_SECONDS=$(scaled "${STORM_RATE_SECONDS:-30}")
STORM_HOLD=$(scaled "${STORM_HOLD:-10000}")
STORM_HOLD_SECONDS=${STORM_HOLD_SECONDS:-10}
STORM_SHAPES=${STORM_SHAPES:-burst rate hold}
POOL_SIZE=20
TARGETS=(pgbouncer pgmux)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
T_START=$SECONDS
log() { printf '[storm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in STORM_BURST STORM_RATE STORM_RATE_SECONDS STORM_HOLD STORM_HOLD_SECONDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$v must be a whole number > 0, got '${!v}'"
done
for s in $STORM_SHAPES; do case $s in burst | rate | hold) ;; *) die "unknown shape '$s' in STORM_SHAPES" ;; esac; done
MAX_CLIENTS=$((STORM_BURST > STORM_HOLD ? STORM_BURST : STORM_HOLD))

IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((MAX_CLIENTS + 200)) ] ||
  die "ulimit -n is $(ulimit -n): too low for $MAX_CLIENTS clients (raise the hard limit, or lower STORM_SCALE)"
as_pg() { if [ $IS_ROOT = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK="" PG_STARTED=0 PROXY_PID="" WRAPPER=""
stop_pid() { # pid signal: signal, wait up to 5 s, then SIGKILL
  local pid=$1 sig=$2 i
  [ -n "$pid" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
stop_proxy() {
  # pgmux: SIGINT closes at once; PgBouncer: SIGTERM is its immediate shutdown.
  stop_pid "$PROXY_PID" "${PROXY_SIG:-INT}"
  if [ -n "$WRAPPER" ]; then stop_pid "$WRAPPER" TERM; wait "$WRAPPER" 2>/dev/null || true; fi
  PROXY_PID="" WRAPPER=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_proxy
  [ $PG_STARTED = 1 ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -m immediate -w stop >/dev/null 2>&1
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ $rc != 0 ]; then
      for f in "$WORK"/{postgres,pgbouncer,pgmux}.log; do [ -s "$f" ] && { log "--- tail of $f"; tail -n 5 "$f" >&2; }; done
    fi
    cd / && rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# --- Preflight: PostgreSQL, PgBouncer (installed if missing), pgmux (built if not given) --------
PG_BIN=${PG_BIN:-$({ ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1)}
[ -x "$PG_BIN/initdb" ] || die "no PostgreSQL binaries in '$PG_BIN': apt-get install postgresql, or set PG_BIN"
command -v python3 >/dev/null || die "python3 is needed (free ports, JSON)"
PGBOUNCER_BIN=${PGBOUNCER_BIN:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
if [ ! -x "$PGBOUNCER_BIN" ]; then
  [ $IS_ROOT = 1 ] || die "PgBouncer not found: apt-get install pgbouncer (as root), or set PGBOUNCER_BIN"
  log "installing pgbouncer"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq pgbouncer >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }
  PGBOUNCER_BIN=/usr/sbin/pgbouncer
fi
if [ -z "${PGMUX_BIN:-}" ]; then
  log "cargo build --release (may wait on the cargo lock)"
  cargo build --release --bin pgmux --manifest-path "$REPO/Cargo.toml" || die "cargo build --release failed"
  PGMUX_BIN="$REPO/target/release/pgmux"
fi
[ -x "$PGMUX_BIN" ] || die "pgmux binary '$PGMUX_BIN' is not executable"
CLK_TCK=$(getconf CLK_TCK)
PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print $3}')
PGB_VERSION=$("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $NF}')
PGMUX_VERSION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgmux-storm.XXXXXX")
[ $IS_ROOT = 1 ] && chown postgres: "$WORK"
cd "$WORK"

# --- PostgreSQL: throwaway, tuned for benchmarking; SCRAM over TCP ------------------------------
PG_PORT=$(free_port)
log "starting PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  >"$WORK/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$WORK/initdb.log")"
cat >>"$WORK/pgdata/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 200
fsync = off
synchronous_commit = off
EOF
printf '%s\n' "local all postgres trust" "host all all 127.0.0.1/32 scram-sha-256" >"$WORK/pgdata/pg_hba.conf"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/postgres.log" -w -t 60 start >/dev/null || die "PostgreSQL did not start"
PG_STARTED=1
psql_super() { as_pg "$PG_BIN/psql" -X -q -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }
psql_super -v ON_ERROR_STOP=1 -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app" \
  -c "GRANT pg_read_all_stats TO app" >/dev/null
# PgBouncer verifies clients against the very SCRAM verifier PostgreSQL stores (no PBKDF2 per login).
APP_VERIFIER=$(psql_super -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
[[ $APP_VERIFIER == SCRAM-SHA-256* ]] || die "role app has no SCRAM verifier"
export PGPASSWORD=app PGSSLMODE=disable

# --- The proxies ------------------------------------------------------------------------------
declare -A PORT=([pgbouncer]=$(free_port) [pgmux]=$(free_port))
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
listen_backlog = 4096
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((MAX_CLIENTS + 1000))
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
printf '"app" "%s"\n' "$APP_VERIFIER" >"$WORK/userlist.txt"
cat >"$WORK/pgmux.yaml" <<EOF
listen: 127.0.0.1:${PORT[pgmux]}
listen_backlog: 4096
servers: [127.0.0.1:$PG_PORT]
pool:
  mode: transaction
  size: $POOL_SIZE
clients:
  max_connections: $((MAX_CLIENTS + 1000))
users:
  - name: app
    password: app
workers: ${PGMUX_WORKERS:-0}
EOF
[ $IS_ROOT = 1 ] && chown postgres: "$WORK"/pgbouncer.ini "$WORK"/userlist.txt

start_proxy() { # target
  local t=$1 i
  case $t in
  pgbouncer)
    rm -f "$WORK/pgbouncer.pid"
    # runuser's PAM session resets the soft RLIMIT_NOFILE to 1024 and PgBouncer 1.18 does not raise
    # it itself: without this, clients past ~1,000 at once are never accepted.
    as_pg bash -c 'ulimit -n "$(ulimit -Hn)" && exec "$@"' pgbouncer "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini" \
      >>"$WORK/pgbouncer.log" 2>&1 &
    WRAPPER=$!
    for i in $(seq 100); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
    [ -s "$WORK/pgbouncer.pid" ] || die "PgBouncer did not start: $(tail -n 3 "$WORK/pgbouncer.log")"
    PROXY_PID=$(cat "$WORK/pgbouncer.pid") PROXY_SIG=TERM
    ;;
  pgmux)
    PGMUX_LOG=warn "$PGMUX_BIN" --config "$WORK/pgmux.yaml" >>"$WORK/pgmux.log" 2>&1 &
    PROXY_PID=$! PROXY_SIG=INT
    ;;
  esac
  for i in $(seq 150); do
    timeout 10 "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "${PORT[$t]}" -U app -d app -c 'SELECT 1' >/dev/null 2>&1 && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.2
  done
  die "$t does not answer on 127.0.0.1:${PORT[$t]}: $(tail -n 3 "$WORK/$t.log" 2>/dev/null)"
}
nofile_of() { awk '/^Max open files/{print $4}' "/proc/$1/limits"; }
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# measure SHAPE TARGET: a fresh proxy, one storm, one line of results.
measure() {
  local shape=$1 t=$2 args t0 t1 rss0 peak=0 sampler="" rc=0
  start_proxy "$t"
  case $shape in
  burst) args=(burst --clients "$STORM_BURST") ;;
  rate) args=(rate --rate "$STORM_RATE" --duration "${STORM_RATE_SECONDS}s") ;;
  hold) args=(hold --clients "$STORM_HOLD" --duration "${STORM_HOLD_SECONDS}s") ;;
  esac
  rss0=$(rss_kb "$PROXY_PID")
  if [ "$shape" = hold ]; then
    (p=0; while kill -0 "$PROXY_PID" 2>/dev/null; do r=$(rss_kb "$PROXY_PID"); [ "$r" -gt "$p" ] && p=$r && echo "$p" >"$WORK/peak"; sleep 0.2; done) &
    sampler=$!
  fi
  t0=$(proc_ticks "$PROXY_PID")
  log "$shape against $t (its RLIMIT_NOFILE: $(nofile_of "$PROXY_PID")): pgmux storm ${args[*]}"
  "$PGMUX_BIN" storm "${args[@]}" --no-progress --json --connect-timeout 60s \
    --dsn "host=127.0.0.1 port=${PORT[$t]} user=app password=app dbname=app" \
    --server-dsn "host=127.0.0.1 port=$PG_PORT user=app password=app dbname=app" \
    >"$WORK/$shape-$t.json" 2>"$WORK/$shape-$t.err" || rc=$?
  t1=$(proc_ticks "$PROXY_PID")
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; peak=$(cat "$WORK/peak" 2>/dev/null || echo 0); fi
  [ -s "$WORK/$shape-$t.json" ] || die "pgmux storm failed (exit $rc): $(tail -n 3 "$WORK/$shape-$t.err")"
  python3 - "$WORK/$shape-$t.json" "$shape" "$t" "$((t1 - t0))" "$CLK_TCK" "$rss0" "$peak" >>"$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
shape, target, ticks, tck, rss0, peak = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
c = r["connect_ms"]
cpu = ticks * 1000 / tck / (r["connects"] / 1000) if r["connects"] else float("nan")
per_client = (peak - rss0) * 1024 / r["connects"] if shape == "hold" and r["connects"] and peak else float("nan")
errors = "; ".join(f'{e["count"]}× {e["sqlstate"] or "-"} {e["message"]}' for e in r["errors"][:3]) or "-"
backends = r["backends"]["max"] if r.get("backends") else ""
print("\t".join(map(str, [shape, target, r["attempts"], r["failures"], c["p50"], c["p90"], c["p99"], c["max"],
                          r["connects_per_s"], f"{cpu:.1f}", f"{per_client:.0f}", backends, r["elapsed_s"], errors])))
EOF
  stop_proxy
}

for shape in $STORM_SHAPES; do
  for t in "${TARGETS[@]}"; do measure "$shape" "$t"; done
done
ELAPSED=$((SECONDS - T_START))

# --- Report -------------------------------------------------------------------------------------
echo
echo "## Connection storms: pgmux vs PgBouncer (\`pgmux storm\`)"
echo
echo "- Date: $STARTED_AT; took ${ELAPSED}s; command: \`$CMDLINE\`"
echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), $(uname -sr);" \
  "the storm generator, both proxies and PostgreSQL share it"
echo "- Versions: PostgreSQL $PG_VERSION, PgBouncer $PGB_VERSION, pgmux $PGMUX_VERSION"
echo "- Storms: burst $STORM_BURST clients; rate $STORM_RATE/s for ${STORM_RATE_SECONDS}s; hold $STORM_HOLD clients" \
  "for ${STORM_HOLD_SECONDS}s. Every client logs in with SCRAM and runs \`SELECT 1\` (hold: once, then idles)." \
  "Both proxies: transaction mode, $POOL_SIZE server connections, listen_backlog 4096, client limit" \
  "$((MAX_CLIENTS + 1000)), fresh process per storm; ulimit -n $(ulimit -n)"
echo "- CPU: proxy utime+stime per 1,000 successful logins over the storm. RSS per client: highest proxy" \
  "VmRSS sampled during hold minus VmRSS before it, over the clients held. backends: highest server" \
  "connection count of user app (pg_stat_activity, every 100 ms)"
echo
echo "| storm | proxy | attempts | failed | connect p50 ms | p90 | p99 | max | connects/s | CPU ms / 1k logins | RSS / client (bytes) | backends max | failures |"
echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
  $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ($11 == "nan" ? "—" : $11), $12, $14}' "$RESULTS"
echo
echo "| storm | failures pgmux / PgBouncer | connect p50 pgmux/PgBouncer | p99 ratio | CPU per 1k logins ratio | RSS per client ratio |"
echo "|---|--:|--:|--:|--:|--:|"
awk -F'\t' '
  { k = $1; F[k, $2] = $4; P50[k, $2] = $5; P99[k, $2] = $7; CPU[k, $2] = $10; RSS[k, $2] = $11; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
  function ratio(a, b) { return (a == "nan" || b == "nan" || b + 0 == 0) ? "—" : sprintf("%.2f×", a / b) }
  END { for (i = 1; i <= n; i++) { k = order[i]
    printf "| %s | %s / %s | %s | %s | %s | %s |\n", k, F[k, "pgmux"], F[k, "pgbouncer"], ratio(P50[k, "pgmux"], P50[k, "pgbouncer"]),
      ratio(P99[k, "pgmux"], P99[k, "pgbouncer"]), ratio(CPU[k, "pgmux"], CPU[k, "pgbouncer"]), ratio(RSS[k, "pgmux"], RSS[k, "pgbouncer"]) } }' "$RESULTS"
