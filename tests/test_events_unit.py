"""Table-driven tests of the pure ingestion functions (server/events.py, server/context.py): no server, no I/O."""

from __future__ import annotations

import gzip
import tracemalloc
import uuid
import zlib
from typing import Any

import orjson
import pytest

from server.context import client_ip, country_of, parse_user_agent, path_of, visitor_hash
from server.errors import ApiError
from server.events import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    ParsedBody,
    RequestInfo,
    decode_body,
    format_ms,
    is_uuid,
    is_valid_shop_id,
    new_event_id,
    normalise_event_type,
    parse_body,
    parse_events,
    parse_instant,
)

NOW_MS = 1795666517123  # 2026-11-26T04:15:17.123Z
NOW_ISO = "2026-11-26T04:15:17.123Z"
MIN_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
HOUR_MS = 3_600_000
SALT = b"s" * 32
UA_CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/120.0.0.0 Safari/537.36")
UA_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.0 Mobile/15E148 Safari/604.1")
UA_IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.0 Mobile/15E148 Safari/604.1")
UA_ANDROID_PHONE = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/120.0.0.0 Mobile Safari/537.36")
UA_ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/120.0.0.0 Safari/537.36")
UA_MAC_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.0 Safari/605.1.15")
UA_LINUX_FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
UA_GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
UA_BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
UA_HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 "
               "Safari/537.36")
VALID_UUID = "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d"

MISSING = object()


def info(**overrides: Any) -> RequestInfo:
    base: dict[str, Any] = {"user_agent": UA_CHROME_WIN, "client_ip": "198.51.100.7", "country": None,
                            "now_ms": NOW_MS, "salt": SALT}
    base.update(overrides)
    return RequestInfo(**base)


def event(**fields: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"shopId": "shop-1", "sessionId": "sess-1", "eventType": "page_view"}
    for key, value in fields.items():
        if value is MISSING:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def nested_dicts(levels: int) -> dict[str, Any]:
    """An object `levels` objects deep (the outermost object is level 1)."""
    obj: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        obj = {"n": obj}
    return obj


def nested_lists(levels: int) -> dict[str, Any]:
    """An object holding arrays, `levels` containers deep in all (the object is level 1)."""
    inner: Any = [1]
    for _ in range(levels - 2):
        inner = [inner]
    return {"a": inner}


def props_of_size(size: int) -> dict[str, Any]:
    """An object whose compact JSON serialisation is exactly `size` bytes."""
    overhead = len(b'{"k":""}')
    return {"k": "x" * (size - overhead)}


def parse_ok(doc: Any, **info_overrides: Any) -> list[Any]:
    return parse_events(parse_body(orjson.dumps(doc)), info(**info_overrides))


def parse_fail(doc: Any, **info_overrides: Any) -> ApiError:
    with pytest.raises(ApiError) as exc_info:
        parse_ok(doc, **info_overrides)
    return exc_info.value


# --- normalise_event_type -----------------------------------------------------------------------------------------

ALIASES = [
    ("page_view", ["page_view", "pageview", "page_viewed", "$pageview", "Page Viewed"]),
    ("product_view", ["product_view", "product_viewed", "view_item", "Product Viewed"]),
    ("add_to_cart", ["add_to_cart", "product_added_to_cart", "Product Added"]),
    ("remove_from_cart", ["remove_from_cart", "product_removed_from_cart", "Product Removed"]),
    ("checkout_start", ["checkout_start", "checkout_started", "begin_checkout", "Checkout Started"]),
    ("purchase", ["purchase", "checkout_completed", "Order Completed"]),
    ("search", ["search", "search_submitted", "Products Searched"]),
]
ALIAS_CASES = [
    pytest.param(variant, canonical, id=f"{alias}->{canonical}:{kind}")
    for canonical, aliases in ALIASES
    for alias in aliases
    for kind, variant in (("as-is", alias), ("upper", alias.upper()), ("lower", alias.lower()),
                          ("padded", f"  {alias}\t"), ("swapcase", alias.swapcase()))
]


@pytest.mark.parametrize(("sent", "canonical"), ALIAS_CASES)
def test_normalise_event_type_aliases(sent: str, canonical: str) -> None:
    assert normalise_event_type(sent) == canonical


@pytest.mark.parametrize(
    "sent",
    ["Newsletter Signup", "custom_event", "PageView2", "page view", "page-view", "Order_Completed2", "  custom  ",
     "$identify", "Checkout"],
)
def test_normalise_event_type_keeps_unknown_types_as_sent(sent: str) -> None:
    assert normalise_event_type(sent) == sent


# --- shop ids and UUIDs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("s", True),
        ("shop-1", True),
        ("A.b_c-9", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        (" ", False),
        ("shop one", False),
        ("shop/1", False),
        ("shop:1", False),
        ("shöp", False),
        ("shop\t", False),
        ("shop1\n", False),  # `$` in a regex also matches before a trailing newline
        ("\nshop1", False),
    ],
)
def test_is_valid_shop_id(value: str, valid: bool) -> None:
    assert is_valid_shop_id(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (VALID_UUID, True),
        (VALID_UUID.upper(), True),
        ("00000000-0000-0000-0000-000000000000", True),
        (str(uuid.uuid4()), True),
        ("not-a-uuid", False),
        ("", False),
        (VALID_UUID[:-1], False),
        (VALID_UUID + "0", False),
        ("g" + VALID_UUID[1:], False),
        ("{" + VALID_UUID + "}", False),
        (" " + VALID_UUID, False),
        (VALID_UUID + " ", False),
        (VALID_UUID + "\n", False),  # `$` in a regex also matches before a trailing newline
        (VALID_UUID.replace("-", "_"), False),
    ],
)
def test_is_uuid(value: str, valid: bool) -> None:
    assert is_uuid(value) is valid


def test_new_event_id_is_a_time_ordered_lowercase_uuid7() -> None:
    ids = [new_event_id() for _ in range(50)]
    assert len(set(ids)) == 50
    for value in ids:
        assert value == value.lower() and is_uuid(value)
        assert uuid.UUID(value).version == 7
    assert ids == sorted(ids)


# --- time parsing and formatting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26T04:15:17.123Z", NOW_MS),
        ("2026-11-26T04:15:17.123+00:00", NOW_MS),
        ("2026-11-26T04:15:17.123", NOW_MS),  # no offset: UTC
        ("2026-11-26T05:15:17.123+01:00", NOW_MS),
        ("2026-11-25T23:15:17.123-05:00", NOW_MS),
        ("2026-11-26T09:45:17.123+05:30", NOW_MS),
        ("2026-11-26T04:15:17.123456Z", NOW_MS),  # sub-millisecond digits are dropped
        ("2026-11-26T04:15:17Z", NOW_MS - 123),
        ("2000-01-01T00:00:00Z", MIN_MS),
        ("1970-01-01T00:00:00Z", 0),
        ("not a time", None),
        ("", None),
        ("yesterday", None),
        ("2026-02-30T00:00:00Z", None),
        ("2026-13-01T00:00:00Z", None),
        ("2026-11-26T24:61:00Z", None),
        ("2026-11-26T04:15:17.123+25:00", None),
        ("26-11-2026", None),
        ("2026/11/26 04:15:17", None),
        ("1795666517123", None),
        ("T04:15:17Z", None),
        ("2026-11-26T04:15:17.123Z" + "0" * 40, None),
    ],
)
def test_parse_instant(value: str, expected: int | None) -> None:
    assert parse_instant(value) == expected


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (NOW_MS, NOW_ISO),
        (0, "1970-01-01T00:00:00.000Z"),
        (MIN_MS, "2000-01-01T00:00:00.000Z"),
        (NOW_MS - 123 + 5, "2026-11-26T04:15:17.005Z"),
        (NOW_MS + 999 - 123, "2026-11-26T04:15:17.999Z"),
        (1_798_761_599_999, "2026-12-31T23:59:59.999Z"),
    ],
)
def test_format_ms(ms: int, expected: str) -> None:
    assert format_ms(ms) == expected
    assert parse_instant(expected) == ms


# --- decode_body: media type, encoding, size ----------------------------------------------------------------------

BODY = b'{"shopId":"s","sessionId":"a","eventType":"x"}'


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
     "text/plain;charset=UTF-8", "Text/Plain; charset=utf-8"],
)
def test_decode_body_accepts_json_text_and_absent_media_types(content_type: str | None) -> None:
    assert decode_body(BODY, content_type, None) == BODY


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", "text/html",
     "application/octet-stream", "text/csv", "application/jsonx", "image/png"],
)
def test_decode_body_rejects_other_media_types(content_type: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        decode_body(BODY, content_type, None)
    assert (exc_info.value.status, exc_info.value.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " gzip ", "x-gzip"])
def test_decode_body_inflates_gzip(encoding: str) -> None:
    assert decode_body(gzip.compress(BODY), "application/json", encoding) == BODY


@pytest.mark.parametrize("encoding", [None, "", "identity"])
def test_decode_body_passes_plain_bodies(encoding: str | None) -> None:
    assert decode_body(BODY, "application/json", encoding) == BODY


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "zstd"])
def test_decode_body_rejects_unknown_encodings(encoding: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        decode_body(BODY, "application/json", encoding)
    assert (exc_info.value.status, exc_info.value.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"this is not gzip at all", id="not-gzip"),
        pytest.param(gzip.compress(BODY)[:-12], id="truncated"),
        pytest.param(gzip.compress(BODY)[:5], id="header-only"),
        pytest.param(zlib.compress(BODY), id="zlib-not-gzip"),
        pytest.param(b"", id="empty"),
    ],
)
def test_decode_body_rejects_bad_gzip_with_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as exc_info:
        decode_body(raw, "application/json", "gzip")
    assert exc_info.value.status == 400
    assert exc_info.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("size", "ok"),
    [(MAX_BODY_BYTES, True), (MAX_BODY_BYTES + 1, False), (MAX_BODY_BYTES * 50, False)],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_decode_body_limits_json_to_one_mib_after_decompression(size: int, ok: bool, compressed: bool) -> None:
    if compressed:
        data = b"[" + b" " * (size - 2) + b"]"
        raw, encoding = gzip.compress(data, compresslevel=9), "gzip"
    else:
        if size > 2 * MAX_BODY_BYTES:
            size = MAX_BODY_BYTES + 2
        data = b"[" + b" " * (size - 2) + b"]"
        raw, encoding = data, None
    if ok:
        assert decode_body(raw, "application/json", encoding) == data
    else:
        with pytest.raises(ApiError) as exc_info:
            decode_body(raw, "application/json", encoding)
        assert (exc_info.value.status, exc_info.value.code) == (413, "payload_too_large")


def _gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes, built in chunks so the test itself never holds the inflated data."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MAX_BODY_BYTES)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + compressor.flush()


def test_decode_body_never_inflates_a_gzip_bomb_in_full() -> None:
    bomb = _gzip_of_zeros(200 * MAX_BODY_BYTES)  # 200 MiB inflated, ~200 KiB on the wire
    assert len(bomb) < MAX_BODY_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as exc_info:
            decode_body(bomb, "application/json", "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (exc_info.value.status, exc_info.value.code) == (413, "payload_too_large")
    assert peak < 8 * MAX_BODY_BYTES, f"inflating the bomb peaked at {peak / MAX_BODY_BYTES:.1f} MiB"


# --- parse_body: body shapes --------------------------------------------------------------------------------------


def test_parse_body_single_array_and_envelope() -> None:
    single = parse_body(orjson.dumps(event()))
    assert single.single is True and single.items == [event()] and single.sent_at is None
    array = parse_body(orjson.dumps([event(), event(sessionId="b")]))
    assert array.single is False and len(array.items) == 2 and array.sent_at is None
    envelope = parse_body(orjson.dumps({"events": [event()], "sentAt": NOW_ISO, "extra": 1}))
    assert envelope.single is False and envelope.items == [event()] and envelope.sent_at == NOW_ISO


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"{", b'{"shopId": }', b"[1,]", b"\xff\xfe", b"NaN", b'{"a":1} x', b"{'a': 1}", b"[",
     b'{"a": "\xff"}'],
)
def test_parse_body_invalid_json(data: bytes) -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_body(data)
    assert (exc_info.value.status, exc_info.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "doc",
    [42, "text", None, True, [], {"events": []}, {"events": "x"}, {"events": {}}, {"events": None}],
)
def test_parse_body_rejects_bad_shapes(doc: Any) -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_body(orjson.dumps(doc))
    assert (exc_info.value.status, exc_info.value.code) == (400, "validation_failed")


@pytest.mark.parametrize(("count", "ok"), [(1, True), (500, True), (501, False), (2000, False)])
@pytest.mark.parametrize("envelope", [False, True])
def test_parse_body_limits_batches_to_500_events(count: int, ok: bool, envelope: bool) -> None:
    items = [event(sessionId=str(i)) for i in range(count)]
    data = orjson.dumps({"events": items} if envelope else items)
    if ok:
        assert len(parse_body(data).items) == count
    else:
        with pytest.raises(ApiError) as exc_info:
            parse_body(data)
        assert (exc_info.value.status, exc_info.value.code) == (413, "payload_too_large")


# --- parse_events: every validation rule --------------------------------------------------------------------------

INVALID = [
    # (field, value)
    ("shopId", MISSING),
    ("shopId", None),
    ("shopId", 123),
    ("shopId", True),
    ("shopId", ["shop"]),
    ("shopId", ""),
    ("shopId", "   "),
    ("shopId", "shop one"),
    ("shopId", "shop/1"),
    ("shopId", "shöp"),
    ("shopId", "a" * 65),
    ("shopId", "shop1\n"),
    ("sessionId", MISSING),
    ("sessionId", None),
    ("sessionId", 123),
    ("sessionId", {"id": 1}),
    ("sessionId", ""),
    ("sessionId", "x" * 129),
    ("sessionId", "a\x00b"),
    ("sessionId", "line\nbreak"),
    ("sessionId", "tab\there"),
    ("sessionId", "del\x7f"),
    ("sessionId", "esc\x1b[0m"),
    ("eventType", MISSING),
    ("eventType", None),
    ("eventType", 5),
    ("eventType", ""),
    ("eventType", "   "),
    ("eventType", "x" * 101),
    ("eventType", "page\nview"),
    ("eventName", 7),
    ("eventName", ["a"]),
    ("eventName", "x" * 201),
    ("properties", []),
    ("properties", "a string"),
    ("properties", 5),
    ("properties", True),
    ("properties", nested_dicts(9)),
    ("properties", nested_lists(9)),
    ("properties", {"a": [{"b": [{"c": [{"d": [{"e": 1}]}]}]}]}),  # 9 containers mixing arrays and objects
    ("properties", props_of_size(32 * 1024 + 1)),
    ("url", "x" * 2049),
    ("url", 5),
    ("url", {"href": "/"}),
    ("referrer", "x" * 2049),
    ("referrer", False),
    ("userAgent", "x" * 1025),
    ("userAgent", {}),
    ("id", "not-a-uuid"),
    ("id", ""),
    ("id", 12345),
    ("id", VALID_UUID[:-1]),
    ("id", VALID_UUID + "0"),
    ("id", "{" + VALID_UUID + "}"),
    ("id", VALID_UUID + "\n"),
    ("timestamp", "yesterday"),
    ("timestamp", ""),
    ("timestamp", "2026-02-30T00:00:00Z"),
    ("timestamp", "2026-11-26T24:61:00Z"),
    ("timestamp", "1795666517123"),
    ("timestamp", NOW_MS),
    ("timestamp", 1.5),
    ("timestamp", ["2026-11-26T04:15:17Z"]),
    ("timestamp", format_ms(NOW_MS + HOUR_MS + 1)),
    ("timestamp", "2030-01-01T00:00:00Z"),
    ("timestamp", "1999-12-31T23:59:59.999Z"),
    ("timestamp", "2000-01-01T00:30:00+01:00"),
    ("timestamp", "0001-01-01T00:00:00Z"),
]


def _case_id(field: str, value: Any) -> str:
    shown = "MISSING" if value is MISSING else repr(value)
    return f"{field}={shown[:40]}"


INVALID_CASES = [pytest.param(field, value, id=_case_id(field, value)) for field, value in INVALID]


@pytest.mark.parametrize(("field", "value"), INVALID_CASES)
def test_parse_events_rejects_single_event_without_index(field: str, value: Any) -> None:
    error = parse_fail(event(**{field: value}))
    assert (error.status, error.code) == (400, "validation_failed")
    assert error.details is not None and len(error.details) == 1
    detail = error.details[0]
    assert set(detail) == {"field", "message"}
    assert detail["field"] == field
    assert isinstance(detail["message"], str) and detail["message"]
    assert field in error.message


@pytest.mark.parametrize(("field", "value"), INVALID_CASES)
def test_parse_events_rejects_batch_event_with_its_index(field: str, value: Any) -> None:
    error = parse_fail([event(), event(sessionId="b"), event(**{field: value})])
    assert (error.status, error.code) == (400, "validation_failed")
    assert error.details is not None and len(error.details) == 1
    detail = error.details[0]
    assert set(detail) == {"index", "field", "message"}
    assert (detail["index"], detail["field"]) == (2, field)
    assert isinstance(detail["message"], str) and detail["message"]


VALID = [
    ("shopId", "a" * 64),
    ("shopId", "A.b_c-9"),
    ("sessionId", "x" * 128),
    ("sessionId", "séssion ✓ 1"),
    ("eventType", "x" * 100),
    ("eventName", "x" * 200),
    ("eventName", None),
    ("properties", None),
    ("properties", {}),
    ("properties", nested_dicts(8)),
    ("properties", nested_lists(8)),
    ("properties", props_of_size(32 * 1024)),
    ("url", "x" * 2048),
    ("url", None),
    ("referrer", "x" * 2048),
    ("userAgent", "x" * 1024),
    ("id", VALID_UUID),
    ("id", VALID_UUID.upper()),
    ("id", None),
    ("timestamp", None),
    ("timestamp", format_ms(NOW_MS + HOUR_MS)),
    ("timestamp", "2000-01-01T00:00:00Z"),
    ("timestamp", "2026-11-26T04:15:17"),
]


@pytest.mark.parametrize(("field", "value"), [pytest.param(f, v, id=_case_id(f, v)) for f, v in VALID])
def test_parse_events_accepts_values_at_the_limits(field: str, value: Any) -> None:
    (parsed,) = parse_ok(event(**{field: value}))
    (in_batch,) = parse_ok([event(**{field: value})])
    assert parsed.shop_id == in_batch.shop_id


def test_parse_events_reports_every_problem_of_every_event() -> None:
    error = parse_fail([event(), event(shopId="bad shop", sessionId=""), 7, event(eventType=MISSING)])
    assert error.details is not None
    assert [(d["index"], d["field"]) for d in error.details] == [
        (1, "shopId"), (1, "sessionId"), (2, "event"), (3, "eventType"),
    ]
    assert all(d["message"] for d in error.details)


@pytest.mark.parametrize("item", [1, "event", None, True, [], [event()]])
def test_parse_events_rejects_non_object_items(item: Any) -> None:
    error = parse_fail([event(), item])
    assert error.details is not None and len(error.details) == 1
    assert error.details[0]["index"] == 1
    assert isinstance(error.details[0]["field"], str) and error.details[0]["message"]


def test_parse_events_output_fields_and_defaults() -> None:
    (parsed,) = parse_ok(event(eventType="Page Viewed", url="https://shop.example/p/1?x=1#y"))
    assert parsed.event_type == "page_view"
    assert parsed.event_name == "Page Viewed"
    assert parsed.properties == "{}"
    assert parsed.timestamp == NOW_MS
    assert parsed.created_at == NOW_MS
    assert parsed.user_agent == UA_CHROME_WIN
    assert parsed.path == "/p/1"
    assert (parsed.browser, parsed.os, parsed.device, parsed.is_bot) == ("Chrome", "Windows", "desktop", False)
    assert parsed.country is None
    assert is_uuid(parsed.id) and parsed.id == parsed.id.lower() and uuid.UUID(parsed.id).version == 7
    assert parsed.visitor_hash == visitor_hash(SALT, "shop-1", "198.51.100.7", UA_CHROME_WIN)
    out = parsed.to_json()
    assert "visitorHash" not in orjson.dumps(out).decode()
    assert parsed.visitor_hash not in orjson.dumps(out).decode()
    assert "198.51.100.7" not in orjson.dumps(out).decode()


@pytest.mark.parametrize(
    ("sent", "expected_type", "expected_name"),
    [
        ("Page Viewed", "page_view", "Page Viewed"),
        ("  ORDER COMPLETED ", "purchase", "  ORDER COMPLETED "),
        ("view_item", "product_view", "view_item"),
        ("Newsletter Signup", "Newsletter Signup", "Newsletter Signup"),
    ],
)
def test_parse_events_event_name_defaults_to_type_as_sent(sent: str, expected_type: str, expected_name: str) -> None:
    (parsed,) = parse_ok(event(eventType=sent))
    assert (parsed.event_type, parsed.event_name) == (expected_type, expected_name)
    (named,) = parse_ok(event(eventType=sent, eventName="Custom name"))
    assert (named.event_type, named.event_name) == (expected_type, "Custom name")


def test_parse_events_lowercases_client_ids() -> None:
    (parsed,) = parse_ok(event(id=VALID_UUID.upper()))
    assert parsed.id == VALID_UUID


def test_parse_events_user_agent_field_overrides_request_header() -> None:
    (parsed,) = parse_ok(event(userAgent=UA_IPHONE), user_agent=UA_CHROME_WIN)
    assert parsed.user_agent == UA_IPHONE and parsed.device == "mobile"
    (defaulted,) = parse_ok(event(), user_agent=UA_GOOGLEBOT)
    assert defaulted.user_agent == UA_GOOGLEBOT and defaulted.is_bot and defaulted.device == "bot"
    (none,) = parse_ok(event(), user_agent="")
    assert none.user_agent is None and none.device == "other"


@pytest.mark.parametrize(
    ("sent_at_ms", "event_ts_ms", "expected_ms"),
    [
        (NOW_MS - 10 * 60_000, NOW_MS - 10 * 60_000 - 5_000, NOW_MS - 5_000),  # client 10 min behind
        (NOW_MS + 2 * HOUR_MS, NOW_MS + 2 * HOUR_MS - 1_000, NOW_MS - 1_000),  # client 2 h ahead: shifted back
        (NOW_MS - 61_000, NOW_MS - 61_000, NOW_MS),
        (NOW_MS - 60_000, NOW_MS - 70_000, NOW_MS - 70_000),  # exactly 60 s: within tolerance, no shift
        (NOW_MS + 60_000, NOW_MS - 70_000, NOW_MS - 70_000),
        (NOW_MS - 59_000, NOW_MS - 70_000, NOW_MS - 70_000),
        (NOW_MS, NOW_MS - 70_000, NOW_MS - 70_000),
    ],
)
def test_parse_events_sent_at_skew_correction(sent_at_ms: int, event_ts_ms: int, expected_ms: int) -> None:
    events = parse_ok({"events": [event(timestamp=format_ms(event_ts_ms)), event()], "sentAt": format_ms(sent_at_ms)})
    assert events[0].timestamp == expected_ms
    assert events[1].timestamp == NOW_MS  # no timestamp sent: the server's time, never shifted


@pytest.mark.parametrize("sent_at", ["not a time", 12345, "2026-02-30T00:00:00Z"])
def test_parse_events_rejects_bad_sent_at(sent_at: Any) -> None:
    error = parse_fail({"events": [event()], "sentAt": sent_at})
    assert error.details is not None
    assert [d["field"] for d in error.details] == ["sentAt"]


def test_parse_events_future_check_applies_to_the_corrected_time() -> None:
    # The client clock is right but the event is 2 h ahead of it: still too far in the future.
    error = parse_fail({"events": [event(timestamp=format_ms(NOW_MS + 2 * HOUR_MS))], "sentAt": NOW_ISO})
    assert error.details is not None and error.details[0]["field"] == "timestamp"


# --- context: user agents, paths, visitor hash, client IP, country ------------------------------------------------


@pytest.mark.parametrize(
    ("ua", "device", "is_bot", "browser", "os"),
    [
        (UA_CHROME_WIN, "desktop", False, "Chrome", "Windows"),
        (UA_MAC_SAFARI, "desktop", False, "Safari", None),
        (UA_LINUX_FIREFOX, "desktop", False, "Firefox", None),
        (UA_IPHONE, "mobile", False, None, "iOS"),
        (UA_ANDROID_PHONE, "mobile", False, None, "Android"),
        (UA_IPAD, "tablet", False, None, "iOS"),
        (UA_ANDROID_TABLET, "tablet", False, None, "Android"),
        (UA_GOOGLEBOT, "bot", True, None, None),
        (UA_BINGBOT, "bot", True, None, None),
        (UA_HEADLESS, "bot", True, None, None),
        ("curl/8.4.0", "bot", True, None, None),
        ("", "other", False, None, None),
        ("   ", "other", False, None, None),
        ("something weird", "other", False, None, None),
    ],
)
def test_parse_user_agent(ua: str, device: str, is_bot: bool, browser: str | None, os: str | None) -> None:
    result = parse_user_agent(ua)
    assert result.device == device
    assert result.is_bot is is_bot
    assert result.device in ("desktop", "mobile", "tablet", "bot", "other")
    if browser is not None:
        assert result.browser == browser
    if os is not None:
        assert result.os == os


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://shop.example/products/x?y=1#z", "/products/x"),
        ("https://shop.example", "/"),
        ("https://shop.example/", "/"),
        ("https://shop.example/a/b/", "/a/b/"),
        ("/relative/path?q=1", "/relative/path"),
        ("", None),
        (None, None),
        ("http://[::1", None),
    ],
)
def test_path_of(url: str | None, path: str | None) -> None:
    assert path_of(url) == path


def test_visitor_hash_depends_on_salt_shop_ip_and_user_agent() -> None:
    base = visitor_hash(SALT, "shop-1", "203.0.113.77", UA_CHROME_WIN)
    assert base == visitor_hash(SALT, "shop-1", "203.0.113.77", UA_CHROME_WIN)
    variants = [
        visitor_hash(b"t" * 32, "shop-1", "203.0.113.77", UA_CHROME_WIN),
        visitor_hash(SALT, "shop-2", "203.0.113.77", UA_CHROME_WIN),
        visitor_hash(SALT, "shop-1", "203.0.113.78", UA_CHROME_WIN),
        visitor_hash(SALT, "shop-1", "203.0.113.77", UA_IPHONE),
        # Field boundaries are unambiguous: moving characters between fields changes the hash.
        visitor_hash(SALT, "shop-12", "03.0.113.77", UA_CHROME_WIN),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert "203.0.113.77" not in base and "cb00714d" not in base
    int(base, 16)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trust", "expected"),
    [
        ("127.0.0.1", "203.0.113.77", True, "203.0.113.77"),
        ("127.0.0.1", "203.0.113.77, 10.0.0.1", True, "203.0.113.77"),
        ("127.0.0.1", " 2001:db8::1 ", True, "2001:db8::1"),
        ("127.0.0.1", "203.0.113.77", False, "127.0.0.1"),
        ("127.0.0.1", "garbage", True, "127.0.0.1"),
        ("127.0.0.1", None, True, "127.0.0.1"),
        ("127.0.0.1", "", True, "127.0.0.1"),
        (None, None, False, ""),
    ],
)
def test_client_ip(peer: str | None, forwarded: str | None, trust: bool, expected: str) -> None:
    assert client_ip(peer, forwarded, trust) == expected


@pytest.mark.parametrize(
    ("headers", "trust", "expected"),
    [
        ({"CF-IPCountry": "DE"}, True, "DE"),
        ({"CF-IPCountry": "de"}, True, "DE"),
        ({"X-Country-Code": "fr"}, True, "FR"),
        ({"CF-IPCountry": "DE"}, False, None),
        ({"CF-IPCountry": "XX"}, True, None),
        ({"CF-IPCountry": "T1"}, True, None),
        ({"CF-IPCountry": "DEU"}, True, None),
        ({"CF-IPCountry": "1A"}, True, None),
        ({}, True, None),
        (None, True, None),
    ],
)
def test_country_of(headers: dict[str, str] | None, trust: bool, expected: str | None) -> None:
    assert country_of(headers, trust) == expected


def test_parsed_body_is_the_parse_events_input() -> None:
    body = ParsedBody(items=[event()], sent_at=None, single=True)
    (parsed,) = parse_events(body, info(country="DE"))
    assert parsed.country == "DE"


@pytest.mark.parametrize("url", [
    "https://a.com", "https://a.com/", "http://A.com:80/x/y?q#f", "https://a.com?x=1", "https://a.com#frag",
    "HTTPS://a.com/P", "https://u:p@a.com/x", "https://a.com/%20x", "https://a.com/x;p?q", "ftp://a.com/x",
    "/relative/x?y", "https://[::1]:8080/p", "https://a.com/ü", "https://a.com/\tx", "https://a.com//double",
    "https:///nohost/p", "http:/x", "https://a.com/a b", "https://[::1/p", "", "mailto:x@y.z", "https://a.com/\x7f",
])
def test_path_of_fast_path_agrees_with_urlsplit(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        expected = parts.path or ("/" if parts.netloc else None) if url else None
    except ValueError:
        expected = None
    assert path_of(url) == expected


def test_properties_nested_past_the_limit_are_rejected_and_brackets_in_strings_are_not_nesting() -> None:
    deep: dict[str, object] = {"v": 1}
    for _ in range(MAX_DEPTH):
        deep = {"d": deep}
    shallow_with_brackets = {"text": "{[{[{[{[{[{[ not nesting ]}]}]}]}]}]}"}
    info = RequestInfo("", "127.0.0.1", None, NOW_MS, b"s" * 32)
    with pytest.raises(ApiError) as raised:
        parse_events(parse_body(orjson.dumps({"shopId": "s", "sessionId": "x", "eventType": "e",
                                              "properties": deep})), info)
    assert raised.value.details == [{"field": "properties", "message": f"is nested more than {MAX_DEPTH} levels deep"}]
    event = parse_events(parse_body(orjson.dumps({"shopId": "s", "sessionId": "x", "eventType": "e",
                                                  "properties": shallow_with_brackets})), info)[0]
    assert orjson.loads(event.properties) == shallow_with_brackets
