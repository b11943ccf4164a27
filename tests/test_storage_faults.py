"""Storage faults through the app: a full disk (PRAGMA max_page_count), a file locked by another process and a
read-only store each turn ingestion into 503 + Retry-After that stores nothing, /healthz into 503, and both recover
by themselves once the fault clears."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from server.keys import STORE
from tests.conftest import ClientFactory, assert_error

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
NO_LIMIT = 1_073_741_823


def batch(tag: str, n: int = 200) -> list[dict[str, Any]]:
    # Long urls and properties, so a batch needs new pages rather than the free space of existing ones.
    return [{"shopId": "f1", "sessionId": f"{tag}-{i}", "eventType": "page_view",
             "url": f"https://f.example/{tag}/{i}?" + "q" * 300, "properties": {"pad": "x" * 300, "i": i},
             "userAgent": UA} for i in range(n)]


def stored_sessions(db: Path, tag: str) -> int:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE session_id LIKE ?", (f"{tag}-%",)).fetchone()[0])
    finally:
        conn.close()


async def on_writer(client: TestClient, sql: str) -> None:
    """Run one statement on the store's writer connection, through the writer queue like every write."""
    async def run(conn: aiosqlite.Connection) -> None:
        await conn.execute(sql)

    await client.app[STORE].write(run)


class Fault:
    """Start and clear one kind of storage fault on a running app."""

    def __init__(self, kind: str, db: Path) -> None:
        self.kind = kind
        self.db = db
        self.locker: sqlitelib.Connection | None = None

    async def start(self, client: TestClient) -> None:
        if self.kind == "disk-full":
            async def freeze(conn: aiosqlite.Connection) -> None:
                # The file may not grow by a single page: exactly what a full disk does to SQLite.
                pages = (await (await conn.execute("PRAGMA page_count")).fetchone() or (0,))[0]
                await conn.execute(f"PRAGMA max_page_count = {int(pages)}")

            await client.app[STORE].write(freeze)
        elif self.kind == "locked":
            # Short waits for the lock, so the test does not sit out the production busy timeout of 5 s.
            await on_writer(client, "PRAGMA busy_timeout = 100")
            self.locker = sqlitelib.connect(self.db, isolation_level=None)
            self.locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        else:
            await on_writer(client, "PRAGMA query_only = ON")  # the store refuses every write

    async def clear(self, client: TestClient) -> None:
        if self.kind == "disk-full":
            await on_writer(client, f"PRAGMA max_page_count = {NO_LIMIT}")
        elif self.kind == "locked":
            assert self.locker is not None
            self.locker.execute("ROLLBACK")
            self.locker.close()
        else:
            # Not through the queue: a read-only connection cannot even open the write transaction a queued job
            # runs in. Between jobs the writer connection is idle, and aiosqlite serialises its statements.
            writer = client.app[STORE]._writer
            assert writer is not None
            await writer.execute("PRAGMA query_only = OFF")


Check = Callable[[], Awaitable[None]]


@pytest.mark.parametrize("kind", ["disk-full", "locked", "read-only"])
async def test_a_storage_fault_is_a_503_that_stores_nothing_and_clears_by_itself(
        make_client: ClientFactory, tmp_path: Path, kind: str) -> None:
    client = await make_client(mirror_interval=3600.0)
    resp = await client.post("/api/events", json=batch("before", 5))
    assert resp.status == 201, await resp.text()
    assert (await client.get("/healthz")).status == 200

    fault = Fault(kind, tmp_path / "flowtel.db")
    await fault.start(client)
    for attempt in range(3):
        resp = await client.post("/api/events", json=batch(f"during{attempt}"))
        error = await assert_error(resp, 503, "overloaded")
        assert "nothing" in error["message"]
        assert int(resp.headers["Retry-After"]) >= 1
    # A single event is refused the same way (a locked or read-only store refuses even one row).
    if kind != "disk-full":
        resp = await client.post("/api/events", json=batch("single", 1)[0])
        await assert_error(resp, 503, "overloaded")
    resp = await client.get("/healthz")
    error = await assert_error(resp, 503, "overloaded")
    assert "Storage cannot take writes" in error["message"]
    assert (await client.get("/healthz")).status == 503  # still down: the probe failed again

    await fault.clear(client)
    # Health comes back on its own (its probe write succeeds), before any client writes again.
    resp = await client.get("/healthz")
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/events", json=batch("after"))
    assert resp.status == 201, await resp.text()

    db = tmp_path / "flowtel.db"
    assert [stored_sessions(db, f"during{i}") for i in range(3)] == [0, 0, 0]
    assert stored_sessions(db, "single") == 0
    assert stored_sessions(db, "before") == 5
    assert stored_sessions(db, "after") == 200


async def test_a_fault_cleared_while_health_is_not_asked_recovers_on_the_next_write(
        make_client: ClientFactory, tmp_path: Path) -> None:
    client = await make_client(mirror_interval=3600.0)
    assert (await client.post("/api/events", json=batch("warm", 1))).status == 201
    fault = Fault("disk-full", tmp_path / "flowtel.db")
    await fault.start(client)
    await assert_error(await client.post("/api/events", json=batch("lost")), 503, "overloaded")
    await fault.clear(client)
    resp = await client.post("/api/events", json=batch("kept"))
    assert resp.status == 201, await resp.text()
    assert client.app[STORE].fault is None
    assert (await client.get("/healthz")).status == 200
    assert stored_sessions(tmp_path / "flowtel.db", "lost") == 0
