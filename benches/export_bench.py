"""CSV export benchmark: the whole Chats table through GET /api/v1/export/Chats.csv
against DuckDB's COPY ... TO 'file.csv' of the same Parquet files, in one run.

usage: export_bench.py FEED_ROOT API_KEY STORE_DIR SERVER_PID SCRATCH_DIR

The export is downloaded by curl into a file in SCRATCH_DIR, as DuckDB writes its file
there: both pay for writing the CSV to disk. It is also read once by a Python `requests`
client (`python_client`), which on this machine tops out below the server's rate, so it
measures the client as much as the server. FEED_ROOT is the service root
(http://host:port/). Prints one JSON object.
"""

import json
import os
import subprocess
import sys
import time

import duckdb
import requests

ROOT, KEY, STORE, PID, SCRATCH = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
URL = ROOT + "api/v1/export/Chats.csv"
AUTH = f"Authorization: Bearer {KEY}"


def rss_kib() -> int:
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def curl_export() -> dict:
    """The export saved by curl, with the server's RSS sampled every 50 ms meanwhile."""
    out = os.path.join(SCRATCH, "chatvault-chats.csv")
    samples = []
    t = time.perf_counter()
    curl = subprocess.Popen(["curl", "-sSf", "-o", out, "-H", AUTH, URL])
    while curl.poll() is None:
        samples.append(rss_kib())
        time.sleep(0.05)
    secs = time.perf_counter() - t
    if curl.returncode != 0:
        sys.exit(f"curl failed with exit code {curl.returncode}")
    size = os.path.getsize(out)
    os.remove(out)
    samples = samples or [rss_kib()]
    quarter = max(1, len(samples) // 4)
    return {"bytes": size, "secs": round(secs, 2), "mb_per_sec": round(size / secs / 1e6, 1),
            "rss_first_quarter_max": max(samples[:quarter]) // 1024,
            "rss_last_quarter_max": max(samples[-quarter:]) // 1024}


def python_export() -> dict:
    t = time.perf_counter()
    size = 0
    with requests.get(URL, headers={"Authorization": f"Bearer {KEY}"}, stream=True) as r:
        r.raise_for_status()
        for chunk in r.iter_content(chunk_size=1 << 20):
            size += len(chunk)
    secs = time.perf_counter() - t
    return {"bytes": size, "secs": round(secs, 2), "mb_per_sec": round(size / secs / 1e6, 1)}


def duckdb_copy() -> dict:
    out = os.path.join(SCRATCH, "duckdb-chats.csv")
    con = duckdb.connect()
    t = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_parquet('{STORE}/Chats/*/*/*.parquet')) TO '{out}' (HEADER)")
    secs = time.perf_counter() - t
    size = os.path.getsize(out)
    os.remove(out)
    return {"bytes": size, "secs": round(secs, 2), "mb_per_sec": round(size / secs / 1e6, 1)}


rss_before = rss_kib()
# Interleaved, two rounds: drift on a shared machine hits both sides alike.
feed_runs, duck_runs = [], []
for _ in range(2):
    feed_runs.append(curl_export())
    duck_runs.append(duckdb_copy())
python_run = python_export()
feed = max(feed_runs, key=lambda r: r["mb_per_sec"])
duck = max(duck_runs, key=lambda r: r["mb_per_sec"])
print(json.dumps({
    "feed": feed,
    "duckdb": duck,
    "throughput_ratio": round(feed["mb_per_sec"] / duck["mb_per_sec"], 2),
    "runs": {"feed_mb_per_sec": [r["mb_per_sec"] for r in feed_runs],
             "duckdb_mb_per_sec": [r["mb_per_sec"] for r in duck_runs]},
    "python_client": python_run,
    "server_rss_mib": {"before": rss_before // 1024,
                       "first_quarter_max": max(r["rss_first_quarter_max"] for r in feed_runs),
                       "last_quarter_max": max(r["rss_last_quarter_max"] for r in feed_runs)},
}, indent=1))
