"""GET/POST /api/shops and GET/PATCH /api/shops/{id}: shop settings (timezone, currency, allowed domains)."""

from __future__ import annotations

from aiohttp import web

from server.auth import principal_of, require_admin, scoped_shop
from server.errors import ApiError, json_response, read_json_object
from server.keys import CLOCK, SHOPS
from server.shops import validate_fields

EXAMPLE = ('{"id": "my-shop", "name": "My Shop", "timezone": "Europe/Berlin", "currency": "EUR", '
           '"domains": ["shop.example.com"]}')


def _reject(problems: list[dict[str, str]]) -> ApiError:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ApiError(400, "validation_failed", f"{first['field']}: {first['message']}{more}.", problems)


async def list_shops(request: web.Request) -> web.Response:
    registry = request.app[SHOPS]
    principal = principal_of(request)
    shops = registry.all() if principal.is_admin else [s for s in registry.all() if s.id == principal.shop_id]
    return json_response({"data": [shop.to_json() for shop in shops]})


async def get_shop(request: web.Request) -> web.Response:
    shop_id = scoped_shop(request, request.match_info["id"])
    shop = request.app[SHOPS].get(shop_id)
    if shop is None:
        raise ApiError(404, "not_found", f"No shop {shop_id!r} is registered.")
    return json_response(shop.to_json())


async def post_shop(request: web.Request) -> web.Response:
    require_admin(request)
    doc = await read_json_object(request, EXAMPLE)
    shop_id = doc.get("id", doc.get("shopId"))
    values, problems = validate_fields(doc, partial=True)
    if not isinstance(shop_id, str):
        problems.insert(0, {"field": "id", "message": "is required: 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'"})
    if problems:
        raise _reject(problems)
    assert isinstance(shop_id, str)
    shop = await request.app[SHOPS].create(shop_id, values, request.app[CLOCK]())
    return json_response(shop.to_json(), status=201)


async def patch_shop(request: web.Request) -> web.Response:
    require_admin(request)
    doc = await read_json_object(request, '{"timezone": "Europe/Berlin"}')
    values, problems = validate_fields(doc, partial=True)
    if problems:
        raise _reject(problems)
    shop = await request.app[SHOPS].update(request.match_info["id"], values, request.app[CLOCK]())
    return json_response(shop.to_json())
