"""The SQLite → DuckDB mirror: lag and last sync through the app (/healthz, /metrics, read-your-writes), the columns
extracted at mirror time, exactly-once copying across a failing batch and a real process crash, and incremental
catch-up past the watermark."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics import sqlitelib
from analytics.mirror import Mirror
from analytics.warehouse import Warehouse
from server.events import NewEvent
from server.keys import WAREHOUSE
from server.store import INSERT_EVENT, prepare_database
from tests.conftest import NOW_MS, ClientFactory

ROOT = Path(__file__).resolve().parent.parent
UA_DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
ISO_MS_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


# ---------------------------------------------------------------------------------------------- helpers


def base_event(n: int = 0, **overrides: Any) -> NewEvent:
    event = NewEvent(
        id=str(uuid.UUID(int=random.Random(n).getrandbits(128), version=4)),
        shop_id="shop1",
        session_id=f"s{n % 7}",
        event_type="page_view",
        event_name="page_view",
        properties="{}",
        timestamp=NOW_MS - n * 1000,
        url=f"https://shop.example/p/{n}",
        referrer=None,
        user_agent=UA_DESKTOP,
        created_at=NOW_MS,
        path=f"/p/{n}",
        browser="Chrome",
        os="Windows",
        device="desktop",
        country="DE",
        is_bot=False,
        visitor_hash=f"v{n % 5}",
    )
    return replace(event, **overrides)


def props(**values: Any) -> str:
    return orjson.dumps(values).decode()


def insert(path: Path, events: list[NewEvent]) -> None:
    conn = sqlitelib.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(INSERT_EVENT, [e.row() for e in events])
        conn.execute("COMMIT")
    finally:
        conn.close()


def sqlite_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlitelib.connect(path)
    try:
        return [(int(s), str(i)) for s, i in conn.execute("SELECT seq, id FROM events ORDER BY seq")]
    finally:
        conn.close()


def duck_rows(warehouse: Warehouse) -> list[tuple[int, str]]:
    return warehouse.call(lambda c: [(int(s), str(i)) for s, i in
                                     c.execute("SELECT seq, id FROM events ORDER BY seq, id").fetchall()])


def watermark(warehouse: Warehouse) -> int:
    return warehouse.call(lambda c: int(c.execute("SELECT watermark FROM mirror_state WHERE id = 1").fetchone()[0]))


class Env:
    """A SQLite file made by the store's own migrations and a DuckDB warehouse beside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.sqlite_path = tmp_path / "flowtel.db"
        self.duck_path = tmp_path / "flowtel.duckdb"
        prepare_database(self.sqlite_path)
        self.warehouses: list[Warehouse] = []
        self.mirrors: list[tuple[Warehouse, Mirror]] = []

    def open(self) -> Warehouse:
        warehouse = Warehouse(self.duck_path, memory_limit="256MB", threads=1)
        warehouse.open_sync()
        self.warehouses.append(warehouse)
        return warehouse

    def mirror(self, warehouse: Warehouse, **kwargs: Any) -> Mirror:
        mirror = Mirror(self.sqlite_path, **kwargs)
        self.mirrors.append((warehouse, mirror))
        return mirror

    def close(self, warehouse: Warehouse) -> None:
        for owner, mirror in self.mirrors:
            if owner is warehouse:
                warehouse.call(lambda c, m=mirror: m.close())
        warehouse.close_sync()
        self.warehouses.remove(warehouse)

    def close_all(self) -> None:
        for warehouse in list(self.warehouses):
            self.close(warehouse)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close_all()


def mirrored(env: Env, events: list[NewEvent], **mirror_kwargs: Any) -> list[dict[str, Any]]:
    """Insert the events, mirror them, and return the DuckDB rows (as dicts) in seq order."""
    insert(env.sqlite_path, events)
    warehouse = env.open()
    mirror = env.mirror(warehouse, **mirror_kwargs)
    copied = warehouse.call(mirror.catch_up)
    assert copied == len(events)

    def read(conn: Any) -> list[dict[str, Any]]:
        cursor = conn.execute("SELECT *, epoch_ms(ts) AS ts_ms, epoch_ms(created_at) AS created_ms, "
                              "typeof(ts) AS ts_type, properties::VARCHAR AS props_text FROM events ORDER BY seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return warehouse.call(read)


# ---------------------------------------------------------------------------------------------- through the app


def prometheus_samples(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                samples[sample.name] = sample.value
    return samples


async def test_lag_and_last_sync_in_healthz_and_metrics(make_client: ClientFactory, admin: dict[str, str]) -> None:
    # A long interval: after the start-up pass, only a request's catch-up moves the mirror.
    client = await make_client(mirror_interval=3600.0)
    # This waits behind the start-up pass on the one warehouse thread, so the pass cannot race the ingest below.
    resp = await client.get("/api/stats", headers=admin)
    assert resp.status == 200, await resp.text()

    batch = [{"shopId": "m1", "sessionId": f"s{i}", "eventType": "page_view", "url": f"https://m.example/{i}",
              "userAgent": UA_DESKTOP, "timestamp": "2026-11-26T03:00:00.000Z"} for i in range(3)]
    resp = await client.post("/api/events", json=batch)
    assert resp.status == 201, await resp.text()

    resp = await client.get("/healthz")
    assert resp.status == 200
    health = await resp.json()
    assert health["status"] == "ok"
    assert health["mirror"]["lagEvents"] == 3
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = prometheus_samples(await resp.text())
    assert samples["flowtel_mirror_lag_events"] == 3
    assert samples["flowtel_events_ingested_total"] == 3

    # Stats catch the mirror up first: read-your-writes.
    resp = await client.get("/api/stats", params={"shopId": "m1", "period": "7d"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["totals"]["events"] == 3

    resp = await client.get("/healthz")
    health = await resp.json()
    assert health["mirror"]["lagEvents"] == 0
    last_sync = health["mirror"]["lastSyncAt"]
    assert isinstance(last_sync, str)
    assert re.fullmatch(ISO_MS_Z, last_sync)
    synced = datetime.fromisoformat(last_sync.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - synced).total_seconds()) < 120
    samples = prometheus_samples(await (await client.get("/metrics")).text())
    assert samples["flowtel_mirror_lag_events"] == 0
    assert samples["flowtel_events_ingested_total"] == 3
    assert samples["flowtel_mirror_last_sync_timestamp_seconds"] == pytest.approx(synced.timestamp(), abs=1.0)


async def test_the_background_pass_checkpoints_a_large_wal(make_client: ClientFactory,
                                                              admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=0.05)
    warehouse = client.server.app[WAREHOUSE]
    warehouse.wal_checkpoint_bytes = 0  # any WAL is "large"
    batch = [{"shopId": "w1", "sessionId": f"s{i}", "eventType": "page_view", "url": f"https://w.example/{i}",
              "userAgent": UA_DESKTOP} for i in range(20)]
    resp = await client.post("/api/events", json=batch)
    assert resp.status == 201, await resp.text()
    # The pass that copies the rows writes them to the WAL, then checkpoints it away.
    for _ in range(200):
        health = await (await client.get("/healthz")).json()
        if health["mirror"]["lagEvents"] == 0 and warehouse.wal_bytes() == 0:
            break
        await asyncio.sleep(0.05)
    assert health["mirror"]["lagEvents"] == 0
    assert warehouse.wal_bytes() == 0
    resp = await client.post("/api/query", json={"shopId": "w1", "metrics": ["events"], "dateRange": "today"},
                             headers=admin)
    assert (await resp.json())["results"] == [{"dimensions": [], "metrics": [20]}]


async def test_query_api_reads_its_writes(make_client: ClientFactory, admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    for n in (2, 5):
        batch = [{"shopId": "rw", "sessionId": "s", "eventType": "page_view", "url": "https://rw.example/",
                  "userAgent": UA_DESKTOP} for _ in range(n)]
        resp = await client.post("/api/events", json=batch)
        assert resp.status == 201, await resp.text()
        resp = await client.post("/api/query", json={"shopId": "rw", "metrics": ["events"], "dateRange": "today"},
                                 headers=admin)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["results"] == [{"dimensions": [], "metrics": [7 if n == 5 else 2]}]


def test_reads_run_side_by_side_and_see_every_earlier_commit(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "r.duckdb", memory_limit="256MB", threads=1, readers=2)
    warehouse.open_sync()
    try:
        warehouse.call(lambda conn: conn.execute("UPDATE mirror_state SET watermark = 42 WHERE id = 1"))
        # Each job waits until the other has started too: with a single reader, or reads on the writer's one
        # thread, the barrier would break.
        both = threading.Barrier(2, timeout=10)

        def job(conn: Any) -> int:
            both.wait()
            row = conn.execute("SELECT watermark FROM mirror_state").fetchone()
            return int(row[0])

        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            seen = list(pool.map(lambda _: warehouse.read_sync(job), range(2)))
        assert seen == [42, 42]
        # While a read is running, the writer's thread is free: a commit lands, and the next read sees it.
        started, release = threading.Event(), threading.Event()

        def hold(conn: Any) -> None:
            started.set()
            assert release.wait(10)

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(warehouse.read_sync, hold)
            assert started.wait(10)
            warehouse.call(lambda conn: conn.execute("UPDATE mirror_state SET watermark = 43 WHERE id = 1"))
            seen_now = warehouse.read_sync(lambda conn: conn.execute("SELECT watermark FROM mirror_state").fetchone())
            assert seen_now == (43,)
            release.set()
            held.result()
    finally:
        warehouse.close_sync()


async def test_reports_and_queries_run_on_the_read_connections(make_client: ClientFactory,
                                                               admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    warehouse = client.server.app[WAREHOUSE]
    resp = await client.post("/api/events", json=[{"shopId": "rd", "sessionId": "s", "eventType": "page_view",
                                                   "url": "https://rd.example/", "userAgent": UA_DESKTOP}])
    assert resp.status == 201, await resp.text()
    loop = asyncio.get_running_loop()
    release = threading.Event()

    def hold(conn: Any) -> None:
        assert release.wait(10)

    def stats() -> Any:
        return client.get("/api/stats?shopId=rd&period=today", headers=admin)

    def query() -> Any:
        return client.post("/api/query", json={"shopId": "rd", "metrics": ["events"], "dateRange": "today"},
                           headers=admin)

    # Every reader busy: the report and the query wait (so they do not run on the writer's thread, which is free),
    # and answer once a reader is free.
    held = [loop.run_in_executor(None, warehouse.read_sync, hold) for _ in range(warehouse.readers)]
    await asyncio.sleep(0.2)
    pending = [asyncio.ensure_future(call()) for call in (stats, query)]
    done, _ = await asyncio.wait(pending, timeout=0.5)
    assert not done
    assert await asyncio.wait_for(warehouse.run(lambda conn: 1), 5) == 1
    release.set()
    await asyncio.gather(*held)
    answers = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert (await answers[0].json())["totals"]["events"] == 1
    assert (await answers[1].json())["results"] == [{"dimensions": [], "metrics": [1]}]


# ---------------------------------------------------------------------------------------------- extracted columns


def test_url_referrer_source_and_utm_columns(env: Env) -> None:
    events = [
        # 1: utm_source wins over an external referrer; utm values are url-decoded ('+' is a space).
        base_event(1, url="https://Shop.Example/products/a?utm_source=news%20letter&utm_medium=e+mail"
                          "&utm_campaign=Black%20Friday%202026",
                   path="/products/a", referrer="https://www.google.com/search?q=x"),
        # 2: an external referrer: lower-case host without its leading www.
        base_event(2, url="https://shop.example/x", path="/x", referrer="https://WWW.Google.COM/search"),
        # 3: a referrer from the page's own host is internal → direct.
        base_event(3, url="https://shop.example/b", path="/b", referrer="https://shop.example/a?x=1"),
        # 4: no url, no referrer.
        base_event(4, url=None, path=None, referrer=None),
        # 5: a referrer with a port and credentials: just the host.
        base_event(5, url="https://shop.example/c", path="/c", referrer="http://user@news.ycombinator.com:8080/item"),
        # 6: a referrer that is not a URL has no host → direct.
        base_event(6, url="https://shop.example/d", path="/d", referrer="not a url"),
        # 7: an empty utm_source is no source: the referrer decides.
        base_event(7, url="https://shop.example/e?utm_source=&utm_medium=cpc", path="/e",
                   referrer="https://www.bing.com/"),
    ]
    r1, r2, r3, r4, r5, r6, r7 = mirrored(env, events)

    assert r1["path"] == "/products/a"
    assert r1["host"] == "shop.example"
    assert r1["referrer_host"] == "google.com"
    assert r1["source"] == "news letter"
    assert (r1["utm_source"], r1["utm_medium"], r1["utm_campaign"]) == ("news letter", "e mail", "Black Friday 2026")
    assert r1["url"] == events[0].url and r1["referrer"] == events[0].referrer

    assert (r2["referrer_host"], r2["source"]) == ("google.com", "google.com")
    assert (r2["utm_source"], r2["utm_medium"], r2["utm_campaign"]) == (None, None, None)

    assert (r3["host"], r3["referrer_host"], r3["source"]) == ("shop.example", "shop.example", "direct")

    assert (r4["url"], r4["referrer"], r4["path"], r4["host"], r4["referrer_host"]) == (None,) * 5
    assert r4["source"] == "direct"

    assert (r5["referrer_host"], r5["source"]) == ("news.ycombinator.com", "news.ycombinator.com")
    assert (r6["referrer_host"], r6["source"]) == (None, "direct")
    assert (r7["utm_source"], r7["utm_medium"], r7["source"]) == (None, "cpc", "bing.com")


def test_commerce_columns(env: Env) -> None:
    events = [
        base_event(1, event_type="product_view", properties=props(productId="P-1", price=10)),
        base_event(2, event_type="product_view", properties=props(product_id="P-2")),
        base_event(3, event_type="add_to_cart", properties=props(item_id="P-3")),
        base_event(4, event_type="product_view", properties=props(productId=77, item_id="ignored")),
        base_event(5, event_type="purchase", properties=props(orderId="O-1", value=19.99, currency="eur")),
        base_event(6, event_type="purchase", properties=props(order_id="O-2", revenue="20.5", currency=" gbp ")),
        base_event(7, event_type="purchase", properties=props(transaction_id=1001, total=5)),
        base_event(8, event_type="purchase", properties=props(orderId="O-4")),
        base_event(9, event_type="purchase", properties=props(orderId="O-5", value="n/a", currency="")),
        base_event(10, event_type="page_view", properties=props(nested={"a": [1, {"b": "ü"}]}, flag=True)),
    ]
    rows = mirrored(env, events)
    assert [r["product_id"] for r in rows] == ["P-1", "P-2", "P-3", "77", None, None, None, None, None, None]
    assert [r["order_id"] for r in rows] == [None] * 4 + ["O-1", "O-2", "1001", "O-4", "O-5", None]
    values = [r["order_value"] for r in rows]
    assert values[4] == pytest.approx(19.99) and values[5] == pytest.approx(20.5) and values[6] == 5.0
    assert values[7] is None and values[8] is None and values[:4] == [None] * 4
    assert [r["currency"] for r in rows[4:9]] == ["EUR", "GBP", "USD", "USD", "USD"]
    for r, event in zip(rows, events, strict=True):
        assert orjson.loads(r["props_text"]) == orjson.loads(event.properties)
        assert r["event_type"] == event.event_type and r["id"] == event.id


def test_copied_columns_and_exact_timestamps(env: Env) -> None:
    events = [
        base_event(1, timestamp=NOW_MS, created_at=NOW_MS + 5),
        base_event(2, timestamp=946_684_800_001, created_at=NOW_MS, is_bot=True, device="bot", browser="Googlebot",
                   os=None, country=None, event_name="Page Viewed", session_id="sess ü", shop_id="shop.2"),
    ]
    r1, r2 = mirrored(env, events)
    assert r1["ts_type"] == "TIMESTAMP WITH TIME ZONE"
    assert (r1["ts_ms"], r1["created_ms"]) == (NOW_MS, NOW_MS + 5)
    assert r1["ts"] == datetime(2026, 11, 26, 4, 15, 17, 123000, tzinfo=UTC)
    assert r2["ts_ms"] == 946_684_800_001
    assert r2["ts"] == datetime(2000, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert (r1["is_bot"], r2["is_bot"]) == (False, True)
    assert (r2["device"], r2["browser"], r2["os"], r2["country"]) == ("bot", "Googlebot", None, None)
    assert (r2["event_name"], r2["session_id"], r2["shop_id"]) == ("Page Viewed", "sess ü", "shop.2")
    assert (r1["visitor_hash"], r1["user_agent"], r1["country"]) == ("v1", UA_DESKTOP, "DE")


def test_null_text_columns_stay_null_when_a_batch_starts_with_nulls(env: Env) -> None:
    nulls = dict(url=None, referrer=None, user_agent=None, path=None, browser=None, os=None, country=None)
    events = [base_event(i, **nulls) for i in range(1500)]
    events += [base_event(2000 + i, url=f"https://x.example/q?utm_campaign=c{i}", referrer="https://ref.example/",
                          path="/q", browser="Firefox", os="Linux", country="FR") for i in range(10)]
    rows = mirrored(env, events)
    assert len(rows) == 1510
    text_columns = ("url", "referrer", "user_agent", "path", "browser", "os", "country", "host", "referrer_host",
                    "utm_source", "utm_medium", "utm_campaign", "product_id", "order_id")
    for r in rows[:1500]:
        assert all(r[c] is None for c in text_columns), r
        assert r["source"] == "direct"
    for i, r in enumerate(rows[1500:]):
        assert r["url"] == f"https://x.example/q?utm_campaign=c{i}"
        assert (r["referrer"], r["path"], r["browser"], r["os"], r["country"]) == (
            "https://ref.example/", "/q", "Firefox", "Linux", "FR")
        assert (r["host"], r["referrer_host"], r["source"], r["utm_campaign"]) == (
            "x.example", "ref.example", "ref.example", f"c{i}")
        assert r["user_agent"] == UA_DESKTOP


# ---------------------------------------------------------------------------------------------- exactly once


def seed(env: Env, n: int, *, drop_every: int = 0) -> None:
    """n events; every drop_every-th is deleted afterwards, so seq has gaps the mirror must walk over."""
    insert(env.sqlite_path, [base_event(i) for i in range(n)])
    if drop_every:
        conn = sqlitelib.connect(env.sqlite_path, isolation_level=None)
        try:
            conn.execute("DELETE FROM events WHERE seq % ? = 0", (drop_every,))
        finally:
            conn.close()


def test_a_failing_batch_rolls_back_and_a_new_mirror_resumes(env: Env) -> None:
    seed(env, 250, drop_every=17)
    source = sqlite_rows(env.sqlite_path)
    assert len(source) == 250 - 250 // 17
    warehouse = env.open()
    calls: list[int] = []

    def hook(rows: int) -> None:
        calls.append(rows)
        if len(calls) == 3:
            raise RuntimeError("injected fault between insert and watermark")

    mirror = env.mirror(warehouse, batch_rows=50, before_commit=hook)
    with pytest.raises(RuntimeError, match="injected fault"):
        warehouse.call(mirror.catch_up)
    assert calls == [50, 50, 50]
    assert duck_rows(warehouse) == source[:100]
    assert watermark(warehouse) == source[99][0]

    fresh = env.mirror(warehouse, batch_rows=50)
    assert warehouse.call(fresh.catch_up) == len(source) - 100
    assert duck_rows(warehouse) == source
    assert watermark(warehouse) == source[-1][0]
    assert fresh.status.lag_events == 0
    # Nothing more to copy, and nothing copied twice.
    assert warehouse.call(fresh.catch_up) == 0
    assert warehouse.call(lambda c: c.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()) == (
        len(source), len(source))


def test_the_same_mirror_recovers_after_a_failed_batch(env: Env) -> None:
    seed(env, 120)
    source = sqlite_rows(env.sqlite_path)
    warehouse = env.open()
    fail = [True]

    def hook(rows: int) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("disk hiccup")

    mirror = env.mirror(warehouse, batch_rows=50, before_commit=hook)
    with pytest.raises(OSError):
        warehouse.call(mirror.catch_up)
    assert duck_rows(warehouse) == []
    assert watermark(warehouse) == 0
    assert warehouse.call(mirror.catch_up) == 120
    assert duck_rows(warehouse) == source


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from analytics.mirror import Mirror
    from analytics.warehouse import Warehouse

    sqlite_path, duck_path, crash_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    calls = 0

    def hook(rows):
        global calls
        calls += 1
        if calls == crash_at:
            os._exit(17)  # the process dies between the insert and the watermark update

    warehouse = Warehouse(duck_path, memory_limit="256MB", threads=1)
    warehouse.open_sync()
    warehouse.call(Mirror(sqlite_path, batch_rows=50, before_commit=hook).catch_up)
    os._exit(0)
""")


@pytest.mark.parametrize("crash_at", [1, 4])
def test_a_crash_mid_batch_then_restart_yields_exactly_the_sqlite_rows(env: Env, crash_at: int) -> None:
    seed(env, 230, drop_every=11)
    source = sqlite_rows(env.sqlite_path)
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(env.sqlite_path), str(env.duck_path),
                           str(crash_at)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr

    warehouse = env.open()
    committed = 50 * (crash_at - 1)
    # The batches before the crash are there with their watermark; the crashed one left nothing behind.
    assert duck_rows(warehouse) == source[:committed]
    assert watermark(warehouse) == (source[committed - 1][0] if committed else 0)

    mirror = env.mirror(warehouse, batch_rows=50)
    assert warehouse.call(mirror.catch_up) == len(source) - committed
    assert duck_rows(warehouse) == source
    assert warehouse.call(lambda c: c.execute("SELECT count(*), count(DISTINCT id), max(seq) FROM events")
                          .fetchone()) == (len(source), len(source), source[-1][0])
    assert watermark(warehouse) == source[-1][0]


# ---------------------------------------------------------------------------------------------- incremental


def test_rows_committed_after_a_catch_up_appear_after_the_next(env: Env) -> None:
    insert(env.sqlite_path, [base_event(i) for i in range(10)])
    warehouse = env.open()
    mirror = env.mirror(warehouse, batch_rows=4)
    assert warehouse.call(mirror.catch_up) == 10
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    assert mirror.status.lag_events == 0

    # Same mirror, same open source connection: it must see rows committed since.
    insert(env.sqlite_path, [base_event(100 + i) for i in range(5)])
    assert len(duck_rows(warehouse)) == 10
    assert mirror.source_max() == sqlite_rows(env.sqlite_path)[-1][0]
    assert mirror.status.lag_events == 5
    assert warehouse.call(mirror.catch_up) == 5
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    assert mirror.status.lag_events == 0
    assert warehouse.call(mirror.catch_up) == 0
    assert len(duck_rows(warehouse)) == 15


def test_catch_up_work_is_bounded_and_resumes(env: Env) -> None:
    seed(env, 130)
    source = sqlite_rows(env.sqlite_path)
    warehouse = env.open()
    mirror = env.mirror(warehouse, batch_rows=25)
    assert warehouse.call(lambda c: mirror.catch_up(c, 50)) == 50
    assert duck_rows(warehouse) == source[:50]
    assert mirror.status.lag_events == 80
    assert warehouse.call(mirror.catch_up) == 80
    assert duck_rows(warehouse) == source


def test_a_wal_past_its_limit_is_checkpointed_and_the_rows_stay(env: Env) -> None:
    insert(env.sqlite_path, [base_event(i) for i in range(10)])
    warehouse = env.open()
    mirror = env.mirror(warehouse)
    assert warehouse.call(mirror.catch_up) == 10
    # Ten rows went through the WAL; under the default limit nothing happens.
    wal = warehouse.wal_bytes()
    assert wal > 0
    assert warehouse.call(warehouse.checkpoint_if_wal_over) is False
    assert warehouse.wal_bytes() == wal
    warehouse.wal_checkpoint_bytes = wal - 1
    assert warehouse.call(warehouse.checkpoint_if_wal_over) is True
    assert warehouse.wal_bytes() == 0
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    env.close(warehouse)
    # The checkpointed file alone (no WAL) holds the rows and the watermark.
    warehouse = env.open()
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    assert warehouse.call(env.mirror(warehouse).catch_up) == 0


def test_restart_resumes_from_the_stored_watermark(env: Env) -> None:
    seed(env, 60)
    warehouse = env.open()
    assert warehouse.call(env.mirror(warehouse, batch_rows=1000).catch_up) == 60
    env.close(warehouse)

    insert(env.sqlite_path, [base_event(500 + i) for i in range(7)])
    warehouse = env.open()
    mirror = env.mirror(warehouse, batch_rows=1000)
    status = warehouse.call(mirror.load_state)
    assert status.watermark == sqlite_rows(env.sqlite_path)[59][0]
    assert status.last_sync_ms is not None
    assert warehouse.call(mirror.catch_up) == 7
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)


def test_a_store_from_before_deletions_and_shops_existed_still_mirrors(tmp_path: Path) -> None:
    # `flowtel rebuild` or the benchmarks may read a store the new server never opened: only the v1 tables exist.
    from analytics.mirror import Mirror
    from analytics.warehouse import Warehouse
    from server.store import INSERT_EVENT, MIGRATIONS

    db = tmp_path / "old.db"
    conn = sqlitelib.connect(db)
    conn.executescript(MIGRATIONS[0])
    conn.execute(INSERT_EVENT, ("0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d", "s", "x", "purchase", "purchase",
                                '{"orderId": "o", "value": 5}', 1_795_000_000_000, None, None, None,
                                1_795_000_000_000, None, None, None, "desktop", None, 0, "h"))
    conn.commit()
    conn.close()
    warehouse = Warehouse(tmp_path / "old.duckdb")
    warehouse.open_sync()
    mirror = Mirror(db)
    try:
        assert warehouse.call(lambda c: mirror.catch_up(c)) == 1
        assert warehouse.call(lambda c: c.execute("SELECT currency, order_value FROM events").fetchall()) == \
            [("USD", 5.0)]
    finally:
        warehouse.call(lambda c: mirror.close())
        warehouse.close_sync()


@pytest.mark.parametrize("bulk", [False, True], ids=["in-process", "adbc-child"])
def test_each_batch_is_stored_clustered_by_shop_and_time(env: Env, bulk: bool) -> None:
    # Interleaved shops and times, as real traffic arrives; each stored batch must come out in (shop, ts, seq)
    # order, which is what lets a one-shop report skip other shops' row groups.
    rng = random.Random(7)
    events = [base_event(i, shop_id=f"shop{rng.randrange(5)}", timestamp=NOW_MS - rng.randrange(10**6))
              for i in range(3_000)]
    insert(env.sqlite_path, events)
    warehouse = Warehouse(env.duck_path, memory_limit="256MB", threads=2)
    warehouse.open_sync()
    env.warehouses.append(warehouse)
    mirror = env.mirror(warehouse, batch_rows=1_000)
    mirror.source.bulk_rows = 1 if bulk else 10**9
    assert warehouse.call(mirror.catch_up) == 3_000
    stored = warehouse.call(lambda c: c.execute(
        "SELECT shop_id, epoch_ms(ts), seq FROM events ORDER BY rowid").fetchall())
    # The child's first read of a big backlog is half a batch, so DuckDB starts inserting sooner.
    sizes = [500, 1_000, 1_000, 500] if bulk else [1_000, 1_000, 1_000]
    first = 0
    for size in sizes:
        batch = stored[first:first + size]
        assert batch == sorted(batch)
        assert sorted(row[2] for row in batch) == list(range(first + 1, first + size + 1))
        first += size
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)


def expected_host(url: str | None) -> str | None:
    """The mirror's host rule, written independently with a regular expression: after "://", past any
    credentials, up to a port, path, query or fragment; lower-cased, without a leading "www."."""
    match = re.search(r"://(?:[^/?#]*@)?([^/?#:]*)", url or "")
    host = re.sub(r"^www\.", "", match.group(1).lower()) if match else ""
    return host or None


def test_hosts_are_extracted_from_every_url_shape(env: Env) -> None:
    urls = [None, "", "https://WWW.Shop.Example:8080/a?b=1#c", "http://user:pw@www.x.com/p", "no-scheme.com/x",
            "https://a.com", "https://a.com?utm_source=x", "https://a.com#frag", "weird://@@host@real.com:1/x",
            "https://[::1]:80/", "ftp://www.www.example.org", "https://münchen.example/ä?utm_campaign=%C3%A4+b",
            "https://shop.example/p?utm_source=&utm_medium=cpc", "//cdn.example/x", "https://www./", "://x.com",
            "https://a.com/next?to=http://b.com/", "https://a.com?x=1@b.com", "HTTPS://A.COM#x@y:1"]
    events = [base_event(i, url=url, path=None, referrer=urls[(i * 7) % len(urls)], shop_id=f"s{i % 3}")
              for i, url in enumerate(urls * 3)]
    rows = mirrored(env, events)
    assert len(rows) == len(events)
    for row in rows:
        assert (row["host"], row["referrer_host"]) == (expected_host(row["url"]), expected_host(row["referrer"])), row
    hosts = {row["host"] for row in rows}
    assert {"shop.example", "x.com", "a.com", "real.com", "www.example.org", "münchen.example", None} <= hosts
