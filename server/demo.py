"""`flowtel demo`: realistic shop traffic from a pure, seeded generator, loaded through POST /api/events."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from server.events import MAX_BODY_BYTES, MAX_EVENTS, format_ms
from server.settings import Settings

DEFAULT_SHOPS = ("demo-shoes", "demo-books", "demo-coffee")
DEFAULT_DAYS = 90
DEFAULT_SEED = 42
BATCH_EVENTS = MAX_EVENTS
# Batches in flight at once: enough for the server's group commit to merge them, few enough to stay polite.
CONCURRENCY = 4
BOT_EVENT_SHARE = 0.02

# Weekends are busier; Monday to Thursday are the quiet days.
WEEKDAY_FACTOR = (0.92, 0.90, 0.95, 1.0, 1.08, 1.38, 1.32)
# Sessions by UTC hour: quiet nights, a lunch bump, the evening peak.
HOUR_WEIGHTS = (2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5.5, 6, 6.5, 7.5, 7, 6.5, 6.5, 7, 8, 9.5, 10.5, 10, 8.5, 6, 3.5)

Product = tuple[str, str, str, float, str]  # (productId, slug, name, price, category)


@dataclass(frozen=True)
class ShopProfile:
    """What makes one demo shop look like itself: catalogue, prices, audience and tracking style."""

    host: str
    sessions_per_day: float
    # The first is the shop's currency; a shop that also lists EUR charges European visitors in EUR.
    currencies: tuple[str, ...]
    products: tuple[Product, ...]
    categories: tuple[str, ...]
    searches: tuple[str, ...]
    campaigns: tuple[str, ...]
    countries: tuple[tuple[str, float], ...]
    newsletter_weekday: int
    # "segment" sends Segment-style names ("Product Viewed", product_id, revenue): the aliases the contract maps.
    naming: str = "canonical"
    order_prefix: str = "DEMO"


SHOES = ShopProfile(
    host="www.stride-shoes.example",
    sessions_per_day=56,
    currencies=("USD",),
    products=(
        ("shoe-1001", "trail-runner-2", "Trail Runner 2", 129.0, "trail"),
        ("shoe-1002", "cloud-glide", "Cloud Glide Running Shoe", 149.0, "running"),
        ("shoe-1003", "daily-trainer", "Daily Trainer", 99.0, "running"),
        ("shoe-1004", "summit-hiker-gtx", "Summit Hiker GTX", 179.0, "trail"),
        ("shoe-1005", "canvas-low", "Canvas Low Sneaker", 59.0, "casual"),
        ("shoe-1006", "leather-court", "Leather Court Classic", 89.0, "casual"),
        ("shoe-1007", "knit-slip-on", "Knit Slip-On", 69.0, "casual"),
        ("shoe-1008", "kids-flash-runner", "Kids Flash Runner", 49.0, "kids"),
        ("shoe-1009", "kids-velcro-sneaker", "Kids Velcro Sneaker", 39.0, "kids"),
        ("shoe-1010", "merino-socks-3-pack", "Merino Socks (3-pack)", 24.0, "accessories"),
        ("shoe-1011", "pro-cushion-insoles", "Pro Cushion Insoles", 29.0, "accessories"),
        ("shoe-1012", "rain-boot", "Rain Boot", 79.0, "casual"),
    ),
    categories=("running", "trail", "casual", "kids", "accessories", "sale"),
    searches=("trail shoes", "waterproof", "kids size 30", "running shoes wide", "socks", "white sneakers"),
    campaigns=("autumn-sale", "new-arrivals", "marathon-season"),
    countries=(("US", 55), ("CA", 10), ("GB", 9), ("AU", 6), ("DE", 5), ("FR", 4), ("NL", 3), ("MX", 3),
               ("BR", 3), ("JP", 2)),
    newsletter_weekday=3,
    order_prefix="SHO",
)
BOOKS = ShopProfile(
    host="www.pageturner-books.example",
    sessions_per_day=38,
    currencies=("EUR",),
    products=(
        ("978-3-16-148410-0", "the-quiet-harbour", "The Quiet Harbour", 22.0, "fiction"),
        ("978-1-4028-9462-6", "murder-at-the-mill", "Murder at the Mill", 12.99, "crime"),
        ("978-0-306-40615-7", "salt-fat-fire", "Salt, Fat, Fire: A Cookbook", 34.0, "cookbooks"),
        ("978-1-86197-876-9", "the-little-owl", "The Little Owl", 9.99, "children"),
        ("978-0-262-13472-9", "a-short-history-of-maps", "A Short History of Maps", 28.5, "non-fiction"),
        ("978-0-19-852663-6", "winter-garden", "The Winter Garden", 18.0, "fiction"),
        ("978-3-598-21500-1", "cold-case-files", "Cold Case Files", 14.99, "crime"),
        ("978-0-7432-7356-5", "bread-every-day", "Bread Every Day", 26.0, "cookbooks"),
        ("978-1-56619-909-4", "dragons-and-dumplings", "Dragons & Dumplings", 11.5, "children"),
        ("978-0-14-044913-6", "the-art-of-slowness", "The Art of Slowness", 19.9, "non-fiction"),
        ("978-2-07-036822-8", "letters-from-lisbon", "Letters from Lisbon", 16.0, "fiction"),
        ("978-0-545-01022-1", "gift-card-25", "Gift Card €25", 25.0, "gifts"),
    ),
    categories=("fiction", "crime", "cookbooks", "children", "non-fiction", "gifts"),
    searches=("crime novel", "cookbook vegan", "gift for dad", "bestsellers", "kinderbuch", "maps"),
    campaigns=("weekly-digest", "book-club", "christmas-gifts"),
    countries=(("DE", 35), ("FR", 14), ("NL", 12), ("AT", 10), ("BE", 7), ("ES", 7), ("IT", 7), ("IE", 4),
               ("FI", 2), ("PT", 2)),
    newsletter_weekday=4,
    order_prefix="PT",
)
COFFEE = ShopProfile(
    host="roastery.example",
    sessions_per_day=26,
    currencies=("USD", "EUR"),
    products=(
        ("cof-001", "house-espresso", "House Espresso 1kg", 24.0, "coffee"),
        ("cof-002", "ethiopia-yirgacheffe", "Ethiopia Yirgacheffe 250g", 16.5, "coffee"),
        ("cof-003", "colombia-huila", "Colombia Huila 250g", 14.0, "coffee"),
        ("cof-004", "decaf-swiss-water", "Decaf Swiss Water 250g", 15.0, "coffee"),
        ("cof-005", "burr-grinder", "Conical Burr Grinder", 89.0, "equipment"),
        ("cof-006", "gooseneck-kettle", "Gooseneck Kettle", 69.0, "equipment"),
        ("cof-007", "pour-over-set", "Pour-Over Set", 42.0, "equipment"),
        ("cof-008", "stoneware-mug", "Stoneware Mug", 18.0, "gifts"),
        ("cof-009", "subscription-monthly", "Monthly Subscription", 29.0, "subscriptions"),
        ("cof-010", "gift-box", "Tasting Gift Box", 38.0, "gifts"),
    ),
    categories=("coffee", "equipment", "subscriptions", "gifts"),
    searches=("decaf", "grinder", "espresso beans", "gift"),
    campaigns=("subscribe-and-save", "holiday-gift-guide"),
    countries=(("US", 45), ("DE", 14), ("CA", 8), ("FR", 7), ("GB", 7), ("NL", 6), ("ES", 4), ("IT", 4),
               ("AU", 3), ("SE", 2)),
    newsletter_weekday=1,
    naming="segment",
    order_prefix="RST",
)
PROFILES = {"demo-shoes": SHOES, "demo-books": BOOKS, "demo-coffee": COFFEE}
EURO_COUNTRIES = frozenset(("DE", "FR", "NL", "AT", "BE", "ES", "IT", "IE", "FI", "PT"))

# Segment-style names for the same canonical types (the ingestion contract's aliases).
SEGMENT_NAMES = {
    "page_view": "Page Viewed", "product_view": "Product Viewed", "add_to_cart": "Product Added",
    "remove_from_cart": "Product Removed", "checkout_start": "Checkout Started", "purchase": "Order Completed",
    "search": "Products Searched",
}

# (name, weight, referrer URLs, utm (source, medium) or None). "internal": an old tab of the shop itself.
SOURCES: tuple[tuple[str, float, tuple[str, ...], tuple[str, str] | None], ...] = (
    ("google", 33, ("https://www.google.com/",), None),
    ("direct", 21, (), None),
    ("facebook", 10, ("https://m.facebook.com/",), None),
    ("instagram", 4, ("https://l.instagram.com/",), None),
    ("bing", 3, ("https://www.bing.com/",), None),
    ("duckduckgo", 2, ("https://duckduckgo.com/",), None),
    ("newsletter", 7, (), ("newsletter", "email")),
    ("google-ads", 8, ("https://www.google.com/",), ("google", "cpc")),
    ("facebook-ads", 5, ("https://m.facebook.com/",), ("facebook", "paid_social")),
    ("internal", 4, (), None),
    ("blog-mention", 3, ("https://www.reddit.com/", "https://news.ycombinator.com/", "https://medium.com/"), None),
)
DEVICES = (("mobile", 0.57), ("desktop", 0.37), ("tablet", 0.06))
# (device, probability of: add to cart given a product view, checkout given a cart, purchase given checkout)
FUNNEL_RATES = {"desktop": (0.25, 0.58, 0.66), "mobile": (0.17, 0.50, 0.55), "tablet": (0.21, 0.55, 0.62)}
BOUNCE = {"desktop": 0.31, "mobile": 0.42, "tablet": 0.36}
DUPLICATE_PURCHASE = 0.012  # the thank-you page reloaded: a second purchase event with the same orderId

BOT_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
ANDROID_PHONES = ("Pixel 8", "Pixel 7a", "SM-S918B", "SM-A546B", "moto g(60)", "2201116SG")
ANDROID_TABLETS = ("SM-X710", "SM-T870", "Lenovo TB-J606F")


def _uuid7(rng: random.Random, ms: int) -> str:
    """A UUIDv7 (RFC 9562 layout) whose random bits come from rng: the same seed gives the same ids."""
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def _weighted(rng: random.Random, options: Iterable[tuple[Any, float]]) -> Any:
    items = list(options)
    return rng.choices([o for o, _ in items], weights=[w for _, w in items])[0]


def _user_agent(rng: random.Random, device: str) -> str:
    """A browser UA with per-visitor version numbers (the loader posts from one IP, so the UA tells visitors apart)."""
    chrome = f"{rng.randint(118, 126)}.0.{rng.randint(6000, 6500)}.{rng.randint(40, 230)}"
    ios = f"{rng.randint(16, 18)}_{rng.randint(0, 7)}"
    if device == "desktop":
        kind = _weighted(rng, (("chrome-win", 40), ("safari-mac", 20), ("chrome-mac", 15), ("edge", 12),
                               ("firefox", 10), ("chrome-linux", 3)))
        if kind == "chrome-win":
            return ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{chrome} Safari/537.36")
        if kind == "safari-mac":
            return ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                    f"Version/{rng.randint(16, 18)}.{rng.randint(0, 6)} Safari/605.1.15")
        if kind == "chrome-mac":
            return ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{chrome} Safari/537.36")
        if kind == "edge":
            return ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    f"Chrome/{chrome} Safari/537.36 Edg/{chrome}")
        if kind == "firefox":
            version = rng.randint(118, 128)
            return f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"
        return f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Safari/537.36"
    if device == "tablet":
        if rng.random() < 0.7:
            return (f"Mozilla/5.0 (iPad; CPU OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                    f"Version/{ios.replace('_', '.')} Mobile/15E148 Safari/604.1")
        return (f"Mozilla/5.0 (Linux; Android {rng.randint(12, 14)}; {rng.choice(ANDROID_TABLETS)}) "
                f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Safari/537.36")
    kind = _weighted(rng, (("iphone", 52), ("android-chrome", 38), ("samsung", 10)))
    if kind == "iphone":
        return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/{ios.replace('_', '.')} Mobile/15E148 Safari/604.1")
    model = rng.choice(ANDROID_PHONES)
    if kind == "samsung":
        return (f"Mozilla/5.0 (Linux; Android {rng.randint(12, 14)}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"SamsungBrowser/{rng.randint(22, 25)}.0 Chrome/{chrome} Mobile Safari/537.36")
    return (f"Mozilla/5.0 (Linux; Android {rng.randint(11, 14)}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{chrome} Mobile Safari/537.36")


@dataclass(frozen=True)
class _Visitor:
    device: str
    user_agent: str
    country: str


def _generic_profile(shop: str) -> ShopProfile:
    """A plausible profile for a shop id the demo has no hand-made catalogue for."""
    return dataclasses.replace(SHOES, host=f"{shop.lower().replace('_', '-')}.example", sessions_per_day=40,
                               order_prefix=shop[:3].upper())


class _Generator:
    """Session-by-session traffic for one shop. Every session draws from its own seeded RNG, so a session's
    events (and ids) do not depend on how many days were generated or on the other sessions."""

    def __init__(self, seed: int, shop: str, profile: ShopProfile, now_ms: int) -> None:
        self.seed = seed
        self.shop = shop
        self.p = profile
        self.now_ms = now_ms
        self.pool_size = max(50, int(profile.sessions_per_day * 35))
        self._visitors: dict[int, _Visitor] = {}
        weights = [1 / (i + 1) ** 0.9 for i in range(len(profile.products))]
        self.product_weights = weights

    def visitor(self, index: int) -> _Visitor:
        found = self._visitors.get(index)
        if found is None:
            rng = random.Random(f"{self.seed}:{self.shop}:visitor:{index}")
            device = _weighted(rng, DEVICES)
            found = _Visitor(device, _user_agent(rng, device), _weighted(rng, self.p.countries))
            self._visitors[index] = found
        return found

    def day(self, day: date, days_ago: int) -> Iterator[tuple[str | None, dict[str, Any]]]:
        day_rng = random.Random(f"{self.seed}:{self.shop}:{day.isoformat()}")
        trend = 1.25 - 0.25 * min(days_ago, 90) / 90  # a gentle climb towards today
        mean = self.p.sessions_per_day * WEEKDAY_FACTOR[day.weekday()] * trend
        sessions = max(0, round(mean * day_rng.uniform(0.85, 1.15)))
        midnight = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        newsletter_day = day.weekday() == self.p.newsletter_weekday
        for k in range(sessions):
            rng = random.Random(f"{self.seed}:{self.shop}:{day.isoformat()}:{k}")
            yield from self.session(rng, midnight, newsletter_day, f"{day:%y%m%d}{k:04d}")
        # Crawlers: about BOT_EVENT_SHARE of all events (a crawl visits ~15 pages, a shopper session ~4.5 events).
        expected_bots = sessions * 4.5 * BOT_EVENT_SHARE / 15
        for b in range(int(expected_bots + day_rng.random())):
            rng = random.Random(f"{self.seed}:{self.shop}:{day.isoformat()}:bot:{b}")
            yield from self.bot_session(rng, midnight)

    def _url(self, path: str) -> str:
        return f"https://{self.p.host}{path}"

    def _event(self, rng: random.Random, event_type: str, ts: int, session_id: str, ua: str, url: str,
               referrer: str | None, properties: dict[str, Any]) -> dict[str, Any]:
        name = SEGMENT_NAMES.get(event_type, event_type) if self.p.naming == "segment" else event_type
        event: dict[str, Any] = {
            "id": _uuid7(rng, ts),
            "shopId": self.shop,
            "sessionId": session_id,
            "eventType": name,
            "timestamp": format_ms(ts),
            "url": url,
            "userAgent": ua,
            "properties": properties,
        }
        if referrer:
            event["referrer"] = referrer
        return event

    def _product_props(self, product: Product, currency: str, quantity: int | None = None) -> dict[str, Any]:
        pid, _slug, name, price, category = product
        key = "product_id" if self.p.naming == "segment" else "productId"
        props: dict[str, Any] = {key: pid, "name": name, "price": price, "category": category, "currency": currency}
        if quantity is not None:
            props["quantity"] = quantity
        return props

    def session(self, rng: random.Random, midnight: int, newsletter_day: bool, order_suffix: str
                ) -> Iterator[tuple[str | None, dict[str, Any]]]:
        p = self.p
        visitor = self.visitor(int(self.pool_size * rng.random() ** 1.7))
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        hour = _weighted(rng, enumerate(HOUR_WEIGHTS))
        t = midnight + hour * 3_600_000 + rng.randrange(3_600_000)
        euro = "EUR" in p.currencies and visitor.country in EURO_COUNTRIES
        currency = "EUR" if euro else p.currencies[0]

        boost = {"newsletter": 4.0 if newsletter_day else 1.0}
        source_name, _weight, referrers, utm = _weighted(rng, ((s, s[1] * boost.get(s[0], 1.0)) for s in SOURCES))
        referrer: str | None = rng.choice(referrers) if referrers else None
        if source_name == "internal":
            referrer = self._url(rng.choice(("/", f"/collections/{rng.choice(p.categories)}")))
        query = ""
        if utm is not None:
            query = f"?utm_source={utm[0]}&utm_medium={utm[1]}&utm_campaign={rng.choice(p.campaigns)}"

        # Campaign traffic lands on products and collections; organic traffic mostly on the home page.
        products = p.products
        roll = rng.random() * (0.55 if utm is not None else 1.0)
        landing_product: Product | None = None
        if roll < 0.3:
            landing_product = rng.choices(products, weights=self.product_weights)[0]
            landing = f"/products/{landing_product[1]}"
        elif roll < 0.55:
            landing = f"/collections/{rng.choice(p.categories)}"
        elif roll < 0.62:
            landing = f"/blogs/journal/{rng.choice(('gift-guide', 'how-we-choose', 'behind-the-scenes'))}"
        else:
            landing = "/"

        ua = visitor.user_agent
        events: list[dict[str, Any]] = []
        page_url = self._url(landing) + query
        page_ref = referrer

        def gap(mean_s: float) -> int:
            return int(min(900.0, max(2.0, rng.expovariate(1 / mean_s))) * 1000)

        def page_view(path: str, product: Product | None) -> None:
            nonlocal t, page_url, page_ref
            if events:
                t += gap(35)
                page_ref, page_url = page_url, self._url(path)
            title = path.split("?")[0].strip("/").split("/")[-1].replace("-", " ").title() or "Home"
            events.append(self._event(rng, "page_view", t, session_id, ua, page_url, page_ref, {"title": title}))
            if product is not None:
                t += rng.randint(300, 2500)
                events.append(self._event(rng, "product_view", t, session_id, ua, page_url, page_ref,
                                          self._product_props(product, currency)))

        page_view(landing, landing_product)
        cutoff = format_ms(self.now_ms)  # ISO strings of one format compare like the instants
        if rng.random() < BOUNCE[visitor.device]:
            yield from ((visitor.country, e) for e in events if e["timestamp"] <= cutoff)
            return

        viewed: list[Product] = [landing_product] if landing_product is not None else []
        for _ in range(1 + min(12, int(rng.expovariate(1 / 2.2)))):
            roll = rng.random()
            if roll < 0.55:
                product = rng.choices(products, weights=self.product_weights)[0]
                viewed.append(product)
                page_view(f"/products/{product[1]}", product)
            elif roll < 0.8:
                page_view(f"/collections/{rng.choice(p.categories)}", None)
            elif roll < 0.9:
                term = rng.choice(p.searches)
                page_view("/search?q=" + term.replace(" ", "+"), None)
                t += rng.randint(200, 900)
                events.append(self._event(rng, "search", t, session_id, ua, page_url, page_ref, {"query": term}))
            elif roll < 0.95:
                page_view("/", None)
            else:
                page_view(rng.choice(("/pages/shipping", "/pages/about", "/pages/returns")), None)

        cart_rate, checkout_rate, purchase_rate = FUNNEL_RATES[visitor.device]
        if viewed and rng.random() < cart_rate:
            cart: list[tuple[Product, int]] = []
            for product in dict.fromkeys(rng.sample(viewed, k=min(len(viewed), 1 + int(rng.random() < 0.3)))):
                quantity = 1 if rng.random() < 0.85 else 2
                cart.append((product, quantity))
                t += gap(20)
                events.append(self._event(rng, "add_to_cart", t, session_id, ua, self._url(f"/products/{product[1]}"),
                                          page_ref, self._product_props(product, currency, quantity)))
            page_view("/cart", None)
            if len(cart) > 1 and rng.random() < 0.15:
                product, quantity = cart.pop()
                t += gap(15)
                events.append(self._event(rng, "remove_from_cart", t, session_id, ua, page_url, page_ref,
                                          self._product_props(product, currency, quantity)))
            if rng.random() < checkout_rate:
                items = [self._item(product, quantity, currency) for product, quantity in cart]
                subtotal = round(sum(product[3] * quantity for product, quantity in cart), 2)
                page_view("/checkout", None)
                t += rng.randint(200, 1500)
                events.append(self._event(rng, "checkout_start", t, session_id, ua, page_url, page_ref,
                                          self._order_props(None, subtotal, currency, items)))
                if rng.random() < purchase_rate:
                    order_id = f"{p.order_prefix}-{order_suffix}"
                    t += gap(90)
                    page_view("/checkout/thank-you", None)
                    t += rng.randint(200, 1500)
                    purchase = self._order_props(order_id, subtotal, currency, items)
                    events.append(self._event(rng, "purchase", t, session_id, ua, page_url, page_ref, purchase))
                    if rng.random() < DUPLICATE_PURCHASE:
                        t += gap(120)
                        events.append(self._event(rng, "purchase", t, session_id, ua, page_url, page_ref, purchase))
        yield from ((visitor.country, e) for e in events if e["timestamp"] <= cutoff)

    def _item(self, product: Product, quantity: int, currency: str) -> dict[str, Any]:
        key = "product_id" if self.p.naming == "segment" else "productId"
        return {key: product[0], "name": product[2], "price": product[3], "quantity": quantity}

    def _order_props(self, order_id: str | None, subtotal: float, currency: str, items: list[dict[str, Any]]
                     ) -> dict[str, Any]:
        if self.p.naming == "segment":
            props: dict[str, Any] = {"total": subtotal, "currency": currency, "products": items}
            if order_id is not None:
                props["order_id"] = order_id
            return props
        props = {"value": subtotal, "currency": currency, "items": items, "shipping": 0.0 if subtotal >= 75 else 4.95}
        if order_id is not None:
            props["orderId"] = order_id
        return props

    def bot_session(self, rng: random.Random, midnight: int) -> Iterator[tuple[str | None, dict[str, Any]]]:
        ua = rng.choice(BOT_AGENTS)
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t = midnight + rng.randrange(86_400_000)
        cutoff = format_ms(self.now_ms)
        for _ in range(rng.randint(8, 24)):
            roll = rng.random()
            if roll < 0.6:
                path = f"/products/{rng.choice(self.p.products)[1]}"
            elif roll < 0.9:
                path = f"/collections/{rng.choice(self.p.categories)}"
            else:
                path = rng.choice(("/", "/pages/about", "/pages/shipping", "/sitemap.xml"))
            event = self._event(rng, "page_view", t, session_id, ua, self._url(path), None, {})
            if event["timestamp"] <= cutoff:
                yield "US", event
            t += rng.randint(800, 6000)


def generate_demo_traffic(rng: random.Random, now: datetime, days: int = DEFAULT_DAYS,
                          shops: tuple[str, ...] = DEFAULT_SHOPS) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(visitor country, tracker event) pairs for each shop over the `days` days ending with now's UTC date.

    Nothing after `now` is produced. The same rng seed gives the same events, ids included, so loading twice
    stores nothing twice; a later run re-creates the earlier days' sessions with the same ids.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError("days must be at least 1")
    seed = rng.getrandbits(64)
    now_ms = int(now.timestamp() * 1000)
    today = now.astimezone(UTC).date()
    for shop in shops:
        generator = _Generator(seed, shop, PROFILES.get(shop) or _generic_profile(shop), now_ms)
        for days_ago in range(days - 1, -1, -1):
            yield from generator.day(today - timedelta(days=days_ago), days_ago)


def generate_demo_events(rng: random.Random, now: datetime, days: int = DEFAULT_DAYS,
                         shops: tuple[str, ...] = DEFAULT_SHOPS) -> Iterator[dict[str, Any]]:
    """Realistic tracker events (the POST /api/events input) for the demo shops; pure and deterministic per seed."""
    for _country, event in generate_demo_traffic(rng, now, days, shops):
        yield event


# ---- loading through the HTTP API ----------------------------------------------------------------------------


class DemoError(Exception):
    """Loading failed; the message says why and what to do."""


@dataclass
class ShopTally:
    events: int = 0
    bot_events: int = 0
    sessions: set[str] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)


@dataclass
class DemoResult:
    mode: str  # "server" (a running Flowtel answered) or "in-process"
    base_url: str
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    shops: dict[str, ShopTally] = field(default_factory=dict)


def _tally(result: DemoResult, event: dict[str, Any]) -> None:
    tally = result.shops.setdefault(event["shopId"], ShopTally())
    tally.events += 1
    if "bot" in event.get("userAgent", "").lower():
        tally.bot_events += 1
    tally.sessions.add(event["sessionId"])
    props = event["properties"]
    order_id = props.get("orderId") or props.get("order_id")
    if order_id and event["eventType"] in ("purchase", "Order Completed"):
        tally.orders.add(order_id)
        tally.currencies.add(props["currency"])


def _bodies(events: list[dict[str, Any]]) -> Iterator[bytes]:
    """JSON bodies within the server's limits: at most BATCH_EVENTS events and 1 MiB each."""
    body = orjson.dumps(events)
    if len(body) <= MAX_BODY_BYTES - 1024 or len(events) == 1:
        yield body
        return
    half = len(events) // 2
    yield from _bodies(events[:half])
    yield from _bodies(events[half:])


async def find_server(base_url: str, timeout: float = 1.5) -> bool:
    """True when a healthy Flowtel answers GET /healthz at base_url; False when nothing listens there."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(f"{base_url}/healthz") as resp:
                body = await resp.read()
                status = resp.status
    except (TimeoutError, aiohttp.ClientConnectionError):
        return False
    try:
        healthy = status == 200 and orjson.loads(body).get("status") == "ok"
    except (orjson.JSONDecodeError, AttributeError):
        healthy = False
    if not healthy:
        raise DemoError(f"something answers on {base_url} but it is not a healthy Flowtel server "
                        f"(GET /healthz gave HTTP {status}): stop it, or set PORT to the Flowtel server's port.")
    return True


async def _post_all(base_url: str, traffic: Iterable[tuple[str | None, dict[str, Any]]], result: DemoResult,
                    progress: Callable[[str], None]) -> None:
    queue: asyncio.Queue[tuple[str | None, bytes] | None] = asyncio.Queue(maxsize=CONCURRENCY * 2)
    started = time.perf_counter()
    state = {"reported": 0}

    async def worker(session: aiohttp.ClientSession) -> None:
        while (job := await queue.get()) is not None:
            country, body = job
            headers = {"Content-Type": "application/json"}
            if country:
                headers["CF-IPCountry"] = country
            for attempt in range(20):
                async with session.post(f"{base_url}/api/events", data=body, headers=headers) as resp:
                    if resp.status in (429, 503) and attempt < 19:
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    if resp.status != 201:
                        raise DemoError(f"POST /api/events answered HTTP {resp.status}: {(await resp.text())[:500]}")
                    answer = await resp.json()
                    break
            result.accepted += answer["accepted"]
            result.duplicates += answer["duplicates"]
            done = result.accepted + result.duplicates
            if done - state["reported"] >= 10_000:
                state["reported"] = done
                rate = done / max(time.perf_counter() - started, 1e-6)
                progress(f"  {done:>8,} events stored  ({rate:,.0f}/s)")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(CONCURRENCY)]
        try:
            buffers: dict[str | None, list[dict[str, Any]]] = {}
            for country, event in traffic:
                _tally(result, event)
                result.sent += 1
                buffer = buffers.setdefault(country, [])
                buffer.append(event)
                if len(buffer) >= BATCH_EVENTS:
                    for body in _bodies(buffer):
                        await _put(queue, (country, body), workers)
                    buffers[country] = []
            for country, buffer in buffers.items():
                if buffer:
                    for body in _bodies(buffer):
                        await _put(queue, (country, body), workers)
            for _ in workers:
                await _put(queue, None, workers)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def _put(queue: asyncio.Queue[tuple[str | None, bytes] | None], item: tuple[str | None, bytes] | None,
               workers: list[asyncio.Task[None]]) -> None:
    """Queue a job, surfacing a worker's failure instead of waiting forever on a queue nobody drains."""
    while True:
        for task in workers:
            failure = task.exception() if task.done() else None
            if failure is not None:
                raise failure
        try:
            await asyncio.wait_for(queue.put(item), timeout=0.5)
            return
        except TimeoutError:
            continue


async def load_demo(settings: Settings, traffic: Iterable[tuple[str | None, dict[str, Any]]], *,
                    base_url: str | None = None, use_running_server: bool = True,
                    progress: Callable[[str], None] = print) -> DemoResult:
    """POST the traffic to a running server at base_url when one answers, else to an in-process app on loopback."""
    from server.app import create_app  # the in-process path only
    from server.keys import MIRROR, WAREHOUSE

    url = (base_url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    started = time.perf_counter()
    if use_running_server and await find_server(url):
        progress(f"A Flowtel server answers on {url}: posting the demo events to it.")
        result = DemoResult("server", url)
        await _post_all(url, traffic, result, progress)
        result.seconds = time.perf_counter() - started
        return result
    if base_url is not None and use_running_server:
        raise DemoError(f"no Flowtel server answers on {url}: start it, or leave out --url to load in-process.")

    # Our own loopback client is the "proxy" here, so the app may trust its country header.
    app = create_app(dataclasses.replace(settings, trust_proxy=True))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
    except Exception as exc:
        await runner.cleanup()  # the contexts that did start (the store) must close, or their threads linger
        if "lock" in str(exc).lower():
            raise DemoError(f"{settings.duckdb_path} is held by another process (a Flowtel server on another "
                            f"port?): stop it, or set PORT to its port so the demo posts to it.\n  ({exc})") from None
        raise
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        progress(f"No server answers on http://127.0.0.1:{settings.port}: loading through an in-process server "
                 f"(store {settings.database_path}).")
        result = DemoResult("in-process", url)
        await _post_all(url, traffic, result, progress)
        # The mirror catches up before we stop, so the DuckDB file already holds every event.
        await app[WAREHOUSE].run(lambda conn: app[MIRROR].catch_up(conn))
    finally:
        await runner.cleanup()
    result.seconds = time.perf_counter() - started
    return result


def summary(result: DemoResult, settings: Settings) -> str:
    """What was loaded, per shop, and where to look next."""
    lines = [
        f"Loaded {result.sent:,} events in {result.seconds:.1f} s: {result.accepted:,} new, "
        f"{result.duplicates:,} already stored.",
        "",
        f"  {'shop':<16}{'events':>9}{'sessions':>10}{'orders':>8}{'bot events':>12}  currencies",
    ]
    for shop, tally in sorted(result.shops.items()):
        lines.append(f"  {shop:<16}{tally.events:>9,}{len(tally.sessions):>10,}{len(tally.orders):>8,}"
                     f"{tally.bot_events:>12,}  {', '.join(sorted(tally.currencies))}")
    first = min(result.shops) if result.shops else DEFAULT_SHOPS[0]
    first = "demo-shoes" if "demo-shoes" in result.shops else first
    port = settings.port
    lines += ["", "Next:"]
    if result.mode == "server":
        lines.append(f"  open http://localhost:{port}/api/stats?shopId={first}  (the server is running)")
    else:
        lines.append(f"  make run, then open http://localhost:{port}/api/stats?shopId={first}")
    lines += [
        f"    reads need a token: .venv/bin/flowtel token create --shop {first}",
        f"    curl -H \"Authorization: Bearer $(cat {settings.admin_token_path})\" "
        f"'http://localhost:{port}/api/stats?shopId={first}&compare=previous'",
        f"  make analyze SHOP={first}   a terminal report (stop the server first: it holds the DuckDB file)",
        f"  make analyze SHOP={first} HTML=report.html   the same as a self-contained HTML page",
    ]
    return "\n".join(lines)
