"""GET /healthz, GET /metrics and GET /api/openapi.json."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from analytics import sqlitelib
from server import __version__
from server.errors import ApiError, json_response
from server.events import format_ms
from server.keys import MIRROR, STORE, TELEMETRY
from server.store import SELECT_MAX_SEQ

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


async def healthz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        row = await store.fetchone(SELECT_MAX_SEQ)
    except sqlitelib.Error as exc:
        raise ApiError(503, "overloaded", f"Storage is unusable: {exc}.", headers={"Retry-After": "5"}) from None
    if not store.writer_alive:
        raise ApiError(503, "overloaded", "The storage writer is not running.", headers={"Retry-After": "5"})
    if store.fault is not None:
        # A write failed: probe with a real write (rolled back), so health turns 200 as soon as writes work again
        # even when no client is sending (a load balancer may hold them back while this says 503).
        fault = await store.probe()
        if fault is not None:
            raise ApiError(503, "overloaded", f"Storage cannot take writes: {fault}.", headers={"Retry-After": "5"})
    status = request.app[MIRROR].status
    lag = max(0, int(row[0]) - status.watermark)
    last_sync = format_ms(status.last_sync_ms) if status.last_sync_ms is not None else None
    mirror = {"lagEvents": lag, "lastSyncAt": last_sync}
    return json_response({"status": "ok", "version": __version__, "mirror": mirror})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=OPENAPI_PATH.read_bytes(), content_type="application/json", charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[TELEMETRY].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
