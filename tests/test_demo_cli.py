"""The demo generator (pure), then demo → analyze → export → rebuild through `flowtel` on real files in tmp_path."""

from __future__ import annotations

import collections
import json
import random
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pyarrow.parquet as pq
import pytest

from analytics import sqlitelib
from analytics.report import change_text, clean, render_html, sparkline, squeeze
from server.cli import main
from server.demo import generate_demo_events
from server.events import CANONICAL_TYPES, ParsedBody, RequestInfo, parse_body, parse_events

NOW = datetime(2026, 11, 26, 4, 15, 17, tzinfo=UTC)
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def four_weeks() -> list[dict[str, Any]]:
    return list(generate_demo_events(random.Random(7), NOW, days=28))


def test_generator_is_deterministic_per_seed() -> None:
    first = list(generate_demo_events(random.Random(3), NOW, days=5))
    again = list(generate_demo_events(random.Random(3), NOW, days=5))
    other = list(generate_demo_events(random.Random(4), NOW, days=5))
    assert first == again
    assert {e["id"] for e in first}.isdisjoint({e["id"] for e in other})
    # Each session has its own seeded stream: a shorter run is exactly the tail of a longer one (same ids).
    shorter = list(generate_demo_events(random.Random(3), NOW, days=3))
    assert {e["id"] for e in shorter} < {e["id"] for e in first}


def test_events_pass_real_ingestion_parsing(four_weeks: list[dict[str, Any]]) -> None:
    info = RequestInfo(user_agent="loader", client_ip="127.0.0.1", country=None,
                       now_ms=int(NOW.timestamp() * 1000), salt=b"s" * 32)
    parsed = []
    for i in range(0, len(four_weeks), 500):
        batch = four_weeks[i:i + 500]
        body = parse_body(json.dumps(batch).encode())  # raises ApiError on any problem
        assert isinstance(body, ParsedBody)
        parsed += parse_events(body, info)
    assert len(parsed) == len(four_weeks)
    assert len({e.id for e in parsed}) == len(parsed)
    assert {e.event_type for e in parsed} <= set(CANONICAL_TYPES)
    assert all(e.timestamp <= info.now_ms for e in parsed)
    devices = collections.Counter(e.device for e in parsed)
    assert {"mobile", "desktop", "tablet", "bot"} <= set(devices)
    assert all(e.user_agent for e in parsed)
    bots = devices["bot"] / len(parsed)
    assert 0.01 <= bots <= 0.04, bots


def _purchases(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["eventType"] in ("purchase", "Order Completed")]


def test_mix_is_realistic(four_weeks: list[dict[str, Any]]) -> None:
    assert 15_000 <= len(four_weeks) <= 30_000  # 90 days of three shops stays within 30-80k
    purchases = _purchases(four_weeks)
    assert {p["properties"]["currency"] for p in purchases} == {"USD", "EUR"}
    order_ids = collections.Counter(p["properties"].get("orderId") or p["properties"].get("order_id")
                                    for p in purchases)
    assert None not in order_ids
    repeated = sum(1 for n in order_ids.values() if n > 1)
    assert repeated >= 1 and repeated <= len(order_ids) * 0.05  # a few reloaded thank-you pages
    for p in purchases:
        props = p["properties"]
        lines = props.get("items") or props.get("products")
        value = props.get("value", props.get("total"))
        assert lines and value == pytest.approx(sum(i["price"] * i["quantity"] for i in lines))
    campaigns = {parse_qs(urlsplit(e["url"]).query).get("utm_campaign", [None])[0] for e in four_weeks} - {None}
    assert len(campaigns) >= 3
    referrers = {urlsplit(e["referrer"]).hostname for e in four_weeks if e.get("referrer")}
    assert {"www.google.com", "m.facebook.com"} <= referrers
    # Weekly seasonality: the average weekend day is busier than the average weekday.
    per_day = collections.Counter(e["timestamp"][:10] for e in four_weeks)
    weekend = [n for d, n in per_day.items() if date.fromisoformat(d).weekday() >= 5]
    weekday = [n for d, n in per_day.items() if date.fromisoformat(d).weekday() < 5 and d != NOW.date().isoformat()]
    assert sum(weekend) / len(weekend) > 1.15 * sum(weekday) / len(weekday)
    # Funnel: each step reached by fewer sessions than the one before.
    types = collections.defaultdict(set)
    for e in four_weeks:
        types[e["eventType"]].add(e["sessionId"])
    steps = [len(types[t]) for t in ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase")]
    assert steps == sorted(steps, reverse=True) and steps[-1] > 0


# ---- pure rendering ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "expected"), [
    ([], ""), ([0, 0], "▁▁"), ([0, 7], "▁█"), ([1, 2, 4, 8], "▂▃▅█"),
])
def test_sparkline(values: list[int], expected: str) -> None:
    assert sparkline(values) == expected


def test_squeeze_and_clean() -> None:
    assert squeeze([1] * 180, 90) == [2.0] * 90
    assert clean("\x1b[31mred\x07", 20) == "?[31mred?"
    assert clean("a" * 10, 5) == "aaaa…"


@pytest.mark.parametrize(("name", "change", "current", "expected"), [
    ("events", 12.5, 9, "▲ +12.5%"),
    ("events", None, 9, "new"),
    ("events", None, 0, "–"),
    ("bounceRate", -2.0, 0.3, "▼ -2.0 pp"),
    ("avgSessionDuration", None, 12.0, "–"),
    ("revenue", {"EUR": None, "USD": 0.0}, [{"currency": "EUR", "amount": 5.0}], "EUR new, USD = +0.0%"),
])
def test_change_text(name: str, change: Any, current: Any, expected: str) -> None:
    assert change_text(name, change, current) == expected


# ---- end to end through the CLI ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:{tmp_path}/flowtel.db")
    monkeypatch.setenv("FLOWTEL_DUCKDB_PATH", str(tmp_path / "flowtel.duckdb"))
    monkeypatch.setenv("FLOWTEL_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("FLOWTEL_SQLITE_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("PORT", "1")  # never a running server, whatever this machine runs
    return tmp_path


def _sqlite(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlitelib.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


class HeldFile:
    """Another process holding the DuckDB file, as the running server does."""

    def __init__(self, path: Path) -> None:
        code = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_demo_analyze_export_rebuild(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, duck = env / "flowtel.db", env / "flowtel.duckdb"
    out = _run(capsys, "demo", "--days", "7", "--shops", "demo-shoes,demo-coffee", "--in-process")
    assert "in-process" in out and "make analyze SHOP=demo-shoes" in out and "token create --shop demo-shoes" in out
    total = _sqlite(db, "SELECT count(*) FROM events")[0][0]
    assert 1000 < total < 6000
    assert f"{total:,} new, 0 already stored" in out
    # Loading again stores nothing twice: the ids are chosen by the generator.
    out = _run(capsys, "demo", "--days", "7", "--shops", "demo-shoes,demo-coffee", "--in-process")
    assert "0 new" in out
    assert _sqlite(db, "SELECT count(*) FROM events")[0][0] >= total

    # analyze: totals agree with SQLite for the printed range, and the funnel is there.
    html = env / "out" / "report.html"
    out = _run(capsys, "analyze", "--shop", "demo-shoes", "--days", "7", "--html", str(html))
    period = re.search(r"(\d{4}-\d\d-\d\d) → (\d{4}-\d\d-\d\d) \(7 days, UTC\)", out)
    assert period is not None, out
    first, last = period.groups()
    start = datetime.fromisoformat(first).replace(tzinfo=UTC)
    end = datetime.fromisoformat(last).replace(tzinfo=UTC) + timedelta(days=1)
    events, page_views = _sqlite(db, "SELECT count(*), count(*) FILTER (WHERE event_type = 'page_view') FROM events "
                                     "WHERE shop_id = 'demo-shoes' AND NOT is_bot AND timestamp >= ? AND timestamp < ?",
                                 (int(start.timestamp() * 1000), int(end.timestamp() * 1000)))[0]
    assert re.search(rf"^  Events +{events:,} ", out, re.M), out
    assert re.search(rf"^  Page views +{page_views:,} ", out, re.M), out
    for heading in ("Totals", "Top pages", "Sources", "Funnel", "Top products"):
        assert re.search(rf"^{heading}$", out, re.M), heading
    for step in ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase"):
        assert re.search(rf"^  {step} +[\d,]+ +[\d.]+% of start", out, re.M), step
    assert re.search(r"[▁▂▃▄▅▆▇█]{7}", out)
    page = html.read_text()
    assert "<svg" in page and "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "demo-shoes" in page

    # export: every event of the shop, bots included.
    shop_rows = _sqlite(db, "SELECT count(*) FROM events WHERE shop_id = 'demo-shoes'")[0][0]
    out = _run(capsys, "export", "--shop", "demo-shoes", "--format", "parquet")
    parquet = env / "export-demo-shoes.parquet"
    assert pq.read_table(parquet).num_rows == shop_rows
    assert set(pq.read_table(parquet).column("shop_id").to_pylist()) == {"demo-shoes"}
    target = env / "x" / "shoes.ndjson"
    _run(capsys, "export", "--shop", "demo-shoes", "--format", "ndjson", "--output", str(target))
    lines = target.read_text().splitlines()
    assert len(lines) == shop_rows
    row = json.loads(lines[0])
    assert row["shop_id"] == "demo-shoes" and isinstance(row["properties"], dict)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["ts"])
    assert not list(env.rglob("*.part"))

    # rebuild: exactly the SQLite rows, clustered by (shop, time), swapped in; a stale build is ignored.
    (env / "flowtel.duckdb.rebuild").write_bytes(b"half-written garbage from an interrupted run")
    rows = _sqlite(db, "SELECT count(*), max(seq) FROM events")[0]
    _run(capsys, "rebuild", "--quiet")
    assert not (env / "flowtel.duckdb.rebuild").exists() and not (env / "flowtel.duckdb.wal").exists()
    conn = duckdb.connect(str(duck), read_only=True)
    try:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (rows[0], rows[0])
        assert conn.execute("SELECT watermark FROM mirror_state").fetchone() == (rows[1],)
        physical = conn.execute("SELECT shop_id, ts FROM events").fetchall()  # storage order
        assert physical == sorted(physical)
        assert {shop for shop, _ in physical} == {"demo-shoes", "demo-coffee"}
    finally:
        conn.close()

    # While another process holds the DuckDB file, every offline command refuses clearly and changes nothing.
    before = duck.read_bytes()
    held = HeldFile(duck)
    try:
        for argv, hint in ((["rebuild"], "server must be stopped"), (["analyze", "--shop", "demo-shoes"], "/api/stats"),
                           (["export", "--shop", "demo-shoes"], "Stop the server")):
            with pytest.raises(SystemExit) as exit_info:
                main(argv)
            assert exit_info.value.code == 1
            err = capsys.readouterr().err
            assert "is in use by another process" in err and hint in err, err
    finally:
        held.release()
    assert not (env / "flowtel.duckdb.rebuild").exists()
    assert duck.read_bytes() == before


def test_html_escapes_event_data() -> None:
    hostile = '<script>alert("x")</script><img src=https://evil.example/p.png>'
    report: dict[str, Any] = {
        "shopId": "s1",
        "range": {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-27T00:00:00+00:00", "timezone": "UTC",
                  "interval": "day"},
        "totals": {"events": 3, "pageViews": 2, "sessions": 1, "visitors": 1, "bounceRate": 0.0,
                   "avgSessionDuration": 10.0, "viewsPerSession": 2.0, "orders": 1,
                   "revenue": [{"currency": "<b>", "amount": 5.0}], "averageOrderValue": [], "conversionRate": 1.0},
        "timeseries": [{"date": "2026-11-20", "events": 3, "pageViews": 2, "sessions": 1, "visitors": 1,
                        "orders": 1, "revenue": []}],
        "topPages": [{"value": hostile, "pageViews": 2, "sessions": 1}],
        "sources": [{"value": hostile, "sessions": 1, "pageViews": 2}],
        "funnel": [{"step": hostile, "sessions": 1, "rateFromStart": 1.0, "rateFromPrevious": 1.0}],
        "topProducts": [{"productId": hostile, "name": hostile, "views": 1, "addToCarts": 1, "purchases": 1,
                         "revenue": [{"currency": "USD", "amount": 5.0}]}],
    }
    page = render_html(report)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
