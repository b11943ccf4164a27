"""Query building: a validated query struct → SQL with bound parameters. Pure: no database here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from analytics.metrics import (
    BASE_SQL,
    DIMENSIONS,
    METRICS,
    MONEY_ORDER_SQL,
    ORDER_KEY,
    PROP_PREFIX,
    SESSION_ATTRIBUTES,
    Dimension,
    level1_columns,
    prop_key,
    prop_path,
    session_columns,
)

FILTER_OPS = ("is", "is_not", "contains", "not_contains", "matches")
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000_000
MAX_FILTER_VALUES = 100


class QueryError(ValueError):
    """A bad query field; `field` names it so the 400 can say what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Scope:
    """Which events a query reads: one shop (or all), a [start, end) range, a timezone, bots or not."""

    shop_id: str | None
    start: datetime
    end: datetime
    timezone: str = "UTC"
    include_bots: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    op: str
    dimension: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    order_by: tuple[tuple[str, str], ...] = ()
    limit: int = 100
    offset: int = 0


@dataclass
class Sql:
    """SQL text plus its named parameters, built together so a name can never be left unbound."""

    text: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"


def resolve_dimension(name: str, sql: Sql, timezone: str = "UTC") -> Dimension:
    """A registered dimension, or prop:<key> with its JSON path bound as a parameter; binds $tz for time."""
    if name.startswith(PROP_PREFIX):
        key = prop_key(name)
        if key is None:
            raise QueryError("dimensions", f"{name!r}: a property key is 1-64 of A-Z a-z 0-9 _ - $ and space")
        return Dimension(name, f"json_extract_string(properties, {sql.bind(prop_path(key))})", "event",
                         f"property {key}")
    dim = DIMENSIONS.get(name)
    if dim is None:
        raise QueryError("dimensions", f"unknown dimension {name!r}")
    if dim.level == "time":
        sql.params["tz"] = timezone
    return dim


def check_dimension(name: str, field_name: str) -> None:
    if name.startswith(PROP_PREFIX):
        if prop_key(name) is None:
            raise QueryError(field_name, f"{name!r}: a property key is 1-64 of A-Z a-z 0-9 _ - $ and space")
    elif name not in DIMENSIONS:
        raise QueryError(field_name, f"unknown dimension {name!r}; known: {', '.join(DIMENSIONS)}, prop:<key>")


def parse_query(doc: dict[str, Any]) -> Query:
    """Validate the metric/dimension/filter/order/limit part of a POST /api/query body."""
    metrics = doc.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise QueryError("metrics", f"must be a non-empty array of metric names: {', '.join(METRICS)}")
    for name in metrics:
        if name not in METRICS:
            raise QueryError("metrics", f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise QueryError("metrics", "lists a metric twice")

    dimensions = doc.get("dimensions", [])
    if not isinstance(dimensions, list) or not all(isinstance(d, str) for d in dimensions):
        raise QueryError("dimensions", "must be an array of dimension names")
    if len(dimensions) > 5:
        raise QueryError("dimensions", "at most 5 dimensions per query")
    for name in dimensions:
        check_dimension(name, "dimensions")
    if len(set(dimensions)) != len(dimensions):
        raise QueryError("dimensions", "lists a dimension twice")

    filters: list[Filter] = []
    raw_filters = doc.get("filters", [])
    if not isinstance(raw_filters, list):
        raise QueryError("filters", "must be an array of [op, dimension, values]")
    for i, raw in enumerate(raw_filters):
        where = f"filters[{i}]"
        if not isinstance(raw, list) or len(raw) != 3:
            raise QueryError(where, "must be [op, dimension, values]")
        op, dim, values = raw
        if op not in FILTER_OPS:
            raise QueryError(where, f"unknown op {op!r}; use one of {', '.join(FILTER_OPS)}")
        if not isinstance(dim, str):
            raise QueryError(where, "the dimension must be a string")
        check_dimension(dim, where)
        if isinstance(values, str | int | float) and not isinstance(values, bool):
            values = [values]
        if (not isinstance(values, list) or not values or len(values) > MAX_FILTER_VALUES
                or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)):
            raise QueryError(where, f"values must be a string or an array of 1-{MAX_FILTER_VALUES} strings")
        str_values = tuple(str(v) for v in values)
        if dim == "time:hour" and op in ("is", "is_not"):
            str_values = tuple(_hour_key(v, where) for v in str_values)
        if op == "matches":
            for pattern in str_values:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise QueryError(where, f"{pattern!r} is not a valid regular expression ({exc})") from None
        filters.append(Filter(op, dim, str_values))

    order_by: list[tuple[str, str]] = []
    raw_order = doc.get("orderBy", [])
    if not isinstance(raw_order, list):
        raise QueryError("orderBy", "must be an array of [name, 'asc'|'desc']")
    for i, raw in enumerate(raw_order):
        if (not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str)
                or raw[1] not in ("asc", "desc")):
            raise QueryError(f"orderBy[{i}]", "must be [name, 'asc'|'desc']")
        if raw[0] not in metrics and raw[0] not in dimensions:
            raise QueryError(f"orderBy[{i}]", f"{raw[0]!r} is not one of the query's metrics or dimensions")
        order_by.append((raw[0], raw[1]))

    limit = doc.get("limit", 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    offset = doc.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError("offset", f"must be a whole number from 0 to {MAX_OFFSET}")
    return Query(tuple(metrics), tuple(dimensions), tuple(filters), tuple(order_by), limit, offset)


def _hour_key(value: str, where: str) -> str:
    """A time:hour value as the API prints it (local start with offset) → the bucket's key, UTC epoch seconds."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise QueryError(where, f"{value!r}: a time:hour value is an hour start with its offset, "
                                "e.g. 2026-11-24T10:00:00+01:00")
    return str(int(moment.timestamp()))


def scope_clauses(scope: Scope, sql: Sql) -> tuple[str, str]:
    """Binds $start, $end and (for one shop) $shop; returns the shop and bot clauses that follow a WHERE."""
    sql.params["start"] = scope.start
    sql.params["end"] = scope.end
    shop_clause = ""
    if scope.shop_id is not None:
        sql.params["shop"] = scope.shop_id
        shop_clause = "AND shop_id = $shop"
    return shop_clause, "" if scope.include_bots else "AND NOT is_bot"


def base_sql(scope: Scope, sql: Sql) -> str:
    """The base relation's SELECT for a scope; binds $start, $end, $tz and $shop."""
    shop_clause, bot_clause = scope_clauses(scope, sql)
    return BASE_SQL.format(shop_clause=shop_clause, bot_clause=bot_clause, order_key=ORDER_KEY,
                           session_columns=session_columns(SESSION_ATTRIBUTES))


def _filter_sql(flt: Filter, sql: Sql, timezone: str) -> str:
    column = resolve_dimension(flt.dimension, sql, timezone).sql
    if flt.op == "is_set":  # internal: breakdowns leave out rows without a value
        return f"({column}) IS NOT NULL"
    if flt.op in ("is", "is_not"):
        test = f"list_contains({sql.bind(list(flt.values))}, ({column})::VARCHAR)"
        return test if flt.op == "is" else f"(({column}) IS NULL OR NOT {test})"
    if flt.op in ("contains", "not_contains"):
        anyof = " OR ".join(f"contains(lower(({column})::VARCHAR), lower({sql.bind(v)}))" for v in flt.values)
        return f"({anyof})" if flt.op == "contains" else f"(({column}) IS NULL OR NOT ({anyof}))"
    anyof = " OR ".join(f"regexp_matches(({column})::VARCHAR, {sql.bind(v)})" for v in flt.values)
    return f"({anyof})"


def aggregate_sql(query: Query, relation: str, sql: Sql, *, timezone: str = "UTC", with_total: bool = True,
                  paged: bool = True, session_key: tuple[str, ...] = ("shop_id", "session_id")) -> str:
    """Two-level aggregation of `relation` (a base relation name or a parenthesised subquery)."""
    dims = [resolve_dimension(name, sql, timezone) for name in query.dimensions]
    dim_cols = [f"({d.sql}) AS d{i}" for i, d in enumerate(dims)]
    dim_names = [f"d{i}" for i in range(len(dims))]
    where = " AND ".join(_filter_sql(f, sql, timezone) for f in query.filters)
    filtered = f"FROM {relation} {'WHERE ' + where if where else ''}"
    # Without dimensions, a metric with a total_sql reads the events directly (joined as one row).
    direct = [] if dim_names else [name for name in query.metrics if METRICS[name].total_sql]
    needs = {column for name in query.metrics if name not in direct for column in METRICS[name].needs}
    level1 = level1_columns(needs) or "count(*) AS n_events"
    level1 = (
        f"SELECT {', '.join([*dim_cols, *session_key, level1])} {filtered} "
        f"GROUP BY {', '.join([*dim_names, *session_key])}"
    )
    group = f"GROUP BY {', '.join(dim_names)}" if dim_names else ""
    level2_cols: list[str] = []
    direct_cols: list[str] = []
    for i, name in enumerate(query.metrics):
        if name in direct:
            direct_cols.append(f"{METRICS[name].total_sql} AS m{i}")
        else:
            level2_cols.append(f"{METRICS[name].sql} AS m{i}")
    if any(name in query.metrics and METRICS[name].kind == "money" for name, _ in query.order_by):
        level2_cols.append(f"{MONEY_ORDER_SQL} AS money_order")
    # With neither dimensions nor level-2 metrics, an aggregate still makes level 2 the one row of the total.
    groups = f"SELECT {', '.join([*dim_names, *level2_cols] or ['count(*) AS n_rows'])} FROM ({level1}) AS l1 {group}"
    source = f"({groups}) AS l2"
    if direct_cols:
        source += f" CROSS JOIN (SELECT {', '.join(direct_cols)} {filtered}) AS e"
    metric_cols = [f"m{i}" for i in range(len(query.metrics))]
    total_col = ["count(*) OVER () AS total_rows"] if with_total else []
    order_terms = []
    for name, direction in query.order_by:
        if name in query.metrics:
            metric = METRICS[name]
            expr = "money_order" if metric.kind == "money" else f"m{query.metrics.index(name)}"
        else:
            expr = f"l2.d{query.dimensions.index(name)}"
        order_terms.append(f"{expr} {direction.upper()} NULLS LAST")
    # Deterministic pages: always finish with the dimensions.
    order_terms.extend(f"l2.{d} ASC NULLS LAST" for d in dim_names)
    order = f"ORDER BY {', '.join(order_terms)}" if order_terms else ""
    limit = f"LIMIT {sql.bind(query.limit)} OFFSET {sql.bind(query.offset)}" if paged else ""
    selected = [f"{dim.label.format(f'l2.d{i}')} AS d{i}" for i, dim in enumerate(dims)] + metric_cols + total_col
    return f"SELECT {', '.join(selected)} FROM {source} {order} {limit}"


def build_query_sql(query: Query, scope: Scope) -> Sql:
    """The whole SQL for a query over a scope: base relation as a CTE, then the aggregation."""
    sql = Sql()
    base = base_sql(scope, sql)
    body = aggregate_sql(query, "base", sql, timezone=scope.timezone)
    sql.text = f"WITH base AS ({base}) {body}"
    return sql


def build_count_sql(query: Query, scope: Scope) -> Sql:
    """How many result rows the query has before limit/offset (for a page past the end)."""
    sql = Sql()
    base = base_sql(scope, sql)
    body = aggregate_sql(query, "base", sql, timezone=scope.timezone, with_total=False, paged=False)
    sql.text = f"WITH base AS ({base}) SELECT count(*) FROM ({body}) AS rows"
    return sql
