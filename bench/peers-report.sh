#!/usr/bin/env bash
# ixn beside its peers, in one run, on this machine: the same durable
# workloads against each system, round after round, each system once per
# round (so drift on a shared machine hits all alike).
#
#   enqueue:  8 producers x window 64, acknowledged = durable
#   cycle:    the same producers, one consumer taking and acknowledging
#             (ixn: 1,000 agents x 3 accept and stop what the built-in
#             strategy offers; a peer: take, then delete/ack); the queue is
#             kept short (producers wait past producers x window)
#   half:     cycle at half of the rate the system reached in this round's
#             cycle: latency at a load it carries
#
# Systems (durability: acknowledged = fsync'd):
#   ixn        embedded SQLite (SyncPragma FULL), 2 shards on cores 0,1
#   redis      Redis from the distribution, appendonly yes, appendfsync
#              always; LPUSH, LMOVE (BLMOVE when empty) + LREM; pipelined
#   postgres   a throwaway PostgreSQL (.ci/pg, fsync and synchronous_commit
#              on), through ODBC: INSERT of one row per commit; DELETE ...
#              FOR UPDATE SKIP LOCKED LIMIT 1 RETURNING, one commit per take
#   pg-b64     the same with 64 rows per INSERT and per take (batching)
#   rabbitmq-classic, rabbitmq-quorum
#              RabbitMQ from the distribution, one broker per round on
#              loopback, the queue deleted and declared again for each
#              measurement: durable queue, persistent messages, publisher
#              confirms (64 unconfirmed per producer), manual acks with
#              prefetch 64
#
# For every system and workload: rate, latency percentiles, items lost and
# duplicated (read back after the load), the server's CPU over the run
# (/proc/PID/stat, all threads) and the load generator's (bash `times` of
# the bench process), so a reader can see the generator was not the limit.
#
# Usage: [ROUNDS=3] [SECS=10] [OUT=/tmp/ixn-peers] bench/peers-report.sh
# Installs redis-server with apt-get when it is missing (needs root), never
# at test time. Writes $OUT/results.json (one object per system, workload
# and round) and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
secs=${SECS:-10}
out=${OUT:-/tmp/ixn-peers}
rm -rf "$out" && mkdir -p "$out"

for pkg in redis-server rabbitmq-server; do
  if ! command -v "$pkg" > /dev/null; then
    echo "installing $pkg (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >> "$out/apt.log" 2>&1
  fi
done
cargo build --release -q -p ixn -p ixn-bench
bench=$PWD/target/release/ixn-bench
server=$PWD/target/release/ixn-server
"$bench" gen-config --agents 1000 --capacity 3 > "$out/agents.toml"

cpu_s() { # CPU seconds of process $1 so far, all threads, with its children
  # alive (PostgreSQL's backends) and those it reaped (cutime, cstime)
  local pid=$1
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" -v pid="$pid" '
    { p = $1; s = $0; sub(/.*\) /, "", s); split(s, f, " ") }
    p == pid { t += f[12] + f[13] + f[14] + f[15] }
    f[2] == pid { t += f[12] + f[13] }
    END { printf "%.2f", t / hz }'
}
wait_ready() { # file pattern
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

port=7460
start_ixn() { # dir config... ; sets pid and addr
  port=$((port + 1)); addr=127.0.0.1:$port
  "$server" "${@:2}" --listen "$addr" --data-dir "$1/data" --cores 0,1 > "$1/server.log" 2>&1 &
  pid=$!
  wait_ready "$1/server.log" "ixn-server ready"
}
start_redis() { # dir ; sets pid and addr
  port=$((port + 1)); addr=127.0.0.1:$port
  redis-server --port "$port" --bind 127.0.0.1 --dir "$1" --appendonly yes --appendfsync always --save "" \
    --daemonize no > "$1/server.log" 2>&1 &
  pid=$!
  wait_ready "$1/server.log" "Ready to accept connections"
}
rmq=$out/rabbitmq
start_rabbitmq() { # one broker for the round; sets rpid and amqp
  rm -rf "$rmq" && mkdir -p "$rmq"
  echo "[]." > "$rmq/enabled_plugins"
  echo "listeners.tcp.default = 127.0.0.1:5681" > "$rmq/rabbitmq.conf"
  HOME=$rmq RABBITMQ_NODENAME=ixnbench@localhost RABBITMQ_DIST_PORT=25681 RABBITMQ_MNESIA_BASE=$rmq/mnesia \
    RABBITMQ_LOG_BASE=$rmq/log RABBITMQ_CONFIG_FILE=$rmq/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$rmq/enabled_plugins \
    /usr/lib/rabbitmq/bin/rabbitmq-server > "$rmq/server.log" 2>&1 &
  wait_ready "$rmq/server.log" "completed with"
  rpid=$(pgrep -f "beam.*-home $rmq" | head -1)
  amqp=amqp://guest:guest@127.0.0.1:5681/%2f
}
stop_rabbitmq() { kill "$rpid" 2>/dev/null; for _ in $(seq 100); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done; }

start_pg() { # dir ; sets pid and conn (a fresh database each time)
  IXN_PG_PORT=54371 .ci/pg stop
  conn=$(IXN_PG_PORT=54371 .ci/pg start)
  pid=$(head -1 /tmp/ixn-pg-54371/postmaster.pid)
  pg=1
}
stop() {
  if [ -n "${pg:-}" ]; then IXN_PG_PORT=54371 .ci/pg stop; pg=; pid=; return; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
pid=
rpid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$rpid" ] && kill "$rpid" 2>/dev/null; IXN_PG_PORT=54371 .ci/pg stop 2>/dev/null' EXIT

# One measurement: run the load command, record the server's and the
# bench's CPU into the result JSON the bench wrote.
measure() { # dir system workload command...
  local dir=$1 system=$2 workload=$3 c0 c1 t
  shift 3
  c0=$(cpu_s "$pid")
  TIMEFORMAT='%U %S'
  t=$( { time "$@" > "$dir/bench.txt" 2>&1; } 2>&1 ) || { echo "FAILED: $system $workload (see $dir)"; cat "$dir/bench.txt"; exit 1; }
  c1=$(cpu_s "$pid")
  python3 - "$dir/r.json" "$system" "$workload" "$c0" "$c1" "$t" "$round" >> "$out/results.jsonl" << 'EOF'
import json, sys
path, system, workload, c0, c1, t, rnd = sys.argv[1:]
r = json.load(open(path))
user, sys_ = (float(x) for x in t.split())
rate = r.get("cycles_per_sec") or r.get("ops_per_sec")
# The load phase's CPU where the bench measured it (not its read-back);
# else the whole command's.
r.update(system=system, workload=workload, round=int(rnd), rate=rate,
         duplicated=r.get("duplicated", 0))
if r.get("server_cpu_s") is None:
    r["server_cpu_s"] = float(c1) - float(c0)
if r.get("bench_cpu_s") is None:
    r["bench_cpu_s"] = user + sys_
print(json.dumps(r))
EOF
  tail -1 "$out/results.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  %-17s %-8s %9.0f/s  p50 %7d us  p99 %7d us  lost %s  dup %s  server CPU %.1f s  bench CPU %.1f s" % (
    r["system"], r["workload"], r["rate"], r["p50_us"], r["p99_us"], r["lost"], r["duplicated"],
    r["server_cpu_s"], r["bench_cpu_s"]))'
}
rate_of() { # system workload round -> the rate measured
  python3 -c "import json,sys
for l in open('$out/results.jsonl'):
    r=json.loads(l)
    if r['system']=='$1' and r['workload']=='$2' and r['round']==$3: print(int(r['rate']))"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3); RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server); $("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/postgres" --version)"
for round in $(seq "$rounds"); do
  echo "round $round"
  # ixn
  d=$out/ixn-enqueue-$round; mkdir -p "$d"; start_ixn "$d"
  measure "$d" ixn enqueue "$bench" submit --server "$addr" --server-pid "$pid" --clients 8 --window 64 --duration "$secs" --json "$d/r.json"
  stop
  d=$out/ixn-cycle-$round; mkdir -p "$d"; start_ixn "$d" --config "$out/agents.toml"
  measure "$d" ixn cycle "$bench" cycle --server "$addr" --server-pid "$pid" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --json "$d/r.json"
  stop
  half=$(( $(rate_of ixn cycle "$round") / 2 ))
  d=$out/ixn-half-$round; mkdir -p "$d"; start_ixn "$d" --config "$out/agents.toml"
  measure "$d" ixn half "$bench" cycle --server "$addr" --server-pid "$pid" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --rate "$half" --json "$d/r.json"
  stop
  # Redis
  for w in enqueue cycle; do
    d=$out/redis-$w-$round; mkdir -p "$d"; start_redis "$d"
    measure "$d" redis "$w" "$bench" peer redis --addr "$addr" --server-pid "$pid" --workload "$w" --producers 8 --window 64 \
      --duration "$secs" --json "$d/r.json"
    stop
  done
  half=$(( $(rate_of redis cycle "$round") / 2 ))
  d=$out/redis-half-$round; mkdir -p "$d"; start_redis "$d"
  measure "$d" redis half "$bench" peer redis --addr "$addr" --server-pid "$pid" --workload cycle --producers 8 --window 64 \
    --duration "$secs" --rate "$half" --json "$d/r.json"
  stop
  # RabbitMQ, classic then quorum, on one broker
  start_rabbitmq
  for kind in classic quorum; do
    for w in enqueue cycle; do
      d=$out/rabbitmq-$kind-$w-$round; mkdir -p "$d"; pid=$rpid
      measure "$d" "rabbitmq-$kind" "$w" "$bench" peer "rabbitmq-$kind" --addr "$amqp" --server-pid "$rpid" --workload "$w" --producers 8 \
        --window 64 --duration "$secs" --json "$d/r.json"
    done
    half=$(( $(rate_of "rabbitmq-$kind" cycle "$round") / 2 ))
    d=$out/rabbitmq-$kind-half-$round; mkdir -p "$d"; pid=$rpid
    measure "$d" "rabbitmq-$kind" half "$bench" peer "rabbitmq-$kind" --addr "$amqp" --server-pid "$rpid" --workload cycle --producers 8 \
      --window 64 --duration "$secs" --rate "$half" --json "$d/r.json"
  done
  pid=
  stop_rabbitmq
  rpid=
  # PostgreSQL, one row per commit, then 64
  for b in 1 64; do
    name=postgres; [ "$b" = 64 ] && name=pg-b64
    for w in enqueue cycle; do
      d=$out/$name-$w-$round; mkdir -p "$d"; start_pg
      measure "$d" "$name" "$w" "$bench" peer postgres --addr "$conn" --workload "$w" --producers 8 --batch "$b" \
        --duration "$secs" --json "$d/r.json"
      stop
    done
    half=$(( $(rate_of "$name" cycle "$round") / 2 ))
    d=$out/$name-half-$round; mkdir -p "$d"; start_pg
    measure "$d" "$name" half "$bench" peer postgres --addr "$conn" --workload cycle --producers 8 --batch "$b" \
      --duration "$secs" --rate "$half" --json "$d/r.json"
    stop
  done
done

python3 - "$out" << 'EOF'
import json, statistics, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
json.dump(rows, open(f"{out}/results.json", "w"), indent=1)
print("\nmedians over the rounds (per system and workload); CPU per operation = server CPU / operations")
print(f"{'system':<18}{'workload':<10}{'rate/s':>10}{'p50 us':>10}{'p99 us':>10}{'lost':>6}{'dup':>5}{'srv CPU us/op':>15}{'bench CPU s':>13}")
for system in dict.fromkeys(r["system"] for r in rows):
    for w in ("enqueue", "cycle", "half"):
        rs = [r for r in rows if r["system"] == system and r["workload"] == w]
        if not rs:
            continue
        med = lambda k: statistics.median(r[k] for r in rs)
        ops = [r.get("completed") or r.get("acked") or r.get("count") or 0 for r in rs]
        cpu_per_op = statistics.median(r["server_cpu_s"] * 1e6 / max(o, 1) for r, o in zip(rs, ops))
        print(f"{system:<18}{w:<10}{med('rate'):>10.0f}{med('p50_us'):>10.0f}{med('p99_us'):>10.0f}"
              f"{sum(r['lost'] or 0 for r in rs):>6}{sum(r['duplicated'] or 0 for r in rs):>5}{cpu_per_op:>15.1f}{med('bench_cpu_s'):>13.1f}")
print(f"\nevery measurement: {out}/results.json")
EOF
