"""OData feed benchmark: the feed over HTTP against DuckDB on the same Parquet files.

usage: odata_bench.py FEED_URL API_KEY STORE_DIR SERVER_PID

Prints one JSON object. The first-page and groupby timings include HTTP and JSON
decoding on the feed's side and fetching the rows into Python objects on DuckDB's; the
full stream counts rows in the raw bytes (see below).
"""

import json
import sys
import time

import duckdb
import requests

FEED, KEY, STORE, PID = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SESSION = requests.Session()
SESSION.headers["Authorization"] = f"Bearer {KEY}"
COLUMNS = "ChatUID,Started,TakenByUsers,WaitedSeconds,Rating,Missed"
FIRST_PAGE = (
    "Chats?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z"
    f"&$select={COLUMNS}"
)
GROUPED = "Chats?$apply=groupby((SiteKey),aggregate($count as Chats))"
CHATS = f"read_parquet('{STORE}/Chats/*/*/*.parquet')"


def rss_kib() -> int:
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def median_ms(fn, runs=25, warm=3):
    times = []
    for i in range(runs + warm):
        t = time.perf_counter()
        result = fn()
        ms = (time.perf_counter() - t) * 1000
        if i >= warm:
            times.append(ms)
    times.sort()
    return {"median_ms": round(times[len(times) // 2], 2), "min_ms": round(times[0], 2)}, result


def feed_rows(path):
    r = SESSION.get(FEED + path)
    r.raise_for_status()
    return len(r.json()["value"])


con = duckdb.connect()
page_size = None

first_feed, rows = median_ms(lambda: feed_rows(FIRST_PAGE))
first_feed["rows"] = rows
first_duck, drows = median_ms(lambda: len(con.execute(
    f"SELECT {COLUMNS} FROM {CHATS} WHERE SiteKey = 3 AND Started >= TIMESTAMP '2024-08-01' "
    f"AND Started < TIMESTAMP '2024-09-01' ORDER BY ChatUID LIMIT {rows}").fetchall()))
first_duck["rows"] = drows

group_feed, groups = median_ms(lambda: feed_rows(GROUPED))
group_feed["rows"] = groups
group_duck, dgroups = median_ms(lambda: len(con.execute(
    f"SELECT SiteKey, count(*) AS Chats FROM {CHATS} GROUP BY SiteKey ORDER BY SiteKey").fetchall()))
group_duck["rows"] = dgroups

# Every row of Chats (all columns), following nextLinks; server memory sampled per page.
# The client only counts rows and finds the nextLink in the raw bytes: decoding 100,000
# rows/s of 105 columns in Python would measure the client, not the feed. The first page
# is also decoded fully to check that the raw counting agrees.
NEXT = b'"@odata.nextLink":"'


def page_rows_and_next(body: bytes):
    rows = body.count(b'"ChatUID":')
    at = body.rfind(NEXT)
    if at < 0:
        return rows, None
    start = at + len(NEXT)
    return rows, body[start:body.index(b'"', start)].decode()


rss_start = rss_kib()
rss_samples = []
t = time.perf_counter()
url = FEED + "Chats"
total = pages = 0
while url:
    r = SESSION.get(url)
    r.raise_for_status()
    rows, next_url = page_rows_and_next(r.content)
    if pages == 0:
        decoded = r.json()
        assert rows == len(decoded["value"]), "raw row count disagrees with the JSON"
        assert next_url == decoded.get("@odata.nextLink"), "raw nextLink disagrees"
    total += rows
    pages += 1
    url = next_url
    rss_samples.append(rss_kib())
stream_secs = time.perf_counter() - t

t = time.perf_counter()
cur = con.execute(f"SELECT * FROM {CHATS}")
duck_total = 0
while True:
    batch = cur.fetchmany(5000)
    if not batch:
        break
    duck_total += len(batch)
duck_stream_secs = time.perf_counter() - t

quarter = max(1, len(rss_samples) // 4)
print(json.dumps({
    "first_page": {"feed": first_feed, "duckdb": first_duck,
                   "ratio": round(first_feed["median_ms"] / first_duck["median_ms"], 2)},
    "groupby": {"feed": group_feed, "duckdb": group_duck,
                "ratio": round(group_feed["median_ms"] / group_duck["median_ms"], 2)},
    "stream": {"rows": total, "pages": pages, "secs": round(stream_secs, 1),
               "rows_per_sec": round(total / stream_secs),
               "duckdb_rows": duck_total, "duckdb_secs": round(duck_stream_secs, 1),
               "duckdb_rows_per_sec": round(duck_total / duck_stream_secs),
               "server_rss_mib": {"before": rss_start // 1024,
                                  "first_quarter_max": max(rss_samples[:quarter]) // 1024,
                                  "last_quarter_max": max(rss_samples[-quarter:]) // 1024,
                                  "max": max(rss_samples) // 1024}},
}, indent=1))
