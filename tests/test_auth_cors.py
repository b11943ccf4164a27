"""Contract section 2 through a real app: public routes, the admin token, hashed shop tokens and their scope,
FLOWTEL_AUTH=off, CORS for the tracker and dashboard route groups, and the error shape of 404/405."""

from __future__ import annotations

import contextlib
import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from server.settings import DEFAULT_CORS_ORIGINS
from tests.conftest import ADMIN_TOKEN, ClientFactory, assert_error

DASHBOARD = "http://localhost:5173"
SHOP_ORIGIN = "https://shop.example"
EVIL = "https://evil.example"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(client: TestClient) -> dict[str, list[str]]:
    """Three events per shop s1, s2, s3; returns the ids by shop."""
    batch = [
        {"shopId": shop, "sessionId": f"{shop}-sess", "eventType": "page_view",
         "timestamp": f"2026-11-2{n}T10:00:00.000Z"}
        for shop in ("s1", "s2", "s3") for n in range(3)
    ]
    resp = await client.post("/api/events", json=batch)
    assert resp.status == 201
    results = (await resp.json())["results"]
    ids: dict[str, list[str]] = {}
    for event, result in zip(batch, results, strict=True):
        ids.setdefault(event["shopId"], []).append(result["id"])
    return ids


async def create_token(client: TestClient, admin: dict[str, str], shop: str, name: str | None = None
                       ) -> dict[str, Any]:
    body: dict[str, Any] = {"shopId": shop}
    if name is not None:
        body["name"] = name
    resp = await client.post("/api/tokens", json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    created: dict[str, Any] = await resp.json()
    return created


async def listed_shops(client: TestClient, headers: dict[str, str], **params: str) -> set[str]:
    resp = await client.get("/api/events", params={"limit": "100", **params}, headers=headers)
    assert resp.status == 200, await resp.text()
    return {e["shopId"] for e in (await resp.json())["data"]}


async def assert_no_trace(resp: ClientResponse) -> None:
    text = await resp.text()
    assert "Traceback" not in text and 'File "' not in text and "site-packages" not in text


# ---- public routes and 401 ---------------------------------------------------------------------------------


async def test_public_routes_need_no_token(client: TestClient) -> None:
    resp = await client.post("/api/events", json={"shopId": "s1", "sessionId": "a", "eventType": "page_view"})
    assert resp.status == 201
    resp = await client.post("/api/events", data=b'[{"shopId":"s1","sessionId":"a","eventType":"x"}]',
                             headers={"Content-Type": "text/plain"})
    assert resp.status == 201
    # A stray or bad token does not matter on a public route.
    resp = await client.post("/api/events", json={"shopId": "s1", "sessionId": "a", "eventType": "x"},
                             headers={"Authorization": "Bearer nonsense"})
    assert resp.status == 201
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    assert "openapi" in await resp.json()


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not-a-real-token"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Token {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"X-Api-Key": ADMIN_TOKEN},
])
async def test_missing_or_bad_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/api/events"), ("GET", "/api/events/3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b"),
                         ("GET", "/api/tokens"), ("POST", "/api/tokens"),
                         ("DELETE", "/api/tokens/3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b")):
        resp = await client.request(method, path, headers=headers, json={"shopId": "s1"})
        await assert_error(resp, 401, "unauthorized")


async def test_a_token_in_the_query_string_is_not_accepted(client: TestClient) -> None:
    resp = await client.get("/api/events", params={"token": ADMIN_TOKEN, "access_token": ADMIN_TOKEN})
    await assert_error(resp, 401, "unauthorized")


async def test_admin_reads_every_shop(client: TestClient, admin: dict[str, str]) -> None:
    ids = await seed(client)
    assert await listed_shops(client, admin) == {"s1", "s2", "s3"}
    assert await listed_shops(client, admin, shopId="s2") == {"s2"}
    assert await listed_shops(client, {"Authorization": f"bearer {ADMIN_TOKEN}"}) == {"s1", "s2", "s3"}
    for shop_ids in ids.values():
        resp = await client.get(f"/api/events/{shop_ids[0]}", headers=admin)
        assert resp.status == 200


# ---- shop tokens -------------------------------------------------------------------------------------------


async def test_create_token_answers_201_with_the_secret_once(client: TestClient, admin: dict[str, str]) -> None:
    created = await create_token(client, admin, "s1", "Dashboard for s1")
    assert set(created) == {"id", "token", "shopId", "name", "createdAt"}
    assert created["shopId"] == "s1" and created["name"] == "Dashboard for s1"
    assert created["createdAt"] == "2026-11-26T04:15:17.123Z"
    assert isinstance(created["token"], str) and len(created["token"]) >= 32
    other = await create_token(client, admin, "s1")
    assert other["token"] != created["token"] and other["id"] != created["id"]

    resp = await client.get("/api/tokens", headers=admin)
    assert resp.status == 200
    text = await resp.text()
    assert created["token"] not in text and other["token"] not in text
    listed = {t["id"]: t for t in (await resp.json())["data"]}
    assert set(listed) == {created["id"], other["id"]}
    for token in listed.values():
        assert "token" not in token
        assert token["shopId"] == "s1"


@pytest.mark.parametrize("body", [{}, {"shopId": ""}, {"shopId": "bad shop"}, {"shopId": 5}, {"name": "x"},
                                  {"shopId": "s1", "name": ""}, {"shopId": "s1", "name": 7}])
async def test_create_token_validates_its_body(client: TestClient, admin: dict[str, str],
                                               body: dict[str, Any]) -> None:
    resp = await client.post("/api/tokens", json=body, headers=admin)
    await assert_error(resp, 400, "validation_failed")


async def test_create_token_rejects_invalid_json(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/tokens", data=b"{nope", headers={**admin, "Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")


async def test_token_is_stored_only_as_a_hash(client: TestClient, admin: dict[str, str], tmp_path: Path) -> None:
    created = await create_token(client, admin, "s1")
    secret = created["token"].encode()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("flowtel.db")]
    assert files
    for path in files:
        assert secret not in path.read_bytes(), path
    with contextlib.closing(sqlitelib.connect(tmp_path / "flowtel.db")) as conn:
        rows = conn.execute("SELECT * FROM tokens").fetchall()
    assert len(rows) == 1
    assert all(created["token"] not in str(value) for value in rows[0])


async def test_shop_token_reads_only_its_own_shop(client: TestClient, admin: dict[str, str]) -> None:
    ids = await seed(client)
    token = bearer((await create_token(client, admin, "s1"))["token"])
    assert await listed_shops(client, token) == {"s1"}
    assert await listed_shops(client, token, shopId="s1") == {"s1"}
    resp = await client.get("/api/events", headers=token)
    assert (await resp.json())["total"] == 3
    for other in ("s2", "s3", "nobody"):
        resp = await client.get("/api/events", params={"shopId": other}, headers=token)
        await assert_error(resp, 403, "forbidden")
    # One event: its own shop's, yes; any other shop's looks exactly like an unknown id.
    resp = await client.get(f"/api/events/{ids['s1'][0]}", headers=token)
    assert resp.status == 200 and (await resp.json())["shopId"] == "s1"
    for other in ("s2", "s3"):
        resp = await client.get(f"/api/events/{ids[other][0]}", headers=token)
        await assert_error(resp, 404, "not_found")


async def test_admin_cursor_cannot_reveal_other_shops_to_a_shop_token(client: TestClient,
                                                                      admin: dict[str, str]) -> None:
    await seed(client)
    token = bearer((await create_token(client, admin, "s1"))["token"])
    resp = await client.get("/api/events", params={"limit": "2"}, headers=admin)
    admin_cursor = (await resp.json())["nextCursor"]
    resp = await client.get("/api/events", params={"limit": "2", "shopId": "s2"}, headers=admin)
    s2_cursor = (await resp.json())["nextCursor"]
    assert admin_cursor and s2_cursor

    for cursor in (admin_cursor, s2_cursor):
        resp = await client.get("/api/events", params={"cursor": cursor, "limit": "100"}, headers=token)
        if resp.status == 200:
            assert {e["shopId"] for e in (await resp.json())["data"]} <= {"s1"}
        else:
            await assert_error(resp, 400, "validation_failed")
        resp = await client.get("/api/events", params={"cursor": cursor, "shopId": "s2"}, headers=token)
        await assert_error(resp, 403, "forbidden")
        resp = await client.get("/api/events", params={"cursor": cursor, "shopId": "s1"}, headers=token)
        if resp.status == 200:
            assert {e["shopId"] for e in (await resp.json())["data"]} <= {"s1"}
        else:
            await assert_error(resp, 400, "validation_failed")

    # A walk the admin started on s1 may be continued by s1's token: it is the same listing.
    resp = await client.get("/api/events", params={"limit": "2", "shopId": "s1"}, headers=admin)
    cursor = (await resp.json())["nextCursor"]
    resp = await client.get("/api/events", params={"cursor": cursor, "limit": "2"}, headers=token)
    assert resp.status == 200
    assert [e["shopId"] for e in (await resp.json())["data"]] == ["s1"]


async def test_revoked_token_gets_401(client: TestClient, admin: dict[str, str]) -> None:
    await seed(client)
    keep = await create_token(client, admin, "s1")
    gone = await create_token(client, admin, "s2")
    assert (await client.get("/api/events", headers=bearer(gone["token"]))).status == 200
    resp = await client.delete(f"/api/tokens/{gone['id']}", headers=admin)
    assert resp.status in (200, 204)
    await assert_error(await client.get("/api/events", headers=bearer(gone["token"])), 401, "unauthorized")
    assert (await client.get("/api/events", headers=bearer(keep["token"]))).status == 200
    resp = await client.get("/api/tokens", headers=admin)
    assert [t["id"] for t in (await resp.json())["data"]] == [keep["id"]]
    # Revoking again, or an id that never existed: 404.
    await assert_error(await client.delete(f"/api/tokens/{gone['id']}", headers=admin), 404, "not_found")


async def test_shop_token_cannot_manage_tokens(client: TestClient, admin: dict[str, str]) -> None:
    mine = await create_token(client, admin, "s1")
    other = await create_token(client, admin, "s2")
    token = bearer(mine["token"])
    await assert_error(await client.post("/api/tokens", json={"shopId": "s1"}, headers=token), 403, "forbidden")
    await assert_error(await client.post("/api/tokens", json={"shopId": "s2"}, headers=token), 403, "forbidden")
    for victim in (other, mine):
        await assert_error(await client.delete(f"/api/tokens/{victim['id']}", headers=token), 403, "forbidden")
    # Both tokens still work, and a shop token never sees another shop's tokens or any secret.
    assert (await client.get("/api/events", headers=bearer(other["token"]))).status == 200
    resp = await client.get("/api/tokens", headers=token)
    if resp.status == 200:
        text = await resp.text()
        assert mine["token"] not in text and other["token"] not in text and other["id"] not in text
    else:
        await assert_error(resp, 403, "forbidden")


async def test_auth_off_opens_reads(make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        client = await make_client(auth_enabled=False)
    assert any("FLOWTEL_AUTH" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    ids = await seed(client)
    resp = await client.get("/api/events")
    assert resp.status == 200 and (await resp.json())["total"] == 9
    resp = await client.get(f"/api/events/{ids['s2'][0]}")
    assert resp.status == 200


async def test_admin_token_is_generated_saved_0600_and_reused(make_client: ClientFactory, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        client = await make_client(admin_token=None)
    path = tmp_path / "admin-token"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert sum(token in r.getMessage() for r in caplog.records) == 1  # printed once in the log
    await assert_error(await client.get("/api/events", headers=bearer(ADMIN_TOKEN)), 401, "unauthorized")
    resp = await client.get("/api/events", headers=bearer(token))
    assert resp.status == 200

    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = await make_client(admin_token=None)
    assert path.read_text().strip() == token
    assert not any(token in r.getMessage() for r in caplog.records)
    assert (await second.get("/api/events", headers=bearer(token))).status == 200


async def test_configured_admin_token_writes_no_file(client: TestClient, admin: dict[str, str],
                                                     tmp_path: Path) -> None:
    assert (await client.get("/api/events", headers=admin)).status == 200
    assert not (tmp_path / "admin-token").exists()


# ---- CORS --------------------------------------------------------------------------------------------------


def preflight(method: str, origin: str, headers: str | None = None) -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return h


def header_list(resp: ClientResponse, name: str) -> set[str]:
    return {part.strip().lower() for part in resp.headers.get(name, "").split(",") if part.strip()}


async def assert_refused(resp: ClientResponse, origin: str) -> None:
    """A browser refuses unless Access-Control-Allow-Origin is '*' or the origin itself."""
    assert resp.headers.get("Access-Control-Allow-Origin") not in ("*", origin)
    assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize("origin", [SHOP_ORIGIN, "http://localhost:8080", DASHBOARD, "null"])
async def test_ingestion_preflight_allows_any_origin_and_is_cached(client: TestClient, origin: str) -> None:
    resp = await client.options("/api/events", headers=preflight("POST", origin, "content-type"))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", origin)
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "POST" in {m.upper() for m in header_list(resp, "Access-Control-Allow-Methods")}
    assert "content-type" in header_list(resp, "Access-Control-Allow-Headers")


async def test_ingestion_from_any_origin_gets_allow_origin(client: TestClient) -> None:
    resp = await client.post("/api/events", data=b'{"shopId":"s1","sessionId":"a","eventType":"page_view"}',
                             headers={"Origin": SHOP_ORIGIN, "Content-Type": "text/plain"})
    assert resp.status == 201
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", SHOP_ORIGIN)
    # Errors from ingestion are readable by the tracker too.
    resp = await client.post("/api/events", data=b"{nope",
                             headers={"Origin": SHOP_ORIGIN, "Content-Type": "text/plain"})
    await assert_error(resp, 400, "invalid_json")
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", SHOP_ORIGIN)


@pytest.mark.parametrize("origin", DEFAULT_CORS_ORIGINS)
async def test_dashboard_preflight_allowed_for_default_origins(client: TestClient, origin: str) -> None:
    resp = await client.options("/api/events", headers=preflight("GET", origin, "authorization"))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert "authorization" in header_list(resp, "Access-Control-Allow-Headers")
    assert "GET" in {m.upper() for m in header_list(resp, "Access-Control-Allow-Methods")}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/events/3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens"),
    ("DELETE", "/api/tokens/3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b"),
])
async def test_dashboard_preflight_on_other_routes(client: TestClient, method: str, path: str) -> None:
    resp = await client.options(path, headers=preflight(method, "http://127.0.0.1:3000",
                                                        "authorization, content-type"))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:3000"
    assert {"authorization", "content-type"} <= header_list(resp, "Access-Control-Allow-Headers")
    resp = await client.options(path, headers=preflight(method, EVIL, "authorization"))
    await assert_refused(resp, EVIL)


@pytest.mark.parametrize("request_headers", ["authorization", "content-type", None])
@pytest.mark.parametrize("origin", [EVIL, "http://localhost:5174", "https://localhost:5173"])
async def test_dashboard_preflight_refused_for_other_origins(client: TestClient, origin: str,
                                                             request_headers: str | None) -> None:
    # GET /api/events shares its path with the public POST, but not the POST's any-origin policy.
    resp = await client.options("/api/events", headers=preflight("GET", origin, request_headers))
    await assert_refused(resp, origin)
    # aiohttp-cors refuses with 403; like every error it has the one error shape.
    await assert_error(resp, 403, "forbidden")
    await assert_no_trace(resp)


async def test_dashboard_get_from_other_origin_gets_no_allow_origin(client: TestClient,
                                                                    admin: dict[str, str]) -> None:
    resp = await client.get("/api/events", headers={**admin, "Origin": EVIL})
    await assert_refused(resp, EVIL)
    resp = await client.get("/api/events", headers={"Origin": EVIL})
    await assert_error(resp, 401, "unauthorized")
    await assert_refused(resp, EVIL)


async def test_dashboard_responses_carry_allow_origin_even_on_401(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.get("/api/events", headers={**admin, "Origin": DASHBOARD})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    resp = await client.get("/api/events", headers={"Origin": DASHBOARD})
    await assert_error(resp, 401, "unauthorized")
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    resp = await client.get("/api/events", params={"limit": "0"}, headers={**admin, "Origin": DASHBOARD})
    await assert_error(resp, 400, "validation_failed")
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD


@pytest.mark.parametrize("path", ["/api/openapi.json", "/healthz"])
async def test_other_routes_allow_the_dashboard_origins(client: TestClient, path: str) -> None:
    # Contract section 2: "Every other route allows only the dashboard origins".
    resp = await client.get(path, headers={"Origin": DASHBOARD})
    assert resp.status == 200
    assert resp.headers.get("Access-Control-Allow-Origin") == DASHBOARD
    resp = await client.get(path, headers={"Origin": EVIL})
    await assert_refused(resp, EVIL)


async def test_extra_cors_origin_from_settings(make_client: ClientFactory, admin: dict[str, str]) -> None:
    extra = "https://dash.example.com"
    plain = await make_client()
    resp = await plain.options("/api/events", headers=preflight("GET", extra, "authorization"))
    await assert_refused(resp, extra)

    client = await make_client(cors_origins=(*DEFAULT_CORS_ORIGINS, extra))
    resp = await client.options("/api/events", headers=preflight("GET", extra, "authorization"))
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == extra
    resp = await client.options("/api/events", headers=preflight("GET", DASHBOARD, "authorization"))
    assert resp.headers["Access-Control-Allow-Origin"] == DASHBOARD
    resp = await client.get("/api/events", headers={**admin, "Origin": extra})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == extra
    resp = await client.options("/api/events", headers=preflight("GET", EVIL, "authorization"))
    await assert_refused(resp, EVIL)


# ---- 404, 405 and the error shape --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/nope", "/api/events/a/b", "/api"])
async def test_unknown_route_is_404_in_the_error_shape(client: TestClient, admin: dict[str, str], path: str) -> None:
    resp = await client.get(path, headers=admin)
    await assert_error(resp, 404, "not_found")
    await assert_no_trace(resp)


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/api/events", {"GET", "POST", "DELETE"}),
    ("DELETE", "/api/stats", {"GET"}),
    ("PATCH", "/api/events/3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b", {"GET"}),
    ("PUT", "/api/tokens", {"GET", "POST"}),
    ("POST", "/healthz", {"GET"}),
])
async def test_wrong_method_is_405_with_allow(client: TestClient, admin: dict[str, str], method: str, path: str,
                                              allowed: set[str]) -> None:
    resp = await client.request(method, path, headers=admin)
    await assert_error(resp, 405, "method_not_allowed")
    assert allowed <= {m.strip().upper() for m in resp.headers["Allow"].split(",")}
    await assert_no_trace(resp)
