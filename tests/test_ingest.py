"""POST /api/events through the real app and real SQLite files: contract section 3, rule by rule."""

from __future__ import annotations

import asyncio
import gzip
import io
import ipaddress
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from server.events import format_ms
from server.keys import STORE
from tests.conftest import NOW_MS, FakeClock, assert_error

NOW_ISO = "2026-11-26T04:15:17.123Z"
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MIB = 1024 * 1024
URL = "/api/events"
JSON_CT = "application/json; charset=utf-8"

UA_CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/120.0.0.0 Safari/537.36")
UA_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.0 Mobile/15E148 Safari/604.1")
UA_IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.0 Mobile/15E148 Safari/604.1")
UA_GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

ID_A = "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d"
ID_B = "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8e"
ID_C = "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8f"

EVENT_KEYS = {"id", "shopId", "sessionId", "eventType", "eventName", "properties", "timestamp", "url", "referrer",
              "userAgent", "createdAt", "context"}
CONTEXT_KEYS = {"path", "browser", "os", "device", "country", "isBot"}

MISSING = object()


def ev(**fields: Any) -> dict[str, Any]:
    """A valid event; keyword arguments set fields, MISSING removes one."""
    raw: dict[str, Any] = {"shopId": "shop-1", "sessionId": "sess-1", "eventType": "page_view"}
    for key, value in fields.items():
        if value is MISSING:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def ms_iso(ms: int) -> str:
    return format_ms(ms)


async def post(client: TestClient, body: Any, *, ua: str = UA_CHROME_WIN, **headers: str) -> ClientResponse:
    return await client.post(URL, json=body, headers={"User-Agent": ua, **headers})


async def post_raw(client: TestClient, data: bytes, headers: dict[str, str], *,
                   skip: tuple[str, ...] = ()) -> ClientResponse:
    # Large bodies go as a stream: aiohttp warns about big raw bytes, and warnings are errors here.
    payload: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 512 * 1024 else data
    return await client.post(URL, data=payload, headers={"User-Agent": UA_CHROME_WIN, **headers},
                             skip_auto_headers=skip)


async def listed(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    resp = await client.get(URL, params={"limit": "100"}, headers=admin)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def stored_total(client: TestClient, admin: dict[str, str]) -> int:
    total: int = (await listed(client, admin))["total"]
    return total


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flowtel.db"


def db_query(tmp_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlitelib.connect(db_path(tmp_path))
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def hashes_by_id(tmp_path: Path) -> dict[str, str]:
    return dict(db_query(tmp_path, "SELECT id, visitor_hash FROM events"))  # type: ignore[arg-type]


async def created(resp: ClientResponse) -> dict[str, Any]:
    assert resp.status == 201, await resp.text()
    assert resp.headers["Content-Type"] == JSON_CT
    body: dict[str, Any] = await resp.json()
    return body


# --- body shapes and responses ------------------------------------------------------------------------------------


async def test_single_event_returns_the_full_stored_event(client: TestClient, admin: dict[str, str]) -> None:
    resp = await post(client, ev(
        eventType="Product Viewed",
        properties={"productId": "p-1", "price": 19.99, "tags": ["a", "b"], "nested": {"k": None}, "name": "Tëst ✓"},
        url="https://shop.example/products/blue-shirt?utm_source=x#top",
        referrer="https://www.google.com/",
        timestamp="2026-11-26T03:00:00.5Z",
        unknownField="ignored",
    ))
    event = await created(resp)
    assert set(event) == EVENT_KEYS
    assert set(event["context"]) == CONTEXT_KEYS
    assert uuid.UUID(event["id"]).version == 7 and event["id"] == event["id"].lower()
    assert event["shopId"] == "shop-1"
    assert event["sessionId"] == "sess-1"
    assert event["eventType"] == "product_view"
    assert event["eventName"] == "Product Viewed"
    assert event["properties"] == {"productId": "p-1", "price": 19.99, "tags": ["a", "b"], "nested": {"k": None},
                                   "name": "Tëst ✓"}
    assert event["timestamp"] == "2026-11-26T03:00:00.500Z"
    assert event["url"] == "https://shop.example/products/blue-shirt?utm_source=x#top"
    assert event["referrer"] == "https://www.google.com/"
    assert event["userAgent"] == UA_CHROME_WIN
    assert event["createdAt"] == NOW_ISO
    assert event["context"] == {"path": "/products/blue-shirt", "browser": "Chrome", "os": "Windows",
                                "device": "desktop", "country": None, "isBot": False}
    # What was answered is what is stored.
    resp = await client.get(f"{URL}/{event['id']}", headers=admin)
    assert resp.status == 200
    assert await resp.json() == event
    assert (await listed(client, admin))["data"] == [event]


async def test_single_event_defaults(client: TestClient) -> None:
    event = await created(await post(client, ev()))
    assert event["eventName"] == "page_view"
    assert event["properties"] == {}
    assert event["timestamp"] == NOW_ISO
    assert event["createdAt"] == NOW_ISO
    assert event["url"] is None and event["referrer"] is None
    assert event["context"]["path"] is None
    assert event["context"]["country"] is None


async def test_answer_means_committed_to_sqlite(client: TestClient, tmp_path: Path) -> None:
    event = await created(await post(client, ev(id=ID_A)))
    assert db_query(tmp_path, "SELECT id, shop_id FROM events") == [(event["id"], "shop-1")]
    body = await created(await post(client, [ev(id=ID_B), ev(id=ID_C)]))
    assert body["accepted"] == 2
    assert sorted(r[0] for r in db_query(tmp_path, "SELECT id FROM events")) == sorted([ID_A, ID_B, ID_C])


@pytest.mark.parametrize("envelope", [False, True], ids=["array", "envelope"])
async def test_batch_results_in_input_order(client: TestClient, admin: dict[str, str], envelope: bool) -> None:
    items = [ev(id=ID_B, eventName="first"), ev(eventName="second"), ev(id=ID_A, eventName="third"),
             ev(eventName="fourth")]
    body = await created(await post(client, {"events": items, "sentAt": NOW_ISO} if envelope else items))
    assert set(body) == {"accepted", "duplicates", "results"}
    assert body["accepted"] == 4 and body["duplicates"] == 0
    results = body["results"]
    assert [r["status"] for r in results] == ["created"] * 4
    assert all(set(r) == {"id", "status"} for r in results)
    assert results[0]["id"] == ID_B and results[2]["id"] == ID_A
    assert len({r["id"] for r in results}) == 4
    for r in results:
        assert uuid.UUID(r["id"]) and r["id"] == r["id"].lower()
    names = {e["id"]: e["eventName"] for e in (await listed(client, admin))["data"]}
    assert [names[r["id"]] for r in results] == ["first", "second", "third", "fourth"]


# --- content type, encoding, size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
     "text/plain;charset=UTF-8", None],
)
async def test_accepted_content_types(client: TestClient, admin: dict[str, str], content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    skip = ("Content-Type",) if content_type is None else ()
    resp = await post_raw(client, orjson.dumps(ev(id=ID_A)), headers, skip=skip)
    event = await created(resp)
    assert event["id"] == ID_A
    assert await stored_total(client, admin) == 1


async def test_absent_content_type_really_is_absent(aiohttp_server: Any) -> None:
    """Guard for the test above: skip_auto_headers sends no Content-Type at all."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Content-Type"))
        return web.Response()

    app = web.Application()
    app.router.add_post("/", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        async with session.post(server.make_url("/"), data=b"{}", skip_auto_headers=("Content-Type",)) as resp:
            assert resp.status == 200
    assert seen == [None]


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", "text/html",
     "application/octet-stream"],
)
async def test_other_content_types_are_415(client: TestClient, admin: dict[str, str], content_type: str) -> None:
    resp = await post_raw(client, orjson.dumps(ev()), {"Content-Type": content_type})
    await assert_error(resp, 415, "unsupported_media_type")
    assert await stored_total(client, admin) == 0


async def test_form_and_multipart_bodies_are_415(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post(URL, data={"shopId": "shop-1", "sessionId": "a", "eventType": "x"})
    await assert_error(resp, 415, "unsupported_media_type")
    form = aiohttp.FormData()
    form.add_field("event", orjson.dumps(ev()).decode(), content_type="application/json")
    form.add_field("file", b"x", filename="x.bin")
    resp = await client.post(URL, data=form)
    await assert_error(resp, 415, "unsupported_media_type")
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_gzip_body(client: TestClient, admin: dict[str, str], content_type: str | None) -> None:
    headers = {"Content-Encoding": "gzip"}
    if content_type:
        headers["Content-Type"] = content_type
    body = [ev(id=ID_A), ev(id=ID_B)]
    resp = await post_raw(client, gzip.compress(orjson.dumps(body)), headers,
                          skip=("Content-Type",) if content_type is None else ())
    result = await created(resp)
    assert result["accepted"] == 2
    assert await stored_total(client, admin) == 2
    single = await created(await post_raw(client, gzip.compress(orjson.dumps(ev(id=ID_C))), headers,
                                          skip=("Content-Type",) if content_type is None else ()))
    assert single["id"] == ID_C


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"definitely not gzip", id="not-gzip"),
        pytest.param(gzip.compress(orjson.dumps(ev()))[:-10], id="truncated"),
        pytest.param(orjson.dumps(ev()), id="plain-json-labelled-gzip"),
    ],
)
async def test_bad_gzip_is_400(client: TestClient, admin: dict[str, str], data: bytes) -> None:
    resp = await post_raw(client, data, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    await assert_error(resp, 400, "invalid_json")
    assert await stored_total(client, admin) == 0


async def test_unsupported_content_encoding_is_415(client: TestClient, admin: dict[str, str]) -> None:
    resp = await post_raw(client, orjson.dumps(ev()), {"Content-Type": "application/json", "Content-Encoding": "br"})
    await assert_error(resp, 415, "unsupported_media_type")
    assert await stored_total(client, admin) == 0


async def test_gzip_bomb_is_413_and_stores_nothing(client: TestClient, admin: dict[str, str]) -> None:
    # 50 MiB of JSON (a valid batch padded with whitespace) that is ~50 KiB on the wire.
    payload = orjson.dumps([ev(id=ID_A)])
    bomb = gzip.compress(payload[:-1] + b" " * (50 * MIB) + b"]", compresslevel=9)
    assert len(bomb) < MIB
    resp = await post_raw(client, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    await assert_error(resp, 413, "payload_too_large")
    zeros = gzip.compress(bytes(50 * MIB), compresslevel=9)
    resp = await post_raw(client, zeros, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    await assert_error(resp, 413, "payload_too_large")
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_one_mib_of_json_is_the_limit(client: TestClient, admin: dict[str, str], compressed: bool) -> None:
    payload = orjson.dumps([ev(id=ID_A)])

    def padded(size: int) -> bytes:
        data = payload[:-1] + b" " * (size - len(payload)) + b"]"
        assert len(data) == size
        return gzip.compress(data) if compressed else data

    headers = {"Content-Type": "application/json", **({"Content-Encoding": "gzip"} if compressed else {})}
    resp = await post_raw(client, padded(MIB + 1), headers)
    await assert_error(resp, 413, "payload_too_large")
    assert await stored_total(client, admin) == 0
    body = await created(await post_raw(client, padded(MIB), headers))
    assert body["accepted"] == 1


async def test_body_far_over_one_mib_is_413(client: TestClient, admin: dict[str, str]) -> None:
    events = [ev(properties={"pad": "x" * 30_000}) for _ in range(80)]  # ~2.4 MiB
    resp = await post_raw(client, orjson.dumps(events), {"Content-Type": "application/json"})
    await assert_error(resp, 413, "payload_too_large")
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("envelope", [False, True], ids=["array", "envelope"])
async def test_500_events_ok_501_events_413(client: TestClient, admin: dict[str, str], envelope: bool) -> None:
    def batch(n: int) -> Any:
        items = [ev(sessionId=f"s{i}") for i in range(n)]
        return {"events": items, "sentAt": NOW_ISO} if envelope else items

    await assert_error(await post(client, batch(501)), 413, "payload_too_large")
    assert await stored_total(client, admin) == 0
    body = await created(await post(client, batch(500)))
    assert body["accepted"] == 500 and body["duplicates"] == 0 and len(body["results"]) == 500
    assert await stored_total(client, admin) == 500


# --- validation ---------------------------------------------------------------------------------------------------


def nested_dicts(levels: int) -> dict[str, Any]:
    obj: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        obj = {"n": obj}
    return obj


def props_of_size(size: int) -> dict[str, Any]:
    return {"k": "x" * (size - len(b'{"k":""}'))}


INVALID = [
    ("shopId", MISSING),
    ("shopId", None),
    ("shopId", 42),
    ("shopId", ""),
    ("shopId", "   "),
    ("shopId", "shop one"),
    ("shopId", "shop/1"),
    ("shopId", "a" * 65),
    ("shopId", "shop-1\n"),
    ("sessionId", MISSING),
    ("sessionId", 42),
    ("sessionId", ""),
    ("sessionId", "x" * 129),
    ("sessionId", "a\x00b"),
    ("sessionId", "line\nbreak"),
    ("eventType", MISSING),
    ("eventType", ["page_view"]),
    ("eventType", ""),
    ("eventType", "x" * 101),
    ("eventType", "bell\x07"),
    ("eventName", 5),
    ("eventName", "x" * 201),
    ("properties", ["a"]),
    ("properties", "{}"),
    ("properties", 1),
    ("properties", nested_dicts(9)),
    ("properties", {"a": [[[[[[[[1]]]]]]]]}),  # the object plus 8 arrays: 9 levels
    ("properties", props_of_size(32 * 1024 + 1)),
    ("url", "https://shop.example/" + "x" * 2028),
    ("url", 1),
    ("referrer", "https://ref.example/" + "x" * 2029),
    ("userAgent", "x" * 1025),
    ("userAgent", 1),
    ("id", "not-a-uuid"),
    ("id", 123),
    ("id", ID_A[:-1]),
    ("id", ID_A + "\n"),
    ("timestamp", "not a time"),
    ("timestamp", "2026-02-30T10:00:00Z"),
    ("timestamp", "2026-11-26T25:00:00Z"),
    ("timestamp", ""),
    ("timestamp", NOW_MS),
    ("timestamp", True),
    ("timestamp", ms_iso(NOW_MS + HOUR_MS + 1)),
    ("timestamp", "2027-01-01T00:00:00Z"),
    ("timestamp", "1999-12-31T23:59:59.999Z"),
    ("timestamp", "2000-01-01T00:30:00+01:00"),
]


def _case_id(field: str, value: Any) -> str:
    return f"{field}={'MISSING' if value is MISSING else repr(value)[:32]}"


@pytest.mark.parametrize(("field", "value"), [pytest.param(f, v, id=_case_id(f, v)) for f, v in INVALID])
async def test_invalid_event_is_400_naming_the_field(client: TestClient, admin: dict[str, str], field: str,
                                                     value: Any) -> None:
    bad = ev(**{field: value})
    error = await assert_error(await post(client, bad), 400, "validation_failed")
    assert error["details"] == [{"field": field, "message": error["details"][0]["message"]}]
    assert isinstance(error["details"][0]["message"], str) and error["details"][0]["message"]

    error = await assert_error(await post(client, [ev(id=ID_B), bad, ev()]), 400, "validation_failed")
    assert len(error["details"]) == 1
    detail = error["details"][0]
    assert set(detail) == {"index", "field", "message"}
    assert (detail["index"], detail["field"]) == (1, field)
    assert isinstance(detail["message"], str) and detail["message"]

    error = await assert_error(await post(client, {"events": [bad], "sentAt": NOW_ISO}), 400, "validation_failed")
    assert [(d["index"], d["field"]) for d in error["details"]] == [(0, field)]
    assert await stored_total(client, admin) == 0


VALID = [
    ("shopId", "a" * 64),
    ("shopId", "Shop_1.eu-west"),
    ("sessionId", "x" * 128),
    ("sessionId", "sëssion ✓"),
    ("eventType", "x" * 100),
    ("eventName", "x" * 200),
    ("properties", nested_dicts(8)),
    ("properties", {"a": [[[[[[[1]]]]]]]}),  # the object plus 7 arrays: 8 levels
    ("properties", props_of_size(32 * 1024)),
    ("url", "https://shop.example/" + "x" * 2027),
    ("referrer", "https://ref.example/" + "x" * 2028),
    ("userAgent", "x" * 1024),
    ("timestamp", ms_iso(NOW_MS + HOUR_MS)),
    ("timestamp", "2000-01-01T00:00:00.000Z"),
]


@pytest.mark.parametrize(("field", "value"), [pytest.param(f, v, id=_case_id(f, v)) for f, v in VALID])
async def test_values_at_the_limits_are_stored(client: TestClient, admin: dict[str, str], field: str,
                                               value: Any) -> None:
    event = await created(await post(client, ev(**{field: value})))
    if field == "timestamp":
        assert event["timestamp"] == value
    elif field != "eventType":
        assert event[field] == value
    resp = await client.get(f"{URL}/{event['id']}", headers=admin)
    assert await resp.json() == event


async def test_all_problems_reported_with_indexes(client: TestClient, admin: dict[str, str]) -> None:
    body = [ev(), ev(shopId="bad shop", sessionId=""), ev(), ev(eventType=MISSING, timestamp="nope")]
    error = await assert_error(await post(client, body), 400, "validation_failed")
    assert [(d["index"], d["field"]) for d in error["details"]] == [
        (1, "shopId"), (1, "sessionId"), (3, "eventType"), (3, "timestamp"),
    ]
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("item", [1, "event", None, True, [], [{"shopId": "shop-1"}]])
async def test_non_object_items_are_400(client: TestClient, admin: dict[str, str], item: Any) -> None:
    error = await assert_error(await post(client, [ev(), item]), 400, "validation_failed")
    assert len(error["details"]) == 1
    assert error["details"][0]["index"] == 1
    assert isinstance(error["details"][0]["field"], str) and error["details"][0]["message"]
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("body", [[], {"events": []}, {"events": [], "sentAt": NOW_ISO}],
                         ids=["array", "envelope", "envelope-sentAt"])
async def test_empty_batch_is_400(client: TestClient, body: Any) -> None:
    await assert_error(await post(client, body), 400, "validation_failed")


@pytest.mark.parametrize("body", [42, "event", None, True, {"events": "x"}, {"events": {"shopId": "s"}}])
async def test_body_of_the_wrong_shape_is_400(client: TestClient, admin: dict[str, str], body: Any) -> None:
    resp = await post_raw(client, orjson.dumps(body), {"Content-Type": "application/json"})
    await assert_error(resp, 400, "validation_failed")
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize(
    "data",
    [b"{", b'{"shopId": "shop-1",}', b'[{"shopId": "a"}', b"not json", b"", b"NaN", b"\xff\xfe{}",
     b'{"shopId": "shop-1", "sessionId": "a", "eventType": "x"} trailing'],
)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_invalid_json_is_400(client: TestClient, admin: dict[str, str], data: bytes, content_type: str) -> None:
    await assert_error(await post_raw(client, data, {"Content-Type": content_type}), 400, "invalid_json")
    assert await stored_total(client, admin) == 0


@pytest.mark.parametrize("sent_at", ["not a time", 1795666517123])
async def test_bad_sent_at_is_400(client: TestClient, admin: dict[str, str], sent_at: Any) -> None:
    error = await assert_error(await post(client, {"events": [ev()], "sentAt": sent_at}), 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == ["sentAt"]
    assert await stored_total(client, admin) == 0


# --- atomic batches -----------------------------------------------------------------------------------------------


async def test_batch_with_one_bad_event_stores_nothing(client: TestClient, admin: dict[str, str],
                                                       tmp_path: Path) -> None:
    batch = [ev(id=ID_A), ev(id=ID_B), ev(id=ID_C, timestamp="2030-01-01T00:00:00Z")]
    error = await assert_error(await post(client, batch), 400, "validation_failed")
    assert [(d["index"], d["field"]) for d in error["details"]] == [(2, "timestamp")]
    assert await stored_total(client, admin) == 0
    assert db_query(tmp_path, "SELECT count(*) FROM events") == [(0,)]
    # Fixing the bad event stores the whole batch, every event new.
    batch[2] = ev(id=ID_C)
    body = await created(await post(client, batch))
    assert body["accepted"] == 3
    assert [r["status"] for r in body["results"]] == ["created"] * 3


async def test_rejected_batch_with_a_stored_duplicate_changes_nothing(client: TestClient,
                                                                     admin: dict[str, str]) -> None:
    await created(await post(client, ev(id=ID_A)))
    await assert_error(await post(client, [ev(id=ID_A), ev(id=ID_B), ev(shopId="")]), 400, "validation_failed")
    assert [e["id"] for e in (await listed(client, admin))["data"]] == [ID_A]


async def test_storage_failure_mid_batch_stores_nothing(client: TestClient, admin: dict[str, str],
                                                       tmp_path: Path) -> None:
    # Fault injection below the server: SQLite itself refuses the batch's third row.
    conn = sqlitelib.connect(db_path(tmp_path))
    conn.execute("CREATE TRIGGER refuse_boom BEFORE INSERT ON events WHEN NEW.shop_id = 'boom' "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    conn.commit()
    conn.close()
    resp = await post(client, [ev(id=ID_A), ev(id=ID_B), ev(id=ID_C, shopId="boom")])
    assert resp.status in (500, 503), await resp.text()
    assert resp.headers["Content-Type"] == JSON_CT
    body = await resp.json()
    assert set(body) == {"error"} and body["error"]["code"] in ("overloaded", "internal_error")
    assert body["error"]["message"]
    assert await stored_total(client, admin) == 0
    assert db_query(tmp_path, "SELECT count(*) FROM events") == [(0,)]
    # The writer survives: the same events without the refused one go through, all new.
    result = await created(await post(client, [ev(id=ID_A), ev(id=ID_B)]))
    assert result["accepted"] == 2


# --- idempotency --------------------------------------------------------------------------------------------------


async def test_same_single_event_twice_returns_the_original(client: TestClient, admin: dict[str, str],
                                                            clock: FakeClock) -> None:
    first = await created(await post(client, ev(id=ID_A, properties={"v": 1}, eventName="original")))
    clock.advance(5_000)
    resp = await post(client, ev(id=ID_A, properties={"v": 2}, eventName="retry", sessionId="other",
                                 timestamp=ms_iso(NOW_MS + 1000)))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == JSON_CT
    second = await resp.json()
    assert second == first
    assert second["properties"] == {"v": 1} and second["createdAt"] == NOW_ISO
    body = await listed(client, admin)
    assert body["total"] == 1 and body["data"] == [first]


async def test_uppercase_id_is_the_same_id(client: TestClient, admin: dict[str, str]) -> None:
    first = await created(await post(client, ev(id=ID_A.upper())))
    assert first["id"] == ID_A
    resp = await post(client, ev(id=ID_A))
    assert resp.status == 200 and (await resp.json()) == first
    resp = await post(client, ev(id=ID_A.upper(), properties={"x": 1}))
    assert resp.status == 200 and (await resp.json()) == first
    body = await created(await post(client, [ev(id=ID_A.upper()), ev(id=ID_B.upper())]))
    assert body["results"] == [{"id": ID_A, "status": "duplicate"}, {"id": ID_B, "status": "created"}]
    assert await stored_total(client, admin) == 2


async def test_retried_batch_is_all_duplicates(client: TestClient, admin: dict[str, str], clock: FakeClock) -> None:
    batch = [ev(id=ID_A), ev(id=ID_B, eventType="purchase"), ev(id=ID_C, sessionId="s2")]
    first = await created(await post(client, batch))
    assert first == {"accepted": 3, "duplicates": 0,
                     "results": [{"id": i, "status": "created"} for i in (ID_A, ID_B, ID_C)]}
    before = await listed(client, admin)
    clock.advance(1000)
    retry = await created(await post(client, {"events": batch, "sentAt": ms_iso(NOW_MS + 1000)}))
    assert retry == {"accepted": 0, "duplicates": 3,
                     "results": [{"id": i, "status": "duplicate"} for i in (ID_A, ID_B, ID_C)]}
    assert await listed(client, admin) == before


async def test_partly_retried_batch(client: TestClient, admin: dict[str, str]) -> None:
    await created(await post(client, ev(id=ID_B)))
    body = await created(await post(client, [ev(id=ID_A), ev(id=ID_B), ev(id=ID_C)]))
    assert body["accepted"] == 2 and body["duplicates"] == 1
    assert [r["status"] for r in body["results"]] == ["created", "duplicate", "created"]
    assert [r["id"] for r in body["results"]] == [ID_A, ID_B, ID_C]
    assert await stored_total(client, admin) == 3


async def test_duplicates_within_one_batch(client: TestClient, admin: dict[str, str]) -> None:
    body = await created(await post(client, [ev(id=ID_A, eventName="one"), ev(id=ID_B), ev(id=ID_A, eventName="two"),
                                             ev(id=ID_A.upper(), eventName="three")]))
    assert body == {"accepted": 2, "duplicates": 2, "results": [
        {"id": ID_A, "status": "created"}, {"id": ID_B, "status": "created"},
        {"id": ID_A, "status": "duplicate"}, {"id": ID_A, "status": "duplicate"},
    ]}
    data = (await listed(client, admin))["data"]
    assert len(data) == 2
    assert {e["id"]: e["eventName"] for e in data}[ID_A] == "one"


async def test_concurrent_posts_of_one_id_store_it_once(client: TestClient, admin: dict[str, str]) -> None:
    responses = await asyncio.gather(*(post(client, ev(id=ID_A, eventName=f"n{i}")) for i in range(8)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 7 + [201]
    bodies = [await r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert await stored_total(client, admin) == 1


async def test_single_then_batch_then_single(client: TestClient) -> None:
    await created(await post(client, ev(id=ID_A)))
    body = await created(await post(client, [ev(id=ID_A), ev(id=ID_B)]))
    assert [r["status"] for r in body["results"]] == ["duplicate", "created"]
    resp = await post(client, ev(id=ID_B))
    assert resp.status == 200


# --- event types --------------------------------------------------------------------------------------------------

ALIASES = {
    "page_view": ["pageview", "page_viewed", "$pageview", "Page Viewed"],
    "product_view": ["product_viewed", "view_item", "Product Viewed"],
    "add_to_cart": ["product_added_to_cart", "Product Added"],
    "remove_from_cart": ["product_removed_from_cart", "Product Removed"],
    "checkout_start": ["checkout_started", "begin_checkout", "Checkout Started"],
    "purchase": ["checkout_completed", "Order Completed"],
    "search": ["search_submitted", "Products Searched"],
}


async def test_every_alias_is_normalised(client: TestClient, admin: dict[str, str]) -> None:
    sent: list[tuple[str, str]] = []
    for canonical, aliases in ALIASES.items():
        for name in [canonical, *aliases]:
            sent += [(name, canonical), (name.upper(), canonical), (f"  {name.lower()} ", canonical),
                     (name.swapcase(), canonical)]
    body = await created(await post(client, [ev(eventType=name) for name, _ in sent]))
    assert body["accepted"] == len(sent)
    events: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        resp = await client.get(URL, params={"limit": "100", "page": str(page)}, headers=admin)
        data = (await resp.json())["data"]
        if not data:
            break
        events.update((e["id"], e) for e in data)
        page += 1
    for result, (name, canonical) in zip(body["results"], sent, strict=True):
        event = events[result["id"]]
        assert event["eventType"] == canonical, name
        assert event["eventName"] == name  # the type as sent, untrimmed


@pytest.mark.parametrize("event_type", ["Newsletter Signup", "custom_event", "page view", "PageView2"])
async def test_unknown_types_are_kept_as_sent(client: TestClient, event_type: str) -> None:
    event = await created(await post(client, ev(eventType=event_type)))
    assert event["eventType"] == event_type and event["eventName"] == event_type


async def test_event_name_given_is_kept(client: TestClient) -> None:
    event = await created(await post(client, ev(eventType="Order Completed", eventName="Thank-you page")))
    assert event["eventType"] == "purchase" and event["eventName"] == "Thank-you page"


# --- timestamps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-11-26T01:02:03", "2026-11-26T01:02:03.000Z"),
        ("2026-11-26T01:02:03.4", "2026-11-26T01:02:03.400Z"),
        ("2026-11-26T01:02:03.456789Z", "2026-11-26T01:02:03.456Z"),
        ("2026-11-26T03:02:03.007+02:00", "2026-11-26T01:02:03.007Z"),
        ("2026-11-25T20:32:03-04:30", "2026-11-26T01:02:03.000Z"),
        ("2026-11-26T01:02:03+00:00", "2026-11-26T01:02:03.000Z"),
    ],
)
async def test_timestamps_are_converted_to_utc_with_ms(client: TestClient, sent: str, stored: str) -> None:
    event = await created(await post(client, ev(timestamp=sent)))
    assert event["timestamp"] == stored


async def test_default_timestamp_is_the_clock(client: TestClient, clock: FakeClock) -> None:
    clock.advance(42_000)
    event = await created(await post(client, ev()))
    assert event["timestamp"] == "2026-11-26T04:15:59.123Z" == event["createdAt"]


async def test_future_tolerance_boundary(client: TestClient, admin: dict[str, str]) -> None:
    ok = await created(await post(client, ev(timestamp=ms_iso(NOW_MS + HOUR_MS))))
    assert ok["timestamp"] == "2026-11-26T05:15:17.123Z"
    ok = await created(await post(client, ev(timestamp="2026-11-26T06:15:17.123+01:00")))
    assert ok["timestamp"] == "2026-11-26T05:15:17.123Z"
    await assert_error(await post(client, ev(timestamp=ms_iso(NOW_MS + HOUR_MS + 1))), 400, "validation_failed")
    assert await stored_total(client, admin) == 2


# --- sentAt skew correction ---------------------------------------------------------------------------------------


async def test_sent_at_behind_shifts_timestamps_forward(client: TestClient, admin: dict[str, str]) -> None:
    skew = 10 * 60_000
    body = {
        "sentAt": ms_iso(NOW_MS - skew),
        "events": [ev(id=ID_A, timestamp=ms_iso(NOW_MS - skew - 5_000)),
                   ev(id=ID_B, timestamp=ms_iso(NOW_MS - skew - 3 * HOUR_MS)),
                   ev(id=ID_C)],
    }
    await created(await post(client, body))
    stamps = {e["id"]: e["timestamp"] for e in (await listed(client, admin))["data"]}
    assert stamps == {ID_A: ms_iso(NOW_MS - 5_000), ID_B: ms_iso(NOW_MS - 3 * HOUR_MS), ID_C: NOW_ISO}


async def test_sent_at_ahead_shifts_timestamps_back(client: TestClient, admin: dict[str, str]) -> None:
    # A client clock 2 h fast: its "now" would be rejected as future without the correction.
    skew = 2 * HOUR_MS
    body = {"sentAt": ms_iso(NOW_MS + skew), "events": [ev(id=ID_A, timestamp=ms_iso(NOW_MS + skew - 1_000))]}
    await created(await post(client, body))
    (event,) = (await listed(client, admin))["data"]
    assert event["timestamp"] == ms_iso(NOW_MS - 1_000)


@pytest.mark.parametrize("offset_ms", [-60_000, -59_000, -1_000, 0, 30_000, 60_000])
async def test_sent_at_within_60s_does_not_shift(client: TestClient, admin: dict[str, str], offset_ms: int) -> None:
    ts = ms_iso(NOW_MS - 10 * 60_000)
    await created(await post(client, {"sentAt": ms_iso(NOW_MS + offset_ms), "events": [ev(id=ID_A, timestamp=ts)]}))
    (event,) = (await listed(client, admin))["data"]
    assert event["timestamp"] == ts


async def test_sent_at_61s_behind_shifts(client: TestClient, admin: dict[str, str]) -> None:
    ts = ms_iso(NOW_MS - 10 * 60_000)
    await created(await post(client, {"sentAt": ms_iso(NOW_MS - 61_000), "events": [ev(id=ID_A, timestamp=ts)]}))
    (event,) = (await listed(client, admin))["data"]
    assert event["timestamp"] == ms_iso(NOW_MS - 10 * 60_000 + 61_000)


# --- context: user agent, bots, device ----------------------------------------------------------------------------


async def test_user_agent_defaults_to_the_header(client: TestClient) -> None:
    event = await created(await post(client, ev(), ua=UA_IPHONE))
    assert event["userAgent"] == UA_IPHONE
    assert event["context"]["device"] == "mobile" and event["context"]["os"] == "iOS"
    event = await created(await post(client, ev(userAgent=UA_CHROME_WIN), ua=UA_IPHONE))
    assert event["userAgent"] == UA_CHROME_WIN and event["context"]["device"] == "desktop"
    resp = await client.post(URL, json=ev(), skip_auto_headers=("User-Agent",))
    event = await created(resp)
    assert event["userAgent"] is None
    assert event["context"]["device"] == "other" and event["context"]["isBot"] is False


@pytest.mark.parametrize(
    ("ua", "device", "is_bot"),
    [(UA_CHROME_WIN, "desktop", False), (UA_IPHONE, "mobile", False), (UA_IPAD, "tablet", False),
     (UA_GOOGLEBOT, "bot", True)],
    ids=["windows-chrome", "iphone", "ipad", "googlebot"],
)
@pytest.mark.parametrize("via", ["header", "field"])
async def test_device_and_bot_flag(client: TestClient, admin: dict[str, str], ua: str, device: str, is_bot: bool,
                                   via: str) -> None:
    if via == "header":
        event = await created(await post(client, ev(), ua=ua))
    else:
        event = await created(await post(client, ev(userAgent=ua), ua=UA_CHROME_WIN))
    assert event["userAgent"] == ua
    assert event["context"]["device"] == device
    assert event["context"]["isBot"] is is_bot
    # Bots are stored too, flagged.
    assert (await listed(client, admin))["data"] == [event]


async def test_derived_fields_cannot_be_sent_as_input(client: TestClient) -> None:
    event = await created(await post(client, ev(
        createdAt="2001-01-01T00:00:00.000Z",
        context={"isBot": False, "device": "desktop", "country": "FR", "path": "/fake", "browser": "X", "os": "Y"},
        visitorHash="abc", url="https://shop.example/real",
    ), ua=UA_GOOGLEBOT, **{"CF-IPCountry": "DE"}))
    assert event["createdAt"] == NOW_ISO
    assert event["context"]["isBot"] is True and event["context"]["device"] == "bot"
    assert event["context"]["country"] is None  # proxy headers are not trusted by default
    assert event["context"]["path"] == "/real"
    assert "visitorHash" not in event


async def test_country_from_a_trusted_proxy(make_client: Any) -> None:
    client = await make_client(trust_proxy=True)
    event = await created(await post(client, ev(), **{"CF-IPCountry": "de"}))
    assert event["context"]["country"] == "DE"
    event = await created(await post(client, ev()))
    assert event["context"]["country"] is None


# --- visitor hash and client IP -----------------------------------------------------------------------------------


def _all_stored_values(tmp_path: Path) -> list[Any]:
    conn = sqlitelib.connect(db_path(tmp_path))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        values: list[Any] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                values.extend(row)
        return values
    finally:
        conn.close()


async def test_client_ip_is_never_stored(make_client: Any, tmp_path: Path) -> None:
    ip = "203.0.113.77"
    client = await make_client(trust_proxy=True)
    headers = {"X-Forwarded-For": f"{ip}, 10.0.0.1"}
    single = await created(await post(client, ev(id=ID_A, url="https://shop.example/"), **headers))
    batch = await created(await post(client, {"events": [ev(id=ID_B), ev(id=ID_C, eventType="purchase")],
                                              "sentAt": NOW_ISO}, **headers))
    assert batch["accepted"] == 2
    assert ip not in orjson.dumps(single).decode()
    values = _all_stored_values(tmp_path)
    assert len([v for v in values if v in (ID_A, ID_B, ID_C)]) == 3  # the scan does see the events
    packed = ipaddress.ip_address(ip).packed
    for value in values:
        if isinstance(value, str):
            assert ip not in value and "10.0.0.1" not in value and packed.hex() not in value.lower()
        elif isinstance(value, bytes):
            assert ip.encode() not in value and packed not in value
    # Nor in the raw pages of the database or its write-ahead log.
    for path in tmp_path.glob("flowtel.db*"):
        assert ip.encode() not in path.read_bytes(), path.name


async def test_visitor_hash_is_never_output(client: TestClient, admin: dict[str, str], tmp_path: Path) -> None:
    single = await post(client, ev(id=ID_A))
    single_text = await single.text()
    assert single.status == 201
    batch_text = await (await post(client, [ev(id=ID_B)])).text()
    list_text = await (await client.get(URL, headers=admin)).text()
    by_id_text = await (await client.get(f"{URL}/{ID_A}", headers=admin)).text()
    hashes = hashes_by_id(tmp_path)
    assert set(hashes) == {ID_A, ID_B}
    for visitor in hashes.values():
        assert visitor
        for text in (single_text, batch_text, list_text, by_id_text):
            assert visitor not in text
    for text in (single_text, list_text, by_id_text):
        assert "visitor" not in text.lower()


async def test_visitor_hash_same_visitor_same_day(make_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    client = await make_client(trust_proxy=True)
    ids = [str(uuid.uuid4()) for _ in range(7)]
    ip_a = {"X-Forwarded-For": "203.0.113.77"}
    ip_b = {"X-Forwarded-For": "198.51.100.9"}
    await created(await post(client, ev(id=ids[0], sessionId="s1"), **ip_a))
    clock.advance(HOUR_MS)
    await created(await post(client, ev(id=ids[1], sessionId="s2"), **ip_a))  # same IP+UA, same day
    await created(await post(client, ev(id=ids[2]), ua=UA_IPHONE, **ip_a))  # other UA
    await created(await post(client, ev(id=ids[3]), **ip_b))  # other IP
    await created(await post(client, ev(id=ids[4], shopId="shop-2"), **ip_a))  # other shop
    await created(await post(client, ev(id=ids[5], userAgent=UA_IPHONE), **ip_a))  # UA from the field
    clock.advance(DAY_MS)  # the next UTC day: a new salt
    await created(await post(client, ev(id=ids[6]), **ip_a))
    h = hashes_by_id(tmp_path)
    assert h[ids[0]] == h[ids[1]]
    assert h[ids[2]] == h[ids[5]]
    others = [h[ids[0]], h[ids[2]], h[ids[3]], h[ids[4]], h[ids[6]]]
    assert len(set(others)) == len(others)


async def test_forwarded_for_is_ignored_without_trust_proxy(client: TestClient, tmp_path: Path) -> None:
    await created(await post(client, ev(id=ID_A), **{"X-Forwarded-For": "203.0.113.77"}))
    await created(await post(client, ev(id=ID_B), **{"X-Forwarded-For": "198.51.100.9"}))
    h = hashes_by_id(tmp_path)
    assert h[ID_A] == h[ID_B]


# --- overload -----------------------------------------------------------------------------------------------------


async def test_full_write_queue_is_503_with_retry_after(make_client: Any, admin: dict[str, str]) -> None:
    client = await make_client(write_queue_events=1)
    await created(await post(client, ev(id=ID_A)))  # also creates today's visitor-hash salt
    store = client.app[STORE]
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def hold_the_writer(conn: Any) -> None:
        entered.set()
        await gate.wait()

    blocker = asyncio.ensure_future(store.write(hold_the_writer))
    try:
        await asyncio.wait_for(entered.wait(), 5)
        queued = asyncio.ensure_future(post(client, ev(id=ID_B)))
        for _ in range(500):
            if store.queue_depth:
                break
            await asyncio.sleep(0.01)
        assert store.queue_depth == 1
        rejected_ids = [str(uuid.uuid4()) for _ in range(3)]
        for body in (ev(id=rejected_ids[0]), [ev(id=rejected_ids[1]), ev(id=rejected_ids[2])]):
            # A server that queued instead of refusing would hang here behind the held writer.
            resp = await asyncio.wait_for(post(client, body), 5)
            await assert_error(resp, 503, "overloaded")
            assert int(resp.headers["Retry-After"]) >= 1
    finally:
        gate.set()
        await blocker
    resp = await queued
    assert resp.status == 201 and (await resp.json())["id"] == ID_B
    ids = {e["id"] for e in (await listed(client, admin))["data"]}
    assert ids == {ID_A, ID_B}
    # Once the queue drains, the retry goes through.
    assert (await created(await post(client, ev(id=rejected_ids[0]))))["id"] == rejected_ids[0]
