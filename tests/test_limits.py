"""Abuse limits: token buckets per address, shop and token; the report gate; slow bodies and oversized headers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from server.errors import ApiError
from server.limits import QueryGate, TokenBuckets
from tests.conftest import ClientFactory, FakeClock, assert_error

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"}


def event(shop: str = "shoes") -> dict[str, str]:
    return {"shopId": shop, "sessionId": "s-1", "eventType": "page_view"}


def stored(db: Path) -> int:
    conn = sqlitelib.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


# ---- the bucket itself ------------------------------------------------------------------------------------------


def test_bucket_admits_a_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2, burst=4, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.5)  # one token at 2/s
    assert buckets.take("b") == 0.0  # keys are independent
    clock.advance(500)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.advance(10_000)  # a long pause refills only up to the burst
    assert [buckets.take("a") for _ in range(5)][-1] == pytest.approx(0.5)


def test_bucket_costs_and_a_request_bigger_than_the_bucket() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=10, burst=100, clock=clock)
    assert buckets.take("shop", 60) == 0.0
    assert buckets.take("shop", 60) == pytest.approx(2.0)  # 40 left, 20 missing at 10/s
    # Bigger than the whole bucket: admitted when it is full, leaving a debt that the rate pays back.
    assert buckets.take("other", 500) == 0.0
    assert buckets.take("other", 1) == pytest.approx(40.1)  # -400 tokens now; 1 token needs 401 / 10 s
    clock.advance(40_100)
    assert buckets.take("other", 1) == 0.0


def test_bucket_forgets_idle_keys_instead_of_growing() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1, burst=1, clock=clock, max_keys=100)
    for i in range(100):
        buckets.take(f"ip-{i}")
    clock.advance(5_000)  # every one of them is full again: forgettable
    buckets.take("new")
    assert len(buckets) == 1
    for i in range(300):  # all active at once: memory stays bounded anyway
        buckets.take(f"busy-{i}")
    assert len(buckets) <= 100


def test_bucket_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1, clock=FakeClock())


async def test_query_gate_bounds_concurrent_reports() -> None:
    gate = QueryGate(1, wait_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as raised:
        async with gate.slot():
            pass
    assert raised.value.status == 503 and raised.value.headers["Retry-After"]
    release.set()
    await holder
    async with gate.slot():  # free again
        pass


# ---- through HTTP -----------------------------------------------------------------------------------------------


async def test_ingestion_is_limited_per_address(make_client: ClientFactory, clock: FakeClock,
                                                tmp_path: Path) -> None:
    client = await make_client(rate_limit_ip=1)  # 1 request/s, bursts of 10
    for _ in range(10):
        assert (await client.post("/api/events", json=event(), headers=BROWSER)).status == 201
    resp = await client.post("/api/events", json=event(), headers=BROWSER)
    error = await assert_error(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "1"
    assert "address" in error["message"]
    assert stored(tmp_path / "flowtel.db") == 10
    clock.advance(1000)
    assert (await client.post("/api/events", json=event(), headers=BROWSER)).status == 201
    metrics = await (await client.get("/metrics")).text()
    assert 'flowtel_rate_limited_total{limit="ip"} 1.0' in metrics
    assert 'flowtel_events_rejected_total{reason="rate_limited"} 1.0' in metrics


async def test_ingestion_is_limited_per_shop_in_events(make_client: ClientFactory, clock: FakeClock,
                                                       tmp_path: Path) -> None:
    client = await make_client(rate_limit_shop=2)  # 2 events/s per shop, bursts of 20
    assert (await client.post("/api/events", json=[event()] * 15, headers=BROWSER)).status == 201
    resp = await client.post("/api/events", json=[event("hats"), *[event()] * 10], headers=BROWSER)
    await assert_error(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "3"  # 5 left, 10 needed, 2/s
    assert stored(tmp_path / "flowtel.db") == 15  # the rejected batch stored nothing, not even the hats event
    assert (await client.post("/api/events", json=[event("hats")] * 20, headers=BROWSER)).status == 201
    clock.advance(3000)
    assert (await client.post("/api/events", json=[event()] * 10, headers=BROWSER)).status == 201


async def test_reads_are_limited_per_token(make_client: ClientFactory, clock: FakeClock,
                                           admin: dict[str, str]) -> None:
    client = await make_client(rate_limit_read=1)  # bursts of 10
    created = await (await client.post("/api/tokens", json={"shopId": "shoes"}, headers=admin)).json()
    shop = {"Authorization": f"Bearer {created['token']}"}
    for _ in range(10):
        assert (await client.get("/api/events", headers=shop)).status == 200
    resp = await client.get("/api/events", headers=shop)
    await assert_error(resp, 429, "rate_limited")
    # Another token has its own bucket (the admin used one token of its 10 above); public routes are not limited.
    assert (await client.get("/api/events", headers=admin)).status == 200
    assert (await client.get("/healthz")).status == 200
    clock.advance(1000)
    assert (await client.get("/api/events", headers=shop)).status == 200
    assert 'flowtel_rate_limited_total{limit="read"} 1.0' in await (await client.get("/metrics")).text()


async def test_a_slow_body_gets_a_clear_400_and_stores_nothing(make_client: ClientFactory, tmp_path: Path) -> None:
    client = await make_client(body_timeout=0.3)
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = b'{"shopId": "shoes", "sessionId": "s", "eventType": "page_view"}'
    writer.write(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 400")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    payload = await reader.readexactly(length)
    assert b'"invalid_json"' in payload and b"did not arrive complete" in payload
    writer.close()
    assert stored(tmp_path / "flowtel.db") == 0


async def test_oversized_or_too_many_headers_are_refused(client: TestClient) -> None:
    server = client.server
    for headers in (b"X-Big: " + b"a" * 9000 + b"\r\n",
                    b"".join(b"X-H%d: v\r\n" % i for i in range(150))):
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split(b" ")[1] in (b"400", b"431"), status
        writer.close()
    assert (await client.get("/healthz")).status == 200
