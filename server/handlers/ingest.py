"""POST /api/events: decode, validate, hand to the writer, answer after the commit."""

from __future__ import annotations

import sqlite3

from aiohttp import web

from server.context import client_ip, country_of
from server.errors import ApiError, json_response
from server.events import (
    NewEvent,
    RequestInfo,
    decode_body,
    parse_body,
    parse_events,
    utc_day,
)
from server.keys import CLOCK, SETTINGS, STORE
from server.store import SELECT_EVENT_BY_ID


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    now_ms = request.app[CLOCK]()
    content_type = request.headers.get("Content-Type")
    data = decode_body(await request.read(), content_type, request.headers.get("Content-Encoding"))
    body = parse_body(data)
    headers = request.headers
    info = RequestInfo(
        user_agent=headers.get("User-Agent", ""),
        client_ip=client_ip(request.remote, headers.get("X-Forwarded-For"), settings.trust_proxy),
        country=country_of(headers, settings.trust_proxy),
        now_ms=now_ms,
        salt=await store.salt_for(utc_day(now_ms)),
    )
    events = parse_events(body, info)
    try:
        # StoreOverloaded and StoreClosed are ApiErrors (503 overloaded) and pass through as they are.
        created = await store.insert_events(events)
    except sqlite3.Error:
        raise ApiError(503, "overloaded", "Storage cannot take writes right now: retry later; nothing from this "
                       "request was stored.", headers={"Retry-After": "5"}) from None

    if body.single:
        event = events[0]
        if created[0]:
            return json_response(event.to_json(), status=201)
        row = await store.fetchone(SELECT_EVENT_BY_ID, (event.id,))
        stored = NewEvent.from_row(row) if row is not None else event
        return json_response(stored.to_json(), status=200)
    accepted = sum(created)
    return json_response(
        {
            "accepted": accepted,
            "duplicates": len(created) - accepted,
            "results": [
                {"id": event.id, "status": "created" if new else "duplicate"}
                for event, new in zip(events, created, strict=True)
            ],
        },
        status=201,
    )
