#!/usr/bin/env bash
# Columnar-store benchmark for Chatvault, with DuckDB as the yardstick, in one run:
#   size      the store on disk (after compaction) against the raw NDJSON;
#   rebuild   `chatvault rebuild` (archive -> Parquet tables) against DuckDB turning the
#             same NDJSON into chats + lines Parquet (benches/duckdb_convert.py);
#   query     one site, one month, 6 columns, 100 rows from Chats, warm: the store's
#             LazyFrame (benches store-query) against DuckDB on the same Parquet files.
#
# Environment: BENCH_CHATS (default 1000000), BENCH_SEED (1), CHATVAULT_BENCH_DIR
# (default /tmp/chatvault-bench), CARGO_TARGET_DIR (default ~/.cache/chatvault/target).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=store-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
QUERY=$BIN_DIR/store-query
[[ -x $QUERY ]] || die "store-query not found under $BIN_DIR"

NDJSON=$(bench_ndjson)
NDJSON_BYTES=$(stat -c %s "$NDJSON")
RUNS=$WORK/store-runs
fresh_dir "$RUNS"
DIR=$WORK/dd-store
fresh_dir "$DIR"

log "import (archive, catalog and store)"
t0=$(now)
/usr/bin/time -v -o "$RUNS/import.time" "$CV" import --json --data-dir "$DIR" "$NDJSON" >"$RUNS/import.json" 2>"$RUNS/import.err" ||
    die "import failed: $(tail -5 "$RUNS/import.err")"
import_secs=$(elapsed "$t0" "$(now)")
"$CV" compact --data-dir "$DIR" >"$RUNS/compact.out" 2>&1 || die "compact failed"
store_bytes=$(du -sb "$DIR/store" --exclude=_trash | cut -f1)

log "rebuild"
t0=$(now)
/usr/bin/time -v -o "$RUNS/rebuild.time" "$CV" rebuild --data-dir "$DIR" >"$RUNS/rebuild.out" 2>"$RUNS/rebuild.err" ||
    die "rebuild failed: $(tail -5 "$RUNS/rebuild.err")"
rebuild_secs=$(elapsed "$t0" "$(now)")
"$CV" verify --data-dir "$DIR" >"$RUNS/verify.out" 2>&1 || die "verify failed after rebuild: $(tail -5 "$RUNS/verify.out")"

log "duckdb: NDJSON -> Parquet"
DUCK_OUT=$WORK/duckdb-store-out
fresh_dir "$DUCK_OUT"
t0=$(now)
/usr/bin/time -v -o "$RUNS/duckdb.time" "$PY" "$ROOT/benches/duckdb_convert.py" "$NDJSON" "$DUCK_OUT" >"$RUNS/duckdb.json" 2>"$RUNS/duckdb.err" ||
    die "duckdb failed: $(tail -5 "$RUNS/duckdb.err")"
duck_secs=$(elapsed "$t0" "$(now)")

log "query: store LazyFrame"
"$QUERY" --data-dir "$DIR" --runs 30 >"$RUNS/query.json" || die "store-query failed"
log "query: DuckDB on the same Parquet files"
"$PY" - "$DIR/store" >"$RUNS/duck-query.json" <<'PY'
import duckdb, json, sys, time
files = sys.argv[1] + "/Chats/SiteKey=3/Month=2024-08/*.parquet"
con = duckdb.connect()
sql = f"""SELECT ChatUID, Started, TakenByUsers, WaitedSeconds, Rating, Missed
          FROM read_parquet('{files}')
          WHERE SiteKey = 3 AND Started >= TIMESTAMP '2024-08-01' AND Started < TIMESTAMP '2024-09-01'
          LIMIT 100"""
times = []
for i in range(33):
    t = time.perf_counter(); rows = len(con.execute(sql).fetchall()); ms = (time.perf_counter() - t) * 1000
    if i >= 3: times.append(ms)
times.sort()
print(json.dumps({"rows": rows, "median_ms": times[len(times) // 2], "min_ms": times[0]}))
PY

REPORT=$WORK/store-results.md
{
    echo "Chatvault store benchmark: $CHATS chats (seed $SEED), $(nproc) cores, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "| measure | chatvault | DuckDB | ratio |"
    echo "|---|---:|---:|---:|"
    awk -v s="$store_bytes" -v n="$NDJSON_BYTES" 'BEGIN { printf "| store size vs raw NDJSON | %.0f MB of %.0f MB | | %.1f%% |\n", s/1e6, n/1e6, 100*s/n }'
    awk -v a="$rebuild_secs" -v b="$duck_secs" -v c="$CHATS" 'BEGIN { printf "| rebuild / convert (s) | %.1f (%.0f chats/s) | %.1f (%.0f chats/s) | chatvault speed = %.2f× DuckDB |\n", a, c/a, b, c/b, b/a }'
    q=$(json_get "$RUNS/query.json" 'd["median_ms"]'); dq=$(json_get "$RUNS/duck-query.json" 'd["median_ms"]')
    awk -v a="$q" -v b="$dq" 'BEGIN { printf "| one-site one-month query, warm median (ms) | %.1f | %.1f | %.2f× DuckDB time |\n", a, b, a/b }'
    echo
    echo "Import of the same NDJSON (archive + catalog + store, fsync on): ${import_secs} s; peak RSS $(( $(peak_rss_kib "$RUNS/import.time") / 1024 )) MiB."
    echo "Rebuild peak RSS $(( $(peak_rss_kib "$RUNS/rebuild.time") / 1024 )) MiB; DuckDB peak RSS $(( $(peak_rss_kib "$RUNS/duckdb.time") / 1024 )) MiB."
    echo "Query details: $(cat "$RUNS/query.json"); DuckDB: $(cat "$RUNS/duck-query.json")"
} >"$REPORT"
cat "$REPORT"
