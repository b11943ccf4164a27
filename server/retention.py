"""Retention: the daily purge of events older than FLOWTEL_RETENTION_DAYS, run as a background task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server.keys import CLOCK, SETTINGS, STORE
from server.store import SELECT_SEQS_BEFORE, Store

log = logging.getLogger("flowtel.retention")

DAY_MS = 86_400_000
# Once at start (a server restarted daily still purges), then every day.
PURGE_INTERVAL_S = 86_400.0


def retention_cutoff(days: int, now_ms: int) -> int:
    """Epoch ms before which events are expired."""
    return now_ms - days * DAY_MS


async def purge_expired(store: Store, days: int, now_ms: int) -> int:
    """Delete every event whose timestamp is more than `days` days before now_ms; returns how many."""
    return await store.delete_matching(SELECT_SEQS_BEFORE, (retention_cutoff(days, now_ms),))


async def _purge_daily(app: web.Application, days: int) -> None:
    store, clock = app[STORE], app[CLOCK]
    while True:
        try:
            purged = await purge_expired(store, days, clock())
            if purged:
                log.info("retention: purged %d events older than %d days", purged, days)
        except Exception:
            # A storage fault or a stopping store: the next day's pass tries again; nothing is half-deleted
            # that a later pass does not finish.
            log.exception("retention purge failed")
        await asyncio.sleep(PURGE_INTERVAL_S)


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    days = app[SETTINGS].retention_days
    if days is None:
        yield
        return
    task = asyncio.create_task(_purge_daily(app, days), name="flowtel-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
