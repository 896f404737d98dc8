#!/usr/bin/env bash
# The server's CPU at a low, steady load: for each core list and each commit
# delay, a fresh server (embedded SQLite) runs ixn-bench cycle at RATE
# cycles/s (1000 agents, 4 media servers) for 10 s; the CPU of each of its
# threads is read from /proc over 5 s in the middle, with the bench's
# submit->invite latency.
# Usage: [RATE=1000] [CORES="0 0,1"] [DELAYS="0 1 2 5"] bench/low-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${RATE:-1000}
out=$(mktemp -d /tmp/ixn-low.XXXX)
cargo build --release -q -p ixn -p ixn-bench
bench=target/release/ixn-bench
hz=$(getconf CLK_TCK)
ticks() { for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done; }
port=7800
for cores in ${CORES:-0 0,1}; do
  for delay in ${DELAYS:-0 1 2 5}; do
    port=$((port + 1)); rm -rf "$out/data"
    "$bench" gen-config --agents 1000 --capacity 3 | sed "s/^\[settings\]/[settings]\ndatabase-commit-delay-ms = $delay/" > "$out/agents.toml"
    target/release/ixn-server --config "$out/agents.toml" --listen "127.0.0.1:$port" --data-dir "$out/data" --cores "$cores" > "$out/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do grep -q 'ready' "$out/server.log" 2>/dev/null && break; sleep 0.1; done
    "$bench" cycle --server "127.0.0.1:$port" --agents 1000 --media-servers 4 --rate "$rate" --duration 10 --json "$out/r.json" > "$out/bench.txt" 2>&1 &
    bp=$!
    sleep 3; ticks "$pid" > "$out/t0"; sleep 5; ticks "$pid" > "$out/t1"
    wait "$bp"
    cpu=$(paste "$out/t0" "$out/t1" | awk -v hz="$hz" '{d=($4-$2)*100/hz/5; s+=d} d>0 {printf "%s %.0f%%  ", $1, d} END {printf "total %.0f%%", s}')
    lat=$(python3 -c "import json;d=json.load(open('$out/r.json'));print('rate %.0f/s submit->invite p50 %d us p99 %d us' % (d['cycles_per_sec'], d['p50_us'], d['p99_us']))")
    echo "cores $cores delay ${delay} ms: $cpu; $lat"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
rm -rf "$out"
