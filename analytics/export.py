"""Offline use of the DuckDB file by the command line (lock detection, catch-up) and the per-shop event export."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb

from analytics.mirror import Mirror
from analytics.warehouse import Warehouse

FORMATS = {"parquet": "parquet", "ndjson": "ndjson"}  # format name → file extension

# Every column of the events table, newest layout; ndjson gets ISO 8601 UTC strings instead of DuckDB's timestamp text.
EXPORT_PARQUET = "COPY (SELECT * FROM events WHERE shop_id = $shop ORDER BY ts, seq) TO $path (FORMAT parquet, " \
                 "COMPRESSION zstd)"
EXPORT_NDJSON = """
COPY (
    SELECT * REPLACE (strftime(timezone('UTC', ts), '%Y-%m-%dT%H:%M:%S.%gZ') AS ts,
                      strftime(timezone('UTC', created_at), '%Y-%m-%dT%H:%M:%S.%gZ') AS created_at)
    FROM events WHERE shop_id = $shop ORDER BY events.ts, seq
) TO $path (FORMAT json)
"""
SELECT_SHOPS = "SELECT shop_id, count(*) AS events FROM events GROUP BY shop_id ORDER BY events DESC, shop_id"
_HOLDER_RE = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


class StoreMissing(Exception):
    """The SQLite store does not exist yet: nothing was ever ingested with these settings."""


class WarehouseLocked(Exception):
    """Another process (normally the running server) holds the DuckDB file."""

    def __init__(self, path: Path, detail: str) -> None:
        match = _HOLDER_RE.search(detail)
        self.pid = int(match.group(2)) if match else None
        holder = f" (PID {self.pid})" if self.pid is not None else ""
        super().__init__(f"{path} is in use by another process{holder}, most likely the running Flowtel server")
        self.path = path
        self.detail = detail


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's error when another process holds the file: an IOException that mentions the lock."""
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@contextlib.contextmanager
def open_offline(sqlite_path: Path, duckdb_path: Path, *, memory_limit: str = "1GB",
                 catch_up: bool = True) -> Iterator[Warehouse]:
    """Open the warehouse file directly (the server must be stopped) and copy every committed SQLite row into it.

    Raises StoreMissing when there is no SQLite file, WarehouseLocked when another process holds the DuckDB file.
    """
    if not sqlite_path.exists():
        raise StoreMissing(f"there is no SQLite store at {sqlite_path}")
    warehouse = Warehouse(duckdb_path, memory_limit=memory_limit)
    try:
        warehouse.open_sync()
    except duckdb.Error as exc:
        warehouse.close_sync()
        if is_lock_error(exc):
            raise WarehouseLocked(duckdb_path, str(exc)) from None
        raise
    mirror = Mirror(sqlite_path)
    try:
        warehouse.call(mirror.load_state)
        if catch_up:
            warehouse.call(mirror.catch_up)
        yield warehouse
    finally:
        warehouse.call(lambda conn: mirror.close())
        warehouse.close_sync()


def shops(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """(shop id, events) for every shop in the warehouse, busiest first."""
    return [(str(shop), int(n)) for shop, n in conn.execute(SELECT_SHOPS).fetchall()]


def default_output(data_dir: Path, shop_id: str, fmt: str) -> Path:
    return data_dir / f"export-{shop_id}.{FORMATS[fmt]}"


def export_events(conn: duckdb.DuckDBPyConnection, shop_id: str, fmt: str, output: Path) -> int:
    """Write every event of one shop (bots included, flagged in is_bot) to output; returns the row count.

    The shop id and the path are bound parameters. The file appears complete or not at all: it is written
    beside the target and renamed over it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")
    sql = EXPORT_PARQUET if fmt == "parquet" else EXPORT_NDJSON
    try:
        row = conn.execute(sql, {"shop": shop_id, "path": str(partial)}).fetchone()
        os.replace(partial, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return int(row[0]) if row else 0
