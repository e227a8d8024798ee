#!/usr/bin/env bash
# Report benchmark for Chatvault, with DuckDB as the yardstick, in one run: every built-in
# report for one site and one month, through the report engine (benches report-bench,
# warm median), against DuckDB running the same bound SQL on the same Parquet files, with
# the same restriction the engine applies (the site's chats that started in the month;
# child tables semi-joined to them; DaySummary derived from them).
#
# Environment: BENCH_CHATS (default 1000000), BENCH_SEED (1), BENCH_SITE (3),
# BENCH_MONTH (2024-08), BENCH_PROFILE (dist; dev reuses the test build),
# CHATVAULT_BENCH_DIR (/tmp/chatvault-bench), CARGO_TARGET_DIR (~/.cache/chatvault/target).
set -euo pipefail

SITE=${BENCH_SITE:-3}
MONTH=${BENCH_MONTH:-2024-08}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=report-bench
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
REPORTS=$BIN_DIR/report-bench
[[ -x $REPORTS ]] || die "report-bench not found under $BIN_DIR"

FROM=$MONTH-01
TO=$("$PY" -c 'import calendar,sys; y,m=map(int,sys.argv[1].split("-")); print(f"{y:04d}-{m:02d}-{calendar.monthrange(y,m)[1]:02d}")' "$MONTH")

DIR=$(bench_store)

RUNS=$WORK/report-runs
fresh_dir "$RUNS"
log "chatvault: every built-in report, site $SITE, $FROM..$TO"
"$REPORTS" --data-dir "$DIR" --site "$SITE" --from "$FROM" --to "$TO" >"$RUNS/chatvault.jsonl" ||
    die "report-bench failed"
log "duckdb: the same SQL on the same Parquet files"
"$PY" "$ROOT/benches/duckdb_reports.py" "$DIR/store" "$SITE" "$FROM" "$TO" <"$RUNS/chatvault.jsonl" >"$RUNS/duckdb.jsonl" ||
    die "duckdb failed"

REPORT=$WORK/reports-results.md
"$PY" - "$RUNS/chatvault.jsonl" "$RUNS/duckdb.jsonl" "$CHATS" "$SITE" "$FROM" "$TO" "$BENCH_PROFILE" "$(nproc)" "$(load1)" >"$REPORT" <<'PY'
import json, sys, time
cv = [json.loads(l) for l in open(sys.argv[1])]
dd = {d["id"]: d for d in map(json.loads, open(sys.argv[2]))}
chats, site, frm, to, profile, cores, load = sys.argv[3:10]
print(f"Chatvault report benchmark: {chats} chats, site {site}, {frm}..{to}; profile {profile}; "
      f"{cores} cores, load {load}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
print()
print("| report | rows | chatvault warm median (ms) | DuckDB warm median (ms) | chatvault ÷ DuckDB |")
print("|---|---:|---:|---:|---:|")
worst = 0.0
for r in cv:
    d = dd[r["id"]]
    ratio = r["median_ms"] / d["median_ms"]
    worst = max(worst, ratio)
    rows = f'{r["rows"]}' if r["rows"] == d["rows"] else f'{r["rows"]} (DuckDB {d["rows"]})'
    print(f'| {r["id"]} | {rows} | {r["median_ms"]:.1f} | {d["median_ms"]:.1f} | {ratio:.2f}× |')
print()
within = sum(1 for r in cv if r["median_ms"] <= 2 * dd[r["id"]]["median_ms"])
print(f"{within} of {len(cv)} reports within 2× of DuckDB; worst ratio {worst:.2f}×.")
PY
cat "$REPORT"
