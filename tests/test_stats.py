"""GET /api/stats through a real app (SQLite → DuckDB mirror → report), checked against an independent model.

The model below recomputes every field of the report in plain Python (stdlib datetime/zoneinfo/urllib.parse only)
from the very event dicts the test posts; it shares no code or SQL with the project. Contract: API.md sections 1, 3
and 5; where the contract is silent the expectations follow the documented implementation decisions (bots, session
attributes from the first in-range event by (timestamp, insertion order), order de-duplication over all time, ...).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import NOW_MS, assert_error

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_FUNNEL = ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase")
REPORT_KEYS = {"shopId", "range", "totals", "timeseries", "eventTypes", "topPages", "entryPages", "exitPages",
               "sources", "utmCampaigns", "devices", "browsers", "os", "countries", "funnel", "topProducts"}
TOTAL_KEYS = {"events", "pageViews", "sessions", "visitors", "bounceRate", "avgSessionDuration", "viewsPerSession",
              "orders", "revenue", "averageOrderValue", "conversionRate"}
RATES = ("bounceRate", "conversionRate")
MONEY = ("revenue", "averageOrderValue")

CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.6099.{v} Safari/537.36")
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.{v} Safari/605.1.15")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.{v} Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.{v} Mobile/15E148 Safari/604.1")
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel {v}) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.6099.43 Mobile Safari/537.36")
FIREFOX_UBUNTU = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:12{v}.0) Gecko/20100101 Firefox/12{v}.0"
KIOSK = "ShopKiosk/3.{v}"  # a real client nobody can name: no browser, no os, device "other"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# User agent → (browser, os, device, isBot): the classification a browser-family parser gives these strings.
UA_FAMILIES = {
    CHROME_WIN: ("Chrome", "Windows", "desktop", False),
    SAFARI_MAC: ("Safari", "Mac OS X", "desktop", False),
    IPHONE: ("Mobile Safari", "iOS", "mobile", False),
    IPAD: ("Mobile Safari", "iOS", "tablet", False),
    ANDROID: ("Chrome Mobile", "Android", "mobile", False),
    FIREFOX_UBUNTU: ("Firefox", "Ubuntu", "desktop", False),
    KIOSK: (None, None, "other", False),
}
UA_INFO: dict[str, tuple[str | None, str | None, str, bool]] = {
    GOOGLEBOT: ("Googlebot", None, "bot", True),
    **{template.format(v=v): info for template, info in UA_FAMILIES.items() for v in range(1, 10)},
}
BROWSER_UA = CHROME_WIN.format(v=1)


def ms_of(text: str, tz: str = "UTC") -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso(ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# --------------------------------------------------------------------------------------------------------------------
# Events as the test sends them, plus the model's view of each one
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Ev:
    shop: str
    session: str
    type: str  # canonical
    ts: int  # epoch ms
    ua: str
    url: str | None = None
    referrer: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    sent_type: str | None = None  # an alias to send instead of the canonical type
    country: str | None = None
    seq: int = -1  # insertion order, assigned when posted

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"shopId": self.shop, "sessionId": self.session,
                                "eventType": self.sent_type or self.type, "timestamp": iso(self.ts),
                                "userAgent": self.ua, "properties": self.props}
        if self.url is not None:
            body["url"] = self.url
        if self.referrer is not None:
            body["referrer"] = self.referrer
        return body

    @property
    def bot(self) -> bool:
        return UA_INFO[self.ua][3]

    @property
    def skey(self) -> tuple[str, str]:
        return (self.shop, self.session)

    @property
    def visitor(self) -> tuple[str, str]:
        # One client IP and one ingest day for every request: a visitor hash is (shop, user agent).
        return (self.shop, self.ua)


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    host = urlsplit(url).hostname  # lower-cased, without port and userinfo
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


def query_param(url: str | None, name: str) -> str | None:
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    value = values[0].strip() if values else ""
    return value or None


def path_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.path or ("/" if parts.netloc else None)


def source_of(ev: Ev) -> str:
    utm = query_param(ev.url, "utm_source")
    if utm:
        return utm
    ref = host_of(ev.referrer)
    if ref and ref != host_of(ev.url):
        return ref
    return "direct"


def first_prop(props: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if props.get(key) is not None:
            return props[key]
    return None


def product_of(ev: Ev) -> str | None:
    pid = first_prop(ev.props, "productId", "product_id", "item_id")
    return None if pid is None else str(pid)


def order_value(ev: Ev) -> float:
    value = first_prop(ev.props, "value", "revenue", "total")
    return float(value) if value is not None else 0.0


def currency_of(ev: Ev) -> str:
    raw = ev.props.get("currency")
    return raw.strip().upper() if isinstance(raw, str) and raw.strip() else "USD"


def order_key(ev: Ev) -> tuple[str, str]:
    oid = first_prop(ev.props, "orderId", "order_id", "transaction_id")
    return (ev.shop, f"order:{oid}" if oid is not None else f"event:{ev.seq}")


def money_list(amounts: dict[str, float], counts: dict[str, int] | None = None) -> list[dict[str, Any]]:
    out = []
    for currency in sorted(amounts):
        amount = amounts[currency] / counts[currency] if counts else amounts[currency]
        out.append({"currency": currency, "amount": round(amount, 6)})
    return out


# --------------------------------------------------------------------------------------------------------------------
# The model: the whole report from the event list
# --------------------------------------------------------------------------------------------------------------------


def counted_seqs(pool: list[Ev]) -> set[int]:
    """The counted copy of each order: its first purchase by (timestamp, insertion order) over all time."""
    first: dict[tuple[str, str], Ev] = {}
    for ev in sorted((e for e in pool if e.type == "purchase"), key=lambda e: (e.ts, e.seq)):
        first.setdefault(order_key(ev), ev)
    return {ev.seq for ev in first.values()}


def local(ms: int, tz: ZoneInfo) -> datetime:
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def day_bucket(day: date, interval: str) -> str:
    if interval == "week":
        day -= timedelta(days=day.weekday())  # ISO weeks start on Monday
    elif interval == "month":
        day = day.replace(day=1)
    return day.isoformat()


def bucket_of(ms: int, tz: ZoneInfo, interval: str) -> str:
    moment = local(ms, tz)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0).isoformat(timespec="seconds")
    return day_bucket(moment.date(), interval)


def bucket_labels(start: int, end: int, tz: ZoneInfo, interval: str) -> list[str]:
    if interval == "hour":  # whole-hour offsets only (UTC, Europe/*, America/*): UTC hours are local hours
        return [local(t, tz).isoformat(timespec="seconds") for t in range(start - start % HOUR, end, HOUR)]
    labels: list[str] = []
    day, last = local(start, tz).date(), local(end - 1, tz).date()
    while day <= last:
        label = day_bucket(day, interval)
        if label not in labels:
            labels.append(label)
        day += timedelta(days=1)
    return labels


def ranked(rows: dict[str, dict[str, Any]], first: str) -> list[dict[str, Any]]:
    items = [{"value": value, **metrics} for value, metrics in rows.items() if value is not None]
    items.sort(key=lambda row: (-row[first], row["value"]))
    return items[:10]


def model_totals(in_range: list[Ev], counted: set[int]) -> dict[str, Any]:
    sessions: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for ev in in_range:
        sessions[ev.skey].append(ev)
    page_views = sum(1 for ev in in_range if ev.type == "page_view")
    with_pv = [evs for evs in sessions.values() if any(e.type == "page_view" for e in evs)]
    orders = [ev for ev in in_range if ev.seq in counted]
    revenue: dict[str, float] = defaultdict(float)
    n_orders: dict[str, int] = defaultdict(int)
    for ev in orders:
        revenue[currency_of(ev)] += order_value(ev)
        n_orders[currency_of(ev)] += 1
    durations = [(max(e.ts for e in evs) - min(e.ts for e in evs)) / 1000 for evs in sessions.values()]
    converted = {ev.skey for ev in orders}
    return {
        "events": len(in_range),
        "pageViews": page_views,
        "sessions": len(sessions),
        "visitors": len({ev.visitor for ev in in_range}),
        "bounceRate": sum(1 for evs in with_pv if len(evs) == 1) / len(with_pv) if with_pv else None,
        "avgSessionDuration": sum(durations) / len(durations) if durations else None,
        "viewsPerSession": page_views / len(with_pv) if with_pv else None,
        "orders": len(orders),
        "revenue": money_list(revenue),
        "averageOrderValue": money_list(revenue, n_orders),
        "conversionRate": len(converted) / len(sessions) if sessions else None,
    }


def model_funnel(sessions: dict[tuple[str, str], list[Ev]], steps: tuple[str, ...],
                 counted: set[int]) -> list[dict[str, Any]]:
    reached = [0] * len(steps)
    for evs in sessions.values():
        at: int | None = None
        for i, step in enumerate(steps):
            times = [e.ts for e in evs if e.type == step and (step != "purchase" or e.seq in counted)
                     and (at is None or e.ts >= at)]
            if not times:
                break
            at = min(times)
            reached[i] += 1
    out = []
    for i, step in enumerate(steps):
        prev = reached[i - 1] if i else reached[0]
        out.append({"step": step, "sessions": reached[i],
                    "rateFromStart": reached[i] / reached[0] if reached[0] else None,
                    "rateFromPrevious": reached[i] / prev if prev else None})
    return out


def model_products(in_range: list[Ev], counted: set[int]) -> list[dict[str, Any]]:
    views: Counter[str] = Counter()
    carts: Counter[str] = Counter()
    names: dict[str, str] = {}
    units: dict[str, float] = defaultdict(float)
    revenue: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    item_names: dict[str, str] = {}
    for ev in in_range:  # already sorted by (timestamp, insertion order)
        pid = product_of(ev)
        if ev.type in ("product_view", "add_to_cart") and pid is not None:
            (views if ev.type == "product_view" else carts)[pid] += 1
            if ev.props.get("name") is not None:
                names.setdefault(pid, ev.props["name"])
        if ev.seq not in counted:
            continue
        items = ev.props.get("items")
        if items is None:
            items = ev.props.get("products")
        if items is None:
            lines = [ev.props | {"productId": pid}] if pid is not None else []
        else:
            lines = [{**item, "productId": first_prop(item, "productId", "product_id", "item_id", "id")}
                     for item in items]
        for line in lines:
            if line["productId"] is None:
                continue
            item_id = str(line["productId"])
            quantity = float(line.get("quantity", 1))
            units[item_id] += quantity
            revenue[item_id][currency_of(ev)] += float(line.get("price", 0)) * quantity
            if line.get("name") is not None:
                item_names.setdefault(item_id, line["name"])
    rows = []
    for pid in set(views) | set(carts) | set(units):
        rows.append({"productId": pid, "name": names.get(pid, item_names.get(pid)), "views": views[pid],
                     "addToCarts": carts[pid], "purchases": int(units[pid]),
                     "revenue": money_list(dict(revenue[pid])) if pid in units else []})
    rows.sort(key=lambda r: (-r["purchases"], -r["views"], r["productId"]))
    return rows[:10]


def model_report(events: list[Ev], *, shop: str | None, start: int, end: int, tz: str, interval: str,
                 include_bots: bool = False, funnel: tuple[str, ...] = DEFAULT_FUNNEL) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    pool = [ev for ev in events if (include_bots or not ev.bot) and (shop is None or ev.shop == shop)]
    counted = counted_seqs(pool)
    in_range = sorted((ev for ev in pool if start <= ev.ts < end), key=lambda e: (e.ts, e.seq))
    sessions: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for ev in in_range:
        sessions[ev.skey].append(ev)

    series = {label: [] for label in bucket_labels(start, end, zone, interval)}
    for ev in in_range:
        series[bucket_of(ev.ts, zone, interval)].append(ev)
    timeseries = []
    for label, evs in series.items():
        totals = model_totals(evs, counted)
        timeseries.append({"date": label, **{k: totals[k] for k in
                                             ("events", "pageViews", "sessions", "visitors", "orders", "revenue")}})

    event_types = Counter(ev.type for ev in in_range)
    pages: dict[str, dict[str, Any]] = {}
    for ev in in_range:
        if ev.type == "page_view":
            row = pages.setdefault(path_of(ev.url), {"pageViews": 0, "sessions": set()})
            row["pageViews"] += 1
            row["sessions"].add(ev.skey)
    top_pages = ranked({p: {"pageViews": r["pageViews"], "sessions": len(r["sessions"])} for p, r in pages.items()},
                       "pageViews")

    def attributes(evs: list[Ev]) -> dict[str, Any]:
        first = evs[0]
        browser, os_name, device, _ = UA_INFO[first.ua]
        views = [e for e in evs if e.type == "page_view"]
        return {"entryPages": path_of(views[0].url) if views else None,
                "exitPages": path_of(views[-1].url) if views else None,
                "sources": source_of(first), "utmCampaigns": query_param(first.url, "utm_campaign"),
                "devices": device, "browsers": browser, "os": os_name, "countries": first.country}

    breakdowns: dict[str, dict[Any, dict[str, int]]] = defaultdict(dict)
    for evs in sessions.values():
        views = sum(1 for e in evs if e.type == "page_view")
        for key, value in attributes(evs).items():
            row = breakdowns[key].setdefault(value, {"sessions": 0, "pageViews": 0})
            row["sessions"] += 1
            row["pageViews"] += views

    report = {
        "totals": model_totals(in_range, counted),
        "timeseries": timeseries,
        "eventTypes": ranked({t: {"events": n} for t, n in event_types.items()}, "events"),
        "topPages": top_pages,
        **{key: ranked(breakdowns[key], "sessions") for key in
           ("entryPages", "exitPages", "sources", "utmCampaigns", "devices", "browsers", "os", "countries")},
        "funnel": model_funnel(sessions, funnel, counted),
        "topProducts": model_products(in_range, counted),
    }
    return report


def model_change(cur: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any]:
    change: dict[str, Any] = {}
    for name in TOTAL_KEYS:
        c, p = cur[name], prev[name]
        if name in MONEY:
            cb = {m["currency"]: m["amount"] for m in c}
            pb = {m["currency"]: m["amount"] for m in p}
            change[name] = {k: (cb.get(k, 0.0) - pb[k]) / pb[k] * 100 if pb.get(k) else None
                            for k in sorted(set(cb) | set(pb))}
        elif name in RATES:
            change[name] = (c - p) * 100 if c is not None and p is not None else None
        else:
            change[name] = (c - p) / p * 100 if p and c is not None else None
    return change


# --------------------------------------------------------------------------------------------------------------------
# Comparison and HTTP helpers
# --------------------------------------------------------------------------------------------------------------------


def check(actual: Any, expected: Any, where: str) -> None:
    """Exact structural equality; floats compared with approx, ints must be JSON integers."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            check(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), \
            f"{where}: got {actual!r}\n expected {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            check(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), f"{where}: {actual!r} not a number"
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, int) and not isinstance(expected, bool):
        assert type(actual) is int and actual == expected, f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


async def ingest(client: TestClient, events: list[Ev]) -> None:
    """Post in batches of <= 500, one country header per batch (trusted proxy); records the insertion order."""
    order = sorted(range(len(events)), key=lambda i: (events[i].country or "", i))
    for seq, i in enumerate(order):
        events[i].seq = seq
    ordered = [events[i] for i in order]
    start = 0
    while start < len(ordered):
        country = ordered[start].country
        stop = start
        while stop < len(ordered) and ordered[stop].country == country and stop - start < 500:
            stop += 1
        headers = {"User-Agent": BROWSER_UA}
        if country:
            headers["CF-IPCountry"] = country
        resp = await client.post("/api/events", json=[ev.payload() for ev in ordered[start:stop]], headers=headers)
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert body["accepted"] == stop - start and body["duplicates"] == 0
        start = stop


async def get_stats(client: TestClient, headers: dict[str, str], **params: str) -> dict[str, Any]:
    resp = await client.get("/api/stats", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == JSON_TYPE
    return await resp.json()


def midnight(day: str, tz: str) -> int:
    return ms_of(day + "T00:00:00", tz)


def local_iso(ms: int, tz: str) -> str:
    return local(ms, ZoneInfo(tz)).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------------------------
# The generated data set
# --------------------------------------------------------------------------------------------------------------------

SHOPS = {"shop-a": "shop-a.example", "shop-b": "shop-b.example", "shop-c": "shop-c.example"}
PRODUCTS = {f"P{i:02d}": (f"Product {i}", round(4.5 + 5.25 * i, 2)) for i in range(1, 15)}
PATHS = ("/", "/collections/sale", "/collections/new", "/blog/winter-guide", "/about", "/cart", "/search")
EXTERNAL_REFERRERS = ("https://www.google.com/search?q=boots", "https://WWW.Google.com:443/search?q=coats",
                      "https://Facebook.com/groups/1", "https://news.example.org/a?b=c", "https://l.instagram.com/")
UTMS = ("utm_source=newsletter&utm_medium=email&utm_campaign=Black%20Friday",
        "utm_source=fb+ads&utm_medium=cpc&utm_campaign=winter_sale",
        "utm_medium=cpc&utm_campaign=no_source",
        "utm_source=&utm_campaign=blank_source",
        "utm_source=google&utm_medium=cpc&utm_campaign=brand")
ALIASES = {"page_view": ("page_view", "pageview", "Page Viewed"), "product_view": ("product_view", "Product Viewed"),
           "add_to_cart": ("add_to_cart", "Product Added"), "checkout_start": ("checkout_start", "begin_checkout"),
           "purchase": ("purchase", "Order Completed"), "remove_from_cart": ("Product Removed",),
           "search": ("Products Searched",), "newsletter_signup": ("newsletter_signup",)}
GEN_START = ms_of("2026-11-16T00:00:00Z")
LATEST = NOW_MS - 5 * MINUTE
CURRENT_PAGE = object()


class Session:
    """Builds one session's events with a moving clock and the current page as the next event's referrer."""

    def __init__(self, out: list[Ev], rng: random.Random, shop: str, sid: str, ua: str, country: str | None,
                 ts: int) -> None:
        self.out, self.rng, self.shop, self.sid, self.ua, self.country, self.ts = out, rng, shop, sid, ua, country, ts
        self.base = f"https://{'www.' if rng.random() < 0.5 else ''}{SHOPS[shop]}"
        self.page: str | None = None
        self.cart: list[tuple[str, int]] = []

    def emit(self, etype: str, *, path: str | None = None, url: str | None = None, referrer: Any = CURRENT_PAGE,
             props: dict[str, Any] | None = None, at: int | None = None) -> Ev:
        """An event at the session clock (or `at`); its referrer is the current page unless one is given."""
        if at is not None:
            self.ts = at
        if url is None:
            url = self.base + path if path is not None else self.page
        ref = self.page if referrer is CURRENT_PAGE else referrer
        ev = Ev(self.shop, self.sid, etype, self.ts, self.ua, url, ref, props or {},
                sent_type=self.rng.choice(ALIASES.get(etype, (etype,))), country=self.country)
        self.out.append(ev)
        self.page = url
        return ev

    def wait(self, lo: int = 5, hi: int = 240) -> None:
        self.ts += self.rng.randint(lo, hi) * SECOND + self.rng.randint(0, 999)

    def product_props(self, pid: str, quantity: int | None = None) -> dict[str, Any]:
        name, price = PRODUCTS[pid]
        props = {self.rng.choice(("productId", "productId", "product_id", "item_id")): pid, "name": name,
                 "price": price}
        if quantity is not None:
            props["quantity"] = quantity
        return props

    def purchase_props(self, order_id: str | None, lines: list[tuple[str, int]]) -> dict[str, Any]:
        rng = self.rng
        items_key = rng.choice(("items", "items", "products"))
        items = []
        for pid, qty in lines:
            name, price = PRODUCTS[pid]
            item = {rng.choice(("productId", "product_id", "item_id", "id")): pid, "name": name, "price": price}
            if qty != 1 or rng.random() < 0.5:
                item["quantity"] = qty
            items.append(item)
        value = round(sum(PRODUCTS[pid][1] * qty for pid, qty in lines) + rng.choice((0, 0, 4.9)), 2)
        props: dict[str, Any] = {rng.choice(("value", "value", "revenue", "total")): value, items_key: items}
        currency = rng.choice(("EUR", "USD", "eur", None))
        if currency is not None:
            props["currency"] = currency
        if order_id is not None:
            props[rng.choice(("orderId", "orderId", "order_id", "transaction_id"))] = order_id
        return props


def generate(seed: int = 42) -> list[Ev]:
    rng = random.Random(seed)
    out: list[Ev] = []
    visitors = [template.format(v=rng.randint(1, 9)) for template in UA_FAMILIES for _ in range(3)]
    orders = Counter[str]()
    shop_of_session: dict[str, str] = {}

    for n in range(60):
        shop = rng.choice(sorted(SHOPS))
        sid = f"S{n:03d}" if n < 52 else f"S{n - 52:03d}"  # the last 8 reuse ids of sessions in other shops
        if n >= 52:
            shop = next(s for s in sorted(SHOPS) if s != shop_of_session[sid])
        shop_of_session[sid] = shop
        s = Session(out, rng, shop, sid, rng.choice(visitors), rng.choice((None, "DE", "US", "FR", "DE")),
                    GEN_START + rng.randrange(0, 10 * DAY - 4 * HOUR))
        roll = rng.random()
        referrer = (rng.choice(EXTERNAL_REFERRERS) if roll < 0.45
                    else f"https://{SHOPS[shop]}/blog/winter-guide" if roll < 0.65 else None)
        query = "?" + rng.choice(UTMS) if rng.random() < 0.35 else ""
        if rng.random() < 0.85:
            s.emit("page_view", url=s.base + rng.choice(PATHS) + query, referrer=referrer)
        else:
            pid = rng.choice(sorted(PRODUCTS))
            s.emit("product_view", url=s.base + f"/products/{pid.lower()}" + query, referrer=referrer,
                   props=s.product_props(pid))
        last_product: str | None = None
        actions = [rng.choices(("page_view", "product_view", "add_to_cart", "remove_from_cart", "search",
                                "checkout_start", "purchase", "newsletter_signup"),
                               (3, 3, 2, 0.3, 0.5, 0.6, 0.6, 0.3))[0]
                   for _ in range(rng.choice((0, 0, 1, 2, 3, 4, 5, 6, 8, 10)))]
        if rng.random() < 0.4:  # a buyer: the whole journey, now and then with a step out of order
            journey = ["product_view", "add_to_cart", "page_view", "checkout_start", "purchase"]
            if rng.random() < 0.25:
                journey[0], journey[1] = journey[1], journey[0]
            actions += journey
        for action in actions:
            s.wait()
            if action == "purchase" and not s.cart:
                action = "add_to_cart"
            if action == "page_view":
                s.emit("page_view", path=rng.choice(PATHS))
            elif action == "product_view":
                last_product = rng.choice(sorted(PRODUCTS))
                s.emit("product_view", path=f"/products/{last_product.lower()}", props=s.product_props(last_product))
            elif action == "add_to_cart":
                pid = last_product or rng.choice(sorted(PRODUCTS))
                qty = rng.choice((1, 1, 2, 3))
                s.cart.append((pid, qty))
                s.emit("add_to_cart", props=s.product_props(pid, qty))
            elif action == "remove_from_cart":
                s.emit("remove_from_cart", props=s.product_props(rng.choice(sorted(PRODUCTS))))
            elif action == "search":
                s.emit("search", path="/search", props={"query": "warm boots"})
            elif action in ("checkout_start", "newsletter_signup"):
                s.emit(action, path="/checkout" if action == "checkout_start" else None)
            else:
                orders[shop] += 1
                order_id = f"{shop[-1].upper()}-{1000 + orders[shop]}"
                props = s.purchase_props(order_id, s.cart)
                s.cart = []
                purchase = s.emit("purchase", path="/checkout/thank-you", props=props)
                if rng.random() < 0.4:  # a duplicate copy of the same order, later, with a different value
                    copy_props = dict(props)
                    for key in ("value", "revenue", "total"):
                        if key in copy_props:
                            copy_props[key] = round(copy_props[key] * 3 + 1, 2)
                    later = purchase.ts + rng.randint(1, 30 * 60) * SECOND
                    next_day = rng.random() < 0.5
                    if next_day:
                        later += DAY
                    if later + 2 * SECOND > LATEST:  # keep every event in the past
                        continue
                    if next_day:  # a reload of the thank-you page the next day: its own session
                        reload = Session(out, rng, shop, f"{sid}-reload", s.ua, s.country, later)
                        reload.emit("page_view", url=purchase.url, referrer=None)
                        reload.emit("purchase", props=copy_props, at=later + 2 * SECOND)
                    else:
                        s.emit("purchase", props=copy_props, at=later)
    scripted(out, rng)
    assert all(GEN_START - 2 * DAY <= ev.ts <= LATEST for ev in out)
    return out


def scripted(out: list[Ev], rng: random.Random) -> None:
    """Hand-placed sessions for the edges the random ones may miss."""
    chrome, iphone, ipad = CHROME_WIN.format(v=2), IPHONE.format(v=3), IPAD.format(v=4)

    # Crosses the range start (2026-11-18 UTC): inside, its first event has an internal referrer and no UTM.
    s = Session(out, rng, "shop-a", "EDGE-START", chrome, "DE", ms_of("2026-11-17T23:58:00Z"))
    s.emit("page_view", url="https://shop-a.example/?utm_source=newsletter&utm_campaign=Edge%20Campaign",
           referrer="https://www.google.com/")
    s.emit("page_view", path="/products/p01", at=ms_of("2026-11-18T00:01:00Z"))
    s.emit("product_view", props=s.product_props("P01"), at=ms_of("2026-11-18T00:03:00Z"))
    s.emit("add_to_cart", props=s.product_props("P01", 1), at=ms_of("2026-11-18T00:05:00Z"))
    # Crosses the range end (2026-11-25 UTC): only its first page view is inside; the purchase is after the end.
    s = Session(out, rng, "shop-a", "EDGE-END", iphone, "US", ms_of("2026-11-24T23:59:00Z"))
    s.emit("page_view", path="/collections/sale", referrer="https://facebook.com/")
    s.emit("page_view", path="/products/p02", at=ms_of("2026-11-25T00:00:30Z"))
    s.emit("purchase", props={"orderId": "A-EDGE", "value": 11.0, "currency": "EUR",
                              "items": [{"productId": "P02", "name": "Product 2", "price": 11.0}]},
           at=ms_of("2026-11-25T00:01:00Z"))
    # An order whose first copy precedes the range; its in-range copy is neither an order nor a conversion.
    s = Session(out, rng, "shop-a", "PRE-1", ipad, None, ms_of("2026-11-17T12:00:00Z"))
    s.emit("page_view", path="/cart")
    s.emit("purchase", props={"orderId": "A-PRE", "value": 40, "currency": "USD",
                              "items": [{"product_id": "P03", "name": "Product 3", "price": 20, "quantity": 2}]},
           at=ms_of("2026-11-17T12:02:00Z"))
    s = Session(out, rng, "shop-a", "PRE-2", ipad, None, ms_of("2026-11-19T10:00:00Z"))
    s.emit("page_view", path="/checkout/thank-you")
    s.emit("purchase", props={"orderId": "A-PRE", "value": 400, "currency": "USD",
                              "items": [{"product_id": "P03", "name": "Product 3", "price": 200, "quantity": 2}]},
           at=ms_of("2026-11-19T10:00:05Z"))
    # Two copies at the same instant: the one inserted first counts.
    s = Session(out, rng, "shop-b", "TIE", chrome, "FR", ms_of("2026-11-20T15:00:00Z"))
    s.emit("page_view", path="/cart")
    s.emit("checkout_start", path="/checkout", at=ms_of("2026-11-20T15:01:00Z"))
    tie = ms_of("2026-11-20T15:02:00.250Z")
    s.emit("purchase", props={"orderId": "B-TIE", "value": 10, "currency": "EUR",
                              "items": [{"item_id": "P04", "name": "Product 4", "price": 10}]}, at=tie)
    s.emit("purchase", props={"orderId": "B-TIE", "value": 99, "currency": "USD",
                              "items": [{"item_id": "P05", "name": "Product 5", "price": 33, "quantity": 3}]}, at=tie)
    # The same orderId and sessionId in two shops: two orders, two sessions.
    s = Session(out, rng, "shop-a", "X-1", SAFARI_MAC.format(v=5), None, ms_of("2026-11-21T09:00:00Z"))
    s.emit("purchase", path="/checkout/thank-you",
           props={"orderId": "X-1", "value": 15, "currency": "usd", "productId": "P06", "price": 7.5, "quantity": 2})
    s = Session(out, rng, "shop-c", "X-1", SAFARI_MAC.format(v=5), None, ms_of("2026-11-21T09:30:00Z"))
    s.emit("page_view", path="/")
    s.emit("purchase", props={"orderId": "X-1", "total": 25, "products": [{"id": "P06", "name": "Product 6",
                                                                           "price": 12.5, "quantity": 2}]},
           at=ms_of("2026-11-21T09:31:00Z"))
    # Purchases without an orderId are orders of their own; one without a value is worth 0.
    s = Session(out, rng, "shop-b", "NO-ID", ANDROID.format(v=6), "DE", ms_of("2026-11-22T11:00:00Z"))
    s.emit("page_view", path="/")
    s.emit("purchase", props={"value": 12.5, "currency": "usd"}, at=ms_of("2026-11-22T11:01:00Z"))
    s.emit("purchase", props={"value": 7.5}, at=ms_of("2026-11-22T11:05:00Z"))
    s.emit("purchase", props={"orderId": "B-ZERO", "currency": "EUR"}, at=ms_of("2026-11-22T11:06:00Z"))
    # A bot places the first copy of an order a human repeats later: without bots the human's copy counts.
    s = Session(out, rng, "shop-a", "BOT", GOOGLEBOT, "US", ms_of("2026-11-19T08:00:00Z"))
    s.emit("page_view", path="/")
    s.emit("page_view", path="/products/p01", at=ms_of("2026-11-19T08:00:01Z"))
    s.emit("product_view", props=s.product_props("P01"), at=ms_of("2026-11-19T08:00:02Z"))
    s.emit("purchase", props={"orderId": "A-SHARED", "value": 1, "currency": "USD",
                              "items": [{"productId": "P01", "name": "Product 1", "price": 1}]},
           at=ms_of("2026-11-19T08:00:03Z"))
    s = Session(out, rng, "shop-a", "HUMAN", chrome, "US", ms_of("2026-11-20T08:00:00Z"))
    s.emit("page_view", path="/", referrer="https://news.example.org/")
    s.emit("purchase", props={"orderId": "A-SHARED", "value": 80, "currency": "USD",
                              "items": [{"productId": "P07", "name": "Product 7", "price": 80}]},
           at=ms_of("2026-11-20T08:01:00Z"))
    # An unknown client: no browser, no os.
    s = Session(out, rng, "shop-b", "KIOSK", KIOSK.format(v=2), None, ms_of("2026-11-21T13:00:00Z"))
    s.emit("page_view", path="/")
    s.emit("search", path="/search", props={"query": "gloves"}, at=ms_of("2026-11-21T13:00:30Z"))
    # No page view at all: no entry page, no bounce denominator.
    s = Session(out, rng, "shop-c", "NO-PV", ipad, None, ms_of("2026-11-22T10:00:00Z"))
    s.emit("product_view", path="/products/p08", referrer="https://l.instagram.com/", props=s.product_props("P08"))
    s.emit("add_to_cart", props=s.product_props("P08", 2), at=ms_of("2026-11-22T10:01:00Z"))
    # Adds to cart before viewing the product: not an add_to_cart step of the funnel.
    s = Session(out, rng, "shop-c", "CART-FIRST", chrome, None, ms_of("2026-11-23T10:00:00Z"))
    s.emit("page_view", path="/")
    s.emit("add_to_cart", props=s.product_props("P09", 1), at=ms_of("2026-11-23T10:01:00Z"))
    s.emit("product_view", path="/products/p09", props=s.product_props("P09"), at=ms_of("2026-11-23T10:02:00Z"))
    # A product only ever bought (never viewed): its name comes from the item.
    s = Session(out, rng, "shop-b", "GIFT", iphone, "FR", ms_of("2026-11-23T18:00:00Z"))
    s.emit("page_view", path="/gift-cards")
    s.emit("purchase", props={"orderId": "B-GIFT", "value": 50, "currency": "EUR",
                              "products": [{"id": "P99", "name": "Gift Card", "price": 25, "quantity": 2}]},
           at=ms_of("2026-11-23T18:00:40Z"))


# --------------------------------------------------------------------------------------------------------------------
# 1. Every field against the model
# --------------------------------------------------------------------------------------------------------------------


def check_report(report: dict[str, Any], events: list[Ev], *, label: str, shop: str | None, start: int, end: int,
                 tz: str, interval: str, include_bots: bool = False, funnel: tuple[str, ...] = DEFAULT_FUNNEL,
                 previous: tuple[int, int] | None = None, errors: list[str] | None = None) -> dict[str, Any]:
    """Compare a whole report with the model; mismatches raise, or are collected into `errors` when given."""
    expected = model_report(events, shop=shop, start=start, end=end, tz=tz, interval=interval,
                            include_bots=include_bots, funnel=funnel)
    keys = REPORT_KEYS | ({"previous", "change"} if previous else set())
    expected_range: dict[str, Any] = {"start": local_iso(start, tz), "end": local_iso(end, tz), "timezone": tz,
                                      "interval": interval}
    if previous:
        expected_range["previous"] = {"start": local_iso(previous[0], tz), "end": local_iso(previous[1], tz)}
        prev_totals = model_report(events, shop=shop, start=previous[0], end=previous[1], tz=tz, interval=interval,
                                   include_bots=include_bots, funnel=funnel)["totals"]
        expected["previous"] = prev_totals
        expected["change"] = model_change(expected["totals"], prev_totals)
    expected["shopId"] = shop
    expected["range"] = expected_range
    assert set(report) == keys, f"{label}: top-level keys {sorted(report)}"
    for key, value in expected.items():
        try:
            check(report[key], value, f"{label}.{key}")
        except AssertionError as exc:
            message = f"{exc}\n--- got {key}: {report[key]!r}\n--- expected {key}: {value!r}"
            if errors is None:
                raise AssertionError(message) from None
            errors.append(message)
    return expected


async def test_report_matches_independent_model(make_client: Any, admin: dict[str, str]) -> None:
    client = await make_client(trust_proxy=True)
    events = generate(42)
    assert 250 <= len(events) <= 1000
    await ingest(client, events)
    errors: list[str] = []
    utc, start, end = "UTC", midnight("2026-11-18", "UTC"), midnight("2026-11-25", "UTC")

    # One shop, explicit dates (an end date includes its whole day), default interval for 7 days: day.
    report = await get_stats(client, admin, shopId="shop-a", startDate="2026-11-18", endDate="2026-11-24")
    expected = check_report(report, events, label="shop-a", shop="shop-a", start=start, end=end, tz=utc,
                            interval="day", errors=errors)
    # The data set really exercises what it should (guards against a too-easy generator).
    totals = expected["totals"]
    assert {m["currency"] for m in totals["revenue"]} == {"EUR", "USD"}
    assert 0 < totals["bounceRate"] < 1 and 0 < totals["conversionRate"] < 1
    assert len(expected["topProducts"]) == 10 and len(expected["timeseries"]) == 7
    assert expected["countries"] and expected["utmCampaigns"] and len(expected["sources"]) >= 3
    assert any(row["value"] == "direct" for row in expected["sources"])
    assert {row["value"] for row in expected["devices"]} >= {"desktop", "mobile", "tablet"}
    assert any(ev.shop == "shop-a" and ev.type == "purchase" and "products" in ev.props and start <= ev.ts < end
               for ev in events), "no purchase with a products array in range"
    assert expected["funnel"][-1]["sessions"] > 0
    seq_of = {(ev.session, ev.type, ev.ts): ev.seq for ev in events}
    counted = counted_seqs([ev for ev in events if not ev.bot])
    assert seq_of[("PRE-2", "purchase", ms_of("2026-11-19T10:00:05Z"))] not in counted
    assert seq_of[("HUMAN", "purchase", ms_of("2026-11-20T08:01:00Z"))] in counted
    assert any(ev.type == "purchase" and ev.seq not in counted and start <= ev.ts < end and ev.session.endswith(
        "-reload") for ev in events), "no duplicate copy in a reload session in range"

    # The admin all-shops view (shopId omitted), New York dates, ISO week buckets.
    ny = "America/New_York"
    report = await get_stats(client, admin, startDate="2026-11-18", endDate="2026-11-24", timezone=ny,
                             interval="week")
    check_report(report, events, label="all-shops", shop=None, start=midnight("2026-11-18", ny),
                 end=midnight("2026-11-25", ny), tz=ny, interval="week", errors=errors)

    # Bots included, Berlin day buckets.
    berlin = "Europe/Berlin"
    report = await get_stats(client, admin, shopId="shop-a", startDate="2026-11-18", endDate="2026-11-24",
                             timezone=berlin, includeBots="true")
    check_report(report, events, label="bots", shop="shop-a", start=midnight("2026-11-18", berlin),
                 end=midnight("2026-11-25", berlin), tz=berlin, interval="day", include_bots=True, errors=errors)

    # A custom funnel given with aliases.
    report = await get_stats(client, admin, shopId="shop-b", startDate="2026-11-16", endDate="2026-11-26",
                             funnel="pageview,Product Added, Order Completed")
    check_report(report, events, label="funnel", shop="shop-b", start=midnight("2026-11-16", utc),
                 end=midnight("2026-11-27", utc), tz=utc, interval="day",
                 funnel=("page_view", "add_to_cart", "purchase"), errors=errors)

    # compare=previous over whole days: the same number of days just before.
    report = await get_stats(client, admin, shopId="shop-a", startDate="2026-11-21", endDate="2026-11-25",
                             compare="previous")
    expected = check_report(report, events, label="compare", shop="shop-a", start=midnight("2026-11-21", utc),
                            end=midnight("2026-11-26", utc), tz=utc, interval="day",
                            previous=(midnight("2026-11-16", utc), midnight("2026-11-21", utc)), errors=errors)
    assert expected["previous"]["orders"] > 0 and expected["change"]["events"] is not None

    # The admin view over the default 7d period, bots included, compared with the 7 days before.
    report = await get_stats(client, admin, period="7d", includeBots="1", compare="previous")
    check_report(report, events, label="7d", shop=None, start=midnight("2026-11-20", utc),
                 end=midnight("2026-11-27", utc), tz=utc, interval="day", include_bots=True,
                 previous=(midnight("2026-11-13", utc), midnight("2026-11-20", utc)), errors=errors)

    # No parameters at all: 30 days ending with today, day buckets.
    report = await get_stats(client, admin, shopId="shop-c")
    check_report(report, events, label="30d", shop="shop-c", start=midnight("2026-10-28", utc),
                 end=midnight("2026-11-27", utc), tz=utc, interval="day", errors=errors)

    # A datetime range (exclusive end, read in the request's timezone) crossing midnight, hour buckets by default.
    report = await get_stats(client, admin, shopId="shop-a", startDate="2026-11-18T20:30:00",
                             endDate="2026-11-20T08:15:00", timezone=berlin, compare="previous")
    s, e = ms_of("2026-11-18T20:30:00", berlin), ms_of("2026-11-20T08:15:00", berlin)
    check_report(report, events, label="datetimes", shop="shop-a", start=s, end=e, tz=berlin, interval="hour",
                 previous=(s - (e - s), s), errors=errors)
    assert not errors, f"{len(errors)} mismatches with the model:\n\n" + "\n\n".join(errors)


# --------------------------------------------------------------------------------------------------------------------
# 2. Timezones, DST, ISO weeks, months
# --------------------------------------------------------------------------------------------------------------------


def simple(shop: str, session: str, etype: str, when: str, path: str = "/", **props: Any) -> Ev:
    return Ev(shop, session, etype, ms_of(when), BROWSER_UA, f"https://{shop}.example{path}", None, props)


def nonzero(report: dict[str, Any], metric: str = "events") -> dict[str, int]:
    return {row["date"]: row[metric] for row in report["timeseries"] if row[metric]}


async def test_hour_buckets_across_dst_in_new_york(client: TestClient, admin: dict[str, str]) -> None:
    ny = "America/New_York"
    events = [
        simple("tz", "a", "page_view", "2026-03-08T04:59:59.999Z"),  # 23:59:59 on March 7: outside
        simple("tz", "a", "page_view", "2026-03-08T05:00:00Z"),  # 00:00 EST
        simple("tz", "b", "page_view", "2026-03-08T06:59:59Z"),  # 01:59:59 EST
        simple("tz", "b", "page_view", "2026-03-08T07:00:00Z"),  # 03:00 EDT (02:00 does not exist)
        simple("tz", "c", "page_view", "2026-03-09T03:59:59.999Z"),  # 23:59:59.999 EDT
        simple("tz", "c", "page_view", "2026-03-09T04:00:00Z"),  # March 9: outside
        simple("tz", "d", "page_view", "2026-11-01T05:30:00Z"),  # 01:30 EDT
        simple("tz", "e", "page_view", "2026-11-01T06:30:00Z"),  # 01:30 EST, the repeated hour
        simple("tz", "e", "product_view", "2026-11-01T06:45:00Z"),
        simple("tz", "f", "page_view", "2026-11-02T04:59:00Z"),  # 23:59 EST
    ]
    await ingest(client, events)

    # Spring forward: 23 hours, no 02:00.
    report = await get_stats(client, admin, shopId="tz", startDate="2026-03-08", endDate="2026-03-08", timezone=ny)
    assert report["range"] == {"start": "2026-03-08T00:00:00-05:00", "end": "2026-03-09T00:00:00-04:00",
                               "timezone": ny, "interval": "hour"}
    labels = [row["date"] for row in report["timeseries"]]
    assert labels == ["2026-03-08T00:00:00-05:00", "2026-03-08T01:00:00-05:00"] + [
        f"2026-03-08T{h:02d}:00:00-04:00" for h in range(3, 24)]
    assert nonzero(report) == {"2026-03-08T00:00:00-05:00": 1, "2026-03-08T01:00:00-05:00": 1,
                               "2026-03-08T03:00:00-04:00": 1, "2026-03-08T23:00:00-04:00": 1}
    assert nonzero(report, "sessions") == nonzero(report)
    assert report["totals"]["events"] == 4 and report["totals"]["sessions"] == 3

    # Fall back: 25 hours, 01:00 twice with different offsets.
    report = await get_stats(client, admin, shopId="tz", startDate="2026-11-01", endDate="2026-11-01", timezone=ny,
                             interval="hour")
    assert report["range"]["start"] == "2026-11-01T00:00:00-04:00"
    assert report["range"]["end"] == "2026-11-02T00:00:00-05:00"
    labels = [row["date"] for row in report["timeseries"]]
    assert labels == ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"] + [
        f"2026-11-01T{h:02d}:00:00-05:00" for h in range(2, 24)]
    assert len(labels) == 25 and len(set(labels)) == 25
    assert nonzero(report) == {"2026-11-01T01:00:00-04:00": 1, "2026-11-01T01:00:00-05:00": 2,
                               "2026-11-01T23:00:00-05:00": 1}
    assert nonzero(report, "pageViews") == {"2026-11-01T01:00:00-04:00": 1, "2026-11-01T01:00:00-05:00": 1,
                                            "2026-11-01T23:00:00-05:00": 1}
    for row in report["timeseries"]:
        assert set(row) == {"date", "events", "pageViews", "sessions", "visitors", "orders", "revenue"}

    # The same instants as whole days in UTC: the DST day is just a day.
    report = await get_stats(client, admin, shopId="tz", startDate="2026-11-01", endDate="2026-11-02",
                             interval="day")
    assert report["range"] == {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-03T00:00:00+00:00",
                               "timezone": "UTC", "interval": "day"}
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [("2026-11-01", 3), ("2026-11-02", 1)]


async def test_day_week_month_buckets_in_local_time(client: TestClient, admin: dict[str, str]) -> None:
    berlin = "Europe/Berlin"
    events = [
        simple("tz", "a", "page_view", "2026-11-18T23:30:00Z"),  # Berlin: Nov 19 00:30
        simple("tz", "b", "page_view", "2026-11-20T22:59:59Z"),  # Berlin: Nov 20 23:59:59
        simple("tz", "c", "page_view", "2026-11-20T23:30:00Z"),  # Berlin: Nov 21 00:30
        simple("tz", "d", "page_view", "2026-11-21T23:30:00Z"),  # Berlin: Nov 22 00:30, outside
        # Spring forward in Berlin (2026-03-29 has 23 hours).
        simple("dst", "a", "page_view", "2026-03-28T23:30:00Z"),  # Mar 29 00:30 CET
        simple("dst", "b", "page_view", "2026-03-29T21:59:00Z"),  # Mar 29 23:59 CEST
        simple("dst", "c", "page_view", "2026-03-29T22:00:00Z"),  # Mar 30 00:00 CEST
        # Weeks: 2026-11-11 is a Wednesday, 2026-11-15 a Sunday.
        simple("wk", "a", "page_view", "2026-11-10T12:00:00Z"),  # before the range
        simple("wk", "b", "page_view", "2026-11-11T00:00:00Z"),
        simple("wk", "c", "page_view", "2026-11-15T23:30:00Z"),  # Sunday in UTC, Monday 00:30 in Berlin
        simple("wk", "d", "page_view", "2026-11-16T00:00:00Z"),
        simple("wk", "e", "page_view", "2026-11-24T22:59:00Z"),
        simple("wk", "f", "page_view", "2026-11-25T00:00:00Z"),  # after the range in UTC and in Berlin
        # Months.
        simple("mo", "a", "page_view", "2026-09-14T23:59:59Z"),  # before in UTC; Sep 15 01:59:59 in Berlin
        simple("mo", "b", "page_view", "2026-09-15T00:00:00Z"),
        simple("mo", "c", "page_view", "2026-09-30T23:30:00Z"),
        simple("mo", "d", "page_view", "2026-10-31T12:00:00Z"),
        simple("mo", "e", "page_view", "2026-11-20T23:59:59.999Z"),
        simple("mo", "f", "page_view", "2026-11-21T00:00:00Z"),  # after
    ]
    await ingest(client, events)

    report = await get_stats(client, admin, shopId="tz", startDate="2026-11-19", endDate="2026-11-21",
                             timezone=berlin)
    assert report["range"] == {"start": "2026-11-19T00:00:00+01:00", "end": "2026-11-22T00:00:00+01:00",
                               "timezone": berlin, "interval": "day"}
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-11-19", 1), ("2026-11-20", 1), ("2026-11-21", 1)]
    report = await get_stats(client, admin, shopId="tz", startDate="2026-11-19", endDate="2026-11-21")
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-11-19", 0), ("2026-11-20", 2), ("2026-11-21", 1)]

    report = await get_stats(client, admin, shopId="dst", startDate="2026-03-28", endDate="2026-03-30",
                             timezone=berlin)
    assert report["range"]["start"] == "2026-03-28T00:00:00+01:00"
    assert report["range"]["end"] == "2026-03-31T00:00:00+02:00"
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-03-28", 0), ("2026-03-29", 2), ("2026-03-30", 1)]
    report = await get_stats(client, admin, shopId="dst", startDate="2026-03-29", endDate="2026-03-29",
                             timezone=berlin)
    assert len(report["timeseries"]) == 23 and report["range"]["interval"] == "hour"
    assert report["timeseries"][2]["date"] == "2026-03-29T03:00:00+02:00"

    report = await get_stats(client, admin, shopId="wk", startDate="2026-11-11", endDate="2026-11-24",
                             interval="week")
    assert report["range"]["start"] == "2026-11-11T00:00:00+00:00"
    assert [(r["date"], r["events"], r["sessions"]) for r in report["timeseries"]] == [
        ("2026-11-09", 2, 2), ("2026-11-16", 1, 1), ("2026-11-23", 1, 1)]
    report = await get_stats(client, admin, shopId="wk", startDate="2026-11-11", endDate="2026-11-24",
                             interval="week", timezone=berlin)
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-11-09", 1), ("2026-11-16", 2), ("2026-11-23", 1)]

    report = await get_stats(client, admin, shopId="mo", startDate="2026-09-15", endDate="2026-11-20",
                             interval="month")
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-09-01", 2), ("2026-10-01", 1), ("2026-11-01", 1)]
    report = await get_stats(client, admin, shopId="mo", startDate="2026-09-15", endDate="2026-11-20",
                             interval="month", timezone=berlin)
    # Berlin: Sep 14 23:59:59Z is inside (Sep 15), Sep 30 23:30Z is October, Nov 20 23:59:59.999Z is Nov 21: outside.
    assert report["range"]["start"] == "2026-09-15T00:00:00+02:00"
    assert report["range"]["end"] == "2026-11-21T00:00:00+01:00"
    assert [(r["date"], r["events"]) for r in report["timeseries"]] == [
        ("2026-09-01", 2), ("2026-10-01", 2), ("2026-11-01", 0)]


async def test_periods_and_compare_ranges(client: TestClient, admin: dict[str, str]) -> None:
    """The clock is 2026-11-26T04:15:17.123Z: Wednesday 26 in UTC, still Tuesday 25 in Los Angeles."""
    await ingest(client, [simple("p", "a", "page_view", "2026-02-03T10:00:00Z"),
                          simple("p", "a", "page_view", "2026-02-03T10:01:30Z"),
                          simple("p", "b", "page_view", "2026-11-26T04:00:00Z")])
    cases = [
        ({"period": "today"}, "2026-11-26T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "hour"),
        ({"period": "yesterday"}, "2026-11-25T00:00:00+00:00", "2026-11-26T00:00:00+00:00", "hour"),
        ({"period": "7d"}, "2026-11-20T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "day"),
        ({}, "2026-10-28T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "day"),
        ({"period": "90d"}, "2026-08-29T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "day"),
        ({"period": "month"}, "2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00", "day"),
        ({"period": "lastMonth"}, "2026-10-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00", "day"),
        ({"period": "year"}, "2026-01-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00", "day"),
        ({"period": "all"}, "2026-02-03T00:00:00+00:00", "2026-11-27T00:00:00+00:00", "day"),
        ({"period": "today", "timezone": "America/Los_Angeles"}, "2026-11-25T00:00:00-08:00",
         "2026-11-26T00:00:00-08:00", "hour"),
        ({"period": "yesterday", "timezone": "Asia/Tokyo"}, "2026-11-25T00:00:00+09:00",
         "2026-11-26T00:00:00+09:00", "hour"),
    ]
    for params, start, end, interval in cases:
        report = await get_stats(client, admin, shopId="p", **params)
        rng = report["range"]
        assert (rng["start"], rng["end"], rng["interval"]) == (start, end, interval), params
        assert len(report["timeseries"]) == (24 if interval == "hour" else
                                             (datetime.fromisoformat(end) - datetime.fromisoformat(start)).days)
    report = await get_stats(client, admin, shopId="p", period="all")
    assert report["totals"]["events"] == 3 and report["totals"]["sessions"] == 2

    compares = [
        ({"period": "7d", "compare": "previous"}, "2026-11-13T00:00:00+00:00", "2026-11-20T00:00:00+00:00"),
        ({"period": "month", "compare": "previous"}, "2026-10-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00"),
        ({"period": "lastMonth", "compare": "previous"}, "2026-09-01T00:00:00+00:00", "2026-10-01T00:00:00+00:00"),
        ({"period": "year", "compare": "previous"}, "2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
        ({"period": "7d", "compare": "year"}, "2025-11-20T00:00:00+00:00", "2025-11-27T00:00:00+00:00"),
        ({"startDate": "2026-03-01", "endDate": "2026-03-31", "compare": "year", "timezone": "Europe/Berlin"},
         "2025-03-01T00:00:00+01:00", "2025-04-01T00:00:00+02:00"),
        ({"startDate": "2026-11-20T06:00:00", "endDate": "2026-11-20T18:00:00", "compare": "previous"},
         "2026-11-19T18:00:00+00:00", "2026-11-20T06:00:00+00:00"),
        # Whole local days across a DST change: the same number of days, at local midnights.
        ({"startDate": "2026-11-02", "endDate": "2026-11-08", "compare": "previous", "timezone": "America/New_York"},
         "2026-10-26T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
    ]
    for params, start, end in compares:
        report = await get_stats(client, admin, shopId="p", **params)
        assert report["range"]["previous"] == {"start": start, "end": end}, params
        assert set(report["previous"]) == TOTAL_KEYS and set(report["change"]) == TOTAL_KEYS


async def test_change_when_the_current_range_is_empty(client: TestClient, admin: dict[str, str]) -> None:
    """Current means and rates are null (no sessions); their change is null, counts fall by 100 %."""
    await ingest(client, [simple("p", "a", "page_view", "2026-02-03T10:00:00Z"),
                          simple("p", "a", "page_view", "2026-02-03T10:01:30Z")])
    report = await get_stats(client, admin, shopId="p", startDate="2026-02-04", endDate="2026-02-04",
                             compare="previous")
    assert report["previous"]["events"] == 2 and report["previous"]["avgSessionDuration"] == 90.0
    assert report["totals"]["avgSessionDuration"] is None and report["totals"]["bounceRate"] is None
    check(report["change"], {"events": -100.0, "pageViews": -100.0, "sessions": -100.0, "visitors": -100.0,
                             "bounceRate": None, "avgSessionDuration": None, "viewsPerSession": None,
                             "orders": None, "revenue": {}, "averageOrderValue": {}, "conversionRate": None},
          "change")


# --------------------------------------------------------------------------------------------------------------------
# 3. Funnel ordering, 4. order de-duplication across ranges
# --------------------------------------------------------------------------------------------------------------------


async def test_funnel_counts_steps_only_in_order(client: TestClient, admin: dict[str, str]) -> None:
    p = {"productId": "P1", "name": "Boot", "price": 10}
    events = [
        # Adds to cart, then views: reaches product_view but not add_to_cart.
        simple("f", "cart-first", "page_view", "2026-11-20T10:00:00Z"),
        simple("f", "cart-first", "add_to_cart", "2026-11-20T10:01:00Z", **p),
        simple("f", "cart-first", "product_view", "2026-11-20T10:02:00Z", **p),
        # Same, but adds to cart again after the view: reaches add_to_cart.
        simple("f", "cart-again", "page_view", "2026-11-20T11:00:00Z"),
        simple("f", "cart-again", "add_to_cart", "2026-11-20T11:01:00Z", **p),
        simple("f", "cart-again", "product_view", "2026-11-20T11:02:00Z", **p),
        simple("f", "cart-again", "add_to_cart", "2026-11-20T11:03:00Z", **p),
        # A step at the same instant as the previous one counts ("at or after").
        simple("f", "same-time", "page_view", "2026-11-20T12:00:00Z"),
        simple("f", "same-time", "product_view", "2026-11-20T12:00:00Z", **p),
        simple("f", "same-time", "add_to_cart", "2026-11-20T12:00:00Z", **p),
        simple("f", "same-time", "checkout_start", "2026-11-20T12:05:00Z"),
        simple("f", "same-time", "purchase", "2026-11-20T12:06:00Z", orderId="F-1", value=10),
        # Views a product before any page view: the chain starts at its (later) page view.
        simple("f", "view-first", "product_view", "2026-11-20T13:00:00Z", **p),
        simple("f", "view-first", "page_view", "2026-11-20T13:01:00Z"),
        simple("f", "view-first", "add_to_cart", "2026-11-20T13:02:00Z", **p),
        # Checkout and purchase without the middle steps.
        simple("f", "skipper", "page_view", "2026-11-20T14:00:00Z"),
        simple("f", "skipper", "checkout_start", "2026-11-20T14:01:00Z"),
        simple("f", "skipper", "purchase", "2026-11-20T14:02:00Z", orderId="F-2", value=5),
    ]
    await ingest(client, events)
    report = await get_stats(client, admin, shopId="f", startDate="2026-11-20", endDate="2026-11-20")
    check(report["funnel"], [
        {"step": "page_view", "sessions": 5, "rateFromStart": 1.0, "rateFromPrevious": 1.0},
        {"step": "product_view", "sessions": 3, "rateFromStart": 0.6, "rateFromPrevious": 0.6},
        {"step": "add_to_cart", "sessions": 1 + 1, "rateFromStart": 0.4, "rateFromPrevious": 2 / 3},
        {"step": "checkout_start", "sessions": 1, "rateFromStart": 0.2, "rateFromPrevious": 0.5},
        {"step": "purchase", "sessions": 1, "rateFromStart": 0.2, "rateFromPrevious": 1.0},
    ], "funnel")
    # A custom funnel that starts later in the journey, and one whose first step nobody reached.
    report = await get_stats(client, admin, shopId="f", startDate="2026-11-20", endDate="2026-11-20",
                             funnel="add_to_cart,Product Viewed,checkout_started")
    check(report["funnel"], [
        # cart-first now counts (its view follows its add); view-first does not (its view precedes its add).
        {"step": "add_to_cart", "sessions": 4, "rateFromStart": 1.0, "rateFromPrevious": 1.0},
        {"step": "product_view", "sessions": 3, "rateFromStart": 0.75, "rateFromPrevious": 0.75},
        {"step": "checkout_start", "sessions": 1, "rateFromStart": 0.25, "rateFromPrevious": 1 / 3},
    ], "custom funnel")
    report = await get_stats(client, admin, shopId="f", startDate="2026-11-20", endDate="2026-11-20",
                             funnel="remove_from_cart,purchase")
    check(report["funnel"], [
        {"step": "remove_from_cart", "sessions": 0, "rateFromStart": None, "rateFromPrevious": None},
        {"step": "purchase", "sessions": 0, "rateFromStart": None, "rateFromPrevious": None},
    ], "empty funnel")
    check_report(report, events, label="funnel", shop="f", start=midnight("2026-11-20", "UTC"),
                 end=midnight("2026-11-21", "UTC"), tz="UTC", interval="hour",
                 funnel=("remove_from_cart", "purchase"))


async def test_order_first_copy_before_range_is_not_counted_in_range(client: TestClient,
                                                                     admin: dict[str, str]) -> None:
    item = {"productId": "P1", "name": "Boot", "price": 25, "quantity": 2}
    events = [
        simple("o", "first", "page_view", "2026-11-10T10:00:00Z"),
        simple("o", "first", "purchase", "2026-11-10T10:05:00Z", orderId="O-1", value=50, currency="EUR",
               items=[item]),
        # Nov 12: a repeat of O-1 (a reloaded thank-you page) and a genuinely new order.
        simple("o", "reload", "page_view", "2026-11-12T09:00:00Z", "/thank-you"),
        simple("o", "reload", "purchase", "2026-11-12T09:00:01Z", "/thank-you", orderId="O-1", value=70,
               currency="USD", items=[{**item, "quantity": 7}]),
        simple("o", "new", "page_view", "2026-11-12T11:00:00Z"),
        simple("o", "new", "checkout_start", "2026-11-12T11:01:00Z"),
        simple("o", "new", "purchase", "2026-11-12T11:02:00Z", order_id="O-2", revenue=30, currency="EUR",
               items=[{"item_id": "P2", "name": "Hat", "price": 30}]),
    ]
    await ingest(client, events)
    report = await get_stats(client, admin, shopId="o", startDate="2026-11-12", endDate="2026-11-12")
    totals = report["totals"]
    assert (totals["events"], totals["sessions"], totals["orders"]) == (5, 2, 1)
    assert totals["revenue"] == [{"currency": "EUR", "amount": 30.0}]
    assert totals["averageOrderValue"] == [{"currency": "EUR", "amount": 30.0}]
    assert totals["conversionRate"] == 0.5
    assert {"value": "purchase", "events": 2} in report["eventTypes"]
    # The default funnel needs product_view and add_to_cart first: nobody gets past page_view.
    assert [step["sessions"] for step in report["funnel"]] == [2, 0, 0, 0, 0]
    assert [(r["date"], r["orders"], r["revenue"]) for r in report["timeseries"] if r["events"]] == [
        ("2026-11-12T09:00:00+00:00", 0, []), ("2026-11-12T11:00:00+00:00", 1, [{"currency": "EUR", "amount": 30.0}])]
    assert report["topProducts"] == [
        {"productId": "P2", "name": "Hat", "views": 0, "addToCarts": 0, "purchases": 1,
         "revenue": [{"currency": "EUR", "amount": 30.0}]}]
    check_report(report, events, label="nov12", shop="o", start=midnight("2026-11-12", "UTC"),
                 end=midnight("2026-11-13", "UTC"), tz="UTC", interval="hour")
    # The repeat is not a purchase step either: only "new" reaches it.
    report = await get_stats(client, admin, shopId="o", startDate="2026-11-12", endDate="2026-11-12",
                             funnel="page_view,purchase")
    check(report["funnel"], [
        {"step": "page_view", "sessions": 2, "rateFromStart": 1.0, "rateFromPrevious": 1.0},
        {"step": "purchase", "sessions": 1, "rateFromStart": 0.5, "rateFromPrevious": 0.5},
    ], "funnel")

    # Over both days, O-1 counts once, on Nov 10, with its first copy's value and currency.
    report = await get_stats(client, admin, shopId="o", startDate="2026-11-10", endDate="2026-11-12",
                             compare="previous")
    totals = report["totals"]
    assert totals["orders"] == 2 and totals["conversionRate"] == pytest.approx(2 / 3)
    assert totals["revenue"] == [{"currency": "EUR", "amount": 80.0}]
    assert totals["averageOrderValue"] == [{"currency": "EUR", "amount": 40.0}]
    assert [(r["date"], r["orders"]) for r in report["timeseries"]] == [
        ("2026-11-10", 1), ("2026-11-11", 0), ("2026-11-12", 1)]
    assert report["topProducts"][0] == {"productId": "P1", "name": "Boot", "views": 0, "addToCarts": 0,
                                        "purchases": 2, "revenue": [{"currency": "EUR", "amount": 50.0}]}
    assert report["change"]["orders"] is None and report["change"]["revenue"] == {"EUR": None}
    check_report(report, events, label="nov10-12", shop="o", start=midnight("2026-11-10", "UTC"),
                 end=midnight("2026-11-13", "UTC"), tz="UTC", interval="day",
                 previous=(midnight("2026-11-07", "UTC"), midnight("2026-11-10", "UTC")))


async def test_top_products_units_revenue_and_names(client: TestClient, admin: dict[str, str]) -> None:
    events = [
        # The name is the first one seen in the range, from a view or cart of a human visitor: not the day
        # before, not a bot's, not the later ones, and a view without a name is passed over.
        simple("tp", "s0", "product_view", "2026-11-19T23:59:00Z", "/products/p1", productId="P1",
               name="Boot (yesterday)", price=20),
        Ev("tp", "crawler", "product_view", ms_of("2026-11-20T09:00:00Z"), GOOGLEBOT, "https://tp.example/products/p1",
           None, {"productId": "P1", "name": "Boot (bot)", "price": 20}),
        simple("tp", "s1", "product_view", "2026-11-20T09:59:00Z", "/products/p1", productId="P1", price=20),
        simple("tp", "s1", "product_view", "2026-11-20T10:00:00Z", "/products/p1", productId="P1", name="Boot",
               price=20),
        simple("tp", "s1", "product_view", "2026-11-20T10:01:00Z", "/products/p1", productId="P1",
               name="Boot v2", price=20),
        simple("tp", "s1", "add_to_cart", "2026-11-20T10:02:00Z", "/products/p1", product_id="P1", name="Boot v3",
               price=20, quantity=2),
        simple("tp", "s1", "product_view", "2026-11-20T10:03:00Z", "/products/p2", item_id="P2", name="Hat",
               price=5),
        simple("tp", "s1", "purchase", "2026-11-20T10:05:00Z", orderId="O-1", value=45, currency="eur",
               items=[{"productId": "P1", "price": 20, "quantity": 2}, {"id": "P2", "name": "Hat", "price": 5}]),
        # A `products` array (instead of `items`), with item_id.
        simple("tp", "s2", "purchase", "2026-11-20T11:00:00Z", orderId="O-2", value=37.5, currency="USD",
               products=[{"item_id": "P3", "name": "Scarf", "price": 12.5, "quantity": 3}]),
        # No line items: the purchase's own productId, price and quantity.
        simple("tp", "s2", "purchase", "2026-11-20T11:05:00Z", orderId="O-3", value=20, currency="EUR",
               productId="P2", price=5, quantity=4),
        # A repeat of O-1 buys nothing more.
        simple("tp", "s3", "purchase", "2026-11-20T12:00:00Z", orderId="O-1", value=450, currency="EUR",
               items=[{"productId": "P1", "price": 20, "quantity": 20}]),
    ]
    await ingest(client, events)
    report = await get_stats(client, admin, shopId="tp", startDate="2026-11-20", endDate="2026-11-20")
    check(report["topProducts"], [
        {"productId": "P2", "name": "Hat", "views": 1, "addToCarts": 0, "purchases": 5,
         "revenue": [{"currency": "EUR", "amount": 25.0}]},
        {"productId": "P3", "name": "Scarf", "views": 0, "addToCarts": 0, "purchases": 3,
         "revenue": [{"currency": "USD", "amount": 37.5}]},
        {"productId": "P1", "name": "Boot", "views": 3, "addToCarts": 1, "purchases": 2,
         "revenue": [{"currency": "EUR", "amount": 40.0}]},
    ], "topProducts")
    check(report["totals"]["revenue"], [{"currency": "EUR", "amount": 65.0}, {"currency": "USD", "amount": 37.5}],
          "revenue")


# --------------------------------------------------------------------------------------------------------------------
# 5. Read-your-writes
# --------------------------------------------------------------------------------------------------------------------


async def test_stats_include_every_event_committed_before_the_request(make_client: Any,
                                                                      admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)  # the background mirror loop will not help
    for n in range(1, 4):
        resp = await client.post("/api/events", json={"shopId": "ryw", "sessionId": f"s{n}", "eventType": "pageview",
                                                      "url": "https://ryw.example/"},
                                 headers={"User-Agent": BROWSER_UA})
        assert resp.status == 201, await resp.text()
        report = await get_stats(client, admin, shopId="ryw", period="today")
        assert report["totals"]["events"] == n and report["totals"]["sessions"] == n
        assert report["totals"]["visitors"] == 1
        assert nonzero(report) == {"2026-11-26T04:00:00+00:00": n}
    resp = await client.post("/api/events", json=[{"shopId": "ryw", "sessionId": "s1", "eventType": "purchase",
                                                   "userAgent": BROWSER_UA,
                                                   "properties": {"orderId": "R-1", "value": 9.99}}])
    assert resp.status == 201, await resp.text()
    report = await get_stats(client, admin, shopId="ryw", period="today")
    assert report["totals"]["events"] == 4 and report["totals"]["orders"] == 1
    assert report["totals"]["revenue"] == [{"currency": "USD", "amount": 9.99}]


# --------------------------------------------------------------------------------------------------------------------
# 6. Bad parameters
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "fields"), [
    ({"timezone": "Mars/Base"}, {"timezone"}),
    ({"period": "week"}, {"period"}),
    ({"interval": "minute"}, {"interval"}),
    ({"compare": "lastweek"}, {"compare"}),
    ({"startDate": "garbage"}, {"startDate"}),
    ({"startDate": "2026-11-01", "endDate": "garbage"}, {"endDate"}),
    ({"startDate": "2026-02-30"}, {"startDate"}),
    ({"startDate": "2026-11-20", "endDate": "2026-11-10"}, {"startDate", "endDate"}),
    ({"startDate": "2026-11-20T10:00:00Z", "endDate": "2026-11-20T09:00:00Z"}, {"startDate", "endDate"}),
    ({"includeBots": "maybe"}, {"includeBots"}),
    ({"shopId": "bad shop!"}, {"shopId"}),
    ({"shopId": "x" * 65}, {"shopId"}),
])
async def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, admin: dict[str, str],
                                                           params: dict[str, str], fields: set[str]) -> None:
    resp = await client.get("/api/stats", params={"shopId": "shop-a", **params}, headers=admin)
    error = await assert_error(resp, 400, "validation_failed")
    named = {detail.get("field") for detail in error.get("details", [])}
    assert named and named <= fields, error


async def test_shop_token_reads_only_its_own_shop(client: TestClient, admin: dict[str, str]) -> None:
    resp = await client.post("/api/tokens", json={"shopId": "shop-a", "name": "dashboard"}, headers=admin)
    assert resp.status == 201, await resp.text()
    token = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    await assert_error(await client.get("/api/stats", params={"shopId": "shop-b"}, headers=token), 403, "forbidden")
    await assert_error(await client.get("/api/stats", params={"shopId": "shop-a"}), 401, "unauthorized")
    report = await get_stats(client, token, shopId="shop-a", period="today")
    assert report["shopId"] == "shop-a"
