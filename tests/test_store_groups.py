"""The writer's group commit: per-event outcomes when many requests share one transaction, arrival order, and
all-or-nothing when the group fails."""

from __future__ import annotations

import asyncio
import importlib
import platform
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from analytics import sqlitelib
from server.store import Store, group_insert, prepare_database
from tests.test_mirror import base_event, sqlite_rows


def stored_ids(path: Path) -> list[str]:
    return [event_id for _, event_id in sqlite_rows(path)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(tmp_path / "flowtel.db", synchronous="NORMAL")
    await opened.open()
    yield opened
    await opened.close()


def fresh(n: int, start: int = 0) -> list:
    return [replace(base_event(start + i), id=str(uuid.UUID(int=start + i + 1, version=4))) for i in range(n)]


async def test_a_group_of_many_requests_reports_each_event_and_keeps_arrival_order(store: Store) -> None:
    earlier = fresh(5, start=10_000)
    assert await store.insert_events(earlier) == [True] * 5
    jobs = [fresh(500, start=j * 500) for j in range(8)]  # 4,000 events, one group
    jobs[5][:100] = jobs[0][:100]  # repeats of an earlier job in the same group
    jobs[6][0] = jobs[6][1]  # a repeat inside one job
    jobs[7][-5:] = earlier  # already stored before the group
    outcomes = await asyncio.gather(*(store.insert_events(job) for job in jobs))
    assert outcomes[5][:100] == [False] * 100 and all(outcomes[5][100:])
    assert outcomes[6][:2] == [True, False]
    assert outcomes[7][-5:] == [False] * 5 and all(outcomes[7][:-5])
    assert all(all(o) for o in (outcomes[0], outcomes[1], outcomes[2], outcomes[3], outcomes[4]))
    expected = [e.id for e in earlier]
    seen = set(expected)
    for job in jobs:
        for event in job:
            if event.id not in seen:
                seen.add(event.id)
                expected.append(event.id)
    assert stored_ids(store.path) == expected
    assert store.stats.ingested == len(expected)
    assert store.stats.duplicates == 100 + 1 + 5


async def test_a_failing_event_late_in_a_group_stores_nothing_of_the_group(store: Store) -> None:
    before = fresh(3, start=50_000)
    assert await store.insert_events(before) == [True] * 3
    jobs = [fresh(500, start=j * 500) for j in range(8)]
    # NOT NULL on shop_id fails on the group's very last row, after thousands were inserted.
    jobs[7][-1] = replace(jobs[7][-1], shop_id=None)
    results = await asyncio.gather(*(store.insert_events(job) for job in jobs), return_exceptions=True)
    assert all(isinstance(r, sqlitelib.IntegrityError) for r in results)
    # The writer carries on: the next group commits.
    assert await store.insert_events(fresh(2, start=60_000)) == [True, True]
    ids = stored_ids(store.path)
    assert ids[:3] == [e.id for e in before] and len(ids) == 5



async def test_a_request_with_no_events_in_a_group_leaves_the_others_intact(store: Store) -> None:
    # Each request's rows arrive serialised; the group's array is joined from them, an empty one included.
    first, second = fresh(3, start=70_000), fresh(2, start=80_000)
    outcomes = await asyncio.gather(store.insert_events(first), store.insert_events([]), store.insert_events(second))
    assert outcomes == [[True] * 3, [], [True] * 2]
    assert stored_ids(store.path) == [e.id for e in first + second]

def sqlite_libraries() -> list[object]:
    """Python's sqlite3 (text JSON) and, where its wheel exists, pysqlite3's current SQLite (JSONB)."""
    libraries: list[object] = [sqlite3]
    try:
        libraries.append(importlib.import_module("pysqlite3.dbapi2"))
    except ImportError:
        # The dependency is declared for Linux x86_64: there, a missing library is a broken install, not a skip.
        assert not (sys.platform == "linux" and platform.machine() == "x86_64"), "pysqlite3-binary is not installed"
    return libraries


def test_the_store_uses_pysqlite3_and_jsonb_where_the_declared_wheel_exists() -> None:
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert sqlitelib.library.__name__ == "pysqlite3.dbapi2" and sqlitelib.has_jsonb()
    assert "jsonb_each(jsonb(?))" in group_insert(True) and "FROM json_each(?)" in group_insert(False)


# Values that JSON text and JSONB could decode differently: escapes, non-ASCII, JSON-looking and number-looking
# strings, empty strings, NULLs, and integers beyond a double's exact range.
AWKWARD = [
    base_event(1, session_id='quote " and \\ backslash', event_name="emoji 🛒 中文 עברית \u2028 line sep",
               properties=orjson.dumps({"a": [1, {"b": None}], "s": "x\ty\u0000", "n": 1e300}).decode(),
               url="", referrer="null", user_agent="123", path="true", browser="[1,2]", os='{"a":1}', country=None),
    base_event(2, timestamp=2**53 + 1, created_at=2**62, is_bot=True, event_name="1e5", device="-0",
               visitor_hash="0.10"),
    base_event(3, properties="{}", url=None, referrer=None, user_agent=None, path=None, browser=None, os=None),
]


@pytest.mark.parametrize("library", sqlite_libraries(), ids=lambda lib: getattr(lib, "sqlite_version", "?"))
def test_the_group_insert_stores_every_value_exactly_as_sent(tmp_path: Path, library: object) -> None:
    db = tmp_path / "flowtel.db"
    prepare_database(db)
    jsonb = library.sqlite_version_info >= (3, 45, 0)  # type: ignore[attr-defined]
    conn = library.connect(str(db), isolation_level=None)  # type: ignore[attr-defined]
    try:
        payload = orjson.dumps([event.row() for event in AWKWARD]).decode()
        assert conn.execute(group_insert(jsonb), (payload,)).rowcount == len(AWKWARD)
    finally:
        conn.close()
    reader = sqlitelib.connect(db)
    try:
        columns = "id, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer, " \
                  "user_agent, created_at, path, browser, os, device, country, is_bot, visitor_hash"
        stored = reader.execute(f"SELECT {columns} FROM events ORDER BY seq").fetchall()
        types = reader.execute("SELECT typeof(timestamp), typeof(created_at), typeof(is_bot), typeof(properties), "
                               "typeof(country) FROM events ORDER BY seq").fetchall()
    finally:
        reader.close()
    assert stored == [event.row() for event in AWKWARD]
    assert types == [("integer", "integer", "integer", "text", "text" if e.country else "null") for e in AWKWARD]


def test_nothing_in_the_server_process_opens_sqlite_around_sqlitelib() -> None:
    """A second SQLite copy in the process would not see the store's locks: every connection goes through sqlitelib."""
    root = Path(__file__).resolve().parent.parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for package in ("server", "analytics")
        for path in sorted((root / package).rglob("*.py")) if path.name != "sqlitelib.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.startswith("import sqlite3") or "sqlite3.connect(" in line or "aiosqlite.connect(" in line
    ]
    assert offenders == []


async def test_requests_that_miss_the_days_salt_together_share_one_write(store: Store) -> None:
    """At start-up and at UTC midnight every request in flight misses the salt cache: one write, not one each."""
    writes = []
    original = store.write

    async def counting_write(fn: Any) -> Any:
        writes.append(fn)
        return await original(fn)

    store.write = counting_write  # type: ignore[method-assign]
    salts = await asyncio.gather(*(store.salt_for("2026-11-27") for _ in range(64)))
    assert len(writes) == 1 and len(set(salts)) == 1 and len(salts[0]) == 32
    assert await store.salt_for("2026-11-27") == salts[0] and len(writes) == 1  # cached
    tomorrow = await asyncio.gather(*(store.salt_for("2026-11-28") for _ in range(8)))
    assert len(writes) == 2 and len(set(tomorrow)) == 1 and tomorrow[0] != salts[0]


async def test_a_failed_salt_lookup_fails_its_waiters_and_the_next_request_retries(store: Store) -> None:
    original = store.write
    attempts = 0

    async def failing_once(fn: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.sleep(0.01)
            raise sqlite3.OperationalError("disk I/O error")
        return await original(fn)

    store.write = failing_once  # type: ignore[method-assign]
    results = await asyncio.gather(*(store.salt_for("2026-11-27") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results) and attempts == 1
    salt = await store.salt_for("2026-11-27")
    assert len(salt) == 32 and attempts == 2
