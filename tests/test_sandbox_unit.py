"""The chat sandbox without the server: the SQL validator (pure), the locked instance, chart hints, answer hygiene
and the built-in router's question parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import duckdb
import pytest

from analytics.chat import chart_hint, plain_answer, tool_message, unsupported_numbers
from analytics.chat_builtin import NotUnderstood, route
from analytics.sandbox import Sandbox, SandboxCache, SqlFailed, SqlRejected, copy_shop_rows, describe, validate_sql
from analytics.warehouse import SCHEMA

NOW = datetime(2026, 11, 26, 4, 15, 17, tzinfo=UTC)

ACCEPTED = [
    "SELECT count(*) FROM events",
    "select path, count(*) AS n from events where event_type = 'page_view' group by 1 order by 2 desc limit 5",
    "FROM events SELECT count(*)",
    "WITH daily AS (SELECT date_trunc('day', ts) AS d, count(*) AS n FROM events GROUP BY 1) SELECT * FROM daily",
    "SELECT properties->>'plan' AS plan, count(*) FROM events GROUP BY ALL",
    "SELECT e.path FROM events AS e JOIN events AS f USING (id)",
    "SELECT device FROM events UNION ALL SELECT os FROM events",
    "SELECT unnest(generate_series(1, 10)) AS n",
    "SELECT count(*) FROM events QUALIFY row_number() OVER () = 1",
    "SELECT repeat('-', 10), lpad(path, 20, ' ') FROM events",
]

REJECTED = [
    ("", "empty"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("SELECT * FROM events; DROP TABLE events", "2 statements"),
    ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
    ("COPY events TO '/tmp/out.csv'", "COPY"),
    ("PRAGMA database_list", "PRAGMA"),
    ("SET threads = 8", "SET"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("EXPORT DATABASE '/tmp/dump'", "does not parse"),
    ("DELETE FROM events", "DELETE"),
    ("CREATE TABLE x AS SELECT 1", "CREATE"),
    ("DESCRIBE events", "DESCRIBE"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", "read_parquet"),
    ("SELECT * FROM query('SELECT * FROM events')", "query"),
    ("SELECT * FROM query_table('events')", "query_table"),
    ("SELECT * FROM glob('/etc/*')", "glob"),
    ("SELECT * FROM duckdb_tables()", "duckdb_tables"),
    ("SELECT * FROM pragma_table_info('events')", "pragma_table_info"),
    ("SELECT count(*) FROM duckdb_settings() ", "duckdb_settings"),
    ("SELECT current_setting('memory_limit')", "current_setting"),
    ("SELECT * FROM '/etc/passwd'", "no table"),
    ("SELECT * FROM main.events", "qualified"),
    ("SELECT * FROM memory.main.events", "qualified"),
    ("SELECT main.events.ts FROM events", "qualified"),
    ("SELECT * FROM information_schema.tables", "qualified"),
    ("SELECT * FROM pg_tables", "no table"),
    ("SELECT * FROM other_shop_events", "no table"),
    ("WITH events AS (SELECT 1 AS x) SELECT * FROM events", "CTE"),
    ("WITH Events AS (SELECT 1 AS x) SELECT * FROM events", "CTE"),
    ("SELECT count(*) FROM range(1e12)", "FROM"),
    ("SELECT list(range(1000000000000))", "10,000"),
    ("SELECT unnest(generate_series(1, 100000000))", "10,000"),
    ("SELECT range(ts, ts + INTERVAL 1 DAY, INTERVAL 1 SECOND) FROM events", "10,000"),
    ("SELECT repeat('x', 1000000000)", "repeat"),
    ("SELECT lpad('x', 2000000000, 'y')", "lpad"),
    ("SELECT list_resize([1], 100000000)", "list_resize"),
    ("SELECT printf('%0100000000d', 1)", "printf"),
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_validator_accepts_read_only_queries_over_events(sql: str) -> None:
    validate_sql(sql)


@pytest.mark.parametrize(("sql", "says"), REJECTED)
def test_validator_rejects_with_an_actionable_message(sql: str, says: str) -> None:
    with pytest.raises(SqlRejected) as caught:
        validate_sql(sql)
    assert says.lower() in str(caught.value).lower()


def warehouse_with_two_shops() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(SCHEMA)
    conn.execute("""
        INSERT INTO events
        SELECT i, 'id' || i, CASE WHEN i % 2 = 0 THEN 'alpha' ELSE 'beta' END, 's' || (i % 7), 'page_view', 'pv',
               CASE WHEN i % 2 = 0 THEN '{"k": "v"}' ELSE '{"secret": "beta-secret"}' END,
               TIMESTAMPTZ '2026-11-20 00:00:00+00' + i * INTERVAL 1 MINUTE, NULL, NULL, NULL, now(),
               CASE WHEN i % 2 = 0 THEN '/p' || (i % 3) ELSE '/beta-secret' END, NULL, NULL, 'direct', NULL, NULL,
               NULL, 'desktop', NULL, NULL, NULL, false, 'v', NULL, NULL, NULL, NULL
        FROM range(400) t(i)
    """)
    return conn


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    conn = warehouse_with_two_shops()
    box = Sandbox(copy_shop_rows(conn, "alpha"))
    conn.close()
    return box


def test_the_instance_holds_only_the_shops_rows_even_without_the_validator(sandbox: Sandbox) -> None:
    # execute() skips validation: this is what a validator bug would let through.
    assert sandbox.execute("SELECT count(*) FROM events").rows == [[200]]
    assert sandbox.execute("SELECT count(*) FROM events WHERE path = '/beta-secret'").rows == [[0]]
    tables = sandbox.execute("SELECT database_name, table_name FROM duckdb_tables()").rows
    assert tables == [["memory", "events"]]
    columns = [row[0] for row in sandbox.execute("SELECT column_name FROM (DESCRIBE events)").rows]
    assert "shop_id" not in columns and "path" in columns
    everything = str(sandbox.execute("SELECT * FROM events", row_cap=1000).rows)
    assert "beta" not in everything


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY events TO '/tmp/flowtel-sandbox-leak.csv'",
    "ATTACH '/tmp/flowtel-sandbox-leak.duckdb' AS leak",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "INSTALL httpfs",
    "LOAD httpfs",
])
def test_the_instance_is_locked_even_without_the_validator(sandbox: Sandbox, sql: str) -> None:
    with pytest.raises(SqlFailed):
        sandbox.execute(sql)


def test_python_objects_are_invisible(sandbox: Sandbox) -> None:
    secret_frame = {"x": [1]}  # noqa: F841 - a replacement scan would find this local by name
    with pytest.raises(SqlFailed):
        sandbox.execute("SELECT * FROM secret_frame")


def test_run_sql_runs_the_validated_tree_with_a_row_cap(sandbox: Sandbox) -> None:
    result = sandbox.run_sql("select path, count(*) as n from events group by path order by n desc, path",
                             row_cap=2)
    assert result.columns == ["path", "n"]
    assert result.rows == [["/p0", 67], ["/p2", 67]]  # evens: i % 3 cycles 0, 2, 1; /p1 has 66
    assert result.truncated and result.row_count == 2
    assert result.sql.startswith("SELECT path, COUNT(*) AS n FROM events")
    with pytest.raises(SqlFailed, match="shop_id"):
        sandbox.run_sql("SELECT * FROM events WHERE shop_id = 'beta'")


def test_a_runaway_query_is_interrupted(sandbox: Sandbox) -> None:
    with pytest.raises(SqlFailed, match="longer than"):
        sandbox.run_sql("SELECT count(*) FROM events a, events b, events c, events d, events e", timeout_s=0.3)
    assert sandbox.run_sql("SELECT count(*) AS n FROM events").rows == [[200]]


def test_a_memory_bomb_stops_at_the_memory_limit(sandbox: Sandbox) -> None:
    with pytest.raises(SqlFailed):
        sandbox.run_sql("SELECT string_agg(a.properties::VARCHAR || b.properties::VARCHAR || c.path, ',') "
                        "FROM events a, events b, events c", timeout_s=10)


def test_describe_is_sanitised_and_shopless(sandbox: Sandbox) -> None:
    schema = describe(sandbox)
    assert schema["rows"] == 200
    assert "shop_id" not in [c["name"] for c in schema["columns"]]
    assert schema["eventTypes"] == [{"value": "page_view", "events": 200}]
    assert schema["propertyKeys"] == [{"key": "k", "events": 200}]
    assert schema["firstEvent"] == "2026-11-20T00:00:00.000Z"


def test_the_cache_reuses_a_sandbox_until_the_mirror_moves_or_it_expires(sandbox: Sandbox) -> None:
    now = [0.0]
    cache = SandboxCache(ttl_s=60, max_shops=1, monotonic=lambda: now[0])
    cache.put("alpha", 10, sandbox)
    assert cache.get("alpha", 10) is sandbox
    assert cache.get("alpha", 11) is None
    cache.put("alpha", 11, sandbox)
    now[0] = 61
    assert cache.get("alpha", 11) is None
    cache.put("alpha", 12, sandbox)
    cache.put("gamma", 12, sandbox)
    assert cache.get("alpha", 12) is None  # evicted: one shop at most


@pytest.mark.parametrize(("columns", "rows", "expected"), [
    (["n"], [[42]], {"type": "number", "x": None, "y": "n"}),
    (["date", "sessions"], [["2026-11-24", 3], ["2026-11-25", 5]], {"type": "line", "x": "date", "y": "sessions"}),
    (["path", "views"], [["/", 3], ["/a", 1]], {"type": "bar", "x": "path", "y": "views"}),
    (["path", "device"], [["/", "mobile"]], {"type": "table", "x": None, "y": None}),
    ([], [], {"type": "table", "x": None, "y": None}),
])
def test_chart_hint_follows_the_result_shape(columns: list[str], rows: list[list[object]],
                                             expected: dict[str, object]) -> None:
    assert chart_hint(columns, rows) == expected


def test_plain_answer_removes_links_images_and_control_characters() -> None:
    text = ("Top page: [home](https://evil.example/x) ![pixel](https://evil.example/p.png) see "
            "https://evil.example/phish or www.evil.example <img src=x>\x1b[31m done\u202e")
    clean = plain_answer(text)
    assert "evil" not in clean and "http" not in clean and "<img" not in clean
    assert "\x1b" not in clean and "\u202e" not in clean
    assert clean.startswith("Top page: home")


def test_tool_results_are_marked_untrusted_and_clipped() -> None:
    message = tool_message({"rows": [["A" * 1000 + "\x00\x07"]]})
    assert message.startswith('<tool_result trust="untrusted">')
    assert "A" * 200 not in message and "\\u0000" not in message


def test_numbers_missing_from_every_result_are_reported() -> None:
    evidence = [[["/", 12], ["/a", 0.256]]]
    assert unsupported_numbers("/ had 12 views; conversion 25.6% over 7 days", evidence, "last 7 days?") == []
    assert unsupported_numbers("/ had 13 views", evidence, "q") == ["13"]


@pytest.mark.parametrize(("question", "intent", "metric"), [
    ("How many visitors did we have in the last 7 days?", "totals", "visitors"),
    ("Top pages this month", "pages", "sessions"),
    ("top sources last 30 days", "sources", "sessions"),
    ("Devices yesterday", "devices", "sessions"),
    ("Which countries do visitors come from?", "countries", "sessions"),
    ("Daily page views last 14 days", "trend", "pageViews"),
    ("Compare sessions with the previous period", "compare", "sessions"),
    ("Top products last month", "products", "sessions"),
    ("Revenue last 30 days", "revenue", "sessions"),
])
def test_router_recognises_the_fixed_questions(question: str, intent: str, metric: str) -> None:
    plan = route(question, NOW, ZoneInfo("UTC"))
    assert (plan.intent, plan.metric) == (intent, metric)


@pytest.mark.parametrize("question", [
    "Which products did mobile visitors from the spring campaign buy last week?",
    "Why did sales drop?",
    "Write me a poem",
])
def test_router_declines_what_the_fixed_queries_cannot_answer(question: str) -> None:
    with pytest.raises(NotUnderstood):
        route(question, NOW, ZoneInfo("UTC"))


def test_router_periods_follow_the_timezone() -> None:
    plan = route("sessions last 7 days", NOW, ZoneInfo("America/New_York"))
    assert plan.period.start.isoformat() == "2026-11-19T00:00:00-05:00"
    assert plan.period.end.isoformat() == "2026-11-26T00:00:00-05:00"
