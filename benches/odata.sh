#!/usr/bin/env bash
# OData feed benchmark for Chatvault, with DuckDB as the yardstick, in one run:
#   first page  Chats filtered to one site and month, 6 columns, over HTTP with JSON,
#               against DuckDB answering the same question on the same Parquet files;
#   groupby     $apply=groupby((SiteKey),aggregate($count as Chats)) against GROUP BY;
#   stream      every row of Chats through @odata.nextLink (rows/s and server memory);
#   export      the whole Chats table as CSV over HTTP (saved by curl) against DuckDB's COPY ... TO csv.
#
# Environment: BENCH_CHATS (default 1000000), BENCH_SEED (1), CHATVAULT_BENCH_DIR
# (default /tmp/chatvault-bench), CARGO_TARGET_DIR (default ~/.cache/chatvault/target).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=odata-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
"$VENV/bin/python" -c 'import requests' 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check requests

DIR=$(bench_store)
KEY=$("$CV" keys create --data-dir "$DIR" --name bench --scope read | tail -1)

start_service "$DIR" odata

log "measuring (load $(load1))"
RESULT=$WORK/odata-results.json
"$PY" "$ROOT/benches/odata_bench.py" "http://127.0.0.1:$PORT/odata/" "$KEY" "$DIR/store" "$SERVER" >"$RESULT" || die "benchmark failed"
log "CSV export against DuckDB COPY (load $(load1))"
EXPORT=$WORK/export-results.json
"$PY" "$ROOT/benches/export_bench.py" "http://127.0.0.1:$PORT/" "$KEY" "$DIR/store" "$SERVER" "$WORK" >"$EXPORT" || die "export benchmark failed"
log "load after: $(load1)"
cat "$RESULT" "$EXPORT"
