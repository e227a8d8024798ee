"""CSV export benchmark: the whole Chats table through GET /api/v1/export/Chats.csv
against DuckDB's COPY ... TO 'file.csv' of the same Parquet files, in one run.

usage: export_bench.py FEED_ROOT API_KEY STORE_DIR SERVER_PID SCRATCH_DIR

FEED_ROOT is the service root (http://host:port/). Prints one JSON object.
"""

import json
import os
import sys
import time

import duckdb
import requests

ROOT, KEY, STORE, PID, SCRATCH = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def rss_kib() -> int:
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


rss_before = rss_kib()
samples = []
t = time.perf_counter()
size = 0
with requests.get(ROOT + "api/v1/export/Chats.csv", headers={"Authorization": f"Bearer {KEY}"}, stream=True) as r:
    r.raise_for_status()
    for chunk in r.iter_content(chunk_size=1 << 20):
        size += len(chunk)
        if len(samples) < 100000:
            samples.append(rss_kib())
feed_secs = time.perf_counter() - t

out = os.path.join(SCRATCH, "duckdb-chats.csv")
con = duckdb.connect()
t = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_parquet('{STORE}/Chats/*/*/*.parquet')) TO '{out}' (HEADER)")
duck_secs = time.perf_counter() - t
duck_size = os.path.getsize(out)
os.remove(out)

quarter = max(1, len(samples) // 4)
feed_mbs = size / feed_secs / 1e6
duck_mbs = duck_size / duck_secs / 1e6
print(json.dumps({
    "feed": {"bytes": size, "secs": round(feed_secs, 1), "mb_per_sec": round(feed_mbs, 1)},
    "duckdb": {"bytes": duck_size, "secs": round(duck_secs, 1), "mb_per_sec": round(duck_mbs, 1)},
    "throughput_ratio": round(feed_mbs / duck_mbs, 2),
    "server_rss_mib": {"before": rss_before // 1024,
                       "first_quarter_max": max(samples[:quarter]) // 1024,
                       "last_quarter_max": max(samples[-quarter:]) // 1024},
}, indent=1))
