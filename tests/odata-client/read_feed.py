"""Reads the Chatvault feed with a third-party OData v4 client (python-odata).

The client reflects the entity model from $metadata, then iterates a whole entity set,
following every @odata.nextLink it is given. Prints one JSON line with what it saw, for
the Rust test to check against the store.

usage: read_feed.py SERVICE_URL API_KEY ENTITY_SET
"""

import json
import sys

import requests
from odata import ODataService


def main() -> None:
    url, key, entity_set = sys.argv[1:4]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    pages = []

    def count_pages(response, *args, **kwargs):
        if "/$metadata" not in response.url:
            pages.append(response.url)

    session.hooks["response"].append(count_pages)
    service = ODataService(url, session=session, reflect_entities=True)
    entity = service.entities[entity_set]
    key_props = entity.__new__(entity).__odata__.primary_key_properties
    keys = [prop.name for _, prop in key_props]

    seen = set()
    duplicates = 0
    for row in service.query(entity):
        identity = tuple(getattr(row, attr) for attr, _ in key_props)
        if identity in seen:
            duplicates += 1
        seen.add(identity)

    print(json.dumps({
        "entity_sets": sorted(service.entities.keys()),
        "keys": keys,
        "rows": len(seen),
        "duplicates": duplicates,
        "pages": len(pages),
        "followed_skiptokens": sum(1 for p in pages if "skiptoken" in p),
    }))


if __name__ == "__main__":
    main()
