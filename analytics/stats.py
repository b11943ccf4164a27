"""The /api/stats report: ranges, periods and buckets (pure), and the report computed from the registry."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from analytics.metrics import (
    DIMENSIONS,
    LEVEL1,
    METRICS,
    ORDER_KEY,
    finish_metric,
    format_hour,
    level1_columns,
    money,
    session_columns,
)
from analytics.query import Filter, Query, QueryError, Scope, Sql, aggregate_sql, scope_clauses

PERIODS = ("today", "yesterday", "7d", "30d", "90d", "month", "lastMonth", "year", "all")
INTERVALS = ("hour", "day", "week", "month")
DEFAULT_FUNNEL = ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase")
TOTAL_METRICS = ("events", "pageViews", "sessions", "visitors", "bounceRate", "avgSessionDuration",
                 "viewsPerSession", "orders", "revenue", "averageOrderValue", "conversionRate")
SERIES_METRICS = ("events", "pageViews", "sessions", "visitors", "orders", "revenue")
SESSION_BREAKDOWNS = {
    "entryPages": "entryPage", "exitPages": "exitPage", "sources": "source", "utmCampaigns": "utmCampaign",
    "devices": "device", "browsers": "browser", "os": "os", "countries": "country",
}
MAX_BUCKETS = 5000
TOP = 10


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _month_start(day: date, shift: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


def period_range(period: str, now: datetime, tz: ZoneInfo, first_event: datetime | None = None
                 ) -> tuple[datetime, datetime]:
    """A named period → [start, end) at local midnights. 7d/30d/90d end with today (inclusive)."""
    today = now.astimezone(tz).date()
    tomorrow = today + timedelta(days=1)
    if period == "today":
        days = (today, tomorrow)
    elif period == "yesterday":
        days = (today - timedelta(days=1), today)
    elif period in ("7d", "30d", "90d"):
        n = int(period[:-1])
        days = (today - timedelta(days=n - 1), tomorrow)
    elif period == "month":
        days = (_month_start(today), _month_start(today, 1))
    elif period == "lastMonth":
        days = (_month_start(today, -1), _month_start(today))
    elif period == "year":
        days = (date(today.year, 1, 1), date(today.year + 1, 1, 1))
    elif period == "all":
        first = first_event.astimezone(tz).date() if first_event is not None else today
        days = (min(first, today), tomorrow)
    else:
        raise QueryError("period", f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    return local_midnight(days[0], tz), local_midnight(days[1], tz)


def previous_range(start: datetime, end: datetime, compare: str, period: str | None, tz: ZoneInfo
                   ) -> tuple[datetime, datetime]:
    """The comparison range: the same span just before (calendar months/years for those periods), or a year ago."""
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    if compare == "year":
        return _minus_year(local_start, tz), _minus_year(local_end, tz)
    if period in ("month", "lastMonth"):
        return (local_midnight(_month_start(local_start.date(), -1), tz), local_start)
    if period == "year":
        return local_midnight(date(local_start.year - 1, 1, 1), tz), local_start
    if _is_midnight(local_start) and _is_midnight(local_end):
        days = (local_end.date() - local_start.date()).days
        return local_midnight(local_start.date() - timedelta(days=days), tz), local_start
    span = end - start
    return start - span, start


def _is_midnight(moment: datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def _minus_year(moment: datetime, tz: ZoneInfo) -> datetime:
    day = moment.day if not (moment.month == 2 and moment.day == 29) else 28
    naive = moment.replace(tzinfo=None).replace(year=moment.year - 1, day=day)
    return naive.replace(tzinfo=tz)


def default_interval(start: datetime, end: datetime) -> str:
    return "hour" if end - start <= timedelta(hours=48) else "day"


def buckets(start: datetime, end: datetime, tz: ZoneInfo, interval: str) -> list[tuple[Any, str]]:
    """Every bucket touching [start, end): (key as the SQL dimension yields it, label for the response)."""
    if end <= start:
        return []
    out: list[tuple[Any, str]] = []
    if interval == "hour":
        # Walk in quarter hours so 30/45-minute offsets and DST jumps produce each local hour exactly once.
        seen: set[int] = set()
        step = 900
        t = int(start.timestamp())
        t -= t % step
        stop = int(end.timestamp())
        while t < stop:
            local = datetime.fromtimestamp(t, UTC).astimezone(tz)
            wall = int(local.replace(tzinfo=UTC).timestamp())
            key = t - wall % 3600
            if key not in seen and key + 3600 > int(start.timestamp()):
                seen.add(key)
                out.append((key, format_hour(key, tz)))
            t += step
            if len(out) > MAX_BUCKETS:
                break
        return out
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    if interval == "day":
        day = first
    elif interval == "week":
        day = first - timedelta(days=first.weekday())
    elif interval == "month":
        day = first.replace(day=1)
    else:
        raise QueryError("interval", f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    while day <= last and len(out) <= MAX_BUCKETS:
        label = day.isoformat()
        out.append((label, label))
        if interval == "day":
            day += timedelta(days=1)
        elif interval == "week":
            day += timedelta(days=7)
        else:
            day = _month_start(day, 1)
    return out


@dataclass(frozen=True, slots=True)
class ReportRequest:
    scope: Scope
    interval: str
    compare: str | None = None
    previous: tuple[datetime, datetime] | None = None
    funnel: tuple[str, ...] = DEFAULT_FUNNEL


def _aggregate_sql(query: Query, scope: Scope, sql: Sql) -> str:
    return aggregate_sql(query, "report_base", sql, timezone=scope.timezone, with_total=False, session_key=("sk",))


def _listed(part: str) -> str:
    """A query's rows as one list of structs, in the query's own order (an empty OVER () keeps it)."""
    return f"(SELECT list(r ORDER BY n) FROM (SELECT r, row_number() OVER () AS n FROM ({part}) AS r))"


def _rows(items: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [tuple(item.values()) for item in items or []]


# The report's base: only the columns the report reads (wide text like url or properties costs most to copy),
# with the `counted` flag of metrics.BASE_SQL. Properties are kept for purchases only (for their items).
# Sessions and visitors become 64-bit hashes (`sk`, `visitor_hash`): grouping and copying integers is several
# times cheaper than 36-byte strings, and a collision among a shop's sessions is vanishingly unlikely (~1e-8
# for a million sessions).
REPORT_BASE_SQL = """
WITH firsts AS (
    SELECT arg_min(seq, ORDER_KEY) AS seq
    FROM events
    WHERE event_type = 'purchase' {shop_clause} {bot_clause}
    GROUP BY shop_id, coalesce(order_id, id)
)
SELECT hash(shop_id, session_id) AS sk, seq, ts, event_type, path, product_id,
       hash(visitor_hash) AS visitor_hash, order_value, currency,
       source, utm_campaign, device, browser, os, country,
       CASE WHEN event_type = 'purchase' THEN properties END AS properties,
       event_type = 'purchase' AND seq IN (SELECT seq FROM firsts) AS counted
FROM events
WHERE ts >= $start AND ts < $end {shop_clause} {bot_clause}
""".replace("ORDER_KEY", ORDER_KEY)

# One row per session: its attributes (from its first event) and the registry's LEVEL1 columns. With no
# dimensions, level 1 is exactly this table, so totals and session breakdowns aggregate it directly (visitors, which
# have a Metric.total_sql, are counted from report_base instead, so no list of visitor hashes is built here).
REPORT_SESSIONS_SQL = f"""
SELECT * EXCLUDE (s_first), unnest(s_first) FROM (
    SELECT sk,
           {session_columns(("source", "utm_campaign", "device", "browser", "os", "country"))},
           {level1_columns(name for name in LEVEL1 if not name.startswith("s_") and name != "l_visitors")}
    FROM report_base
    GROUP BY sk
)
"""


def _report_ctes(scope: Scope, sql: Sql) -> str:
    """The base and per-session relations as materialised CTEs; binds $start, $end and $shop.

    One statement holds them inside DuckDB, within its memory limit (spilling if it must), and the report's queries
    read them in place: about a fifth faster than fetching them as Arrow tables and registering those, which copied
    every string out and held the whole admin view in Python's memory."""
    shop_clause, bot_clause = scope_clauses(scope, sql)
    base = REPORT_BASE_SQL.format(shop_clause=shop_clause, bot_clause=bot_clause)
    return f"WITH report_base AS MATERIALIZED ({base}), report_sessions AS MATERIALIZED ({REPORT_SESSIONS_SQL})"


TOTALS_SQL = "SELECT " + ", ".join(
    f"(SELECT {METRICS[name].total_sql} FROM report_base)" if METRICS[name].total_sql else METRICS[name].sql
    for name in TOTAL_METRICS
) + " FROM report_sessions"


def _totals(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    values = rows[0] if rows else (None,) * len(TOTAL_METRICS)
    return {name: finish_metric(METRICS[name], value) for name, value in zip(TOTAL_METRICS, values, strict=True)}


def session_breakdowns_sql() -> str:
    """Every session breakdown in one grouped pass over report_sessions, top 10 per breakdown."""
    columns = [DIMENSIONS[dimension].sql for dimension in SESSION_BREAKDOWNS.values()]
    which = " ".join(f"WHEN GROUPING({column}) = 0 THEN {i}" for i, column in enumerate(columns))
    return f"""
SELECT breakdown, value, sessions, page_views FROM (
    SELECT breakdown, value, sessions, page_views,
           row_number() OVER (PARTITION BY breakdown ORDER BY sessions DESC, value ASC) AS rank
    FROM (
        SELECT CASE {which} END AS breakdown, coalesce({", ".join(columns)}) AS value,
               {METRICS["sessions"].sql} AS sessions, {METRICS["pageViews"].sql} AS page_views
        FROM report_sessions
        GROUP BY GROUPING SETS ({", ".join(f"({c})" for c in columns)})
    )
    WHERE value IS NOT NULL
)
WHERE rank <= {TOP}
ORDER BY breakdown, rank
"""


def _session_breakdowns(rows: list[tuple[Any, ...]]) -> dict[str, list[dict[str, Any]]]:
    keys = list(SESSION_BREAKDOWNS)
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for breakdown, value, sessions, page_views in rows:
        out[keys[breakdown]].append({
            "value": value,
            "sessions": finish_metric(METRICS["sessions"], sessions),
            "pageViews": finish_metric(METRICS["pageViews"], page_views),
        })
    return out


# Events per type need no per-session level: one grouped pass, ordered as aggregate_sql orders a breakdown.
EVENT_TYPES_SQL = f"""
SELECT event_type, count(*) AS events FROM report_base
GROUP BY event_type ORDER BY events DESC, event_type ASC LIMIT {TOP}
"""


def _event_types(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{"value": value, "events": int(events)} for value, events in rows]


TOP_PAGES = Query(metrics=("pageViews", "sessions"), dimensions=("path",),
                  filters=(Filter("is", "eventType", ("page_view",)), Filter("is_set", "path", ())),
                  order_by=(("pageViews", "desc"),), limit=TOP)


def _breakdown(rows: list[tuple[Any, ...]], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {"value": row[0]}
        for name, value in zip(metrics, row[1:], strict=True):
            item[name] = finish_metric(METRICS[name], value)
        out.append(item)
    return out


FUNNEL_STEP = """
s{i} AS (
    SELECT b.sk, min(b.ts) AS t
    FROM report_base b JOIN s{prev} p ON b.sk = p.sk
    WHERE b.event_type = $step{i} AND b.ts >= p.t AND (b.event_type <> 'purchase' OR b.counted)
    GROUP BY b.sk
)"""


def funnel_sql(steps: tuple[str, ...], sql: Sql | None = None) -> Sql:
    """Sessions reaching each step at or after their previous step's (earliest chained) time; binds $step<i> in
    `sql` (a new one if not given) and sets its text."""
    sql = sql if sql is not None else Sql()
    ctes = ["""s0 AS (
    SELECT sk, min(ts) AS t FROM report_base
    WHERE event_type = $step0 AND (event_type <> 'purchase' OR counted)
    GROUP BY sk
)"""]
    for i, step in enumerate(steps):
        sql.params[f"step{i}"] = step
        if i:
            ctes.append(FUNNEL_STEP.format(i=i, prev=i - 1))
    counts = ", ".join(f"(SELECT count(*) FROM s{i})" for i in range(len(steps)))
    sql.text = f"WITH {', '.join(ctes)} SELECT {counts}"
    return sql


def _funnel(rows: list[tuple[Any, ...]], steps: tuple[str, ...]) -> list[dict[str, Any]]:
    row = rows[0]
    out = []
    for i, (step, sessions) in enumerate(zip(steps, row, strict=True)):
        first, prev = row[0], row[i - 1] if i else row[0]
        out.append({
            "step": step,
            "sessions": int(sessions),
            "rateFromStart": sessions / first if first else None,
            "rateFromPrevious": sessions / prev if prev else None,
        })
    return out


# Product lines of counted orders: items/products arrays, else the purchase's own productId.
TOP_PRODUCTS_SQL = """
WITH item_rows AS (
    -- A [*] path on a missing key yields [] rather than NULL, so choose the array by which key exists.
    SELECT currency, unnest(CASE WHEN json_extract(properties, '$.items') IS NOT NULL
                                 THEN json_extract(properties, '$.items[*]')
                                 ELSE json_extract(properties, '$.products[*]') END) AS item
    FROM report_base WHERE counted
),
lines AS (
    SELECT coalesce(item->>'productId', item->>'product_id', item->>'item_id', item->>'id') AS product_id,
           item->>'name' AS name,
           coalesce(try_cast(item->>'price' AS DOUBLE), 0) AS price,
           coalesce(try_cast(item->>'quantity' AS DOUBLE), 1) AS quantity,
           currency
    FROM item_rows
    UNION ALL
    SELECT product_id, json_extract_string(properties, '$.name'),
           coalesce(try_cast(json_extract_string(properties, '$.price') AS DOUBLE), order_value, 0),
           coalesce(try_cast(json_extract_string(properties, '$.quantity') AS DOUBLE), 1),
           currency
    FROM report_base
    WHERE counted AND product_id IS NOT NULL
      AND json_extract(properties, '$.items') IS NULL AND json_extract(properties, '$.products') IS NULL
),
bought AS (
    SELECT product_id, any_value(name) FILTER (WHERE name IS NOT NULL) AS name, sum(quantity) AS units,
           list({'currency': currency, 'value': price * quantity}) AS revenue_lines
    FROM lines WHERE product_id IS NOT NULL GROUP BY product_id
),
seen AS (
    SELECT product_id,
           count(*) FILTER (WHERE event_type = 'product_view') AS views,
           count(*) FILTER (WHERE event_type = 'add_to_cart') AS carts
    FROM report_base
    WHERE product_id IS NOT NULL AND event_type IN ('product_view', 'add_to_cart')
    GROUP BY product_id
),
top AS (
    SELECT coalesce(s.product_id, b.product_id) AS product_id, b.name AS bought_name,
           coalesce(s.views, 0) AS views, coalesce(s.carts, 0) AS carts, coalesce(b.units, 0) AS units,
           b.revenue_lines
    FROM seen s FULL OUTER JOIN bought b ON s.product_id = b.product_id
    ORDER BY units DESC, views DESC, product_id ASC
    LIMIT 10
),
-- A product's name as first seen in a view or cart event: read from the JSON of the top ten products' events only,
-- not of every view in the range (at 6M events: admin view 2.8 -> 2.1 s, the largest shop ~2% faster).
names AS (
    SELECT product_id, arg_min(json_extract_string(properties, '$.name'), ORDER_KEY) AS name
    FROM events
    WHERE ts >= $start AND ts < $end SCOPE_CLAUSES
      AND event_type IN ('product_view', 'add_to_cart') AND product_id IN (SELECT product_id FROM top)
    GROUP BY product_id
)
SELECT t.product_id, coalesce(n.name, t.bought_name) AS name, t.views, t.carts, t.units, t.revenue_lines
FROM top t LEFT JOIN names n ON n.product_id = t.product_id
ORDER BY t.units DESC, t.views DESC, t.product_id ASC
""".replace("ORDER_KEY", ORDER_KEY)


def top_products_sql(shop_clause: str, bot_clause: str) -> str:
    """TOP_PRODUCTS_SQL over report_base, its names read from `events` in the same scope (the base's clauses)."""
    return TOP_PRODUCTS_SQL.replace("SCOPE_CLAUSES", f"{shop_clause} {bot_clause}")


def _top_products(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    out = []
    for product_id, name, views, carts, units, lines in rows:
        units_value = float(units)
        out.append({
            "productId": product_id,
            "name": name,
            "views": int(views),
            "addToCarts": int(carts),
            "purchases": int(units_value) if units_value.is_integer() else units_value,
            "revenue": money(lines),
        })
    return out


def _change(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    change: dict[str, Any] = {}
    for name in TOTAL_METRICS:
        metric = METRICS[name]
        cur, prev = current[name], previous[name]
        if metric.kind == "money":
            cur_by = {m["currency"]: m["amount"] for m in cur}
            prev_by = {m["currency"]: m["amount"] for m in prev}
            change[name] = {
                currency: ((cur_by.get(currency, 0.0) - prev_by[currency]) / prev_by[currency] * 100
                           if prev_by.get(currency) else None)
                for currency in sorted(set(cur_by) | set(prev_by))
            }
        elif metric.kind == "rate":
            change[name] = (cur - prev) * 100 if cur is not None and prev is not None else None
        else:
            change[name] = (cur - prev) / prev * 100 if prev and cur is not None else None
    return change


def _timeseries_query(request: ReportRequest) -> Query:
    return Query(metrics=SERIES_METRICS, dimensions=(f"time:{request.interval}",), limit=MAX_BUCKETS + 10)


def _timeseries(rows: list[tuple[Any, ...]], request: ReportRequest) -> list[dict[str, Any]]:
    scope = request.scope
    tz = ZoneInfo(scope.timezone)
    by_key = {row[0]: row[1:] for row in rows}
    series = []
    for key, label in buckets(scope.start, scope.end, tz, request.interval):
        values = by_key.get(key)
        item: dict[str, Any] = {"date": label}
        for i, name in enumerate(SERIES_METRICS):
            item[name] = finish_metric(METRICS[name], values[i] if values else None)
        series.append(item)
    return series


def report_sql(request: ReportRequest) -> Sql:
    """The whole report as one statement (pure): the materialised base and sessions, then each part's rows as a
    list of structs, in the order compute_report reads them."""
    scope = request.scope
    sql = Sql()
    ctes = _report_ctes(scope, sql)
    parts = [
        TOTALS_SQL,
        _aggregate_sql(_timeseries_query(request), scope, sql),
        EVENT_TYPES_SQL,
        _aggregate_sql(TOP_PAGES, scope, sql),
        session_breakdowns_sql(),
        funnel_sql(request.funnel, sql).text,
        top_products_sql(*scope_clauses(scope, sql)),
    ]
    sql.text = f"{ctes} SELECT {', '.join(_listed(part) for part in parts)}"
    return sql


def previous_totals_sql(scope: Scope) -> Sql:
    """The comparison range's totals as one statement (pure)."""
    sql = Sql()
    sql.text = f"{_report_ctes(scope, sql)} {TOTALS_SQL}"
    return sql


# The report's joins are written with the small side on the right, where DuckDB builds its hash table. DuckDB's
# join-order optimizer chose worse for the admin view at 6M events (DuckDB 2.0.1, in-process: 1.71-1.75 s with it,
# 1.40-1.48 s without); a shop's report took about the same either way. Set for the reports' statements only.
WITHOUT_JOIN_ORDER = "SET disabled_optimizers = 'join_order'"
RESET_OPTIMIZERS = "RESET disabled_optimizers"


class JoinOrderSwitch:
    """Holds join ordering off while any report runs. disabled_optimizers is global to the database (every connection
    sees it), and reports can run side by side on a warehouse's read cursors: the first report to start turns it off,
    the last to finish turns it back on, so no report is planned with it half-way. Queries that overlap a report are
    planned without it too; only their speed can differ, never their answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0

    @contextmanager
    def held(self, conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                conn.execute(WITHOUT_JOIN_ORDER)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    conn.execute(RESET_OPTIMIZERS)


def compute_report(conn: duckdb.DuckDBPyConnection, request: ReportRequest,
                   switch: JoinOrderSwitch | None = None) -> dict[str, Any]:
    """The whole report, one statement (two with a comparison). Reports that may run at the same time on one
    database must share a switch (the server keeps one per warehouse); without one, conn is assumed to be alone."""
    with (switch or JoinOrderSwitch()).held(conn):
        return _compute_report(conn, request)


def _compute_report(conn: duckdb.DuckDBPyConnection, request: ReportRequest) -> dict[str, Any]:
    scope = request.scope
    tz = ZoneInfo(scope.timezone)
    sql = report_sql(request)
    row = conn.execute(sql.text, sql.params).fetchone()
    assert row is not None
    totals, series, event_types, top_pages, session_breakdowns, funnel, top_products = (_rows(part) for part in row)
    report: dict[str, Any] = {
        "shopId": scope.shop_id,
        "range": {
            "start": scope.start.astimezone(tz).isoformat(timespec="seconds"),
            "end": scope.end.astimezone(tz).isoformat(timespec="seconds"),
            "timezone": scope.timezone,
            "interval": request.interval,
        },
        "totals": _totals(totals),
    }
    report["timeseries"] = _timeseries(series, request)
    report["eventTypes"] = _event_types(event_types)
    report["topPages"] = _breakdown(top_pages, TOP_PAGES.metrics)
    report.update(_session_breakdowns(session_breakdowns))
    report["funnel"] = _funnel(funnel, request.funnel)
    report["topProducts"] = _top_products(top_products)
    if request.compare and request.previous:
        previous_scope = dataclasses.replace(scope, start=request.previous[0], end=request.previous[1])
        previous = previous_totals_sql(previous_scope)
        report["previous"] = _totals(conn.execute(previous.text, previous.params).fetchall())
        report["range"]["previous"] = {
            "start": previous_scope.start.astimezone(tz).isoformat(timespec="seconds"),
            "end": previous_scope.end.astimezone(tz).isoformat(timespec="seconds"),
        }
        report["change"] = _change(report["totals"], report["previous"])
    return report
