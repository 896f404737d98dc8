#!/usr/bin/env bash
# ixn on PostgreSQL on a database that has run for a while: a fresh
# throwaway PostgreSQL (.ci/pg on port 54372), the schema from
# storage/sql/postgresql/isdb.sql, ixn on one shard; four peak whole-cycle
# runs of 8 s one after another, then one at 3000 cycles/s; then the
# table's size and its live and dead rows.
# Usage: [NAPTIME=5s] bench/pg-used-report.sh [DIR of ixn-server, default target/release]
# NAPTIME sets autovacuum_naptime (ALTER SYSTEM) before the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release}/ixn-server
cargo build --release -q -p ixn -p ixn-bench
out=$(mktemp -d /tmp/ixn-pg-used.XXXX)
IXN_PG_PORT=54372 .ci/pg stop >/dev/null 2>&1 || true
conn=$(IXN_PG_PORT=54372 .ci/pg start)
psql=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/psql
$psql -q -h 127.0.0.1 -p 54372 -U postgres -d ixn_test -f storage/sql/postgresql/isdb.sql > /dev/null
if [ -n "${NAPTIME:-}" ]; then $psql -q -h 127.0.0.1 -p 54372 -U postgres -d ixn_test -c "ALTER SYSTEM SET autovacuum_naptime = '$NAPTIME'" -c "SELECT pg_reload_conf()" > /dev/null; fi
target/release/ixn-bench gen-config --agents 1000 --capacity 3 | sed "s|^\[settings\]|[settings]\nconnection-string = \"$conn\"|" > $out/cfg.toml
$bin --config $out/cfg.toml --listen 127.0.0.1:7990 --data-dir "$out/data" --cores 0 > $out/server.log 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q ready $out/server.log && break; sleep 0.1; done
for i in 1 2 3 4; do
  r=$(target/release/ixn-bench cycle --server 127.0.0.1:7990 --agents 1000 --media-servers 4 --window 64 --duration 8 2>&1 | grep -o "= [0-9]*/s.*submit->invite p50 [0-9]* us, p99 [0-9]* us" | sed 's/(1000.*;//')
  echo "peak run $i: $r"
done
r=$(target/release/ixn-bench cycle --server 127.0.0.1:7990 --agents 1000 --media-servers 4 --window 64 --duration 8 --rate 3000 2>&1 | grep -o "= [0-9]*/s.*submit->invite p50 [0-9]* us, p99 [0-9]* us" | sed 's/(1000.*;//')
echo "3000/s after them: $r"
$psql -h 127.0.0.1 -p 54372 -U postgres -d ixn_test -tAc "SELECT 'table+index bytes ' || pg_total_relation_size('interactions') || ', live ' || n_live_tup || ', dead ' || n_dead_tup || ', inserted ' || n_tup_ins || ', updated ' || n_tup_upd || ', deleted ' || n_tup_del FROM pg_stat_user_tables WHERE relname = 'interactions'"
kill $pid; wait $pid 2>/dev/null || true
IXN_PG_PORT=54372 .ci/pg stop
rm -rf "$out"
