#!/usr/bin/env bash
# The durable-submit performance report, in one run, side by side:
#   1. storage ceiling: rows/s the writer path commits with nothing else
#      running (ixn-perf storage), per engine and SQLite sync mode;
#   2. ixn-bench submit against ixn-server at peak (no rate limit);
#   3. ixn-bench submit at half the measured peak, for the p99 ack latency,
#      from 2 client threads (window 32): on a 2-core machine the load
#      generator shares the cores with the server, and 8 threads of it at
#      half rate measure the scheduler more than the server.
# Engines: embedded SQLite with SyncPragma=FULL (the default), SQLite with
# SyncPragma=NORMAL, PostgreSQL (the throwaway one from .ci/pg).
# Usage: bench/submit-report.sh [seconds per run, default 10]
# Output: a table on stdout; JSON of every run under $OUT (default
# /tmp/ixn-submit-report).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-/tmp/ixn-submit-report}
rm -rf "$out"
mkdir -p "$out"
.ci/setup >/dev/null
cargo build --release -q -p ixn -p ixn-bench -p ixn-perf
bin=target/release
pg=$(.ci/pg start)
port=7390

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# A fresh database per engine; prints the connection string.
fresh_db() {
  case "$1" in
    sqlite-full|sqlite-normal)
      local sync=${1#sqlite-}
      rm -rf "$out/$1" && mkdir -p "$out/$1"
      echo "Driver=SQLite3;Database=$out/$1/ixn.db;JournalMode=WAL;SyncPragma=${sync^^};Timeout=10000;" ;;
    pg)
      psql -X -q -h 127.0.0.1 -p 54329 -U postgres -d ixn_test -c "DROP DATABASE IF EXISTS ixn_report" -c "CREATE DATABASE ixn_report" >/dev/null
      psql -X -q -h 127.0.0.1 -p 54329 -U postgres -d ixn_report -f storage/sql/postgresql/isdb.sql >/dev/null
      echo "${pg/Database=ixn_test/Database=ixn_report}" ;;
  esac
}

run_server() { # engine connection-string
  local cfg="$out/$1.toml"
  printf '[server]\nlisten = "127.0.0.1:%s"\ndata-dir = "%s"\n[settings]\nconnection-string = "%s"\n' "$port" "$out/$1" "$2" > "$cfg"
  if [[ $1 == sqlite-* ]]; then
    python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).executescript(open(sys.argv[2]).read())" "$out/$1/ixn.db" storage/sql/sqlite/isdb.sql
  fi
  "$bin/ixn-server" --config "$cfg" > "$out/$1.server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do grep -q "ready: listening" "$out/$1.server.log" && return; sleep 0.1; done
  echo "server did not start:"; cat "$out/$1.server.log"; exit 1
}

printf '%-14s %12s %12s %10s %10s %12s %10s %10s %6s\n' engine ceiling_rows/s peak_acks/s peak_p50ms peak_p99ms half_acks/s half_p50ms half_p99ms lost
for engine in sqlite-full sqlite-normal pg; do
  cs=$(fresh_db "$engine")
  "$bin/ixn-perf" storage --connection-string "$cs" --rows 200000 --json "$out/$engine.ceiling.json" > /dev/null
  cs=$(fresh_db "$engine")
  run_server "$engine" "$cs"
  "$bin/ixn-bench" submit --server "127.0.0.1:$port" --clients 8 --window 64 --duration "$secs" --json "$out/$engine.peak.json" > /dev/null
  peak=$(python3 -c "import json;print(int(json.load(open('$out/$engine.peak.json'))['ops_per_sec']))")
  "$bin/ixn-bench" submit --server "127.0.0.1:$port" --clients 2 --window 32 --duration "$secs" --rate $((peak / 2)) --json "$out/$engine.half.json" > /dev/null
  kill -TERM "$server_pid"; wait "$server_pid" || true
  python3 - "$out" "$engine" <<'PY'
import json, sys
out, e = sys.argv[1], sys.argv[2]
c = json.load(open(f"{out}/{e}.ceiling.json"))
p = json.load(open(f"{out}/{e}.peak.json"))
h = json.load(open(f"{out}/{e}.half.json"))
lost = (p["lost"] or 0) + (h["lost"] or 0)
print(f"{e:<14} {c['rows_per_sec']:>14.0f} {p['ops_per_sec']:>12.0f} {p['p50_us']/1000:>10.2f} {p['p99_us']/1000:>10.2f} "
      f"{h['ops_per_sec']:>12.0f} {h['p50_us']/1000:>10.2f} {h['p99_us']/1000:>10.2f} {lost:>6}")
PY
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
