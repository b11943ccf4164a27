"""The two SQLite readers of the mirror (in-process sqlite3 and the ADBC child process) return the same tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from analytics.source import SCHEMA, SqliteSource, readonly_uri
from server.events import NewEvent, new_event_id
from server.store import INSERT_EVENT, prepare_database


def _fill(path: Path, n: int) -> None:
    prepare_database(path)
    rows = []
    for i in range(n):
        event = NewEvent(
            id=new_event_id(), shop_id=f"s{i % 3}", session_id=f"x{i // 4}", event_type="page_view",
            event_name="page_view", properties=f'{{"i": {i}}}', timestamp=1_795_666_517_123 + i,
            url=None if i < 700 else f"https://a.com/{i}", referrer=None, user_agent=None,
            created_at=1_795_666_517_123, path=None if i < 700 else f"/{i}", browser=None, os=None,
            device="other", country=None if i % 2 else "DE", is_bot=i % 5 == 0, visitor_hash="h",
        )
        rows.append(event.row())
    conn = sqlite3.connect(path)
    conn.executemany(INSERT_EVENT, rows)
    conn.commit()
    conn.close()


def test_child_and_in_process_reads_agree_including_read_ahead(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _fill(path, 2_000)
    source = SqliteSource(path, bulk_rows=1)
    try:
        in_process, child = [], []
        after = 0
        while True:
            table = source.read_batch(after, 300)
            if table.num_rows == 0:
                break
            in_process.append(table)
            after = table.column("seq")[-1].as_py()
        after = 0
        while True:
            # backlog >= bulk_rows: the ADBC child reads, and reads the next batch ahead
            table = source.read_batch(after, 300, backlog=10**6)
            if table.num_rows == 0:
                break
            child.append(table)
            after = table.column("seq")[-1].as_py()
        assert len(in_process) == len(child) == 7
        for a, b in zip(in_process, child, strict=True):
            assert a.schema == b.schema == SCHEMA
            assert a.equals(b)
        # An out-of-order request discards the read-ahead and still answers correctly.
        table = source.read_batch(1_000, 10, backlog=10**6)
        assert table.column("seq").to_pylist() == list(range(1_001, 1_011))
    finally:
        source.close()


def test_readonly_uri_survives_odd_characters(tmp_path: Path) -> None:
    path = tmp_path / "we?ird #dir %20" / "events.db"
    path.parent.mkdir()
    _fill(path, 5)
    conn = sqlite3.connect(readonly_uri(path), uri=True)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (5,)
    conn.close()
