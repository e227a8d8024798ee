#!/usr/bin/env python3
"""Checks the internal links of a built mdBook.

    python3 scripts/check-links.py docs/book

For every page (*.html under the book), every relative link -- `href` on any element and
`src` on images, including in-page anchors such as `#retention` -- must name a file that
exists inside the book and, when it has a fragment, an element with that id (or an <a>
with that name) in the target page. Links with a scheme (https:, mailto:, ...) or
starting with `//` are left alone. A page's <base href> is honoured (mdBook's 404 page
has one that means the book's root).

Prints each broken link with the page it is on and exits 1 if there is any, 0 if there
is none, and 2 when the book folder itself is missing. Python 3 standard library only.
"""

from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class Page(HTMLParser):
    """The ids a page defines, the links it makes, and its <base href>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[int, str]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.ids.add(values["name"])
        if tag == "base" and "href" in values and self.base is None:
            self.base = values["href"]
            return
        line = self.getpos()[0]
        if "href" in values:
            self.links.append((line, values["href"]))
        if tag == "img" and "src" in values:
            self.links.append((line, values["src"]))

    handle_startendtag = handle_starttag


def parse(path: str) -> Page:
    page = Page()
    with open(path, encoding="utf-8", errors="replace") as f:
        page.feed(f.read())
    page.close()
    return page


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BOOK_DIR (e.g. docs/book)", file=sys.stderr)
        return 2
    root = os.path.realpath(argv[1])
    if not os.path.isdir(root):
        print(f"{argv[1]}: no such folder (build the book first: mdbook build docs)", file=sys.stderr)
        return 2

    pages: dict[str, Page] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(folder, name)
                pages[path] = parse(path)
    if not pages:
        print(f"{argv[1]}: no HTML pages found", file=sys.stderr)
        return 2

    broken = 0
    checked = 0
    for path in sorted(pages):
        page = pages[path]
        shown = os.path.relpath(path, root)
        if page.base is None:
            base_dir = os.path.dirname(path)
        elif page.base.startswith("/"):
            base_dir = os.path.join(root, page.base.lstrip("/"))
        elif SCHEME.match(page.base) or page.base.startswith("//"):
            continue  # links resolve against another site
        else:
            base_dir = os.path.normpath(os.path.join(os.path.dirname(path), page.base))
        for line, link in page.links:
            if SCHEME.match(link) or link.startswith("//"):
                continue
            checked += 1
            parts = urlsplit(link)
            fragment = unquote(parts.fragment)
            if parts.path:
                if parts.path.startswith("/"):
                    target = os.path.join(root, unquote(parts.path).lstrip("/"))
                else:
                    target = os.path.join(base_dir, unquote(parts.path))
                target = os.path.realpath(target)
            else:
                target = path  # an in-page anchor
            problem = None
            if os.path.commonpath([root, target]) != root:
                problem = "leads out of the book"
            elif os.path.isdir(target):
                index = os.path.join(target, "index.html")
                if os.path.isfile(index):
                    target = index
                else:
                    problem = "is a folder without index.html"
            elif not os.path.isfile(target):
                problem = "names a file that does not exist"
            if problem is None and fragment:
                if target not in pages:
                    problem = f"has an anchor, but {os.path.relpath(target, root)} is not an HTML page"
                elif fragment not in pages[target].ids:
                    problem = f"#{fragment} is not an id in {os.path.relpath(target, root)}"
            if problem:
                broken += 1
                print(f"{shown}:{line}: {link} {problem}")

    if broken:
        print(f"{broken} broken link(s) of {checked} checked in {len(pages)} pages", file=sys.stderr)
        return 1
    print(f"all {checked} internal links resolve ({len(pages)} pages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
