"""GET /api/events and GET /api/events/{id} through a real app over a real SQLite file: filters, page and cursor
pagination checked against an order computed independently in plain Python."""

from __future__ import annotations

import base64
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.listing import EventFilter
from tests.conftest import NOW_MS, assert_error

DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENVELOPE_KEYS = {"data", "total", "page", "limit", "totalPages", "nextCursor"}
EVENT_KEYS = {"id", "shopId", "sessionId", "eventType", "eventName", "properties", "timestamp", "url", "referrer",
              "userAgent", "createdAt", "context"}
CONTEXT_KEYS = {"path", "browser", "os", "device", "country", "isBot"}
# The types the dataset sends, and what the contract says they are stored as.
SENT_TYPES = {
    "pageview": "page_view",
    "page_view": "page_view",
    "Page Viewed": "page_view",
    "Product Viewed": "product_view",
    "view_item": "product_view",
    "add_to_cart": "add_to_cart",
    "Order Completed": "purchase",
    "signup": "signup",
}
SHOPS = ("s1", "s2", "s3")
DATASET_SIZE = 137


@dataclass(frozen=True)
class Ev:
    id: str
    shop: str
    session: str
    type: str  # canonical
    ms: int


def iso(ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_of(text: str, tz: str = "UTC") -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return (moment - EPOCH) // timedelta(milliseconds=1)


def local_midnight_ms(day: date, tz: str) -> int:
    return (datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)) - EPOCH) // timedelta(milliseconds=1)


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def newest_first(events: list[Ev]) -> list[Ev]:
    return sorted(events, key=lambda e: (e.ms, e.id), reverse=True)


def select(events: list[Ev], *, shop: str | None = None, session: str | None = None, type_: str | None = None,
           start: int | None = None, end: int | None = None) -> list[str]:
    """The expected listing: matching events, newest timestamp first, ties by id descending."""
    chosen = [
        e for e in events
        if (shop is None or e.shop == shop)
        and (session is None or e.session == session)
        and (type_ is None or e.type == type_)
        and (start is None or e.ms >= start)
        and (end is None or e.ms < end)
    ]
    return [e.id for e in newest_first(chosen)]


async def post_events(client: TestClient, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 60):
        batch = events[i:i + 60]
        resp = await client.post("/api/events", json=batch)
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert body["accepted"] == len(batch), body


def payload(ev: Ev, sent_type: str) -> dict[str, Any]:
    return {"id": ev.id, "shopId": ev.shop, "sessionId": ev.session, "eventType": sent_type,
            "timestamp": iso(ev.ms), "url": f"https://{ev.shop}.example/p/{ev.ms % 7}"}


def make_events(rng: random.Random, count: int, *, low_ms: int, high_ms: int, shops: tuple[str, ...] = SHOPS,
                timestamps: list[int] | None = None) -> list[tuple[Ev, str]]:
    """count events with random ids; many share a timestamp with another event."""
    pool = list(timestamps or [])
    out: list[tuple[Ev, str]] = []
    while len(out) < count:
        ms = rng.choice(pool) if pool and rng.random() < 0.3 else rng.randrange(low_ms, high_ms)
        pool.append(ms)
        for _ in range(rng.choice((1, 1, 2, 3))):  # groups of events with the very same timestamp
            if len(out) == count:
                break
            sent = rng.choice(list(SENT_TYPES))
            ev = Ev(new_id(rng), rng.choice(shops), f"sess-{rng.randrange(9)}", SENT_TYPES[sent], ms)
            out.append((ev, sent))
    return out


async def seed(client: TestClient, rng: random.Random, count: int = DATASET_SIZE, **kwargs: Any) -> list[Ev]:
    made = make_events(rng, count, low_ms=kwargs.pop("low_ms", NOW_MS - 30 * DAY_MS),
                       high_ms=kwargs.pop("high_ms", NOW_MS - 60_000), **kwargs)
    rng.shuffle(made)  # insertion order differs from time order
    await post_events(client, [payload(ev, sent) for ev, sent in made])
    return [ev for ev, _ in made]


@pytest.fixture
async def dataset(client: TestClient) -> list[Ev]:
    events = await seed(client, random.Random(20261126))
    assert len({e.ms for e in events}) < len(events), "the dataset must contain timestamp ties"
    assert {e.shop for e in events} == set(SHOPS)
    return events


async def get_list(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = await client.get("/api/events", params={k: str(v) for k, v in params.items()}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = await resp.json()
    assert set(body) == ENVELOPE_KEYS
    return body


def data_ids(body: dict[str, Any]) -> list[str]:
    return [e["id"] for e in body["data"]]


async def walk(client: TestClient, headers: dict[str, str], limit: int, **params: Any) -> list[str]:
    """Follow nextCursor from the first page to the end; check the page numbers and totals on the way."""
    body = await get_list(client, headers, limit=limit, **params)
    total = body["total"]
    walked = data_ids(body)
    number = 1
    while body["nextCursor"] is not None:
        body = await get_list(client, headers, limit=limit, cursor=body["nextCursor"], **params)
        number += 1
        assert body["page"] == number
        assert body["total"] == total
        assert body["data"], "a nextCursor must lead to more events"
        walked.extend(data_ids(body))
    return walked


# ---- the envelope and page pagination ----------------------------------------------------------------------


async def test_defaults_are_page_1_limit_20_newest_first(client: TestClient, admin: dict[str, str],
                                                         dataset: list[Ev]) -> None:
    body = await get_list(client, admin)
    expected = select(dataset)
    assert (body["page"], body["limit"], body["total"], body["totalPages"]) == (1, 20, DATASET_SIZE, 7)
    assert data_ids(body) == expected[:20]
    assert isinstance(body["nextCursor"], str)


async def test_every_page_matches_the_independent_order(client: TestClient, admin: dict[str, str],
                                                        dataset: list[Ev]) -> None:
    expected = select(dataset)
    by_id = {e.id: e for e in dataset}
    limit = 25
    pages = -(-DATASET_SIZE // limit)
    for page in range(1, pages + 2):
        body = await get_list(client, admin, page=page, limit=limit)
        assert (body["page"], body["limit"], body["total"], body["totalPages"]) == (page, limit, DATASET_SIZE, pages)
        assert data_ids(body) == expected[(page - 1) * limit:page * limit]
        assert (body["nextCursor"] is None) == (page >= pages)
        for event in body["data"]:
            assert set(event) == EVENT_KEYS
            assert set(event["context"]) == CONTEXT_KEYS
            ev = by_id[event["id"]]
            assert (event["shopId"], event["sessionId"], event["eventType"]) == (ev.shop, ev.session, ev.type)
            assert event["timestamp"] == iso(ev.ms)


async def test_limit_bounds(client: TestClient, admin: dict[str, str], dataset: list[Ev]) -> None:
    expected = select(dataset)
    one = await get_list(client, admin, limit=1)
    assert data_ids(one) == expected[:1] and one["totalPages"] == DATASET_SIZE
    hundred = await get_list(client, admin, limit=100, page=2)
    assert data_ids(hundred) == expected[100:]
    assert hundred["totalPages"] == 2 and hundred["nextCursor"] is None


async def test_page_past_the_end_is_empty(client: TestClient, admin: dict[str, str], dataset: list[Ev]) -> None:
    body = await get_list(client, admin, page=99)
    assert body["data"] == [] and body["total"] == DATASET_SIZE and body["page"] == 99
    assert body["nextCursor"] is None


async def test_empty_store_lists_nothing(client: TestClient, admin: dict[str, str]) -> None:
    body = await get_list(client, admin)
    assert body == {"data": [], "total": 0, "page": 1, "limit": 20, "totalPages": 0, "nextCursor": None}


@pytest.mark.parametrize(("name", "value"), [
    ("limit", "0"), ("limit", "101"), ("limit", "-1"), ("limit", "abc"), ("limit", "1.5"), ("limit", ""),
    ("limit", "1e2"), ("page", "0"), ("page", "-1"), ("page", "abc"), ("page", "2.0"), ("page", ""),
    ("page", "99999999999999999999"),
])
async def test_bad_page_or_limit_is_400_naming_it(client: TestClient, admin: dict[str, str],
                                                  name: str, value: str) -> None:
    resp = await client.get("/api/events", params={name: value}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == [name]


# ---- filters -----------------------------------------------------------------------------------------------


async def test_shop_session_and_type_filters(client: TestClient, admin: dict[str, str], dataset: list[Ev]) -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"shopId": "s2"}, {"shop": "s2"}),
        ({"shopId": "nobody"}, {"shop": "nobody"}),
        ({"sessionId": "sess-3"}, {"session": "sess-3"}),
        ({"eventType": "page_view"}, {"type_": "page_view"}),
        ({"eventType": "pageview"}, {"type_": "page_view"}),
        ({"eventType": "PAGE VIEWED"}, {"type_": "page_view"}),
        ({"eventType": " Product Viewed "}, {"type_": "product_view"}),
        ({"eventType": "product_view"}, {"type_": "product_view"}),
        ({"eventType": "checkout_completed"}, {"type_": "purchase"}),
        ({"eventType": "signup"}, {"type_": "signup"}),
        ({"shopId": "s1", "sessionId": "sess-2", "eventType": "Page Viewed"},
         {"shop": "s1", "session": "sess-2", "type_": "page_view"}),
    ]
    for params, expectation in cases:
        expected = select(dataset, **expectation)
        body = await get_list(client, admin, limit=100, **params)
        assert data_ids(body) == expected[:100], params
        assert body["total"] == len(expected), params
    assert len(select(dataset, type_="page_view")) > 20  # the filters above were not trivially empty


async def test_date_filters_on_the_dataset(client: TestClient, admin: dict[str, str], dataset: list[Ev]) -> None:
    ny = "America/New_York"
    start_day, end_day = date(2026, 11, 5), date(2026, 11, 12)
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"startDate": "2026-11-05"}, {"start": local_midnight_ms(start_day, "UTC")}),
        ({"endDate": "2026-11-12"}, {"end": local_midnight_ms(end_day + timedelta(days=1), "UTC")}),
        ({"startDate": "2026-11-05", "endDate": "2026-11-12"},
         {"start": local_midnight_ms(start_day, "UTC"), "end": local_midnight_ms(date(2026, 11, 13), "UTC")}),
        ({"startDate": "2026-11-05", "endDate": "2026-11-12", "timezone": ny},
         {"start": local_midnight_ms(start_day, ny), "end": local_midnight_ms(date(2026, 11, 13), ny)}),
        ({"startDate": "2026-11-05T13:30:00", "endDate": "2026-11-12T08:00:00", "timezone": ny},
         {"start": ms_of("2026-11-05T13:30:00", ny), "end": ms_of("2026-11-12T08:00:00", ny)}),
        ({"startDate": "2026-11-05T13:30:00Z", "endDate": "2026-11-12T08:00:00+02:00", "timezone": ny},
         {"start": ms_of("2026-11-05T13:30:00+00:00"), "end": ms_of("2026-11-12T08:00:00+02:00")}),
        ({"shopId": "s3", "eventType": "pageview", "startDate": "2026-11-01", "timezone": ny},
         {"shop": "s3", "type_": "page_view", "start": local_midnight_ms(date(2026, 11, 1), ny)}),
    ]
    for params, expectation in cases:
        expected = select(dataset, **expectation)
        assert 0 < len(expected) < DATASET_SIZE, params
        body = await get_list(client, admin, limit=100, **params)
        assert body["total"] == len(expected), params
        assert data_ids(body) == expected[:100], params


@pytest.fixture
async def edges(client: TestClient) -> dict[str, str]:
    """Events on the edges of New York days, including the 25-hour day 2026-11-01 (DST ends)."""
    stamps = {
        "ny19_last": "2026-11-20T04:59:59.999Z",  # 2026-11-19 23:59:59.999 EST
        "ny20_first": "2026-11-20T05:00:00.000Z",  # 2026-11-20 00:00 EST
        "ny20_10am": "2026-11-20T15:00:00.000Z",  # 2026-11-20 10:00 EST
        "ny20_last": "2026-11-21T04:59:59.999Z",  # 2026-11-20 23:59:59.999 EST
        "ny21_first": "2026-11-21T05:00:00.000Z",  # 2026-11-21 00:00 EST
        "ny31oct_last": "2026-11-01T03:59:59.999Z",  # 2026-10-31 23:59:59.999 EDT
        "ny1_first": "2026-11-01T04:00:00.000Z",  # 2026-11-01 00:00 EDT
        "ny1_last": "2026-11-02T04:59:59.999Z",  # 2026-11-01 23:59:59.999 EST
        "ny2_first": "2026-11-02T05:00:00.000Z",  # 2026-11-02 00:00 EST
    }
    rng = random.Random(7)
    ids = {name: new_id(rng) for name in stamps}
    await post_events(client, [
        {"id": ids[name], "shopId": "tz", "sessionId": "s", "eventType": "page_view", "timestamp": stamp}
        for name, stamp in stamps.items()
    ])
    return ids


@pytest.mark.parametrize(("params", "names"), [
    # UTC (the default): a date endDate includes that whole UTC day.
    ({"startDate": "2026-11-20", "endDate": "2026-11-20"}, ["ny20_10am", "ny20_first", "ny19_last"]),
    ({"startDate": "2026-11-20", "endDate": "2026-11-20", "timezone": "UTC"},
     ["ny20_10am", "ny20_first", "ny19_last"]),
    # New York: the same dates cover the New York day.
    ({"startDate": "2026-11-20", "endDate": "2026-11-20", "timezone": "America/New_York"},
     ["ny20_last", "ny20_10am", "ny20_first"]),
    ({"startDate": "2026-11-21", "timezone": "America/New_York"}, ["ny21_first"]),
    ({"endDate": "2026-11-19", "startDate": "2026-11-19", "timezone": "America/New_York"}, ["ny19_last"]),
    # The 25-hour day when DST ends.
    ({"startDate": "2026-11-01", "endDate": "2026-11-01", "timezone": "America/New_York"},
     ["ny1_last", "ny1_first"]),
    # Datetimes without an offset are read in the timezone; startDate inclusive, a datetime endDate exclusive.
    ({"startDate": "2026-11-20T00:00:00", "endDate": "2026-11-20T10:00:00", "timezone": "America/New_York"},
     ["ny20_first"]),
    ({"startDate": "2026-11-20T00:00:00", "endDate": "2026-11-20T10:00:00.001", "timezone": "America/New_York"},
     ["ny20_10am", "ny20_first"]),
    ({"startDate": "2026-11-20T10:00:00", "endDate": "2026-11-21T00:00:00", "timezone": "America/New_York"},
     ["ny20_last", "ny20_10am"]),
    ({"startDate": "2026-11-20T05:00:00.001Z", "endDate": "2026-11-21T05:00:00Z", "timezone": "America/New_York"},
     ["ny20_last", "ny20_10am"]),
    # Offsets win over the timezone parameter (and survive URL encoding of '+').
    ({"startDate": "2026-11-20T06:00:00+01:00", "endDate": "2026-11-20T16:00:00+01:00",
      "timezone": "America/New_York"}, ["ny20_first"]),
    ({"startDate": "2026-11-20T00:00:00-05:00", "endDate": "2026-11-20T10:00:00-05:00"}, ["ny20_first"]),
    # A datetime endDate equal to the start: an empty range, not an error.
    ({"startDate": "2026-11-20T15:00:00Z", "endDate": "2026-11-20T15:00:00Z"}, []),
])
async def test_date_bounds_in_a_timezone(client: TestClient, admin: dict[str, str], edges: dict[str, str],
                                         params: dict[str, str], names: list[str]) -> None:
    body = await get_list(client, admin, shopId="tz", **params)
    assert data_ids(body) == [edges[name] for name in names]
    assert body["total"] == len(names)


@pytest.mark.parametrize("params", [
    {"startDate": "2026-11-21", "endDate": "2026-11-20"},
    {"startDate": "2026-11-21", "endDate": "2026-11-20", "timezone": "America/New_York"},
    {"startDate": "2026-11-25", "endDate": "2026-11-20"},
    {"startDate": "2026-11-20T12:00:00Z", "endDate": "2026-11-20T11:59:59.999Z"},
    {"startDate": "2026-11-20T12:00:00", "endDate": "2026-11-20T11:00:00", "timezone": "Asia/Tokyo"},
    {"startDate": "2026-11-21T00:00:00.001", "endDate": "2026-11-20"},
])
async def test_start_after_end_is_400(client: TestClient, admin: dict[str, str], params: dict[str, str]) -> None:
    resp = await client.get("/api/events", params=params, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert error["details"][0]["field"] in ("startDate", "endDate")


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "America/Nowhere", "../../etc/passwd", "+05:00", "EST5EDTX"])
async def test_unknown_timezone_is_400(client: TestClient, admin: dict[str, str], tz: str) -> None:
    resp = await client.get("/api/events", params={"timezone": tz, "startDate": "2026-11-20"}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == ["timezone"]


@pytest.mark.parametrize(("name", "value"), [
    ("startDate", "2026-13-01"),
    ("startDate", "2026-02-30"),
    ("startDate", "yesterday"),
    ("startDate", "20261120"),
    ("startDate", "2026-11-20T25:00:00"),
    ("endDate", "2026-11-20Tnoon"),
    ("endDate", "not a date at all, really not"),
    ("endDate", "2026-11-20T10:00:00+25:00"),
    ("endDate", "11/20/2026"),
])
async def test_bad_date_is_400_naming_the_parameter(client: TestClient, admin: dict[str, str],
                                                    name: str, value: str) -> None:
    resp = await client.get("/api/events", params={name: value}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == [name]


@pytest.mark.parametrize(("name", "value"), [
    ("endDate", "9999-12-31"), ("startDate", "0001-01-01"), ("startDate", "9999-12-31T23:59:59"),
])
async def test_extreme_dates_never_fail_the_server(client: TestClient, admin: dict[str, str],
                                                   name: str, value: str) -> None:
    resp = await client.get("/api/events", params={name: value, "timezone": "America/New_York"}, headers=admin)
    if resp.status == 200:
        assert set(await resp.json()) == ENVELOPE_KEYS
    else:
        error = await assert_error(resp, 400, "validation_failed")
        assert [d["field"] for d in error["details"]] == [name]


@pytest.mark.parametrize(("name", "value"), [
    ("shopId", "bad shop!"), ("shopId", "x" * 65), ("sessionId", "s" * 129), ("eventType", "t" * 101),
])
async def test_bad_filter_value_is_400(client: TestClient, admin: dict[str, str], name: str, value: str) -> None:
    resp = await client.get("/api/events", params={name: value}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == [name]


# ---- cursors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "params"), [
    (10, {}),
    (1, {"shopId": "s2", "eventType": "page_view"}),
    (7, {"startDate": "2026-11-03", "endDate": "2026-11-20", "timezone": "America/New_York"}),
    (100, {}),
    (20, {"sessionId": "sess-4"}),
])
async def test_cursor_walk_returns_every_event_once_in_order(client: TestClient, admin: dict[str, str],
                                                             dataset: list[Ev], limit: int,
                                                             params: dict[str, str]) -> None:
    expectation: dict[str, Any] = {
        "shop": params.get("shopId"), "session": params.get("sessionId"),
        "type_": params.get("eventType"),
    }
    if "startDate" in params:
        ny = params["timezone"]
        expectation["start"] = local_midnight_ms(date(2026, 11, 3), ny)
        expectation["end"] = local_midnight_ms(date(2026, 11, 21), ny)
    expected = select(dataset, **expectation)
    assert expected
    walked = await walk(client, admin, limit, **params)
    assert walked == expected


async def test_cursor_after_a_numbered_page_continues_from_there(client: TestClient, admin: dict[str, str],
                                                                 dataset: list[Ev]) -> None:
    expected = select(dataset)
    body = await get_list(client, admin, page=3, limit=10)
    assert data_ids(body) == expected[20:30]
    body = await get_list(client, admin, cursor=body["nextCursor"], limit=10)
    assert data_ids(body) == expected[30:40]
    assert body["page"] == 4
    # The limit may change along a walk.
    body = await get_list(client, admin, cursor=body["nextCursor"], limit=50)
    assert data_ids(body) == expected[40:90]


async def test_cursor_walk_is_a_snapshot_while_events_arrive(client: TestClient, admin: dict[str, str],
                                                             dataset: list[Ev]) -> None:
    rng = random.Random(99)
    by_id = {e.id: e for e in dataset}
    for params in ({}, {"shopId": "s1"}):
        snapshot = select(dataset, shop=params.get("shopId"))
        total_before = len(select(dataset, shop=params.get("shopId")))
        body = await get_list(client, admin, limit=9, **params)
        walked = data_ids(body)
        while body["nextCursor"] is not None:
            last = by_id[walked[-1]]
            old_ms = [e.ms for e in dataset]
            arriving = make_events(rng, 8, low_ms=NOW_MS - 30 * DAY_MS, high_ms=NOW_MS - 60_000, timestamps=old_ms)
            arriving += make_events(rng, 2, low_ms=NOW_MS, high_ms=NOW_MS + 3_000_000)  # newer than everything
            # Ties with the cursor's own timestamp, with ids on both sides of its id.
            arriving += [
                (Ev("00000000" + new_id(rng)[8:], last.shop, "sess-new", "page_view", last.ms), "page_view"),
                (Ev("ffffffff" + new_id(rng)[8:], last.shop, "sess-new", "page_view", last.ms), "page_view"),
                (Ev(new_id(rng), "s1", "sess-new", "page_view", last.ms - 1), "page_view"),
            ]
            await post_events(client, [payload(ev, sent) for ev, sent in arriving])
            dataset.extend(ev for ev, _ in arriving)
            by_id.update((ev.id, ev) for ev, _ in arriving)
            body = await get_list(client, admin, limit=9, cursor=body["nextCursor"], **params)
            assert body["total"] == total_before
            walked.extend(data_ids(body))
        assert walked == snapshot
        # A new walk sees everything that arrived meanwhile.
        fresh = await get_list(client, admin, limit=100, **params)
        assert fresh["total"] == len(select(dataset, shop=params.get("shopId"))) > total_before


@pytest.mark.parametrize("cursor", ["garbage", "!!!!", "eyJ0IjoxfQ", "", "é"])
async def test_garbage_cursor_is_400(client: TestClient, admin: dict[str, str], dataset: list[Ev],
                                     cursor: str) -> None:
    resp = await client.get("/api/events", params={"cursor": cursor}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == ["cursor"]


@pytest.mark.parametrize("doc", [
    {"t": 1e300, "s": 10**6},
    {"t": NOW_MS, "s": 1e300},
    {"t": -1e300, "s": 10**6},
])
async def test_forged_cursor_with_out_of_range_numbers_is_400_not_500(client: TestClient, admin: dict[str, str],
                                                                      dataset: list[Ev], doc: dict[str, Any]) -> None:
    # The fingerprint is right for "no filters", so only the numbers are wrong.
    raw = orjson.dumps({**doc, "i": dataset[0].id, "f": EventFilter().fingerprint()})
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    resp = await client.get("/api/events", params={"cursor": cursor}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == ["cursor"]


async def test_cursor_with_other_filters_is_400(client: TestClient, admin: dict[str, str],
                                                dataset: list[Ev]) -> None:
    body = await get_list(client, admin, shopId="s1", limit=5)
    cursor = body["nextCursor"]
    for params in ({}, {"shopId": "s2"}, {"shopId": "s1", "eventType": "page_view"},
                   {"shopId": "s1", "startDate": "2026-11-01"}):
        resp = await client.get("/api/events", params={"cursor": cursor, **params}, headers=admin)
        error = await assert_error(resp, 400, "validation_failed")
        assert [d["field"] for d in error["details"]] == ["cursor"]
    # The same filters, also spelled differently (an alias, the same instant), are fine.
    body = await get_list(client, admin, shopId="s1", eventType="pageview", limit=5)
    again = await get_list(client, admin, shopId="s1", eventType="Page Viewed", cursor=body["nextCursor"], limit=5)
    assert again["page"] == 2


async def test_cursor_and_page_together_is_400(client: TestClient, admin: dict[str, str], dataset: list[Ev]) -> None:
    body = await get_list(client, admin, limit=5)
    for page in ("1", "2"):
        resp = await client.get("/api/events", params={"cursor": body["nextCursor"], "page": page}, headers=admin)
        await assert_error(resp, 400, "validation_failed")


async def test_next_cursor_is_null_on_the_last_page(client: TestClient, admin: dict[str, str],
                                                    dataset: list[Ev]) -> None:
    exact = await get_list(client, admin, shopId="s1", limit=100)
    n = exact["total"]
    assert exact["nextCursor"] is None
    # A page that ends exactly at the last event has no next cursor either.
    body = await get_list(client, admin, shopId="s1", limit=n)
    assert body["nextCursor"] is None and len(body["data"]) == n
    body = await get_list(client, admin, shopId="s1", limit=n - 1)
    assert body["nextCursor"] is not None
    last = await get_list(client, admin, shopId="s1", limit=n - 1, cursor=body["nextCursor"])
    assert len(last["data"]) == 1 and last["nextCursor"] is None


# ---- one event ---------------------------------------------------------------------------------------------


async def test_get_one_event(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/events", json={
        "shopId": "s1", "sessionId": "a", "eventType": "Product Viewed", "properties": {"productId": "p1"},
        "url": "https://s1.example/p/1?x=1", "timestamp": "2026-11-25T10:00:00.250+01:00",
    })
    assert resp.status == 201
    stored = await resp.json()
    resp = await client.get(f"/api/events/{stored['id']}", headers=admin)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    event = await resp.json()
    assert event == stored
    assert event["timestamp"] == "2026-11-25T09:00:00.250Z"
    assert event["eventType"] == "product_view" and event["eventName"] == "Product Viewed"
    # UUIDs are case-insensitive.
    resp = await client.get(f"/api/events/{stored['id'].upper()}", headers=admin)
    assert resp.status == 200 and (await resp.json())["id"] == stored["id"]


@pytest.mark.parametrize("event_id", [
    "3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b", "not-a-uuid", "12345", "3f2b8c1e0d4a4b7e9c5f6a1d2e3f4a5b",
    "3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b-extra", "%27%20OR%201%3D1--",
])
async def test_unknown_or_malformed_id_is_404(client: TestClient, admin: dict[str, str], event_id: str) -> None:
    await client.post("/api/events", json={"shopId": "s1", "sessionId": "a", "eventType": "x"})
    resp = await client.get(f"/api/events/{event_id}", headers=admin)
    await assert_error(resp, 404, "not_found")
