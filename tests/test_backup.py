"""`flowtel backup` and `flowtel restore`: a backup taken from a real server under concurrent ingestion is a
consistent snapshot holding every event acknowledged before it started, and restoring it brings back exactly its
rows, with the DuckDB mirror rebuilt to match; restore refuses while a server runs; neither overwrites by accident."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import duckdb
import orjson
import pytest

from analytics import sqlitelib
from server.backup import BackupError, backup_store, restore_store
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
from tests.test_mirror import base_event, insert

FLOWTEL = Path(sys.executable).parent / "flowtel"
pytestmark = pytest.mark.timeout(90)


def flowtel(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(db.parent), "DATABASE_URL": f"sqlite:{db}",
           "FLOWTEL_DUCKDB_PATH": str(db.with_suffix(".duckdb"))}
    return subprocess.run([str(FLOWTEL), *args], env=env, cwd=db.parent, capture_output=True, text=True, timeout=60)


def rows_of(db: Path) -> dict[str, tuple[object, ...]]:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0]: row for row in conn.execute("SELECT id, shop_id, session_id, event_type, properties, "
                                                    "timestamp, created_at, device, visitor_hash FROM events")}
    finally:
        conn.close()


def duck_ids(path: Path) -> list[str]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id").fetchall()]
    finally:
        conn.close()


async def test_a_backup_taken_mid_load_is_consistent_and_restores(
        tmp_path: Path, servers: list[ServerProcess]) -> None:  # noqa: F811
    db = tmp_path / "live.db"
    dest = tmp_path / "backups" / "snapshot.db"
    server = ServerProcess(db, {"FLOWTEL_SQLITE_SYNCHRONOUS": "NORMAL"})
    servers.append(server)
    ledger = Ledger()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        async with load(server.url, ledger, session):
            await wait_for_acks(ledger, 100)
            acked_before = set(ledger.acked_ids)
            acks_at_start = len(ledger.acked)
            # The backup runs as its own process, as an operator would run it, while the clients keep posting.
            proc = await asyncio.create_subprocess_exec(
                str(FLOWTEL), "backup", str(dest), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": f"sqlite:{db}"})
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert "Backed up" in out.decode()
            acked_after_backup = len(ledger.acked)
            await wait_for_acks(ledger, acked_after_backup + 20)  # ingestion went on during and after the backup
        assert len(ledger.acked) > acks_at_start, "the server must keep acknowledging while the backup runs"

        backup_rows = rows_of(dest)
        assert integrity(dest) == ["ok"]
        backup_ids = stored_ids(dest)
        assert len(backup_ids) == len(set(backup_ids)), "an id is in the backup twice"
        missing = acked_before - set(backup_ids)
        assert not missing, f"{len(missing)} events acknowledged before the backup started are not in it"
        assert set(backup_ids) <= ledger.sent_ids
        partial = [b for b in ledger.sent if 0 < sum(i in backup_rows for i in b) < len(b)]
        assert not partial, f"{len(partial)} requests are partly in the backup"
        for row in backup_rows.values():
            assert all(value is not None for value in row), row
            assert isinstance(orjson.loads(str(row[4])), dict)
        live_now = set(stored_ids(db))
        assert set(backup_ids) < live_now  # a snapshot: the server stored more afterwards

        # Restore refuses while the server runs, and changes nothing.
        refused = flowtel(db, "restore", str(dest))
        assert refused.returncode == 1 and "Stop the server first" in refused.stderr, refused.stderr
        assert set(stored_ids(db)) == live_now

        server.signal(signal.SIGTERM)
        assert await server.wait_exit(EXIT_TIMEOUT) == 0, server.log_tail()
        restored = flowtel(db, "restore", str(dest))
        assert restored.returncode == 0, restored.stderr
        assert rows_of(db) == backup_rows
        assert integrity(db) == ["ok"]
        assert set(stored_ids(db.with_name("live.db.pre-restore"))) == set(stored_ids(db)) | live_now
        assert duck_ids(db.with_suffix(".duckdb")) == sorted(backup_rows)

        # The restarted server serves the restored store, and its mirror agrees.
        await server.start(session)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with session.get(f"{server.url}/api/events", params={"limit": "1"}, headers=admin) as resp:
            assert (await resp.json())["total"] == len(backup_rows)
        lost = sorted(live_now - set(backup_rows))[0]
        async with session.get(f"{server.url}/api/events/{lost}", headers=admin) as resp:
            assert resp.status == 404
        server.signal(signal.SIGTERM)
        assert await server.wait_exit(EXIT_TIMEOUT) == 0
    assert duck_ids(db.with_suffix(".duckdb")) == sorted(backup_rows)


def test_backup_refuses_an_existing_file_and_a_missing_store(tmp_path: Path) -> None:
    db = tmp_path / "flowtel.db"
    assert flowtel(db, "backup", str(tmp_path / "b.db")).returncode == 1  # no store yet
    insert_events(db, 3)
    taken = flowtel(db, "backup", str(tmp_path / "b.db"))
    assert taken.returncode == 0, taken.stderr
    assert "Backed up 3 events" in taken.stdout
    again = flowtel(db, "backup", str(tmp_path / "b.db"))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert not list(tmp_path.glob("*.partial"))


def test_restore_refuses_what_is_not_a_store_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "flowtel.db"
    insert_events(db, 4)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="not a Flowtel SQLite store"):
        restore_store(junk, db, tmp_path / "flowtel.duckdb")
    with pytest.raises(BackupError, match="no backup"):
        restore_store(tmp_path / "absent.db", db, tmp_path / "flowtel.duckdb")
    assert len(stored_ids(db)) == 4


def test_a_restore_replaces_a_stale_mirror(tmp_path: Path) -> None:
    db, duck = tmp_path / "flowtel.db", tmp_path / "flowtel.duckdb"
    insert_events(db, 5)
    backup_store(db, tmp_path / "five.db")
    insert(db, [base_event(100 + i) for i in range(7)])
    assert flowtel(db, "rebuild", "--quiet").returncode == 0
    assert len(duck_ids(duck)) == 12
    restore_store(tmp_path / "five.db", db, duck)
    assert sorted(stored_ids(db)) == duck_ids(duck) and len(duck_ids(duck)) == 5


def insert_events(db: Path, n: int) -> None:
    from server.store import prepare_database

    prepare_database(db)
    insert(db, [base_event(i) for i in range(n)])
