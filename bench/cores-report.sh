#!/usr/bin/env bash
# Two core lists for the same server side by side: ROUNDS rounds, in each a
# fresh server (embedded SQLite) per core list and workload, alternating:
#   cycle:  ixn-bench cycle --agents 1000 --media-servers 4 --window 64
#   submit: ixn-bench submit --clients 8 --window 64
# Usage: [A="0,1"] [B="0"] [ROUNDS=3] [SECS=8] bench/cores-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
a=${A:-0,1}; b=${B:-0}; rounds=${ROUNDS:-3}; secs=${SECS:-8}
out=$(mktemp -d /tmp/ixn-cores.XXXX)
cargo build --release -q -p ixn -p ixn-bench
bench=target/release/ixn-bench
"$bench" gen-config --agents 1000 --capacity 3 > "$out/agents.toml"
port=7700
for r in $(seq "$rounds"); do
  for cores in "$a" "$b"; do
    for kind in cycle submit; do
      port=$((port + 1)); rm -rf "$out/data"
      cfg=(--config "$out/agents.toml"); [ "$kind" = submit ] && cfg=()
      target/release/ixn-server "${cfg[@]}" --listen "127.0.0.1:$port" --data-dir "$out/data" --cores "$cores" > "$out/server.log" 2>&1 &
      pid=$!
      for _ in $(seq 200); do grep -q 'ready' "$out/server.log" 2>/dev/null && break; sleep 0.1; done
      if [ "$kind" = cycle ]; then
        res=$("$bench" cycle --server "127.0.0.1:$port" --agents 1000 --media-servers 4 --window 64 --duration "$secs" 2>&1 \
          | grep -o "= [0-9]*/s.*submit->invite p50 [0-9]* us, p99 [0-9]* us" | sed 's/(1000.*;//')
      else
        res=$("$bench" submit --server "127.0.0.1:$port" --clients 8 --window 64 --duration "$secs" 2>&1 | grep -o "= [0-9]*/s")
      fi
      echo "round $r cores $cores $kind $res"
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
done
rm -rf "$out"
