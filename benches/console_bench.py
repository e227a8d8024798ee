"""Console benchmark: page times over HTTP against DuckDB on the same Parquet files.

usage: console_bench.py BASE_URL ADMIN_KEY STORE_DIR NDJSON CHATS PROFILE

Prints a Markdown table. Page times are whole HTTP round trips on loopback (the server
renders the page; nothing is cached between requests), medians of warm runs.
"""

import json
import re
import sys

import duckdb
import requests
from timing import timed

BASE, KEY, STORE, NDJSON, CHATS, PROFILE = sys.argv[1:7]
CHATS_PARQUET = f"read_parquet('{STORE}/Chats/*/*/*.parquet')"
LINES_PARQUET = f"read_parquet('{STORE}/ChatLines/*/*/*.parquet')"
PHRASE = "error 51"


def signed_in_session() -> requests.Session:
    session = requests.Session()
    form = session.get(f"{BASE}/console/")
    token = re.search(r'name="token" value="([0-9a-f]+)"', form.text).group(1)
    answer = session.post(f"{BASE}/console/sign-in", data={"key": KEY, "token": token, "next": "/console/"},
                          allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return session


def median(fn, runs=9, warm=2):
    return timed(fn, runs, warm)["median_ms"]


session = signed_in_session()


def page(path: str) -> str:
    r = session.get(f"{BASE}{path}")
    r.raise_for_status()
    return r.text


# A chat of site 3 in August 2024 (the search's question) to open.
con = duckdb.connect()
uid = con.execute(
    f"SELECT ChatUID FROM {CHATS_PARQUET} WHERE SiteKey = 3 AND Started >= '2024-08-01' "
    "AND Started < '2024-09-01' ORDER BY Started DESC, ChatUID DESC LIMIT 1").fetchone()[0]

SEARCH = "/console/search?site=3&from=2024-08-01&to=2024-08-31"
FREE = f'/console/search?q=%22{PHRASE.replace(" ", "+")}%22'
results = {
    "home": median(lambda: page("/console/")),
    "search": median(lambda: page(SEARCH)),
    "free_text": median(lambda: page(FREE), runs=3, warm=1),
    "chat": median(lambda: page(f"/console/chats/{uid}")),
    "versions": median(lambda: page(f"/console/chats/{uid}/versions"), runs=1, warm=0),
}
assert uid in page(SEARCH), "the search page lists the chat DuckDB found first"


def duck_search():
    con.execute(
        f"SELECT count(*) FROM {CHATS_PARQUET} WHERE SiteKey = 3 AND Started >= '2024-08-01' "
        "AND Started < '2024-09-01'").fetchall()
    con.execute(
        f"SELECT ChatUID, SiteKey, Started, Name, Email, TakenByUsers, TakenByDept, Missed, Rating, Tags "
        f"FROM {CHATS_PARQUET} WHERE SiteKey = 3 AND Started >= '2024-08-01' AND Started < '2024-09-01' "
        "ORDER BY Started DESC, ChatUID DESC LIMIT 51").fetchall()


def duck_free_text():
    con.execute(
        f"WITH hits AS (SELECT DISTINCT ChatUID FROM {LINES_PARQUET} WHERE lower(Message) LIKE '%{PHRASE}%') "
        f"SELECT c.ChatUID, c.Started FROM {CHATS_PARQUET} c JOIN hits USING (ChatUID) "
        "ORDER BY c.Started DESC, c.ChatUID DESC LIMIT 51").fetchall()


duck = {
    "search": median(duck_search),
    "free_text": median(duck_free_text, runs=3, warm=1),
}

print(f"chatvault {PROFILE} profile, {int(CHATS):,} chats, medians of warm runs")
print()
print("| page | console (ms) | DuckDB, same question (ms) | ratio |")
print("|---|---|---|---|")
for name in ["home", "search", "free_text", "chat", "versions"]:
    d = duck.get(name)
    ratio = f"{results[name] / d:.2f}x" if d else "–"
    print(f"| {name.replace('_', ' ')} | {results[name]} | {d if d else '–'} | {ratio} |")
print()
print(json.dumps({"console_ms": results, "duckdb_ms": duck}))
