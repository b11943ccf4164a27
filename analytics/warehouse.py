"""The DuckDB warehouse: the file, its schema, the one writing connection (used from one worker thread) and the
read connections that reports and queries run on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

T = TypeVar("T")

# Small appends (the mirror's steady passes) sit in DuckDB's WAL and, until a checkpoint, in memory uncompressed:
# ~600 bytes of each per row. Ten minutes of the soak's 600 events/s (360k rows in 1,500 commits) took ~230 MB of
# DuckDB memory and made a 1M-event shop's report ~20% slower. Checkpointing once the WAL passes this bounds both.
WAL_CHECKPOINT_BYTES = 64 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,
    id VARCHAR NOT NULL,
    shop_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    event_name VARCHAR NOT NULL,
    properties JSON NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    url VARCHAR,
    referrer VARCHAR,
    user_agent VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    path VARCHAR,
    host VARCHAR,
    referrer_host VARCHAR,
    source VARCHAR NOT NULL,
    utm_source VARCHAR,
    utm_medium VARCHAR,
    utm_campaign VARCHAR,
    device VARCHAR NOT NULL,
    browser VARCHAR,
    os VARCHAR,
    country VARCHAR,
    is_bot BOOLEAN NOT NULL,
    visitor_hash VARCHAR NOT NULL,
    product_id VARCHAR,
    order_id VARCHAR,
    order_value DOUBLE,
    currency VARCHAR
);
CREATE TABLE IF NOT EXISTS mirror_state (
    id INTEGER PRIMARY KEY,
    watermark BIGINT NOT NULL,
    last_sync_at TIMESTAMPTZ
);
-- The last SQLite tombstone (deletions.seq) applied; added after the first release, hence the ALTER.
ALTER TABLE mirror_state ADD COLUMN IF NOT EXISTS delete_watermark BIGINT DEFAULT 0;
INSERT INTO mirror_state (id, watermark, last_sync_at) VALUES (1, 0, NULL) ON CONFLICT DO NOTHING;
"""


class Warehouse:
    """Owns the DuckDB file. Every use of the main connection (the mirror's writes, checkpoints) runs on one dedicated
    thread, in call order; read() runs a job on one of `readers` cursors of the same database, each on a thread of
    its own, so reports neither wait for mirror passes nor hold them up.

    One reader by default: two let two reports run side by side, but in the soak (two dashboards polling a 1M-event
    shop under ingestion) that gave no steadier stats p99 (425 and 591 ms, against 471, 471 and 436 with one) and two
    reports' working memory at once."""

    def __init__(self, path: Path | str, *, memory_limit: str = "1GB", threads: int = 2,
                 read_only: bool = False, wal_checkpoint_bytes: int = WAL_CHECKPOINT_BYTES, readers: int = 1) -> None:
        if readers < 1:
            raise ValueError("a warehouse needs at least one reader")
        self.path = Path(path) if str(path) != ":memory:" else path
        self.memory_limit = memory_limit
        self.threads = threads
        self.read_only = read_only
        self.wal_checkpoint_bytes = wal_checkpoint_bytes
        self.readers = readers
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowtel-duckdb")
        self._read_executor = concurrent.futures.ThreadPoolExecutor(max_workers=readers,
                                                                    thread_name_prefix="flowtel-duckdb-read")
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._thread_id: int | None = None
        # Idle read cursors; a job takes one for its duration, so no cursor is ever used by two threads at once.
        self._cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._all_cursors: list[duckdb.DuckDBPyConnection] = []

    def open_sync(self) -> None:
        """Open the file and create the schema; runs on the worker thread."""
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Nothing may be downloaded at run time: the extensions we use (icu, json, parquet) are built in.
        config: dict[str, Any] = {"memory_limit": self.memory_limit, "threads": self.threads,
                                  "autoinstall_known_extensions": False}
        self._conn = duckdb.connect(str(self.path), read_only=self.read_only, config=config)
        self._conn.execute("SET TimeZone = 'UTC'")
        # DuckDB's own checkpoint runs inside whichever commit crosses the threshold, often a stats request's
        # catch-up; checkpoint_if_wal_over() does it from the background mirror pass instead, at a lower size. This
        # high one is only the safety net. Bulk copies are unaffected: whole row groups bypass the WAL.
        self._conn.execute("SET checkpoint_threshold = '512MB'")
        self._thread_id = threading.get_ident()
        if not self.read_only:
            self._conn.execute(SCHEMA)
        # Cursors are connections to the same database: each read job runs in its own transaction and sees every
        # commit made before it started.
        for _ in range(self.readers):
            cursor = self._conn.cursor()
            self._all_cursors.append(cursor)
            self._cursors.put(cursor)

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """The connection; only valid on the worker thread (inside call/run)."""
        assert self._conn is not None, "warehouse is not open"
        assert threading.get_ident() == self._thread_id, "the DuckDB connection is used off its worker thread"
        return self._conn

    def wal_bytes(self) -> int:
        """The size of the DuckDB file's write-ahead log (0 when there is none)."""
        if not isinstance(self.path, Path):
            return 0
        try:
            return self.path.with_name(self.path.name + ".wal").stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint_if_wal_over(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """CHECKPOINT when the WAL holds more than wal_checkpoint_bytes; True when it did. Runs on the worker."""
        if self.read_only or self.wal_bytes() <= self.wal_checkpoint_bytes:
            return False
        conn.execute("CHECKPOINT")
        return True

    def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(conn) on the worker thread and wait (for synchronous callers: CLI, tests, benchmarks)."""
        return self._executor.submit(lambda: fn(self.conn)).result()

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(conn) on the worker thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.conn))

    def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        cursor = self._cursors.get()
        try:
            return fn(cursor)
        finally:
            self._cursors.put(cursor)

    def read_sync(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(cursor) on a read thread and wait; fn must not write (the mirror owns the writes)."""
        return self._read_executor.submit(self._read, fn).result()

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(cursor) on a read thread without blocking the event loop; fn must not write."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_executor, functools.partial(self._read, fn))

    def close_sync(self) -> None:
        self._read_executor.shutdown(wait=True)

        def close() -> None:
            for cursor in self._all_cursors:
                cursor.close()
            self._all_cursors.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(close).result()
        self._executor.shutdown(wait=True)
