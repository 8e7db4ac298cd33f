#!/usr/bin/env bash
# Instructions pgmux spends per transaction, from valgrind's callgrind (repeatable on a noisy box):
# `pgmux demo` (a local primary + replica) runs under callgrind (PGMUX_WORKERS workers); pgbench
# warms up with 2,000 `SELECT 1` transactions (50 clients), counters are zeroed, TX more run, and the dump is divided
# by TX. Postgres and pgbench are not counted.
# Usage: [CG_MODE=simple|extended|prepared] [CG_SCRIPT=select1|select-only] [CG_IDLE=N] [CG_CLIENTS=10] [CG_CACHE=1] bash benches/callgrind.sh [BIN] [PORT] [TX]
#   CG_MODE is pgbench's query protocol (-M), default simple.
#   CG_SCRIPT: select1 (default) runs `SELECT 1`; select-only runs pgbench's built-in -S
#   (`SELECT abalance FROM pgbench_accounts WHERE aid = …`, the e2e workload) on tables made
#   through the proxy first (scale 1, generated server-side).
#   BIN default target/release/pgmux (build it first: cargo build --release), PORT 7601, TX 3000.
set -u
MODE=${CG_MODE:-simple}
BIN=${1:-target/release/pgmux}; PORT=${2:-7601}; TX=${3:-3000}
OUT=/tmp/cg.$PORT
rm -f $OUT.*
valgrind --tool=callgrind ${CG_CACHE:+--cache-sim=yes} ${CG_VALGRIND_ARGS:-} --callgrind-out-file=$OUT.%p $BIN demo --port $PORT > /tmp/cg-demo.$PORT.log 2>&1 &
VPID=$!
for i in $(seq 1 300); do grep -q "listening" /tmp/cg-demo.$PORT.log && break; sleep 1; done
echo 'SELECT 1;' > /tmp/select1.sql
export PGPASSWORD=app
WORK=(-f /tmp/select1.sql)
if [ "${CG_SCRIPT:-select1}" = select-only ]; then
  pgbench -i -s 1 -I dtGvp -q -h 127.0.0.1 -p $PORT -U app app > /tmp/cg-init.$PORT.log 2>&1
  WORK=(-S)
fi
# CG_CLIENTS: clients in the measured run (TX divided among them). CG_CACHE=1: valgrind's cache
# simulation too, with data cache misses per transaction; CG_VALGRIND_ARGS adds valgrind options,
# e.g. "--LL=1048576,16,64" to simulate this box's 1 MiB L2 as the last level.
# CG_IDLE=N: N more clients stay connected and idle throughout (pgbench `\sleep`), to see whether
# a transaction costs more instructions with many clients connected.
if [ "${CG_IDLE:-0}" -gt 0 ]; then
  printf '\\sleep 100000 s\n' > /tmp/cg-idle.sql
  pgbench -n -h 127.0.0.1 -p $PORT -U app -c "$CG_IDLE" -j 2 -T 100000 -f /tmp/cg-idle.sql app > /tmp/cg-idle.$PORT.log 2>&1 &
  IDLE_PID=$!
  for i in $(seq 1 600); do
    [ "$(ss -Htn state established "( dport = :$PORT )" | wc -l)" -ge "$CG_IDLE" ] && break
    sleep 1
  done
  echo "idle clients connected: $(ss -Htn state established "( dport = :$PORT )" | wc -l)"
fi
# Warm-up with more clients than the pool holds, so every worker's shard of it (pool 20 split over
# the workers) has opened its connections: a server login (PBKDF2 with a configured password)
# inside the measured window would count ~5 million instructions.
pgbench -n -h 127.0.0.1 -p $PORT -U app -M $MODE -c 50 -t 40 "${WORK[@]}" app > /dev/null 2>&1

callgrind_control -z $VPID >/dev/null
CLIENTS=${CG_CLIENTS:-10}
pgbench -n -h 127.0.0.1 -p $PORT -U app -M $MODE -c $CLIENTS -j 2 -t $((TX/CLIENTS)) "${WORK[@]}" app > /tmp/cg-pgbench.$PORT.log 2>&1
callgrind_control -d $VPID >/dev/null
sleep 1
[ -n "${IDLE_PID:-}" ] && kill $IDLE_PID 2>/dev/null
kill -INT $VPID; wait $VPID 2>/dev/null
F=$(ls $OUT.*.1 | head -1)
IR=$(callgrind_annotate $F 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
if [ -n "${CG_CACHE:-}" ]; then
  # Cache simulation: the file's summary holds Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
  grep -m1 '^summary:' $F | awk -v tx=$TX '{printf "per tx: D1 misses %.0f read + %.0f write, LL misses %.0f read + %.0f write\n", $6/tx, $7/tx, $9/tx, $10/tx}'
fi
echo "$BIN ($MODE, ${CG_SCRIPT:-select1}): $IR Ir over $TX tx = $((IR/TX)) Ir/tx"
