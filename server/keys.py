"""Every typed application and request key, in one place, with the request's Principal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from analytics.llm import LLM
from analytics.mirror import Mirror
from analytics.sandbox import SandboxCache
from analytics.stats import JoinOrderSwitch
from analytics.warehouse import Warehouse
from server.limits import Limits, TokenBuckets
from server.settings import Settings
from server.shops import ShopRegistry
from server.store import Store
from server.telemetry import Telemetry
from server.tracker import TrackerAsset

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ADMIN_TOKEN = web.AppKey("admin_token", str)
WAREHOUSE = web.AppKey("warehouse", Warehouse)
MIRROR = web.AppKey("mirror", Mirror)
# Shared by the reports that run side by side on the warehouse's read cursors (see JoinOrderSwitch).
JOIN_ORDER = web.AppKey("join_order", JoinOrderSwitch)
TELEMETRY = web.AppKey("telemetry", Telemetry)
SHOPS = web.AppKey("shops", ShopRegistry)
LIMITS = web.AppKey("limits", Limits)
TRACKER = web.AppKey("tracker", TrackerAsset)
# Injected clock: epoch milliseconds. Tests pin it; production uses the wall clock.
Clock = Callable[[], int]
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
# The configured LLM adapter, or None when no provider is configured (insights use templates, chat answers 503).
LLM_CLIENT: web.AppKey[LLM | None] = web.AppKey("llm")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a shop token's shop, or the admin (shop_id None), who reads every shop."""

    shop_id: str | None
    token_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.shop_id is None


ADMIN = Principal(shop_id=None, token_id=None)
PRINCIPAL = web.RequestKey("principal", Principal)
# Chat: sandboxes per shop (analytics/sandbox.py) and the per-shop request limiter.
SANDBOXES = web.AppKey("sandboxes", SandboxCache)
CHAT_LIMITER = web.AppKey("chat_limiter", TokenBuckets)
