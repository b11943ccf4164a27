"""The registry: every metric and dimension defined once as SQL, used by stats, the query API, insights and chat.

Queries run in two levels over a "base" relation (in-range events, each carrying its session's attributes):
level 1 groups by (dimensions, session) and computes the LEVEL1 columns its metrics need; level 2 groups by
the dimensions and computes each metric's `sql` from those columns. So a session counts once per group it has
an event in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

# An event's place in time order, ties broken by arrival: (ts, seq) as one HUGEINT. Aggregates keyed by it run about
# twice as fast as keyed by the (ts, seq) struct; seq stays below 2^48, so the order is exactly the struct's.
ORDER_KEY = "(epoch_us(ts)::HUGEINT * 281474976710656 + seq)"

# The base relation: in-range events with session attributes (s_*) and the `counted` flag (the first copy of an
# order over all time). Parameters: $start, $end (TIMESTAMPTZ), and $shop when scoped to one shop.
BASE_SQL = """
WITH ev AS (
    SELECT seq, id, shop_id, session_id, event_type, event_name, properties, ts, url, referrer, path, source,
           utm_source, utm_medium, utm_campaign, device, browser, os, country, visitor_hash, product_id,
           order_id, order_value, currency
    FROM events
    WHERE ts >= $start AND ts < $end {shop_clause} {bot_clause}
),
firsts AS (
    SELECT arg_min(seq, {order_key}) AS seq
    FROM events
    WHERE event_type = 'purchase' {shop_clause} {bot_clause}
    GROUP BY shop_id, coalesce(order_id, id)
),
sess AS (
    SELECT * EXCLUDE (s_first), unnest(s_first)
    FROM (SELECT shop_id, session_id, {session_columns} FROM ev GROUP BY shop_id, session_id)
)
SELECT ev.*, sess.* EXCLUDE (shop_id, session_id),
       ev.event_type = 'purchase' AND ev.seq IN (SELECT seq FROM firsts) AS counted
FROM ev JOIN sess USING (shop_id, session_id)
"""

def session_columns(attributes: Iterable[str], key: str = ORDER_KEY) -> str:
    """Per-session aggregates over events: the attributes of its first event (by time, then arrival), its entry and
    exit pages, event count and duration. Shared by the query API's base and the stats report; `key` is ORDER_KEY or
    a column already holding it.

    The first-event attributes come packed in one struct, `s_first` (its fields named s_<attribute>): one
    arg_min over the struct compares each row's key once rather than once per attribute (a third faster for a
    shop's 65k sessions). Select them with `unnest(s_first)` around the grouped query."""
    packed = ", ".join(f"'s_{name}': {name}" for name in attributes)
    return ", ".join([
        f"arg_min_null({{{packed}}}, {key}) AS s_first",
        f"arg_min_null(path, {key}) FILTER (WHERE event_type = 'page_view') AS s_entry_page",
        f"arg_max_null(path, {key}) FILTER (WHERE event_type = 'page_view') AS s_exit_page",
        "count(*) AS s_events",
        "(epoch_ms(max(ts)) - epoch_ms(min(ts))) / 1000.0 AS s_duration",
    ])


SESSION_ATTRIBUTES = ("source", "referrer", "utm_source", "utm_medium", "utm_campaign", "device", "browser", "os",
                      "country")


# Level 1: one row per (dimensions, session). A query computes only the columns its metrics need.
LEVEL1: dict[str, str] = {
    "n_events": "count(*)",
    "n_pageviews": "count(*) FILTER (WHERE event_type = 'page_view')",
    # array_distinct(list(..)) rather than list(DISTINCT ..): DuckDB plans the latter as a costly self-join.
    "l_visitors": "array_distinct(list(visitor_hash))",
    "s_events": "any_value(s_events)",
    "s_duration": "any_value(s_duration)",
    "n_orders": "count(*) FILTER (WHERE counted)",
    "n_revenue": "coalesce(sum(coalesce(order_value, 0)) FILTER (WHERE counted), 0)",
    "l_orders": "list({'currency': currency, 'value': coalesce(order_value, 0)}) FILTER (WHERE counted)",
}


def level1_columns(names: Iterable[str]) -> str:
    """The SELECT list of the given level-1 columns, in registry order."""
    wanted = set(names)
    return ", ".join(f"{sql} AS {name}" for name, sql in LEVEL1.items() if name in wanted)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    sql: str  # level 2, over the LEVEL1 columns named in `needs`
    kind: str  # count | rate | mean | money
    description: str
    needs: tuple[str, ...] = ()
    # The same number aggregated straight over the events, used when there are no dimensions (totals): there, it
    # needs no level-1 columns at all.
    total_sql: str | None = None


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    sql: str  # over the base relation; may reference $tz or a bound $p<n> path
    level: str  # event | session | time
    description: str
    # How a grouped value is shown, around its SQL: groups form on the cheap value, and only the few result rows
    # are formatted.
    label: str = "{}"


_ORDER_LINES = "flatten(list(l_orders))"

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("events", "sum(n_events)", "count", "events in range", ("n_events",)),
        Metric("pageViews", "sum(n_pageviews)", "count", "page_view events", ("n_pageviews",)),
        Metric("sessions", "count(*)", "count", "distinct sessions"),
        # A group's events are exactly its sessions' events in it, so the total is their distinct hashes, with no
        # list per session to merge (~6% of a shop's stats report). Per group, the lists are cheaper than grouping
        # the events by the dimensions a second time.
        Metric("visitors", "len(list_distinct(flatten(list(l_visitors))))", "count",
               "distinct daily visitor hashes", ("l_visitors",), total_sql="count(DISTINCT visitor_hash)"),
        Metric("bounceRate",
               "(count(*) FILTER (WHERE n_pageviews > 0 AND s_events = 1))::DOUBLE"
               " / nullif(count(*) FILTER (WHERE n_pageviews > 0), 0)",
               "rate", "among sessions with a page_view, the share with exactly one event (fraction 0..1)",
               ("n_pageviews", "s_events")),
        Metric("avgSessionDuration", "avg(s_duration)", "mean",
               "mean over sessions of last minus first event time, seconds", ("s_duration",)),
        Metric("viewsPerSession",
               "sum(n_pageviews)::DOUBLE / nullif(count(*) FILTER (WHERE n_pageviews > 0), 0)", "mean",
               "page views per session with a page_view", ("n_pageviews",)),
        Metric("orders", "sum(n_orders)", "count",
               "distinct orders (first purchase event of each orderId over all time)", ("n_orders",)),
        Metric("revenue", _ORDER_LINES, "money", "order values summed per currency", ("l_orders", "n_revenue")),
        Metric("averageOrderValue", _ORDER_LINES, "money", "revenue / orders per currency",
               ("l_orders", "n_revenue")),
        Metric("conversionRate", "(count(*) FILTER (WHERE n_orders > 0))::DOUBLE / nullif(count(*), 0)", "rate",
               "sessions with a purchase / sessions (fraction 0..1)", ("n_orders",)),
    )
}
# Ordering by a money metric orders by its amount summed over currencies.
MONEY_ORDER_SQL = "sum(n_revenue)"

DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("eventType", "event_type", "event", "canonical event type"),
        Dimension("eventName", "event_name", "event", "event name as sent"),
        Dimension("path", "path", "event", "URL path"),
        Dimension("url", "url", "event", "full URL"),
        Dimension("productId", "product_id", "event", "productId/product_id/item_id property"),
        Dimension("source", "s_source", "session", "utm_source, else external referrer host, else direct"),
        Dimension("referrer", "s_referrer", "session", "the session's first referrer"),
        Dimension("utmSource", "s_utm_source", "session", "utm_source of the first URL"),
        Dimension("utmMedium", "s_utm_medium", "session", "utm_medium of the first URL"),
        Dimension("utmCampaign", "s_utm_campaign", "session", "utm_campaign of the first URL"),
        Dimension("device", "s_device", "session", "desktop, mobile, tablet, bot or other"),
        Dimension("browser", "s_browser", "session", "browser family"),
        Dimension("os", "s_os", "session", "operating system family"),
        Dimension("country", "s_country", "session", "ISO country code"),
        Dimension("entryPage", "s_entry_page", "session", "path of the session's first page_view"),
        Dimension("exitPage", "s_exit_page", "session", "path of the session's last page_view"),
        # Hour buckets are keyed by their UTC start (epoch seconds): local wall-clock hours repeat when DST ends.
        Dimension("time:hour", "epoch_ms(ts) // 1000 - (epoch_ms(timezone($tz, ts)::TIMESTAMP) // 1000) % 3600",
                  "time", "local hour"),
        # Grouped as DATEs and printed YYYY-MM-DD (DATE::VARCHAR, several times faster than strftime) once per
        # bucket: printing every event's date was about a quarter of grouping a shop's events by day.
        Dimension("time:day", "timezone($tz, ts)::DATE", "time", "local date", "({})::VARCHAR"),
        Dimension("time:week", "date_trunc('week', timezone($tz, ts)::DATE)::DATE", "time",
                  "ISO week (Monday start)", "({})::VARCHAR"),
        Dimension("time:month", "date_trunc('month', timezone($tz, ts)::DATE)::DATE", "time",
                  "calendar month", "({})::VARCHAR"),
    )
}
PROP_PREFIX = "prop:"
_PROP_KEY_RE = re.compile(r"^[A-Za-z0-9_\-$ ]{1,64}$")
# Public names for the query API (entryPage/exitPage are extras used by the stats report too).
DIMENSION_NAMES = tuple(DIMENSIONS) + ("prop:<key>",)


def prop_key(name: str) -> str | None:
    """The property key of a prop:<key> dimension, or None when the key is not allowed."""
    key = name[len(PROP_PREFIX):]
    return key if _PROP_KEY_RE.fullmatch(key) else None


def prop_path(key: str) -> str:
    """The JSON path for a validated property key; always bound as a parameter, never pasted into SQL."""
    return f'$."{key}"'


def format_hour(epoch_s: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).astimezone(tz).isoformat(timespec="seconds")


def money(lines: list[dict[str, Any]] | None, *, average: bool = False) -> list[dict[str, Any]]:
    """Order lines [{currency, value}] → [{currency, amount}] summed (or averaged) per currency, sorted."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in lines or []:
        currency = line["currency"]
        totals[currency] = totals.get(currency, 0.0) + float(line["value"] or 0.0)
        counts[currency] = counts.get(currency, 0) + 1
    result = []
    for currency in sorted(totals):
        amount = totals[currency] / counts[currency] if average else totals[currency]
        result.append({"currency": currency, "amount": round(amount, 6)})
    return result


def finish_metric(metric: Metric, value: Any) -> Any:
    """Turn a level-2 SQL value into its JSON form."""
    if metric.kind == "money":
        return money(value, average=metric.name == "averageOrderValue")
    if value is None:
        return None if metric.kind in ("rate", "mean") else 0
    if metric.kind == "count":
        return int(value)
    return float(value)
