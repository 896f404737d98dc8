#!/usr/bin/env bash
# Insert strategies side by side: ROUNDS rounds, in each every strategy once
# on the embedded SQLite and (with IXN_TEST_PG set to a connection string,
# e.g. "$(.ci/pg start)") on PostgreSQL, alternating, so drift on a shared
# machine hits all alike. Prints rows/s of the inserts and of the upserts of
# the same rows.
#
# Usage: [ROUNDS=3] [ROWS=100000] [STRATEGIES="multirow json"] perf/strategy-rounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ixn-perf
perf=target/release/ixn-perf
rows=${ROWS:-100000}
for r in $(seq "${ROUNDS:-3}"); do
  for s in ${STRATEGIES:-multirow json}; do
    echo "sqlite $s round $r: $("$perf" storage --rows "$rows" --op upsert --strategy "$s" 2>&1 | grep -E 'inserts:|upserts:' | awk '{print $2}' | tr '\n' ' ')"
    if [ -n "${IXN_TEST_PG:-}" ]; then
      echo "pg $s round $r: $("$perf" storage --connection-string "$IXN_TEST_PG" --rows "$rows" --op upsert --strategy "$s" 2>&1 | grep -E 'inserts:|upserts:' | awk '{print $2}' | tr '\n' ' ')"
    fi
  done
done
