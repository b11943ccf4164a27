"""create_app(settings): keys, lifecycle contexts, middlewares and routes — no handlers here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from server.auth import auth_middleware, resolve_admin_token
from server.errors import error_middleware
from server.events import MAX_BODY_BYTES
from server.keys import ADMIN_TOKEN, CLOCK, SETTINGS, STORE
from server.routes import setup_routes
from server.settings import Settings
from server.store import Store

log = logging.getLogger("flowtel")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = Store(settings.database_path, synchronous=settings.sqlite_synchronous,
                  queue_limit=settings.write_queue_events)
    await store.open()
    app[STORE] = store
    log.info("SQLite store open at %s", settings.database_path)
    yield
    # Runs after the server stopped accepting and in-flight requests finished: commit what is queued, close.
    await store.close()
    log.info("SQLite store closed")


async def admin_token_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[ADMIN_TOKEN] = resolve_admin_token(settings)
    if not settings.auth_enabled:
        log.warning("FLOWTEL_AUTH=off: every read route is open to anyone who can reach this server")
    yield


def create_app(settings: Settings, *, clock: Callable[[], int] = wall_clock_ms) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        # A little above the JSON limit so a gzip body of up to 1 MiB reaches our own, clearer check.
        client_max_size=MAX_BODY_BYTES + 64 * 1024,
        # We inflate gzip ourselves with a hard cap; aiohttp's automatic inflation has none we control.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(admin_token_ctx)
    setup_routes(app, settings)
    return app
