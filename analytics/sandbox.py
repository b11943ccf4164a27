"""The chat sandbox: one shop's events copied into a separate, locked in-memory DuckDB, and the validator that
accepts model-written SQL only as a single SELECT over `events`.

Isolation does not rest on the validator: the instance only ever holds the asking shop's rows and cannot read
files, load extensions or see Python objects. The validator exists to give the model a message it can act on and
to keep cheap resource bombs (huge generators, huge strings) from reaching the engine at all.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

TABLE = "events"
# Everything of the warehouse row except the shop: the model cannot even name another shop.
COPY_SHOP_ROWS = "SELECT * EXCLUDE (shop_id) FROM events WHERE shop_id = $shop ORDER BY ts, seq"

ROW_CAP = 200
QUERY_TIMEOUT_S = 5.0
MEMORY_LIMIT = "256MB"
CACHE_TTL_S = 60.0
CACHE_SHOPS = 8
# Largest size argument a generator function (range, repeat, lpad, ...) may take: bigger ones are memory bombs
# that DuckDB evaluates without checking for an interrupt.
MAX_GENERATED = 10_000

# Applied after the copy, in this order; lock_configuration last so no query can undo any of it.
LOCKDOWN = (
    "SET python_enable_replacements = false",
    "SET temp_directory = ''",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
CONNECT_CONFIG: dict[str, Any] = {
    "threads": 1,
    "memory_limit": MEMORY_LIMIT,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
}

# Function names the model may not call: file and URL readers, SQL-in-a-string, catalog and settings readers.
DENIED_FUNCTIONS = frozenset({
    "query", "query_table", "glob", "sniff_csv", "current_setting", "getenv", "which_secret", "checkpoint",
    "force_checkpoint", "json_execute_serialized_sql", "json_deserialize_sql", "repeat_row", "test_all_types",
    "delta_scan", "iceberg_scan", "sqlite_scan", "postgres_scan", "mysql_scan", "summary", "readcsv", "readparquet",
    "load_aws_credentials", "current_database", "current_schema", "current_schemas",
})
DENIED_PREFIXES = ("duckdb_", "pragma_", "read_", "parquet_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_",
                   "icu_", "pg_")
_WIDE_FORMAT = re.compile(r"\d{5,}")
_INTERVAL_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
                     "month": 28 * 86400, "year": 365 * 86400}


class SqlRejected(ValueError):
    """Model-written SQL the sandbox will not run; the message tells the model what to write instead."""


class SqlFailed(RuntimeError):
    """A validated query failed inside the sandbox (bad column, type error, timeout, memory limit)."""


@dataclass(frozen=True, slots=True)
class Result:
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    ms: float


# ---------------------------------------------------------------------------------------------------------------
# Validation: pure functions over a sqlglot tree.

def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Pad):
        return "lpad" if node.args.get("is_left") else "rpad"
    return node.sql_name().lower()


def _number(node: exp.Expression | None) -> float | None:
    """The value of a numeric literal (also negated), else None."""
    if isinstance(node, exp.Paren):
        return _number(node.this)
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return -inner if inner is not None else None
    if isinstance(node, exp.Literal) and node.is_number:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def _moment(node: exp.Expression | None) -> dt.datetime | None:
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and not node.this.is_number:
        try:
            return dt.datetime.fromisoformat(str(node.this.this))
        except ValueError:
            return None
    return None


def _interval_seconds(node: exp.Expression | None) -> float | None:
    if not isinstance(node, exp.Interval):
        return None
    amount = _number(node.this) if node.this is not None else None
    if amount is None and isinstance(node.this, exp.Literal):
        try:
            amount = float(node.this.this)
        except ValueError:
            amount = None
    unit = (node.unit.name if node.unit is not None else "").lower().rstrip("s")
    if amount is None or unit not in _INTERVAL_SECONDS:
        return None
    return amount * _INTERVAL_SECONDS[unit]


def _series_length(node: exp.GenerateSeries) -> float | None:
    """How many values range()/generate_series() would produce, when it is computable from literals."""
    start, end, step = node.args.get("start"), node.args.get("end"), node.args.get("step")
    lo, hi = _number(start), _number(end)
    if lo is not None and hi is not None:
        by = _number(step) if step is not None else 1.0
        return None if not by else abs(hi - lo) / abs(by)
    first, last = _moment(start), _moment(end)
    seconds = _interval_seconds(step)
    if first is not None and last is not None and seconds:
        return abs((last - first).total_seconds()) / seconds
    return None


def _check_generator(node: exp.Func, name: str) -> None:
    too_big = (f"{name}() may only produce up to {MAX_GENERATED:,} values, with number (or DATE/TIMESTAMP and "
               "INTERVAL) literals as bounds; aggregate over events instead")
    if isinstance(node, exp.GenerateSeries):
        length = _series_length(node)
        if length is None or length > MAX_GENERATED:
            raise SqlRejected(too_big)
        return
    if isinstance(node, exp.Repeat | exp.Pad) or name in ("list_resize", "array_resize", "repeat", "lpad", "rpad"):
        if isinstance(node, exp.Repeat):
            sizes = [node.args.get("times")]
        elif isinstance(node, exp.Pad):
            sizes = [node.args.get("expression")]
        else:
            sizes = list(node.expressions[:1])
        for size in sizes:
            value = _number(size)
            if value is None or abs(value) > MAX_GENERATED:
                raise SqlRejected(f"{name}() takes a number literal of at most {MAX_GENERATED:,} as its size")
    if name in ("printf", "format"):
        for literal in node.find_all(exp.Literal):
            if not literal.is_number and _WIDE_FORMAT.search(str(literal.this)):
                raise SqlRejected(f"{name}() with a field width of 10,000 or more is not allowed")


def _statement_kind(tree: Any) -> str:
    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    return type(tree).__name__.upper()


def validate_sql(sql: str) -> exp.Query:
    """Parse model SQL (DuckDB dialect) and return its tree when it is one read-only query over `events`.

    Raises SqlRejected with a sentence the model can act on.
    """
    if not sql or not sql.strip():
        raise SqlRejected("the query is empty: write one SELECT over the table events")
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise SqlRejected(f"the query does not parse as DuckDB SQL ({first}); write one SELECT over events") from None
    if len(statements) != 1:
        raise SqlRejected(f"found {len(statements)} statements: send exactly one SELECT (or WITH ... SELECT)")
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        raise SqlRejected(f"{_statement_kind(tree)} is not allowed: only one SELECT (or WITH ... SELECT) over the "
                          "table events may run")

    cte_names: set[str] = set()
    for cte in tree.find_all(exp.CTE):
        alias = cte.alias_or_name.lower()
        if alias == TABLE:
            raise SqlRejected("a CTE may not be named events (it would shadow the table): pick another name")
        cte_names.add(alias)

    for node in tree.walk():
        if isinstance(node, exp.Into):
            raise SqlRejected("SELECT ... INTO is not allowed: the sandbox is read-only")
        if isinstance(node, exp.Command | exp.Pragma | exp.Set | exp.Attach | exp.Detach | exp.Copy | exp.Install
                      | exp.Describe | exp.Summarize | exp.DML | exp.Create | exp.Drop | exp.Use):
            raise SqlRejected(f"{_statement_kind(node)} is not allowed: only SELECT over the table events")
        if isinstance(node, exp.Table):
            _check_table(node, cte_names)
        elif isinstance(node, exp.Column) and len(node.parts) > 2:
            raise SqlRejected(f"{node.sql(dialect='duckdb')}: qualified names are not allowed; write "
                              "events.column or alias.column")
        elif isinstance(node, exp.Func):
            name = _function_name(node)
            if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
                raise SqlRejected(f"the function {name}() is not available here: only the table events can be "
                                  "read, with ordinary scalar and aggregate functions")
            _check_generator(node, name)
    return tree


def _check_table(node: exp.Table, cte_names: set[str]) -> None:
    if not isinstance(node.this, exp.Identifier):
        inner = node.this
        name = _function_name(inner) if isinstance(inner, exp.Func) else inner.sql(dialect="duckdb")
        raise SqlRejected(f"FROM {name}(...) is not allowed: read from the table events (or your own CTEs)")
    if node.args.get("db") or node.args.get("catalog"):
        raise SqlRejected(f"{node.sql(dialect='duckdb')}: qualified names are not allowed; the only table is events")
    name = node.name.lower()
    if name != TABLE and name not in cte_names:
        raise SqlRejected(f"there is no table {node.name!r}: the only table is events (plus CTEs you define)")


def render(tree: exp.Query, row_cap: int = ROW_CAP) -> str:
    """The validated tree as DuckDB SQL, wrapped so it returns at most row_cap + 1 rows (the +1 tells truncation)."""
    body = tree.sql(dialect="duckdb")
    return f"SELECT * FROM ({body}) AS result LIMIT {int(row_cap) + 1}"


# ---------------------------------------------------------------------------------------------------------------
# Values → JSON.

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int) -> str:
    """Control and bidi characters stripped, truncated to limit characters with an ellipsis."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def jsonable(value: Any, string_limit: int | None = None) -> Any:
    """A DuckDB value as JSON: instants as ISO 8601 UTC with Z, decimals as floats, NaN as null."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value, string_limit) if string_limit else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return value.isoformat(timespec="milliseconds") + "Z"
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v, string_limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, string_limit) for v in value]
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# The instance.

def copy_shop_rows(conn: duckdb.DuckDBPyConnection, shop_id: str) -> pa.Table:
    """One shop's warehouse rows, without the shop column (runs on a warehouse read connection)."""
    # Its own cursor: the shared connection may hold another caller's unread execute() result.
    cursor = conn.cursor()
    try:
        relation = cursor.sql(COPY_SHOP_ROWS, params={"shop": shop_id})
        assert relation is not None
        table: pa.Table = relation.to_arrow_table()
    finally:
        cursor.close()
    return table


class Sandbox:
    """A locked in-memory DuckDB holding one shop's events as the table `events`. Queries are serialised."""

    def __init__(self, rows: pa.Table, *, memory_limit: str = MEMORY_LIMIT) -> None:
        self._lock = threading.Lock()
        self.row_total = rows.num_rows
        config = dict(CONNECT_CONFIG, memory_limit=memory_limit)
        self._db = duckdb.connect(":memory:", config=config)
        try:
            self._db.execute("SET TimeZone = 'UTC'")
            self._db.register("shop_rows", rows)
            # properties travels through Arrow as text; it is JSON again here so ->> and json_* work as documented.
            self._db.execute(f"CREATE TABLE {TABLE} AS SELECT * REPLACE (properties::JSON AS properties) "
                             "FROM shop_rows")
            self._db.unregister("shop_rows")
            for statement in LOCKDOWN:
                self._db.execute(statement)
        except BaseException:
            self._db.close()
            raise
        self.closed = False

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._db.close()
                self.closed = True

    def run_sql(self, sql: str, *, row_cap: int = ROW_CAP, timeout_s: float = QUERY_TIMEOUT_S) -> Result:
        """Validate model SQL, run the re-rendered tree with a row cap and a timer. Raises SqlRejected/SqlFailed."""
        tree = validate_sql(sql)
        return self.execute(render(tree, row_cap), row_cap=row_cap, timeout_s=timeout_s,
                            shown=tree.sql(dialect="duckdb"))

    def execute(self, text: str, params: dict[str, Any] | None = None, *, row_cap: int = ROW_CAP,
                timeout_s: float = QUERY_TIMEOUT_S, shown: str | None = None) -> Result:
        """Run SQL the server wrote (or validated) inside this instance, interrupted after timeout_s."""
        with self._lock:
            if self.closed:
                raise SqlFailed("the sandbox was closed; ask again")
            cursor = self._db.cursor()
            timer = threading.Timer(timeout_s, cursor.interrupt)
            started = time.perf_counter()
            timer.start()
            try:
                cursor.execute(text, params or {})
                columns = [d[0] for d in cursor.description or []]
                fetched = cursor.fetchmany(row_cap + 1)
            except duckdb.InterruptException:
                raise SqlFailed(f"the query ran longer than {timeout_s:g} s and was stopped: aggregate more, "
                                "filter by time, or avoid joining events with itself") from None
            except duckdb.OutOfMemoryException:
                raise SqlFailed(f"the query needed more than {MEMORY_LIMIT} of memory and was stopped: aggregate "
                                "in SQL instead of building large lists or strings") from None
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SqlFailed(clean_text(first, 500)) from None
            finally:
                timer.cancel()
                cursor.close()
            ms = round((time.perf_counter() - started) * 1000, 3)
        truncated = len(fetched) > row_cap
        rows = [[jsonable(v) for v in row] for row in fetched[:row_cap]]
        return Result(shown or text, columns, rows, len(rows), truncated, ms)


@dataclass
class _Entry:
    watermark: int
    built_at: float
    sandbox: Sandbox


class SandboxCache:
    """Sandboxes per shop, reused while the mirror has not moved and for at most ttl_s; least recently used out."""

    def __init__(self, *, ttl_s: float = CACHE_TTL_S, max_shops: int = CACHE_SHOPS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_shops = max_shops
        self._monotonic = monotonic
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, shop_id: str, watermark: int) -> Sandbox | None:
        with self._lock:
            entry = self._entries.get(shop_id)
            if entry is None:
                return None
            if entry.watermark != watermark or self._monotonic() - entry.built_at > self.ttl_s:
                # Not closed here: a request may still be using it; DuckDB frees it with the last reference.
                del self._entries[shop_id]
                return None
            self._entries.move_to_end(shop_id)
            return entry.sandbox

    def put(self, shop_id: str, watermark: int, sandbox: Sandbox) -> None:
        with self._lock:
            self._entries.pop(shop_id, None)
            self._entries[shop_id] = _Entry(watermark, self._monotonic(), sandbox)
            while len(self._entries) > self.max_shops:
                self._entries.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.sandbox.close()


DESCRIBE_COLUMNS = "SELECT column_name, column_type FROM (DESCRIBE events)"
DESCRIBE_RANGE = "SELECT min(ts), max(ts), count(*) FROM events"
DESCRIBE_EVENT_TYPES = "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC, 1 LIMIT 15"
DESCRIBE_PROPERTY_KEYS = """
SELECT key, count(*) AS n FROM (SELECT unnest(json_keys(properties)) AS key FROM events)
GROUP BY 1 ORDER BY n DESC, 1 LIMIT 20
"""
SCHEMA_TEXT_LIMIT = 80


def describe(sandbox: Sandbox) -> dict[str, Any]:
    """What get_schema tells the model: columns, time range, frequent event types and property keys. Event types
    and keys are shop data, so they are cut short and stripped of control characters."""
    columns = sandbox.execute(DESCRIBE_COLUMNS).rows
    first, last, total = sandbox.execute(DESCRIBE_RANGE).rows[0]
    types = sandbox.execute(DESCRIBE_EVENT_TYPES).rows
    keys = sandbox.execute(DESCRIBE_PROPERTY_KEYS).rows
    return {
        "table": TABLE,
        "columns": [{"name": name, "type": kind} for name, kind in columns],
        "rows": total,
        "firstEvent": first,
        "lastEvent": last,
        "eventTypes": [{"value": clean_text(str(v), SCHEMA_TEXT_LIMIT), "events": n} for v, n in types],
        "propertyKeys": [{"key": clean_text(str(k), SCHEMA_TEXT_LIMIT), "events": n} for k, n in keys],
    }
