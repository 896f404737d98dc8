#!/usr/bin/env bash
# Stress check: no answer waits for an unrelated wake-up.
#
# What it runs, RUNS times (default 30):
#   1. a fresh ixn-server (2 shards on cores 0,1) on PostgreSQL (the
#      throwaway server of .ci/pg, a fresh database per script run, emptied
#      between runs) or, with ENGINE=sqlite, on a fresh SQLite data dir;
#   2. LOAD busy loops competing for the CPU (default 2, one per core), as
#      the other load on a shared machine did when answers stalled;
#   3. ixn-bench submit --clients 8 --window 64 --duration SECS (default 3)
#      against it, with the bench's 60 s read timeout cut short: a run
#      whose slowest answer took more than STALL_MS (default 10000) ms, or
#      whose bench did not finish within SECS + 20 s, is a stall;
#   4. SIGTERM to the server (a stop that takes over 20 s also fails).
# On a stall the script records where the server's threads were
# (/proc/PID/task/*/wchan and stack where readable) under $OUT, and when the
# bench hung, sends one `ixnctl ping` (which used to end such a stall).
# Binaries: release builds (PROFILE=debug for debug ones, whose executors
# rarely sleep, so they hardly ever show the problem).
# The server logs at IXN_LOG=info,ixn=debug,odbc_api=error, so that each
# wake by the watchdog (1013) is counted.
# Output: one line per run and a last line `PASS: N runs, 0 stalls, ...` or
# `FAIL: K of N runs stalled, ...`; exit status 0 or 1. Logs of stalled
# runs are kept under $OUT (default /tmp/ixn-stall-stress).
# Usage: [BIN=DIR] [ENGINE=pg|sqlite] [RUNS=30] [SECS=3] [LOAD=2] [PROFILE=release|debug] bench/stall-stress.sh
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-30}
secs=${SECS:-3}
load=${LOAD:-2}
engine=${ENGINE:-pg}
stall_ms=${STALL_MS:-10000}
profile=${PROFILE:-release}
out=${OUT:-/tmp/ixn-stall-stress}
port=${PORT:-17332}
rm -rf "$out"
mkdir -p "$out"
# BIN=DIR runs the binaries in DIR as they are (no build), e.g. a saved
# build of an older commit to compare with.
if [ -n "${BIN:-}" ]; then
  bin=$BIN
elif [ "$profile" = release ]; then
  cargo build --release -q -p ixn -p ixn-bench || exit 1
  bin=target/release
else
  cargo build -q -p ixn -p ixn-bench || exit 1
  bin=target/debug
fi

if [ "$engine" = pg ]; then
  base=$(.ci/pg start) || exit 1
  pgport=${IXN_PG_PORT:-54329}
  psql_() { psql -X -q -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
  psql_ -d ixn_test -c "DROP DATABASE IF EXISTS ixn_stall" -c "CREATE DATABASE ixn_stall" >/dev/null
  psql_ -d ixn_stall -f storage/sql/postgresql/isdb.sql >/dev/null
  cs=${base/Database=ixn_test/Database=ixn_stall}
  settings=$(printf '[settings]\nconnection-string = "%s"\n' "$cs")
else
  settings=""
fi

loaders=()
stop_load() { for p in "${loaders[@]}"; do kill "$p" 2>/dev/null; done; loaders=(); }
trap 'stop_load; [ -n "${server:-}" ] && kill -9 "$server" 2>/dev/null' EXIT

stalls=0
woken=0
slowest=0
for run in $(seq "$runs"); do
  dir="$out/run$run"
  mkdir -p "$dir"
  if [ "$engine" = pg ]; then
    psql_ -d ixn_stall -c "TRUNCATE interactions" >/dev/null
  fi
  printf '[server]\nlisten = "127.0.0.1:%s"\ncores = "0,1"\ndata-dir = "%s"\n%s\n' "$port" "$dir/data" "$settings" > "$dir/ixn.toml"
: > "$dir/server.out"
  IXN_LOG=info,ixn=debug,odbc_api=error "$bin/ixn-server" --config "$dir/ixn.toml" > "$dir/server.out" 2> "$dir/server.log" &
  server=$!
  for _ in $(seq 300); do grep -q "ready: listening" "$dir/server.out" && break; sleep 0.1; done
  if ! grep -q "ready: listening" "$dir/server.out"; then
    echo "run $run: server not ready after 30 s"; stalls=$((stalls + 1))
    kill -9 "$server" 2>/dev/null; wait "$server" 2>/dev/null; continue
  fi
  for _ in $(seq "$load"); do (while :; do :; done) & loaders+=($!); done
  timeout $((secs + 20)) "$bin/ixn-bench" submit --server "127.0.0.1:$port" --clients 8 --window 64 \
    --duration "$secs" --json "$dir/bench.json" > "$dir/bench.out" 2>&1 &
  bench=$!
  # Watch for a stall while the bench runs: no progress for stall_ms.
  wait "$bench"; rc=$?
  stop_load
  max_us=$(grep -o '"max_us":[0-9]*' "$dir/bench.json" 2>/dev/null | cut -d: -f2)
  acked=$(grep -o '"acked":[0-9]*' "$dir/bench.json" 2>/dev/null | cut -d: -f2)
  verdict=ok
  if [ "$rc" -ne 0 ] || [ -z "$max_us" ] || [ "$max_us" -gt $((stall_ms * 1000)) ]; then
    verdict=STALL
    stalls=$((stalls + 1))
    for t in /proc/"$server"/task/*; do
      echo "$(cat "$t/comm" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
      cat "$t/stack" 2>/dev/null
    done > "$dir/threads.txt"
    if [ "$rc" -ne 0 ]; then
      t0=$(date +%s.%N)
      "$bin/ixnctl" --server "127.0.0.1:$port" ping > "$dir/ping.out" 2>&1
      echo "ping sent $(date +%s.%N) (stall noticed $t0)" >> "$dir/ping.out"
    fi
  fi
  kill -TERM "$server"
  for _ in $(seq 200); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server" 2>/dev/null; then
    echo "run $run: server still up 20 s after SIGTERM"; kill -9 "$server"; verdict=STALL; stalls=$((stalls + 1))
  fi
  wait "$server" 2>/dev/null
  server=""
  grep -q "msg_id=1013" "$dir/server.log" && woken=$((woken + 1))
  [ -n "$max_us" ] && [ "$max_us" -gt "$slowest" ] && slowest=$max_us
  [ "$verdict" = ok ] && rm -rf "$dir"
  echo "run $run: $verdict (bench exit $rc, acked ${acked:-?}, slowest answer ${max_us:-?} us)"
done
summary="slowest answer $slowest us; the watchdog woke a shard in $woken runs ($engine, $load busy loops, $secs s each)"
if [ "$stalls" -eq 0 ]; then
  echo "PASS: $runs runs, 0 stalls, $summary"
  exit 0
fi
echo "FAIL: $stalls of $runs runs stalled, $summary; logs under $out"
exit 1
