#!/usr/bin/env bash
# Console benchmark: server time of the console's pages on BENCH_CHATS generated chats
# (default 1,000,000), warm, with DuckDB answering the search page's question on the same
# Parquet files in the same run:
#   home         today and the last 7 days on every site, per-day chart, ingest state;
#   search       the first page (50 rows and the total) for one site and month;
#   free text    a phrase over every chat's lines (the feed's $search), first page;
#   chat         one chat's page: transcript, header, surveys, visit, holds;
#   versions     that chat's versions, read from the archive (a scan of it).
#
# Environment: BENCH_CHATS, BENCH_SEED (1), BENCH_PROFILE (release; `dev` reuses the test
# build), CHATVAULT_BENCH_DIR (/tmp/chatvault-bench), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=console-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
"$VENV/bin/python" -c 'import requests' 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check requests

DIR=$(bench_store)
KEY=$("$CV" keys create --data-dir "$DIR" --name console-bench --scope admin | tail -1)

start_service "$DIR" console

log "measuring (load $(load1))"
"$PY" "$ROOT/benches/console_bench.py" "http://127.0.0.1:$PORT" "$KEY" "$DIR/store" "$(bench_ndjson)" \
    "$CHATS" "$BENCH_PROFILE" || die "benchmark failed"
log "load after: $(load1)"
