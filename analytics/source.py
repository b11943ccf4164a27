"""Reading SQLite event rows into Arrow for the mirror: in-process for small batches, a child process for bulk.

ADBC's SQLite driver is ~2.5x faster than Python's sqlite3 at this, but it bundles its own copy of SQLite, and two
SQLite copies in one process do not see each other's locks: the second one can reset the WAL index the server's
writer is using (SIGBUS, or a silently corrupted database). So ADBC only ever runs in a child process of its own.
"""

from __future__ import annotations

import array
import concurrent.futures
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from analytics import sqlitelib

# ADBC infers each column's Arrow type from the first rows it reads, so a text column that starts with NULLs would
# be typed as an integer; coalescing to '' keeps every text column a string (turned back into NULL in DuckDB).
_SELECT_ROWS = """
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, timestamp,
       coalesce(url, '') AS url, coalesce(referrer, '') AS referrer, coalesce(user_agent, '') AS user_agent,
       created_at, coalesce(path, '') AS path, coalesce(browser, '') AS browser, coalesce(os, '') AS os,
       device, coalesce(country, '') AS country, is_bot, visitor_hash
FROM events"""
SELECT_BATCH = _SELECT_ROWS + " WHERE seq > ? ORDER BY seq LIMIT ?"
# A big batch is read in two halves at once, each on its own connection: the first half up to a seq that exists, so
# the halves can never overlap even when rows are deleted between the reads.
SELECT_SPLIT_SEQ = "SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?"
SELECT_FIRST_HALF = _SELECT_ROWS + " WHERE seq > ? AND seq <= ? ORDER BY seq"
SPLIT_ROWS = 50_000
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
# Batches travel through a file, in shared memory where there is room, not the pipe: a pipe moves a 130 MB batch in
# 64 KiB steps with both processes waiting on each other, while a memory-mapped file is read without a copy
# (mirror throughput at 10M events: about 225k -> 280k rows/s).
_SHARED_MEMORY = Path("/dev/shm")
_SHARED_MEMORY_NEEDED = 2 << 30  # containers often give /dev/shm only 64 MB
_SPOOL_PREFIX = "flowtel-mirror-"


def readonly_uri(path: Path | str) -> str:
    """A read-only SQLite URI for a path; percent-encoded so '?', '#' or '%' in a path cannot break it."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


def _rows_to_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


def cluster(table: pa.Table) -> pa.Table:
    """The rows in (shop_id, timestamp, seq) order, the order the mirror stores each batch in.

    DuckDB keeps each row group's min/max per column, so a one-shop report skips most of a big catch-up's row
    groups when the rows are clustered by shop (10M events: 399 ms instead of 469 ms for the largest shop). Sorting
    here, with the shop ranked through its small dictionary, costs about half of what an ORDER BY in the insert did.
    """
    if table.num_rows < 2:
        return table
    shops = pc.dictionary_encode(table.column("shop_id")).combine_chunks()
    shop_rank = pc.take(pc.rank(shops.dictionary, sort_keys="ascending", tiebreaker="first"), shops.indices)
    keys = pa.table({"shop": shop_rank, "ts": table.column("timestamp"), "seq": table.column("seq")})
    order = pc.sort_indices(keys, [("shop", "ascending"), ("ts", "ascending"), ("seq", "ascending")])
    return table.take(order)


class SqliteSource:
    """Event batches from the SQLite file, as Arrow tables with SCHEMA."""

    def __init__(self, path: Path, *, bulk_rows: int = BULK_ROWS, split_rows: int = SPLIT_ROWS) -> None:
        self.path = path
        self.bulk_rows = bulk_rows
        self.split_rows = split_rows
        self._conn: sqlitelib.Connection | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._serial = 0
        # The (after, limit) the child is already reading ahead, so reading overlaps with DuckDB's insert.
        self._pending: tuple[int, int] | None = None

    def _sqlite(self) -> sqlitelib.Connection:
        if self._conn is None:
            # Autocommit (isolation_level=None): each read sees the latest committed rows.
            self._conn = sqlitelib.connect(readonly_uri(self.path), uri=True, isolation_level=None,
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
        """Up to `limit` rows with seq > after, in seq order, sorted by cluster(); the caller finds the batch's
        highest seq with max_batch_seq(). A large backlog is read by the ADBC child, and the first read of one
        returns only half a batch (see _read_in_child), so fewer than `limit` rows do not mean the end."""
        if backlog is not None and backlog >= self.bulk_rows:
            return self._read_in_child(after, limit, backlog)
        rows = self._sqlite().execute(SELECT_BATCH, (after, limit)).fetchall()
        return cluster(_rows_to_table(rows))

    def _read_in_child(self, after: int, limit: int, backlog: int) -> pa.Table:
        if self._child is None or self._child.poll() is not None:
            self._pending = None
            if self._spool is None:
                self._spool = _make_spool()
            self._child = subprocess.Popen(
                [sys.executable, "-m", "analytics.source", str(self.path), str(self.split_rows)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
        try:
            if self._pending is not None and self._pending != (after, limit):
                self._receive()  # a read-ahead nobody wants any more (the caller's watermark moved differently)
            if self._pending is None:
                # Nothing read ahead: DuckDB waits for this read. Half a batch (one DuckDB row group at the default
                # size) arrives in about half the time, and the next full batch is read while it is inserted
                # (1M-row catch-up: the first insert began after ~0.85 s, now ~0.45 s).
                self._request(after, limit // 2 if backlog > limit else limit)
            requested = self._pending
            assert requested is not None
            table = self._receive()
            if table.num_rows == requested[1]:
                self._request(max_batch_seq(table), limit)
        except (OSError, EOFError):
            self.close()
            raise
        return table

    def _batch_path(self) -> Path:
        assert self._spool is not None
        return Path(self._spool.name) / f"batch-{self._serial}.arrow"

    def _request(self, after: int, limit: int) -> None:
        assert self._child is not None and self._child.stdin is not None
        self._serial += 1
        self._child.stdin.write(f"{after} {limit} {self._batch_path()}\n".encode())
        self._child.stdin.flush()
        self._pending = (after, limit)

    def _receive(self) -> pa.Table:
        assert self._child is not None and self._child.stdout is not None
        self._pending = None
        _read_exactly(self._child.stdout, _LENGTH.size)
        path = self._batch_path()
        # The mapping outlives the unlink, so the file's memory goes back as soon as the table is dropped.
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        path.unlink()
        return table if table.schema == SCHEMA else table.cast(SCHEMA)

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
        if self._spool is not None:
            self._spool.cleanup()
            self._spool = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _make_spool() -> tempfile.TemporaryDirectory[str]:
    """A private directory for batch files; removes those left by mirror processes that died (a kill -9)."""
    parent = Path(tempfile.gettempdir())
    try:
        if os.access(_SHARED_MEMORY, os.W_OK) and shutil.disk_usage(_SHARED_MEMORY).free >= _SHARED_MEMORY_NEEDED:
            parent = _SHARED_MEMORY
    except OSError:
        pass
    for stale in parent.glob(f"{_SPOOL_PREFIX}*-*"):
        pid = stale.name[len(_SPOOL_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and another user's
        pass
    return True


def int64_array(values: Sequence[int]) -> pa.Array:
    """An int64 Arrow array over a copy of `values`, built from a buffer: pa.array() on Python objects first imports
    pandas when it is installed, 0.15 s of the first copy in each process (the mirror child and the server)."""
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array.array("q", values))])


def max_batch_seq(table: pa.Table) -> int:
    """The highest seq in a batch read by read_batch (0 for an empty one)."""
    top = pc.max(table.column("seq")).as_py()
    return int(top) if top is not None else 0


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the SQLite reader process ended unexpectedly")
    return data


def _serve(path: str, split_rows: int) -> None:
    """The child: answer "<after> <limit> <file>" lines by writing the rows, read by ADBC, to the file as Arrow IPC,
    then the row count (8 bytes) to stdout. A batch of `split_rows` or more is read as two halves in two threads
    (SQLite decoding rows is most of the time, and ADBC reads without the GIL): the server's first batch arrives in
    about half the time, while DuckDB has nothing to insert yet."""
    # ADBC's own API, not its DB-API module: that one imports pandas, a third of the child's start-up time.
    import adbc_driver_manager as adbc
    import adbc_driver_sqlite

    database = adbc_driver_sqlite.connect(readonly_uri(path))
    # ADBC connections autocommit: each read sees the latest commit.
    connections = [adbc.AdbcConnection(database), adbc.AdbcConnection(database)]
    second = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def read(half: int, sql: str, *params: int) -> pa.Table:
        statement = adbc.AdbcStatement(connections[half])
        try:
            statement.set_sql_query(sql)
            statement.bind(pa.record_batch([int64_array([p]) for p in params],
                                           names=[f"p{i}" for i in range(len(params))]))
            stream, _ = statement.execute_query()
            return pa.RecordBatchReader.from_stream(stream).read_all()
        finally:
            statement.close()

    def read_batch(after: int, limit: int) -> pa.Table:
        if limit < split_rows:
            return read(0, SELECT_BATCH, after, limit)
        first = limit // 2
        split = read(0, SELECT_SPLIT_SEQ, after, first - 1).column(0).to_pylist()
        if not split:  # fewer rows than half a batch
            return read(0, SELECT_BATCH, after, limit)
        later = second.submit(read, 1, SELECT_BATCH, split[0], limit - first)
        earlier = read(0, SELECT_FIRST_HALF, after, split[0])
        return pa.concat_tables([earlier, later.result()]) if earlier.num_rows else later.result()

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        after_text, limit_text, batch_path = line.decode().rstrip("\n").split(" ", 2)
        table = read_batch(int(after_text), int(limit_text))
        table = cluster(table) if table.num_rows else SCHEMA.empty_table()
        with pa.OSFile(batch_path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        out.write(_LENGTH.pack(table.num_rows))
        out.flush()
    second.shutdown()
    for conn in connections:
        conn.close()
    database.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
