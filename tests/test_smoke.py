from aiohttp.test_utils import TestClient

from tests.conftest import assert_error


async def test_post_then_list(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/events", json={"shopId": "s1", "sessionId": "a", "eventType": "pageview"})
    assert resp.status == 201
    event = await resp.json()
    assert event["eventType"] == "page_view"
    assert event["timestamp"] == "2026-11-26T04:15:17.123Z"
    resp = await client.get("/api/events", headers=admin)
    assert resp.status == 200
    body = await resp.json()
    assert [e["id"] for e in body["data"]] == [event["id"]]
    await assert_error(await client.get("/api/events"), 401, "unauthorized")
