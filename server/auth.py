"""Who is asking: the admin token, hashed shop tokens, the auth middleware and shop scoping."""

from __future__ import annotations

import hashlib
import logging
import secrets

import aiosqlite
from aiohttp import web

from server.errors import ApiError, Handler
from server.keys import ADMIN, ADMIN_TOKEN, LIMITS, PRINCIPAL, SETTINGS, STORE, TELEMETRY, Principal
from server.limits import RateLimited
from server.settings import Settings
from server.store import Store, secure_write

log = logging.getLogger("flowtel.auth")

TOKEN_PREFIX = "ft_"

SELECT_TOKEN_BY_HASH = "SELECT id, shop_id FROM tokens WHERE token_hash = ?"
INSERT_TOKEN = "INSERT INTO tokens (id, shop_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)"
SELECT_TOKENS = "SELECT id, shop_id, name, created_at FROM tokens ORDER BY created_at, id"
SELECT_TOKENS_FOR_SHOP = "SELECT id, shop_id, name, created_at FROM tokens WHERE shop_id = ? ORDER BY created_at, id"
DELETE_TOKEN = "DELETE FROM tokens WHERE id = ?"

# Routes anyone may call; everything else under /api needs a token.
PUBLIC_ROUTES = {("POST", "/api/events"), ("GET", "/api/openapi.json"), ("HEAD", "/api/openapi.json")}




def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; a slow KDF would only slow every request.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def resolve_admin_token(settings: Settings) -> str:
    """FLOWTEL_ADMIN_TOKEN, else the saved data/admin-token, else a new one saved with mode 0600."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.admin_token_path
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved
    token = new_token()
    secure_write(path, token + "\n")
    log.warning("generated the admin token and saved it to %s (mode 0600): %s", path, token)
    return token


async def create_token(conn: aiosqlite.Connection, *, token_id: str, shop_id: str, name: str,
                       created_at: int) -> str:
    """Store a new shop token's hash and return the secret, which is never stored."""
    token = new_token()
    await conn.execute(INSERT_TOKEN, (token_id, shop_id, name, hash_token(token), created_at))
    return token


async def delete_token(conn: aiosqlite.Connection, token_id: str) -> bool:
    cursor = await conn.execute(DELETE_TOKEN, (token_id,))
    return cursor.rowcount > 0


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(token: str, admin_token: str, store: Store) -> Principal | None:
    if secrets.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    row = await store.fetchone(SELECT_TOKEN_BY_HASH, (hash_token(token),))
    if row is None:
        return None
    return Principal(shop_id=row[1], token_id=row[0])


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request.get(PRINCIPAL, ADMIN)
    return principal


def require_admin(request: web.Request) -> None:
    if not principal_of(request).is_admin:
        raise ApiError(403, "forbidden", "This route needs the admin token; a shop token cannot use it.")


def scoped_shop(request: web.Request, requested: str | None) -> str | None:
    """The shop a request may read: a shop token reads only its own shop; the admin reads any (None = all)."""
    principal = principal_of(request)
    if principal.is_admin:
        return requested
    if requested is not None and requested != principal.shop_id:
        raise ApiError(403, "forbidden", f"This token reads shop {principal.shop_id!r} only, not {requested!r}.")
    return principal.shop_id


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if (
        request.match_info.http_exception is not None  # unknown route or method: let it be a 404/405
        or not path.startswith("/api/")
        or request.method == "OPTIONS"
        or (request.method, path) in PUBLIC_ROUTES
    ):
        return await handler(request)
    if not request.app[SETTINGS].auth_enabled:
        _limit_reads(request, f"ip:{request.remote}")
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "Send a token as 'Authorization: Bearer <token>'.",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = await authenticate(token, request.app[ADMIN_TOKEN], request.app[STORE])
    if principal is None:
        raise ApiError(401, "unauthorized", "The token is unknown or revoked: use a valid token.",
                       headers={"WWW-Authenticate": "Bearer"})
    request[PRINCIPAL] = principal
    _limit_reads(request, principal.token_id or "admin")
    return await handler(request)


def _limit_reads(request: web.Request, key: str) -> None:
    buckets = request.app[LIMITS].read
    if buckets is not None:
        wait = buckets.take(key)
        if wait:
            request.app[TELEMETRY].rate_limited.labels("read").inc()
            raise RateLimited("with this token", wait)
