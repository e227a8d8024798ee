#!/usr/bin/env bash
# Cosmos DB source benchmark for Chatvault, against the test emulator
# (@vercel/cosmosdb-server behind tests/cosmos-emulator/front.js, installed from npm by
# this script as scripts/test.sh does).
#
# Measures:
#   (a) backfill: `chatvault import --from-cosmos` of BENCH_COSMOS_DOCS chats written to
#       the emulator beforehand (documents/s, with /usr/bin/time -v for peak RSS);
#   (b) freshness: with `chatvault serve` running with the default polling (every second),
#       BENCH_COSMOS_LATENCY_DOCS chats are written to the emulator one at a time, at
#       varied points of the poll cycle, and each is timed from the end of its write
#       until `/odata/Chats?$filter=ChatUID eq '…'` returns it (median, max); once on that
#       data directory and container (BENCH_COSMOS_DOCS chats in it), once on a fresh
#       container and data directory. The emulator scans its whole container for every
#       query (timed separately as one idle poll), which a real account does not do, so
#       the fresh container is the closer picture of Chatvault's own delay.
# and prints a Markdown summary. The emulator is a single Node.js process on this machine:
# its own speed bounds (a), so (a) is a floor for a real account, not a ceiling.
#
# Environment:
#   BENCH_COSMOS_DOCS          chats for the backfill (default 20000)
#   BENCH_COSMOS_LATENCY_DOCS  chats timed for freshness (default 20)
#   BENCH_SEED                 generator seed (default 1)
#   BENCH_PROFILE              cargo profile (default dist; dev reuses the test build)
#   CHATVAULT_BENCH_DIR        work directory (default /tmp/chatvault-bench)
#   CARGO_TARGET_DIR           cargo target directory (default $HOME/.cache/chatvault/target)
#
# Only 127.0.0.1 is used; the emulator and the server this script starts are stopped on exit.
set -euo pipefail

DOCS=${BENCH_COSMOS_DOCS:-20000}
LATENCY_DOCS=${BENCH_COSMOS_LATENCY_DOCS:-20}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BENCH_NAME=cosmos-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

[[ $DOCS =~ ^[1-9][0-9]*$ ]] || die "BENCH_COSMOS_DOCS must be a positive integer, not '$DOCS'"
[[ $LATENCY_DOCS =~ ^[1-9][0-9]*$ ]] || die "BENCH_COSMOS_LATENCY_DOCS must be a positive integer"
TOOL=$BIN_DIR/cosmos-bench
[[ -x $TOOL ]] || die "cosmos-bench not found under $BIN_DIR"

# --- the emulator and the server we start, stopped whatever happens ---------------------
EMULATOR_PID=""
SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    # The front exits when its stdin closes; the kill is for a front that hangs.
    exec 3>&- 2>/dev/null || true
    if [[ -n $EMULATOR_PID ]] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        kill -TERM "$EMULATOR_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "installing the Cosmos DB emulator (npm ci)"
npm ci --prefix "$ROOT/tests/cosmos-emulator" --no-audit --no-fund --loglevel=error >/dev/null

RUNS=$WORK/cosmos
rm -rf "$RUNS"
mkdir -p "$RUNS"
mkfifo "$RUNS/front.stdin"
node "$ROOT/tests/cosmos-emulator/front.js" <"$RUNS/front.stdin" >"$RUNS/front.port" 2>"$RUNS/front.err" &
EMULATOR_PID=$!
exec 3>"$RUNS/front.stdin"
for _ in $(seq 100); do
    [[ -s $RUNS/front.port ]] && break
    sleep 0.1
done
EMULATOR_PORT=$(head -1 "$RUNS/front.port")
[[ $EMULATOR_PORT =~ ^[0-9]+$ ]] || die "the emulator did not start: $(cat "$RUNS/front.err")"
ENDPOINT="https://127.0.0.1:$EMULATOR_PORT/"
log "emulator on $ENDPOINT"

# The well-known, public key of the Cosmos DB emulator.
export CHATVAULT_COSMOS_KEY="C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
export CHATVAULT_COSMOS_ENDPOINT=$ENDPOINT
export CHATVAULT_COSMOS_DATABASE=chatserver
export CHATVAULT_COSMOS_CONTAINER=chats
export CHATVAULT_COSMOS_ACCEPT_INVALID_CERTS=true
export CHATVAULT_LOG=warn

# --- (a) backfill ----------------------------------------------------------------------
log "writing $DOCS chats to the emulator"
"$TOOL" --endpoint "$ENDPOINT" --seed "$SEED" load --count "$DOCS" >"$RUNS/load.json" ||
    die "loading the emulator failed"
log "loaded: $(cat "$RUNS/load.json")"

DIR=$RUNS/data
fresh_dir "$DIR"
LOAD_BEFORE=$(load1)
log "backfill: chatvault import --from-cosmos (load $LOAD_BEFORE)"
START=$(now)
/usr/bin/time -v -o "$RUNS/backfill.time" "$CV" --data-dir "$DIR" import --from-cosmos --json \
    >"$RUNS/backfill.json" 2>"$RUNS/backfill.err" || die "backfill failed: $(tail -5 "$RUNS/backfill.err")"
END=$(now)
BACKFILL_SECS=$(elapsed "$START" "$END")
BACKFILL_DOCS=$(json_get "$RUNS/backfill.json" 'd["documents"]')
ACCEPTED=$(json_get "$RUNS/backfill.json" 'd["counts"].get("accepted", 0)')
[[ $ACCEPTED -eq $DOCS ]] || die "the backfill accepted $ACCEPTED of $DOCS chats"
BACKFILL_RATE=$(awk -v n="$BACKFILL_DOCS" -v s="$BACKFILL_SECS" 'BEGIN {printf "%.0f", n / s}')
BACKFILL_RSS=$(peak_rss_kib "$RUNS/backfill.time")
BACKFILL_CPU=$(cpu_secs "$RUNS/backfill.time")
log "backfill: $BACKFILL_DOCS documents in $BACKFILL_SECS s ($BACKFILL_RATE docs/s)"

# --- (b) freshness with the default polling ---------------------------------------------
# freshness NAME CONTAINER DIR FROM: starts `chatvault serve` on DIR reading CONTAINER, waits
# until it is ready, times LATENCY_DOCS chats from index FROM, stops the server; sets
# READY_SECS, MEDIAN, MAX and ALL.
freshness() {
    local name=$1 container=$2 dir=$3 from=$4
    local api_key port started
    api_key=$("$CV" --data-dir "$dir" keys create --name bench --scope read | tail -1)
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    log "$name: chatvault serve on 127.0.0.1:$port reading $container with the default polling"
    CHATVAULT_COSMOS_CONTAINER=$container "$CV" --data-dir "$dir" serve --listen "127.0.0.1:$port" \
        >"$RUNS/$name-serve.out" 2>"$RUNS/$name-serve.err" &
    SERVER_PID=$!
    # Ready once the source has caught up; a restarted source reads the overlap window
    # (the last 60 s of writes before its checkpoint) once more first.
    started=$(now)
    for _ in $(seq 3000); do
        curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "serve exited: $(tail -5 "$RUNS/$name-serve.err")"
        sleep 0.2
    done
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || die "serve is not ready after 10 minutes"
    READY_SECS=$(elapsed "$started" "$(now)")
    log "$name: ready after $READY_SECS s; timing $LATENCY_DOCS chats one at a time (load $(load1))"
    "$TOOL" --endpoint "$ENDPOINT" --seed "$SEED" --container "$container" latency --from "$from" \
        --count "$LATENCY_DOCS" --odata "http://127.0.0.1:$port/odata/" --api-key "$api_key" \
        >"$RUNS/$name-latency.json" || die "the freshness run $name failed"
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    MEDIAN=$(json_get "$RUNS/$name-latency.json" '"%.2f" % d["median_s"]')
    MAX=$(json_get "$RUNS/$name-latency.json" '"%.2f" % d["max_s"]')
    ALL=$(json_get "$RUNS/$name-latency.json" '" ".join("%.2f" % x for x in d["delays_s"])')
    log "$name: median $MEDIAN s, max $MAX s"
}

# The emulator answers a query by scanning its container, so what one idle poll costs
# it grows with the container; a real account answers from the _ts index.
probe() {
    "$TOOL" --endpoint "$ENDPOINT" --container "$1" probe >"$RUNS/probe-$1.json" || die "probe failed"
    json_get "$RUNS/probe-$1.json" '"%.2f" % d["median_s"]'
}

PROBE_FULL=$(probe chats)
freshness full chats "$DIR" "$DOCS"
FULL_READY=$READY_SECS FULL_MEDIAN=$MEDIAN FULL_MAX=$MAX FULL_ALL=$ALL

"$TOOL" --endpoint "$ENDPOINT" --container fresh load --count 0 >/dev/null || die "creating the container fresh failed"
PROBE_EMPTY=$(probe fresh)
SMALL=$RUNS/data-fresh
fresh_dir "$SMALL"
freshness small fresh "$SMALL" $((DOCS + LATENCY_DOCS))

cat <<EOF

Cosmos DB source, $BENCH_PROFILE profile, $(nproc) cores, load ${LOAD_BEFORE} before the backfill

| measure | result |
|---|---|
| backfill (\`import --from-cosmos\`), $DOCS chats | $BACKFILL_SECS s, **$BACKFILL_RATE docs/s**, peak RSS $((BACKFILL_RSS / 1024)) MiB, Chatvault CPU $BACKFILL_CPU s |
| emulator time for one idle poll query, container of $DOCS / of 0 chats | $PROBE_FULL s / $PROBE_EMPTY s |
| container of $DOCS chats: \`serve\` start to ready (re-reads the overlap window once) | $FULL_READY s |
| container of $DOCS chats: write → OData, $LATENCY_DOCS chats, default polling (every 1 s) | **median $FULL_MEDIAN s, max $FULL_MAX s** (target < 5 s) |
| fresh container: write → OData, $LATENCY_DOCS chats, default polling (every 1 s) | **median $MEDIAN s, max $MAX s** (target < 5 s) |

Delays (s), container of $DOCS chats: $FULL_ALL
Delays (s), fresh container: $ALL
EOF
