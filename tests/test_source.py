"""The two SQLite readers of the mirror (in-process sqlite3 and the ADBC child process) return the same tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from analytics import sqlitelib
from analytics.source import SCHEMA, SqliteSource, _make_spool, max_batch_seq, readonly_uri
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
    conn = sqlitelib.connect(path)
    conn.executemany(INSERT_EVENT, rows)
    conn.commit()
    conn.close()


@pytest.mark.parametrize("split_rows", [10**9, 100], ids=["one-read", "two-halves"])
def test_child_and_in_process_reads_agree_including_read_ahead(tmp_path: Path, split_rows: int) -> None:
    path = tmp_path / "events.db"
    _fill(path, 2_000)
    source = SqliteSource(path, bulk_rows=1, split_rows=split_rows)
    try:
        in_process, child = [], []
        after = 0
        while True:
            table = source.read_batch(after, 300)
            if table.num_rows == 0:
                break
            in_process.append(table)
            after = max_batch_seq(table)
        after = 0
        while True:
            # backlog >= bulk_rows: the ADBC child reads, and reads the next batch ahead
            table = source.read_batch(after, 300, backlog=10**6)
            if table.num_rows == 0:
                break
            child.append(table)
            after = max_batch_seq(table)
        # The child's first read is half a batch (nothing was read ahead for it); then whole batches.
        assert [t.num_rows for t in in_process] == [300] * 6 + [200]
        assert [t.num_rows for t in child] == [150] + [300] * 6 + [50]
        for batches in (in_process, child):
            first = 1
            for table in batches:
                assert table.schema == SCHEMA
                # Each batch holds the next seqs, stored in (shop, timestamp, seq) order for the mirror.
                seqs = table.column("seq").to_pylist()
                assert sorted(seqs) == list(range(first, first + table.num_rows))
                first += table.num_rows
                keys = list(zip(table.column("shop_id").to_pylist(), table.column("timestamp").to_pylist(), seqs,
                                strict=True))
                assert keys == sorted(keys)
                assert keys[0][0] == "s0" and keys[-1][0] == "s2"
        # Row for row the same values, whichever reader read them.
        order = [("seq", "ascending")]
        assert pa.concat_tables(child).sort_by(order).equals(pa.concat_tables(in_process).sort_by(order))
        # A fresh start again: half a batch, and the next batch is read ahead.
        table = source.read_batch(1_000, 10, backlog=10**6)
        assert sorted(table.column("seq").to_pylist()) == list(range(1_001, 1_006))
        assert max_batch_seq(table) == 1_005
        # An out-of-order request discards that read-ahead and still answers correctly. Fewer rows left than half
        # a batch: no split point, one read.
        table = source.read_batch(1_900, 300, backlog=10**6)
        assert sorted(table.column("seq").to_pylist()) == list(range(1_901, 2_001))
    finally:
        source.close()


def test_halves_read_around_deleted_rows_neither_overlap_nor_skip(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _fill(path, 1_000)
    conn = sqlitelib.connect(path)
    conn.execute("DELETE FROM events WHERE seq % 7 = 0 OR seq BETWEEN 140 AND 160")
    conn.commit()
    kept = [int(row[0]) for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
    conn.close()
    source = SqliteSource(path, bulk_rows=1, split_rows=2)
    try:
        seen: list[int] = []
        after = 0
        while True:
            table = source.read_batch(after, 250, backlog=10**6)
            if table.num_rows == 0:
                break
            seqs = sorted(table.column("seq").to_pylist())
            assert seqs == kept[len(seen):len(seen) + (125 if not seen else 250)]
            seen += seqs
            after = max_batch_seq(table)
        assert seen == kept
    finally:
        source.close()


def test_readonly_uri_survives_odd_characters(tmp_path: Path) -> None:
    path = tmp_path / "we?ird #dir %20" / "events.db"
    path.parent.mkdir()
    _fill(path, 5)
    conn = sqlitelib.connect(readonly_uri(path), uri=True)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (5,)
    conn.close()


def test_batch_files_are_removed_and_a_dead_mirrors_leftovers_swept(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _fill(path, 50)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    spool_parent = _make_spool()
    parent = Path(spool_parent.name).parent
    spool_parent.cleanup()
    stale = parent / f"flowtel-mirror-{int(finished.stdout)}-leftover"
    stale.mkdir()
    (stale / "batch-0.arrow").write_bytes(b"x" * 1024)
    mine = parent / f"flowtel-mirror-{os.getpid()}-live"
    mine.mkdir()
    source = SqliteSource(path, bulk_rows=1)
    try:
        assert source.read_batch(0, 20, backlog=20).num_rows == 20  # the whole backlog: one read
        assert not stale.exists()  # its process is gone
        assert mine.exists()  # a live process's spool is left alone
        spool = Path(source._spool.name) if source._spool else None
        assert spool is not None and spool.is_dir()
        # Only the read-ahead's file can be there; the batch just read was unlinked once mapped.
        assert len(list(spool.iterdir())) <= 1
    finally:
        source.close()
        mine.rmdir()
    assert not spool.exists()
