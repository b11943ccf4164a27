"""The /api/stats report as plain query suites for the comparison engines: SQLite (the store, with its indexes) and
ClickHouse (chdb, a MergeTree ordered by (shop_id, ts)), plus a fingerprint of each engine's answer so the bench can
check that all three compute the same report.

Each suite computes what GET /api/stats (30 days, no compare, bots excluded, UTC) computes: totals (events, page views,
sessions, visitors, bounce rate, session duration, views per session, de-duplicated orders, revenue per currency,
conversion rate), the daily time series, event types, top pages, the eight session breakdowns (entry/exit pages,
sources, UTM campaigns, devices, browsers, OS, countries; session attributes from the first event in range), the
default funnel and the top products. The generated purchases always carry `items`, so the suites leave out the
report's fallback for purchases without them.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FUNNEL = ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase")
SESSION_DIMS = ("entryPages", "exitPages", "sources", "utmCampaigns", "devices", "browsers", "os", "countries")
_SHOP_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass
class SuiteRun:
    seconds: float
    per_query: dict[str, float]
    answer: dict[str, Any]  # fingerprint


# ---------------------------------------------------------------------------------------------------- SQLite

_SQ_EV = """ev AS MATERIALIZED (
    SELECT seq, id, session_id, event_type, timestamp AS ts, path, url, referrer, properties, device, browser, os,
           country, visitor_hash
    FROM events
    WHERE shop_id = :shop AND timestamp >= :start AND timestamp < :end AND is_bot = 0
)"""
# The first purchase event of each order over all time (bare column `seq` comes from the min(timestamp) row).
_SQ_FIRSTS = """firsts AS MATERIALIZED (
    SELECT seq, min(timestamp) AS first_ts FROM events
    WHERE shop_id = :shop AND is_bot = 0 AND event_type = 'purchase'
    GROUP BY coalesce(json_extract(properties, '$.orderId'), json_extract(properties, '$.order_id'),
                      json_extract(properties, '$.transaction_id'), id)
)"""
_SQ_CURRENCY = "upper(coalesce(nullif(trim(json_extract(properties, '$.currency')), ''), 'USD'))"
_SQ_VALUE = ("coalesce(json_extract(properties, '$.value'), json_extract(properties, '$.revenue'), "
             "json_extract(properties, '$.total'), 0)")

SQLITE_QUERIES: dict[str, str] = {
    "totals": f"""
WITH {_SQ_EV}, {_SQ_FIRSTS},
evc AS MATERIALIZED (
    SELECT session_id, event_type, ts, visitor_hash, properties,
           event_type = 'purchase' AND seq IN (SELECT seq FROM firsts) AS counted
    FROM ev
),
sess AS MATERIALIZED (
    SELECT session_id, count(*) AS n, sum(event_type = 'page_view') AS pv, (max(ts) - min(ts)) / 1000.0 AS dur,
           max(counted) AS converted
    FROM evc GROUP BY session_id
),
orders AS (
    SELECT {_SQ_CURRENCY} AS currency, sum({_SQ_VALUE}) AS amount, count(*) AS n
    FROM evc WHERE counted GROUP BY 1
)
SELECT (SELECT count(*) FROM evc), (SELECT coalesce(sum(event_type = 'page_view'), 0) FROM evc),
       (SELECT count(*) FROM sess), (SELECT count(DISTINCT visitor_hash) FROM evc),
       (SELECT 1.0 * sum(n = 1) / nullif(count(*), 0) FROM sess WHERE pv > 0),
       (SELECT avg(dur) FROM sess),
       (SELECT 1.0 * sum(pv) / nullif(count(*), 0) FROM sess WHERE pv > 0),
       (SELECT coalesce(sum(n), 0) FROM orders),
       (SELECT json_group_array(json_array(currency, amount, n)) FROM orders),
       (SELECT 1.0 * sum(converted) / nullif(count(*), 0) FROM sess)
""",
    "timeseries": f"""
WITH {_SQ_EV}, {_SQ_FIRSTS},
evc AS MATERIALIZED (
    SELECT date(ts / 1000, 'unixepoch') AS day, session_id, event_type, visitor_hash, properties,
           event_type = 'purchase' AND seq IN (SELECT seq FROM firsts) AS counted
    FROM ev
)
SELECT d.day, d.events, d.pv, d.sessions, d.visitors, d.orders, r.revenue
FROM (SELECT day, count(*) AS events, sum(event_type = 'page_view') AS pv, count(DISTINCT session_id) AS sessions,
             count(DISTINCT visitor_hash) AS visitors, sum(counted) AS orders
      FROM evc GROUP BY day) AS d
LEFT JOIN (SELECT day, json_group_array(json_array(currency, amount)) AS revenue
           FROM (SELECT day, {_SQ_CURRENCY} AS currency, sum({_SQ_VALUE}) AS amount
                 FROM evc WHERE counted GROUP BY 1, 2)
           GROUP BY day) AS r USING (day)
ORDER BY d.day
""",
    "eventTypes": f"""
WITH {_SQ_EV}
SELECT event_type, count(*) AS n FROM ev GROUP BY 1 ORDER BY n DESC, event_type LIMIT 10
""",
    "topPages": f"""
WITH {_SQ_EV}
SELECT path, count(*) AS pv, count(DISTINCT session_id) AS sessions
FROM ev WHERE event_type = 'page_view' AND path IS NOT NULL
GROUP BY path ORDER BY pv DESC, path LIMIT 10
""",
    "sessionBreakdowns": """
WITH ev AS MATERIALIZED (
    SELECT session_id, event_type, timestamp AS ts, seq, path, url, referrer, device, browser, os, country,
           row_number() OVER (PARTITION BY session_id ORDER BY timestamp, seq) AS rn
    FROM events
    WHERE shop_id = :shop AND timestamp >= :start AND timestamp < :end AND is_bot = 0
),
-- One pass per session: first-event attributes (rn = 1), page views, first and last page_view path.
sess AS (
    SELECT session_id,
           max(CASE WHEN rn = 1 THEN url END) AS url, max(CASE WHEN rn = 1 THEN referrer END) AS referrer,
           max(CASE WHEN rn = 1 THEN device END) AS device, max(CASE WHEN rn = 1 THEN browser END) AS browser,
           max(CASE WHEN rn = 1 THEN os END) AS os, max(CASE WHEN rn = 1 THEN country END) AS country,
           sum(event_type = 'page_view') AS pv,
           -- Same-millisecond page views are ordered by seq, as in the product (ORDER_KEY) and chdb's (ts, seq).
           substr(min(CASE WHEN event_type = 'page_view' THEN printf('%015d%015d', ts, seq) || path END), 31)
               AS entry,
           substr(max(CASE WHEN event_type = 'page_view' THEN printf('%015d%015d', ts, seq) || path END), 31)
               AS exit
    FROM ev GROUP BY session_id
),
parsed AS (
    SELECT session_id, device, browser, os, country, pv, entry, exit,
           CASE WHEN instr(url, 'utm_source=') > 0 THEN substr(url, instr(url, 'utm_source=') + 11) END AS us_raw,
           CASE WHEN instr(url, 'utm_campaign=') > 0 THEN substr(url, instr(url, 'utm_campaign=') + 13) END
               AS uc_raw,
           lower(substr(url, instr(url, '://') + 3)) AS u_rest,
           lower(substr(referrer, instr(referrer, '://') + 3)) AS r_rest
    FROM sess
),
hosts AS (
    SELECT session_id, device, browser, os, country, pv, entry, exit,
           nullif(substr(us_raw, 1, instr(us_raw || '&', '&') - 1), '') AS utm_source,
           nullif(substr(uc_raw, 1, instr(uc_raw || '&', '&') - 1), '') AS utm_campaign,
           substr(u_rest, 1, instr(u_rest || '/', '/') - 1) AS u_host,
           nullif(substr(r_rest, 1, instr(r_rest || '/', '/') - 1), '') AS r_host
    FROM parsed
),
s AS MATERIALIZED (
    SELECT session_id,
           coalesce(utm_source,
                    CASE WHEN r_host IS NOT NULL
                              AND (CASE WHEN r_host LIKE 'www.%' THEN substr(r_host, 5) ELSE r_host END)
                                  IS NOT (CASE WHEN u_host LIKE 'www.%' THEN substr(u_host, 5) ELSE u_host END)
                         THEN (CASE WHEN r_host LIKE 'www.%' THEN substr(r_host, 5) ELSE r_host END) END,
                    'direct') AS source,
           utm_campaign, device, browser, os, country, entry, exit, pv
    FROM hosts
),
dims AS (
    SELECT 'entryPages' AS dim, entry AS value, pv FROM s
    UNION ALL SELECT 'exitPages', exit, pv FROM s
    UNION ALL SELECT 'sources', source, pv FROM s
    UNION ALL SELECT 'utmCampaigns', utm_campaign, pv FROM s
    UNION ALL SELECT 'devices', device, pv FROM s
    UNION ALL SELECT 'browsers', browser, pv FROM s
    UNION ALL SELECT 'os', os, pv FROM s
    UNION ALL SELECT 'countries', country, pv FROM s
),
agg AS (SELECT dim, value, count(*) AS sessions, sum(pv) AS pv FROM dims WHERE value IS NOT NULL GROUP BY dim, value)
SELECT dim, value, sessions, pv
FROM (SELECT *, row_number() OVER (PARTITION BY dim ORDER BY sessions DESC, value) AS rn FROM agg)
WHERE rn <= 10 ORDER BY dim, rn
""",
    "funnel": f"""
WITH ev AS MATERIALIZED (
    SELECT seq, session_id, event_type, timestamp AS ts FROM events
    WHERE shop_id = :shop AND timestamp >= :start AND timestamp < :end AND is_bot = 0
      AND event_type IN ({", ".join(f"'{s}'" for s in FUNNEL)})
), {_SQ_FIRSTS},
s0 AS MATERIALIZED (SELECT session_id, min(ts) AS t FROM ev WHERE event_type = 'page_view' GROUP BY session_id),
s1 AS MATERIALIZED (SELECT e.session_id, min(e.ts) AS t FROM ev e JOIN s0 p ON e.session_id = p.session_id
                    WHERE e.event_type = 'product_view' AND e.ts >= p.t GROUP BY e.session_id),
s2 AS MATERIALIZED (SELECT e.session_id, min(e.ts) AS t FROM ev e JOIN s1 p ON e.session_id = p.session_id
                    WHERE e.event_type = 'add_to_cart' AND e.ts >= p.t GROUP BY e.session_id),
s3 AS MATERIALIZED (SELECT e.session_id, min(e.ts) AS t FROM ev e JOIN s2 p ON e.session_id = p.session_id
                    WHERE e.event_type = 'checkout_start' AND e.ts >= p.t GROUP BY e.session_id),
s4 AS MATERIALIZED (SELECT e.session_id, min(e.ts) AS t FROM ev e JOIN s3 p ON e.session_id = p.session_id
                    WHERE e.event_type = 'purchase' AND e.ts >= p.t AND e.seq IN (SELECT seq FROM firsts)
                    GROUP BY e.session_id)
SELECT (SELECT count(*) FROM s0), (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM s3),
       (SELECT count(*) FROM s4)
""",
    "topProducts": f"""
WITH ev AS MATERIALIZED (
    SELECT seq, event_type, timestamp AS ts, properties FROM events
    WHERE shop_id = :shop AND timestamp >= :start AND timestamp < :end AND is_bot = 0
      AND event_type IN ('product_view', 'add_to_cart', 'purchase')
), {_SQ_FIRSTS},
items AS MATERIALIZED (
    SELECT coalesce(json_extract(j.value, '$.productId'), json_extract(j.value, '$.product_id'),
                    json_extract(j.value, '$.item_id'), json_extract(j.value, '$.id')) AS pid,
           json_extract(j.value, '$.name') AS name,
           coalesce(json_extract(j.value, '$.price'), 0) AS price,
           coalesce(json_extract(j.value, '$.quantity'), 1) AS qty,
           upper(coalesce(nullif(trim(json_extract(e.properties, '$.currency')), ''), 'USD')) AS currency
    FROM ev e, json_each(e.properties, '$.items') j
    WHERE e.event_type = 'purchase' AND e.seq IN (SELECT seq FROM firsts)
),
bought AS (SELECT pid, min(name) AS name, sum(qty) AS units FROM items WHERE pid IS NOT NULL GROUP BY pid),
seen AS (
    SELECT coalesce(json_extract(properties, '$.productId'), json_extract(properties, '$.product_id'),
                    json_extract(properties, '$.item_id')) AS pid,
           min(json_extract(properties, '$.name')) AS name,
           sum(event_type = 'product_view') AS views, sum(event_type = 'add_to_cart') AS carts
    FROM ev WHERE event_type IN ('product_view', 'add_to_cart') GROUP BY 1
),
top AS (
    SELECT coalesce(s.pid, b.pid) AS pid, coalesce(s.name, b.name) AS name, coalesce(s.views, 0) AS views,
           coalesce(s.carts, 0) AS carts, coalesce(b.units, 0) AS units
    FROM seen s FULL OUTER JOIN bought b ON s.pid = b.pid
    WHERE coalesce(s.pid, b.pid) IS NOT NULL
    ORDER BY units DESC, views DESC, pid LIMIT 10
)
SELECT t.pid, t.name, t.views, t.carts, t.units,
       (SELECT json_group_array(json_array(currency, amount))
        FROM (SELECT currency, sum(price * qty) AS amount FROM items i WHERE i.pid = t.pid GROUP BY currency))
FROM top t ORDER BY units DESC, views DESC, pid
""",
}


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A read-only connection with a generous page cache (1 GiB) and memory-mapped reads: SQLite at its best."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA cache_size = -1048576")
    conn.execute("PRAGMA mmap_size = 8589934592")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def run_sqlite(conn: sqlite3.Connection, shop: str, start_ms: int, end_ms: int) -> SuiteRun:
    params = {"shop": shop, "start": start_ms, "end": end_ms}
    results: dict[str, list[tuple[Any, ...]]] = {}
    per_query: dict[str, float] = {}
    began = time.perf_counter()
    for name, sql in SQLITE_QUERIES.items():
        t0 = time.perf_counter()
        results[name] = conn.execute(sql, params).fetchall()
        per_query[name] = time.perf_counter() - t0
    seconds = time.perf_counter() - began
    return SuiteRun(seconds, per_query, _sqlite_fingerprint(results))


def _money(pairs: list[Any]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((str(p[0]), round(float(p[1]), 2)) for p in pairs))


def _sqlite_fingerprint(r: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    t = r["totals"][0]
    out: dict[str, Any] = {
        "totals.events": t[0], "totals.pageViews": t[1], "totals.sessions": t[2], "totals.visitors": t[3],
        "totals.bounceRate": t[4], "totals.avgSessionDuration": t[5], "totals.viewsPerSession": t[6],
        "totals.orders": t[7], "totals.revenue": _money(json.loads(t[8])), "totals.conversionRate": t[9],
        "timeseries.events": tuple((row[0], row[1]) for row in r["timeseries"]),
        "timeseries.sessions": tuple((row[0], row[3]) for row in r["timeseries"]),
        "timeseries.orders": tuple((row[0], row[5]) for row in r["timeseries"] if row[5]),
        "eventTypes": tuple((row[0], row[1]) for row in r["eventTypes"]),
        "topPages": tuple((row[0], row[1], row[2]) for row in r["topPages"]),
        "funnel": tuple(r["funnel"][0]),
        "topProducts": tuple((str(row[0]), row[2], row[3], float(row[4])) for row in r["topProducts"]),
        "topProducts.revenue": tuple(_money(json.loads(row[5])) for row in r["topProducts"]),
    }
    for dim in SESSION_DIMS:
        out[dim] = tuple((row[1], row[2], row[3]) for row in r["sessionBreakdowns"] if row[0] == dim)
    return out


# ---------------------------------------------------------------------------------------------------- ClickHouse

CH_TABLE = """
CREATE TABLE events (
    seq UInt64, id String, shop_id LowCardinality(String), session_id String, event_type LowCardinality(String),
    event_name LowCardinality(String), properties String, ts DateTime64(3, 'UTC'), url Nullable(String),
    referrer Nullable(String), path Nullable(String), source LowCardinality(String),
    utm_source LowCardinality(Nullable(String)), utm_medium LowCardinality(Nullable(String)),
    utm_campaign LowCardinality(Nullable(String)), device LowCardinality(String),
    browser LowCardinality(Nullable(String)), os LowCardinality(Nullable(String)),
    country LowCardinality(Nullable(String)), is_bot Bool, visitor_hash String, product_id Nullable(String),
    order_id Nullable(String), order_value Nullable(Float64), currency LowCardinality(Nullable(String))
) ENGINE = MergeTree ORDER BY (shop_id, ts)
"""
# The same columns, in the same order, exported from the DuckDB mirror (where they were extracted once).
CH_COLUMNS = ("seq, id, shop_id, session_id, event_type, event_name, properties, ts, url, referrer, path, source, "
              "utm_source, utm_medium, utm_campaign, device, browser, os, country, is_bot, visitor_hash, product_id, "
              "order_id, order_value, currency")

_CH_EV = """(SELECT *, event_type = 'purchase' AND seq IN ({firsts}) AS counted FROM events
    WHERE {shop} AND ts >= fromUnixTimestamp64Milli(toInt64({start}), 'UTC')
      AND ts < fromUnixTimestamp64Milli(toInt64({end}), 'UTC') AND NOT is_bot)"""
_CH_EV_PLAIN = """(SELECT * FROM events
    WHERE {shop} AND ts >= fromUnixTimestamp64Milli(toInt64({start}), 'UTC')
      AND ts < fromUnixTimestamp64Milli(toInt64({end}), 'UTC') AND NOT is_bot)"""
_CH_FIRSTS = """SELECT argMin(seq, (ts, seq)) FROM events
    WHERE {shop} AND NOT is_bot AND event_type = 'purchase' GROUP BY shop_id, coalesce(order_id, id)"""
# The session's first-event attributes in one argMin over a tuple (a tuple keeps NULLs, which argMin would skip).
_CH_ATTRS = ("source", "utm_campaign", "device", "browser", "os", "country")
_CH_SESSION_ATTRS = f"argMin(({', '.join(_CH_ATTRS)}), (ts, seq)) AS first_attrs, " + ", ".join(
    f"CAST(first_attrs.{i} AS Nullable(String)) AS s_{col}" for i, col in enumerate(_CH_ATTRS, start=1)
)

CH_QUERIES: dict[str, str] = {
    "totals": """
SELECT sum(n), sum(pv), count(), uniqExactArray(vis),
       countIf(pv > 0 AND n = 1) / nullIf(countIf(pv > 0), 0), avg(dur), sum(pv) / nullIf(countIf(pv > 0), 0),
       sum(orders), sumMap(cur, val), countIf(orders > 0) / nullIf(count(), 0)
FROM (
    SELECT shop_id, session_id, count() AS n, countIf(event_type = 'page_view') AS pv,
           dateDiff('millisecond', min(ts), max(ts)) / 1000 AS dur, groupUniqArray(visitor_hash) AS vis,
           countIf(counted) AS orders,
           groupArrayIf(coalesce(currency, 'USD'), counted) AS cur,
           groupArrayIf(coalesce(order_value, 0), counted) AS val
    FROM {ev} GROUP BY shop_id, session_id
)
""",
    "timeseries": """
SELECT toString(toDate(ts)) AS day, count(), countIf(event_type = 'page_view'), uniqExact(shop_id, session_id),
       uniqExact(visitor_hash), countIf(counted), sumMapIf([coalesce(currency, 'USD')], [coalesce(order_value, 0)],
       counted)
FROM {ev} GROUP BY day ORDER BY day
""",
    "eventTypes": """
SELECT event_type, count() AS n FROM {ev_plain} GROUP BY event_type ORDER BY n DESC, event_type LIMIT 10
""",
    "topPages": """
SELECT path, count() AS pv, uniqExact(shop_id, session_id) AS sessions
FROM {ev_plain} WHERE event_type = 'page_view' AND path IS NOT NULL
GROUP BY path ORDER BY pv DESC, path LIMIT 10
""",
    "sessionBreakdowns": """
SELECT kv.1 AS dim, kv.2 AS value, count() AS sessions, sum(pv) AS pageViews
FROM (
    SELECT shop_id, session_id, countIf(event_type = 'page_view') AS pv, """ + _CH_SESSION_ATTRS + """,
           if(pv > 0, CAST(argMinIf(tuple(path), (ts, seq), event_type = 'page_view').1 AS Nullable(String)), NULL)
               AS entry,
           if(pv > 0, CAST(argMaxIf(tuple(path), (ts, seq), event_type = 'page_view').1 AS Nullable(String)), NULL)
               AS exit
    FROM {ev_plain} GROUP BY shop_id, session_id
)
ARRAY JOIN [('entryPages', entry), ('exitPages', exit), ('sources', s_source), ('utmCampaigns', s_utm_campaign),
            ('devices', s_device), ('browsers', s_browser), ('os', s_os), ('countries', s_country)] AS kv
WHERE kv.2 IS NOT NULL
GROUP BY dim, value ORDER BY dim, sessions DESC, value LIMIT 10 BY dim
""",
    "funnel": """
SELECT countIf(t0 IS NOT NULL), countIf(t1 IS NOT NULL), countIf(t2 IS NOT NULL), countIf(t3 IS NOT NULL),
       countIf(t4 IS NOT NULL)
FROM (
    SELECT if(empty(a0), NULL, arrayMin(a0)) AS t0,
           arrayFilter(x -> x >= t0, a1) AS f1, if(t0 IS NULL OR empty(f1), NULL, arrayMin(f1)) AS t1,
           arrayFilter(x -> x >= t1, a2) AS f2, if(t1 IS NULL OR empty(f2), NULL, arrayMin(f2)) AS t2,
           arrayFilter(x -> x >= t2, a3) AS f3, if(t2 IS NULL OR empty(f3), NULL, arrayMin(f3)) AS t3,
           arrayFilter(x -> x >= t3, a4) AS f4, if(t3 IS NULL OR empty(f4), NULL, arrayMin(f4)) AS t4
    FROM (
        SELECT groupArrayIf(ts, event_type = 'page_view') AS a0,
               groupArrayIf(ts, event_type = 'product_view') AS a1,
               groupArrayIf(ts, event_type = 'add_to_cart') AS a2,
               groupArrayIf(ts, event_type = 'checkout_start') AS a3,
               groupArrayIf(ts, event_type = 'purchase' AND counted) AS a4
        FROM {ev} WHERE event_type IN ('page_view', 'product_view', 'add_to_cart', 'checkout_start', 'purchase')
        GROUP BY shop_id, session_id
    )
)
""",
    "topProducts": """
SELECT pid, anyIf(name, name != ''), sum(views) AS v, sum(carts), sum(units) AS u,
       sumMapIf([currency], [amount], currency != '')
FROM (
    SELECT assumeNotNull(product_id) AS pid, JSONExtractString(properties, 'name') AS name,
           toFloat64(event_type = 'product_view') AS views, toFloat64(event_type = 'add_to_cart') AS carts,
           toFloat64(0) AS units, '' AS currency, toFloat64(0) AS amount
    FROM {ev_plain} WHERE event_type IN ('product_view', 'add_to_cart') AND product_id IS NOT NULL
    UNION ALL
    SELECT pid, name, 0, 0, qty, currency, price * qty
    FROM (
        SELECT coalesce(nullIf(JSONExtractString(item, 'productId'), ''), nullIf(JSONExtractString(item, 'product_id'),
                        ''), nullIf(JSONExtractString(item, 'item_id'), ''), JSONExtractString(item, 'id')) AS pid,
               JSONExtractString(item, 'name') AS name,
               ifNull(JSONExtract(item, 'price', 'Nullable(Float64)'), 0) AS price,
               ifNull(JSONExtract(item, 'quantity', 'Nullable(Float64)'), 1) AS qty,
               toString(coalesce(currency, 'USD')) AS currency
        FROM (SELECT currency, arrayJoin(JSONExtractArrayRaw(properties, 'items')) AS item
              FROM {ev} WHERE event_type = 'purchase' AND counted)
    )
)
WHERE pid != ''
GROUP BY pid ORDER BY u DESC, v DESC, pid LIMIT 10
""",
}


def ch_queries(shop: str | None, start_ms: int, end_ms: int) -> dict[str, str]:
    if shop is not None and not _SHOP_RE.fullmatch(shop):
        raise ValueError(f"unexpected shop id {shop!r}")
    shop_sql = f"shop_id = '{shop}'" if shop is not None else "1"
    firsts = _CH_FIRSTS.format(shop=shop_sql)
    ev = _CH_EV.format(shop=shop_sql, start=int(start_ms), end=int(end_ms), firsts=firsts)
    ev_plain = _CH_EV_PLAIN.format(shop=shop_sql, start=int(start_ms), end=int(end_ms))
    return {name: sql.replace("{ev}", ev).replace("{ev_plain}", ev_plain) for name, sql in CH_QUERIES.items()}


def run_ch(query: Callable[[str], Any], queries: dict[str, str]) -> SuiteRun:
    """`query(sql)` returns a pyarrow table (chdb's ArrowTable format)."""
    results: dict[str, list[tuple[Any, ...]]] = {}
    per_query: dict[str, float] = {}
    began = time.perf_counter()
    for name, sql in queries.items():
        t0 = time.perf_counter()
        table = query(sql)
        per_query[name] = time.perf_counter() - t0
        columns = [c.to_pylist() for c in table.columns]
        results[name] = list(zip(*columns, strict=True))
    seconds = time.perf_counter() - began
    return SuiteRun(seconds, per_query, _ch_fingerprint(results))


def _sum_map(value: Any) -> tuple[tuple[str, float], ...]:
    # sumMap gives a (keys, values) tuple; pyarrow renders it as a dict of the tuple's fields.
    if isinstance(value, dict):
        keys, values = list(value.values())
    else:
        keys, values = value
    return tuple(sorted((str(k), round(float(v), 2)) for k, v in zip(keys, values, strict=True)))


def _ch_fingerprint(r: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    t = r["totals"][0]
    orders = r["timeseries"]
    out: dict[str, Any] = {
        "totals.events": t[0], "totals.pageViews": t[1], "totals.sessions": t[2], "totals.visitors": t[3],
        "totals.bounceRate": t[4], "totals.avgSessionDuration": t[5], "totals.viewsPerSession": t[6],
        "totals.orders": t[7], "totals.revenue": _sum_map(t[8]), "totals.conversionRate": t[9],
        "timeseries.events": tuple((row[0], row[1]) for row in orders),
        "timeseries.sessions": tuple((row[0], row[3]) for row in orders),
        "timeseries.orders": tuple((row[0], row[5]) for row in orders if row[5]),
        "eventTypes": tuple((row[0], row[1]) for row in r["eventTypes"]),
        "topPages": tuple((row[0], row[1], row[2]) for row in r["topPages"]),
        "funnel": tuple(r["funnel"][0]),
        "topProducts": tuple((str(row[0]), row[2], row[3], float(row[4])) for row in r["topProducts"]),
        "topProducts.revenue": tuple(_sum_map(row[5]) for row in r["topProducts"]),
    }
    for dim in SESSION_DIMS:
        out[dim] = tuple((row[1], row[2], row[3]) for row in r["sessionBreakdowns"] if row[0] == dim)
    return out


# ---------------------------------------------------------------------------------------------------- ours


def report_fingerprint(report: dict[str, Any]) -> dict[str, Any]:
    """The same figures taken from a GET /api/stats response."""
    totals = report["totals"]
    series = [row for row in report["timeseries"] if row["events"]]
    out: dict[str, Any] = {f"totals.{name}": totals[name] for name in (
        "events", "pageViews", "sessions", "visitors", "bounceRate", "avgSessionDuration", "viewsPerSession",
        "orders", "conversionRate")}
    out["totals.revenue"] = tuple(sorted((m["currency"], round(m["amount"], 2)) for m in totals["revenue"]))
    out["timeseries.events"] = tuple((row["date"], row["events"]) for row in series)
    out["timeseries.sessions"] = tuple((row["date"], row["sessions"]) for row in series)
    out["timeseries.orders"] = tuple((row["date"], row["orders"]) for row in series if row["orders"])
    out["eventTypes"] = tuple((row["value"], row["events"]) for row in report["eventTypes"])
    out["topPages"] = tuple((row["value"], row["pageViews"], row["sessions"]) for row in report["topPages"])
    out["funnel"] = tuple(step["sessions"] for step in report["funnel"])
    out["topProducts"] = tuple((p["productId"], p["views"], p["addToCarts"], float(p["purchases"]))
                               for p in report["topProducts"])
    out["topProducts.revenue"] = tuple(tuple(sorted((m["currency"], round(m["amount"], 2)) for m in p["revenue"]))
                                       for p in report["topProducts"])
    for dim in SESSION_DIMS:
        out[dim] = tuple((row["value"], row["sessions"], row["pageViews"]) for row in report[dim])
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        # Money is rounded to cents per engine; sums in a different order may land on the other side of a cent.
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.011)
    return bool(a == b)


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The names of the figures that differ (empty when the engines agree)."""
    return [key for key in ours if not _same(ours[key], theirs.get(key))]
