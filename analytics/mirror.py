"""The mirror: copies SQLite event rows past a watermark into DuckDB, exactly once, via Arrow, and applies SQLite's
deletion tombstones past a second watermark in the same transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from analytics import sqlitelib
from analytics.source import SqliteSource, int64_array, max_batch_seq
from analytics.warehouse import Warehouse

log = logging.getLogger("flowtel.mirror")

T = TypeVar("T")

# Rows a request may copy into the mirror before it answers; the background loop keeps the lag far below this.
CATCH_UP_ROWS = 5_000_000


def _host(column: str) -> str:
    """The URL's host, lower-cased, without a leading www. (NULL when there is none), by splitting the string.

    Lists indexed by position rather than nested split_part: DuckDB expands each split_part's argument more than
    once, so six nested calls took ~75 ms to plan per INSERT and ran a third slower than string_split."""
    authority = f"string_split(string_split(string_split(string_split({column}, '://')[2], '/')[1], '?')[1], '#')[1]"
    bare = f"string_split(string_split({authority}, '@')[-1], ':')[1]"
    return f"nullif(regexp_replace(lower({bare}), '^www\\.', ''), '')"


def _query_param(column: str, name: str) -> str:
    raw = f"regexp_extract({column}, '[?&]{name}=([^&#]*)', 1)"
    decoded = f"nullif(trim(coalesce(try(url_decode(replace({raw}, '+', ' '))), {raw})), '')"
    return f"CASE WHEN contains({column}, '{name}=') THEN {decoded} END"


# The property keys read at mirror time, in the order of the `p` list below (one JSON parse per row).
_PROPERTY_PATHS = ("productId", "product_id", "item_id", "orderId", "order_id", "transaction_id", "value",
                   "revenue", "total", "currency")
_PATH_LIST = "[" + ", ".join(f"'$.{key}'" for key in _PROPERTY_PATHS) + "]"

# Columns extracted once here, so every stats query reads plain typed columns instead of parsing JSON and URLs.
# Each batch arrives sorted by (shop, time) (source.cluster) and DuckDB keeps that insertion order.
# URL parts are derived once per distinct URL and referrer and joined back: shops' pages repeat (the 1M benchmark
# batch has 34k distinct URLs in 246k rows), and the string splitting was a fifth of the insert's CPU time (a
# 245,760-row batch: ~650 -> ~560 ms on one thread).
# make_timestamptz(µs) builds the instant directly: a third of the time of epoch_ms(ms)::TIMESTAMPTZ, which goes
# through the session's time zone.
INSERT_BATCH = f"""
INSERT INTO events BY NAME
WITH pages AS (
    SELECT url, {_host("url")} AS host, {_query_param("url", "utm_source")} AS utm_source,
           {_query_param("url", "utm_medium")} AS utm_medium, {_query_param("url", "utm_campaign")} AS utm_campaign
    FROM (SELECT DISTINCT nullif(url, '') AS url FROM mirror_batch)
), referrers AS (
    SELECT referrer, {_host("referrer")} AS referrer_host
    FROM (SELECT DISTINCT nullif(referrer, '') AS referrer FROM mirror_batch)
)
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, ts, url, referrer, user_agent, created_at,
       path, host, referrer_host,
       coalesce(utm_source, CASE WHEN referrer_host IS NOT NULL AND referrer_host IS DISTINCT FROM host
                                 THEN referrer_host END, 'direct') AS source,
       utm_source, utm_medium, utm_campaign, device, browser, os, country, is_bot, visitor_hash,
       coalesce(p[1], p[2], p[3]) AS product_id,
       coalesce(p[4], p[5], p[6]) AS order_id,
       try_cast(coalesce(p[7], p[8], p[9]) AS DOUBLE) AS order_value,
       upper(coalesce(nullif(trim(p[10]), ''), shop_currency, 'USD')) AS currency
FROM (
    SELECT seq, id, shop_id, session_id, event_type, event_name, properties::JSON AS properties,
           make_timestamptz(timestamp * 1000) AS ts, nullif(url, '') AS url, nullif(referrer, '') AS referrer,
           nullif(user_agent, '') AS user_agent, make_timestamptz(created_at * 1000) AS created_at,
           nullif(path, '') AS path, device, nullif(browser, '') AS browser, nullif(os, '') AS os,
           nullif(country, '') AS country, is_bot <> 0 AS is_bot, visitor_hash,
           CASE WHEN properties <> '{{}}' THEN json_extract_string(properties, {_PATH_LIST}) END AS p,
           shops.currency AS shop_currency
    FROM mirror_batch
    LEFT JOIN (SELECT unnest($shop_ids::VARCHAR[]) AS shop_id, unnest($currencies::VARCHAR[]) AS currency) AS shops
        USING (shop_id)
) LEFT JOIN pages USING (url) LEFT JOIN referrers USING (referrer)
"""
# Two of DuckDB's 122,880-row row groups. A batch of whole row groups is written straight to the database file; the
# rows past the last whole group went through the WAL and were written again at the next checkpoint (250,000-row
# batches over 10M events: 30 s to copy, and then a 7 s checkpoint; this size: 30 s, and the checkpoint is free).
BATCH_ROWS = 2 * 122_880
UPDATE_STATE = "UPDATE mirror_state SET watermark = ?, delete_watermark = ?, last_sync_at = now() WHERE id = 1"
SELECT_STATE = "SELECT watermark, epoch_ms(last_sync_at), coalesce(delete_watermark, 0) FROM mirror_state WHERE id = 1"
APPLY_TOMBSTONES = "DELETE FROM events WHERE seq IN (SELECT event_seq FROM mirror_tombstones)"
RESET_MIRROR = ["DELETE FROM events", "UPDATE mirror_state SET watermark = 0, delete_watermark = 0 WHERE id = 1"]

# SQLite side. The AUTOINCREMENT high-water marks never go down, even when the newest rows are deleted; only a
# restored (older) store has lower ones than the mirror's watermarks.
SELECT_TOMBSTONES = "SELECT seq, event_seq FROM deletions WHERE seq > ? ORDER BY seq LIMIT ?"
SELECT_TOMBSTONE_MAX = "SELECT coalesce(max(seq), 0) FROM deletions"
# A registered shop's currency is the default for its purchases that name none (else USD).
SELECT_SHOP_CURRENCIES = "SELECT id, currency FROM shops"
SELECT_HIGH_WATER = """
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
       coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'deletions'), 0)
"""


@dataclass
class MirrorStatus:
    watermark: int = 0
    delete_watermark: int = 0
    source_max: int = 0
    last_sync_ms: int | None = None
    last_duration_s: float = 0.0
    rows_copied: int = 0
    rows_deleted: int = 0
    # True when the last pass left rows (it stopped short of the high-water mark it saw) or tombstones (it applied a
    # full batch) for the next one.
    rows_pending: bool = False
    tombstones_pending: bool = False

    @property
    def pending(self) -> bool:
        return self.rows_pending or self.tombstones_pending

    @property
    def lag_events(self) -> int:
        return max(0, self.source_max - self.watermark)


class Mirror:
    """Copies new rows from the SQLite file into the warehouse; every method runs on the warehouse thread."""

    def __init__(self, sqlite_path: Path, *, batch_rows: int = BATCH_ROWS,
                 before_commit: Callable[[int], None] | None = None) -> None:
        self.sqlite_path = sqlite_path
        self.batch_rows = batch_rows
        # Test hook: called between the insert and the watermark update, inside the transaction.
        self.before_commit = before_commit
        self.status = MirrorStatus()
        self.source = SqliteSource(sqlite_path)

    def close(self) -> None:
        self.source.close()

    def load_state(self, conn: duckdb.DuckDBPyConnection) -> MirrorStatus:
        row = conn.execute(SELECT_STATE).fetchone()
        assert row is not None
        self.status.watermark = int(row[0])
        self.status.last_sync_ms = int(row[1]) if row[1] is not None else None
        self.status.delete_watermark = int(row[2])
        return self.status

    def source_max(self) -> int:
        self.status.source_max = self.source.max_seq()
        return self.status.source_max

    def sync_once(self, conn: duckdb.DuckDBPyConnection) -> int:
        """Copy one batch past the watermark and apply one batch of tombstones past the delete watermark; rows,
        deletions and both watermarks commit in one transaction. Returns rows copied.

        Rows are read before tombstones, and inserted before tombstones are applied: a row deleted after it was
        read has its tombstone read now or in a later pass, and a tombstone read now names only rows that were
        already gone when any later batch is read. So DuckDB ends up with exactly SQLite's rows.
        """
        state = self.load_state(conn)
        self._check_source(conn)
        watermark, delete_watermark = state.watermark, state.delete_watermark
        if watermark == 0 and delete_watermark == 0:
            # An empty mirror: tombstones committed before the first rows are read name rows it will never see.
            delete_watermark = int(self._deletions(SELECT_TOMBSTONE_MAX, (), [(0,)])[0][0])
        high_water = self.source_max()
        backlog = high_water - watermark
        batch = self.source.read_batch(watermark, self.batch_rows, backlog=backlog) if backlog > 0 else None
        rows = batch.num_rows if batch is not None else 0
        tombstones = self._deletions(SELECT_TOMBSTONES, (delete_watermark, self.batch_rows), [])
        self.status.tombstones_pending = len(tombstones) == self.batch_rows
        new_watermark = max_batch_seq(batch) if batch is not None and rows else watermark
        self.status.rows_pending = rows > 0 and new_watermark < high_water
        if rows == 0 and not tombstones and delete_watermark == state.delete_watermark:
            return 0
        new_delete_watermark = int(tombstones[-1][0]) if tombstones else delete_watermark
        deleted = 0
        conn.begin()
        try:
            if batch is not None and rows:
                conn.register("mirror_batch", batch)
                conn.execute(INSERT_BATCH, self._shop_currencies())
            if tombstones:
                seqs = pa.table({"event_seq": int64_array([t[1] for t in tombstones])})
                conn.register("mirror_tombstones", seqs)
                deleted = _changed(conn.execute(APPLY_TOMBSTONES))
            if self.before_commit is not None:
                self.before_commit(rows)
            conn.execute(UPDATE_STATE, (new_watermark, new_delete_watermark))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if batch is not None and rows:
                conn.unregister("mirror_batch")
            if tombstones:
                conn.unregister("mirror_tombstones")
        self.status.watermark = new_watermark
        self.status.delete_watermark = new_delete_watermark
        self.status.rows_copied += rows
        self.status.rows_deleted += deleted
        return rows

    def _deletions(self, sql: str, params: tuple[int, ...], missing: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """A query on the tombstone table; a store the server has not opened since deletions existed has none."""
        try:
            return [tuple(row) for row in self.source.query(sql, params)]
        except sqlitelib.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return missing

    def _shop_currencies(self) -> dict[str, list[str]]:
        """INSERT_BATCH's parameters: each registered shop and its currency, bound as DuckDB lists."""
        try:
            pairs = self.source.query(SELECT_SHOP_CURRENCIES)
        except sqlitelib.OperationalError as exc:  # a store from before shops existed: every default is USD
            if "no such table" not in str(exc):
                raise
            pairs = []
        return {"shop_ids": [p[0] for p in pairs], "currencies": [p[1] for p in pairs]}

    def _check_source(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Start over when SQLite is behind the mirror (a restored backup): the mirror must never show rows SQLite
        no longer has, nor skip the rows that reuse seqs it has already seen."""
        events_high, deletions_high = (int(v) for v in self.source.query(SELECT_HIGH_WATER)[0])
        if events_high >= self.status.watermark and deletions_high >= self.status.delete_watermark:
            return
        log.warning("the SQLite store is older than the mirror (events %d < %d or deletions %d < %d): "
                    "re-mirroring from scratch", events_high, self.status.watermark, deletions_high,
                    self.status.delete_watermark)
        conn.begin()
        try:
            for statement in RESET_MIRROR:
                conn.execute(statement)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        self.load_state(conn)

    def catch_up(self, conn: duckdb.DuckDBPyConnection, max_rows: int | None = None) -> int:
        """Copy batches until the mirror holds every committed row (or max_rows were copied)."""
        started = time.perf_counter()
        copied = 0
        while max_rows is None or copied < max_rows:
            copied += self.sync_once(conn)
            if not self.status.pending:
                break
        self.source_max()
        self.load_state(conn)
        self.status.last_duration_s = time.perf_counter() - started
        if copied:
            log.debug("mirrored %d rows in %.3fs", copied, self.status.last_duration_s)
        return copied


async def read_caught_up(warehouse: Warehouse, mirror: Mirror | None,
                         fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """fn(cursor) on one of the warehouse's read connections, after the mirror caught up on the writing one: the
    answer holds every event committed before the call. A mirror pass between the two only adds later events.
    Without a mirror (a warehouse read on its own, as `flowtel analyze` opens it) fn just runs."""
    if mirror is not None:
        await warehouse.run(lambda conn: mirror.catch_up(conn, CATCH_UP_ROWS))
    return await warehouse.read(fn)


def _changed(cursor: duckdb.DuckDBPyConnection) -> int:
    # DuckDB answers a DELETE with one row holding the number of rows it removed.
    row = cursor.fetchone()
    return int(row[0]) if row else 0
