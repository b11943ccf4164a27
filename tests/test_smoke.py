import gc
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from server.app import create_app
from tests.conftest import FakeClock, assert_error, make_settings


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


async def test_startup_objects_are_frozen_while_serving(tmp_path: Path, clock: FakeClock) -> None:
    # A running app keeps its startup objects out of the cyclic collector (server.app.gc_ctx), and gives them
    # back at cleanup.
    gc.unfreeze()
    async with TestClient(TestServer(create_app(make_settings(tmp_path), clock=clock))) as client:
        assert gc.get_freeze_count() > 10_000
        assert (await client.post("/api/events", json={"shopId": "s1", "sessionId": "a",
                                                         "eventType": "page_view"})).status == 201
    assert gc.get_freeze_count() == 0
