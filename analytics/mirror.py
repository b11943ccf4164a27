"""The mirror: copies SQLite event rows past a watermark into DuckDB, exactly once, via Arrow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc_sqlite
import duckdb

log = logging.getLogger("flowtel.mirror")

# ADBC infers each column's Arrow type from the first rows it reads, so a text column that starts with NULLs would
# be typed as an integer; coalescing to '' keeps every text column a string (turned back into NULL in DuckDB).
SELECT_BATCH = """
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, timestamp,
       coalesce(url, '') AS url, coalesce(referrer, '') AS referrer, coalesce(user_agent, '') AS user_agent,
       created_at, coalesce(path, '') AS path, coalesce(browser, '') AS browser, coalesce(os, '') AS os,
       device, coalesce(country, '') AS country, is_bot, visitor_hash
FROM events WHERE seq > ? ORDER BY seq LIMIT ?
"""
SELECT_SOURCE_MAX = "SELECT coalesce(max(seq), 0) FROM events"

_HOST_RE = r"'^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?([^/?#:]+)'"


def _host(column: str) -> str:
    return f"nullif(regexp_replace(lower(regexp_extract({column}, {_HOST_RE}, 1)), '^www\\.', ''), '')"


def _query_param(column: str, name: str) -> str:
    raw = f"regexp_extract({column}, '[?&]{name}=([^&#]*)', 1)"
    return f"nullif(trim(coalesce(try(url_decode(replace({raw}, '+', ' '))), {raw})), '')"


def _first_prop(*keys: str) -> str:
    return "coalesce(" + ", ".join(f"json_extract_string(properties, '$.{key}')" for key in keys) + ")"


# Columns extracted once here, so every stats query reads plain typed columns instead of parsing JSON and URLs.
INSERT_BATCH = f"""
INSERT INTO events BY NAME
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, ts, url, referrer, user_agent, created_at,
       path, host, referrer_host,
       coalesce(utm_source, CASE WHEN referrer_host IS NOT NULL AND referrer_host IS DISTINCT FROM host
                                 THEN referrer_host END, 'direct') AS source,
       utm_source, utm_medium, utm_campaign, device, browser, os, country, is_bot, visitor_hash,
       product_id, order_id, order_value, currency
FROM (
    SELECT seq, id, shop_id, session_id, event_type, event_name, properties::JSON AS properties,
           epoch_ms(timestamp)::TIMESTAMPTZ AS ts, nullif(url, '') AS url, nullif(referrer, '') AS referrer,
           nullif(user_agent, '') AS user_agent, epoch_ms(created_at)::TIMESTAMPTZ AS created_at,
           nullif(path, '') AS path, {_host("url")} AS host, {_host("referrer")} AS referrer_host,
           {_query_param("url", "utm_source")} AS utm_source,
           {_query_param("url", "utm_medium")} AS utm_medium,
           {_query_param("url", "utm_campaign")} AS utm_campaign,
           device, nullif(browser, '') AS browser, nullif(os, '') AS os, nullif(country, '') AS country,
           is_bot <> 0 AS is_bot, visitor_hash,
           {_first_prop("productId", "product_id", "item_id")} AS product_id,
           {_first_prop("orderId", "order_id", "transaction_id")} AS order_id,
           try_cast({_first_prop("value", "revenue", "total")} AS DOUBLE) AS order_value,
           upper(coalesce(nullif(trim(json_extract_string(properties, '$.currency')), ''), 'USD')) AS currency
    FROM mirror_batch
)
"""
UPDATE_STATE = "UPDATE mirror_state SET watermark = ?, last_sync_at = now() WHERE id = 1"
SELECT_STATE = "SELECT watermark, epoch_ms(last_sync_at) FROM mirror_state WHERE id = 1"


@dataclass
class MirrorStatus:
    watermark: int = 0
    source_max: int = 0
    last_sync_ms: int | None = None
    last_duration_s: float = 0.0
    rows_copied: int = 0

    @property
    def lag_events(self) -> int:
        return max(0, self.source_max - self.watermark)


class Mirror:
    """Copies new rows from the SQLite file into the warehouse; every method runs on the warehouse thread."""

    def __init__(self, sqlite_path: Path, *, batch_rows: int = 100_000,
                 before_commit: Callable[[int], None] | None = None) -> None:
        self.sqlite_path = sqlite_path
        self.batch_rows = batch_rows
        # Test hook: called between the insert and the watermark update, inside the transaction.
        self.before_commit = before_commit
        self.status = MirrorStatus()
        self._source: Any = None

    def _cursor(self) -> Any:
        if self._source is None:
            # Autocommit: otherwise the first read opens a transaction whose snapshot never sees newer rows.
            self._source = adbc_sqlite.connect(f"file:{self.sqlite_path}?mode=ro", autocommit=True)
        return self._source.cursor()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def load_state(self, conn: duckdb.DuckDBPyConnection) -> MirrorStatus:
        row = conn.execute(SELECT_STATE).fetchone()
        assert row is not None
        self.status.watermark = int(row[0])
        self.status.last_sync_ms = int(row[1]) if row[1] is not None else None
        return self.status

    def source_max(self) -> int:
        cursor = self._cursor()
        try:
            cursor.execute(SELECT_SOURCE_MAX)
            row = cursor.fetchone()
        finally:
            cursor.close()
        self.status.source_max = int(row[0]) if row else 0
        return self.status.source_max

    def sync_once(self, conn: duckdb.DuckDBPyConnection) -> int:
        """Copy one batch past the watermark; rows and watermark commit in one transaction. Returns rows copied."""
        watermark = self.load_state(conn).watermark
        cursor = self._cursor()
        try:
            cursor.execute(SELECT_BATCH, (watermark, self.batch_rows))
            batch = cursor.fetch_arrow_table()
        finally:
            cursor.close()
        if batch.num_rows == 0:
            return 0
        new_watermark = int(batch.column("seq")[-1].as_py())
        conn.begin()
        try:
            conn.register("mirror_batch", batch)
            conn.execute(INSERT_BATCH)
            if self.before_commit is not None:
                self.before_commit(batch.num_rows)
            conn.execute(UPDATE_STATE, (new_watermark,))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.unregister("mirror_batch")
        self.status.watermark = new_watermark
        self.status.rows_copied += batch.num_rows
        return batch.num_rows

    def catch_up(self, conn: duckdb.DuckDBPyConnection, max_rows: int | None = None) -> int:
        """Copy batches until the mirror holds every committed row (or max_rows were copied)."""
        started = time.perf_counter()
        copied = 0
        while max_rows is None or copied < max_rows:
            n = self.sync_once(conn)
            copied += n
            if n < self.batch_rows:
                break
        self.source_max()
        self.load_state(conn)
        self.status.last_duration_s = time.perf_counter() - started
        if copied:
            log.debug("mirrored %d rows in %.3fs", copied, self.status.last_duration_s)
        return copied
