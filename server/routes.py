"""The one route table, with each route's CORS policy."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from server.handlers import events, health, ingest, tokens
from server.settings import Settings

INGEST_MAX_AGE = 86400  # browsers cache the ingestion preflight for a day


def setup_routes(app: web.Application, settings: Settings) -> None:
    router = app.router
    public = [
        router.add_post("/api/events", ingest.post_events),
    ]
    dashboard = [
        router.add_get("/api/events", events.list_events),
        router.add_get("/api/events/{id}", events.get_event),
        router.add_post("/api/tokens", tokens.post_token),
        router.add_get("/api/tokens", tokens.list_tokens),
        router.add_delete("/api/tokens/{id}", tokens.revoke_token),
        router.add_get("/api/openapi.json", health.openapi),
    ]
    router.add_get("/healthz", health.healthz)

    cors = aiohttp_cors.setup(app)
    anyone = {
        "*": aiohttp_cors.ResourceOptions(
            allow_credentials=False,
            allow_headers=("Content-Type", "Content-Encoding"),
            allow_methods=("POST",),
            max_age=INGEST_MAX_AGE,
        )
    }
    dashboards = {
        origin: aiohttp_cors.ResourceOptions(
            allow_credentials=True,
            allow_headers=("Authorization", "Content-Type"),
            expose_headers=("Retry-After", "X-Request-Id"),
            allow_methods=("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
            max_age=600,
        )
        for origin in settings.cors_origins
    }
    for route in public:
        cors.add(route, anyone)
    for route in dashboard:
        cors.add(route, dashboards)
