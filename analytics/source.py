"""Reading SQLite event rows into Arrow for the mirror: in-process for small batches, a child process for bulk.

ADBC's SQLite driver is ~2.5x faster than Python's sqlite3 at this, but it bundles its own copy of SQLite, and two
SQLite copies in one process do not see each other's locks: the second one can reset the WAL index the server's
writer is using (SIGBUS, or a silently corrupted database). So ADBC only ever runs in a child process of its own.
"""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import pyarrow as pa

# ADBC infers each column's Arrow type from the first rows it reads, so a text column that starts with NULLs would
# be typed as an integer; coalescing to '' keeps every text column a string (turned back into NULL in DuckDB).
SELECT_BATCH = """
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, timestamp,
       coalesce(url, '') AS url, coalesce(referrer, '') AS referrer, coalesce(user_agent, '') AS user_agent,
       created_at, coalesce(path, '') AS path, coalesce(browser, '') AS browser, coalesce(os, '') AS os,
       device, coalesce(country, '') AS country, is_bot, visitor_hash
FROM events WHERE seq > ? ORDER BY seq LIMIT ?
"""
SELECT_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM events"

_INT_COLUMNS = ("seq", "timestamp", "created_at", "is_bot")
SCHEMA = pa.schema([
    pa.field(name, pa.int64() if name in _INT_COLUMNS else pa.string())
    for name in ("seq", "id", "shop_id", "session_id", "event_type", "event_name", "properties", "timestamp",
                 "url", "referrer", "user_agent", "created_at", "path", "browser", "os", "device", "country",
                 "is_bot", "visitor_hash")
])
# Backlogs at least this big go through the child process, which then stays up: under steady ingestion the
# mirror's reading (Python row handling under the GIL) happens there, not in the process answering requests.
BULK_ROWS = 2_000
_LENGTH = struct.Struct("<Q")


def readonly_uri(path: Path | str) -> str:
    """A read-only SQLite URI for a path; percent-encoded so '?', '#' or '%' in a path cannot break it."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


def _rows_to_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


class SqliteSource:
    """Event batches from the SQLite file, as Arrow tables with SCHEMA."""

    def __init__(self, path: Path, *, bulk_rows: int = BULK_ROWS) -> None:
        self.path = path
        self.bulk_rows = bulk_rows
        self._conn: sqlite3.Connection | None = None
        self._child: subprocess.Popen[bytes] | None = None
        # The (after, limit) the child is already reading ahead, so reading overlaps with DuckDB's insert.
        self._pending: tuple[int, int] | None = None

    def _sqlite(self) -> sqlite3.Connection:
        if self._conn is None:
            # Autocommit (isolation_level=None): each read sees the latest committed rows.
            self._conn = sqlite3.connect(readonly_uri(self.path), uri=True, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout = 5000")
        return self._conn

    def max_seq(self) -> int:
        row = self._sqlite().execute(SELECT_MAX_SEQ).fetchone()
        return int(row[0]) if row else 0

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a small read-only query on the same connection (tombstones, high-water marks)."""
        return list(self._sqlite().execute(sql, params).fetchall())

    def read_batch(self, after: int, limit: int, *, backlog: int | None = None) -> pa.Table:
        """Rows with seq > after, in seq order, at most limit. A large backlog is read by the ADBC child."""
        if backlog is not None and backlog >= self.bulk_rows:
            return self._read_in_child(after, limit)
        rows = self._sqlite().execute(SELECT_BATCH, (after, limit)).fetchall()
        return _rows_to_table(rows)

    def _read_in_child(self, after: int, limit: int) -> pa.Table:
        if self._child is None or self._child.poll() is not None:
            self._pending = None
            self._child = subprocess.Popen(
                [sys.executable, "-m", "analytics.source", str(self.path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
        try:
            if self._pending is not None and self._pending != (after, limit):
                self._receive()  # a read-ahead nobody wants any more (the caller's watermark moved differently)
            if self._pending is None:
                self._request(after, limit)
            table = self._receive()
            if table.num_rows == limit:
                self._request(int(table.column("seq")[-1].as_py()), limit)
        except (OSError, EOFError):
            self.close()
            raise
        return table

    def _request(self, after: int, limit: int) -> None:
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write(f"{after} {limit}\n".encode())
        self._child.stdin.flush()
        self._pending = (after, limit)

    def _receive(self) -> pa.Table:
        assert self._child is not None and self._child.stdout is not None
        self._pending = None
        header = _read_exactly(self._child.stdout, _LENGTH.size)
        payload = _read_exactly(self._child.stdout, _LENGTH.unpack(header)[0])
        return pa.ipc.open_stream(payload).read_all().cast(SCHEMA)

    def close(self) -> None:
        self._pending = None
        if self._child is not None:
            if self._child.stdin is not None:
                self._child.stdin.close()
            try:
                self._child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            if self._child.stdout is not None:
                self._child.stdout.close()
            self._child = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the SQLite reader process ended unexpectedly")
    return data


def _serve(path: str) -> None:
    """The child: answer "<after> <limit>" lines with length-prefixed Arrow IPC streams read by ADBC."""
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    conn = adbc_sqlite.connect(readonly_uri(path), autocommit=True)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        after, limit = (int(part) for part in line.split())
        cursor = conn.cursor()
        try:
            cursor.execute(SELECT_BATCH, (after, limit))
            table = cursor.fetch_arrow_table()
        finally:
            cursor.close()
        if table.num_rows == 0:
            table = SCHEMA.empty_table()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payload = sink.getvalue()
        out.write(_LENGTH.pack(payload.size))
        out.write(payload)
        out.flush()
    conn.close()


if __name__ == "__main__":
    _serve(sys.argv[1])
