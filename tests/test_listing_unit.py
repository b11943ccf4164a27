"""server/listing.py without a server: the SQL and parameters of every filter combination, run against a real
in-memory SQLite with the real schema and compared with plain-Python expectations; cursor encoding."""

from __future__ import annotations

import base64
import contextlib
import itertools
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest

from analytics import sqlitelib
from server.listing import (
    Cursor,
    EventFilter,
    count_query,
    cursor_query,
    page_query,
    position_query,
    where_clause,
)
from server.store import migrate

# (EventFilter field, the SQL condition it must add, the value used in the tests)
FILTER_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("shop_id", "shop_id = ?", "a"),
    ("session_id", "session_id = ?", "x"),
    ("event_type", "event_type = ?", "page_view"),
    ("start_ms", "timestamp >= ?", 1_020),
    ("end_ms", "timestamp < ?", 1_080),
)
COMBOS = [combo for n in range(len(FILTER_FIELDS) + 1) for combo in itertools.combinations(FILTER_FIELDS, n)]


def combo_id(combo: tuple[tuple[str, str, Any], ...]) -> str:
    return "+".join(field for field, _, _ in combo) or "none"


def make_filter(combo: tuple[tuple[str, str, Any], ...]) -> EventFilter:
    return EventFilter(**{field: value for field, _, value in combo})


@dataclass(frozen=True)
class Row:
    seq: int
    id: str
    shop_id: str
    session_id: str
    event_type: str
    timestamp: int


def matches(row: Row, flt: EventFilter, snapshot: int | None = None) -> bool:
    return (
        (flt.shop_id is None or row.shop_id == flt.shop_id)
        and (flt.session_id is None or row.session_id == flt.session_id)
        and (flt.event_type is None or row.event_type == flt.event_type)
        and (flt.start_ms is None or row.timestamp >= flt.start_ms)
        and (flt.end_ms is None or row.timestamp < flt.end_ms)
        and (snapshot is None or row.seq <= snapshot)
    )


def expected_order(rows: list[Row], flt: EventFilter, snapshot: int | None = None) -> list[str]:
    chosen = [row for row in rows if matches(row, flt, snapshot)]
    chosen.sort(key=lambda row: (row.timestamp, row.id), reverse=True)
    return [row.id for row in chosen]


def make_rows(rng: random.Random, count: int, first_seq: int = 1) -> list[Row]:
    rows: list[Row] = []
    timestamps = [rng.randrange(1_000, 1_100) for _ in range(count // 2)]
    for n in range(count):
        rows.append(Row(
            seq=first_seq + n,
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            shop_id=rng.choice("ab"),
            session_id=rng.choice("xy"),
            event_type=rng.choice(("page_view", "purchase")),
            # Half the rows reuse a timestamp, so ties on timestamp are common.
            timestamp=rng.choice(timestamps) if n % 2 else rng.randrange(1_000, 1_100),
        ))
    return rows


@contextlib.contextmanager
def database(rows: list[Row]) -> Iterator[sqlitelib.Connection]:
    with contextlib.closing(sqlitelib.connect(":memory:", isolation_level=None)) as conn:
        migrate(conn)
        insert(conn, rows)
        yield conn


def insert(conn: sqlitelib.Connection, rows: list[Row]) -> None:
    conn.executemany(
        "INSERT INTO events (seq, id, shop_id, session_id, event_type, event_name, properties, timestamp, "
        "created_at, device, is_bot, visitor_hash) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, 0, 'desktop', 0, 'h')",
        [(r.seq, r.id, r.shop_id, r.session_id, r.event_type, r.event_type, r.timestamp) for r in rows],
    )


def ids(rows: list[Any]) -> list[str]:
    return [row[0] for row in rows]  # EVENT_COLUMNS starts with id


# ---- SQL text and parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
@pytest.mark.parametrize("snapshot", [None, 42])
def test_where_clause_has_one_condition_and_one_param_per_filter(
    combo: tuple[tuple[str, str, Any], ...], snapshot: int | None
) -> None:
    flt = make_filter(combo)
    where, params = where_clause(flt, snapshot)
    conditions = [condition for _, condition, _ in combo]
    values: list[Any] = [value for _, _, value in combo]
    if snapshot is not None:
        conditions.append("seq <= ?")
        values.append(snapshot)
    if not conditions:
        assert (where, params) == ("", [])
        return
    assert where == " WHERE " + " AND ".join(conditions)
    assert params == values


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_every_query_binds_exactly_its_placeholders(combo: tuple[tuple[str, str, Any], ...]) -> None:
    flt = make_filter(combo)
    cursor = Cursor(1_050, "5" * 8 + "-0000-4000-8000-" + "0" * 12, 9, flt.fingerprint())
    for sql, params in (
        count_query(flt),
        count_query(flt, 9),
        page_query(flt, 20, 40),
        cursor_query(flt, cursor, 20),
        position_query(flt, cursor),
    ):
        # Values are always bound, never pasted into the SQL.
        assert sql.count("?") == len(params), sql
        for _, _, value in combo:
            assert value in params
            assert repr(value) not in sql


def test_page_query_orders_newest_first_and_asks_one_extra_row() -> None:
    sql, params = page_query(EventFilter(shop_id="a"), 20, 40)
    assert sql.startswith("SELECT id, ")
    assert sql.endswith(" WHERE shop_id = ? ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?")
    assert params == ["a", 21, 40]


def test_cursor_query_continues_strictly_after_the_cursor_within_the_snapshot() -> None:
    cursor = Cursor(1_050, "abc", 7, "f")
    sql, params = cursor_query(EventFilter(), cursor, 10)
    assert sql.endswith(
        " WHERE seq <= ? AND timestamp <= ? AND (timestamp < ? OR (timestamp = ? AND id < ?))"
        " ORDER BY timestamp DESC, id DESC LIMIT ?"
    )
    assert params == [7, 1_050, 1_050, 1_050, "abc", 11]
    sql, params = cursor_query(EventFilter(shop_id="a"), cursor, 10)
    assert " WHERE shop_id = ? AND seq <= ? AND timestamp <= ? AND (timestamp < ?" in sql
    assert params == ["a", 7, 1_050, 1_050, 1_050, "abc", 11]


def test_count_query_without_filters_counts_everything() -> None:
    assert count_query(EventFilter()) == ("SELECT count(*) FROM events", [])
    assert count_query(EventFilter(), 5) == ("SELECT count(*) FROM events WHERE seq <= ?", [5])


# ---- the SQL against real SQLite ---------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_queries_select_what_plain_python_selects(combo: tuple[tuple[str, str, Any], ...]) -> None:
    rng = random.Random(combo_id(combo))
    rows = make_rows(rng, 80)
    flt = make_filter(combo)
    expected = expected_order(rows, flt)
    with database(rows) as conn:
        sql, params = count_query(flt)
        assert conn.execute(sql, params).fetchone()[0] == len(expected)
        sql, params = count_query(flt, 40)
        assert conn.execute(sql, params).fetchone()[0] == len(expected_order(rows, flt, 40))

        # Pages by offset: each page holds `limit` rows plus one more when a next page exists.
        limit = 6
        pages: list[str] = []
        for offset in range(0, len(expected) + limit, limit):
            sql, params = page_query(flt, limit, offset)
            got = ids(conn.execute(sql, params).fetchall())
            assert got == expected[offset:offset + limit + 1]
            pages.extend(got[:limit])
        assert pages == expected


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_cursor_walk_returns_the_snapshot_exactly_once_while_rows_arrive(
    combo: tuple[tuple[str, str, Any], ...]
) -> None:
    rng = random.Random("walk" + combo_id(combo))
    rows = make_rows(rng, 70)
    flt = make_filter(combo)
    snapshot = max(row.seq for row in rows)
    expected = expected_order(rows, flt)
    limit = 4
    with database(rows) as conn:
        sql, params = page_query(flt, limit, 0)
        page = ids(conn.execute(sql, params).fetchall())
        walked = page[:limit]
        next_seq = snapshot + 1
        while len(page) > limit:
            last_id = walked[-1]
            last_ts = next(row.timestamp for row in rows if row.id == last_id)
            # New rows arrive: some tie with the cursor's timestamp on both sides of its id, some land in the
            # part of the range still to be read, some are newer than everything.
            arriving = make_rows(rng, 6, first_seq=next_seq)
            arriving = [
                replace(arriving[0], timestamp=last_ts, id="0" * 8 + arriving[0].id[8:]),
                replace(arriving[1], timestamp=last_ts, id="f" * 8 + arriving[1].id[8:]),
                replace(arriving[2], timestamp=5_000),
                *arriving[3:],
            ]
            arriving = [replace(row, shop_id=flt.shop_id or row.shop_id, session_id=flt.session_id or row.session_id,
                                event_type=flt.event_type or row.event_type) for row in arriving]
            insert(conn, arriving)
            rows.extend(arriving)
            next_seq += len(arriving)

            cursor = Cursor.decode(Cursor(last_ts, last_id, snapshot, flt.fingerprint()).encode())
            sql, params = position_query(flt, cursor)
            assert conn.execute(sql, params).fetchone()[0] == len(walked)
            sql, params = cursor_query(flt, cursor, limit)
            page = ids(conn.execute(sql, params).fetchall())
            walked.extend(page[:limit])
    assert walked == expected
    assert len(set(walked)) == len(walked)


# ---- cursors ------------------------------------------------------------------------------------------------

CURSORS = [
    Cursor(1_795_666_517_123, "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d", 137, EventFilter().fingerprint()),
    Cursor(946_684_800_000, "ffffffff-ffff-4fff-bfff-ffffffffffff", 1, EventFilter(shop_id="s1").fingerprint()),
    Cursor(0, "00000000-0000-4000-8000-000000000000", 0, "0"),
    Cursor(2**53, "a", 2**62, "x" * 40),
]


@pytest.mark.parametrize("cursor", CURSORS)
def test_cursor_round_trips_through_an_url_safe_string(cursor: Cursor) -> None:
    encoded = cursor.encode()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encoded), encoded
    assert Cursor.decode(encoded) == cursor


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _doc(**fields: Any) -> str:
    doc: dict[str, Any] = {"t": 1_000, "i": "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d", "s": 5, "f": "abc"}
    doc.update(fields)
    return _b64(orjson.dumps({k: v for k, v in doc.items() if v is not _MISSING}))


_MISSING = object()

GARBAGE_CURSORS = {
    "empty": "",
    "punctuation": "!!!",
    "not-base64": "this is not a cursor",
    "non-ascii": "é" * 8,
    "truncated": CURSORS[0].encode()[:-6],
    "not-json": _b64(b"hello world"),
    "json-list": _b64(b"[1, 2, 3, 4]"),
    "json-number": _b64(b"42"),
    "json-null": _b64(b"null"),
    "missing-t": _doc(t=_MISSING),
    "missing-i": _doc(i=_MISSING),
    "missing-s": _doc(s=_MISSING),
    "missing-f": _doc(f=_MISSING),
    "t-not-a-number": _doc(t="soon"),
    "s-not-a-number": _doc(s="latest"),
    "t-null": _doc(t=None),
    "t-float-out-of-range": _doc(t=1e300),
    "t-int-out-of-range": _b64(b'{"t": 99999999999999999999999, "i": "x", "s": 5, "f": "abc"}'),
    "s-float-out-of-range": _doc(s=1e300),
    "i-not-a-string": _doc(i=[1, 2]),
    "f-not-a-string": _doc(f=None),
}


@pytest.mark.parametrize("value", list(GARBAGE_CURSORS.values()), ids=list(GARBAGE_CURSORS))
def test_garbage_cursor_raises_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        Cursor.decode(value)


def test_fingerprint_changes_with_every_filter_and_only_with_filters() -> None:
    base = EventFilter("s1", "sess", "page_view", 1_000, 2_000)
    assert base.fingerprint() == EventFilter("s1", "sess", "page_view", 1_000, 2_000).fingerprint()
    variants = [
        EventFilter(None, "sess", "page_view", 1_000, 2_000),
        EventFilter("s2", "sess", "page_view", 1_000, 2_000),
        EventFilter("s1", None, "page_view", 1_000, 2_000),
        EventFilter("s1", "other", "page_view", 1_000, 2_000),
        EventFilter("s1", "sess", "purchase", 1_000, 2_000),
        EventFilter("s1", "sess", None, 1_000, 2_000),
        EventFilter("s1", "sess", "page_view", 1_001, 2_000),
        EventFilter("s1", "sess", "page_view", None, 2_000),
        EventFilter("s1", "sess", "page_view", 1_000, 1_999),
        EventFilter("s1", "sess", "page_view", 1_000, None),
        EventFilter(),
    ]
    prints = {flt.fingerprint() for flt in variants}
    assert base.fingerprint() not in prints
    assert len(prints) == len(variants)
