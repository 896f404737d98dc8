#!/usr/bin/env bash
# Two server builds side by side in one run, alternating, so drift on a
# shared machine hits both alike (and which goes first alternates too): for each round and each kind, a fresh
# ixn-server of build A, then of build B (embedded SQLite, by default 2 shards on cores
# 0,1), each loaded by the same ixn-bench.
#   submit:    ixn-bench submit --clients 8 --window 64
#   cycle:     ixn-bench cycle, 1000 agents of chat capacity 3, 4 media
#              servers, window 64, --handle-ms 0 (no reporting subscriber)
#   cycle-sub: the same with `ixnctl watch --json` subscribed to every event
#   submit-log, cycle-log: submit and cycle with the event log on (an empty
#              [logger-settings]: the main database, batch-size 500,
#              storing-timeout 1000 ms); both builds must know the section
#   submit-logdb, cycle-logdb: the same with the event log in a SQLite
#              database of its own (another file), shipped from the outbox;
#              the line also says how many events were left in the outbox
#              when the load ended (the shipper behind)
# Usage: A=DIR B=DIR [KINDS="submit cycle cycle-sub"] [ROUNDS=3] [SECS=8] [CORES=0,1]
#        bench/ab-report.sh
# where DIR holds a release ixn-server (e.g. a worktree's target/release).
# The bench and ixnctl are this checkout's release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=DIR of the first ixn-server}" "${B:?B=DIR of the second ixn-server}"
kinds=${KINDS:-submit cycle cycle-sub}
rounds=${ROUNDS:-3}
secs=${SECS:-8}
out=${OUT:-/tmp/ixn-ab-report}
rm -rf "$out" && mkdir -p "$out"
cargo build --release -q -p ixn -p ixn-bench
bench=target/release/ixn-bench
"$bench" gen-config --agents 1000 --capacity 3 > "$out/agents.toml"
printf '\n[logger-settings]\n' > "$out/log.toml"
cat "$out/agents.toml" "$out/log.toml" > "$out/agents-log.toml"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); A=$A B=$B"
port=7450
run() { # build dir kind round
  local name=$1 bin=$2/ixn-server kind=$3 round=$4 dir=$out/$1-$3-$4 cfg=() w=""
  mkdir -p "$dir"
  port=$((port + 1))
  case $kind in
    submit) ;;
    submit-log) cfg=(--config "$out/log.toml") ;;
    cycle-log) cfg=(--config "$out/agents-log.toml") ;;
    submit-logdb | cycle-logdb)
      local cs="Driver=SQLite3;Database=$dir/eventlog.db;JournalMode=WAL;SyncPragma=FULL;Timeout=10000;StepAPI=1;"
      if [ "$kind" = submit-logdb ]; then cat "$out/log.toml" > "$dir/cfg.toml"; else cat "$out/agents-log.toml" > "$dir/cfg.toml"; fi
      echo "connection-string = \"$cs\"" >> "$dir/cfg.toml"
      cfg=(--config "$dir/cfg.toml") ;;
    *) cfg=(--config "$out/agents.toml") ;;
  esac
  "$bin" "${cfg[@]}" --listen "127.0.0.1:$port" --data-dir "$dir/data" --cores "${CORES:-0,1}" > "$dir/server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do grep -q 'ready' "$dir/server.log" 2>/dev/null && break; sleep 0.1; done
  if [ "$kind" = cycle-sub ]; then
    target/release/ixnctl --server "127.0.0.1:$port" --json watch > /dev/null 2> "$dir/watch.err" &
    w=$!
    sleep 0.5
  fi
  if [ "${kind%-log*}" = submit ]; then
    "$bench" submit --server "127.0.0.1:$port" --clients 8 --window 64 --duration "$secs" --json "$dir/r.json" > "$dir/bench.txt" 2>&1
  else
    "$bench" cycle --server "127.0.0.1:$port" --agents 1000 --media-servers 4 --window 64 --duration "$secs" \
      --handle-ms 0 --json "$dir/r.json" > "$dir/bench.txt" 2>&1
  fi
  [ -n "$w" ] && kill "$w"
  local left=""
  if [ "${kind%-logdb}" != "$kind" ]; then
    left="; outbox at the end: $(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM ixn_event_outbox").fetchone()[0])' "$dir/data/ixn.db" 2>&1)"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-2s %-9s round %s: %s%s\n' "$name" "$kind" "$round" "$(grep -E '^(submit|cycle):' "$dir/bench.txt" | sed -E 's/ \(1000 agents[^;]*;/;/; s/, p99\.9.*//; s/ack latency //; s/submit->invite //')" "$left"
}
# A first in odd rounds, B first in even ones: what runs second on a warm
# machine gains nothing over the other.
for round in $(seq "$rounds"); do
  for kind in $kinds; do
    if [ $((round % 2)) = 1 ]; then
      run A "$A" "$kind" "$round"
      run B "$B" "$kind" "$round"
    else
      run B "$B" "$kind" "$round"
      run A "$A" "$kind" "$round"
    fi
  done
done
