"""GET /tracker.js over HTTP: type, ETag and 304, Cache-Control, gzip on request, any origin; and its size budget."""

from __future__ import annotations

import gzip

import pytest
from aiohttp.test_utils import TestClient

from server.tracker import TRACKER_PATH, accepts_gzip, etag_matches

SIZE_BUDGET = 4096  # bytes of gzip, the hard limit
SHOP_ORIGIN = "https://shop.example"


def test_gzipped_tracker_fits_the_4_kib_budget() -> None:
    size = len(gzip.compress(TRACKER_PATH.read_bytes(), compresslevel=9))
    assert size <= SIZE_BUDGET, f"static/tracker.js is {size} bytes gzipped; the budget is {SIZE_BUDGET}"


async def test_tracker_is_javascript_with_validators_and_cache_control(client: TestClient) -> None:
    resp = await client.get("/tracker.js", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "Content-Encoding" not in resp.headers
    assert await resp.read() == TRACKER_PATH.read_bytes()
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    cache_control = resp.headers["Cache-Control"]
    assert "public" in cache_control and "max-age=3600" in cache_control
    assert resp.headers["Vary"] == "Accept-Encoding, Origin"


@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_matching_if_none_match_is_304_without_body(client: TestClient, if_none_match: str) -> None:
    etag = (await client.get("/tracker.js")).headers["ETag"]
    resp = await client.get("/tracker.js", headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert resp.status == 304
    assert await resp.read() == b""
    assert resp.headers["ETag"] == etag
    assert "max-age=3600" in resp.headers["Cache-Control"]


async def test_stale_if_none_match_gets_the_script(client: TestClient) -> None:
    resp = await client.get("/tracker.js", headers={"If-None-Match": '"an-older-version"'})
    assert resp.status == 200
    assert len(await resp.read()) > 0


async def test_gzip_when_accepted_and_same_etag(client: TestClient) -> None:
    plain = await client.get("/tracker.js", headers={"Accept-Encoding": "identity"})
    # auto_decompress=False: read the bytes exactly as sent.
    resp = await client.get("/tracker.js", headers={"Accept-Encoding": "br, gzip;q=0.8"}, auto_decompress=False)
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    body = await resp.read()
    assert len(body) <= SIZE_BUDGET
    assert gzip.decompress(body) == TRACKER_PATH.read_bytes()
    assert resp.headers["ETag"] == plain.headers["ETag"]


async def test_gzip_refused_with_q_zero(client: TestClient) -> None:
    resp = await client.get("/tracker.js", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
    assert "Content-Encoding" not in resp.headers
    assert await resp.read() == TRACKER_PATH.read_bytes()


@pytest.mark.parametrize("origin", [SHOP_ORIGIN, "http://localhost:8080", "null"])
async def test_any_origin_may_load_it_without_credentials(client: TestClient, origin: str) -> None:
    resp = await client.get("/tracker.js", headers={"Origin": origin})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", origin)
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


async def test_tracker_needs_no_token_even_with_auth_on(client: TestClient) -> None:
    resp = await client.get("/tracker.js")
    assert resp.status == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False), ("", False), ("gzip", True), ("GZIP", True), ("deflate, gzip", True), ("br", False),
        ("gzip;q=0", False), ("gzip; q=0.0", False), ("gzip;q=0.5", True), ("*", True), ("gzip;q=x", False),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, False), ("", False), ('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True),
     ('"abcd"', False), ("abc", False)],
)
def test_etag_matches(header: str | None, expected: bool) -> None:
    assert etag_matches(header, '"abc"') is expected
