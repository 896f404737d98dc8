#!/usr/bin/env bash
# The whole-cycle performance report, in one run, side by side: whole cycles
# (submit, invite, accept, stop) with 1,000 agents of chat capacity 3
# (ixn-bench gen-config), for each engine (the embedded SQLite, and
# PostgreSQL from .ci/pg) and each core count (1 and 2 shards):
#   1. peak: ixn-bench cycle with 4 media servers, window 64, no rate limit;
#   2. half: the same at half the measured peak (--rate), 2 media servers,
#      for the submit-to-invite latency.
# Usage: bench/cycle-report.sh [seconds per run, default 10]
# Output: a table on stdout; JSON of every run and the server logs under
# $OUT (default /tmp/ixn-cycle-report).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
out=${OUT:-/tmp/ixn-cycle-report}
rm -rf "$out"
mkdir -p "$out"
.ci/setup >/dev/null
cargo build --release -q -p ixn -p ixn-bench
bin=target/release
pg=$(.ci/pg start)
port=7391
agents=1000
capacity=3

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/ixn-bench" gen-config --agents "$agents" --capacity "$capacity" > "$out/agents.toml"

run_server() { # name cores [connection-string]
  local name=$1 cores=$2 cs=${3:-}
  local cfg="$out/$name.toml"
  cp "$out/agents.toml" "$cfg"
  if [[ -n $cs ]]; then
    # gen-config writes a [settings] section: add the connection string to it.
    python3 - "$cfg" "$cs" <<'PY'
import sys
path, cs = sys.argv[1], sys.argv[2]
text = open(path).read()
text = text.replace("[settings]\n", '[settings]\nconnection-string = "%s"\n' % cs, 1)
open(path, "w").write(text)
PY
  fi
  rm -rf "$out/$name.data"
  "$bin/ixn-server" --config "$cfg" --listen "127.0.0.1:$port" --data-dir "$out/$name.data" --cores "$cores" \
    > "$out/$name.server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do grep -q "ready: listening" "$out/$name.server.log" && return; sleep 0.1; done
  echo "server did not start:"; cat "$out/$name.server.log"; exit 1
}

fresh_pg() {
  psql -X -q -h 127.0.0.1 -p 54329 -U postgres -d ixn_test -c "DROP DATABASE IF EXISTS ixn_cycle" -c "CREATE DATABASE ixn_cycle" >/dev/null
  psql -X -q -h 127.0.0.1 -p 54329 -U postgres -d ixn_cycle -f storage/sql/postgresql/isdb.sql >/dev/null
  echo "${pg/Database=ixn_test/Database=ixn_cycle}"
}

printf '%-8s %5s %12s %12s %12s %12s %12s %12s %6s %6s\n' engine cores peak_cyc/s peak_p50ms peak_p99ms half_cyc/s half_p50ms half_p99ms lost viol
for engine in sqlite pg; do
  for cores in 0 0,1; do
    name="$engine-$(echo "$cores" | tr -d ,)"
    cs=""
    [[ $engine == pg ]] && cs=$(fresh_pg)
    run_server "$name" "$cores" "$cs"
    common=(--server "127.0.0.1:$port" --agents "$agents" --capacity "$capacity" --duration "$secs")
    "$bin/ixn-bench" cycle "${common[@]}" --media-servers 4 --window 64 --json "$out/$name.peak.json" > "$out/$name.peak.txt"
    peak=$(python3 -c "import json;print(int(json.load(open('$out/$name.peak.json'))['cycles_per_sec']))")
    "$bin/ixn-bench" cycle "${common[@]}" --media-servers 2 --rate $((peak / 2)) --json "$out/$name.half.json" > "$out/$name.half.txt"
    kill -TERM "$server_pid"; wait "$server_pid" || true
    python3 - "$out" "$name" "$engine" "$cores" <<'PY'
import json, sys
out, name, engine, cores = sys.argv[1:5]
p = json.load(open(f"{out}/{name}.peak.json"))
h = json.load(open(f"{out}/{name}.half.json"))
lost = p["lost"] + h["lost"]
viol = p["capacity_violations"] + h["capacity_violations"] + p["duplicates"] + h["duplicates"]
print(f"{engine:<8} {len(cores.split(',')):>5} {p['cycles_per_sec']:>12.0f} {p['p50_us']/1000:>12.2f} {p['p99_us']/1000:>12.2f} "
      f"{h['cycles_per_sec']:>12.0f} {h['p50_us']/1000:>12.2f} {h['p99_us']/1000:>12.2f} {lost:>6} {viol:>6}")
PY
  done
done
.ci/pg stop >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
