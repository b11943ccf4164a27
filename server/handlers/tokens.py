"""POST/GET /api/tokens and DELETE /api/tokens/{id}: shop tokens, shown once, stored hashed."""

from __future__ import annotations

from typing import Any

import aiosqlite
from aiohttp import web

from server.auth import (
    SELECT_TOKENS,
    SELECT_TOKENS_FOR_SHOP,
    create_token,
    delete_token,
    principal_of,
    require_admin,
)
from server.errors import ApiError, json_response, read_json_object, validation_error
from server.events import format_ms, is_valid_shop_id, new_event_id
from server.keys import CLOCK, STORE


def _token_json(row: tuple[Any, ...] | Any) -> dict[str, Any]:
    return {"id": row[0], "shopId": row[1], "name": row[2], "createdAt": format_ms(row[3])}


async def post_token(request: web.Request) -> web.Response:
    require_admin(request)
    doc = await read_json_object(request, '{"shopId": "my-shop"}')
    shop_id = doc.get("shopId")
    if not isinstance(shop_id, str) or not is_valid_shop_id(shop_id):
        raise validation_error("shopId", "is required: 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
    name = doc.get("name", shop_id)
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.isprintable():
        raise validation_error("name", "must be 1 to 100 printable characters")
    token_id = new_event_id()
    created_at = request.app[CLOCK]()

    async def insert(conn: aiosqlite.Connection) -> str:
        return await create_token(conn, token_id=token_id, shop_id=shop_id, name=name, created_at=created_at)

    token = await request.app[STORE].write(insert)
    return json_response(
        {"id": token_id, "token": token, "shopId": shop_id, "name": name, "createdAt": format_ms(created_at)},
        status=201,
    )


async def list_tokens(request: web.Request) -> web.Response:
    principal = principal_of(request)
    store = request.app[STORE]
    if principal.is_admin:
        rows = await store.fetchall(SELECT_TOKENS)
    else:
        rows = await store.fetchall(SELECT_TOKENS_FOR_SHOP, (principal.shop_id,))
    return json_response({"data": [_token_json(row) for row in rows]})


async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    token_id = request.match_info["id"]

    async def remove(conn: aiosqlite.Connection) -> bool:
        return await delete_token(conn, token_id)

    if not await request.app[STORE].write(remove):
        raise ApiError(404, "not_found", f"No token with id {token_id!r}.")
    return web.Response(status=204)
