#!/usr/bin/env bash
# Runs `ixn-perf storage` over a matrix and prints the median of each cell.
#   perf/storage-matrix.sh sqlite   SQLite: SyncPragma FULL/NORMAL x array/multirow x batch
#   perf/storage-matrix.sh pg       PostgreSQL (.ci/pg start): writers x array/multirow x batch
# Env: ROWS (default 100000), REPS (default 3), BATCHES (default "100 1000 4000"),
# WRITERS (pg, default "1 5"), OUT (json folder, default /tmp/ixn-perf-matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-100000}
reps=${REPS:-3}
batches=${BATCHES:-100 1000 4000}
out=${OUT:-/tmp/ixn-perf-matrix}
mkdir -p "$out"
cargo build --release -q -p ixn-perf
bin=target/release/ixn-perf
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
case "${1:-}" in
  sqlite)
    for sync in FULL NORMAL; do for st in array multirow; do for b in $batches; do for r in $(seq "$reps"); do
      $bin storage --rows "$rows" --batch "$b" --strategy "$st" --sqlite-sync "$sync" --json "$out/sqlite-$sync-$st-$b-$r.json" >/dev/null
    done; done; done; done ;;
  pg)
    cs=$(.ci/pg start)
    for w in ${WRITERS:-1 5}; do for st in array multirow; do for b in $batches; do for r in $(seq "$reps"); do
      $bin storage --connection-string "$cs" --writers "$w" --rows "$rows" --batch "$b" --strategy "$st" --json "$out/pg-$w-$st-$b-$r.json" >/dev/null
    done; done; done; done ;;
  *) echo "usage: perf/storage-matrix.sh sqlite|pg" >&2; exit 2 ;;
esac
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$1" <<'PY'
import json, glob, statistics, sys, collections
out, kind = sys.argv[1], sys.argv[2]
cells = collections.defaultdict(list)
for f in glob.glob(f"{out}/{'sqlite' if kind == 'sqlite' else 'pg'}-*.json"):
    j = json.load(open(f))
    key = (j.get("sqlite_sync", f"{j['writers']} writer(s)"), j["strategy"], j["batch"])
    cells[key].append(j)
print(f"{'mode':<12} {'strategy':<9} {'batch':>6} {'rows/s (median)':>16} {'runs':<26} {'p50 ms':>7} {'p99 ms':>7}")
for k in sorted(cells, key=lambda k: (k[0], k[1], k[2])):
    v = cells[k]
    rs = [x["rows_per_sec"] for x in v]
    print(f"{k[0]:<12} {k[1]:<9} {k[2]:>6} {statistics.median(rs):>16.0f} {' '.join(f'{x:.0f}' for x in rs):<26} "
          f"{statistics.median([x['p50_batch_commit_ms'] for x in v]):>7.1f} {statistics.median([x['p99_batch_commit_ms'] for x in v]):>7.1f}")
PY
