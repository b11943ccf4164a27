"""The mirror: copies SQLite event rows past a watermark into DuckDB, exactly once, via Arrow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analytics.source import SqliteSource

log = logging.getLogger("flowtel.mirror")

def _host(column: str) -> str:
    # String splitting is about twice as fast as a regular expression here, and the mirror's speed is bounded by it.
    authority = f"split_part(split_part(split_part(split_part({column}, '://', 2), '/', 1), '?', 1), '#', 1)"
    bare = f"split_part(split_part({authority}, '@', -1), ':', 1)"
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
INSERT_BATCH = f"""
INSERT INTO events BY NAME
SELECT seq, id, shop_id, session_id, event_type, event_name, properties, ts, url, referrer, user_agent, created_at,
       path, host, referrer_host,
       coalesce(utm_source, CASE WHEN referrer_host IS NOT NULL AND referrer_host IS DISTINCT FROM host
                                 THEN referrer_host END, 'direct') AS source,
       utm_source, utm_medium, utm_campaign, device, browser, os, country, is_bot, visitor_hash,
       coalesce(p[1], p[2], p[3]) AS product_id,
       coalesce(p[4], p[5], p[6]) AS order_id,
       try_cast(coalesce(p[7], p[8], p[9]) AS DOUBLE) AS order_value,
       upper(coalesce(nullif(trim(p[10]), ''), 'USD')) AS currency
FROM (
    SELECT seq, id, shop_id, session_id, event_type, event_name, properties::JSON AS properties,
           epoch_ms(timestamp)::TIMESTAMPTZ AS ts, nullif(url, '') AS url, nullif(referrer, '') AS referrer,
           nullif(user_agent, '') AS user_agent, epoch_ms(created_at)::TIMESTAMPTZ AS created_at,
           nullif(path, '') AS path, {_host("nullif(url, '')")} AS host,
           {_host("nullif(referrer, '')")} AS referrer_host,
           {_query_param("url", "utm_source")} AS utm_source,
           {_query_param("url", "utm_medium")} AS utm_medium,
           {_query_param("url", "utm_campaign")} AS utm_campaign,
           device, nullif(browser, '') AS browser, nullif(os, '') AS os, nullif(country, '') AS country,
           is_bot <> 0 AS is_bot, visitor_hash,
           CASE WHEN properties <> '{{}}' THEN json_extract_string(properties, {_PATH_LIST}) END AS p
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

    def __init__(self, sqlite_path: Path, *, batch_rows: int = 250_000,
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
        return self.status

    def source_max(self) -> int:
        self.status.source_max = self.source.max_seq()
        return self.status.source_max

    def sync_once(self, conn: duckdb.DuckDBPyConnection) -> int:
        """Copy one batch past the watermark; rows and watermark commit in one transaction. Returns rows copied."""
        watermark = self.load_state(conn).watermark
        backlog = self.source_max() - watermark
        if backlog <= 0:
            return 0
        batch = self.source.read_batch(watermark, self.batch_rows, backlog=backlog)
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
