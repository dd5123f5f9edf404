"""Opt-outs a site owner sends with an image: read from the response headers before any byte of the body.

* ``X-Robots-Tag`` (https://developers.google.com/search/docs/crawling-indexing/robots-meta-tag): a directive of
  ``crawl.disallowed_header_directives`` (img2dataset's ``disallowed_header_directives`` by default: ``noai``,
  ``noimageai``, ``noindex``, ``noimageindex``), either for every crawler (``X-Robots-Tag: noai``) or scoped to
  MRBench's user-agent token (``X-Robots-Tag: mrbench: noai``); a directive scoped to another crawler
  (``googlebot: noindex``) does not apply. Several headers and comma-separated directives are all read.
* ``tdm-reservation: 1`` (W3C TDMRep, https://www.w3.org/community/reports/tdmrep/CG-FINAL-tdmrep-20240510/):
  the rights holder reserves text and data mining.

A match makes the row ``opted_out``, with the header and directive in its message.

robots.txt is not fetched, as img2dataset does not: the URLs come from metadata whose pages were already crawled
(Common Crawl honours robots.txt), robots.txt rules are about crawling paths rather than about using an image, and
asking each of millions of hosts that serve one or two images for their robots.txt would about double the requests
of a web-scale crawl. The per-image headers above are the opt-out signal that travels with the image itself.
"""

from __future__ import annotations

import re
from typing import Iterable

from mrbench.curation.config import CrawlConfig

OPTED_OUT = "opted_out"
# Directives whose value follows a colon ("unavailable_after: 25 Jun 2010"): their name is not a user-agent token.
_VALUED = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_SCOPED = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*:(.*)", re.S)


def robots_directives(value: str, token: str) -> list[str]:
    """The directives of one ``X-Robots-Tag`` value that apply to a crawler named ``token`` (lowercase): all of
    an unscoped value, those of a value scoped to ``token``, none of a value scoped to another crawler."""
    m = _SCOPED.match(value)
    if m and m.group(1).lower() not in _VALUED:
        if m.group(1).lower() != token:
            return []
        value = m.group(2)
    return [d.split(":", 1)[0].strip().lower() for d in value.split(",") if d.strip()]


def opt_out_reason(headers: Iterable[tuple[str, str]], config: CrawlConfig) -> str | None:
    """Why a response with ``headers`` (name, value pairs) opts out of MRBench, or None.

    Args:
        headers: The response headers (every occurrence of a repeated header).
        config: ``disallowed_header_directives``, ``honor_tdm_reservation`` and ``user_agent_token``.
    """
    disallowed = {d.lower() for d in config.disallowed_header_directives}
    token = config.user_agent_token.lower()
    for name, value in headers:
        key = name.lower()
        if key == "x-robots-tag" and disallowed:
            hit = next((d for d in robots_directives(value, token) if d in disallowed), None)
            if hit is not None:
                return f"X-Robots-Tag {value.strip()[:120]!r}: directive {hit!r}"
        elif key == "tdm-reservation" and config.honor_tdm_reservation and value.strip() == "1":
            return "tdm-reservation: 1 (TDMRep: text and data mining reserved)"
    return None
