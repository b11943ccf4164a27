"""Shared fixtures: a real app over real SQLite files in tmp_path, a pinned clock, and the error-shape check."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.settings import Settings
from tests.fake_llm import FakeLLM

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
# 2026-11-26T04:15:17.123Z
NOW_MS = 1795666517123


class FakeClock:
    """An injected clock (epoch ms) that tests set and advance explicitly."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        database_path=tmp_path / "flowtel.db",
        duckdb_path=tmp_path / "flowtel.duckdb",
        admin_token=ADMIN_TOKEN,
        sqlite_synchronous="NORMAL",
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> ClientFactory:
    """Build a client over a fresh app; keyword arguments override Settings fields."""

    async def factory(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(tmp_path, **overrides), clock=clock))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def assert_error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Every failure has one shape: {"error": {"code", "message", "details"?}} with a JSON content type."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "details"}
    if status in (429, 503):
        assert "Retry-After" in resp.headers
    return error


@pytest.fixture
async def fake_llm(aiohttp_server: Any) -> FakeLLM:
    """The fake OpenAI/Anthropic server (tests/fake_llm.py), listening on loopback; `fake_llm.play(Reply(...))`."""
    fake = FakeLLM()
    server = await aiohttp_server(fake.make_app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake
