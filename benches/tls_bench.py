"""The OData feed's first page over one server, plain or TLS: what the handshake and the
record layer add.

usage: tls_bench.py FEED_URL API_KEY CA_FILE_OR_EMPTY

Prints one JSON object: the median and minimum of the first-page request on a kept-alive
connection (what Power BI does) and on a new connection each time (a handshake each).
"""

import json
import sys

import requests
from timing import timed

FEED, KEY, CA = sys.argv[1], sys.argv[2], sys.argv[3]
VERIFY = CA or True
FIRST_PAGE = (
    "Chats?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z"
    "&$select=ChatUID,Started,TakenByUsers,WaitedSeconds,Rating,Missed"
)
HEADERS = {"Authorization": f"Bearer {KEY}"}


session = requests.Session()
session.headers.update(HEADERS)


def kept_alive():
    r = session.get(FEED + FIRST_PAGE, verify=VERIFY)
    r.raise_for_status()
    assert r.json()["value"], "the first page is empty"


def new_connection():
    with requests.Session() as s:
        r = s.get(FEED + FIRST_PAGE, headers=HEADERS, verify=VERIFY)
        r.raise_for_status()


print(json.dumps({"kept_alive": timed(kept_alive, 60, 5), "new_connection": timed(new_connection, 60, 5)}))
