"""Listing stored events: filters, page/cursor pagination and the SQL for them. Pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from server.events import EVENT_COLUMNS

ORDER = " ORDER BY timestamp DESC, id DESC"


@dataclass(frozen=True, slots=True)
class EventFilter:
    shop_id: str | None = None
    session_id: str | None = None
    event_type: str | None = None
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive

    def fingerprint(self) -> str:
        """A short digest that ties a cursor to the filters it was issued for."""
        raw = orjson.dumps([self.shop_id, self.session_id, self.event_type, self.start_ms, self.end_ms])
        return hashlib.blake2b(raw, digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class Cursor:
    timestamp: int
    id: str
    snapshot: int  # the highest seq when the walk started: later events are not part of this walk
    fingerprint: str

    def encode(self) -> str:
        raw = orjson.dumps({"t": self.timestamp, "i": self.id, "s": self.snapshot, "f": self.fingerprint})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """ValueError when the cursor is not one this server issued (or was tampered with)."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            doc = orjson.loads(raw)
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise ValueError(_BAD_CURSOR) from None
        if not isinstance(doc, dict):
            raise ValueError(_BAD_CURSOR)
        t, i, s, f = doc.get("t"), doc.get("i"), doc.get("s"), doc.get("f")
        if (_is_int64(t) and _is_int64(s) and s >= 0 and isinstance(i, str) and len(i) <= 64
                and isinstance(f, str)):
            return cls(t, i, s, f)
        raise ValueError(_BAD_CURSOR)


_BAD_CURSOR = "is not a cursor issued by this server: pass nextCursor back unchanged"


def _is_int64(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def where_clause(flt: EventFilter, snapshot: int | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.shop_id is not None:
        clauses.append("shop_id = ?")
        params.append(flt.shop_id)
    if flt.session_id is not None:
        clauses.append("session_id = ?")
        params.append(flt.session_id)
    if flt.event_type is not None:
        clauses.append("event_type = ?")
        params.append(flt.event_type)
    if flt.start_ms is not None:
        clauses.append("timestamp >= ?")
        params.append(flt.start_ms)
    if flt.end_ms is not None:
        clauses.append("timestamp < ?")
        params.append(flt.end_ms)
    if snapshot is not None:
        clauses.append("seq <= ?")
        params.append(snapshot)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def count_query(flt: EventFilter, snapshot: int | None = None) -> tuple[str, list[Any]]:
    where, params = where_clause(flt, snapshot)
    return "SELECT count(*) FROM events" + where, params


def page_query(flt: EventFilter, limit: int, offset: int) -> tuple[str, list[Any]]:
    """One more row than asked, so the caller knows whether a next page exists."""
    where, params = where_clause(flt)
    return f"SELECT {EVENT_COLUMNS} FROM events{where}{ORDER} LIMIT ? OFFSET ?", [*params, limit + 1, offset]


def _after(cursor: Cursor) -> tuple[str, list[Any]]:
    # The leading `timestamp <= ?` lets SQLite seek the (shop_id, timestamp) index instead of scanning newer rows.
    return ("timestamp <= ? AND (timestamp < ? OR (timestamp = ? AND id < ?))",
            [cursor.timestamp, cursor.timestamp, cursor.timestamp, cursor.id])


def cursor_query(flt: EventFilter, cursor: Cursor, limit: int) -> tuple[str, list[Any]]:
    where, params = where_clause(flt, cursor.snapshot)
    after, after_params = _after(cursor)
    where = f"{where} AND {after}" if where else f" WHERE {after}"
    return f"SELECT {EVENT_COLUMNS} FROM events{where}{ORDER} LIMIT ?", [*params, *after_params, limit + 1]


def position_query(flt: EventFilter, cursor: Cursor) -> tuple[str, list[Any]]:
    """How many matching events come before the cursor: gives the page number of a cursor walk."""
    where, params = where_clause(flt, cursor.snapshot)
    before = "(timestamp > ? OR (timestamp = ? AND id >= ?))"
    where = f"{where} AND {before}" if where else f" WHERE {before}"
    return "SELECT count(*) FROM events" + where, [*params, cursor.timestamp, cursor.timestamp, cursor.id]
