"""Registered shops: their validation, storage, the in-memory registry ingestion reads, and origin checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
import orjson

from analytics.timerange import resolve_timezone
from server.errors import ApiError
from server.events import format_ms, is_valid_shop_id
from server.store import Store

SELECT_SHOPS = ("SELECT id, name, timezone, currency, domains, created_at, updated_at FROM shops "
                "ORDER BY id")
INSERT_SHOP = ("INSERT INTO shops (id, name, timezone, currency, domains, created_at, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING")
UPDATE_SHOP = "UPDATE shops SET name = ?, timezone = ?, currency = ?, domains = ?, updated_at = ? WHERE id = ?"

MAX_DOMAINS = 50
# A hostname, optionally with a leading "*." for "this domain and every subdomain".
_DOMAIN_RE = re.compile(r"^(\*\.)?(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}"
                        r"[a-z0-9])?)*$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
FIELDS = ("name", "timezone", "currency", "domains")


@dataclass(frozen=True, slots=True)
class Shop:
    id: str
    name: str
    timezone: str = "UTC"
    currency: str = "USD"
    domains: tuple[str, ...] = ()
    created_at: int = 0
    updated_at: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "timezone": self.timezone,
            "currency": self.currency,
            "domains": list(self.domains),
            "createdAt": format_ms(self.created_at),
            "updatedAt": format_ms(self.updated_at),
        }

    def allows_host(self, host: str | None) -> bool:
        """True when the shop lists no domains, or the host is one of them (or a subdomain of a "*." entry)."""
        if not self.domains:
            return True
        if not host:
            return False
        host = host.lower().rstrip(".")
        for domain in self.domains:
            if domain.startswith("*."):
                base = domain[2:]
                if host == base or host.endswith("." + base):
                    return True
            elif host == domain:
                return True
        return False

    @classmethod
    def from_row(cls, row: Any) -> Shop:
        return cls(row[0], row[1], row[2], row[3], tuple(orjson.loads(row[4])), row[5], row[6])


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def validate_fields(doc: Mapping[str, Any], *, partial: bool) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The shop fields present in a request body, normalised, and one problem per bad field."""
    values: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    if "name" in doc or not partial:
        name = doc.get("name")
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200 or not name.isprintable():
            problems.append(_problem("name", "must be 1 to 200 printable characters"))
        else:
            values["name"] = name.strip()
    if "timezone" in doc:
        tz = doc["timezone"]
        try:
            if not isinstance(tz, str):
                raise ValueError
            values["timezone"] = resolve_timezone(tz).key
        except ValueError:
            problems.append(_problem("timezone", "must be an IANA timezone name such as Europe/Berlin"))
    if "currency" in doc:
        currency = doc["currency"]
        if not isinstance(currency, str) or not _CURRENCY_RE.fullmatch(currency.strip().upper()):
            problems.append(_problem("currency", "must be a 3-letter ISO 4217 code such as EUR"))
        else:
            values["currency"] = currency.strip().upper()
    if "domains" in doc:
        domains = doc["domains"]
        if not isinstance(domains, list) or len(domains) > MAX_DOMAINS:
            problems.append(_problem("domains", f"must be a list of at most {MAX_DOMAINS} host names"))
        else:
            cleaned: list[str] = []
            for i, domain in enumerate(domains):
                value = domain.strip().lower().rstrip(".") if isinstance(domain, str) else ""
                if not _DOMAIN_RE.fullmatch(value):
                    problems.append(_problem(f"domains[{i}]", "must be a host name such as shop.example.com, "
                                             "or *.example.com for a domain and its subdomains (no scheme, no path)"))
                elif value not in cleaned:
                    cleaned.append(value)
            values["domains"] = tuple(cleaned)
    return values, problems


def request_host(origin: str | None, referer: str | None, url: str | None) -> str | None:
    """Where an event came from: the Origin header, else the Referer, else the event's own url."""
    for candidate in (origin, referer, url):
        if candidate and candidate != "null":
            try:
                host = urlsplit(candidate).hostname
            except ValueError:
                host = None
            if host:
                return host
    return None


class ShopRegistry:
    """Every registered shop, held in memory: ingestion checks each event against it without touching SQLite."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._shops: dict[str, Shop] = {}

    async def load(self) -> None:
        rows = await self._store.fetchall(SELECT_SHOPS)
        self._shops = {row[0]: Shop.from_row(row) for row in rows}

    def get(self, shop_id: str | None) -> Shop | None:
        return self._shops.get(shop_id) if shop_id is not None else None

    def timezone_of(self, shop_id: str) -> str:
        """A registered shop's timezone, else UTC: the default for its stats, insights and chat."""
        shop = self._shops.get(shop_id)
        return shop.timezone if shop is not None else "UTC"

    def all(self) -> list[Shop]:
        return sorted(self._shops.values(), key=lambda shop: shop.id)

    def __len__(self) -> int:
        return len(self._shops)

    async def create(self, shop_id: str, values: dict[str, Any], now_ms: int) -> Shop:
        if not is_valid_shop_id(shop_id):
            raise ApiError(400, "validation_failed", "id: must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'.",
                           [_problem("id", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")])
        shop = replace(Shop(shop_id, values.get("name", shop_id)), created_at=now_ms, updated_at=now_ms,
                       **{k: v for k, v in values.items() if k != "name"})

        async def insert(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(INSERT_SHOP, _params(shop))
            return cursor.rowcount == 1

        if not await self._store.write(insert):
            raise ApiError(400, "validation_failed",
                           f"id: shop {shop_id!r} already exists; change it with PATCH /api/shops/{shop_id}.",
                           [_problem("id", "already exists")])
        self._shops[shop_id] = shop
        return shop

    async def update(self, shop_id: str, values: dict[str, Any], now_ms: int) -> Shop:
        current = self._shops.get(shop_id)
        if current is None:
            raise ApiError(404, "not_found", f"No shop {shop_id!r}: register it with POST /api/shops.")
        shop = replace(current, updated_at=now_ms, **values)

        async def update(conn: aiosqlite.Connection) -> None:
            await conn.execute(UPDATE_SHOP, (*_params(shop)[1:5], shop.updated_at, shop.id))

        await self._store.write(update)
        self._shops[shop_id] = shop
        return shop


def _params(shop: Shop) -> tuple[Any, ...]:
    return (shop.id, shop.name, shop.timezone, shop.currency, orjson.dumps(list(shop.domains)).decode(),
            shop.created_at, shop.updated_at)
