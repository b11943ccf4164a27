"""The one route table, with each route's CORS policy."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from server.handlers import chat, dashboard, deletion, events, health, ingest, shops, stats, tokens, tracker
from server.handlers import insights as insights_handlers
from server.settings import Settings

INGEST_MAX_AGE = 86400  # browsers cache the ingestion preflight for a day


def setup_routes(app: web.Application, settings: Settings) -> None:
    cors = aiohttp_cors.setup(app)
    anyone = {
        "*": aiohttp_cors.ResourceOptions(
            allow_credentials=False,
            allow_headers=("Content-Type", "Content-Encoding"),
            allow_methods=("POST",),
            max_age=INGEST_MAX_AGE,
        )
    }
    # The tracker script, for <script crossorigin> tags on any shop; no preflight (a simple GET never has one).
    script_anyone = {
        "*": aiohttp_cors.ResourceOptions(allow_credentials=False, allow_methods=("GET",), expose_headers=("ETag",))
    }
    dashboards = {
        origin: aiohttp_cors.ResourceOptions(
            allow_credentials=True,
            allow_headers=("Authorization", "Content-Type"),
            expose_headers=("Retry-After",),
            allow_methods=("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
            max_age=600,
        )
        for origin in settings.cors_origins
    }

    # (path, method, handler, CORS policy). Every route gets its own policy on a resource whose default allows
    # nothing, so the public POST /api/events can never lend its any-origin policy to GET /api/events.
    table = [
        ("/api/events", "POST", ingest.post_events, anyone),
        ("/api/events", "GET", events.list_events, dashboards),
        ("/api/events/{id}", "GET", events.get_event, dashboards),
        ("/api/tokens", "POST", tokens.post_token, dashboards),
        ("/api/tokens", "GET", tokens.list_tokens, dashboards),
        ("/api/tokens/{id}", "DELETE", tokens.revoke_token, dashboards),
        ("/api/stats", "GET", stats.get_stats, dashboards),
        ("/api/query", "POST", stats.post_query, dashboards),
        ("/api/openapi.json", "GET", health.openapi, dashboards),
        ("/healthz", "GET", health.healthz, dashboards),
        ("/metrics", "GET", health.metrics, dashboards),
        ("/api/shops", "GET", shops.list_shops, dashboards),
        ("/api/shops", "POST", shops.post_shop, dashboards),
        ("/api/shops/{id}", "GET", shops.get_shop, dashboards),
        ("/api/shops/{id}", "PATCH", shops.patch_shop, dashboards),
        ("/api/chat", "POST", chat.post_chat, dashboards),
        ("/api/chat/{conversationId}", "GET", chat.get_chat, dashboards),
        ("/api/insights", "GET", insights_handlers.list_insights_route, dashboards),
        ("/api/insights/generate", "POST", insights_handlers.post_generate, dashboards),
        ("/api/events", "DELETE", deletion.delete_events, dashboards),
        ("/tracker.js", "GET", tracker.get_tracker, script_anyone),
        ("/", "GET", dashboard.index, dashboards),
        ("/dashboard/{path:.+}", "GET", dashboard.asset, dashboards),
    ]
    resources: dict[str, web.Resource] = {}
    for path, method, handler, policy in table:
        resource = resources.get(path)
        if resource is None:
            resource = resources[path] = app.router.add_resource(path)
            cors.add(resource, {})
        cors.add(resource.add_route(method, handler), policy)
