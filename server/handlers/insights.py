"""POST /api/insights/generate and GET /api/insights: parse, scope to the caller's shop, call server/insights.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from server.errors import json_response, read_json_object, validation_error
from server.handlers.events import MAX_LIMIT, _int_param
from server.insights import INSIGHT_TYPES, InsightFilter, generate_insights, last_complete_day, list_insights
from server.keys import CLOCK, LLM_CLIENT, MIRROR, SHOPS, STORE, WAREHOUSE
from server.params import shop_param, timezone_param


def _day(value: Any, latest: date) -> date:
    if value is None:
        return latest
    try:
        day = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise validation_error("date", "must be a date like 2026-11-25")
    if day > latest:
        raise validation_error("date", f"must be a complete day: {latest.isoformat()} or earlier in this timezone")
    if day.year < 2000:
        raise validation_error("date", "must be in 2000 or later")
    return day


async def post_generate(request: web.Request) -> web.Response:
    doc = await read_json_object(request, '{"shopId": "my-shop", "date": "2026-11-25"}')
    shop_id = shop_param(request, doc.get("shopId"))
    if shop_id is None:
        raise validation_error("shopId", "is required: insights are generated for one shop")
    # A registered shop's own timezone is the default (its days are the shop's days).
    shop = request.app[SHOPS].get(shop_id)
    tz_raw = doc.get("timezone")
    tz_name = timezone_param(tz_raw if tz_raw is not None or shop is None else shop.timezone)
    now_ms = request.app[CLOCK]()
    day = _day(doc.get("date"), last_complete_day(datetime.fromtimestamp(now_ms / 1000, UTC), tz_name))
    app = request.app
    insights = await generate_insights(app[STORE], app[WAREHOUSE], app[MIRROR], app[LLM_CLIENT], shop_id, day,
                                       tz_name, now_ms)
    return json_response({"data": insights}, status=201)


async def list_insights_route(request: web.Request) -> web.Response:
    query = request.query
    shop_id = shop_param(request, query.get("shopId"))
    insight_type = query.get("type")
    if insight_type is not None and insight_type not in INSIGHT_TYPES:
        raise validation_error("type", f"must be one of {', '.join(INSIGHT_TYPES)}")
    page = _int_param(query, "page", 1, 1, None)
    limit = _int_param(query, "limit", 20, 1, MAX_LIMIT)
    data, total = await list_insights(request.app[STORE], InsightFilter(shop_id, insight_type), limit,
                                      (page - 1) * limit)
    return json_response({"data": data, "total": total, "page": page, "limit": limit,
                          "totalPages": (total + limit - 1) // limit})
