"""Registered shops: the API, allowed domains at ingestion, required registration and the timezone default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from server.shops import Shop, request_host, validate_fields
from tests.conftest import ClientFactory, assert_error

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(shop: str, **extra: Any) -> dict[str, Any]:
    return {"shopId": shop, "sessionId": "s-1", "eventType": "page_view", **extra}


def stored_shops(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlitelib.connect(db)
    try:
        return conn.execute("SELECT id, name, timezone, currency, domains FROM shops ORDER BY id").fetchall()
    finally:
        conn.close()


async def shop_token(client: TestClient, admin: dict[str, str], shop: str) -> dict[str, str]:
    resp = await client.post("/api/tokens", json={"shopId": shop}, headers=admin)
    assert resp.status == 201
    return bearer((await resp.json())["token"])


# ---- pure helpers -----------------------------------------------------------------------------------------------


def test_allows_host_matches_exact_hosts_and_wildcard_subdomains() -> None:
    shop = Shop("s", "S", domains=("shop.example.com", "*.example.org"))
    assert shop.allows_host("shop.example.com")
    assert shop.allows_host("SHOP.example.com.")
    assert not shop.allows_host("evil-shop.example.com")
    assert not shop.allows_host("example.com")
    assert shop.allows_host("example.org")
    assert shop.allows_host("a.b.example.org")
    assert not shop.allows_host("badexample.org")
    assert not shop.allows_host(None)
    assert Shop("open", "Open").allows_host(None)


def test_request_host_prefers_origin_then_referer_then_url() -> None:
    assert request_host("https://a.example", "https://b.example/x", "https://c.example/") == "a.example"
    assert request_host(None, "https://b.example/x", "https://c.example/") == "b.example"
    assert request_host("null", None, "https://c.example/p") == "c.example"
    assert request_host(None, None, "/relative") is None
    assert request_host(None, "http://[::1", None) is None


@pytest.mark.parametrize(("doc", "field"), [
    ({"name": ""}, "name"),
    ({"name": "x\u0000"}, "name"),
    ({"name": "ok", "timezone": "Mars/Olympus"}, "timezone"),
    ({"name": "ok", "timezone": 5}, "timezone"),
    ({"name": "ok", "currency": "EURO"}, "currency"),
    ({"name": "ok", "domains": "shop.example.com"}, "domains"),
    ({"name": "ok", "domains": ["https://shop.example.com/"]}, "domains[0]"),
    ({"name": "ok", "domains": ["ok.example", "bad host"]}, "domains[1]"),
    ({"name": "ok", "domains": ["x.example"] * 51}, "domains"),
])
def test_validate_fields_names_the_bad_field(doc: dict[str, Any], field: str) -> None:
    _, problems = validate_fields(doc, partial=False)
    assert [p["field"] for p in problems] == [field]


def test_validate_fields_normalises() -> None:
    values, problems = validate_fields({"name": " Shoes ", "currency": "eur", "timezone": "Europe/Berlin",
                                        "domains": ["Shop.Example.com.", "shop.example.com", "*.example.org"]},
                                       partial=False)
    assert problems == []
    assert values == {"name": "Shoes", "currency": "EUR", "timezone": "Europe/Berlin",
                      "domains": ("shop.example.com", "*.example.org")}


# ---- the API ----------------------------------------------------------------------------------------------------


async def test_admin_registers_lists_reads_and_patches_a_shop(client: TestClient, admin: dict[str, str],
                                                              tmp_path: Path) -> None:
    resp = await client.post("/api/shops", json={"id": "shoes", "name": "Shoes", "timezone": "Europe/Berlin",
                                                 "currency": "eur", "domains": ["shoes.example"]}, headers=admin)
    assert resp.status == 201
    created = await resp.json()
    assert created == {"id": "shoes", "name": "Shoes", "timezone": "Europe/Berlin", "currency": "EUR",
                       "domains": ["shoes.example"], "createdAt": "2026-11-26T04:15:17.123Z",
                       "updatedAt": "2026-11-26T04:15:17.123Z"}
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"

    resp = await client.post("/api/shops", json={"shopId": "hats"}, headers=admin)
    assert resp.status == 201
    assert (await resp.json())["name"] == "hats"  # the id stands in for a missing name
    assert (await resp.json())["timezone"] == "UTC" and (await resp.json())["currency"] == "USD"

    listed = await (await client.get("/api/shops", headers=admin)).json()
    assert [s["id"] for s in listed["data"]] == ["hats", "shoes"]

    resp = await client.patch("/api/shops/shoes", json={"domains": [], "name": "Shoes & Co"}, headers=admin)
    assert resp.status == 200
    patched = await resp.json()
    assert patched["domains"] == [] and patched["name"] == "Shoes & Co" and patched["timezone"] == "Europe/Berlin"
    assert await (await client.get("/api/shops/shoes", headers=admin)).json() == patched
    # Durable: it is in SQLite, not only in the registry.
    assert stored_shops(tmp_path / "flowtel.db") == [("hats", "hats", "UTC", "USD", "[]"),
                                                     ("shoes", "Shoes & Co", "Europe/Berlin", "EUR", "[]")]


async def test_shops_survive_a_restart(make_client: ClientFactory, admin: dict[str, str]) -> None:
    first = await make_client()
    assert (await first.post("/api/shops", json={"id": "shoes", "timezone": "Asia/Tokyo"}, headers=admin)).status == 201
    await first.close()
    second = await make_client()
    assert (await (await second.get("/api/shops/shoes", headers=admin)).json())["timezone"] == "Asia/Tokyo"


async def test_shop_api_errors(client: TestClient, admin: dict[str, str]) -> None:
    await assert_error(await client.get("/api/shops"), 401, "unauthorized")
    error = await assert_error(await client.post("/api/shops", json={"name": "no id"}, headers=admin), 400,
                               "validation_failed")
    assert error["details"][0]["field"] == "id"
    error = await assert_error(await client.post("/api/shops", json={"id": "a b"}, headers=admin), 400,
                               "validation_failed")
    assert error["details"][0]["field"] == "id"
    error = await assert_error(await client.post("/api/shops", json={"id": "x", "currency": 1, "timezone": "Nowhere"},
                                                 headers=admin), 400, "validation_failed")
    assert {d["field"] for d in error["details"]} == {"currency", "timezone"}
    await assert_error(await client.post("/api/shops", data=b"{", headers=admin), 400, "invalid_json")
    assert (await client.post("/api/shops", json={"id": "x"}, headers=admin)).status == 201
    error = await assert_error(await client.post("/api/shops", json={"id": "x"}, headers=admin), 400,
                               "validation_failed")
    assert error["details"] == [{"field": "id", "message": "already exists"}]
    await assert_error(await client.patch("/api/shops/nope", json={"name": "n"}, headers=admin), 404, "not_found")
    await assert_error(await client.get("/api/shops/nope", headers=admin), 404, "not_found")
    await assert_error(await client.patch("/api/shops/x", json={"currency": "E"}, headers=admin), 400,
                       "validation_failed")
    await assert_error(await client.delete("/api/shops/x", headers=admin), 405, "method_not_allowed")


async def test_a_shop_token_reads_only_its_own_shop_and_cannot_write(client: TestClient,
                                                                     admin: dict[str, str]) -> None:
    for shop in ("shoes", "hats"):
        assert (await client.post("/api/shops", json={"id": shop}, headers=admin)).status == 201
    token = await shop_token(client, admin, "shoes")
    assert [s["id"] for s in (await (await client.get("/api/shops", headers=token)).json())["data"]] == ["shoes"]
    assert (await client.get("/api/shops/shoes", headers=token)).status == 200
    await assert_error(await client.get("/api/shops/hats", headers=token), 403, "forbidden")
    await assert_error(await client.post("/api/shops", json={"id": "new"}, headers=token), 403, "forbidden")
    await assert_error(await client.patch("/api/shops/shoes", json={"domains": []}, headers=token), 403, "forbidden")
    unregistered = await shop_token(client, admin, "socks")
    assert await (await client.get("/api/shops", headers=unregistered)).json() == {"data": []}


# ---- ingestion --------------------------------------------------------------------------------------------------


async def test_domains_restrict_where_a_shops_events_come_from(client: TestClient, admin: dict[str, str],
                                                               tmp_path: Path) -> None:
    await client.post("/api/shops", json={"id": "shoes", "domains": ["shoes.example", "*.shoes.example"]},
                      headers=admin)
    ok_origin = {**BROWSER, "Origin": "https://www.shoes.example"}
    assert (await client.post("/api/events", json=event("shoes"), headers=ok_origin)).status == 201
    ok_referer = {**BROWSER, "Referer": "https://shoes.example/cart"}
    assert (await client.post("/api/events", json=event("shoes"), headers=ok_referer)).status == 201
    # No Origin or Referer (a server-side sender): the event's own url decides.
    assert (await client.post("/api/events", json=event("shoes", url="https://shoes.example/p"),
                              headers=BROWSER)).status == 201

    bad = {**BROWSER, "Origin": "https://evil.example"}
    error = await assert_error(await client.post("/api/events", json=event("shoes"), headers=bad), 403, "forbidden")
    assert "evil.example" in error["message"]
    # The Origin wins over a url that claims to be the shop's.
    await assert_error(await client.post("/api/events", json=event("shoes", url="https://shoes.example/"),
                                         headers=bad), 403, "forbidden")
    await assert_error(await client.post("/api/events", json=event("shoes"), headers=BROWSER), 403, "forbidden")
    # A batch with one forbidden event stores nothing; unregistered shops take events from anywhere.
    batch = [event("socks"), event("shoes")]
    await assert_error(await client.post("/api/events", json=batch, headers=bad), 403, "forbidden")
    assert (await client.post("/api/events", json=[event("socks")], headers=bad)).status == 201

    conn = sqlitelib.connect(tmp_path / "flowtel.db")
    try:
        rows = conn.execute("SELECT shop_id, count(*) FROM events GROUP BY shop_id ORDER BY shop_id").fetchall()
    finally:
        conn.close()
    assert rows == [("shoes", 3), ("socks", 1)]


async def test_require_known_shops_rejects_unregistered_ids(make_client: ClientFactory,
                                                            admin: dict[str, str]) -> None:
    client = await make_client(require_known_shops=True)
    error = await assert_error(await client.post("/api/events", json=event("ghost"), headers=BROWSER), 400,
                               "validation_failed")
    assert error["details"][0]["field"] == "shopId" and "index" not in error["details"][0]
    await client.post("/api/shops", json={"id": "shoes"}, headers=admin)
    error = await assert_error(await client.post("/api/events", json=[event("shoes"), event("ghost")],
                                                 headers=BROWSER), 400, "validation_failed")
    assert error["details"] == [{"index": 1, "field": "shopId",
                                 "message": "shop 'ghost' is not registered (POST /api/shops)"}]
    assert (await client.post("/api/events", json=[event("shoes")], headers=BROWSER)).status == 201


async def test_stats_default_to_the_shops_timezone(client: TestClient, admin: dict[str, str]) -> None:
    await client.post("/api/shops", json={"id": "shoes", "timezone": "Asia/Tokyo"}, headers=admin)
    report = await (await client.get("/api/stats", params={"shopId": "shoes", "period": "today"},
                                     headers=admin)).json()
    assert report["range"]["timezone"] == "Asia/Tokyo"
    assert report["range"]["start"].endswith("+09:00")
    explicit = await (await client.get("/api/stats", params={"shopId": "shoes", "period": "today",
                                                             "timezone": "UTC"}, headers=admin)).json()
    assert explicit["range"]["timezone"] == "UTC"
    query = await (await client.post("/api/query", json={"shopId": "shoes", "metrics": ["events"]},
                                     headers=admin)).json()
    assert query["query"]["timezone"] == "Asia/Tokyo"
    unregistered = await (await client.get("/api/stats", params={"shopId": "hats"}, headers=admin)).json()
    assert unregistered["range"]["timezone"] == "UTC"


async def test_insights_and_chat_default_to_the_shops_timezone(client: TestClient, admin: dict[str, str]) -> None:
    await client.post("/api/shops", json={"id": "shoes", "timezone": "Asia/Tokyo"}, headers=admin)
    await client.post("/api/events", json=[event("shoes", url="https://shoes.example/")] * 3, headers=BROWSER)
    resp = await client.post("/api/insights/generate", json={"shopId": "shoes"}, headers=admin)
    assert resp.status == 201
    insights = (await resp.json())["data"]
    assert insights and {i["metadata"]["timezone"] for i in insights} == {"Asia/Tokyo"}
    explicit = await (await client.post("/api/insights/generate", json={"shopId": "shoes", "timezone": "UTC"},
                                        headers=admin)).json()
    assert {i["metadata"]["timezone"] for i in explicit["data"]} == {"UTC"}

    # 20:00 UTC yesterday is 05:00 today in Tokyo: "today" counts it only in the shop's timezone.
    late = [event("hats", sessionId="late", timestamp="2026-11-25T20:00:00Z")]
    await client.post("/api/shops", json={"id": "hats", "timezone": "Asia/Tokyo"}, headers=admin)
    assert (await client.post("/api/events", json=late, headers=BROWSER)).status == 201
    tokyo = await (await client.post("/api/chat", json={"shopId": "hats", "message": "how many sessions today"},
                                     headers=admin)).json()
    utc = await (await client.post("/api/chat", json={"shopId": "hats", "message": "how many sessions today",
                                                      "timezone": "UTC"}, headers=admin)).json()
    assert (tokyo["columns"], tokyo["rows"]) == (["sessions"], [[1]])
    assert (utc["columns"], utc["rows"]) == (["sessions"], [[0]])


async def test_a_purchase_without_currency_counts_in_the_shops_currency(client: TestClient,
                                                                       admin: dict[str, str]) -> None:
    await client.post("/api/shops", json={"id": "shoes", "currency": "EUR"}, headers=admin)
    purchase = {"eventType": "purchase", "properties": {"orderId": "o-1", "value": 40}}
    priced = {"eventType": "purchase", "properties": {"orderId": "o-2", "value": 10, "currency": "GBP"}}
    for shop in ("shoes", "hats"):
        resp = await client.post("/api/events", json=[event(shop, **purchase), event(shop, **priced)],
                                 headers=BROWSER)
        assert resp.status == 201
    shoes = await (await client.get("/api/stats", params={"shopId": "shoes"}, headers=admin)).json()
    hats = await (await client.get("/api/stats", params={"shopId": "hats"}, headers=admin)).json()
    assert sorted((m["currency"], m["amount"]) for m in shoes["totals"]["revenue"]) == [("EUR", 40.0), ("GBP", 10.0)]
    assert sorted((m["currency"], m["amount"]) for m in hats["totals"]["revenue"]) == [("GBP", 10.0), ("USD", 40.0)]
