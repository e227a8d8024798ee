#!/usr/bin/env bash
# Ingest benchmark for Chatvault, with DuckDB as the yardstick.
#
# Measures, on the same generated documents, each with /usr/bin/time -v for peak RSS:
#   (a) `chatvault import` of one NDJSON file into a fresh data directory;
#   (b) `chatvault import` of a folder with one .json file per chat;
#   (c) `chatvault serve` fed by `webhook-load` (N concurrent keep-alive clients, one run
#       per batch size, each into a fresh data directory; peak RSS is the server's);
#   (d) DuckDB turning the same NDJSON into a chats table (header fields) and a lines table
#       (Lines unnested, with ChatUID) written as Parquet; the whole Python job is timed.
# and prints a Markdown table (docs/s, MB/s, peak RSS) plus the ratio
# chatvault-import docs/s ÷ DuckDB docs/s. MB are 10^6 bytes of the run's own input.
#
# Environment:
#   BENCH_CHATS        documents to generate (default 100000)
#   BENCH_SEED         generator seed (default 1)
#   BENCH_CONCURRENCY  webhook clients (default 16)
#   BENCH_BATCHES      webhook documents per request, space-separated (default "1 50")
#   CHATVAULT_BENCH_DIR  work directory (default /tmp/chatvault-bench): venv, data, runs
#   CARGO_TARGET_DIR   cargo target directory (default $HOME/.cache/chatvault/target)
#
# Only 127.0.0.1 is used; the server this script starts is stopped on exit.
set -euo pipefail

DEFAULT_CHATS=100000
CONCURRENCY=${BENCH_CONCURRENCY:-16}
BATCHES=${BENCH_BATCHES:-"1 50"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BENCH_NAME=ingest-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

[[ $CHATS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CHATS must be a positive integer, not '$CHATS'"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONCURRENCY must be a positive integer"
for b in $BATCHES; do
    [[ $b =~ ^[1-9][0-9]*$ ]] || die "BENCH_BATCHES must hold positive integers, not '$b'"
done

# --- the server we start, stopped whatever happens -------------------------------------
SERVER_PID=""
TIME_PID=""
stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server $SERVER_PID ignored SIGTERM for 30 s; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
    fi
    SERVER_PID=""
}
cleanup() {
    local rc=$?
    stop_server
    if [[ -n $TIME_PID ]]; then
        wait "$TIME_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

LOAD=$BIN_DIR/webhook-load
[[ -x $LOAD ]] || die "webhook-load not found under $BIN_DIR"

# --- data ----------------------------------------------------------------------------
DATA=$WORK/data-$CHATS-seed$SEED
NDJSON=$DATA/chats.ndjson
FOLDER=$DATA/chats
if [[ ! -f $DATA/.complete ]]; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    log "generating $CHATS chats (seed $SEED) as NDJSON and as a folder of files"
    "$CV" gen --chats "$CHATS" --seed "$SEED" --out "$NDJSON"
    "$CV" gen --chats "$CHATS" --seed "$SEED" --out "$FOLDER"
    touch "$DATA/.complete"
fi
NDJSON_BYTES=$(stat -c %s "$NDJSON")
FOLDER_FILES=$(find "$FOLDER" -type f -name '*.json' | wc -l)
FOLDER_BYTES=$(find "$FOLDER" -type f -name '*.json' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
[[ $(grep -c . "$NDJSON") -eq $CHATS ]] || die "$NDJSON does not hold $CHATS documents"
[[ $FOLDER_FILES -eq $CHATS ]] || die "$FOLDER holds $FOLDER_FILES files, not $CHATS"
log "input: NDJSON $NDJSON_BYTES bytes; folder $FOLDER_FILES files, $FOLDER_BYTES bytes"
# Every run reads from the page cache, none from the disk.
cat "$NDJSON" >/dev/null
find "$FOLDER" -type f -name '*.json' -print0 | xargs -0 cat >/dev/null

RUNS=$WORK/runs
rm -rf "$RUNS"
mkdir -p "$RUNS"
ROWS=$RUNS/rows.tsv # name, documents, bytes, seconds, peak RSS KiB, CPU s, load, notes
: >"$ROWS"

# verify_dir DIR: `chatvault verify` (untimed); prints "verify OK" or fails the run.
verify_dir() {
    local out
    if ! out=$("$CV" verify --data-dir "$1" 2>&1); then
        printf '%s\n' "$out" >&2
        die "chatvault verify failed for $1"
    fi
    echo "verify OK"
}

# --- (a), (b) chatvault import -------------------------------------------------------
bench_import() {
    local name=$1 input=$2 bytes=$3 dir=$WORK/dd-$1 t0 t1 secs load
    fresh_dir "$dir"
    load=$(load1)
    log "$name: chatvault import $input"
    t0=$(now)
    if ! /usr/bin/time -v -o "$RUNS/$name.time" "$CV" import --json --data-dir "$dir" "$input" \
        >"$RUNS/$name.json" 2>"$RUNS/$name.err"; then
        tail -n 20 "$RUNS/$name.err" >&2
        cat "$RUNS/$name.json" >&2
        die "$name failed"
    fi
    t1=$(now)
    secs=$(elapsed "$t0" "$t1")
    local accepted inner
    accepted=$(json_get "$RUNS/$name.json" 'd["summary"]["counts"].get("accepted", 0)')
    inner=$(json_get "$RUNS/$name.json" 'round(d["seconds"], 2)')
    [[ $accepted -eq $CHATS ]] || die "$name accepted $accepted of $CHATS documents (see $RUNS/$name.json)"
    local v size
    v=$(verify_dir "$dir")
    size=$(du -sm "$dir" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$CHATS" "$bytes" "$secs" "$(peak_rss_kib "$RUNS/$name.time")" \
        "$(cpu_secs "$RUNS/$name.time")" "$load" "${inner} s inside the import; data dir ${size} MB; $v" >>"$ROWS"
}

bench_import import-ndjson "$NDJSON" "$NDJSON_BYTES"
bench_import import-folder "$FOLDER" "$FOLDER_BYTES"

# --- (c) chatvault serve + webhook-load ----------------------------------------------
bench_webhook() {
    local batch=$1 name=webhook-b$1 dir=$WORK/dd-webhook-b$1
    fresh_dir "$dir"
    local key
    if ! key=$("$CV" keys create --data-dir "$dir" --name bench --scope ingest 2>"$RUNS/$name.keys.err" | tail -n 1); then
        cat "$RUNS/$name.keys.err" >&2
        die "chatvault keys create failed"
    fi
    [[ $key == cv_* ]] || die "keys create printed no key (see $RUNS/$name.keys.err)"

    log "$name: chatvault serve + webhook-load (concurrency $CONCURRENCY, batch $batch)"
    local load
    load=$(load1)
    /usr/bin/time -v -o "$RUNS/$name.server.time" "$CV" serve --data-dir "$dir" --listen 127.0.0.1:0 \
        >"$RUNS/$name.server.out" 2>"$RUNS/$name.server.err" &
    TIME_PID=$!
    local url=""
    for _ in $(seq 600); do
        url=$(sed -n '1s|.* listening on \(http://[^ ]*\).*|\1|p' "$RUNS/$name.server.out")
        [[ -n $url ]] && break
        kill -0 "$TIME_PID" 2>/dev/null || break
        sleep 0.1
    done
    SERVER_PID=$(pgrep -P "$TIME_PID" || true)
    if [[ -z $url || -z $SERVER_PID ]]; then
        cat "$RUNS/$name.server.out" "$RUNS/$name.server.err" >&2
        die "the server did not start"
    fi
    [[ $url == http://127.0.0.1:* ]] || die "the server listens on $url, not on 127.0.0.1"

    local load_ok=1
    if ! CHATVAULT_API_KEY=$key RUST_LIB_BACKTRACE=0 /usr/bin/time -v -o "$RUNS/$name.load.time" \
        "$LOAD" --url "$url" --file "$NDJSON" --concurrency "$CONCURRENCY" --batch "$batch" \
        --label "$name" >"$RUNS/$name.json" 2>"$RUNS/$name.load.err"; then
        load_ok=0
    fi
    stop_server
    if ! wait "$TIME_PID"; then
        log "$name: the server exited with an error (see $RUNS/$name.server.err)"
    fi
    TIME_PID=""
    if [[ $load_ok -eq 0 ]]; then
        head -n 20 "$RUNS/$name.load.err" >&2
        tail -n 20 "$RUNS/$name.server.err" >&2
        die "$name: webhook-load failed"
    fi

    local secs accepted notes v size
    secs=$(json_get "$RUNS/$name.json" 'round(d["seconds"], 3)')
    accepted=$(json_get "$RUNS/$name.json" 'd["outcomes"].get("accepted", 0)')
    [[ $accepted -eq $CHATS ]] || die "$name: $accepted of $CHATS documents accepted (see $RUNS/$name.json)"
    notes=$(json_get "$RUNS/$name.json" \
        '"%d requests, %d retries, latency p50 %.0f ms p99 %.0f ms" % (d["requests"], d["retries"], d["latency_ms"]["p50"], d["latency_ms"]["p99"])')
    v=$(verify_dir "$dir")
    size=$(du -sm "$dir" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$CHATS" "$(json_get "$RUNS/$name.json" 'd["bytes"]')" "$secs" \
        "$(peak_rss_kib "$RUNS/$name.server.time")" "$(cpu_secs "$RUNS/$name.server.time")" "$load" \
        "$notes; client CPU $(cpu_secs "$RUNS/$name.load.time") s, peak RSS $(($(peak_rss_kib "$RUNS/$name.load.time") / 1024)) MiB; data dir ${size} MB; $v" >>"$ROWS"
}

for b in $BATCHES; do
    bench_webhook "$b"
done

# --- (d) DuckDB: NDJSON -> chats.parquet + lines.parquet -----------------------------
DUCK_OUT=$WORK/duckdb-out
fresh_dir "$DUCK_OUT"
log "duckdb: NDJSON -> chats.parquet + lines.parquet"
duck_load=$(load1)
t0=$(now)
if ! /usr/bin/time -v -o "$RUNS/duckdb.time" "$PY" "$ROOT/benches/duckdb_convert.py" "$NDJSON" "$DUCK_OUT" \
    >"$RUNS/duckdb.json" 2>"$RUNS/duckdb.err"; then
    tail -n 30 "$RUNS/duckdb.err" >&2
    die "the DuckDB job failed"
fi
t1=$(now)
duck_secs=$(elapsed "$t0" "$t1")
duck_chats=$(json_get "$RUNS/duckdb.json" 'd["chats"]')
[[ $duck_chats -eq $CHATS ]] || die "DuckDB wrote $duck_chats chats, not $CHATS"
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' duckdb "$CHATS" "$NDJSON_BYTES" "$duck_secs" "$(peak_rss_kib "$RUNS/duckdb.time")" \
    "$(cpu_secs "$RUNS/duckdb.time")" "$duck_load" \
    "$(json_get "$RUNS/duckdb.json" '"DuckDB %s; %d chats x %d columns, %d lines x %d columns" % (d["duckdb"], d["chats"], d["chat_columns"], d["lines"], d["line_columns"])'); Parquet $(du -sm "$DUCK_OUT" | cut -f1) MB; no fsync" >>"$ROWS"

# --- report --------------------------------------------------------------------------
REPORT=$WORK/results.md
{
    echo "Chatvault ingest benchmark: $CHATS chats (seed $SEED), $(nproc) cores, $(date -u +'%Y-%m-%d %H:%M UTC')"
    rev="not a git checkout"
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        rev="commit $(git -C "$ROOT" rev-parse --short HEAD)"
        git -C "$ROOT" diff --quiet HEAD -- || rev="$rev (with uncommitted changes)"
    fi
    echo "chatvault $("$CV" --version | awk '{print $2}'), $rev; webhook: $CONCURRENCY clients"
    echo
    echo "| Run | Documents | Seconds | docs/s | MB/s | Peak RSS (MiB) | CPU s | Load before | Notes |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '{
        printf "| %s | %d | %.2f | %.0f | %.1f | %.0f | %s | %s | %s |\n", $1, $2, $4, $2 / $4, $3 / 1e6 / $4, $5 / 1024, $6, $7, $8
    }' "$ROWS"
    echo
    awk -F'\t' '
        $1 == "import-ndjson" { cv = $2 / $4 }
        $1 == "duckdb" { dd = $2 / $4 }
        END { printf "chatvault import (NDJSON) docs/s ÷ DuckDB docs/s = %.0f ÷ %.0f = **%.2f**\n", cv, dd, cv / dd }
    ' "$ROWS"
    echo
    echo "Seconds: wall clock of the whole process for import and DuckDB (start-up included);"
    echo "for the webhook, webhook-load's time from the first request to the last answer, with"
    echo "the server already running. MB/s: the run's own input bytes (the folder's files are"
    echo "pretty-printed, so larger). Peak RSS and CPU s (user + system): /usr/bin/time -v (for the"
    echo "webhook, the server's; the client's are in the notes). Load before: 1-minute load average"
    echo "when the run started; anything well above 0 means other work shared the cores."
    echo "Chatvault validates, hashes, fsyncs each group commit and indexes in SQLite; DuckDB"
    echo "only converts (no validation, no fsync). Client and server share the same cores."
} | tee "$REPORT"
log "report saved to $REPORT; raw outputs in $RUNS"
