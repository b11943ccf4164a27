"""The fault matrix: SIGKILL during ingestion (with deletes), during a mirror batch, during a rebuild and during a
retention purge, each followed by a restart and the check that SQLite holds exactly the acknowledged events minus the
acknowledged deletions, and that DuckDB holds exactly SQLite's rows."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
import pytest

from analytics import sqlitelib
from server.retention import DAY_MS
from server.store import prepare_database
from tests.test_crash import (
    ADMIN_TOKEN,
    EXIT_TIMEOUT,
    Ledger,
    ServerProcess,
    integrity,
    load,
    servers,  # noqa: F401 (fixture)
    stored_ids,
    wait_for_acks,
)

ROOT = Path(__file__).resolve().parent.parent
FLOWTEL = Path(sys.executable).parent / "flowtel"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = pytest.mark.timeout(90)

# Events generated in SQL (fast enough to seed 100k rows in a fraction of a second); ids are valid UUIDs.
SEED = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO events (id, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer,
                    user_agent, created_at, path, browser, os, device, country, is_bot, visitor_hash)
SELECT printf('%08x-0000-4000-8000-%012x', :tag, i), 'seed-' || (i % 4), 's' || (i % 997), 'page_view', 'page_view',
       '{}', :ts - i, 'https://seed.example/p/' || i, NULL, 'Mozilla/5.0', :ts, '/p/' || i, 'Chrome', 'Windows',
       'desktop', 'DE', 0, 'v' || (i % 211)
FROM n
"""


def seed(db: Path, count: int, tag: int, ts_ms: int) -> None:
    prepare_database(db)
    conn = sqlitelib.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(SEED, {"count": count, "tag": tag, "ts": ts_ms})
        conn.execute("COMMIT")
    finally:
        conn.close()


def sqlite_pairs(db: Path) -> set[tuple[int, str]]:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {(int(s), str(i)) for s, i in conn.execute("SELECT seq, id FROM events")}
    finally:
        conn.close()


def duck_pairs(path: Path) -> set[tuple[int, str]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        rows = conn.execute("SELECT seq, id FROM events").fetchall()
        assert len(rows) == len(set(rows)), "a row is in the mirror twice"
        return {(int(s), str(i)) for s, i in rows}
    finally:
        conn.close()


def count_where(db: Path, where: str) -> int:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM events WHERE {where}").fetchone()[0])
    finally:
        conn.close()


async def mirror_agrees(server: ServerProcess, session: aiohttp.ClientSession, db: Path) -> None:
    """Catch the mirror up (stats do that first), stop the server cleanly, then compare the two files."""
    async with session.get(f"{server.url}/api/stats", params={"shopId": "seed-0"}, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
    server.signal(signal.SIGTERM)
    assert await server.wait_exit(EXIT_TIMEOUT) == 0, server.log_tail()
    assert duck_pairs(db.with_suffix(".duckdb")) == sqlite_pairs(db)
    assert integrity(db) == ["ok"]


def events_of(body: bytes) -> list[dict[str, Any]]:
    doc = orjson.loads(body)
    events: list[dict[str, Any]] = doc["events"] if isinstance(doc, dict) and "events" in doc else (
        doc if isinstance(doc, list) else [doc])
    return events


async def _deleter(session: aiohttp.ClientSession, url: str, ledger: Ledger, stop: asyncio.Event,
                   deletes: dict[str, list[tuple[str, str]]]) -> None:
    """Delete the sessions of acknowledged requests, one DELETE per (shop, session), recording what was acked."""
    done = 0
    while not stop.is_set():
        if done >= len(ledger.acked):
            await asyncio.sleep(0.005)
            continue
        ids = ledger.acked[done]
        done += 3  # every third acknowledged request
        first = events_of(ledger.bodies[ids])[0]
        key = (first["shopId"], first["sessionId"])
        deletes["sent"].append(key)
        try:
            async with session.delete(f"{url}/api/events", params={"shopId": key[0], "sessionId": key[1]},
                                      headers=ADMIN) as resp:
                if resp.status == 200:
                    deletes["acked"].append(key)
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(0.005)


async def test_sigkill_during_ingestion_and_deletes(tmp_path: Path, servers: list[ServerProcess]) -> None:  # noqa: F811
    db = tmp_path / "ingest.db"
    server = ServerProcess(db, {"FLOWTEL_MIRROR_INTERVAL": "0.05"})
    servers.append(server)
    ledger = Ledger()
    deletes: dict[str, list[tuple[str, str]]] = {"sent": [], "acked": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        async with load(server.url, ledger, session) as stop:
            deleter = asyncio.create_task(_deleter(session, server.url, ledger, stop, deletes))
            await wait_for_acks(ledger, 150)
            while len(deletes["acked"]) < 10:
                await asyncio.sleep(0.01)
            server.signal(signal.SIGKILL)
            stop.set()
            assert await server.wait_exit(EXIT_TIMEOUT) == -signal.SIGKILL
            await deleter

        await server.start(session)
        stored = set(stored_ids(db))
        assert len(stored) == len(stored_ids(db))
        assert stored <= ledger.sent_ids
        by_id = {e["id"]: (e["shopId"], e["sessionId"]) for ids in ledger.sent for e in events_of(ledger.bodies[ids])}
        deleted_keys = set(deletes["acked"])
        # A delete the kill cut off may have committed before its answer was lost: its session may be gone or not,
        # but all of it or none of it.
        undecided = set(deletes["sent"]) - deleted_keys
        expected = {i for i in ledger.acked_ids if by_id[i] not in deleted_keys | undecided}
        assert expected <= stored, f"{len(expected - stored)} acknowledged, undeleted events are missing"
        assert not {i for i in stored if by_id[i] in deleted_keys}, "an acknowledged deletion came back"
        for key in undecided:
            acked_rows = {i for i in ledger.acked_ids if by_id[i] == key}
            assert acked_rows & stored in (set(), acked_rows), f"the unanswered delete of {key} half-applied"
        # Beyond that, only what was in flight at the kill: unanswered posts, or rows of unanswered deletes.
        extra = stored - expected
        unanswered = {i for ids in ledger.unanswered for i in ids}
        assert extra <= unanswered | {i for i in ledger.acked_ids if by_id[i] in undecided}
        await mirror_agrees(server, session, db)


MIRROR_KILL = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from analytics.mirror import Mirror
    from analytics.warehouse import Warehouse

    sqlite_path, duck_path, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    calls = 0

    def hook(rows):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # inside the batch: rows inserted, tombstones applied, no commit

    warehouse = Warehouse(duck_path, memory_limit="256MB", threads=1)
    warehouse.open_sync()
    warehouse.call(Mirror(sqlite_path, batch_rows=int(sys.argv[4]), before_commit=hook).catch_up)
    os._exit(0)
""")


def delete_where(db: Path, where: str) -> int:
    """A deletion the way the store does it: tombstones, then the rows."""
    conn = sqlitelib.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"INSERT INTO deletions (event_seq) SELECT seq FROM events WHERE {where}")
        n = conn.execute(f"DELETE FROM events WHERE {where}").rowcount
        conn.execute("COMMIT")
        return int(n)
    finally:
        conn.close()


def run_mirror(db: Path, kill_at: int, batch_rows: int) -> int:
    proc = subprocess.run([sys.executable, "-c", MIRROR_KILL, str(db), str(db.with_suffix(".duckdb")), str(kill_at),
                           str(batch_rows)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    return proc.returncode


async def test_sigkill_during_a_mirror_batch(tmp_path: Path, servers: list[ServerProcess]) -> None:  # noqa: F811
    db = tmp_path / "mirror.db"
    seed(db, 3000, tag=1, ts_ms=int(time.time() * 1000))
    assert run_mirror(db, 0, 1000) == 0  # mirrored up to here
    delete_where(db, "session_id IN ('s1', 's2', 's3')")  # tombstones of mirrored rows
    seed(db, 2500, tag=2, ts_ms=int(time.time() * 1000))
    delete_where(db, "id LIKE '00000002-%' AND seq % 5 = 0")  # and of rows the mirror has not copied yet
    # Batches of 500: the first commits 500 rows and 500 tombstones, the kill lands inside the second.
    assert run_mirror(db, 2, 500) == -signal.SIGKILL

    # The restarted server's mirror resumes from what the killed one committed.
    server = ServerProcess(db, {})
    servers.append(server)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        await mirror_agrees(server, session, db)
    assert len(sqlite_pairs(db)) == 5500 - count_deleted(db)


def count_deleted(db: Path) -> int:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM deletions").fetchone()[0])
    finally:
        conn.close()


async def test_sigkill_during_rebuild(tmp_path: Path, servers: list[ServerProcess]) -> None:  # noqa: F811
    db = tmp_path / "rebuild.db"
    duck = db.with_suffix(".duckdb")
    seed(db, 20_000, tag=1, ts_ms=int(time.time() * 1000))
    assert run_mirror(db, 0, 50_000) == 0
    before = duck_pairs(duck)
    seed(db, 80_000, tag=2, ts_ms=int(time.time() * 1000))
    delete_where(db, "session_id = 's7'")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:{db}",
           "FLOWTEL_DUCKDB_PATH": str(duck)}
    proc = subprocess.Popen([str(FLOWTEL), "rebuild", "--quiet"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    target = duck.with_name(duck.name + ".rebuild")
    deadline = time.monotonic() + 30
    while not (target.exists() and target.stat().st_size > 0):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the rebuild never started writing"
        time.sleep(0.005)
    time.sleep(0.05)  # inside the copy of 100k rows
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=10)[0].decode()
    assert proc.returncode == -signal.SIGKILL and "Rebuilt" not in out, out
    assert duck_pairs(duck) == before  # the old mirror is untouched until a new one is complete

    # A restarted server carries on from the old mirror, and a completed rebuild agrees with it.
    server = ServerProcess(db, {})
    servers.append(server)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        await mirror_agrees(server, session, db)
    finished = subprocess.run([str(FLOWTEL), "rebuild", "--quiet"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert duck_pairs(duck) == sqlite_pairs(db)
    assert not target.exists()


async def test_sigkill_during_a_retention_purge(tmp_path: Path, servers: list[ServerProcess]) -> None:  # noqa: F811
    db = tmp_path / "purge.db"
    now = int(time.time() * 1000)
    seed(db, 50_000, tag=1, ts_ms=now - 40 * DAY_MS)  # expired under a 30-day retention
    seed(db, 2_000, tag=2, ts_ms=now - 2 * DAY_MS)
    expired = f"timestamp < {now - 30 * DAY_MS}"
    server = ServerProcess(db, {"FLOWTEL_RETENTION_DAYS": "30"})
    servers.append(server)
    server._spawn()  # the purge starts with the server: watch the file, not /healthz
    deadline = time.monotonic() + 30
    while count_where(db, expired) == 50_000:
        assert time.monotonic() < deadline, f"the purge never started\n{server.log_tail()}"
        await asyncio.sleep(0.002)
    server.signal(signal.SIGKILL)
    assert await server.wait_exit(EXIT_TIMEOUT) == -signal.SIGKILL
    left = count_where(db, expired)
    assert 0 < left < 50_000, f"the kill should land mid-purge ({left} expired events left)"
    assert integrity(db) == ["ok"]
    # Every chunk that committed left a tombstone per row it removed, nothing more.
    assert count_deleted(db) == 50_000 - left

    ledger = Ledger()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)  # the restarted server purges the rest at start, while clients post
        async with load(server.url, ledger, session):
            await wait_for_acks(ledger, 50)
            deadline = time.monotonic() + 30
            while count_where(db, expired):
                assert time.monotonic() < deadline, "the restarted purge did not finish"
                await asyncio.sleep(0.02)
        stored = set(stored_ids(db))
        assert ledger.acked_ids <= stored
        assert count_where(db, "id LIKE '00000002-%'") == 2_000
        assert count_deleted(db) == 50_000
        await mirror_agrees(server, session, db)
