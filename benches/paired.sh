#!/usr/bin/env bash
# Two pgmux builds measured at the same time, so both see the same noise: on a shared 2-core box
# consecutive runs of one binary move ±10%, which hides any per-transaction change under ~5%.
# Each build runs `pgmux demo` (its own throwaway primary + replica) on its own port; pgbench drives
# both at once (`SELECT 1`, -M MODE, CLIENTS each, SECONDS long), and each proxy's CPU time
# (utime + stime of the pgmux process only, from /proc/PID/stat) is divided by its transactions.
# The order the two start in alternates between rounds. Prints one line per round and the median
# of B / A; below 1 means B spends less CPU per transaction.
# Usage: [PAIRED_MODE=simple|extended|prepared] [PAIRED_CLIENTS=50] [PAIRED_SECONDS=15]
#        bash benches/paired.sh BIN_A BIN_B [ROUNDS]
# Needs PostgreSQL's server binaries and pgbench (apt-get install postgresql).
set -u
A=${1:?usage: paired.sh BIN_A BIN_B [ROUNDS]}
B=${2:?usage: paired.sh BIN_A BIN_B [ROUNDS]}
ROUNDS=${3:-4}
MODE=${PAIRED_MODE:-simple}
CLIENTS=${PAIRED_CLIENTS:-50}
SECONDS_EACH=${PAIRED_SECONDS:-15}
PORT_A=7701
PORT_B=7711
WORK=$(mktemp -d /tmp/pgmux-paired.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
echo 'SELECT 1;' > "$WORK/select1.sql"
chmod -R a+rX "$WORK"
export PGPASSWORD=app

start() { # BIN PORT -> pid of pgmux
  "$1" demo --port "$2" > "$WORK/demo.$2.log" 2>&1 &
  echo $!
}
ready() { # PORT LOG
  for _ in $(seq 1 300); do
    grep -q "listening" "$WORK/demo.$1.log" && return 0
    sleep 1
  done
  echo "pgmux demo on port $1 did not start: $(tail -3 "$WORK/demo.$1.log")" >&2
  return 1
}
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
tx_of() { awk '/actually processed/ {split($NF, a, "/"); print a[1]}' "$1"; }

ratios=()
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    pa=$(start "$A" $PORT_A); pb=$(start "$B" $PORT_B)
  else
    pb=$(start "$B" $PORT_B); pa=$(start "$A" $PORT_A)
  fi
  ready $PORT_A && ready $PORT_B || exit 1
  # Warm-up: the pools open their connections, the clients log in once.
  for p in $PORT_A $PORT_B; do
    pgbench -n -h 127.0.0.1 -p $p -U app -M "$MODE" -c 10 -t 100 -f "$WORK/select1.sql" app > /dev/null 2>&1
  done
  ta0=$(cpu_ticks "$pa"); tb0=$(cpu_ticks "$pb")
  pgbench -n -h 127.0.0.1 -p $PORT_A -U app -M "$MODE" -c "$CLIENTS" -j 1 -T "$SECONDS_EACH" \
    -f "$WORK/select1.sql" app > "$WORK/a.log" 2>&1 &
  ja=$!
  pgbench -n -h 127.0.0.1 -p $PORT_B -U app -M "$MODE" -c "$CLIENTS" -j 1 -T "$SECONDS_EACH" \
    -f "$WORK/select1.sql" app > "$WORK/b.log" 2>&1 &
  jb=$!
  wait $ja $jb
  ta1=$(cpu_ticks "$pa"); tb1=$(cpu_ticks "$pb")
  kill -INT "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null
  xa=$(tx_of "$WORK/a.log"); xb=$(tx_of "$WORK/b.log")
  if [ -z "$xa" ] || [ -z "$xb" ] || [ "$xa" = 0 ] || [ "$xb" = 0 ]; then
    echo "round $r: a pgbench run failed: $(tail -2 "$WORK/a.log" "$WORK/b.log")" >&2
    exit 1
  fi
  line=$(python3 -c "
import sys
ta, tb, xa, xb = map(int, sys.argv[1:5])
hz = int(sys.argv[5])
a = ta * 1e6 / hz / xa; b = tb * 1e6 / hz / xb
print(f'{b / a:.3f} round $r ($MODE, $CLIENTS clients each): A {a:5.1f} ms / 1k tx ({xa} tx)  B {b:5.1f} ms / 1k tx ({xb} tx)  B/A {b / a:.3f}')
" $((ta1 - ta0)) $((tb1 - tb0)) "$xa" "$xb" "$(getconf CLK_TCK)")
  ratios+=("${line%% *}")
  echo "${line#* }"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "median B/A over %d rounds: %.3f\n", NR, m}'
