"""POST /api/insights/generate and GET /api/insights through the real app: data, auth, isolation, LLM narration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from server.insights import generate_for_active_shops, seconds_until
from server.keys import MIRROR, STORE, WAREHOUSE
from tests.conftest import NOW_MS, ClientFactory, assert_error
from tests.fake_llm import FakeLLM, Reply

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)  # 2026-11-26T04:15Z; the last complete UTC day is 2026-11-25
DAYS = 40


def traffic(shop: str) -> list[dict[str, Any]]:
    """40 days of 30 direct sessions a day, then 90 extra sessions from a newsletter on the last day."""
    events = []
    last = NOW.date() - timedelta(days=1)
    for back in range(DAYS):
        day = last - timedelta(days=back)
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        usual = 30 + (back % 3)
        for i in range(usual + (90 if back == 0 else 0)):
            promo = i >= usual
            events.append({
                "shopId": shop, "sessionId": f"{shop}-{day}-{i}", "eventType": "page_view",
                "timestamp": (noon + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "url": "https://shop.example/promo?utm_source=newsletter" if promo else "https://shop.example/p",
            })
    return events


async def load(client: TestClient, shop: str = "shop-a") -> None:
    events = traffic(shop)
    for start in range(0, len(events), 500):
        resp = await client.post("/api/events", json=events[start:start + 500], headers={"User-Agent": BROWSER})
        assert resp.status == 201, await resp.text()


async def shop_token(client: TestClient, admin: dict[str, str], shop: str) -> dict[str, str]:
    resp = await client.post("/api/tokens", json={"shopId": shop, "name": shop}, headers=admin)
    assert resp.status == 201
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def generate(client: TestClient, headers: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    resp = await client.post("/api/insights/generate", json={"shopId": "shop-a", **body}, headers=headers)
    assert resp.status == 201, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def test_rules_only_insights_find_the_spike_and_its_source(client: TestClient, admin: dict[str, str]) -> None:
    await load(client)
    data = await generate(client, admin)
    summary, *rest = data
    assert summary["type"] == "summary" and summary["shopId"] == "shop-a"
    # Last 7 days: 30, 31, 32, 30, 31, 32, 30 usual sessions plus the 90 from the newsletter.
    assert summary["metadata"]["totals"]["sessions"]["value"] == 216 + 90
    sessions = next(i for i in rest if i["type"] == "anomaly" and i["metadata"]["metric"] == "sessions")
    meta = sessions["metadata"]
    # Baseline: median of the four earlier Wednesdays (31, 32, 30, 31).
    assert meta["date"] == "2026-11-25" and meta["baseline"] == 31
    assert meta["value"] == 120 and meta["direction"] == "up" and meta["score"] >= 3.5
    assert meta["rootCause"][0]["dimension"] in ("source", "path")
    assert {(c["dimension"], c["value"]) for c in meta["rootCause"][:2]} == {("source", "newsletter"),
                                                                             ("path", "/promo")}
    assert meta["generatedBy"] == "rules" and "provider" not in meta
    assert meta["method"] == "same-weekday-median+log-mad" and meta["sql"].startswith("WITH base AS")
    assert sessions["title"] == "Sessions spiked on Wednesday 2026-11-25"
    assert "120" in sessions["content"] and ("newsletter" in sessions["content"] or "/promo" in sessions["content"])
    assert sessions["generatedAt"] == sessions["createdAt"] == "2026-11-26T04:15:17.123Z"

    # Generating the same day again replaces, not duplicates; GET lists newest first with the envelope.
    again = await generate(client, admin)
    resp = await client.get("/api/insights", params={"shopId": "shop-a", "limit": "2"}, headers=admin)
    body = await resp.json()
    assert resp.status == 200 and body["total"] == len(again) and body["limit"] == 2 and body["page"] == 1
    assert body["totalPages"] == (len(again) + 1) // 2
    assert {i["id"] for i in body["data"]} <= {i["id"] for i in again}
    resp = await client.get("/api/insights", params={"type": "anomaly"}, headers=admin)
    assert all(i["type"] == "anomaly" for i in (await resp.json())["data"])


async def test_an_empty_shop_gets_a_low_volume_summary_only(client: TestClient, admin: dict[str, str]) -> None:
    [summary] = await generate(client, admin, shopId="quiet-shop", timezone="Europe/Berlin", date="2026-11-20")
    assert summary["metadata"]["lowVolume"] is True and summary["metadata"]["date"] == "2026-11-20"
    assert summary["metadata"]["timezone"] == "Europe/Berlin"
    assert "Volume is low" in summary["content"]


async def test_generate_validates_its_input(client: TestClient, admin: dict[str, str]) -> None:
    for body, field in (({}, "shopId"), ({"shopId": "bad shop"}, "shopId"), ({"shopId": "a", "date": "2026-11-26"},
                        "date"), ({"shopId": "a", "date": "soon"}, "date"), ({"shopId": "a", "timezone": "Mars/X"},
                        "timezone")):
        resp = await client.post("/api/insights/generate", json=body, headers=admin)
        error = await assert_error(resp, 400, "validation_failed")
        assert error["details"][0]["field"] == field
    resp = await client.get("/api/insights", params={"type": "rumour"}, headers=admin)
    await assert_error(resp, 400, "validation_failed")


async def test_auth_and_shop_isolation(client: TestClient, admin: dict[str, str]) -> None:
    await assert_error(await client.post("/api/insights/generate", json={"shopId": "shop-a"}), 401, "unauthorized")
    await assert_error(await client.get("/api/insights"), 401, "unauthorized")
    token_a = await shop_token(client, admin, "shop-a")
    token_b = await shop_token(client, admin, "shop-b")
    mine = await client.post("/api/insights/generate", json={}, headers=token_a)  # a shop token may omit shopId
    assert mine.status == 201 and (await mine.json())["data"][0]["shopId"] == "shop-a"
    await assert_error(await client.post("/api/insights/generate", json={"shopId": "shop-a"}, headers=token_b),
                       403, "forbidden")
    await assert_error(await client.get("/api/insights", params={"shopId": "shop-a"}, headers=token_b),
                       403, "forbidden")
    resp = await client.get("/api/insights", headers=token_b)
    assert (await resp.json())["total"] == 0
    resp = await client.get("/api/insights", headers=admin)
    assert (await resp.json())["total"] == 1


async def llm_client(make_client: ClientFactory, fake: FakeLLM, provider: str, **kw: Any) -> TestClient:
    return await make_client(**fake.settings_for(provider, **kw))


async def test_llm_wording_is_kept_when_its_numbers_match(make_client: ClientFactory, fake_llm: FakeLLM,
                                                          admin: dict[str, str]) -> None:
    for provider in ("openai", "anthropic"):
        client = await llm_client(make_client, fake_llm, provider)
        fake_llm.play(Reply(text='{"title": "A quiet week", "text": "No sessions in the last 7 days."}'))
        [summary] = await generate(client, admin, shopId=f"llm-{provider}")
        assert summary["title"] == "A quiet week" and summary["content"] == "No sessions in the last 7 days."
        meta = summary["metadata"]
        assert (meta["generatedBy"], meta["provider"], meta["model"]) == ("llm", provider, f"fake-{provider}-model")
        await client.close()
    # The model saw the facts JSON only: no SQL.
    for recorded in fake_llm.requests:
        assert "SELECT" not in str(recorded.body) and "sessions" in str(recorded.body)


async def test_a_made_up_number_keeps_the_template(make_client: ClientFactory, fake_llm: FakeLLM,
                                                   admin: dict[str, str]) -> None:
    for provider in ("openai", "anthropic"):
        client = await llm_client(make_client, fake_llm, provider)
        fake_llm.play(Reply(text='{"title": "Sessions up 45%", "text": "You had 1,234 sessions."}'))
        [summary] = await generate(client, admin, shopId="quiet")
        meta = summary["metadata"]
        assert meta["generatedBy"] == "rules" and meta["llmFallback"].startswith("number_mismatch: 45, 1234")
        assert summary["title"].startswith("Last 7 days: 0 sessions")
        await client.close()


async def test_provider_errors_and_timeouts_keep_the_template(make_client: ClientFactory, fake_llm: FakeLLM,
                                                              admin: dict[str, str]) -> None:
    cases = [("openai", Reply(status=401), "HTTP 401"), ("anthropic", Reply(status=401), "HTTP 401"),
             ("openai", Reply(status=429), "HTTP 429"), ("anthropic", Reply(status=429), "HTTP 429"),
             ("openai", Reply(text="{}", delay=3), "timeout"), ("anthropic", Reply(text="{}", delay=3), "timeout")]
    for provider, reply, reason in cases:
        client = await llm_client(make_client, fake_llm, provider, timeout=0.3)
        # The retry the adapter allows for a timeout gets a second slow reply.
        fake_llm.play(reply, reply)
        [summary] = await generate(client, admin, shopId="quiet")
        meta = summary["metadata"]
        assert meta["generatedBy"] == "rules" and reason in meta["llmFallback"], (provider, meta)
        assert summary["title"].startswith("Last 7 days")
        await client.close()
        fake_llm.script.clear()


async def test_the_daily_job_covers_active_shops(client: TestClient, admin: dict[str, str]) -> None:
    await load(client, "shop-a")
    app = client.app
    written = await generate_for_active_shops(app[STORE], app[WAREHOUSE], app[MIRROR], None, NOW_MS)
    assert set(written) == {"shop-a"} and written["shop-a"] >= 2
    resp = await client.get("/api/insights", params={"shopId": "shop-a"}, headers=admin)
    assert (await resp.json())["total"] == written["shop-a"]
    assert seconds_until(4, NOW) == 24 * 3600 - 15 * 60 - 17.123
    assert seconds_until(5, NOW) == 3600 - 15 * 60 - 17.123
