#!/usr/bin/env bash
# Plain TCP and TLS side by side: ROUNDS rounds, in each a fresh server
# (embedded SQLite, its default cores) listening on a plain and a TLS port,
# loaded on one port then the other (the order alternates by round) by
# `ixn-bench submit --clients 8 --window 64` (SCENARIO=submit, the default)
# or by `ixn-bench cycle --agents 10` (SCENARIO=cycle: the embedded
# default's ten agents, every desktop and media server over the same
# transport). A throwaway CA and server certificate (ECDSA P-256) are made
# with openssl.
# Usage: [ROUNDS=3] [SECS=8] [CORES=all] [SCENARIO=submit|cycle] bench/tls-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}; secs=${SECS:-8}; cores=${CORES:-all}; scenario=${SCENARIO:-submit}
out=$(mktemp -d /tmp/ixn-tls.XXXX)
cargo build --release -q -p ixn -p ixn-bench
bench=target/release/ixn-bench
(
  cd "$out"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj /CN=ixn-bench-ca -days 2 -out ca.pem 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
  openssl req -new -key server.key -subj /CN=localhost -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem 2>/dev/null
)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); cores=$cores, ${secs} s runs of $scenario"
port=7800
for r in $(seq "$rounds"); do
  order="plain tls"; [ $((r % 2)) -eq 0 ] && order="tls plain"
  for kind in $order; do
    port=$((port + 2)); rm -rf "$out/data"
    printf '[server]\nlisten = "127.0.0.1:%s"\ntls-listen = "127.0.0.1:%s"\ndata-dir = "%s"\ncores = "%s"\ntls-certificate = "%s/server.pem"\ntls-key = "%s/server.key"\nmanagement-listen = "off"\n' \
      "$port" "$((port + 1))" "$out/data" "$cores" "$out" "$out" > "$out/ixn.toml"
    target/release/ixn-server --config "$out/ixn.toml" > "$out/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do grep -q 'ixn-server ready' "$out/server.log" 2>/dev/null && break; sleep 0.1; done
    if [ "$kind" = tls ]; then
      args=(--server "127.0.0.1:$((port + 1))" --tls-ca "$out/ca.pem")
    else
      args=(--server "127.0.0.1:$port")
    fi
    if [ "$scenario" = cycle ]; then
      res=$("$bench" cycle "${args[@]}" --agents 10 --duration "$secs" --server-pid "$pid" --json "$out/$kind-$r.json" 2>"$out/bench.err" \
        | grep -o "= [0-9]*/s .*submit->invite p50 [0-9]* us, p99 [0-9]* us" | sed 's/ (.*);/;/')
      cpu=$(python3 -c "import json; d=json.load(open('$out/$kind-$r.json')); print('%.1f' % (d['server_cpu_s'] / d['completed'] * 1e6))")
      echo "round $r $kind $res; server CPU $cpu us per cycle"
    else
      res=$("$bench" submit "${args[@]}" --clients 8 --window 64 --duration "$secs" --server-pid "$pid" --json "$out/$kind-$r.json" 2>"$out/bench.err" \
        | grep -o "= [0-9]*/s; ack latency p50 [0-9]* us, p99 [0-9]* us")
      cpu=$(python3 -c "import json; d=json.load(open('$out/$kind-$r.json')); print('%.1f' % (d['server_cpu_s'] / d['acked'] * 1e6))")
      echo "round $r $kind $res; server CPU $cpu us per submit"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
rm -rf "$out"
