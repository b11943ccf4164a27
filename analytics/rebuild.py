"""`flowtel rebuild`: recreate the DuckDB file from SQLite beside it, sorted by (shop, time), then swap it in."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import duckdb
from tqdm import tqdm

from analytics import sqlitelib
from analytics.export import StoreMissing, WarehouseLocked, is_lock_error
from analytics.mirror import BATCH_ROWS, Mirror
from analytics.source import readonly_uri
from analytics.warehouse import SCHEMA, Warehouse

COUNT_SOURCE = "SELECT count(*) FROM events"
# Sorted copy inside the new file: a fresh table from SCHEMA keeps the column constraints a CTAS would drop;
# mirror_state (with the watermark the copy reached) is left as it is.
CLUSTER = [
    "ALTER TABLE events RENAME TO events_unsorted",
    SCHEMA,
    "INSERT INTO events BY NAME SELECT * FROM events_unsorted ORDER BY shop_id, ts, seq",
    "DROP TABLE events_unsorted",
]
COUNT_EVENTS = "SELECT count(*) FROM events"


@dataclass(frozen=True)
class RebuildResult:
    rows: int
    source_rows: int
    seconds: float
    path: Path


def _sidecars(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".wal")]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def hold_existing(path: Path) -> duckdb.DuckDBPyConnection | None:
    """Open the current file read-write: proves no server holds it, and keeps one from starting meanwhile.

    A file that cannot be opened for another reason (damaged, another DuckDB version) is what a rebuild is for,
    so that is not an error.
    """
    if not path.exists():
        return None
    try:
        return duckdb.connect(str(path), config={"autoinstall_known_extensions": False})
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise WarehouseLocked(path, str(exc)) from None
        return None


def _source_rows(sqlite_path: Path) -> int:
    conn = sqlitelib.connect(readonly_uri(sqlite_path), uri=True)
    try:
        return int(conn.execute(COUNT_SOURCE).fetchone()[0])
    finally:
        conn.close()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (after a rename, so the new name survives a power cut); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cluster(conn: duckdb.DuckDBPyConnection) -> int:
    conn.begin()
    try:
        for statement in CLUSTER:
            conn.execute(statement)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    conn.execute("CHECKPOINT")
    row = conn.execute(COUNT_EVENTS).fetchone()
    return int(row[0]) if row else 0


def rebuild_warehouse(sqlite_path: Path, duckdb_path: Path, *, memory_limit: str = "1GB", batch_rows: int = BATCH_ROWS,
                      progress: bool = True, progress_file: TextIO | None = None) -> RebuildResult:
    """Build `<duckdb_path>.rebuild` from every SQLite row, sort it by (shop_id, ts), then os.replace it over
    duckdb_path. Refuses (WarehouseLocked) while another process holds the current file; the old file stays
    untouched until the new one is complete and checkpointed.
    """
    if not sqlite_path.exists():
        raise StoreMissing(f"there is no SQLite store at {sqlite_path}")
    started = time.perf_counter()
    guard = hold_existing(duckdb_path)
    target = duckdb_path.with_name(duckdb_path.name + ".rebuild")
    try:
        _remove(_sidecars(target))  # a stale build from an interrupted run
        source_rows = _source_rows(sqlite_path)
        warehouse = Warehouse(target, memory_limit=memory_limit, threads=max(2, os.cpu_count() or 2))
        warehouse.open_sync()
        mirror = Mirror(sqlite_path, batch_rows=batch_rows)
        try:
            with tqdm(total=source_rows, unit="rows", unit_scale=True, desc="rebuild", disable=not progress,
                      file=progress_file) as bar:
                while True:
                    copied = warehouse.call(mirror.sync_once)
                    bar.update(copied)
                    if not mirror.status.pending:
                        break
            rows = warehouse.call(_cluster)
        finally:
            warehouse.call(lambda conn: mirror.close())
            warehouse.close_sync()
        _remove([target.with_name(target.name + ".wal")])  # checkpointed and closed: nothing left to replay
    except BaseException:
        if guard is not None:
            guard.close()
        _remove(_sidecars(target))
        raise
    if guard is not None:
        guard.close()
    # The old file's WAL must never be replayed onto the new file.
    _remove([duckdb_path.with_name(duckdb_path.name + ".wal")])
    os.replace(target, duckdb_path)
    fsync_path(duckdb_path.parent)
    return RebuildResult(rows=rows, source_rows=source_rows, seconds=time.perf_counter() - started,
                         path=duckdb_path)
