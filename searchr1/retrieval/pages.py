"""Fetch-and-trim of a web result's page: the paragraphs around the engine's snippet, as Search-R1's Google server.

Search-R1 (``search_r1/search/google_search_server.py``, without ``--snippet_only``) downloads each HTML result,
keeps the text of its ``<p>`` elements, splits the snippet on ``...`` into segments of more than five words and
returns the page paragraphs that contain a segment. Here the same, with the standard library's HTML parser instead
of BeautifulSoup, and two departures: when no paragraph matches (or the page cannot be fetched) the snippet itself
is kept instead of dropping the result, and the text is trimmed to ``max_chars`` at a word boundary.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser
from urllib.parse import urlsplit

PAGE_SUFFIXES = ("", ".html", ".htm", ".shtml")  # Search-R1's filter_links: other files (PDF, ...) are not read


class _Paragraphs(HTMLParser):
    """Collects the text of every ``<p>`` element (nested tags' text included, scripts and styles skipped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._depth = 0
        self._skip = 0
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "p":
            if self._depth == 0:
                self._parts = []
            self._depth += 1
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self._depth:
            self._depth -= 1
            if self._depth == 0:
                self.paragraphs.append("".join(self._parts).strip())
        elif tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._depth and not self._skip:
            self._parts.append(data)


def page_text(html: str) -> str:
    """The text of a page's ``<p>`` elements, one per line (what Search-R1 reads from a page)."""
    parser = _Paragraphs()
    parser.feed(html)
    parser.close()
    return "\n".join(p for p in parser.paragraphs if p)


def snippet_segments(snippet: str) -> list[str]:
    """Search-R1's ``parse_snippet``: the ``...``-separated parts of a snippet with more than five words."""
    return [s.strip() for s in snippet.split("...") if len(s.strip().split()) > 5]


def collect_context(snippet: str, page: str) -> str:
    """The page lines (paragraphs) that contain a snippet segment, in page order of the segments, without repeats."""
    lines = page.split("\n")
    found: list[str] = []
    for segment in snippet_segments(snippet):
        for line in lines:
            if segment in line and line.strip() not in found:
                found.append(line.strip())
                break
    return "\n".join(found)


def trim(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at the last space before the limit when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


def is_page_link(link: str) -> bool:
    """An ``http(s)`` link to an HTML page (by its path's suffix), as Search-R1's ``filter_links``."""
    parts = urlsplit(link)
    return parts.scheme in ("http", "https") and os.path.splitext(parts.path)[1].lower() in PAGE_SUFFIXES
