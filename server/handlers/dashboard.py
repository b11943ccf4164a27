"""GET / and GET /dashboard/{path}: the built-in dashboard's files, with a strict CSP and ETag revalidation."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from pathlib import Path

from aiohttp import web

from server.errors import ApiError

DASHBOARD_DIR = Path(__file__).resolve().parent.parent.parent / "static" / "dashboard"

# Same-origin only: no inline script or style, no third-party origins, no framing. Chart.js-style inline styles
# are not needed: uPlot sets styles through the CSSOM, which CSP does not restrict.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# Revalidate every time: the ETag makes that a 304 with no body, and an upgrade shows up at once.
CACHE_CONTROL = "no-cache"
_ASSET_PATH = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
          ".png": "image/png", ".json": "application/json"}


def _asset_file(name: str) -> Path:
    """The file for an asset path; 404 for anything outside the dashboard folder or not a served type."""
    if not _ASSET_PATH.match(name) or Path(name).suffix not in _TYPES:
        raise ApiError(404, "not_found", f"No dashboard file {name!r}: the dashboard lives at /.")
    path = (DASHBOARD_DIR / name).resolve()
    if not path.is_relative_to(DASHBOARD_DIR) or not path.is_file():
        raise ApiError(404, "not_found", f"No dashboard file {name!r}: the dashboard lives at /.")
    return path


def _file_response(request: web.Request, path: Path) -> web.Response:
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    charset = "utf-8" if content_type.startswith("text/") or content_type.endswith(("json", "xml")) else None
    return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)


async def index(request: web.Request) -> web.Response:
    return _file_response(request, DASHBOARD_DIR / "index.html")


async def asset(request: web.Request) -> web.Response:
    return _file_response(request, _asset_file(request.match_info["path"]))
