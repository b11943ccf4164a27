"""Insights on the server: generate (detect → narrate → store), list stored ones, and the daily job's schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiosqlite
import duckdb
import orjson

from analytics.insights import compute_findings
from analytics.llm import LLM
from analytics.mirror import Mirror, read_caught_up
from analytics.narration import narrate_all
from analytics.timerange import resolve_timezone
from analytics.warehouse import Warehouse
from server.events import format_ms, new_event_id
from server.store import Store

log = logging.getLogger("flowtel.insights")

INSIGHT_TYPES = ("summary", "trend", "anomaly")
INSERT_INSIGHT = """
INSERT INTO insights (id, shop_id, type, title, content, metadata, generated_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
# Generating a day again replaces that day's insights (same shop and timezone) instead of piling up copies.
DELETE_DAY = """
DELETE FROM insights
WHERE shop_id = ? AND json_extract(metadata, '$.date') = ? AND json_extract(metadata, '$.timezone') = ?
"""
SELECT_INSIGHTS = """
SELECT id, shop_id, type, title, content, metadata, generated_at, created_at FROM insights {where}
ORDER BY generated_at DESC, id DESC LIMIT ? OFFSET ?
"""
COUNT_INSIGHTS = "SELECT count(*) FROM insights {where}"
# Shops with an event in the last week are the ones the daily job writes insights for.
SELECT_ACTIVE_SHOPS = "SELECT DISTINCT shop_id FROM events WHERE ts >= $since ORDER BY shop_id"
ACTIVE_DAYS = 7


@dataclass(frozen=True, slots=True)
class InsightFilter:
    shop_id: str | None = None
    type: str | None = None


def filter_sql(flt: InsightFilter) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters for a listing filter (fixed clauses, values bound)."""
    clauses, params = [], []
    if flt.shop_id is not None:
        clauses.append("shop_id = ?")
        params.append(flt.shop_id)
    if flt.type is not None:
        clauses.append("type = ?")
        params.append(flt.type)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def insight_json(row: Any) -> dict[str, Any]:
    return {
        "id": row[0],
        "shopId": row[1],
        "type": row[2],
        "title": row[3],
        "content": row[4],
        "metadata": orjson.loads(row[5]),
        "generatedAt": format_ms(row[6]),
        "createdAt": format_ms(row[7]),
    }


async def list_insights(store: Store, flt: InsightFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = filter_sql(flt)
    async with store.reader() as conn:
        # One read transaction, so the total and the page agree.
        await conn.execute("BEGIN")
        try:
            async with conn.execute(COUNT_INSIGHTS.format(where=where), params) as cursor:
                total = int((await cursor.fetchone() or (0,))[0])
            async with conn.execute(SELECT_INSIGHTS.format(where=where), [*params, limit, offset]) as cursor:
                rows = await cursor.fetchall()
        finally:
            await conn.execute("COMMIT")
    return [insight_json(row) for row in rows], total


def last_complete_day(now: datetime, tz_name: str) -> date:
    return now.astimezone(resolve_timezone(tz_name)).date() - timedelta(days=1)


async def generate_insights(store: Store, warehouse: Warehouse, mirror: Mirror | None, llm: LLM | None,
                            shop_id: str, day: date, tz_name: str, now_ms: int) -> list[dict[str, Any]]:
    """Detect on the warehouse, word (templates or LLM), replace the day's stored insights; returns them as JSON."""
    findings = await read_caught_up(warehouse, mirror, lambda conn: compute_findings(conn, shop_id, day, tz_name))
    items = [(f.type, f.metadata(day, tz_name)) for f in findings]
    wordings = await narrate_all(items, llm)
    rows = []
    for (insight_type, metadata), wording in zip(items, wordings, strict=True):
        metadata = {**metadata, **wording.narration}
        rows.append((new_event_id(), shop_id, insight_type, wording.title, wording.content,
                     orjson.dumps(metadata).decode(), now_ms, now_ms))

    async def replace(conn: aiosqlite.Connection) -> None:
        await conn.execute(DELETE_DAY, (shop_id, day.isoformat(), tz_name))
        await conn.executemany(INSERT_INSIGHT, rows)

    await store.write(replace)
    return [insight_json(row) for row in rows]


def active_shops(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[str]:
    since = now - timedelta(days=ACTIVE_DAYS)
    return [str(row[0]) for row in conn.execute(SELECT_ACTIVE_SHOPS, {"since": since}).fetchall()]


def seconds_until(hour: int, now: datetime) -> float:
    """Seconds from `now` to the next `hour`:00 UTC (a full day when it is that moment exactly)."""
    now = now.astimezone(UTC)
    target = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


async def generate_for_active_shops(store: Store, warehouse: Warehouse, mirror: Mirror | None, llm: LLM | None,
                                    now_ms: int, timezone_of: Callable[[str], str] = lambda shop_id: "UTC",
                                    ) -> dict[str, int]:
    """The daily job's pass: every shop active in the last week, for its last complete day in its own timezone
    (`timezone_of`: a registered shop's timezone, else UTC); insights per shop."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    shops = await read_caught_up(warehouse, mirror, lambda conn: active_shops(conn, now))
    written = {}
    for shop_id in shops:
        tz_name = timezone_of(shop_id)
        day = last_complete_day(now, tz_name)
        try:
            written[shop_id] = len(await generate_insights(store, warehouse, None, llm, shop_id, day, tz_name,
                                                           now_ms))
        except Exception:
            log.exception("daily insights failed for shop %s", shop_id)
    return written
