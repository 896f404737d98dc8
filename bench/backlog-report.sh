#!/usr/bin/env bash
# The backlog report, in one run:
#   1. ixn-server (release, embedded SQLite, SyncPragma=FULL, 2 shards on
#      cores 0-1, max-interactions-per-snapshot = N, a fresh data dir);
#   2. ixn-bench backlog: fills inbound with N interactions without
#      properties, then pulls from inbound-by-priority in view order for
#      10 s, a snapshot of the whole backlog read in pages of 1000, and two
#      finds; the server's VmRSS is read before and after the fill;
#   3. SIGTERM, then a restart on the same database, timed from the start of
#      the process to its "ready" line (every live interaction loaded back
#      from SQLite), and its VmRSS then;
#   4. ixn-perf backlog --shards 2: the same backlog in the shard state
#      machines alone, heap counted by a counting allocator.
# Pulled interactions stay locked for routing-timeout (720 minutes by
# default) while the first server runs: that does not disturb the figures,
# and locks are not stored, so after the restart all N are queued again.
# Usage: bench/backlog-report.sh [N, default 1000000]
# Output: a table on stdout; JSON and logs under $OUT (default
# /tmp/ixn-backlog-report); the database under $OUT/data (removed at the
# end unless KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
out=${OUT:-/tmp/ixn-backlog-report}
port=${PORT:-7392}
rm -rf "$out"
mkdir -p "$out"
cargo build --release -q -p ixn -p ixn-bench -p ixn-perf
bin=target/release

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cfg="$out/ixn.toml"
printf '[server]\nlisten = "127.0.0.1:%s"\ndata-dir = "%s"\ncores = "%s"\n[settings]\nmax-interactions-per-snapshot = %s\n' \
  "$port" "$out/data" "${CORES:-0-1}" "$n" > "$cfg"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

server_pid=
bench_rc=0
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" || true
    server_pid=
  fi
}
trap stop_server EXIT

# Starts the server with its log in $1; sets server_pid and ready_s (seconds
# from the start of the process to its ready line, polled every 10 ms).
start_server() {
  local t0
  t0=$(date +%s.%N)
  "$bin/ixn-server" --config "$cfg" > "$1" 2>&1 &
  server_pid=$!
  for _ in $(seq 60000); do
    if grep -q "ready: listening" "$1"; then
      ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
      return
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.01
  done
  echo "server did not start:"; cat "$1"; exit 1
}

start_server "$out/server1.log"
"$bin/ixn-bench" backlog --server "127.0.0.1:$port" --interactions "$n" --clients 4 --window 64 \
  --pull-count 10,1 --duration 10 --server-pid "$server_pid" --json "$out/bench.json" | tee "$out/bench.txt" ||
  bench_rc=$?
# A failed check still writes the JSON; anything else stops the report.
[[ -s $out/bench.json ]] || { echo "ixn-bench backlog failed before writing its result"; exit 1; }
rss_bench_end=$(rss_kib "$server_pid")
t0=$(date +%s.%N)
stop_server
stop_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
db_bytes=$(du -cb "$out/data"/ixn.db* | tail -1 | cut -f1)

start_server "$out/server2.log"
recovery_s=$ready_s
rss_recovered=$(rss_kib "$server_pid")
sleep 5
rss_recovered_5s=$(rss_kib "$server_pid")
loaded=$(sed -n 's/.*; \([0-9]*\) live interaction(s) loaded.*/\1/p' "$out/server2.log")
load_line=$(grep -m1 'msg_id=27149' "$out/server2.log" | sed 's/.*INFO *main //' || true)
stop_server

"$bin/ixn-perf" backlog --interactions "$n" --shards 2 --json "$out/perf.json" | tee "$out/perf.txt"
[[ ${KEEP:-0} == 1 ]] || rm -rf "$out/data"

python3 - "$out" "$n" "$recovery_s" "$rss_recovered" "$rss_bench_end" "$loaded" "$db_bytes" "$stop_s" "$load_line" "$bench_rc" "$rss_recovered_5s" <<'PY'
import json, sys
out, n, rec, rss_rec, rss_end, loaded, db, stop_s, load_line, bench_rc, rss_rec5 = sys.argv[1:]
n = int(n)
b = json.load(open(f"{out}/bench.json"))
p = json.load(open(f"{out}/perf.json"))
rows = []
def row(what, value, note=""):
    rows.append((what, value, note))
row("interactions queued", f"{n:,}", "no properties, priorities 0-9, inbound")
row("in-process heap per interaction", f"{p['bytes_per_interaction']:.1f} B",
    f"ixn-perf, {p['shards']} shards, counting allocator (requested bytes), target < 200")
row("server VmRSS growth per interaction", f"{b['server_rss_bytes_per_interaction']:.1f} B",
    f"({b['server_rss_kib_after_fill']} - {b['server_rss_kib_before_fill']}) KiB / N; includes mimalloc and SQLite cache overhead")
row("server fill (durable submits)", f"{b['fill_per_sec']:,.0f}/s", f"{b['fill_seconds']:.1f} s, ack p99 {b['fill_p99_us']/1000:.1f} ms")
for r in b["pull_runs"]:
    row(f"server pulls of {r['count']}", f"{r['pulls_per_sec']:,.0f} pulls/s",
        f"{r['interactions_per_sec']:,.0f} interactions/s over {r['seconds']:.1f} s, 1 routing connection; "
        f"p50/p99/p99.9 {r['p50_us']}/{r['p99_us']}/{r['p999_us']} us")
row("server pull checks", f"{b['order_violations']}", f"order violations; {b['pulled']:,} pulled, {b['pulled_twice']} twice")
for r in p["pulls"]:
    row(f"in-process pulls of {r['count']}", f"{r['pulls_per_sec']:,.0f} pulls/s",
        f"{r['interactions_per_sec']:,.0f} interactions/s; p50/p99 {r['p50_us']:.1f}/{r['p99_us']:.1f} us; order checked incl. ties")
row("server snapshot, take", f"{b['snapshot_take_ms']:.0f} ms", f"{b['snapshot_count']:,} of {b['snapshot_total']:,} (priority >= 0)")
row("server snapshot, read all", f"{b['snapshot_read_ms']:.0f} ms", f"{b['snapshot_pages']} pages of 1000, page p50 {b['snapshot_page_p50_us']/1000:.1f} ms")
row("in-process snapshot, take", f"{p['snapshot_take_ms']:.0f} ms", f"read {p['snapshot_pages']} pages in {p['snapshot_read_ms']:.0f} ms")
for f in b["finds"]:
    row(f"server find {f['condition']}", f"{f['first_ms']:.1f} ms",
        f"first of {len(f['ms'])} (median {f['median_ms']:.1f} ms); limit {f['limit']}: {f['count']:,} listed of {f['total']:,}")
for f in p["finds"]:
    row(f"in-process find {f['condition']}", f"{f['median_ms']:.1f} ms", f"median of {len(f['ms'])}; {f['count']:,} of {f['total']:,}")
row("server VmRSS after the bench", f"{int(rss_end)/1024:.0f} MiB", "after pulls, snapshot and finds")
row("SIGTERM to exit", f"{float(stop_s):.2f} s", "")
row("database size", f"{int(db)/2**20:.0f} MiB", "ixn.db + -wal + -shm")
row("restart recovery", f"{float(rec):.2f} s", f"process start to ready line; {loaded} loaded; {load_line}")
row("server VmRSS after recovery", f"{int(rss_rec)/1024:.0f} MiB",
    f"at the ready line; {int(rss_rec5)/1024:.0f} MiB 5 s later ({int(rss_rec5)*1024/n:.0f} B per interaction, whole process)")
row("errors / lost", f"{b['errors']} / {b['lost']}", "")
if bench_rc != "0":
    row("ixn-bench checks FAILED", f"{b['problems']}", f"exit status {bench_rc}; see bench.txt")
w = max(len(r[0]) for r in rows)
v = max(len(r[1]) for r in rows)
print()
for what, value, note in rows:
    print(f"{what:<{w}}  {value:>{v}}  {note}")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
