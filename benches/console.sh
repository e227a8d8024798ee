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

log "starting the service"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CHATVAULT_LOG=warn "$CV" serve --data-dir "$DIR" --listen "127.0.0.1:$PORT" >"$WORK/console-serve.out" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done

log "measuring (load $(load1))"
"$PY" "$ROOT/benches/console_bench.py" "http://127.0.0.1:$PORT" "$KEY" "$DIR/store" "$(bench_ndjson)" \
    "$CHATS" "$BENCH_PROFILE" || die "benchmark failed"
log "load after: $(load1)"
