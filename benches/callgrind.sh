#!/usr/bin/env bash
# Instructions pgmux spends per transaction, from valgrind's callgrind (repeatable on a noisy box):
# `pgmux demo` (a local primary + replica) runs under callgrind (PGMUX_WORKERS workers); pgbench
# warms up with 2,000 `SELECT 1` transactions (50 clients), counters are zeroed, TX more run, and the dump is divided
# by TX. Postgres and pgbench are not counted.
# Usage: [CG_MODE=simple|extended|prepared] [CG_SCRIPT=select1|select-only] bash benches/callgrind.sh [BIN] [PORT] [TX]
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
valgrind --tool=callgrind --callgrind-out-file=$OUT.%p $BIN demo --port $PORT > /tmp/cg-demo.$PORT.log 2>&1 &
VPID=$!
for i in $(seq 1 300); do grep -q "listening" /tmp/cg-demo.$PORT.log && break; sleep 1; done
echo 'SELECT 1;' > /tmp/select1.sql
export PGPASSWORD=app
WORK=(-f /tmp/select1.sql)
if [ "${CG_SCRIPT:-select1}" = select-only ]; then
  pgbench -i -s 1 -I dtGvp -q -h 127.0.0.1 -p $PORT -U app app > /tmp/cg-init.$PORT.log 2>&1
  WORK=(-S)
fi
# Warm-up with more clients than the pool holds, so every worker's shard of it (pool 20 split over
# the workers) has opened its connections: a server login (PBKDF2 with a configured password)
# inside the measured window would count ~5 million instructions.
pgbench -n -h 127.0.0.1 -p $PORT -U app -M $MODE -c 50 -t 40 "${WORK[@]}" app > /dev/null 2>&1

callgrind_control -z $VPID >/dev/null
pgbench -n -h 127.0.0.1 -p $PORT -U app -M $MODE -c 10 -t $((TX/10)) "${WORK[@]}" app > /tmp/cg-pgbench.$PORT.log 2>&1
callgrind_control -d $VPID >/dev/null
sleep 1
kill -INT $VPID; wait $VPID 2>/dev/null
F=$(ls $OUT.*.1 | head -1)
IR=$(callgrind_annotate $F 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "$BIN ($MODE, ${CG_SCRIPT:-select1}): $IR Ir over $TX tx = $((IR/TX)) Ir/tx"
