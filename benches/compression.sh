#!/usr/bin/env bash
# What compressing the full-table stream costs the server: the whole Chats table as one
# OData response (Prefer: odata.maxpagesize at the store's size) and as the CSV export,
# fetched by curl with each Accept-Encoding at each [server] compression level. Reports the
# server's CPU seconds (from /proc), the bytes on the wire and the wall time, next to the
# uncompressed stream in the same run. The chosen default is what keeps a 2-core server
# streaming at about the uncompressed rate.
#
# Environment: BENCH_CHATS (default 100000), BENCH_PROFILE (dist), CHATVAULT_BENCH_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=compression-bench
DEFAULT_CHATS=100000
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

STORE=$(bench_store)
KEY=$("$CV" keys create --data-dir "$STORE" --name compression-bench --scope read | tail -1)
RUNS=$WORK/compression-runs
fresh_dir "$RUNS"
PAGE=$((CHATS < 100000 ? CHATS : 100000))

SERVER_PID=""
stop_server() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && { wait "$SERVER_PID" 2>/dev/null || true; }
    SERVER_PID=""
}
trap stop_server EXIT

# The server's user + system CPU seconds so far.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$SERVER_PID/stat"; }

# fetch NAME PATH ENCODING: one stream; prints a result row.
fetch() {
    local name=$1 path=$2 encoding=$3 level=$4 before after out
    before=$(server_cpu)
    out=$(curl -sSf -o /dev/null -H "Authorization: Bearer $KEY" -H "Accept-Encoding: $encoding" \
        -H "Prefer: odata.maxpagesize=$PAGE" -w '%{size_download} %{time_total}' "$URL$path")
    after=$(server_cpu)
    read -r bytes secs <<<"$out"
    printf '| %s | %s | %s | %.1f | %.2f | %.2f |\n' "$name" "$encoding" "$level" \
        "$(awk -v b="$bytes" 'BEGIN {print b / 1e6}')" "$(awk -v a="$before" -v b="$after" 'BEGIN {print b - a}')" "$secs"
}

echo "chatvault $("$CV" --version | awk '{print $2}'), $(cd "$ROOT" && git rev-parse --short HEAD), profile $BENCH_PROFILE, $CHATS chats, $(nproc) cores"
echo "| stream | encoding | level | MB on the wire | server CPU (s) | wall (s) |"
echo "|---|---|---|---|---|---|"
for level in fastest default; do
    CHATVAULT_LOG=warn CHATVAULT_COMPRESSION=$level "$CV" serve --data-dir "$STORE" --listen 127.0.0.1:0 \
        >"$RUNS/serve-$level.out" 2>"$RUNS/serve-$level.err" &
    SERVER_PID=$!
    URL=""
    for _ in $(seq 600); do
        URL=$(sed -n 's|.* listening on \(http://[^ ]*\).*|\1|p' "$RUNS/serve-$level.out")
        [[ -n $URL ]] && grep -q '^Ready\.$' "$RUNS/serve-$level.out" && break
        sleep 0.1
    done
    [[ -n $URL ]] || die "serve did not start"
    # Warm the page cache and the store's metadata once.
    curl -sSf -o /dev/null -H "Authorization: Bearer $KEY" "$URL/api/v1/export/Chats.csv"
    for encoding in identity gzip zstd br; do
        [[ $encoding == identity && $level != fastest ]] && continue
        fetch "OData Chats, one page" "/odata/Chats" "$encoding" "$level"
        fetch "CSV export of Chats" "/api/v1/export/Chats.csv" "$encoding" "$level"
    done
    stop_server
done
