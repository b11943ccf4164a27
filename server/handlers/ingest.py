"""POST /api/events: decode, validate, hand to the writer, answer after the commit."""

from __future__ import annotations

from aiohttp import web

from analytics import sqlitelib
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
from server.keys import CLOCK, LIMITS, SETTINGS, SHOPS, STORE, TELEMETRY
from server.limits import RateLimited, read_body
from server.shops import request_host
from server.store import SELECT_EVENT_BY_ID


def _check_shops(request: web.Request, events: list[NewEvent], single: bool) -> None:
    """Registered shops' domain lists, FLOWTEL_REQUIRE_KNOWN_SHOPS and the per-shop event rate, before any write."""
    registry = request.app[SHOPS]
    require_known = request.app[SETTINGS].require_known_shops
    counts: dict[str, int] = {}
    unknown: list[dict[str, object]] = []
    headers = request.headers
    for index, event in enumerate(events):
        counts[event.shop_id] = counts.get(event.shop_id, 0) + 1
        shop = registry.get(event.shop_id)
        if shop is None:
            if require_known:
                detail: dict[str, object] = {"field": "shopId",
                                             "message": f"shop {event.shop_id!r} is not registered (POST /api/shops)"}
                unknown.append(detail if single else {"index": index, **detail})
            continue
        if shop.domains:
            host = request_host(headers.get("Origin"), headers.get("Referer"), event.url)
            if not shop.allows_host(host):
                raise ApiError(403, "forbidden", f"Shop {shop.id!r} takes events only from its domains "
                               f"({', '.join(shop.domains)}), not from {host or 'an unknown origin'!r}.")
    if unknown:
        first = unknown[0]
        where = f"event {first['index']}: " if "index" in first else ""
        raise ApiError(400, "validation_failed", f"{where}shopId {first['message']}.", unknown[:50])
    buckets = request.app[LIMITS].shop
    if buckets is not None:
        short = buckets.take_many(counts)
        if short is not None:
            request.app[TELEMETRY].rate_limited.labels("shop").inc()
            raise RateLimited(f"for shop {short[0]!r}", short[1])


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    now_ms = request.app[CLOCK]()
    peer = client_ip(request.remote, request.headers.get("X-Forwarded-For"), settings.trust_proxy)
    ip_buckets = request.app[LIMITS].ip
    if ip_buckets is not None:
        wait = ip_buckets.take(peer)
        if wait:
            request.app[TELEMETRY].rate_limited.labels("ip").inc()
            raise RateLimited("from this address", wait)
    content_type = request.headers.get("Content-Type")
    raw = await read_body(request, settings.body_timeout)
    data = decode_body(raw, content_type, request.headers.get("Content-Encoding"))
    body = parse_body(data)
    headers = request.headers
    info = RequestInfo(
        user_agent=headers.get("User-Agent", ""),
        client_ip=peer,
        country=country_of(headers, settings.trust_proxy),
        now_ms=now_ms,
        salt=await store.salt_for(utc_day(now_ms)),
    )
    events = parse_events(body, info)
    _check_shops(request, events, body.single)
    try:
        # StoreOverloaded and StoreClosed are ApiErrors (503 overloaded) and pass through as they are.
        created = await store.insert_events(events)
    except sqlitelib.Error:
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
