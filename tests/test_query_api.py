"""POST /api/query through a real app (SQLite → mirror → DuckDB) against a small hand-built dataset whose every
expected number is worked out by hand in the comments below (contract section 6, metrics of section 5).

The pinned clock is 2026-11-26T04:15:17.123Z, so "7d" in UTC is [2026-11-20, 2026-11-27) and "30d" is
[2026-10-28, 2026-11-27); in America/New_York it is 2026-11-25 23:15, so "7d" there is [11-19, 11-26) local.

Shop shopA (SITE = https://shop.example); D = desktop Chrome/Windows, M = mobile "Mobile Safari"/iOS:
  S1 D ip1 DE  11-24 10:00 page_view /?utm_source=newsletter&utm_medium=email&utm_campaign=black%20friday
               10:01 page_view /products/a (referrer: own site)  10:02 product_view {productId A}
               10:03 add_to_cart {productId A}  10:05 purchase /checkout/done {orderId o1, value 50, USD}
  S2 M ip2 US  11-25 09:00 page_view / (referrer https://www.Google.com/search?q=shoes)  09:02 pv /products/a
               09:03 pv /products/b  09:04 signup "Sign Up" /signup {plan pro}
  S3 M ip2 US  11-25 23:30 pv /products/b (referrer https://t.co/abc)  11-26 00:10 pv /
  S4 D ip4 FR  11-26 01:00 pv /                                  (direct, one event: the only bounce)
  S5 bot       11-26 02:00 pv /                                  (Googlebot: left out unless includeBots)
  S6 D ip6 DE  11-19 12:00 pv /old                               (outside 7d in UTC, inside 30d)
  S7 D ip7 DE  11-26 02:59 pv /pricing (referrer: own site → direct)  03:00 signup "Sign Up" /signup {plan free}
Shop shopB: session "S1" (same id as shopA's, a different session) D ip9 GB 11-25 12:00 pv https://b.example/.
Shop shopC (orders): C1 D 11-25 10:00 pv /, 10:05 purchase {orderId c-1, value 20.5, EUR};
  C2 M 11-25 11:00 purchase {order_id c-1, revenue 999, EUR} (a later copy: ignored, C2 has not converted);
  C3 D ip13 11-25 12:00 purchase {total 5} (no id: its own order, USD by default);
  C4 D ip14 11-25 13:00 purchase {transaction_id c-2} (no value: 0 USD).

shopA over 7d (bots out): events 5+4+2+1+2 = 14, pageViews 2+3+2+1+1 = 9, sessions 5, visitors 4 (S2 and S3 share
ip and UA), bounceRate 1/5 (S4), durations 300+240+2400+0+60 = 3000 s → 600 s, viewsPerSession 9/5, 1 order of
50 USD, conversionRate 1/5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ClientFactory, assert_error

SITE = "https://shop.example"
UA_DESKTOP = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
UA_MOBILE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.0 Mobile/15E148 Safari/604.1")
UA_BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BFCM_URL = f"{SITE}/?utm_source=newsletter&utm_medium=email&utm_campaign=black%20friday"


@dataclass
class Session:
    shop: str
    session: str
    ua: str
    ip: str
    country: str
    # (timestamp, eventType, url, referrer, properties[, eventName])
    events: list[tuple[Any, ...]] = field(default_factory=list)


DATASET = [
    Session("shopA", "S1", UA_DESKTOP, "10.0.0.1", "DE", [
        ("2026-11-24T10:00:00Z", "page_view", BFCM_URL, None, None),
        ("2026-11-24T10:01:00Z", "page_view", f"{SITE}/products/a", f"{SITE}/", None),
        ("2026-11-24T10:02:00Z", "product_view", f"{SITE}/products/a", None, {"productId": "A", "price": 50}),
        ("2026-11-24T10:03:00Z", "add_to_cart", f"{SITE}/products/a", None, {"productId": "A"}),
        ("2026-11-24T10:05:00Z", "purchase", f"{SITE}/checkout/done", None,
         {"orderId": "o1", "value": 50, "currency": "USD"}),
    ]),
    Session("shopA", "S2", UA_MOBILE, "10.0.0.2", "US", [
        ("2026-11-25T09:00:00Z", "page_view", f"{SITE}/", "https://www.Google.com/search?q=shoes", None),
        ("2026-11-25T09:02:00Z", "page_view", f"{SITE}/products/a", f"{SITE}/", None),
        ("2026-11-25T09:03:00Z", "page_view", f"{SITE}/products/b", f"{SITE}/products/a", None),
        ("2026-11-25T09:04:00Z", "signup", f"{SITE}/signup", None, {"plan": "pro"}, "Sign Up"),
    ]),
    Session("shopA", "S3", UA_MOBILE, "10.0.0.2", "US", [
        ("2026-11-25T23:30:00Z", "page_view", f"{SITE}/products/b", "https://t.co/abc", None),
        ("2026-11-26T00:10:00Z", "page_view", f"{SITE}/", None, None),
    ]),
    Session("shopA", "S4", UA_DESKTOP, "10.0.0.4", "FR", [
        ("2026-11-26T01:00:00Z", "page_view", f"{SITE}/", None, None),
    ]),
    Session("shopA", "S5", UA_BOT, "10.0.0.5", "US", [
        ("2026-11-26T02:00:00Z", "page_view", f"{SITE}/", None, None),
    ]),
    Session("shopA", "S6", UA_DESKTOP, "10.0.0.6", "DE", [
        ("2026-11-19T12:00:00Z", "page_view", f"{SITE}/old", None, None),
    ]),
    Session("shopA", "S7", UA_DESKTOP, "10.0.0.7", "DE", [
        ("2026-11-26T02:59:00Z", "page_view", f"{SITE}/pricing", f"{SITE}/", None),
        ("2026-11-26T03:00:00Z", "signup", f"{SITE}/signup", None, {"plan": "free"}, "Sign Up"),
    ]),
    Session("shopB", "S1", UA_DESKTOP, "10.0.0.9", "GB", [
        ("2026-11-25T12:00:00Z", "page_view", "https://b.example/", None, None),
    ]),
    Session("shopC", "C1", UA_DESKTOP, "10.0.0.11", "DE", [
        ("2026-11-25T10:00:00Z", "page_view", "https://c.example/", None, None),
        ("2026-11-25T10:05:00Z", "purchase", "https://c.example/done", None,
         {"orderId": "c-1", "value": 20.5, "currency": "EUR"}),
    ]),
    Session("shopC", "C2", UA_MOBILE, "10.0.0.12", "DE", [
        ("2026-11-25T11:00:00Z", "purchase", "https://c.example/done", None,
         {"order_id": "c-1", "revenue": 999, "currency": "EUR"}),
    ]),
    Session("shopC", "C3", UA_DESKTOP, "10.0.0.13", "DE", [
        ("2026-11-25T12:00:00Z", "purchase", "https://c.example/done", None, {"total": 5}),
    ]),
    Session("shopC", "C4", UA_DESKTOP, "10.0.0.14", "DE", [
        ("2026-11-25T13:00:00Z", "purchase", "https://c.example/done", None, {"transaction_id": "c-2"}),
    ]),
]


def event_json(shop: str, session: str, ua: str, spec: tuple[Any, ...]) -> dict[str, Any]:
    ts, event_type, url, referrer, props = spec[:5]
    body: dict[str, Any] = {"shopId": shop, "sessionId": session, "eventType": event_type, "timestamp": ts,
                            "url": url, "userAgent": ua}
    if referrer is not None:
        body["referrer"] = referrer
    if props is not None:
        body["properties"] = props
    if len(spec) > 5:
        body["eventName"] = spec[5]
    return body


async def ingest(client: TestClient) -> None:
    for s in DATASET:
        batch = [event_json(s.shop, s.session, s.ua, spec) for spec in s.events]
        headers = {"X-Forwarded-For": s.ip, "CF-IPCountry": s.country}
        resp = await client.post("/api/events", json=batch, headers=headers)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["accepted"] == len(batch)


@pytest.fixture
async def api(make_client: ClientFactory) -> TestClient:
    # A long mirror interval: only the request's own catch-up can make the new rows visible (read-your-writes).
    client = await make_client(trust_proxy=True, mirror_interval=3600.0)
    await ingest(client)
    return client


async def query(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    resp = await client.post("/api/query", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    doc: dict[str, Any] = await resp.json()
    assert set(doc) == {"results", "meta", "query"}
    for row in doc["results"]:
        assert set(row) == {"dimensions", "metrics"}
    return doc


async def rows(client: TestClient, headers: dict[str, str], **body: Any) -> list[tuple[list[Any], list[Any]]]:
    doc = await query(client, body, headers)
    return [(r["dimensions"], r["metrics"]) for r in doc["results"]]


async def one(client: TestClient, headers: dict[str, str], **body: Any) -> list[Any]:
    """The metrics of a query without dimensions: exactly one row."""
    found = await rows(client, headers, **body)
    assert len(found) == 1, found
    dims, metrics = found[0]
    assert dims == []
    return metrics


ALL_METRICS = ["events", "pageViews", "sessions", "visitors", "bounceRate", "avgSessionDuration", "viewsPerSession",
               "orders", "revenue", "averageOrderValue", "conversionRate"]
EPS = 1e-9


# ---------------------------------------------------------------------------------------------- metrics


async def test_all_metrics_for_one_shop(api: TestClient, admin: dict[str, str]) -> None:
    m = await one(api, admin, shopId="shopA", metrics=ALL_METRICS, dateRange="7d")
    values = dict(zip(ALL_METRICS, m, strict=True))
    assert values["events"] == 14
    assert values["pageViews"] == 9
    assert values["sessions"] == 5
    assert values["visitors"] == 4
    assert values["bounceRate"] == pytest.approx(0.2, abs=EPS)
    assert values["avgSessionDuration"] == pytest.approx(600.0, abs=EPS)
    assert values["viewsPerSession"] == pytest.approx(1.8, abs=EPS)
    assert values["orders"] == 1
    assert values["revenue"] == [{"currency": "USD", "amount": 50}]
    assert values["averageOrderValue"] == [{"currency": "USD", "amount": 50}]
    assert values["conversionRate"] == pytest.approx(0.2, abs=EPS)


async def test_orders_revenue_and_conversion_deduplicate_orders(api: TestClient, admin: dict[str, str]) -> None:
    # shopC: orders c-1 (first copy 20.5 EUR), the id-less 5 USD order, c-2 (0 USD); C2's copy of c-1 is ignored.
    m = await one(api, admin, shopId="shopC", dateRange="7d",
                  metrics=["orders", "revenue", "averageOrderValue", "conversionRate", "sessions", "bounceRate",
                           "viewsPerSession"])
    orders, revenue, aov, conversion, sessions, bounce, per_session = m
    assert orders == 3
    assert revenue == [{"currency": "EUR", "amount": 20.5}, {"currency": "USD", "amount": 5}]
    assert aov == [{"currency": "EUR", "amount": 20.5}, {"currency": "USD", "amount": 2.5}]
    assert sessions == 4
    assert conversion == pytest.approx(0.75, abs=EPS)  # C1, C3, C4; not C2
    assert bounce == 0  # the one session with a page_view (C1) has two events
    assert per_session == 1


async def test_order_by_a_money_metric(api: TestClient, admin: dict[str, str]) -> None:
    # desktop: C1's 20.5 EUR, C3's 5 USD, C4's 0 USD; mobile: only C2's ignored copy of c-1.
    found = await rows(api, admin, shopId="shopC", dateRange="7d", metrics=["revenue", "orders"],
                       dimensions=["device"], orderBy=[["revenue", "desc"]])
    assert found == [(["desktop"], [[{"currency": "EUR", "amount": 20.5}, {"currency": "USD", "amount": 5}], 3]),
                     (["mobile"], [[], 0])]
    found = await rows(api, admin, shopId="shopC", dateRange="7d", metrics=["revenue", "orders"],
                       dimensions=["device"], orderBy=[["revenue", "asc"]])
    assert [dims for dims, _ in found] == [["mobile"], ["desktop"]]


async def test_rates_without_denominator_are_null(api: TestClient, admin: dict[str, str]) -> None:
    # Only purchase events: no session has a page_view, so bounceRate and viewsPerSession have no denominator.
    m = await one(api, admin, shopId="shopC", dateRange="7d", metrics=["bounceRate", "viewsPerSession", "events"],
                  filters=[["is", "eventType", "purchase"]])
    assert m == [None, None, 4]


async def test_sessions_by_device(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions", "pageViews", "events"],
                       dimensions=["device"], orderBy=[["device", "asc"]])
    assert found == [(["desktop"], [3, 4, 8]), (["mobile"], [2, 5, 6])]


async def test_include_bots(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions", "pageViews"],
                       dimensions=["device"], orderBy=[["device", "asc"]], includeBots=True)
    assert found == [(["bot"], [1, 1]), (["desktop"], [3, 4]), (["mobile"], [2, 5])]
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions"], includeBots=False) == [5]
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions"], includeBots=True) == [6]


async def test_browser_os_country(api: TestClient, admin: dict[str, str]) -> None:
    assert await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions"], dimensions=["browser"],
                      orderBy=[["browser", "asc"]]) == [(["Chrome"], [3]), (["Mobile Safari"], [2])]
    assert await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions"], dimensions=["os"],
                      orderBy=[["os", "asc"]]) == [(["Windows"], [3]), (["iOS"], [2])]
    assert await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions", "visitors"],
                      dimensions=["country"], orderBy=[["sessions", "desc"], ["country", "asc"]]
                      ) == [(["DE"], [2, 2]), (["US"], [2, 1]), (["FR"], [1, 1])]


async def test_sources_and_utm_come_from_the_first_event(api: TestClient, admin: dict[str, str]) -> None:
    # S1: utm_source wins over everything; S2: external referrer host, lower-case, no www.; S3: t.co;
    # S4: no referrer; S7: its own site as referrer → direct.
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions", "pageViews"],
                       dimensions=["source"], orderBy=[["sessions", "desc"], ["source", "asc"]])
    assert found == [(["direct"], [2, 2]), (["google.com"], [1, 3]), (["newsletter"], [1, 2]), (["t.co"], [1, 2])]
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["sessions", "events"],
                       dimensions=["utmSource", "utmMedium", "utmCampaign"],
                       filters=[["is", "utmSource", "newsletter"]])
    assert found == [(["newsletter", "email", "black friday"], [1, 5])]


async def test_session_attributes_come_from_the_first_event_in_range(api: TestClient, admin: dict[str, str]) -> None:
    # Only 11-26: S3's first in-range event is its 00:10 page view without a referrer, so it is direct there.
    found = await rows(api, admin, shopId="shopA", dateRange=["2026-11-26", "2026-11-26"],
                       metrics=["sessions", "events"], dimensions=["source"])
    assert found == [(["direct"], [3, 4])]


async def test_page_views_by_path_ordered_and_paged(api: TestClient, admin: dict[str, str]) -> None:
    expected = [(["/"], [4]), (["/products/a"], [2]), (["/products/b"], [2]), (["/pricing"], [1]),
                (["/checkout/done"], [0]), (["/signup"], [0])]
    body = {"shopId": "shopA", "dateRange": "7d", "metrics": ["pageViews"], "dimensions": ["path"],
            "orderBy": [["pageViews", "desc"], ["path", "asc"]]}
    full = await query(api, body, admin)
    assert [(r["dimensions"], r["metrics"]) for r in full["results"]] == expected
    assert full["meta"] == {"total": 6}

    walked: list[tuple[list[Any], list[Any]]] = []
    for offset in (0, 2, 4):
        page = await query(api, {**body, "limit": 2, "offset": offset}, admin)
        assert page["meta"] == {"total": 6}
        walked.extend((r["dimensions"], r["metrics"]) for r in page["results"])
    assert walked == expected

    page = await query(api, {**body, "limit": 4, "offset": 4}, admin)
    assert [(r["dimensions"], r["metrics"]) for r in page["results"]] == expected[4:]
    assert page["meta"] == {"total": 6}


async def test_meta_total_past_the_last_page(api: TestClient, admin: dict[str, str]) -> None:
    # meta.total counts the rows before limit/offset, also when the offset is past the end.
    body = {"shopId": "shopA", "dateRange": "7d", "metrics": ["pageViews"], "dimensions": ["path"],
            "orderBy": [["pageViews", "desc"], ["path", "asc"]]}
    page = await query(api, {**body, "limit": 2, "offset": 6}, admin)
    assert page["results"] == []
    assert page["meta"] == {"total": 6}
    page = await query(api, {**body, "offset": 100}, admin)
    assert page["results"] == []
    assert page["meta"] == {"total": 6}


async def test_order_ascending(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["pageViews"], dimensions=["path"],
                       orderBy=[["pageViews", "asc"], ["path", "desc"]])
    assert found == [(["/signup"], [0]), (["/checkout/done"], [0]), (["/pricing"], [1]), (["/products/b"], [2]),
                     (["/products/a"], [2]), (["/"], [4])]


async def test_event_types_and_names(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events"], dimensions=["eventType"],
                       orderBy=[["events", "desc"], ["eventType", "asc"]])
    assert found == [(["page_view"], [9]), (["signup"], [2]), (["add_to_cart"], [1]), (["product_view"], [1]),
                     (["purchase"], [1])]
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events", "sessions"],
                       dimensions=["eventName"], filters=[["is", "eventType", "signup"]])
    assert found == [(["Sign Up"], [2, 2])]


async def test_url_and_product_dimensions(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events"], dimensions=["url"],
                       filters=[["contains", "url", "utm_campaign"]])
    assert found == [([BFCM_URL], [1])]
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events", "sessions"],
                       dimensions=["productId"], filters=[["is", "productId", "A"]])
    assert found == [(["A"], [2, 1])]


async def test_prop_dimension(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events", "sessions"],
                       dimensions=["prop:plan"], filters=[["is", "eventType", "signup"]],
                       orderBy=[["prop:plan", "asc"]])
    assert found == [(["free"], [1, 1]), (["pro"], [1, 1])]
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events"],
                       dimensions=["prop:productId", "eventType"], filters=[["is", "prop:productId", "A"]],
                       orderBy=[["eventType", "asc"]])
    assert found == [(["A", "add_to_cart"], [1]), (["A", "product_view"], [1])]


# ---------------------------------------------------------------------------------------------- time


async def test_time_day_utc(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange=["2026-11-24", "2026-11-26"],
                       metrics=["pageViews", "sessions", "events"], dimensions=["time:day"],
                       orderBy=[["time:day", "asc"]])
    # A session counts in every bucket it has an event in: S3 is in 11-25 and 11-26.
    assert found == [(["2026-11-24"], [2, 1, 5]), (["2026-11-25"], [4, 2, 5]), (["2026-11-26"], [3, 3, 4])]


async def test_time_day_in_a_timezone(api: TestClient, admin: dict[str, str]) -> None:
    # New York is UTC-5: [11-24, 11-25] local is [11-24T05:00Z, 11-26T05:00Z); every 11-25/26 UTC event is 11-25 local.
    found = await rows(api, admin, shopId="shopA", dateRange=["2026-11-24", "2026-11-25"],
                       timezone="America/New_York", metrics=["pageViews", "sessions", "events"],
                       dimensions=["time:day"], orderBy=[["time:day", "asc"]])
    assert found == [(["2026-11-24"], [2, 1, 5]), (["2026-11-25"], [7, 4, 9])]


async def test_7d_ends_with_today_in_the_timezone(api: TestClient, admin: dict[str, str]) -> None:
    # Today in New York is 11-25, so 7d is [11-19, 11-26) local, which takes in S6 (11-19 07:00 local).
    found = await rows(api, admin, shopId="shopA", dateRange="7d", timezone="America/New_York",
                       metrics=["pageViews"], dimensions=["time:day"], orderBy=[["time:day", "asc"]])
    assert found == [(["2026-11-19"], [1]), (["2026-11-24"], [2]), (["2026-11-25"], [7])]


async def test_time_week_and_month(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="30d", metrics=["pageViews", "sessions"],
                       dimensions=["time:week"], orderBy=[["time:week", "asc"]])
    # ISO weeks start on Monday: 11-19 is in the week of 11-16, 11-24..26 in the week of 11-23.
    assert found == [(["2026-11-16"], [1, 1]), (["2026-11-23"], [9, 5])]
    found = await rows(api, admin, shopId="shopA", dateRange="30d", metrics=["pageViews"],
                       dimensions=["time:month"])
    assert found == [(["2026-11-01"], [10])]


async def test_time_hour_in_a_timezone(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange=["2026-11-24", "2026-11-24"],
                       timezone="Europe/Berlin", metrics=["events"], dimensions=["time:hour"])
    assert len(found) == 1
    (hour,), metrics = found[0]
    assert metrics == [5]
    start = datetime.fromisoformat(hour)
    assert start.utcoffset() == timedelta(hours=1)
    assert start == datetime(2026, 11, 24, 11, 0, tzinfo=ZoneInfo("Europe/Berlin"))


async def test_filter_on_time_hour_takes_the_value_the_api_returns(api: TestClient, admin: dict[str, str]) -> None:
    # A filter value for a dimension is written the way the API outputs that dimension.
    found = await rows(api, admin, shopId="shopA", dateRange=["2026-11-24", "2026-11-24"], metrics=["events"],
                       dimensions=["time:hour"])
    assert len(found) == 1
    (hour,), _ = found[0]
    m = await one(api, admin, shopId="shopA", dateRange="7d", metrics=["events"],
                  filters=[["is", "time:hour", hour]])
    assert m == [5]
    m = await one(api, admin, shopId="shopA", dateRange="7d", metrics=["events"],
                  filters=[["is", "time:day", "2026-11-24"]])
    assert m == [5]


# ---------------------------------------------------------------------------------------------- date ranges


async def test_date_ranges(api: TestClient, admin: dict[str, str]) -> None:
    metrics = ["sessions", "pageViews", "events"]
    assert await one(api, admin, shopId="shopA", metrics=metrics, dateRange="7d") == [5, 9, 14]
    # The default is 30d, which also holds S6.
    assert await one(api, admin, shopId="shopA", metrics=metrics) == [6, 10, 15]
    assert await one(api, admin, shopId="shopA", metrics=metrics, dateRange="30d") == [6, 10, 15]
    # The end date includes its whole day.
    assert await one(api, admin, shopId="shopA", metrics=metrics,
                     dateRange=["2026-11-19", "2026-11-19"]) == [1, 1, 1]
    # [11-24, 11-25]: S1, S2 and S3's first page view only.
    assert await one(api, admin, shopId="shopA", metrics=metrics,
                     dateRange=["2026-11-24", "2026-11-25"]) == [3, 6, 10]


# ---------------------------------------------------------------------------------------------- filters

M3 = ["events", "pageViews", "sessions"]

EVENT_FILTERS = [
    (["is", "path", "/"], [4, 4, 4]),  # e1 e6 e11 e12
    (["is", "path", ["/", "/pricing"]], [5, 5, 5]),
    (["is_not", "path", "/"], [10, 5, 4]),  # all but those four; S4 drops out
    (["contains", "path", "products"], [6, 4, 3]),  # S1 x3, S2 x2, S3 x1
    (["not_contains", "path", "products"], [8, 5, 5]),
    (["matches", "path", "^/(pricing|signup)$"], [3, 1, 2]),  # S2 signup, S7 both
    (["is", "eventType", "page_view"], [9, 9, 5]),
    (["is_not", "eventType", "page_view"], [5, 0, 3]),
]


@pytest.mark.parametrize(("flt", "expected"), EVENT_FILTERS, ids=[f"{f[0]}-{f[1]}" for f, _ in EVENT_FILTERS])
async def test_filter_on_an_event_dimension_keeps_matching_events(
        api: TestClient, admin: dict[str, str], flt: list[Any], expected: list[int]) -> None:
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=M3, filters=[flt]) == expected


SESSION_FILTERS = [
    (["is", "device", "mobile"], [6, 5, 2]),  # S2 (with its signup) and S3
    (["is_not", "device", "mobile"], [8, 4, 3]),  # S1, S4, S7
    (["contains", "source", "google"], [4, 3, 1]),  # S2, whose signup is kept
    (["not_contains", "source", "direct"], [11, 7, 3]),  # S1, S2, S3
    (["matches", "source", "^(newsletter|t\\.co)$"], [7, 4, 2]),  # S1, S3
    (["is", "country", "US"], [6, 5, 2]),
    (["is", "browser", "Chrome"], [8, 4, 3]),
    (["is", "os", "iOS"], [6, 5, 2]),
    (["is", "utmCampaign", "black friday"], [5, 2, 1]),
    (["is", "utmMedium", "email"], [5, 2, 1]),
    (["contains", "referrer", "t.co"], [2, 2, 1]),
]


@pytest.mark.parametrize(("flt", "expected"), SESSION_FILTERS, ids=[f"{f[0]}-{f[1]}" for f, _ in SESSION_FILTERS])
async def test_filter_on_a_session_dimension_keeps_whole_sessions(
        api: TestClient, admin: dict[str, str], flt: list[Any], expected: list[int]) -> None:
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=M3, filters=[flt]) == expected


async def test_session_filter_keeps_the_sessions_other_page_views(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["pageViews"], dimensions=["path"],
                       filters=[["is", "device", "mobile"]], orderBy=[["path", "asc"]])
    assert found == [(["/"], [2]), (["/products/a"], [1]), (["/products/b"], [2]), (["/signup"], [0])]


async def test_filters_combine_with_and(api: TestClient, admin: dict[str, str]) -> None:
    m = await one(api, admin, shopId="shopA", dateRange="7d", metrics=M3,
                  filters=[["is", "device", "mobile"], ["contains", "path", "products"]])
    assert m == [3, 3, 2]  # e7, e8, e10


async def test_event_filter_with_a_session_dimension(api: TestClient, admin: dict[str, str]) -> None:
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events", "sessions"],
                       dimensions=["source"], filters=[["is", "eventType", "signup"]],
                       orderBy=[["source", "asc"]])
    assert found == [(["direct"], [1, 1]), (["google.com"], [1, 1])]


async def test_filter_values_that_look_like_sql_are_just_values(api: TestClient, admin: dict[str, str]) -> None:
    m = await one(api, admin, shopId="shopA", dateRange="7d", metrics=["events"],
                  filters=[["is_not", "path", "/' OR '1'='1"]])
    assert m == [14]
    found = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["events"], dimensions=["path"],
                       filters=[["is", "path", ["x'); DROP TABLE events; --"]]])
    assert found == []
    # The table is still there.
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["events"]) == [14]


# ---------------------------------------------------------------------------------------------- the echo


async def test_normalised_query_echo(api: TestClient, admin: dict[str, str]) -> None:
    doc = await query(api, {"shopId": "shopA", "metrics": ["events"]}, admin)
    echo = doc["query"]
    expected = {"shopId": "shopA", "metrics": ["events"], "dimensions": [], "filters": [], "dateRange": "30d",
                "timezone": "UTC", "orderBy": [], "limit": 100, "offset": 0, "includeBots": False}
    assert {k: echo.get(k) for k in expected} == expected

    body = {"shopId": "shopA", "metrics": ["pageViews", "sessions"], "dimensions": ["device"],
            "filters": [["is", "device", "mobile"], ["contains", "path", ["products", "pricing"]]],
            "dateRange": ["2026-11-24", "2026-11-26"], "timezone": "Europe/Berlin",
            "orderBy": [["sessions", "desc"]], "limit": 7, "offset": 1, "includeBots": True, "unknown": 1}
    echo = (await query(api, body, admin))["query"]
    expected = {"shopId": "shopA", "metrics": ["pageViews", "sessions"], "dimensions": ["device"],
                "filters": [["is", "device", ["mobile"]], ["contains", "path", ["products", "pricing"]]],
                "dateRange": ["2026-11-24", "2026-11-26"], "timezone": "Europe/Berlin",
                "orderBy": [["sessions", "desc"]], "limit": 7, "offset": 1, "includeBots": True}
    assert {k: echo.get(k) for k in expected} == expected
    assert "unknown" not in echo


# ---------------------------------------------------------------------------------------------- auth


async def test_auth(api: TestClient, admin: dict[str, str]) -> None:
    body = {"shopId": "shopA", "metrics": ["sessions"], "dateRange": "7d"}
    await assert_error(await api.post("/api/query", json=body), 401, "unauthorized")
    await assert_error(await api.post("/api/query", json=body, headers={"Authorization": "Bearer nope"}),
                       401, "unauthorized")

    resp = await api.post("/api/tokens", json={"shopId": "shopA", "name": "dash"}, headers=admin)
    assert resp.status == 201, await resp.text()
    shop_token = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    assert await one(api, shop_token, **body) == [5]
    # Without shopId a shop token reads its own shop.
    doc = await query(api, {"metrics": ["sessions"], "dateRange": "7d"}, shop_token)
    assert doc["results"] == [{"dimensions": [], "metrics": [5]}]
    assert doc["query"]["shopId"] == "shopA"
    await assert_error(await api.post("/api/query", json={**body, "shopId": "shopB"}, headers=shop_token),
                       403, "forbidden")


async def test_admin_reads_every_shop_and_sessions_are_keyed_by_shop(api: TestClient, admin: dict[str, str]) -> None:
    # shopA 5 + shopB 1 (its "S1" is not shopA's S1) + shopC 4.
    assert await one(api, admin, metrics=["sessions", "events"], dateRange="7d") == [10, 20]
    assert await one(api, admin, shopId="shopB", metrics=["sessions", "events"], dateRange="7d") == [1, 1]


# ---------------------------------------------------------------------------------------------- bad requests

BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown metric", {"metrics": ["clicks"]}, "metrics"),
    ("no metrics", {"dimensions": ["path"]}, "metrics"),
    ("unknown dimension", {"metrics": ["events"], "dimensions": ["colour"]}, "dimensions"),
    ("bad prop key", {"metrics": ["events"], "dimensions": ['prop:a"b']}, "dimensions"),
    ("unknown op", {"metrics": ["events"], "filters": [["equals", "path", "/"]]}, "filters[0]"),
    ("unknown filter dimension", {"metrics": ["events"], "filters": [["is", "colour", "red"]]}, "filters[0]"),
    ("filter shape", {"metrics": ["events"], "filters": [["is", "path"]]}, "filters[0]"),
    ("bad regex", {"metrics": ["events"], "filters": [["matches", "path", "(unclosed"]]}, "filters[0]"),
    # Valid for Python's re, not for the engine's regex (no look-around, no back-references): still filters[i].
    ("look-ahead regex", {"metrics": ["events"], "filters": [["matches", "path", "^/(?=p)"]]}, "filters[0]"),
    ("back-reference regex", {"metrics": ["events"],
                              "filters": [["is", "device", "mobile"], ["matches", "path", "(a)\\1"]]}, "filters[1]"),
    ("orderBy unknown name", {"metrics": ["events"], "orderBy": [["sessions", "desc"]]}, "orderBy[0]"),
    ("orderBy direction", {"metrics": ["events"], "orderBy": [["events", "up"]]}, "orderBy[0]"),
    ("limit zero", {"metrics": ["events"], "limit": 0}, "limit"),
    ("limit too big", {"metrics": ["events"], "limit": 10_001}, "limit"),
    ("limit string", {"metrics": ["events"], "limit": "5"}, "limit"),
    ("offset negative", {"metrics": ["events"], "offset": -1}, "offset"),
    ("offset beyond 64 bits", {"metrics": ["events"], "offset": 2**63}, "offset"),
    ("unknown period", {"metrics": ["events"], "dateRange": "8d"}, "dateRange"),
    ("dateRange number", {"metrics": ["events"], "dateRange": 7}, "dateRange"),
    ("dateRange one date", {"metrics": ["events"], "dateRange": ["2026-11-01"]}, "dateRange"),
    ("dateRange not a date", {"metrics": ["events"], "dateRange": ["yesterday-ish", "2026-11-02"]}, "dateRange"),
    ("dateRange not a real date", {"metrics": ["events"], "dateRange": ["2026-02-30", "2026-03-02"]}, "dateRange"),
    ("dateRange reversed", {"metrics": ["events"], "dateRange": ["2026-11-26", "2026-11-01"]}, "dateRange"),
    ("unknown timezone", {"metrics": ["events"], "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("timezone not a string", {"metrics": ["events"], "timezone": 1}, "timezone"),
    ("includeBots not a boolean", {"metrics": ["events"], "includeBots": "yes"}, "includeBots"),
    ("bad shopId", {"metrics": ["events"], "shopId": "no spaces allowed"}, "shopId"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES])
async def test_bad_query_is_400_naming_the_field(client: TestClient, admin: dict[str, str], body: dict[str, Any],
                                                 field: str) -> None:
    error = await assert_error(await client.post("/api/query", json=body, headers=admin), 400, "validation_failed")
    assert error["details"][0]["field"] == field
    assert isinstance(error["details"][0]["message"], str) and error["details"][0]["message"]


async def test_invalid_json(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/query", data=b'{"metrics": ["events"', headers={**admin,
                             "Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")


async def test_body_must_be_an_object(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/query", json=[{"metrics": ["events"]}], headers=admin)
    await assert_error(resp, 400, "validation_failed")


async def test_visitors_alone_filtered_by_day_and_in_an_empty_range(api: TestClient, admin: dict[str, str]) -> None:
    # Visitors as the only metric, without dimensions, are counted from the events (Metric.total_sql), with no
    # level-1 column at all: still exactly one row, filters apply, and an empty range counts 0, not no row.
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["visitors"]) == [4]
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["visitors"],
                     filters=[["is", "device", "mobile"]]) == [1]
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["visitors", "sessions"],
                     filters=[["is", "country", "DE"]]) == [2, 2]
    assert await one(api, admin, shopId="nobody", dateRange="7d", metrics=["visitors"]) == [0]
    # Per local day (grouped as dates, printed YYYY-MM-DD): each day's visitors through the lists per session.
    days = await rows(api, admin, shopId="shopA", dateRange="7d", metrics=["visitors", "sessions"],
                      dimensions=["time:day"], orderBy=[["time:day", "asc"]])
    assert all(len(d[0]) == 10 and d[0][4] == "-" for d, _ in days)
    assert [d[0] for d, _ in days] == sorted(d[0] for d, _ in days)
    one_day = days[0][0][0]
    assert await one(api, admin, shopId="shopA", dateRange="7d", metrics=["visitors", "sessions"],
                     filters=[["is", "time:day", one_day]]) == days[0][1]
