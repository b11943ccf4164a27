"""The browser tracker as served: its bytes, a gzip copy and an ETag, read once when the app is built."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

TRACKER_PATH = Path(__file__).resolve().parent.parent / "static" / "tracker.js"
# Shops rarely change trackers and browsers revalidate with the ETag after an hour; a day of stale use while the
# revalidation runs keeps pages fast when this server is slow.
TRACKER_CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"


@dataclass(frozen=True, slots=True)
class TrackerAsset:
    body: bytes
    gzipped: bytes
    etag: str  # quoted, strong: the same bytes give the same tag on every server


def load_tracker(path: Path = TRACKER_PATH) -> TrackerAsset:
    body = path.read_bytes()
    # mtime=0 makes the gzip bytes depend on the content only, like the ETag.
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return TrackerAsset(body=body, gzipped=gzipped, etag=etag)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored; '*' matches anything."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when Accept-Encoding names gzip (or *) without q=0."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower().replace(" ", "")
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    return False
            except ValueError:
                return False
        return True
    return False
