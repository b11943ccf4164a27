"""GET /api/stats and POST /api/query: parse parameters, catch the mirror up, run the report on DuckDB."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
from aiohttp import web

from analytics.metrics import METRICS, finish_metric, format_hour
from analytics.mirror import read_caught_up
from analytics.query import QueryError, Scope, build_count_sql, build_query_sql, parse_query
from analytics.stats import (
    DEFAULT_FUNNEL,
    INTERVALS,
    MAX_BUCKETS,
    PERIODS,
    ReportRequest,
    buckets,
    compute_report,
    default_interval,
    local_midnight,
    period_range,
    previous_range,
)
from analytics.timerange import parse_range, resolve_timezone
from server.errors import json_response, read_json_object, validation_error
from server.events import normalise_event_type
from server.keys import CLOCK, JOIN_ORDER, LIMITS, MIRROR, SHOPS, WAREHOUSE
from server.params import shop_param, timezone_param

SELECT_FIRST_EVENT = "SELECT min(ts) FROM events WHERE ($shop IS NULL OR shop_id = $shop)"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
T = TypeVar("T")






def _bool(query: Any, name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = _BOOLS.get(raw.strip().lower())
    if value is None:
        raise validation_error(name, "must be true or false")
    return value


def _funnel(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_FUNNEL
    steps = tuple(normalise_event_type(step.strip()) for step in raw.split(","))
    if not 1 <= len(steps) <= 10 or any(not 1 <= len(s) <= 100 or not s.isprintable() for s in steps):
        raise validation_error("funnel", "must be 1 to 10 comma-separated event types")
    return steps


def _explicit_range(start_raw: str | None, end_raw: str | None, tz_name: str, now: datetime
                    ) -> tuple[datetime, datetime]:
    tz = resolve_timezone(tz_name)
    if start_raw is None:
        raise validation_error("startDate", "is required when endDate is given")
    try:
        start, end = parse_range(start_raw, end_raw, tz)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise validation_error(field, message) from None
    assert start is not None
    if end is None:
        end = local_midnight(now.astimezone(tz).date() + timedelta(days=1), tz)
        if start > end:
            raise validation_error("startDate", "is in the future: the range would end before it starts")
    return start, end


def _read_caught_up(request: web.Request, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> Awaitable[T]:
    return read_caught_up(request.app[WAREHOUSE], request.app[MIRROR], fn)


def _scalar(conn: duckdb.DuckDBPyConnection, text: str, params: dict[str, Any]) -> int:
    row = conn.execute(text, params).fetchone()
    return int(row[0]) if row else 0


def _first_bad_pattern(conn: duckdb.DuckDBPyConnection, patterns: list[tuple[int, str]]) -> tuple[int, str] | None:
    for index, pattern in patterns:
        try:
            conn.execute("SELECT regexp_matches('', $p)", {"p": pattern}).fetchall()
        except duckdb.Error:
            return index, pattern
    return None


def _first_event(conn: duckdb.DuckDBPyConnection, shop_id: str | None) -> datetime | None:
    row = conn.execute(SELECT_FIRST_EVENT, {"shop": shop_id}).fetchone()
    return row[0] if row and row[0] is not None else None


def _default_timezone(request: web.Request, shop_id: str | None, value: Any) -> Any:
    """An explicit timezone wins; otherwise the registered shop's own, else UTC."""
    if value is not None:
        return value
    shop = request.app[SHOPS].get(shop_id)
    return shop.timezone if shop is not None else None


async def get_stats(request: web.Request) -> web.Response:
    # Reports are the expensive reads: a bounded number run at once, so a burst cannot exhaust memory or CPU.
    async with request.app[LIMITS].queries.slot():
        return await _get_stats(request)


async def post_query(request: web.Request) -> web.Response:
    async with request.app[LIMITS].queries.slot():
        return await _post_query(request)


async def _get_stats(request: web.Request) -> web.Response:
    query = request.query
    shop_id = shop_param(request, query.get("shopId"))
    tz_name = timezone_param(_default_timezone(request, shop_id, query.get("timezone")))
    tz = resolve_timezone(tz_name)
    now = datetime.fromtimestamp(request.app[CLOCK]() / 1000, UTC)
    period = query.get("period")
    if period is not None and period not in PERIODS:
        raise validation_error("period", f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    compare = query.get("compare")
    if compare is not None and compare not in ("previous", "year"):
        raise validation_error("compare", "must be previous or year")
    interval = query.get("interval")
    if interval is not None and interval not in INTERVALS:
        raise validation_error("interval", f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    include_bots = _bool(query, "includeBots")
    funnel = _funnel(query.get("funnel"))
    explicit = "startDate" in query or "endDate" in query
    if explicit:
        start, end = _explicit_range(query.get("startDate"), query.get("endDate"), tz_name, now)
        period = None
    else:
        period = period or "30d"

    warehouse = request.app[WAREHOUSE]
    caught_up = False
    if period == "all":
        first = await _read_caught_up(request, lambda conn: _first_event(conn, shop_id))
        start, end = period_range(period, now, tz, first)
        caught_up = True
    elif period is not None:
        start, end = period_range(period, now, tz)
    interval = interval or default_interval(start, end)
    if len(buckets(start, end, tz, interval)) > MAX_BUCKETS:
        raise validation_error("interval", f"gives more than {MAX_BUCKETS} buckets for this range: use a coarser one")
    previous = previous_range(start, end, compare, period, tz) if compare else None
    report_request = ReportRequest(
        scope=Scope(shop_id, start, end, tz_name, include_bots),
        interval=interval,
        compare=compare,
        previous=previous,
        funnel=funnel,
    )
    switch = request.app[JOIN_ORDER]

    def report(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        return compute_report(conn, report_request, switch)

    return json_response(await (warehouse.read(report) if caught_up else _read_caught_up(request, report)))


async def _post_query(request: web.Request) -> web.Response:
    doc = await read_json_object(request, '{"metrics": ["sessions"]}')
    shop_id = shop_param(request, doc.get("shopId"))
    tz_name = timezone_param(_default_timezone(request, shop_id, doc.get("timezone")))
    tz = resolve_timezone(tz_name)
    include_bots = doc.get("includeBots", False)
    if not isinstance(include_bots, bool):
        raise validation_error("includeBots", "must be true or false")
    try:
        query = parse_query(doc)
    except QueryError as exc:
        raise validation_error(exc.field, exc.message) from None
    now = datetime.fromtimestamp(request.app[CLOCK]() / 1000, UTC)
    date_range = doc.get("dateRange", "30d")
    if isinstance(date_range, str):
        if date_range not in PERIODS:
            raise validation_error("dateRange", f"must be one of {', '.join(PERIODS)} or [start, end]")
        first = None
        if date_range == "all":
            first = await _read_caught_up(request, lambda conn: _first_event(conn, shop_id))
        start, end = period_range(date_range, now, tz, first)
        normalised_range: Any = date_range
    elif (isinstance(date_range, list) and len(date_range) == 2
          and all(isinstance(v, str) for v in date_range)):
        try:
            bounds = parse_range(date_range[0], date_range[1], tz)
        except ValueError as exc:
            raise validation_error("dateRange", str(exc).partition(": ")[2]) from None
        start, end = bounds[0] or now, bounds[1] or now
        normalised_range = date_range
    else:
        raise validation_error("dateRange", "must be a period name such as 30d, or [start, end] dates")

    scope = Scope(shop_id, start, end, tz_name, include_bots)
    sql = build_query_sql(query, scope)
    # DuckDB's regular expressions are RE2, stricter than Python's re (no look-arounds or back-references).
    patterns = [(i, p) for i, f in enumerate(query.filters) if f.op == "matches" for p in f.values]
    if patterns:
        bad = await request.app[WAREHOUSE].read(lambda conn: _first_bad_pattern(conn, patterns))
        if bad is not None:
            raise validation_error(f"filters[{bad[0]}]", f"{bad[1]!r} is not a regular expression DuckDB (RE2) "
                                   "accepts: look-arounds and back-references are not supported")
    rows = await _read_caught_up(request, lambda conn: conn.execute(sql.text, sql.params).fetchall())

    n_dims = len(query.dimensions)
    results = []
    for row in rows:
        dims = list(row[:n_dims])
        for i, name in enumerate(query.dimensions):
            if name == "time:hour" and dims[i] is not None:
                dims[i] = format_hour(int(dims[i]), tz)
        metrics = [finish_metric(METRICS[name], value)
                   for name, value in zip(query.metrics, row[n_dims:n_dims + len(query.metrics)], strict=True)]
        results.append({"dimensions": dims, "metrics": metrics})
    if rows:
        total = int(rows[0][-1])
    elif query.offset:
        count_sql = build_count_sql(query, scope)
        total = await request.app[WAREHOUSE].read(lambda conn: _scalar(conn, count_sql.text, count_sql.params))
    else:
        total = 0
    normalised = {
        "shopId": shop_id,
        "metrics": list(query.metrics),
        "dimensions": list(query.dimensions),
        "filters": [[f.op, f.dimension, list(f.values)] for f in query.filters],
        "dateRange": normalised_range,
        "range": {"start": start.astimezone(tz).isoformat(timespec="seconds"),
                  "end": end.astimezone(tz).isoformat(timespec="seconds")},
        "timezone": tz_name,
        "orderBy": [list(o) for o in query.order_by],
        "limit": query.limit,
        "offset": query.offset,
        "includeBots": include_bots,
    }
    return json_response({"results": results, "meta": {"total": total}, "query": normalised})

