"""DELETE /api/events: erase one shop's events by id, session (optionally with their visitors) or all of them."""

from __future__ import annotations

import orjson
from aiohttp import web

from server.auth import principal_of, scoped_shop
from server.errors import json_response, validation_error
from server.events import is_uuid, is_valid_shop_id
from server.keys import STORE
from server.store import SELECT_SEQS_MATCHING, SELECT_SEQS_OF_SHOP

# Values per selector: a query string stays well under aiohttp's 8 KiB request-line limit.
MAX_SELECTORS = 50


_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _switch(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    value = _BOOLS.get(raw.strip().lower())
    if value is None:
        raise validation_error(name, "must be true or false")
    return value


def _values(request: web.Request, name: str) -> list[str]:
    values = request.query.getall(name, [])
    if len(values) > MAX_SELECTORS:
        raise validation_error(name, f"may be given at most {MAX_SELECTORS} times per request")
    return values


async def delete_events(request: web.Request) -> web.Response:
    query = request.query
    shop_values = query.getall("shopId", [])
    if len(shop_values) > 1:
        raise validation_error("shopId", "must be given once")
    shop_id = shop_values[0] if shop_values else None
    if shop_id is not None and not is_valid_shop_id(shop_id):
        raise validation_error("shopId", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
    if shop_id is None and principal_of(request).is_admin:
        raise validation_error("shopId", "is required: name the shop whose events to delete")
    shop_id = scoped_shop(request, shop_id)
    assert shop_id is not None  # a shop token's own shop, or the admin's named one

    session_ids = _values(request, "sessionId")
    if any(not 1 <= len(s) <= 128 for s in session_ids):
        raise validation_error("sessionId", "must be 1 to 128 characters")
    event_ids = _values(request, "eventId")
    if any(not is_uuid(e) for e in event_ids):
        raise validation_error("eventId", "must be an event id (a UUID)")
    include_visitors = _switch(request, "includeVisitors")
    delete_all = _switch(request, "all")

    store = request.app[STORE]
    if delete_all:
        if session_ids or event_ids:
            raise validation_error("all", "cannot be combined with sessionId or eventId: all=true deletes every "
                                          "event of the shop")
        deleted = await store.delete_matching(SELECT_SEQS_OF_SHOP, (shop_id,))
    elif session_ids or event_ids:
        deleted = await store.delete_matching(SELECT_SEQS_MATCHING, {
            "shop": shop_id,
            "ids": orjson.dumps([e.lower() for e in event_ids]).decode(),
            "sessions": orjson.dumps(session_ids).decode(),
            "visitors": include_visitors,
        })
    else:
        raise validation_error("sessionId", "name at least one sessionId or eventId, or set all=true to delete "
                                            "every event of the shop")
    return json_response({"shopId": shop_id, "deleted": deleted})
