"""The SQLite store: schema and migrations, the single writer (queue + group commit) and read-only readers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from analytics import sqlitelib
from analytics.source import readonly_uri
from server.errors import ApiError
from server.events import EVENT_COLUMNS, NewEvent

log = logging.getLogger("flowtel.store")

T = TypeVar("T")

# Each entry upgrades PRAGMA user_version by one. Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS events (
        -- Insertion order: the mirror's watermark and the cursor snapshot. AUTOINCREMENT: a deleted row's seq
        -- is never reused, so the mirror can never skip a row that reuses an old number.
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        shop_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        event_name TEXT NOT NULL,
        properties TEXT NOT NULL,         -- JSON object
        timestamp INTEGER NOT NULL,       -- epoch ms, UTC
        url TEXT,
        referrer TEXT,
        user_agent TEXT,
        created_at INTEGER NOT NULL,      -- epoch ms, UTC
        path TEXT,
        browser TEXT,
        os TEXT,
        device TEXT NOT NULL,
        country TEXT,
        is_bot INTEGER NOT NULL,
        visitor_hash TEXT NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events(id);
    CREATE INDEX IF NOT EXISTS events_shop_time ON events(shop_id, timestamp);
    CREATE INDEX IF NOT EXISTS events_time ON events(timestamp);

    CREATE TABLE IF NOT EXISTS insights (
        id TEXT PRIMARY KEY,
        shop_id TEXT NOT NULL,
        type TEXT NOT NULL,
        title TEXT NOT NULL,
        content TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        generated_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS insights_shop_time ON insights(shop_id, generated_at);

    CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        shop_id TEXT NOT NULL,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,  -- sha256 of the secret; the secret itself is never stored
        created_at INTEGER NOT NULL
    );

    CREATE TABLE IF NOT EXISTS salts (
        day TEXT PRIMARY KEY,             -- UTC date; older salts are deleted so old hashes cannot be linked
        salt BLOB NOT NULL
    );
    """,
    """
    CREATE TABLE IF NOT EXISTS shops (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        currency TEXT NOT NULL DEFAULT 'USD',
        domains TEXT NOT NULL DEFAULT '[]',  -- JSON array of host names; empty = events accepted from anywhere
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    """,
    # Chat: conversations and their messages (assistant turns keep queries, rows and chart as JSON).
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        shop_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,      -- epoch ms, UTC
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        shop_id TEXT NOT NULL,
        role TEXT NOT NULL,               -- user | assistant
        content TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}',
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, created_at);
    CREATE INDEX IF NOT EXISTS messages_shop_time ON messages(shop_id, created_at);
    """,
    # Deletions. Every deleted event leaves a tombstone whose own seq is the mirror's delete watermark, so the
    # DuckDB mirror removes exactly the rows SQLite removed. write_probe is a scratch table the health check
    # writes into (and rolls back) to learn whether the store can take writes again.
    """
    CREATE TABLE IF NOT EXISTS deletions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_seq INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS write_probe (data BLOB);
    """,
)

INSERT_EVENT = """
INSERT INTO events (id, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer,
                    user_agent, created_at, path, browser, os, device, country, is_bot, visitor_hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_COLUMNS = ("id", "shop_id", "session_id", "event_type", "event_name", "properties", "timestamp", "url", "referrer",
            "user_agent", "created_at", "path", "browser", "os", "device", "country", "is_bot", "visitor_hash")
def group_insert(jsonb: bool) -> str:
    """A whole group in one statement: the rows travel as one JSON array, one bound parameter parsed by SQLite in C.

    Stored ids are skipped by the unique index. No RETURNING: fetching a row per new event hands the GIL back and
    forth with the event loop once per row; the row count tells whether every event was new, and only when some were
    not are the new ids read back (by seq, which only this writer advances). `WHERE true` resolves the upsert
    ambiguity. As text, SQLite parses each row's JSON again for every one of its 18 `->>`; as JSONB (3.45+) the array
    is parsed once and each `->>` reads binary: 11.0 -> 6.9 us per row alone, and 100-event batches through the
    server went from ~43k to ~53k events/s. Multi-row VALUES with every value bound are faster inside SQLite still,
    but sqlite3 binds them holding the GIL, which the event loop then waits for: end to end they were slower (447 ->
    405 requests/s of 100 events). Binding one string keeps the writer off the GIL.
    """
    rows = "jsonb_each(jsonb(?))" if jsonb else "json_each(?)"
    return (f"INSERT INTO events ({', '.join(_COLUMNS)}) "
            f"SELECT {', '.join(f'value ->> {i}' for i in range(len(_COLUMNS)))} FROM {rows} WHERE true "
            "ON CONFLICT (id) DO NOTHING")


INSERT_GROUP = group_insert(sqlitelib.has_jsonb())
SELECT_IDS_AFTER = "SELECT id FROM events WHERE seq > ?"
INSERT_SALT = "INSERT OR IGNORE INTO salts (day, salt) VALUES (?, ?)"
DELETE_OLD_SALTS = "DELETE FROM salts WHERE day < ?"
SELECT_SALT = "SELECT salt FROM salts WHERE day = ?"
SELECT_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM events"
SELECT_EVENT_BY_ID = f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"

# Upper bound of events committed in one transaction; bigger groups only add latency.
MAX_GROUP_EVENTS = 5000

# Deletion: the matching seqs are found on a read connection of its own (the scan can be long), then removed by the
# writer in chunks, each chunk its own short transaction, so ingestion groups run between the chunks.
SELECT_SEQS_OF_SHOP = "SELECT seq FROM events WHERE shop_id = ?"
SELECT_SEQS_BEFORE = "SELECT seq FROM events WHERE timestamp < ?"
# Events by id or session; with the visitor flag also every event sharing a visitor hash with those.
SELECT_SEQS_MATCHING = """
SELECT seq FROM events
WHERE shop_id = :shop AND (
    id IN (SELECT value FROM json_each(:ids))
    OR session_id IN (SELECT value FROM json_each(:sessions))
    OR (:visitors AND visitor_hash IN (
        SELECT visitor_hash FROM events
        WHERE shop_id = :shop AND (id IN (SELECT value FROM json_each(:ids))
                                   OR session_id IN (SELECT value FROM json_each(:sessions)))))
)
"""
# Tombstones first, only for rows still there (another delete may have taken some since the scan).
INSERT_TOMBSTONES = ("INSERT INTO deletions (event_seq) "
                     "SELECT seq FROM events WHERE seq IN (SELECT value FROM json_each(?))")
DELETE_BY_SEQ = "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))"
# 64 KiB forces new pages (the way an event group would), inside a savepoint that is always rolled back.
PROBE_WRITE = ("SAVEPOINT probe", "INSERT INTO write_probe (data) VALUES (zeroblob(65536))", "ROLLBACK TO probe",
               "RELEASE probe")
# Rows one writer transaction deletes: small enough that an ingestion group never waits long behind it.
DELETE_CHUNK = 2000


class StoreOverloaded(ApiError):
    """The write queue is full: 503, and the client retries later with the same ids."""

    def __init__(self) -> None:
        super().__init__(503, "overloaded", "The server is taking too many writes right now: retry after a second; "
                         "nothing from this request was stored.", headers={"Retry-After": "1"})


class StorageUnavailable(ApiError):
    """SQLite cannot write (disk full, locked, read-only, I/O error): 503, nothing of the request was stored."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(503, "overloaded", f"Storage cannot take writes right now ({cause}): retry later; nothing "
                         "from this request was stored.", headers={"Retry-After": "5"})


def _is_storage_fault(exc: BaseException) -> bool:
    # OperationalError is SQLite's family for full, locked, busy, read-only and I/O failures; constraint and
    # programming errors are bugs and stay 500s.
    return isinstance(exc, sqlitelib.OperationalError)


class StoreClosed(ApiError):
    """The store is shutting down and takes no new writes."""

    def __init__(self) -> None:
        super().__init__(503, "overloaded", "The server is shutting down: retry shortly; nothing was stored.",
                         headers={"Retry-After": "2"})


def migrate(conn: sqlitelib.Connection) -> int:
    """Bring the schema to the latest version; returns the version now in force."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if version < number:
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            version = number
    return version


def prepare_database(path: Path) -> None:
    """Create the directory and file, switch to WAL and run the migrations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlitelib.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn)
    finally:
        conn.close()


@dataclass
class _EventJob:
    events: list[NewEvent]
    rows: str  # the events' rows as one JSON array, serialised by the request's handler
    future: asyncio.Future[list[bool]]


@dataclass
class _CallJob:
    fn: Callable[[aiosqlite.Connection], Awaitable[Any]]
    future: asyncio.Future[Any]


@dataclass
class StoreStats:
    ingested: int = 0
    duplicates: int = 0


class Store:
    """Owns the SQLite file: one writer connection fed by a queue, and a small pool of read-only readers."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", queue_limit: int = 20000, readers: int = 2) -> None:
        self.path = path
        self.synchronous = synchronous
        self.queue_limit = queue_limit
        self.stats = StoreStats()
        self._reader_count = readers
        self._queue: asyncio.Queue[_EventJob | _CallJob | None] = asyncio.Queue()
        self._pending_events = 0
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._salts: dict[str, bytes] = {}
        self._salt_lookups: dict[str, asyncio.Future[bytes]] = {}
        self.last_seq = 0
        # The last write failure that said storage is unusable; cleared by the next successful write or probe.
        self.fault: str | None = None

    @property
    def writer_alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        return self._pending_events

    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            # A half-open store would leave aiosqlite threads that keep the process from exiting.
            for conn in [*self._all_readers, self._writer]:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            raise

    async def _open(self) -> None:
        await asyncio.to_thread(prepare_database, self.path)
        # Autocommit: a group is one INSERT statement, which SQLite commits atomically on its own, so a group costs
        # a single round trip to the writer thread. Multi-statement jobs open their own transaction (_run_call).
        self._writer = await sqlitelib.connect_async(self.path, isolation_level=None)
        await self._writer.execute("PRAGMA busy_timeout = 5000")
        await self._writer.execute(f"PRAGMA synchronous = {self.synchronous}")
        # Index pages stay hot, so inserts into a store of millions of rows don't wait on page reads.
        await self._writer.execute("PRAGMA cache_size = -65536")
        for _ in range(self._reader_count):
            reader = await sqlitelib.connect_async(readonly_uri(self.path), uri=True)
            await reader.execute("PRAGMA busy_timeout = 5000")
            await reader.execute("PRAGMA cache_size = -32768")
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)
        async with self._writer.execute(SELECT_MAX_SEQ) as cursor:
            row = await cursor.fetchone()
        self.last_seq = int(row[0]) if row else 0
        self._task = asyncio.create_task(self._run_writer(), name="flowtel-sqlite-writer")

    async def close(self) -> None:
        """Take no new writes, commit everything already queued, then close the connections."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        for reader in self._all_readers:
            await reader.close()
        if self._writer is not None:
            await self._writer.close()

    async def insert_events(self, events: list[NewEvent]) -> list[bool]:
        """Commit the events in the next group; True per event that was new, False for a stored duplicate.

        Returns only after the transaction committed, so an answer built from it is durable.
        """
        if self._closing:
            raise StoreClosed()
        if self._pending_events and self._pending_events + len(events) > self.queue_limit:
            raise StoreOverloaded()
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending_events += len(events)
        # Serialised here, by each request, rather than by the writer for the whole group: the writer's commit
        # cycle is the bottleneck of batched ingestion, and joining the arrays is a copy (100-event batches, +5%).
        rows = orjson.dumps([event.row() for event in events]).decode()
        self._queue.put_nowait(_EventJob(events, rows, future))
        return await future

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run fn on the writer connection in its own transaction (committed on success, rolled back on error)."""
        if self._closing:
            raise StoreClosed()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_CallJob(fn, future))
        result: T = await future
        return result

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def fetchall(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        async with self.reader() as conn:
            async with conn.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        return list(rows)

    async def fetchone(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        async with self.reader() as conn:
            async with conn.execute(sql, params) as cursor:
                return await cursor.fetchone()

    async def salt_for(self, day: str) -> bytes:
        """The visitor-hash salt of a UTC day, created on first use; older days' salts are deleted."""
        salt = self._salts.get(day)
        if salt is not None:
            return salt
        # One lookup per day however many requests miss the cache at once. At start-up and at UTC midnight every
        # request in flight misses it: under bench-ingest's 64 connections, each queueing its own write transaction
        # made those first requests wait ~125 ms on average.
        pending = self._salt_lookups.get(day)
        if pending is None:
            pending = self._salt_lookups[day] = asyncio.ensure_future(self.write(functools.partial(_ensure_salt,
                                                                                                   day=day)))
            pending.add_done_callback(lambda done: self._salt_looked_up(day, done))
        return await asyncio.shield(pending)

    def _salt_looked_up(self, day: str, done: asyncio.Future[bytes]) -> None:
        del self._salt_lookups[day]
        if not done.cancelled() and done.exception() is None:
            self._salts = {day: done.result()}

    async def probe(self) -> str | None:
        """Try a write that needs new pages and roll it back: None when the store takes writes, else the fault."""
        async def write_scratch(conn: aiosqlite.Connection) -> None:
            for statement in PROBE_WRITE:
                await conn.execute(statement)

        try:
            await self.write(write_scratch)
        except StorageUnavailable:
            return self.fault or "storage is unusable"
        self.fault = None
        return None

    async def delete_matching(self, select_sql: str, params: tuple[Any, ...] | dict[str, Any],
                              chunk: int = DELETE_CHUNK) -> int:
        """Delete the events select_sql (a query of seqs) finds, leaving a tombstone for each; returns how many.

        The scan runs on its own read connection, so it sees one snapshot and holds no pooled reader; the writer
        then deletes in chunks of its own transactions. Events stored after the scan started are not touched. An
        interrupted delete may have applied some chunks: repeating it is safe.
        """
        deleted = 0
        scan = await sqlitelib.connect_async(readonly_uri(self.path), uri=True)
        try:
            await scan.execute("PRAGMA busy_timeout = 5000")
            async with scan.execute(select_sql, params) as cursor:
                while rows := await cursor.fetchmany(chunk):
                    deleted += await self.write(functools.partial(_delete_chunk, seqs=[row[0] for row in rows]))
        finally:
            await scan.close()
        return deleted

    async def _run_writer(self) -> None:
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            group: list[_EventJob] = []
            calls: list[_CallJob] = []
            count = 0
            while True:
                if isinstance(job, _EventJob):
                    group.append(job)
                    count += len(job.events)
                else:
                    calls.append(job)
                if count >= MAX_GROUP_EVENTS or self._queue.empty():
                    break
                job = self._queue.get_nowait()
                if job is None:
                    stopping = True
                    break
            if group:
                await self._commit_events(group, count)
            for call in calls:
                await self._run_call(call)
        # Shutting down: whatever is still queued was accepted by a handler that is waiting; finish it.
        leftovers: list[_EventJob] = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if isinstance(job, _EventJob):
                leftovers.append(job)
            elif isinstance(job, _CallJob):
                await self._run_call(job)
        if leftovers:
            await self._commit_events(leftovers, sum(len(j.events) for j in leftovers))

    async def _commit_events(self, group: list[_EventJob], count: int) -> None:
        conn = self._writer
        assert conn is not None
        try:
            payload = "[" + ",".join(job.rows[1:-1] for job in group if job.events) + "]"
            before = self.last_seq
            cursor = await conn.execute(INSERT_GROUP, (payload,))
            new_rows = cursor.rowcount
            if new_rows > 0:
                # seq is the rowid: the last row this statement inserted has the highest seq so far.
                self.last_seq = cursor.lastrowid or self.last_seq
            all_new = new_rows == count
            inserted: set[str] = set()
            if not all_new and new_rows > 0:
                inserted = {row[0] for row in await conn.execute_fetchall(SELECT_IDS_AFTER, (before,))}
            # An id repeated within the group was inserted once, by its first occurrence in arrival order.
            outcomes: list[list[bool]] = []
            for job in group:
                if all_new:
                    outcomes.append([True] * len(job.events))
                    continue
                created: list[bool] = []
                for event in job.events:
                    is_new = event.id in inserted
                    if is_new:
                        inserted.discard(event.id)
                    created.append(is_new)
                outcomes.append(created)
        except Exception as exc:
            log.error("group commit of %d events failed: %r", count, exc)
            error: BaseException = exc
            if _is_storage_fault(exc):
                self.fault = str(exc)
                error = StorageUnavailable(exc)
            for job in group:
                if not job.future.done():
                    job.future.set_exception(error)
        else:
            self.fault = None
            self.stats.ingested += new_rows
            self.stats.duplicates += count - new_rows
            for job, created in zip(group, outcomes, strict=True):
                if not job.future.done():
                    job.future.set_result(created)
        finally:
            self._pending_events -= count

    async def _run_call(self, call: _CallJob) -> None:
        conn = self._writer
        assert conn is not None
        try:
            await conn.execute("BEGIN IMMEDIATE")
            result = await call.fn(conn)
            await conn.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.rollback()
            error: BaseException = exc
            if _is_storage_fault(exc):
                self.fault = str(exc)
                error = StorageUnavailable(exc)
            if not call.future.done():
                call.future.set_exception(error)
        else:
            if not call.future.done():
                call.future.set_result(result)


async def _ensure_salt(conn: aiosqlite.Connection, day: str) -> bytes:
    await conn.execute(INSERT_SALT, (day, secrets.token_bytes(32)))
    await conn.execute(DELETE_OLD_SALTS, (day,))
    async with conn.execute(SELECT_SALT, (day,)) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return bytes(row[0])


async def _delete_chunk(conn: aiosqlite.Connection, seqs: list[int]) -> int:
    payload = orjson.dumps(seqs).decode()
    await conn.execute(INSERT_TOMBSTONES, (payload,))
    cursor = await conn.execute(DELETE_BY_SEQ, (payload,))
    return max(0, cursor.rowcount)


def secure_write(path: Path, content: str) -> None:
    """Write a secret file readable by its owner only (0600), created that way rather than chmod-ed after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(path, 0o600)
