#!/usr/bin/env bash
# Stress check: the ready line follows the shards' start promptly.
#
# What it runs, STARTS times (default 200), with LOAD busy loops (default 4)
# competing for the CPU at nice NICE (default 0; negative values, as root,
# make the competing load win more often):
#   ixn-server (2 shards on cores 0,1, a fresh embedded SQLite data dir, or
#   ENGINE=pg: PostgreSQL from .ci/pg), waits for its ready line, then
#   SIGTERM and waits for the exit.
# A start fails when the ready line takes more than READY_S seconds (default
# 10) from the moment the last shard logged 1010 (shard started), when no
# ready line comes within READY_S + 60 s, or when the server does not stop
# within 20 s of SIGTERM.
# The server logs at IXN_LOG=info,ixn=debug,odbc_api=error, so that each
# wake by the watchdog (1013) is counted.
# Output: one line per failed start, a progress line every 50 starts, and a
# last line `PASS: N starts, 0 failed, slowest ready X ms after the last
# 1010; ...` or `FAIL: K of N starts failed ...`; exit status 0 or 1. Logs
# of failed starts, and of starts slower than SLOW_MS (default 500), are
# kept under $OUT (default /tmp/ixn-start-stress).
# Usage: [BIN=DIR] [STARTS=200] [LOAD=4] [NICE=0] [ENGINE=sqlite|pg] [PROFILE=release|debug] bench/start-stress.sh
set -uo pipefail
cd "$(dirname "$0")/.."
starts=${STARTS:-200}
load=${LOAD:-4}
nice_=${NICE:-0}
ready_s=${READY_S:-10}
slow_ms=${SLOW_MS:-500}
engine=${ENGINE:-sqlite}
profile=${PROFILE:-release}
out=${OUT:-/tmp/ixn-start-stress}
port=${PORT:-17333}
rm -rf "$out"
mkdir -p "$out"
# BIN=DIR runs the binaries in DIR as they are (no build), e.g. a saved
# build of an older commit to compare with.
if [ -n "${BIN:-}" ]; then
  bin=$BIN
elif [ "$profile" = release ]; then
  cargo build --release -q -p ixn || exit 1
  bin=target/release
else
  cargo build -q -p ixn || exit 1
  bin=target/debug
fi

settings=""
if [ "$engine" = pg ]; then
  base=$(.ci/pg start) || exit 1
  settings=$(printf '[settings]\nconnection-string = "%s"\n' "$base")
fi

loaders=()
for _ in $(seq "$load"); do nice -n "$nice_" sh -c 'while :; do :; done' & loaders+=($!); done
server=""
trap 'for p in "${loaders[@]}"; do kill "$p" 2>/dev/null; done; [ -n "$server" ] && kill -9 "$server" 2>/dev/null' EXIT

# Milliseconds between the last "shard started" line and the ready line,
# from the log's own timestamps (the ready line is logged as 1002).
ready_gap_ms() {
  python3 - "$1" <<'EOF'
import sys, re, datetime
t = lambda l: datetime.datetime.fromisoformat(l.split()[0].replace('Z', '+00:00'))
lines = open(sys.argv[1], errors='replace').read().splitlines()
started = [t(l) for l in lines if 'msg_id=1010' in l]
ready = [t(l) for l in lines if 'msg_id=1002' in l]
print(int((ready[0] - max(started)).total_seconds() * 1000) if started and ready else -1)
EOF
}

failed=0
slow=0
woken=0
slowest=0
for n in $(seq "$starts"); do
  dir="$out/start$n"
  mkdir -p "$dir"
  printf '[server]\nlisten = "127.0.0.1:%s"\ncores = "0,1"\ndata-dir = "%s"\n%s\n' "$port" "$dir/data" "$settings" > "$dir/ixn.toml"
  : > "$dir/server.out"
  IXN_LOG=info,ixn=debug,odbc_api=error "$bin/ixn-server" --config "$dir/ixn.toml" > "$dir/server.out" 2> "$dir/server.log" &
  server=$!
  ok=1
  keep=0
  for _ in $(seq $(((ready_s + 60) * 20))); do
    grep -q "ready: listening" "$dir/server.out" && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q "ready: listening" "$dir/server.out"; then
    echo "start $n: no ready line (server $(kill -0 "$server" 2>/dev/null && echo running || echo exited))"; ok=0
  else
    gap=$(ready_gap_ms "$dir/server.log")
    [ "$gap" -gt "$slowest" ] && slowest=$gap
    if [ "$gap" -lt 0 ] || [ "$gap" -gt $((ready_s * 1000)) ]; then
      echo "start $n: ready line $gap ms after the last shard started"; ok=0
    elif [ "$gap" -gt "$slow_ms" ]; then
      slow=$((slow + 1)); keep=1
    fi
  fi
  kill -TERM "$server" 2>/dev/null
  for _ in $(seq 400); do kill -0 "$server" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$server" 2>/dev/null; then
    echo "start $n: still running 20 s after SIGTERM"; ok=0; kill -9 "$server"
  fi
  wait "$server" 2>/dev/null
  server=""
  grep -q "msg_id=1013" "$dir/server.log" && woken=$((woken + 1))
  [ "$ok" = 1 ] || failed=$((failed + 1))
  [ "$ok" = 1 ] && [ "$keep" = 0 ] && rm -rf "$dir"
  [ $((n % 50)) = 0 ] && echo "... $n starts, $failed failed, slowest ready ${slowest} ms after the last 1010"
done
summary="slowest ready ${slowest} ms after the last 1010; $slow over $slow_ms ms; the watchdog woke a shard in $woken starts ($load busy loops at nice $nice_, $engine)"
if [ "$failed" = 0 ]; then
  echo "PASS: $starts starts, 0 failed, $summary"
  exit 0
fi
echo "FAIL: $failed of $starts starts failed, $summary; logs under $out"
exit 1
