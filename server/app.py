"""create_app(settings): keys, lifecycle contexts, middlewares and routes — no handlers here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import duckdb
from aiohttp import web

from analytics.llm import make_llm
from analytics.mirror import Mirror
from analytics.sandbox import SandboxCache
from analytics.stats import JoinOrderSwitch
from analytics.warehouse import Warehouse
from server.auth import auth_middleware, resolve_admin_token
from server.errors import error_middleware
from server.events import MAX_BODY_BYTES
from server.insights import generate_for_active_shops, seconds_until
from server.keys import (
    ADMIN_TOKEN,
    CHAT_LIMITER,
    CLOCK,
    JOIN_ORDER,
    LIMITS,
    LLM_CLIENT,
    MIRROR,
    SANDBOXES,
    SETTINGS,
    SHOPS,
    STORE,
    TELEMETRY,
    TRACKER,
    WAREHOUSE,
)
from server.limits import Limits, TokenBuckets
from server.retention import retention_ctx
from server.routes import setup_routes
from server.settings import RATE_BURST_SECONDS, Settings, llm_config
from server.shops import ShopRegistry
from server.store import Store
from server.telemetry import CountedLLM, Telemetry, make_telemetry_middleware
from server.tracker import load_tracker

log = logging.getLogger("flowtel")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = Store(settings.database_path, synchronous=settings.sqlite_synchronous,
                  queue_limit=settings.write_queue_events)
    await store.open()
    app[STORE] = store
    shops = ShopRegistry(store)
    await shops.load()
    app[SHOPS] = shops
    log.info("SQLite store open at %s", settings.database_path)
    yield
    # Runs after the server stopped accepting and in-flight requests finished: commit what is queued, close.
    await store.close()
    log.info("SQLite store closed")


# Rows one background pass may copy; a bigger backlog is worked off over several passes.
MIRROR_PASS_ROWS = 1_000_000


def _mirror_pass(warehouse: Warehouse, mirror: Mirror, conn: duckdb.DuckDBPyConnection) -> None:
    mirror.catch_up(conn, MIRROR_PASS_ROWS)
    # Here rather than in DuckDB's own commit-time checkpoint, so the pause falls on this background pass and not
    # on a stats request's catch-up.
    warehouse.checkpoint_if_wal_over(conn)


async def _mirror_loop(app: web.Application) -> None:
    warehouse, mirror = app[WAREHOUSE], app[MIRROR]
    interval = app[SETTINGS].mirror_interval
    while True:
        try:
            await warehouse.run(functools.partial(_mirror_pass, warehouse, mirror))
        except Exception:
            log.exception("mirror pass failed; retrying in %.1fs", interval)
        await asyncio.sleep(interval)


async def analytics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The DuckDB warehouse and the mirror task that feeds it from SQLite."""
    settings = app[SETTINGS]
    warehouse = Warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit)
    await asyncio.to_thread(warehouse.open_sync)
    mirror = Mirror(settings.database_path)
    await warehouse.run(mirror.load_state)
    app[WAREHOUSE] = warehouse
    app[JOIN_ORDER] = JoinOrderSwitch()
    app[MIRROR] = mirror
    task = asyncio.create_task(_mirror_loop(app), name="flowtel-mirror")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await warehouse.run(lambda conn: mirror.close())
    await asyncio.to_thread(warehouse.close_sync)


def _watch(app: web.Application) -> None:
    def read() -> dict[str, object]:
        store, mirror = app[STORE], app[MIRROR]
        status = mirror.status
        return {
            "ingested": store.stats.ingested,
            "duplicates": store.stats.duplicates,
            "queue": store.queue_depth,
            "lag": max(0, store.last_seq - status.watermark),
            "last_sync": (status.last_sync_ms or 0) / 1000,
            "mirror_duration": status.last_duration_s,
        }

    app[TELEMETRY].watch(read)


async def telemetry_ctx(app: web.Application) -> AsyncIterator[None]:
    _watch(app)
    yield


async def admin_token_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[ADMIN_TOKEN] = resolve_admin_token(settings)
    if not settings.auth_enabled:
        log.warning("FLOWTEL_AUTH=off: every read route is open to anyone who can reach this server")
    yield


async def llm_ctx(app: web.Application) -> AsyncIterator[None]:
    """The LLM adapter (None without a provider); its HTTP connections are closed at shutdown."""
    inner = make_llm(llm_config(app[SETTINGS]))
    llm = CountedLLM(inner, app[TELEMETRY]) if inner is not None else None
    app[LLM_CLIENT] = llm
    if llm is not None:
        log.info("LLM provider %s, model %s", llm.provider, llm.model)
    yield
    if llm is not None:
        await llm.close()


async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
    """Chat's per-process state: the sandboxes per shop and the per-shop request limiter."""
    app[SANDBOXES] = SandboxCache()
    # The same token buckets as the other limits: a shop may burst its whole minute, then one request per 60/rate s.
    per_minute = app[SETTINGS].chat_rate_per_minute
    app[CHAT_LIMITER] = TokenBuckets(per_minute / 60, per_minute, app[CLOCK])
    yield
    app[SANDBOXES].close()


async def _daily_insights_loop(app: web.Application, hour: int) -> None:
    while True:
        now = datetime.fromtimestamp(app[CLOCK]() / 1000, UTC)
        await asyncio.sleep(seconds_until(hour, now))
        try:
            written = await generate_for_active_shops(app[STORE], app[WAREHOUSE], app[MIRROR], app[LLM_CLIENT],
                                                      app[CLOCK](), app[SHOPS].timezone_of)
            log.info("daily insights: %d shops, %d insights", len(written), sum(written.values()))
        except Exception:
            log.exception("daily insights failed; next run in a day")


async def insights_ctx(app: web.Application) -> AsyncIterator[None]:
    """The daily insights job (FLOWTEL_INSIGHTS_HOUR, UTC), when configured."""
    hour = app[SETTINGS].insights_hour
    task = None if hour is None else asyncio.create_task(_daily_insights_loop(app, hour), name="flowtel-insights")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """Startup's objects (modules, UA rules, DuckDB and Arrow bindings: ~290k) leave the cyclic collector's view.

    Measured under the soak's load: a full collection walked them all every ~30 s, holding the GIL for ~150 ms and
    stalling the event loop and any report that needed the GIL then. Frozen, a collection walks only what requests
    created since. Unfrozen at cleanup, so a process that builds many apps (the tests) can still collect them. No
    gc.collect() first: it would cost that same ~150 ms on every start, and startup leaves little garbage to freeze.
    """
    gc.freeze()
    yield
    gc.unfreeze()


def create_app(settings: Settings, *, clock: Callable[[], int] = wall_clock_ms) -> web.Application:
    telemetry = Telemetry()
    app = web.Application(
        middlewares=[make_telemetry_middleware(telemetry), error_middleware, auth_middleware],
        # A little above the JSON limit so a gzip body of up to 1 MiB reaches our own, clearer check.
        client_max_size=MAX_BODY_BYTES + 64 * 1024,
        # We inflate gzip ourselves with a hard cap; aiohttp's automatic inflation has none we control.
        # Explicit limits: a request line over 128 KiB, a header over 8 KiB or more than 100 headers is refused by the
        # HTTP parser (plain text, before any middleware). The line limit sits above the longest URL the OpenAPI
        # document allows (50 repeated selectors of 128 characters, percent-encoded), so every valid request reaches
        # the app and gets the JSON error shape.
        handler_args={"auto_decompress": False, "max_line_size": 128 * 1024, "max_field_size": 8190,
                      "max_headers": 100},
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[TELEMETRY] = telemetry
    app[LIMITS] = Limits(ip_rate=settings.rate_limit_ip, shop_rate=settings.rate_limit_shop,
                         read_rate=settings.rate_limit_read, burst_seconds=RATE_BURST_SECONDS,
                         max_queries=settings.max_concurrent_queries, clock=clock)
    app[TRACKER] = load_tracker()
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(analytics_ctx)
    app.cleanup_ctx.append(telemetry_ctx)
    app.cleanup_ctx.append(admin_token_ctx)
    app.cleanup_ctx.append(llm_ctx)
    app.cleanup_ctx.append(chat_ctx)
    app.cleanup_ctx.append(insights_ctx)
    app.cleanup_ctx.append(retention_ctx)
    app.cleanup_ctx.append(gc_ctx)  # last: after every startup object exists
    setup_routes(app, settings)
    return app
