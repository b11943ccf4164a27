"""static/tracker.js in real headless Chromium: a shop page on one origin loads /tracker.js from a Flowtel server on
another, and every assertion reads what the SQLite store holds (or what the browser and the server saw on the wire)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright

from analytics import sqlitelib
from server.app import create_app
from server.tracker import TRACKER_PATH
from tests.conftest import ADMIN_TOKEN, make_settings

# A desktop Chrome on Linux, so the server classifies these visits as a human shopper's (headless Chromium's own
# User-Agent says HeadlessChrome, which the server rightly flags as a bot).
CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
             "Safari/537.36")
HIDE_WEBDRIVER = "Object.defineProperty(Navigator.prototype, 'webdriver', {get: () => false});"
# Batches leave after 100 ms instead of 2 s, so the tests stay quick.
FAST: dict[str, str | None] = {"data-flush-ms": "100"}


# --- the browser -----------------------------------------------------------------------------------------------------

NO_BROWSER = ("No Chromium found for the tracker's browser tests: install it with `apt-get install chromium` "
              "(Debian/Ubuntu), or point FLOWTEL_CHROMIUM at a Chrome or Chromium binary.")


def system_chromium_candidates() -> list[str | None]:
    return ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
            shutil.which("google-chrome")]


def find_chromium(explicit: str | None, candidates: list[str | None]) -> str:
    """FLOWTEL_CHROMIUM when set, else the system Chromium (Debian's `chromium`); never a downloaded browser.
    Missing means a failed test, not a skipped one: a suite without its browser tests must not pass."""
    for candidate in [explicit] if explicit else candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(NO_BROWSER if not explicit else f"FLOWTEL_CHROMIUM={explicit!r} is not an executable. {NO_BROWSER}")


def test_a_missing_browser_fails_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        find_chromium(None, [None, str(tmp_path / "no-chromium")])
    with pytest.raises(pytest.fail.Exception, match="FLOWTEL_CHROMIUM='/nowhere/chrome' is not an executable"):
        find_chromium("/nowhere/chrome", ["/usr/bin/chromium"])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = find_chromium(os.environ.get("FLOWTEL_CHROMIUM"), system_chromium_candidates())
    # Chromium refuses to start its sandbox as root (CI containers); the sandbox protects nothing in these tests.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    # The context's user_agent covers requests the page makes while it lives; a beacon or keepalive fetch sent on
    # pagehide can finish after the page is gone and then leaves with the browser's own "HeadlessChrome" UA (seen in
    # CI). The same UA on the command line makes every request, whenever it leaves, look like desktop Chrome.
    args.append(f"--user-agent={CHROME_UA}")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable, args=args)
        yield instance
        await instance.close()


async def shopper(browser: Browser, *, human: bool = True, init_script: str = "") -> BrowserContext:
    """A fresh browser profile; `human` hides the automation flag and sends a desktop Chrome User-Agent."""
    context = await browser.new_context(user_agent=CHROME_UA)
    if human:
        await context.add_init_script(HIDE_WEBDRIVER)
    if init_script:
        await context.add_init_script(init_script)
    return context


# --- the Flowtel server, restartable on the same port -----------------------------------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    origin: str | None
    content_type: str | None


@dataclass
class Flowtel:
    tmp_path: Path
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.tmp_path / "flowtel.db"

    async def start(self) -> None:
        app = create_app(make_settings(self.tmp_path, mirror_interval=0.2))
        # Outermost, so a request is on record before its events can be committed (and seen in the file).
        app.middlewares.insert(0, self._record)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Origin"),
                              request.headers.get("Content-Type")))
        return await handler(request)

    def events(self, shop_id: str) -> list[dict[str, Any]]:
        """The shop's stored events in insertion order, read straight from the SQLite file."""
        conn = sqlitelib.connect(f"file:{self.db_path}?mode=ro", uri=True)
        conn.row_factory = sqlitelib.Row
        try:
            rows = conn.execute("SELECT * FROM events WHERE shop_id = ? ORDER BY seq", (shop_id,)).fetchall()
        except sqlitelib.OperationalError:  # the schema is not there yet
            return []
        finally:
            conn.close()
        return [{**dict(row), "properties": json.loads(row["properties"])} for row in rows]

    async def wait_events(self, shop_id: str, done: Callable[[list[dict[str, Any]]], bool],
                          timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(shop_id)
            if done(events):
                return events
            if time.monotonic() > deadline:
                types = [e["event_type"] for e in events]
                pytest.fail(f"timed out after {timeout}s waiting for events of {shop_id!r}; stored: {types}")
            await asyncio.sleep(0.05)

    def assert_simple_cross_origin_posts(self, shop_origin: str) -> None:
        """Every ingestion request was a simple cross-origin POST: text/plain, from the shop, never preflighted."""
        assert [s for s in self.seen if s.method == "OPTIONS"] == []
        posts = [s for s in self.seen if s.path == "/api/events"]
        assert posts, "the browser sent nothing to /api/events"
        for post in posts:
            assert post.method == "POST"
            assert post.origin == shop_origin
            assert post.content_type is not None and post.content_type.startswith("text/plain")


@pytest.fixture
async def flowtel(tmp_path: Path) -> AsyncIterator[Flowtel]:
    server = Flowtel(tmp_path)
    await server.start()
    yield server
    if server.runner is not None:
        await server.stop()


# --- the shop: a second origin serving fixture pages ------------------------------------------------------------------

@dataclass
class Shop:
    port: int = 0
    pages: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        # localhost vs 127.0.0.1: another site as well as another origin, like a real shop and its analytics host.
        return f"http://localhost:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    async def serve(self, request: web.Request) -> web.Response:
        page = self.pages.get(request.match_info["name"])
        if page is None:
            raise web.HTTPNotFound()
        return web.Response(text=page, content_type="text/javascript" if request.path.endswith(".js") else "text/html")


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    site = Shop()
    app = web.Application()
    app.router.add_get("/{name:.*}", site.serve)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    site.port = runner.addresses[0][1]
    yield site
    await runner.cleanup()


def page_html(flowtel: Flowtel, shop_id: str, *, title: str = "Shop", body: str = "", head: str = "",
              attrs: dict[str, str | None] | None = None) -> str:
    attributes: dict[str, str | None] = {"data-shop-id": shop_id, "data-allow-localhost": "", **FAST, **(attrs or {})}
    tag_attrs = " ".join(f'{k}="{v}"' for k, v in attributes.items() if v is not None)
    return (f"<!doctype html><html><head><title>{title}</title>{head}"
            f'<script defer src="{flowtel.origin}/tracker.js" {tag_attrs}></script></head>'
            f"<body>{body}</body></html>")


async def open_page(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function("window.flowtel && typeof window.flowtel.track === 'function' && !window.flowtel.q")
    return page


def count(events: list[dict[str, Any]], event_type: str) -> int:
    return sum(1 for e in events if e["event_type"] == event_type)


def has(*wanted: str, n: int = 1) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: all(count(events, t) >= n for t in wanted)


# --- tests -----------------------------------------------------------------------------------------------------------

async def test_page_views_carry_path_referrer_title_and_browser_context(
    browser: Browser, flowtel: Flowtel, shop: Shop
) -> None:
    shop.pages["landing.html"] = page_html(flowtel, "pv-shop", title="Welcome",
                                           body='<a id="go" href="/product.html?ref=home">Boots</a>')
    # The tag twice (a theme and an app both adding it): still one page view.
    shop.pages["product.html"] = page_html(flowtel, "pv-shop", title="Boots").replace(
        "</head>", page_html(flowtel, "pv-shop").split("<title>Shop</title>")[1].split("</head>")[0] + "</head>")
    assert shop.pages["product.html"].count("/tracker.js") == 2
    context = await shopper(browser)
    page = await open_page(context, shop.url("landing.html?utm_source=news"))
    async with page.expect_navigation():
        await page.click("#go")
    await page.wait_for_function("typeof window.flowtel?.pageview === 'function'")
    await page.evaluate("flowtel.track('marker')")
    events = await flowtel.wait_events("pv-shop", has("marker"))
    assert [e["event_type"] for e in events] == ["page_view", "page_view", "marker"]

    landing, product, _ = events
    assert landing["url"] == shop.url("landing.html?utm_source=news")
    assert landing["path"] == "/landing.html"
    assert landing["referrer"] is None
    assert landing["properties"] == {"title": "Welcome"}
    assert product["path"] == "/product.html"
    assert product["url"] == shop.url("product.html?ref=home")
    assert product["referrer"] == shop.url("landing.html?utm_source=news")
    assert product["properties"] == {"title": "Boots"}
    for event in events:
        assert (event["browser"], event["os"], event["device"], event["is_bot"]) == ("Chrome", "Linux", "desktop", 0)
        assert event["user_agent"] == CHROME_UA
        assert event["id"][14] == "7", "ids are UUIDv7"
        assert abs(event["timestamp"] - time.time() * 1000) < 60_000
    # One tab, one session; time-ordered ids sort like the events happened.
    assert landing["session_id"] == product["session_id"]
    assert landing["id"] < product["id"]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    # No cookies: neither the shop nor the analytics origin got one.
    assert await context.cookies() == []
    await context.close()


async def test_spa_navigations_send_one_page_view_per_new_url(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    shop.pages["app.html"] = page_html(flowtel, "spa-shop", title="App")
    shop.pages["hash.html"] = page_html(flowtel, "hash-shop", title="Hash", attrs={"data-hash": ""})
    context = await shopper(browser)
    page = await open_page(context, shop.url("app.html"))
    await page.evaluate("""() => {
        history.pushState({}, "", "/spa/a");
        history.replaceState({}, "", "/spa/a");          // same URL: no page view
        history.pushState({}, "", "/spa/a#details");     // only the hash changed, without data-hash: none
        history.replaceState({}, "", "/spa/b");
    }""")
    await page.go_back()  # popstate → /spa/a
    await page.wait_for_function("location.pathname === '/spa/a'")
    # The outbox leaves in order, so once this marker is stored every page view before it is too.
    await page.evaluate("flowtel.track('marker')")
    events = await flowtel.wait_events("spa-shop", has("marker"))
    assert [e["event_type"] for e in events] == ["page_view"] * 4 + ["marker"]
    events = events[:4]
    assert [e["path"] for e in events] == ["/app.html", "/spa/a", "/spa/b", "/spa/a"]
    # An SPA navigation's referrer is the page the visitor came from inside the app.
    assert [e["referrer"] for e in events[1:]] == [shop.url("app.html"), shop.url("spa/a"), shop.url("spa/b")]
    assert len({e["session_id"] for e in events}) == 1

    hash_page = await open_page(context, shop.url("hash.html"))
    await hash_page.evaluate("location.hash = '#/cart'")
    events = await flowtel.wait_events("hash-shop", has("page_view", n=2))
    assert [e["url"] for e in events] == [shop.url("hash.html"), shop.url("hash.html#/cart")]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


async def test_data_api_and_manual_page_views(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    # The shop serves its own copy of the script, so only data-api can point it at Flowtel.
    shop.pages["js/tracker.js"] = TRACKER_PATH.read_text()
    shop.pages["manual.html"] = page_html(flowtel, "manual-shop", title="Manual",
                                          attrs={"data-api": flowtel.origin + "/", "data-auto": "false"}).replace(
        f'src="{flowtel.origin}/tracker.js"', 'src="/js/tracker.js"')
    context = await shopper(browser)
    page = await open_page(context, shop.url("manual.html"))
    await page.evaluate("""() => {
        history.pushState({}, "", "/not-counted");   // data-auto="false": navigations send nothing by themselves
        flowtel.pageview();
        flowtel.pageview();                          // the same URL again: de-duplicated
        flowtel.track("marker");
    }""")
    events = await flowtel.wait_events("manual-shop", has("marker"))
    assert [(e["event_type"], e["path"]) for e in events] == [("page_view", "/not-counted"),
                                                              ("marker", "/not-counted")]
    assert not [s for s in flowtel.seen if s.path == "/tracker.js"]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


async def test_data_attribute_clicks_and_outbound_links(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    outbound = f"{flowtel.origin}/healthz"
    shop.pages["clicks.html"] = page_html(flowtel, "click-shop", body=f"""
        <button id="join" data-flowtel-event="newsletter_signup" data-flowtel-prop-plan="gold"
                data-flowtel-prop-product-id="sku-1"><span id="inner">Join</span></button>
        <a id="internal" href="#top">Top</a>
        <a id="out" href="{outbound}">Partner</a>""")
    context = await shopper(browser)
    page = await open_page(context, shop.url("clicks.html"))
    await page.click("#inner")  # on a child: the tagged ancestor counts
    await page.click("#internal")  # same host: not outbound
    await page.click("#out")  # leaves the shop: delivered on pagehide
    events = await flowtel.wait_events("click-shop", has("page_view", "newsletter_signup", "outbound_click"))
    signup = next(e for e in events if e["event_type"] == "newsletter_signup")
    assert signup["properties"] == {"plan": "gold", "productId": "sku-1"}
    assert signup["event_name"] == "newsletter_signup"
    [out] = [e for e in events if e["event_type"] == "outbound_click"]
    assert out["properties"] == {"url": outbound}
    assert out["path"] == "/clicks.html"
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


async def test_ecommerce_calls_and_the_preload_queue(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    stub = ("<script>window.flowtel=window.flowtel||{q:[],track:function(){this.q.push(arguments)}};"
            "flowtel.track('product_view',{productId:'sku-1',name:'Boots',price:89.9,currency:'EUR'});</script>")
    shop.pages["product.html"] = page_html(flowtel, "shop-ec", title="Boots", head=stub)
    context = await shopper(browser)
    page = await open_page(context, shop.url("product.html"))
    await page.evaluate("""() => {
        flowtel.track("add_to_cart", {productId: "sku-1", name: "Boots", price: 89.9, quantity: 2, currency: "EUR"});
        flowtel.track("checkout_start", {value: 179.8, currency: "EUR"});
        flowtel.track("purchase", {orderId: "order-1001", value: 179.8, currency: "EUR",
                                   items: [{productId: "sku-1", name: "Boots", price: 89.9, quantity: 2}]});
        flowtel.track("Wishlist Added", {productId: "sku-2"});
    }""")
    steps = ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase", "Wishlist Added")
    events = await flowtel.wait_events("shop-ec", has(*steps))
    assert [e["event_type"] for e in events] == list(steps)
    by_type = {e["event_type"]: e for e in events}
    # The call made before the script loaded was kept and sent after the page view.
    assert by_type["product_view"]["properties"] == {"productId": "sku-1", "name": "Boots", "price": 89.9,
                                                     "currency": "EUR"}
    assert by_type["purchase"]["properties"] == {
        "orderId": "order-1001", "value": 179.8, "currency": "EUR",
        "items": [{"productId": "sku-1", "name": "Boots", "price": 89.9, "quantity": 2}],
    }
    assert len({e["session_id"] for e in events}) == 1

    # The same events read back as a funnel and revenue through the stats API.
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{flowtel.origin}/api/stats", params={"shopId": "shop-ec", "period": "7d"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert resp.status == 200, await resp.text()
        stats = await resp.json()
    assert [step["sessions"] for step in stats["funnel"]] == [1, 1, 1, 1, 1]
    assert stats["totals"]["orders"] == 1
    assert stats["totals"]["revenue"] == [{"currency": "EUR", "amount": pytest.approx(179.8)}]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


async def test_navigation_right_after_track_still_delivers_it(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    # A one-minute batch interval: only the pagehide beacon can deliver these before the test gives up.
    shop.pages["cart.html"] = page_html(flowtel, "leave-shop", attrs={"data-flush-ms": "60000"})
    context = await shopper(browser)
    page = await open_page(context, shop.url("cart.html"))
    # Away to another origin at once, so no later page of the shop could send the outbox instead.
    async with page.expect_navigation():
        await page.evaluate(f"""() => {{
            flowtel.track("checkout_start", {{value: 42, currency: "USD"}});
            location.href = "{flowtel.origin}/healthz";
        }}""")
    events = await flowtel.wait_events("leave-shop", has("page_view", "checkout_start"))
    assert [e["event_type"] for e in events] == ["page_view", "checkout_start"]
    assert events[1]["properties"] == {"value": 42, "currency": "USD"}

    # A beacon is never confirmed, so the events stayed in the outbox; back in the shop, the next page sends them
    # again with the same ids (fast this time), and the server stores nothing twice.
    shop.pages["cart.html"] = page_html(flowtel, "leave-shop")
    page = await open_page(context, shop.url("cart.html"))
    await page.wait_for_function("localStorage.getItem('flowtel_outbox') === '[]'")
    events = flowtel.events("leave-shop")
    assert [e["event_type"] for e in events] == ["page_view", "checkout_start", "page_view"]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


async def test_events_made_while_the_server_is_down_arrive_once_it_is_back(
    browser: Browser, flowtel: Flowtel, shop: Shop
) -> None:
    shop.pages["page.html"] = page_html(flowtel, "down-shop")
    context = await shopper(browser)
    page = await open_page(context, shop.url("page.html"))
    await flowtel.wait_events("down-shop", has("page_view"))

    # 1. The page stays open: its retries (with back-off) deliver once the server is back on the same port.
    await flowtel.stop()
    async with page.expect_event("requestfailed", lambda r: r.url.endswith("/api/events")):
        await page.evaluate("flowtel.track('offline_a', {n: 1})")
    assert "offline_a" in await page.evaluate("localStorage.getItem('flowtel_outbox')")
    await flowtel.start()
    await flowtel.wait_events("down-shop", has("offline_a"))

    # 2. The visitor leaves while the server is down: the outbox survives and the next page delivers it.
    await flowtel.stop()
    await page.evaluate("flowtel.track('offline_b', {n: 2})")
    await page.goto("about:blank")
    await flowtel.start()
    page = await open_page(context, shop.url("page.html"))
    await flowtel.wait_events("down-shop",
                              lambda events: count(events, "offline_b") == 1 and count(events, "page_view") == 2)
    await page.wait_for_function("localStorage.getItem('flowtel_outbox') === '[]'")

    # Exactly once: retries re-sent the same ids, so the store holds each event a single time.
    types = sorted(e["event_type"] for e in flowtel.events("down-shop"))
    assert types == ["offline_a", "offline_b", "page_view", "page_view"]
    flowtel.assert_simple_cross_origin_posts(shop.origin)
    await context.close()


DNT = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"
GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"
IGNORE = "localStorage.setItem('flowtel_ignore', 'true');"


@pytest.mark.parametrize(
    ("init_script", "attrs"),
    [
        pytest.param(DNT, {"data-respect-dnt": ""}, id="do-not-track"),
        pytest.param(GPC, {"data-respect-dnt": ""}, id="global-privacy-control"),
        pytest.param(IGNORE, {}, id="flowtel_ignore"),
        pytest.param("", {"data-allow-localhost": None}, id="localhost-not-allowed"),
    ],
)
async def test_privacy_switches_send_nothing(browser: Browser, flowtel: Flowtel, shop: Shop, init_script: str,
                                             attrs: dict[str, str | None]) -> None:
    shop.pages["private.html"] = page_html(flowtel, "private-shop", attrs=attrs)
    context = await shopper(browser, init_script=init_script)
    sent: list[str] = []

    def watch(request: Request) -> None:
        if "/api/events" in request.url:
            sent.append(request.url)

    context.on("request", watch)
    page = await open_page(context, shop.url("private.html"))
    await page.evaluate("flowtel.track('purchase', {orderId: 'o-1', value: 10})")
    assert await page.evaluate("localStorage.getItem('flowtel_outbox')") is None
    await page.goto("about:blank")  # pagehide: the moment a beacon would leave

    # The control: the same switch without its trigger is tracked, so the pipeline was live during the test.
    control_attrs = {"data-respect-dnt": None} if init_script in (DNT, GPC) else {}
    shop.pages["control.html"] = page_html(flowtel, "control-shop", attrs=control_attrs)
    control_context = await shopper(browser, init_script="" if init_script == IGNORE else init_script)
    await open_page(control_context, shop.url("control.html"))
    await flowtel.wait_events("control-shop", has("page_view"))

    assert sent == []
    assert flowtel.events("private-shop") == []
    await context.close()
    await control_context.close()


async def test_automated_visits_are_sent_and_flagged_as_bots(browser: Browser, flowtel: Flowtel, shop: Shop) -> None:
    shop.pages["page.html"] = page_html(flowtel, "bot-shop")
    context = await shopper(browser, human=False)  # navigator.webdriver stays true, as under any WebDriver
    await open_page(context, shop.url("page.html"))
    [event] = await flowtel.wait_events("bot-shop", has("page_view"))
    assert event["user_agent"] == CHROME_UA + " (webdriver)"
    assert (event["is_bot"], event["device"], event["browser"]) == (1, "bot", "Chrome")
    await context.close()


async def test_session_is_kept_for_30_idle_minutes_then_renewed(
    browser: Browser, flowtel: Flowtel, shop: Shop
) -> None:
    shop.pages["page.html"] = page_html(flowtel, "session-shop")
    context = await shopper(browser)
    page = await open_page(context, shop.url("page.html"))
    age = "(minutes) => { const s = JSON.parse(sessionStorage.getItem('flowtel_session'));" \
          " s.at = Date.now() - minutes * 60000; sessionStorage.setItem('flowtel_session', JSON.stringify(s)); }"
    await page.evaluate(age, 29)
    await page.evaluate("flowtel.track('after_29_minutes')")
    await page.evaluate(age, 31)
    await page.evaluate("flowtel.track('after_31_minutes')")
    events = await flowtel.wait_events("session-shop", has("page_view", "after_29_minutes", "after_31_minutes"))
    sessions = {e["event_type"]: e["session_id"] for e in events}
    assert sessions["after_29_minutes"] == sessions["page_view"]
    assert sessions["after_31_minutes"] != sessions["page_view"]
    assert sessions["after_31_minutes"][14] == "7"
    await context.close()


async def test_outbox_is_capped_and_retries_back_off_against_a_dead_server(
    browser: Browser, flowtel: Flowtel, shop: Shop, unused_tcp_port: int
) -> None:
    dead = f"http://127.0.0.1:{unused_tcp_port}"
    shop.pages["page.html"] = page_html(flowtel, "dead-shop", attrs={"data-api": dead})
    context = await shopper(browser)
    attempts: list[float] = []
    context.on("requestfailed", lambda r: attempts.append(time.monotonic()) if r.url.startswith(dead) else None)
    page = await open_page(context, shop.url("page.html"))
    await page.evaluate("() => { for (let i = 0; i < 600; i++) flowtel.track('filler', {i}); }")
    outbox = json.loads(await page.evaluate("localStorage.getItem('flowtel_outbox')"))
    assert len(outbox) == 500
    assert outbox[-1]["properties"] == {"i": 599}  # the oldest gave way
    started = time.monotonic()
    await asyncio.sleep(1.6)
    # A fixed 100 ms retry would try about 18 times; delays doubling from 100 ms (±50 %) try at most 7.
    in_window = [t for t in attempts if t >= started - 0.2]
    assert 1 <= len(in_window) <= 7, attempts
    await context.close()



# --- the Shopify custom pixel from docs/tracker.md -------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tracker.md"
# Shopify runs a custom pixel with `analytics` (the event bus) and `browser` (async storage) in scope; this page
# provides the same two objects, then runs the snippet exactly as the docs print it, with the two constants set.
PIXEL_SHIM = """<script>
const handlers = {};
const analytics = {subscribe: (name, callback) => (handlers[name] = handlers[name] || []).push(callback)};
const browser = {sessionStorage: {getItem: async (key) => sessionStorage.getItem(key),
                                  setItem: async (key, value) => sessionStorage.setItem(key, value)}};
window.fire = (event) => Promise.all((handlers[event.name] || []).map((callback) => callback(event)));
</script>"""
SHOPIFY_EVENTS = """(origin) => {
  const at = new Date().toISOString();
  const context = (path, title) => ({document: {location: {href: origin + path}, referrer: "https://www.google.com/",
                                                title}});
  const variant = {id: "4001", sku: "BOOT-42", title: "42", price: {amount: 89.9, currencyCode: "EUR"},
                   product: {id: "7001", title: "Boots"}};
  const checkout = {token: "tok-1", currencyCode: "EUR", totalPrice: {amount: 179.8, currencyCode: "EUR"},
                    lineItems: [{quantity: 2, variant}]};
  return [
    {id: "sh-1", name: "page_viewed", timestamp: at, context: context("/products/boots", "Boots"), data: {}},
    {id: "sh-2", name: "product_viewed", timestamp: at, context: context("/products/boots", "Boots"),
     data: {productVariant: variant}},
    {id: "sh-3", name: "product_added_to_cart", timestamp: at, context: context("/products/boots", "Boots"),
     data: {cartLine: {quantity: 2, merchandise: variant, cost: {totalAmount: {amount: 179.8, currencyCode: "EUR"}}}}},
    {id: "sh-4", name: "checkout_started", timestamp: at, context: context("/checkouts/c1", "Checkout"),
     data: {checkout}},
    {id: "sh-5", name: "checkout_completed", timestamp: at, context: context("/checkouts/c1/thank-you", "Thanks"),
     data: {checkout: {...checkout, order: {id: "5001"}}}},
  ];
}"""


def shopify_pixel_snippet() -> str:
    text = DOCS.read_text()
    start = text.index("```js shopify-custom-pixel\n") + len("```js shopify-custom-pixel\n")
    return text[start:text.index("```", start)]


def derived_event_id(shop_id: str, shopify_event_id: str) -> str:
    """What the pixel computes: SHA-256 of shop and Shopify event id, shaped as a version-8 UUID."""
    digest = bytearray(hashlib.sha256(f"{shop_id}/{shopify_event_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


async def test_shopify_custom_pixel_forwards_the_standard_events(
    browser: Browser, flowtel: Flowtel, shop: Shop
) -> None:
    snippet = shopify_pixel_snippet()
    assert 'const FLOWTEL = "https://ANALYTICS_HOST";' in snippet and 'const SHOP_ID = "my-shop";' in snippet
    snippet = snippet.replace("https://ANALYTICS_HOST", flowtel.origin).replace('"my-shop"', '"shopify-shop"')
    shop.pages["pixel.html"] = f"<!doctype html><html><head>{PIXEL_SHIM}<script>{snippet}</script></head></html>"
    context = await shopper(browser)
    page = await context.new_page()
    await page.goto(shop.url("pixel.html"))
    await page.evaluate(f"async () => {{ for (const e of ({SHOPIFY_EVENTS})(location.origin)) await fire(e); }}")
    steps = ["page_view", "product_view", "add_to_cart", "checkout_start", "purchase"]
    events = await flowtel.wait_events("shopify-shop", has(*steps))
    assert [e["event_type"] for e in events] == steps
    assert [e["event_name"] for e in events] == ["page_viewed", "product_viewed", "product_added_to_cart",
                                                 "checkout_started", "checkout_completed"]
    assert [e["id"] for e in events] == [derived_event_id("shopify-shop", f"sh-{i}") for i in range(1, 6)]
    assert len({e["session_id"] for e in events}) == 1
    by_type = {e["event_type"]: e for e in events}
    assert by_type["page_view"]["properties"] == {"title": "Boots"}
    assert by_type["page_view"]["referrer"] == "https://www.google.com/"
    assert by_type["page_view"]["path"] == "/products/boots"
    boots = {"productId": "7001", "variantId": "4001", "sku": "BOOT-42", "name": "Boots", "price": 89.9}
    assert by_type["product_view"]["properties"] == {**boots, "currency": "EUR"}
    assert by_type["add_to_cart"]["properties"] == {**boots, "quantity": 2, "currency": "EUR"}
    assert by_type["purchase"]["properties"] == {"orderId": "5001", "checkoutToken": "tok-1", "value": 179.8,
                                                 "currency": "EUR", "items": [{**boots, "quantity": 2}]}

    # Shopify delivering checkout_completed again: the same derived id, stored once.
    await page.evaluate(f"async () => fire(({SHOPIFY_EVENTS})(location.origin)[4])")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{flowtel.origin}/api/stats", params={"shopId": "shopify-shop", "period": "7d"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        stats = await resp.json()
    assert count(flowtel.events("shopify-shop"), "purchase") == 1
    assert stats["totals"]["revenue"] == [{"currency": "EUR", "amount": pytest.approx(179.8)}]
    assert [step["sessions"] for step in stats["funnel"]] == [1, 1, 1, 1, 1]
    assert [s for s in flowtel.seen if s.method == "OPTIONS"] == []
    await context.close()
