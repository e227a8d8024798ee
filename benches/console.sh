#!/usr/bin/env bash
# Console benchmark: server time of the console's pages on BENCH_CHATS generated chats
# (default 1,000,000), warm, with DuckDB answering the search page's question on the same
# Parquet files in the same run:
#   home         today and the last 7 days on every site (a week of recent chats is added
#                to a copy of the store for it), per-day chart, ingest state;
#   search       the first page (50 rows and the total) for one site and month;
#   free text    a phrase over every chat's lines (the feed's $search), first page;
#   chat         one chat's page: transcript, header, surveys, visit, holds;
#   versions     that chat's versions, read from the archive (a scan of it).
#
# Environment: BENCH_CHATS, BENCH_SEED (1), BENCH_PROFILE (dist; `dev` reuses the test
# build), CHATVAULT_BENCH_DIR (/tmp/chatvault-bench), CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=console-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
"$VENV/bin/python" -c 'import requests' 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check requests

# The shared store's chats are from 2024, so its last seven days are empty. The console
# runs on a copy with a week of recent chats added (as many a week as the shared set has:
# CHATS / 52), made again on another day.
BASE_DIR=$(bench_store)
DIR=$WORK/dd-console-$CHATS-seed$SEED
TODAY=$(date -u +%F)
if [[ ! -f $DIR.complete-$TODAY ]]; then
    rm -rf "$DIR" "$DIR".complete-*
    log "copying the store to $DIR and adding a week of recent chats"
    cp -a "$BASE_DIR" "$DIR"
    RECENT=$WORK/console-recent-$TODAY.ndjson
    "$CV" gen --chats $((CHATS / 52)) --seed $((SEED + 7)) --start "$(date -u -d '6 days ago' +%F)" --days 7 \
        --out "$RECENT" >&2 || die "gen failed"
    "$CV" import --data-dir "$DIR" "$RECENT" >/dev/null 2>"$WORK/console-import.err" ||
        die "import failed: $(tail -5 "$WORK/console-import.err")"
    "$CV" compact --data-dir "$DIR" >/dev/null 2>&1 || die "compact failed"
    rm -f "$RECENT"
    touch "$DIR.complete-$TODAY"
fi
KEY=$("$CV" keys create --data-dir "$DIR" --name console-bench --scope admin | tail -1)

start_service "$DIR" console

log "measuring (load $(load1))"
"$PY" "$ROOT/benches/console_bench.py" "http://127.0.0.1:$PORT" "$KEY" "$DIR/store" "$(bench_ndjson)" \
    "$CHATS" "$BENCH_PROFILE" || die "benchmark failed"
log "load after: $(load1)"
