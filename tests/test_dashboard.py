"""The dashboard's files over HTTP: security headers, ETag revalidation, no path escapes, a pinned vendored chart."""

from __future__ import annotations

import hashlib
import re

import pytest
from aiohttp.test_utils import TestClient

from server.handlers.dashboard import DASHBOARD_DIR
from tests.conftest import assert_error

VENDOR = DASHBOARD_DIR / "vendor"


async def test_the_page_is_served_at_root_with_a_strict_policy(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe" not in csp and "http" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    html = await resp.text()
    # No inline script or style: every script and stylesheet is a same-origin file.
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/dashboard/js/main.js">']
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"


@pytest.mark.parametrize(("path", "content_type"), [
    ("/dashboard/js/main.js", "text/javascript; charset=utf-8"),
    ("/dashboard/app.css", "text/css; charset=utf-8"),
    ("/dashboard/vendor/uPlot.esm.js", "text/javascript; charset=utf-8"),
    ("/dashboard/favicon.svg", "image/svg+xml; charset=utf-8"),
])
async def test_assets_revalidate_with_their_etag(client: TestClient, path: str, content_type: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    etag = resp.headers["ETag"]
    body = await resp.read()
    assert etag == '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    again = await client.get(path, headers={"If-None-Match": f'"other", {etag}'})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    changed = await client.get(path, headers={"If-None-Match": '"stale"'})
    assert changed.status == 200 and await changed.read() == body


@pytest.mark.parametrize("path", [
    "/dashboard/../server/app.py",
    "/dashboard/%2e%2e/%2e%2e/pyproject.toml",
    "/dashboard/js/../../../server/settings.py",
    "/dashboard/vendor/VENDORED",
    "/dashboard/vendor/uPlot.LICENSE",
    "/dashboard/js/nothing.js",
    "/dashboard/.hidden.js",
    "/dashboard/js/",
])
async def test_nothing_outside_the_served_files_is_reachable(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    await assert_error(resp, 404, "not_found")


async def test_the_dashboard_needs_no_token_but_its_api_calls_do(client: TestClient) -> None:
    assert (await client.get("/")).status == 200
    await assert_error(await client.get("/api/stats"), 401, "unauthorized")


def test_vendored_chart_library_matches_its_recorded_version_and_hashes() -> None:
    lines = (VENDOR / "VENDORED").read_text().splitlines()
    name, version, licence, _ = lines[0].split(" ")
    assert (name, licence) == ("uplot", "MIT") and re.fullmatch(r"\d+\.\d+\.\d+", version)
    for line in lines[1:]:
        digest, filename = line.split()
        assert hashlib.sha256((VENDOR / filename).read_bytes()).hexdigest() == digest, filename
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()


def test_dashboard_scripts_never_build_html_from_strings() -> None:
    # Event values (paths, names, properties, chat answers) must only ever reach the page as text.
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|srcdoc")
    for path in sorted((DASHBOARD_DIR / "js").glob("*.js")):
        assert not sinks.search(path.read_text()), path.name
    assert not sinks.search((VENDOR / "uPlot.esm.js").read_text())


def test_no_asset_refers_to_another_origin() -> None:
    for path in [DASHBOARD_DIR / "index.html", DASHBOARD_DIR / "app.css", *(DASHBOARD_DIR / "js").glob("*.js")]:
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", path.read_text()), path.name
