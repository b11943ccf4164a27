"""Generated shop events for the stats benchmark, written straight into a SQLite store with the project's schema.

200 shops with Zipf-skewed sizes, 90 days ending at generation time, realistic sessions (landing page with a referrer
or UTM campaign, browsing, product views, carts, checkouts, purchases with items in the shop's currency, a few
re-sent purchases), weekly and daily seasonality, desktop/mobile/tablet user agents and a few bots. Rows are exactly
what ingestion stores (INSERT_EVENT order, time-ordered UUIDv7-style ids, seq in time order), generated without a
per-row random draw where a precomputed pool will do, so 10M rows take a couple of minutes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

GENERATOR_VERSION = "g1"  # bump when the generated data changes, so cached stores are rebuilt
SHOP_COUNT = 200
ZIPF_S = 1.0
DAYS = 90
SEED = 20261126
COMMIT_ROWS = 250_000
WINDOW_MS = 3600_000

# (weight, user agent); classified once with the server's own parser, as ingestion would.
USER_AGENTS = (
    (14, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
         "Safari/537.36"),
    (5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 "
        "Safari/537.36"),
    (7, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
        "Safari/605.1.15"),
    (4, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36"),
    (3, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 Edg/124.0.2478.51"),
    (3, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (1, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (20, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.4 Mobile/15E148 Safari/604.1"),
    (6, "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1"),
    (3, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 Instagram 330.0.0.0 (iPhone14,5; iOS 17_4_1; en_US)"),
    (14, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
         "Safari/537.36"),
    (6, "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 "
        "Chrome/117.0.0.0 Mobile Safari/537.36"),
    (5, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
        "Mobile/15E148 Safari/604.1"),
    (2, "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36"),
)
BOT_AGENTS = (
    (5, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    (2, "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    (2, "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"),
    (1, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 "
        "Safari/537.36"),
)
BOT_SESSION_SHARE = 0.03
COUNTRIES = ((30, "US"), (14, "DE"), (10, "GB"), (7, "FR"), (6, "CA"), (5, "NL"), (4, "AU"), (4, "AT"), (3, "CH"),
             (3, "ES"), (3, "IT"), (2, "SE"), (2, "PL"), (2, "BE"), (5, None))
CAMPAIGNS = ("spring_sale", "summer_drop", "black_friday", "new_arrivals", "loyalty", "restock", "weekly_digest")
# (weight, referrer, utm query appended to the landing URL; {c} is a campaign)
SOURCES = (
    (28, None, ""),
    (26, "https://www.google.com/", ""),
    (4, "https://www.bing.com/", ""),
    (2, "https://duckduckgo.com/", ""),
    (6, "https://m.facebook.com/", ""),
    (4, "https://l.instagram.com/", ""),
    (2, "https://www.pinterest.com/", ""),
    (2, "https://www.tiktok.com/", ""),
    (1, "https://www.reddit.com/", ""),
    (8, None, "?utm_source=newsletter&utm_medium=email&utm_campaign={c}"),
    (7, "https://www.google.com/", "?utm_source=google&utm_medium=cpc&utm_campaign={c}"),
    (5, "https://m.facebook.com/", "?utm_source=facebook&utm_medium=paid_social&utm_campaign={c}"),
    (2, "https://www.tiktok.com/", "?utm_source=tiktok&utm_medium=paid_social&utm_campaign={c}"),
    (3, "https://www.partnerblog.example.org/best-gifts", ""),
)
CURRENCIES = ((60, "USD"), (30, "EUR"), (10, "GBP"))
ADJECTIVES = ("classic", "linen", "organic", "vintage", "everyday", "premium", "cozy", "slim", "oversized", "merino",
              "canvas", "leather", "recycled", "washed", "striped", "ribbed", "cropped", "relaxed", "essential", "wool")
NOUNS = ("shirt", "tee", "hoodie", "jacket", "jeans", "sneaker", "boot", "cap", "scarf", "tote", "wallet", "belt",
         "dress", "skirt", "sweater", "sock", "beanie", "mug", "candle", "blanket")
COLLECTIONS = ("new", "bestsellers", "sale", "men", "women", "kids", "accessories", "home", "gifts", "summer",
               "winter", "outlet", "basics", "limited")
CONTENT_PAGES = ("/pages/about", "/pages/contact", "/pages/shipping", "/pages/faq", "/blogs/news/lookbook",
                 "/blogs/news/care-guide", "/search")
EVENT_NAMES = {  # canonical type -> (name as sent by a plain tracker, as sent by a Shopify web pixel)
    "page_view": ("page_view", "page_viewed"),
    "product_view": ("product_view", "product_viewed"),
    "add_to_cart": ("add_to_cart", "product_added_to_cart"),
    "checkout_start": ("checkout_start", "checkout_started"),
    "purchase": ("purchase", "checkout_completed"),
}


def shop_ids() -> list[str]:
    return [f"shop-{i:03d}" for i in range(SHOP_COUNT)]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


def _cum(weights: list[float] | tuple[float, ...]) -> list[float]:
    return list(itertools.accumulate(weights))


@dataclass
class Product:
    product_id: str
    name: str
    price: float
    path: str
    url: str
    page_props: str
    view_props: str


@dataclass
class Shop:
    index: int
    shop_id: str
    base: str
    currency: str
    second_currency: str | None
    names: tuple[str, str, str, str, str]  # page_view, product_view, add_to_cart, checkout_start, purchase
    products: list[Product]
    product_cum: list[float]
    collections: list[tuple[str, str, str]]  # (path, url, props)
    content: list[tuple[str, str, str]]
    home: tuple[str, str, str]
    orders: int = 0
    visitors: list[str] = field(default_factory=list)


def _slug_name(k: int) -> tuple[str, str]:
    adj, noun = ADJECTIVES[k % len(ADJECTIVES)], NOUNS[(k // len(ADJECTIVES)) % len(NOUNS)]
    return f"{adj}-{noun}-{k}", f"{adj.capitalize()} {noun.capitalize()} {k}"


def _page(base: str, path: str, title: str) -> tuple[str, str, str]:
    return path, base + path, orjson.dumps({"title": title}).decode()


def build_shops(rng: random.Random) -> list[Shop]:
    weights = zipf_weights(SHOP_COUNT, ZIPF_S)
    shops = []
    currency_cum = _cum([w for w, _ in CURRENCIES])
    for i, shop_id in enumerate(shop_ids()):
        base = f"https://{shop_id}.example.com"
        currency = rng.choices([c for _, c in CURRENCIES], cum_weights=currency_cum)[0]
        second = None
        if rng.random() < 0.15:
            second = "EUR" if currency != "EUR" else "USD"
        style = 1 if rng.random() < 0.5 else 0
        names = tuple(EVENT_NAMES[t][style] for t in EVENT_NAMES)
        n_products = 40 + int(1500 * math.sqrt(weights[i] / weights[0]))
        products = []
        for k in range(n_products):
            handle, name = _slug_name(k)
            price = round(min(400.0, rng.lognormvariate(3.4, 0.6)), 2)
            path = f"/products/{handle}"
            product_id = f"{7_000_000 + i * 10_000 + k}"
            products.append(Product(
                product_id, name, price, path, base + path, orjson.dumps({"title": name}).decode(),
                orjson.dumps({"productId": product_id, "name": name, "price": price, "currency": currency}).decode(),
            ))
        picked = rng.sample(COLLECTIONS, 8)
        shops.append(Shop(
            index=i, shop_id=shop_id, base=base, currency=currency, second_currency=second,
            names=names,  # type: ignore[arg-type]
            products=products, product_cum=_cum(zipf_weights(n_products, 1.1)),
            collections=[_page(base, f"/collections/{c}", c.capitalize()) for c in picked],
            content=[_page(base, p, p.rsplit("/", 1)[-1].replace("-", " ").capitalize()) for p in CONTENT_PAGES],
            home=_page(base, "/", "Home"),
        ))
    return shops


def _classified(agents: tuple[tuple[int, str], ...]) -> tuple[list[tuple[str, str | None, str | None, str, int]],
                                                               list[float]]:
    from server.context import parse_user_agent

    out = []
    for _, ua in agents:
        info = parse_user_agent(ua)
        out.append((ua, info.browser, info.os, info.device, int(info.is_bot)))
    return out, _cum([w for w, _ in agents])


def _hour_weight(hour_of_week: int, day_index: int) -> float:
    day, hour = divmod(hour_of_week, 24)
    daily = 0.35 + 0.65 * math.sin(math.pi * ((hour - 5) % 24) / 24) ** 2  # quiet at night (UTC), peak mid-day
    weekly = (1.0, 0.97, 0.96, 0.98, 1.05, 1.2, 1.15)[day]  # weekend shopping
    trend = 1.0 + 0.004 * day_index  # a growing business
    return daily * weekly * trend


@dataclass
class GeneratedInfo:
    rows: int
    start_ms: int
    end_ms: int
    seconds: float
    shop_events: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "start_ms": self.start_ms, "end_ms": self.end_ms, "seconds": self.seconds,
                "shop_events": self.shop_events}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GeneratedInfo:
        return cls(doc["rows"], doc["start_ms"], doc["end_ms"], doc["seconds"], doc["shop_events"])

    @property
    def largest_shop(self) -> str:
        return max(self.shop_events.items(), key=lambda kv: (kv[1], kv[0]))[0]


class Generator:
    """Sessions hour by hour; each hour's events (and the tail of sessions started earlier) leave in time order."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.shops = build_shops(self.rng)
        self.shop_cum = _cum(zipf_weights(SHOP_COUNT, ZIPF_S))
        self.agents, self.agent_cum = _classified(USER_AGENTS)
        self.bots, self.bot_cum = _classified(BOT_AGENTS)
        self.countries = [c for _, c in COUNTRIES]
        self.country_cum = _cum([w for w, _ in COUNTRIES])
        self.sources = SOURCES
        self.source_cum = _cum([w for w, _, _ in SOURCES])
        self.nonce = self.rng.getrandbits(24)
        self.counter = 0
        self.shop_events = [0] * SHOP_COUNT

    # ------------------------------------------------------------------------------------------------ sessions

    def _session(self, buf: list[tuple[Any, ...]], t: int) -> None:
        rng = self.rng
        shop = self.shops[bisect.bisect_left(self.shop_cum, rng.random() * self.shop_cum[-1])]
        sid = "%032x" % rng.getrandbits(128)  # noqa: UP031 - fastest formatting in the hot loop
        sid = f"{sid[:8]}-{sid[8:12]}-4{sid[13:16]}-{sid[16:20]}-{sid[20:]}"
        if rng.random() < BOT_SESSION_SHARE:
            self._bot_session(buf, shop, sid, t)
            return
        agent = bisect.bisect_left(self.agent_cum, rng.random() * self.agent_cum[-1])
        country = self.countries[bisect.bisect_left(self.country_cum, rng.random() * self.country_cum[-1])]
        if shop.visitors and rng.random() < 0.15:
            visitor = shop.visitors[rng.randrange(len(shop.visitors))]  # a returning visitor, same day
        else:
            visitor = "%032x" % rng.getrandbits(128)  # noqa: UP031
            if len(shop.visitors) < 64:
                shop.visitors.append(visitor)
            else:
                shop.visitors[rng.randrange(64)] = visitor
        _, referrer, utm = self.sources[bisect.bisect_left(self.source_cum, rng.random() * self.source_cum[-1])]
        if utm:
            utm = utm.replace("{c}", CAMPAIGNS[rng.randrange(len(CAMPAIGNS))])
        names = shop.names
        sess = (shop.index, sid, agent, country, visitor)

        # Landing page, with the external referrer and the campaign parameters.
        r = rng.random()
        product = None
        if r < 0.28:
            path, url, props = shop.home
        elif r < 0.52:
            path, url, props = shop.collections[rng.randrange(len(shop.collections))]
        elif r < 0.95:
            product = self._product(shop)
            path, url, props = product.path, product.url, product.page_props
        else:
            path, url, props = shop.content[rng.randrange(len(shop.content))]
        url += utm
        buf.append((t, sess, "page_view", names[0], props, url, referrer, path))
        if product is not None:
            buf.append((t + 180 + rng.randrange(400), sess, "product_view", names[1], product.view_props, url, referrer,
                        path))
        if rng.random() < 0.38:
            return  # bounced
        cart: list[tuple[Product, int]] = []
        previous = url
        pages = 1 + min(25, int(rng.expovariate(1 / 3.0)))
        for _ in range(pages):
            t += 3000 + int(rng.expovariate(1 / 40_000))
            r = rng.random()
            if r < 0.56:
                product = self._product(shop)
                buf.append((t, sess, "page_view", names[0], product.page_props, product.url, previous, product.path))
                buf.append((t + 150 + rng.randrange(300), sess, "product_view", names[1], product.view_props,
                            product.url, previous, product.path))
                previous = product.url
                if rng.random() < 0.14:
                    t += 4000 + rng.randrange(30_000)
                    quantity = 1 if rng.random() < 0.88 else 2
                    cart.append((product, quantity))
                    props = orjson.dumps({"productId": product.product_id, "name": product.name,
                                          "price": product.price, "quantity": quantity,
                                          "currency": shop.currency}).decode()
                    buf.append((t, sess, "add_to_cart", names[2], props, product.url, previous, product.path))
            elif r < 0.9:
                path, url, props = shop.collections[rng.randrange(len(shop.collections))]
                buf.append((t, sess, "page_view", names[0], props, url, previous, path))
                previous = url
            else:
                path, url, props = shop.content[rng.randrange(len(shop.content))]
                buf.append((t, sess, "page_view", names[0], props, url, previous, path))
                previous = url
        if not cart or rng.random() < 0.5:
            return
        t += 10_000 + rng.randrange(60_000)
        currency = shop.currency
        if shop.second_currency and rng.random() < 0.3:
            currency = shop.second_currency
        items = [{"productId": p.product_id, "name": p.name, "price": p.price, "quantity": q} for p, q in cart]
        value = round(sum(p.price * q for p, q in cart), 2)
        token = "%016x" % rng.getrandbits(64)  # noqa: UP031
        path = f"/checkouts/cn/{token}"
        url = shop.base + path
        props = orjson.dumps({"value": value, "currency": currency, "items": items}).decode()
        buf.append((t, sess, "checkout_start", names[3], props, url, previous, path))
        if rng.random() < 0.42:
            return
        t += 60_000 + int(rng.expovariate(1 / 90_000))
        shop.orders += 1
        order_id = f"{shop.index + 1}{shop.orders:07d}"
        props = orjson.dumps({"orderId": order_id, "value": value, "currency": currency, "items": items}).decode()
        path += "/thank-you"
        buf.append((t, sess, "purchase", names[4], props, shop.base + path, url, path))
        if rng.random() < 0.04:  # the thank-you page reloaded: the same order sent again
            buf.append((t + 20_000 + rng.randrange(600_000), sess, "purchase", names[4], props, shop.base + path, url,
                        path))

    def _product(self, shop: Shop) -> Product:
        cum = shop.product_cum
        return shop.products[bisect.bisect_left(cum, self.rng.random() * cum[-1])]

    def _bot_session(self, buf: list[tuple[Any, ...]], shop: Shop, sid: str, t: int) -> None:
        rng = self.rng
        agent = -1 - bisect.bisect_left(self.bot_cum, rng.random() * self.bot_cum[-1])
        sess = (shop.index, sid, agent, "US", "%032x" % rng.getrandbits(128))  # noqa: UP031
        for _ in range(3 + rng.randrange(25)):
            t += 500 + rng.randrange(4000)
            if rng.random() < 0.7:
                product = self._product(shop)
                path, url, props = product.path, product.url, product.page_props
            else:
                path, url, props = shop.collections[rng.randrange(len(shop.collections))]
            buf.append((t, sess, "page_view", shop.names[0], props, url, None, path))

    # ------------------------------------------------------------------------------------------------ rows

    def _rows(self, ready: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        nonce = self.nonce
        mid = f"7{nonce >> 12 & 0xFFF:03x}-{8 | (nonce >> 10 & 3):x}{nonce & 0x3FF:03x}"
        shops, agents, bots = self.shops, self.agents, self.bots
        shop_events = self.shop_events
        counter = self.counter
        rows = []
        for t, (shop_index, sid, agent, country, visitor), etype, ename, props, url, referrer, path in ready:
            counter += 1
            ua, browser, os_name, device, is_bot = agents[agent] if agent >= 0 else bots[-1 - agent]
            h = "%012x" % t  # noqa: UP031
            rows.append((
                f"{h[:8]}-{h[8:]}-{mid}-{counter:012x}", shops[shop_index].shop_id, sid, etype, ename, props, t, url,
                referrer, ua, t + 40, path, browser, os_name, device, country, is_bot, visitor,
            ))
            shop_events[shop_index] += 1
        self.counter = counter
        return rows

    def generate(self, total: int, end_ms: int, sink: Callable[[list[tuple[Any, ...]]], None]) -> None:
        """Feed `total` rows (±1 session) in time order to sink, over the DAYS days before end_ms."""
        start_ms = end_ms - DAYS * 86400_000
        windows = list(range(start_ms, end_ms, WINDOW_MS))
        start_weekday = time.gmtime(start_ms / 1000).tm_wday
        start_hour = time.gmtime(start_ms / 1000).tm_hour
        weights = [_hour_weight((start_weekday * 24 + start_hour + i) % 168, i // 24) for i in range(len(windows))]
        weights[-1] *= (end_ms - windows[-1]) / WINDOW_MS
        cum = _cum(weights)
        produced = 0
        pending: list[tuple[Any, ...]] = []
        rng = self.rng
        for i, w_start in enumerate(windows):
            w_end = min(w_start + WINDOW_MS, end_ms)
            target = round(total * cum[i] / cum[-1])
            buf = pending
            # Sessions start in this hour until it holds its share of events (sessions spill into later hours).
            while produced < target:
                before = len(buf)
                self._session(buf, w_start + rng.randrange(w_end - w_start))
                produced += len(buf) - before
            buf.sort(key=itemgetter(0))
            cut = bisect.bisect_left(buf, w_end, key=itemgetter(0)) if i < len(windows) - 1 else len(buf)
            ready, pending = buf[:cut], buf[cut:]
            # The very last sessions may run past the end: clamp them to "now" rather than drop them.
            if i == len(windows) - 1:
                ready = [(min(e[0], end_ms - 1), *e[1:]) for e in ready]
                ready.sort(key=itemgetter(0))
            if ready:
                sink(self._rows(ready))


def schema_key() -> str:
    """The version of the events table the cached store was generated for: the first migration creates it. Later
    migrations add other tables, which the server creates on open, so they do not invalidate a cached store."""
    from server.store import MIGRATIONS

    digest = hashlib.sha256(MIGRATIONS[0].encode()).hexdigest()[:10]
    return f"v1-{digest}"


def store_path(cache: Path, rows: int) -> Path:
    return cache / f"stats-{schema_key()}-{GENERATOR_VERSION}-{rows}.db"


def info_path(db: Path) -> Path:
    return db.with_suffix(".json")


def load_info(db: Path) -> GeneratedInfo | None:
    meta = info_path(db)
    if not db.exists() or not meta.exists():
        return None
    return GeneratedInfo.from_json(json.loads(meta.read_text()))


def build_store(cache: Path, rows: int, log: Callable[[str], None]) -> tuple[Path, GeneratedInfo, bool]:
    """The cached store for `rows` events, built (aside, then renamed) when missing. Returns (path, info, built)."""
    from server.store import INSERT_EVENT, prepare_database

    target = store_path(cache, rows)
    info = load_info(target)
    if info is not None:
        return target, info, False
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"stats-*-{rows}.db"):  # built for another schema or generator version
        log(f"removing the stale {stale}")
        for path in (stale, info_path(stale), Path(f"{stale}-wal"), Path(f"{stale}-shm")):
            path.unlink(missing_ok=True)
    partial = target.with_name(target.name + ".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm"), Path(f"{partial}-journal")):
        leftover.unlink(missing_ok=True)
    log(f"generating {rows:,} events into {partial} (cached for later runs) ...")
    prepare_database(partial)
    conn = sqlite3.connect(partial, isolation_level=None)
    began = time.monotonic()
    end_ms = time.time_ns() // 1_000_000 - 60_000
    done = 0
    next_report = 1_000_000
    in_txn = 0
    try:
        # A throwaway build: no journal, no fsync, a big page cache; the file goes back to WAL at the end.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -2000000")
        conn.execute("BEGIN")

        def sink(chunk: list[tuple[Any, ...]]) -> None:
            nonlocal done, next_report, in_txn
            conn.executemany(INSERT_EVENT, chunk)
            done += len(chunk)
            in_txn += len(chunk)
            if in_txn >= COMMIT_ROWS:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                in_txn = 0
            if done >= next_report:
                took = time.monotonic() - began
                log(f"  {done:,} rows in {took:.0f} s ({done / took:,.0f} rows/s)")
                next_report += 1_000_000

        generator = Generator()
        generator.generate(rows, end_ms, sink)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    seconds = time.monotonic() - began
    info = GeneratedInfo(done, end_ms - DAYS * 86400_000, end_ms, seconds,
                         {s.shop_id: n for s, n in zip(generator.shops, generator.shop_events, strict=True)})
    partial.rename(target)
    info_path(target).write_text(json.dumps(info.to_json()))
    log(f"generated {done:,} rows in {seconds:.0f} s ({done / seconds:,.0f} rows/s), "
        f"{target.stat().st_size / 1e9:.2f} GB")
    return target, info, True
