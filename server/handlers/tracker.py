"""GET /tracker.js: the browser tracker, cached by ETag, gzip when the client accepts it, loadable from any origin."""

from __future__ import annotations

from aiohttp import web

from server.keys import TRACKER
from server.tracker import TRACKER_CACHE_CONTROL, accepts_gzip, etag_matches

JAVASCRIPT = "text/javascript; charset=utf-8"


async def get_tracker(request: web.Request) -> web.Response:
    asset = request.app[TRACKER]
    headers = {
        "ETag": asset.etag,
        "Cache-Control": TRACKER_CACHE_CONTROL,
        # CORS answers echo the requesting origin, so a shared cache must keep one copy per origin too.
        "Vary": "Accept-Encoding, Origin",
        # Shops that isolate their pages (COEP) may still load it; CORS for crossorigin= tags comes from the route.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag_matches(request.headers.get("If-None-Match"), asset.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = JAVASCRIPT
    if accepts_gzip(request.headers.get("Accept-Encoding")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=asset.gzipped, headers=headers)
    return web.Response(body=asset.body, headers=headers)
