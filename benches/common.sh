# Shared by the benchmark scripts: settings, logging, tools, the DuckDB venv, the shared
# input data and timing helpers. Expects ROOT (the repository) and BENCH_NAME (for log
# lines); a script may set DEFAULT_CHATS before sourcing this.

CHATS=${BENCH_CHATS:-${DEFAULT_CHATS:-1000000}}
SEED=${BENCH_SEED:-1}
WORK=${CHATVAULT_BENCH_DIR:-/tmp/chatvault-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chatvault/target}

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# --- tools ---------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (Debian package 'time') for peak-RSS measurements"
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi

# BENCH_PROFILE: `dist` (the default: what packages ship and the published figures use),
# `release` (no whole-program link: a much quicker build, 10-13% more CPU) or `dev`, which
# reuses the test build (dependencies such as polars optimised, our own
# crates not): quicker to build, slower to run; results must say which profile ran.
BENCH_PROFILE=${BENCH_PROFILE:-dist}
BIN_DIR=$CARGO_TARGET_DIR/$([[ $BENCH_PROFILE == dev ]] && echo debug || echo "$BENCH_PROFILE")
log "building $BENCH_PROFILE binaries into $CARGO_TARGET_DIR"
if [[ $BENCH_PROFILE == dev ]]; then
    # The test build's feature set (all targets of the workspace), so nothing recompiles.
    (cd "$ROOT" && cargo build --locked --workspace --all-targets)
else
    (cd "$ROOT" && cargo build --locked --profile "$BENCH_PROFILE" -p chatvault -p chatvault-bench)
fi
CV=$BIN_DIR/chatvault
[[ -x $CV ]] || die "binaries not found under $BIN_DIR"

mkdir -p "$WORK"
VENV=$WORK/venv
if [[ ! -x $VENV/bin/python ]]; then
    log "creating the Python venv $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import duckdb' 2>/dev/null; then
    log "installing duckdb into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check duckdb
fi
PY=$VENV/bin/python

# json_get FILE EXPR: prints the Python expression EXPR evaluated with d = the JSON in FILE.
json_get() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

peak_rss_kib() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
# cpu_secs FILE...: user + system CPU seconds reported by /usr/bin/time -v, summed over FILEs.
cpu_secs() { awk -F': ' '/^\t(User|System) time \(seconds\)/ {s += $2} END {printf "%.1f", s}' "$@"; }
# The 1-minute load average: other work on the machine skews every number.
load1() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
fresh_dir() {
    rm -rf "$1"
    mkdir -p "$1"
}

# Prints the path of CHATS generated chats (seed SEED) as NDJSON, generated once.
bench_ndjson() {
    local ndjson=$WORK/store-$CHATS-seed$SEED.ndjson
    if [[ ! -f $ndjson.complete ]]; then
        log "generating $CHATS chats (seed $SEED)"
        "$CV" gen --chats "$CHATS" --seed "$SEED" --out "$ndjson" >&2 || die "gen failed"
        touch "$ndjson.complete"
    fi
    echo "$ndjson"
}

# Prints the path of a data directory holding bench_ndjson imported and compacted, made
# once and shared by the query benchmarks (OData feed, reports).
bench_store() {
    local ndjson dir=$WORK/dd-query-$CHATS-seed$SEED
    ndjson=$(bench_ndjson)
    if [[ ! -f $dir.complete ]]; then
        fresh_dir "$dir"
        log "import and compact into $dir"
        "$CV" import --json --data-dir "$dir" "$ndjson" >"$WORK/query-import.json" 2>"$WORK/query-import.err" ||
            die "import failed: $(tail -5 "$WORK/query-import.err")"
        "$CV" compact --data-dir "$dir" >/dev/null 2>&1 || die "compact failed"
        touch "$dir.complete"
    fi
    echo "$dir"
}

# start_service DIR NAME: `serve`s DIR on a free loopback port in the background (log in
# $WORK/NAME-serve.out) and waits until it answers; sets PORT and SERVER (its pid), and
# stops it when the script exits.
start_service() {
    log "starting the service"
    PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    CHATVAULT_LOG=warn "$CV" serve --data-dir "$1" --listen "127.0.0.1:$PORT" >"$WORK/$2-serve.out" 2>&1 &
    SERVER=$!
    trap 'kill $SERVER 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done
}
