"""Query and body parameters the read routes share: the shop a request may read, and its timezone."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from analytics.timerange import resolve_timezone
from server.auth import scoped_shop
from server.errors import validation_error
from server.events import is_valid_shop_id

SHOP_RULE = "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'"


def shop_param(request: web.Request, value: Any) -> str | None:
    """A valid shopId that the request's token may read (None: every shop, admin only)."""
    if value is not None and (not isinstance(value, str) or not is_valid_shop_id(value)):
        raise validation_error("shopId", SHOP_RULE)
    return scoped_shop(request, value)


def timezone_param(value: Any) -> str:
    """An IANA timezone name (None: UTC), or a 400 naming `timezone`."""
    if value is not None and not isinstance(value, str):
        raise validation_error("timezone", "must be an IANA timezone name such as Europe/Berlin")
    try:
        return resolve_timezone(value).key
    except ValueError as exc:
        raise validation_error("timezone", str(exc)) from None
