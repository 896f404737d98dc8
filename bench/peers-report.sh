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
#   ixn        embedded SQLite (SyncPragma FULL), a shard on every core but
#              the last (IXN_CORES overrides: on 2 cores one shard, on core 0)
#   ixn-log    the same with the event log on (an empty [logger-settings]:
#              every reporting event stored in the main database with its
#              change)
#   ixn-pg     the same server on a fresh throwaway PostgreSQL (.ci/pg,
#              the json insert strategy, IXN_PG_WRITERS writers: by
#              default 1 on 2 cores, where PostgreSQL shares them, else
#              5); PostgreSQL's CPU counts as the server's
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
# the bench process), so a reader can see the generator was not the limit,
# and the flushes: fsync and fdatasync calls of every process on the
# machine during the run (perf stat -a on the syscall tracepoints), so
# "acknowledged = flushed" can be checked (operations per flush).
#
# Usage: [ROUNDS=3] [SECS=10] [OUT=/tmp/ixn-peers]
#        [SYSTEMS="ixn ixn-log ixn-pg redis rabbitmq postgres"] bench/peers-report.sh
# Installs redis-server, rabbitmq-server and linux-perf with apt-get when
# missing (needs root), never at test time. Writes $OUT/results.json (one
# object per system, workload and round) and $OUT/report.html (bars of the
# medians, then every run), and prints a table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
secs=${SECS:-10}
out=${OUT:-/tmp/ixn-peers}
systems=" ${SYSTEMS:-ixn ixn-log ixn-pg redis rabbitmq postgres} "
# Every core but one, the rule of tuning.md ("Cores"): the last one is left
# to the writers, the database and the bench.
ncores=$(nproc)
ixn_cores=${IXN_CORES:-$([ "$ncores" -le 2 ] && echo 0 || echo "0-$((ncores - 2))")}
pg_writers=${IXN_PG_WRITERS:-$([ "$ncores" -le 2 ] && echo 1 || echo 5)}
want() { [[ $systems == *" $1 "* ]]; }
rm -rf "$out" && mkdir -p "$out"

for pkg in redis-server rabbitmq-server perf:linux-perf; do
  if ! command -v "${pkg%%:*}" > /dev/null; then
    echo "installing ${pkg#*:} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkg#*:}" >> "$out/apt.log" 2>&1
  fi
done
cargo build --release -q -p ixn -p ixn-bench
bench=$PWD/target/release/ixn-bench
server=$PWD/target/release/ixn-server
"$bench" gen-config --agents 1000 --capacity 3 > "$out/agents.toml"
printf '\n[logger-settings]\n' > "$out/log.toml"
cat "$out/agents.toml" "$out/log.toml" > "$out/agents-log.toml"

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
  "$server" "${@:2}" --listen "$addr" --data-dir "$1/data" --cores "$ixn_cores" > "$1/server.log" 2>&1 &
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
start_ixn_pg() { # dir ; ixn on a fresh PostgreSQL: sets pid (ixn), extra (PostgreSQL) and addr
  start_pg "$1"
  extra=$pid
  "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql" -q -h 127.0.0.1 -p 54371 -U postgres -d ixn_test \
    -f storage/sql/postgresql/isdb.sql > "$1/schema.log" 2>&1
  sed "s|^\[settings\]|[settings]\nconnection-string = \"$conn\"\nnumber-of-database-connections = $pg_writers|" \
    "$out/agents.toml" > "$1/ixn-pg.toml"
  start_ixn "$1" --config "$1/ixn-pg.toml"
}
stop() {
  # ixn on PostgreSQL: ixn first, then PostgreSQL (start_pg set pg).
  if [ -n "${extra:-}" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; extra=; pid=; fi
  if [ -n "${pg:-}" ]; then IXN_PG_PORT=54371 .ci/pg stop; pg=; pid=; return; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
extra=
pid=
rpid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$rpid" ] && kill "$rpid" 2>/dev/null; IXN_PG_PORT=54371 .ci/pg stop 2>/dev/null' EXIT

# One measurement: run the load command, record the server's and the
# bench's CPU into the result JSON the bench wrote, and count the flushes
# (fsync and fdatasync calls, every process on the machine, from the start
# of the command to its end, read-back included) with perf.
measure() { # dir system workload command...
  local dir=$1 system=$2 workload=$3 c0 c1 t e0=0 e1=0 perfpid
  shift 3
  c0=$(cpu_s "$pid")
  [ -n "$extra" ] && e0=$(cpu_s "$extra")
  perf stat -a -x, -o "$dir/flushes.csv" -e syscalls:sys_enter_fsync -e syscalls:sys_enter_fdatasync 2> "$dir/perf.err" &
  perfpid=$!
  sleep 0.2
  TIMEFORMAT='%U %S'
  t=$( { time "$@" > "$dir/bench.txt" 2>&1; } 2>&1 ) || { echo "FAILED: $system $workload (see $dir)"; cat "$dir/bench.txt"; exit 1; }
  kill -INT "$perfpid" 2>/dev/null; wait "$perfpid" 2>/dev/null || true
  c1=$(cpu_s "$pid")
  [ -n "$extra" ] && e1=$(cpu_s "$extra")
  python3 - "$dir" "$system" "$workload" "$c0" "$c1" "$t" "$round" "$e0" "$e1" >> "$out/results.jsonl" << 'EOF'
import json, sys
dir, system, workload, c0, c1, t, rnd, e0, e1 = sys.argv[1:]
r = json.load(open(f"{dir}/r.json"))
user, sys_ = (float(x) for x in t.split())
rate = r.get("cycles_per_sec") or r.get("ops_per_sec")
# The load phase's CPU where the bench measured it (not its read-back);
# else the whole command's. The database ixn runs on counts as its server.
r.update(system=system, workload=workload, round=int(rnd), rate=rate,
         duplicated=r.get("duplicated", 0))
if r.get("server_cpu_s") is None:
    r["server_cpu_s"] = float(c1) - float(c0) + float(e1) - float(e0)
if r.get("bench_cpu_s") is None:
    r["bench_cpu_s"] = user + sys_
flushes = None
try:
    counts = [l.split(",") for l in open(f"{dir}/flushes.csv") if "syscalls:" in l]
    flushes = sum(int(c[0]) for c in counts if c[0].isdigit())
except OSError:
    pass
r["flushes"] = flushes
print(json.dumps(r))
EOF
  tail -1 "$out/results.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  %-17s %-8s %9.0f/s  p50 %7d us  p99 %7d us  lost %s  dup %s  server CPU %.1f s  bench CPU %.1f s  flushes %s" % (
    r["system"], r["workload"], r["rate"], r["p50_us"], r["p99_us"], r["lost"], r["duplicated"],
    r["server_cpu_s"], r["bench_cpu_s"], r["flushes"]))'
}
rate_of() { # system workload round -> the rate measured
  python3 -c "import json,sys
for l in open('$out/results.jsonl'):
    r=json.loads(l)
    if r['system']=='$1' and r['workload']=='$2' and r['round']==$3: print(int(r['rate']))"
}

echo "machine: $(nproc) cores (ixn on cores $ixn_cores, $pg_writers writer(s) on PostgreSQL), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3); RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server); $("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/postgres" --version)"
for round in $(seq "$rounds"); do
  echo "round $round"
  for sys in ixn ixn-log; do
  want "$sys" || continue
  if [ "$sys" = ixn ]; then enq=(); cyc=(--config "$out/agents.toml")
  else enq=(--config "$out/log.toml"); cyc=(--config "$out/agents-log.toml"); fi
  d=$out/$sys-enqueue-$round; mkdir -p "$d"; start_ixn "$d" "${enq[@]}"
  measure "$d" "$sys" enqueue "$bench" submit --server "$addr" --server-pid "$pid" --clients 8 --window 64 --duration "$secs" --json "$d/r.json"
  stop
  d=$out/$sys-cycle-$round; mkdir -p "$d"; start_ixn "$d" "${cyc[@]}"
  measure "$d" "$sys" cycle "$bench" cycle --server "$addr" --server-pid "$pid" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --json "$d/r.json"
  stop
  half=$(( $(rate_of "$sys" cycle "$round") / 2 ))
  d=$out/$sys-half-$round; mkdir -p "$d"; start_ixn "$d" "${cyc[@]}"
  measure "$d" "$sys" half "$bench" cycle --server "$addr" --server-pid "$pid" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --rate "$half" --json "$d/r.json"
  stop
  done
  if want ixn-pg; then
  d=$out/ixn-pg-enqueue-$round; mkdir -p "$d"; start_ixn_pg "$d"
  measure "$d" ixn-pg enqueue "$bench" submit --server "$addr" --clients 8 --window 64 --duration "$secs" --json "$d/r.json"
  stop
  d=$out/ixn-pg-cycle-$round; mkdir -p "$d"; start_ixn_pg "$d"
  measure "$d" ixn-pg cycle "$bench" cycle --server "$addr" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --json "$d/r.json"
  stop
  half=$(( $(rate_of ixn-pg cycle "$round") / 2 ))
  d=$out/ixn-pg-half-$round; mkdir -p "$d"; start_ixn_pg "$d"
  measure "$d" ixn-pg half "$bench" cycle --server "$addr" --agents 1000 --media-servers 4 --window 64 \
    --duration "$secs" --handle-ms 0 --rate "$half" --json "$d/r.json"
  stop
  fi
  if want redis; then
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
  fi
  if want rabbitmq; then
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
  fi
  if want postgres; then
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
  fi
done

python3 - "$out" "$secs" "$rounds" << 'EOF'
import html, json, statistics, sys
out, secs, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
json.dump(rows, open(f"{out}/results.json", "w"), indent=1)

def ops(r):
    return r.get("completed") or r.get("acked") or r.get("count") or 0

summary = []
for system in dict.fromkeys(r["system"] for r in rows):
    for w in ("enqueue", "cycle", "half"):
        rs = [r for r in rows if r["system"] == system and r["workload"] == w]
        if not rs:
            continue
        med = lambda f: statistics.median(f(r) for r in rs)
        flushed = [r for r in rs if r.get("flushes")]
        summary.append(dict(
            system=system, workload=w, rate=med(lambda r: r["rate"]), p50=med(lambda r: r["p50_us"]),
            p99=med(lambda r: r["p99_us"]), lost=sum(r["lost"] or 0 for r in rs),
            dup=sum(r["duplicated"] or 0 for r in rs),
            cpu_per_op=med(lambda r: r["server_cpu_s"] * 1e6 / max(ops(r), 1)),
            bench_cpu=med(lambda r: r["bench_cpu_s"]),
            ops_per_flush=statistics.median(ops(r) / r["flushes"] for r in flushed) if flushed else None))

print("\nmedians over the rounds (per system and workload); CPU per operation = server CPU / operations;")
print("ops/flush = operations acknowledged per fsync or fdatasync on the machine (read-back included, so a floor)")
print(f"{'system':<18}{'workload':<10}{'rate/s':>10}{'p50 us':>10}{'p99 us':>10}{'lost':>6}{'dup':>5}{'srv CPU us/op':>15}{'bench CPU s':>13}{'ops/flush':>11}")
for m in summary:
    opf = "-" if m["ops_per_flush"] is None else f"{m['ops_per_flush']:.1f}"
    print(f"{m['system']:<18}{m['workload']:<10}{m['rate']:>10.0f}{m['p50']:>10.0f}{m['p99']:>10.0f}"
          f"{m['lost']:>6}{m['dup']:>5}{m['cpu_per_op']:>15.1f}{m['bench_cpu']:>13.1f}{opf:>11}")

# The HTML report: the medians as bars per workload, then every run.
def bars(workload, key, label, fmt):
    ms = [m for m in summary if m["workload"] == workload]
    if not ms:
        return ""
    top = max(m[key] for m in ms) or 1
    h = 22
    svg = [f'<svg width="760" height="{h * len(ms) + 8}" role="img" aria-label="{html.escape(label)}">']
    for i, m in enumerate(ms):
        y = i * h + 4
        w = 460 * m[key] / top
        colour = "#2a6fdb" if m["system"].startswith("ixn") else "#8a8f98"
        svg.append(f'<text x="0" y="{y + 15}" font-size="13">{html.escape(m["system"])}</text>')
        svg.append(f'<rect x="150" y="{y + 2}" width="{w:.1f}" height="{h - 6}" fill="{colour}"/>')
        svg.append(f'<text x="{156 + w:.1f}" y="{y + 15}" font-size="13">{fmt(m[key])}</text>')
    svg.append("</svg>")
    return f"<h3>{html.escape(label)}</h3>" + "".join(svg)

cols = ["system", "workload", "round", "rate", "p50_us", "p99_us", "lost", "duplicated", "server_cpu_s", "bench_cpu_s", "flushes"]
page = ["<!doctype html><html><head><meta charset='utf-8'><title>ixn beside its peers</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,td:nth-child(2){text-align:left}</style>",
        "</head><body><h1>ixn beside its peers</h1>",
        f"<p>{rounds} round(s) of {secs:.0f} s per system and workload; medians over the rounds. "
        "Durable everywhere: acknowledged means flushed (fsync/fdatasync counted on the whole machine). "
        "enqueue: 8 producers x window 64; cycle: enqueue, take, acknowledge/delete (ixn: submit, invite, accept, stop); "
        "half: the cycle at half of the rate the system reached in the same round. See bench/peers-report.sh.</p>",
        bars("enqueue", "rate", "durable enqueue, per second", lambda v: f"{v:,.0f}"),
        bars("cycle", "rate", "whole cycles, per second", lambda v: f"{v:,.0f}"),
        bars("half", "p99", "p99 latency at half of its own peak, microseconds (shorter is better)", lambda v: f"{v:,.0f} us"),
        bars("cycle", "cpu_per_op", "server CPU per whole cycle, microseconds (shorter is better)", lambda v: f"{v:,.1f} us"),
        "<h2>Medians</h2><table><tr><th>system</th><th>workload</th><th>rate/s</th><th>p50 us</th><th>p99 us</th>"
        "<th>lost</th><th>dup</th><th>server CPU us/op</th><th>bench CPU s</th><th>ops per flush</th></tr>"]
for m in summary:
    opf = "-" if m["ops_per_flush"] is None else f"{m['ops_per_flush']:.1f}"
    page.append(f"<tr><td>{html.escape(m['system'])}</td><td>{m['workload']}</td><td>{m['rate']:,.0f}</td><td>{m['p50']:,.0f}</td>"
                f"<td>{m['p99']:,.0f}</td><td>{m['lost']}</td><td>{m['dup']}</td><td>{m['cpu_per_op']:.1f}</td>"
                f"<td>{m['bench_cpu']:.1f}</td><td>{opf}</td></tr>")
page.append("</table><h2>Every run</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
for r in rows:
    page.append("<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols) + "</tr>")
page.append("</table></body></html>")
open(f"{out}/report.html", "w").write("\n".join(page))
print(f"\nevery measurement: {out}/results.json; report: {out}/report.html")
EOF
