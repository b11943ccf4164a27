"""GET /healthz and GET /api/openapi.json."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import web

from server import __version__
from server.errors import ApiError, json_response
from server.keys import STORE

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"
SELECT_HEALTH = "SELECT coalesce(max(seq), 0) FROM events"


async def healthz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        row = await store.fetchone(SELECT_HEALTH)
    except sqlite3.Error as exc:
        raise ApiError(503, "overloaded", f"Storage is unusable: {exc}.", headers={"Retry-After": "5"}) from None
    if not store.writer_alive:
        raise ApiError(503, "overloaded", "The storage writer is not running.", headers={"Retry-After": "5"})
    # The DuckDB mirror arrives with the analytics work; until then nothing is mirrored, so all events lag.
    return json_response(
        {"status": "ok", "version": __version__, "mirror": {"lagEvents": int(row[0]), "lastSyncAt": None}}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=OPENAPI_PATH.read_bytes(), content_type="application/json", charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )
