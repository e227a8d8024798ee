#!/usr/bin/env bash
# TLS against plain HTTP on the same build and data, interleaved (plain, TLS, plain, TLS):
#   first page  the OData benchmark's first page (one site, one month, 6 columns), on a
#               kept-alive connection and on a new connection per request;
#   webhook     webhook-load, BENCH_CONCURRENCY clients (16), one document per request,
#               connections kept alive, into a fresh data directory each run.
# The goal: TLS within 10% of plain HTTP on both.
#
# Environment: BENCH_CHATS (default 100000) for the feed's store, BENCH_WEBHOOK_DOCS
# (default 30000), BENCH_ROUNDS (2), BENCH_PROFILE (dist), CHATVAULT_BENCH_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=tls-bench
DEFAULT_CHATS=100000
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
"$VENV/bin/python" -c 'import requests' 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check requests
LOAD=$BIN_DIR/webhook-load
[[ -x $LOAD ]] || die "webhook-load not found under $BIN_DIR"
CONCURRENCY=${BENCH_CONCURRENCY:-16}
DOCS=${BENCH_WEBHOOK_DOCS:-30000}
ROUNDS=${BENCH_ROUNDS:-2}
RUNS=$WORK/tls-runs
fresh_dir "$RUNS"

# A private CA and a certificate for 127.0.0.1, as an operator's would be.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$RUNS/ca-key.pem" -out "$RUNS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$RUNS/key.pem" -out "$RUNS/server.csr" 2>/dev/null
openssl x509 -req -in "$RUNS/server.csr" -CA "$RUNS/ca.pem" -CAkey "$RUNS/ca-key.pem" -days 2 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth') \
    -out "$RUNS/cert.pem" 2>/dev/null

STORE=$(bench_store)
NDJSON=$(bench_ndjson)
head -n "$DOCS" "$NDJSON" >"$RUNS/webhook.ndjson"
READ_KEY=$("$CV" keys create --data-dir "$STORE" --name tls-bench --scope read | tail -1)

SERVER_PID=""
TIME_PID=""
# Stops serve (the child of /usr/bin/time, which does not pass signals on) and waits for
# time to write its report.
stop_server() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null
    [[ -n $TIME_PID ]] && { wait "$TIME_PID" 2>/dev/null || true; }
    SERVER_PID=""
    TIME_PID=""
}
trap stop_server EXIT

# start_server MODE DIR NAME: starts serve on DIR; sets URL and SERVER_PID.
start_server() {
    local mode=$1 dir=$2 name=$3
    local -a tls=()
    [[ $mode == tls ]] && tls=(env CHATVAULT_TLS_CERT="$RUNS/cert.pem" CHATVAULT_TLS_KEY="$RUNS/key.pem")
    CHATVAULT_LOG=warn /usr/bin/time -v -o "$RUNS/$name.time" "${tls[@]}" "$CV" serve --data-dir "$dir" \
        --listen 127.0.0.1:0 >"$RUNS/$name.out" 2>"$RUNS/$name.err" &
    TIME_PID=$!
    URL=""
    for _ in $(seq 600); do
        URL=$(sed -n 's|.* listening on \(https*://[^ ]*\).*|\1|p' "$RUNS/$name.out")
        [[ -n $URL ]] && grep -q '^Ready\.$' "$RUNS/$name.out" && break
        kill -0 "$TIME_PID" 2>/dev/null || die "serve did not start: $(tail -3 "$RUNS/$name.err")"
        sleep 0.1
    done
    SERVER_PID=$(pgrep -f -n "serve --data-dir $dir --listen") || die "serve's process not found"
}

ROWS=$RUNS/rows.tsv
: >"$ROWS"
for round in $(seq "$ROUNDS"); do
    for mode in plain tls; do
        ca=""
        [[ $mode == tls ]] && ca=$RUNS/ca.pem
        log "round $round, $mode: first page (load $(load1))"
        start_server "$mode" "$STORE" "feed-$mode-$round"
        page=$("$PY" "$ROOT/benches/tls_bench.py" "$URL/odata/" "$READ_KEY" "$ca") || die "tls_bench.py failed"
        stop_server

        log "round $round, $mode: webhook, $CONCURRENCY clients, one document per request (load $(load1))"
        dir=$WORK/dd-tls-webhook
        fresh_dir "$dir"
        key=$("$CV" keys create --data-dir "$dir" --name bench --scope ingest | tail -1)
        start_server "$mode" "$dir" "webhook-$mode-$round"
        cafile=()
        [[ -n $ca ]] && cafile=(--ca "$ca")
        CHATVAULT_API_KEY=$key "$LOAD" --url "$URL" --file "$RUNS/webhook.ndjson" --concurrency "$CONCURRENCY" \
            --batch 1 "${cafile[@]}" --label "$mode-$round" >"$RUNS/webhook-$mode-$round.json" || die "webhook-load failed"
        stop_server
        docs_per_sec=$(json_get "$RUNS/webhook-$mode-$round.json" 'round(d["docs_per_sec"])')
        server_cpu=$(cpu_secs "$RUNS/webhook-$mode-$round.time")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$mode" \
            "$(echo "$page" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["kept_alive"]["median_ms"])')" \
            "$(echo "$page" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["new_connection"]["median_ms"])')" \
            "$docs_per_sec" "$server_cpu" "$(load1)" >>"$ROWS"
    done
done

echo "chatvault $("$CV" --version | awk '{print $2}'), $(cd "$ROOT" && git rev-parse --short HEAD), profile $BENCH_PROFILE, $(nproc) cores"
echo "store: $CHATS chats; webhook: $DOCS documents, $CONCURRENCY clients, one per request"
printf '| round | mode | first page, kept alive (ms) | first page, new connection (ms) | webhook docs/s | webhook server CPU (s) | load |\n|---|---|---|---|---|---|---|\n'
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7}' "$ROWS"
"$PY" - "$ROWS" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
def med(mode, col):
    return statistics.median(float(r[col]) for r in rows if r[1] == mode)
page = med("tls", 2) / med("plain", 2)
hook = med("tls", 4) / med("plain", 4)
print(f"\nTLS / plain, medians over the rounds: first page (kept alive) {page:.2f}x the time; "
      f"webhook {hook:.2f}x the throughput (goal: within 10%)")
PY
