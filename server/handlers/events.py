"""GET /api/events and GET /api/events/{id}: filtered, paginated reads scoped to the caller's shop."""

from __future__ import annotations

import re

from aiohttp import web
from multidict import MultiMapping

from analytics.timerange import parse_range, resolve_timezone, to_epoch_ms
from server.auth import principal_of, scoped_shop
from server.errors import ApiError, json_response, validation_error
from server.events import NewEvent, is_uuid, is_valid_shop_id, normalise_event_type
from server.keys import STORE
from server.listing import Cursor, EventFilter, count_query, cursor_query, page_query, position_query
from server.store import SELECT_EVENT_BY_ID, SELECT_MAX_SEQ

_INT_RE = re.compile(r"^\d{1,9}$")
MAX_LIMIT = 100


def _int_param(query: MultiMapping[str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    bound = f"{low} to {high}" if high is not None else f"at least {low}"
    if not _INT_RE.fullmatch(raw.strip()):
        raise validation_error(name, f"must be a whole number, {bound}")
    value = int(raw.strip())
    if value < low or (high is not None and value > high):
        raise validation_error(name, f"must be {bound}")
    return value


def parse_filter(request: web.Request) -> EventFilter:
    query = request.query
    shop_id = query.get("shopId")
    if shop_id is not None and not is_valid_shop_id(shop_id):
        raise validation_error("shopId", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
    shop_id = scoped_shop(request, shop_id)
    session_id = query.get("sessionId")
    if session_id is not None and not 1 <= len(session_id) <= 128:
        raise validation_error("sessionId", "must be 1 to 128 characters")
    event_type = query.get("eventType")
    if event_type is not None:
        if not 1 <= len(event_type) <= 100:
            raise validation_error("eventType", "must be 1 to 100 characters")
        event_type = normalise_event_type(event_type)
    try:
        tz = resolve_timezone(query.get("timezone"))
    except ValueError as exc:
        raise validation_error("timezone", str(exc)) from None
    try:
        start, end = parse_range(query.get("startDate"), query.get("endDate"), tz)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise validation_error(field, message) from None
    return EventFilter(shop_id, session_id, event_type, to_epoch_ms(start) if start else None,
                       to_epoch_ms(end) if end else None)


async def list_events(request: web.Request) -> web.Response:
    store = request.app[STORE]
    flt = parse_filter(request)
    query = request.query
    limit = _int_param(query, "limit", 20, 1, MAX_LIMIT)
    raw_cursor = query.get("cursor")
    if raw_cursor is not None and "page" in query:
        raise validation_error("cursor", "cannot be combined with page: use one or the other")
    cursor: Cursor | None = None
    if raw_cursor is not None:
        try:
            cursor = Cursor.decode(raw_cursor)
        except ValueError as exc:
            raise validation_error("cursor", str(exc)) from None
        if cursor.fingerprint != flt.fingerprint():
            raise validation_error("cursor", "was issued for other filters: repeat the filters of the first page")
    page = _int_param(query, "page", 1, 1, None)

    async with store.reader() as conn:
        # One read transaction, so the total, the page and the snapshot agree with each other.
        await conn.execute("BEGIN")
        try:
            if cursor is None:
                snapshot = (await (await conn.execute(SELECT_MAX_SEQ)).fetchone() or (0,))[0]
                sql, params = count_query(flt)
                total = (await (await conn.execute(sql, params)).fetchone() or (0,))[0]
                sql, params = page_query(flt, limit, (page - 1) * limit)
                rows = list(await (await conn.execute(sql, params)).fetchall())
            else:
                snapshot = cursor.snapshot
                sql, params = count_query(flt, snapshot)
                total = (await (await conn.execute(sql, params)).fetchone() or (0,))[0]
                sql, params = position_query(flt, cursor)
                before = (await (await conn.execute(sql, params)).fetchone() or (0,))[0]
                page = before // limit + 1
                sql, params = cursor_query(flt, cursor, limit)
                rows = list(await (await conn.execute(sql, params)).fetchall())
        finally:
            await conn.execute("COMMIT")

    events = [NewEvent.from_row(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = events[-1]
        next_cursor = Cursor(last.timestamp, last.id, snapshot, flt.fingerprint()).encode()
    return json_response(
        {
            "data": [event.to_json() for event in events],
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": (total + limit - 1) // limit,
            "nextCursor": next_cursor,
        }
    )


async def get_event(request: web.Request) -> web.Response:
    event_id = request.match_info["id"]
    not_found = ApiError(404, "not_found", f"No event with id {event_id!r} that this token can read.")
    if not is_uuid(event_id):
        raise not_found
    row = await request.app[STORE].fetchone(SELECT_EVENT_BY_ID, (event_id.lower(),))
    if row is None:
        raise not_found
    event = NewEvent.from_row(row)
    principal = principal_of(request)
    if not principal.is_admin and principal.shop_id != event.shop_id:
        raise not_found
    return json_response(event.to_json())
