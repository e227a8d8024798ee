"""DuckDB side of benches/reports.sh: reads the report-bench JSON lines (id, bound SQL) on
stdin, defines the tables the report engine would show a report (one site's chats that
started in the period, child tables restricted to those chats, DaySummary derived from
them) as views over the store's Parquet files, and times each SQL warm.

Usage: duckdb_reports.py STORE_DIR SITE FROM TO < report-bench.jsonl
"""
import datetime
import glob
import json
import sys
import time

import duckdb

store, site, frm, to = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
before = (datetime.date.fromisoformat(to) + datetime.timedelta(days=1)).isoformat()
months = sorted({frm[:7], to[:7]})
con = duckdb.connect()


def files(table):
    found = []
    for month in months:
        found += glob.glob(f"{store}/{table}/SiteKey={site}/Month={month}/*.parquet")
    if not found:
        sys.exit(f"no Parquet files for {table}, site {site}, months {months}")
    return found


con.execute(
    f"""CREATE VIEW Chats AS SELECT * FROM read_parquet({files('Chats')!r})
        WHERE SiteKey = {site} AND Started >= TIMESTAMP '{frm}' AND Started < TIMESTAMP '{before}'"""
)
for table in ["ChatLines", "SurveyAnswers", "PageViews", "ChatTags"]:
    con.execute(
        f"""CREATE VIEW {table} AS SELECT * FROM read_parquet({files(table)!r})
            WHERE SiteKey = {site} AND ChatUID IN (SELECT ChatUID FROM Chats)"""
    )
con.execute(
    """CREATE VIEW DaySummary AS
       SELECT SiteKey, CAST(Started AS DATE) AS Dated,
              COUNT(*) AS Chats,
              SUM(CAST(Missed AS BIGINT)) AS Missed,
              SUM(CAST(NOT Missed AS BIGINT)) AS Answered,
              SUM(CAST(AnsweredByBot AS BIGINT)) AS Bot,
              SUM(CAST(MissedFollowedUp AS BIGINT)) AS MissedFollowedUp,
              AVG(WaitedSeconds) AS AvgWaitSeconds,
              AVG(DurationSeconds) FILTER (WHERE NOT Missed) AS AvgDurationSeconds,
              AVG(Rating) FILTER (WHERE Rating > 0) AS AvgRating,
              AVG(SentimentScore) FILTER (WHERE NOT Missed) AS AvgSentiment
       FROM Chats WHERE Started IS NOT NULL
       GROUP BY ALL ORDER BY SiteKey, Dated"""
)

WARM_UP, RUNS = 2, 7
for line in sys.stdin:
    report = json.loads(line)
    # The engine caps rows at the report's MaxRows; DuckDB gets the same cap.
    sql = f"SELECT * FROM ({report['sql']}) AS report LIMIT {report['max_rows']}"
    times = []
    for i in range(WARM_UP + RUNS):
        started = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        if i >= WARM_UP:
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(json.dumps({"id": report["id"], "rows": rows, "median_ms": times[len(times) // 2], "min_ms": times[0]}))
