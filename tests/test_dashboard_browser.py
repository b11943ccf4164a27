"""The dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright) against a real app."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, Request, async_playwright

from tests.conftest import ADMIN_TOKEN, NOW_MS

CHROMIUM = os.environ.get("FLOWTEL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEZONE = "Europe/Berlin"
SHOP = "shop-dash"
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")
MOBILE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.0 Mobile/15E148 Safari/604.1")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
XSS_NAME = "<script>window.__pwned = 'eventName'</script>"
XSS_PROP = "<img src=x onerror=\"window.__pwned = 'property'\">"
XSS_PATH = "/<img src=x onerror=window.__pwned=1>"
# Collects CSP violations and marks the page as not pwned before any of its scripts run.
INIT_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dataset() -> list[tuple[str, dict[str, Any]]]:
    """24 sessions over the last 29 days (some inside 7 days, all inside 30), two devices, three sources, orders."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(24):
        ua = MOBILE_UA if i % 2 else DESKTOP_UA
        start = NOW_MS - HOUR_MS - i * (29 * DAY_MS // 24)
        session = f"s-{i}"
        query = "?utm_source=newsletter&utm_campaign=autumn" if i % 3 == 1 else ""
        referrer = "https://www.google.com/search?q=mugs" if i % 3 == 0 else None
        steps: list[dict[str, Any]] = [{"eventType": "page_view", "url": f"https://shop.example/{query}",
                                        "referrer": referrer}]
        if i % 4 != 3:
            steps.append({"eventType": "page_view", "url": "https://shop.example/products/mug"})
        if i % 3 == 0:
            steps.append({"eventType": "product_view", "url": "https://shop.example/products/mug",
                          "properties": {"productId": "mug", "name": "Blue mug", "price": 12}})
            steps.append({"eventType": "add_to_cart", "properties": {"productId": "mug", "price": 12}})
        if i % 6 == 0:
            steps.append({"eventType": "purchase", "properties": {
                "orderId": f"o-{i}", "value": 12 + i, "currency": "EUR",
                "items": [{"productId": "mug", "name": "Blue mug", "price": 12, "quantity": 1}]}})
        for n, step in enumerate(steps):
            event = {"shopId": SHOP, "sessionId": session, "timestamp": iso(start + n * 40_000), **step}
            out.append((ua, {k: v for k, v in event.items() if v is not None}))
    xss = NOW_MS - 2 * HOUR_MS
    out.append((DESKTOP_UA, {"shopId": SHOP, "sessionId": "s-xss", "eventType": "page_view", "timestamp": iso(xss),
                             "url": "https://shop.example" + XSS_PATH}))
    out.append((DESKTOP_UA, {"shopId": SHOP, "sessionId": "s-xss", "eventType": "note", "eventName": XSS_NAME,
                             "timestamp": iso(xss + 1000), "properties": {"note": XSS_PROP, "html": XSS_NAME}}))
    out.append((DESKTOP_UA, {"shopId": "shop-other", "sessionId": "o-1", "eventType": "page_view",
                             "timestamp": iso(NOW_MS - 3 * HOUR_MS), "url": "https://other.example/"}))
    return out


async def ingest(client: TestClient) -> None:
    for ua in (DESKTOP_UA, MOBILE_UA):
        batch = [event for agent, event in dataset() if agent == ua]
        resp = await client.post("/api/events", json=batch, headers={"User-Agent": ua})
        assert resp.status == 201, await resp.text()


async def api_get(client: TestClient, path: str, params: dict[str, str]) -> Any:
    resp = await client.get(path, params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def api_post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    resp = await client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


def query_of(request: Request) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}


# --- fixtures --------------------------------------------------------------------------------------------------------

@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"No Chromium at {CHROMIUM}: install it with `apt-get install chromium` "
                    "(or point FLOWTEL_CHROMIUM at a Chromium binary). The dashboard tests need a real browser.")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


class Session:
    """One browser tab on the dashboard, with every request, page error and CSP violation it saw."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[Request] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def open(self) -> None:
        resp = await self.page.goto(self.base + "/")
        assert resp is not None and resp.status == 200
        self.document_headers = await resp.all_headers()

    async def sign_in(self, token: str = ADMIN_TOKEN) -> None:
        await self.page.fill("#token", token)
        async with self.page.expect_response(lambda r: "/api/stats" in r.url and "shopId=" in r.url):
            await self.page.press("#token", "Enter")
        await self.settled()

    async def settled(self) -> None:
        await self.page.wait_for_function(
            "() => !document.getElementById('dashboard').hasAttribute('aria-busy')"
            " && !document.querySelector('#status .notice-loading')")

    def stats_requests(self) -> list[dict[str, str]]:
        return [query_of(r) for r in self.requests if urlsplit(r.url).path == "/api/stats" and "shopId=" in r.url]

    async def kpis(self) -> dict[str, tuple[Any, str]]:
        cards = await self.page.eval_on_selector_all(
            ".kpi",
            "cards => cards.map(c => [c.dataset.metric, c.dataset.raw, c.querySelector('.kpi-value').textContent])")
        return {metric: (json.loads(raw), text) for metric, raw, text in cards}

    async def table_rows(self, selector: str) -> list[list[str]]:
        rows: list[list[str]] = await self.page.eval_on_selector_all(
            f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        return rows

    async def finish(self) -> None:
        """No script error and no CSP violation: the page works within its own policy."""
        assert self.errors == []
        assert await self.page.evaluate("window.__cspViolations") == []
        foreign = [r.url for r in self.requests if not r.url.startswith(self.base + "/")]
        assert foreign == [], "requests left the Flowtel origin"


@pytest.fixture
async def dashboard(client: TestClient, browser: Browser) -> AsyncIterator[Session]:
    await ingest(client)
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=TIMEZONE,
                                        locale="en-GB")
    await context.add_init_script(INIT_SCRIPT)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    session = Session(page, str(client.make_url("")).rstrip("/"))
    yield session
    await context.close()


def assert_kpis_match(kpis: dict[str, tuple[Any, str]], totals: dict[str, Any]) -> None:
    assert set(kpis) == {"visitors", "sessions", "pageViews", "bounceRate", "avgSessionDuration", "orders",
                         "revenue", "conversionRate"}
    for metric, (raw, _text) in kpis.items():
        assert raw == totals[metric], metric
    for metric in ("visitors", "sessions", "pageViews", "orders"):
        assert kpis[metric][1] == f"{totals[metric]:,}", metric
    for metric in ("bounceRate", "conversionRate"):
        value = totals[metric]
        assert kpis[metric][1] == ("–" if value is None else f"{value * 100:.1f}%"), metric


# --- tests -----------------------------------------------------------------------------------------------------------

async def test_kpis_and_a_breakdown_equal_the_stats_api(dashboard: Session, client: TestClient) -> None:
    await dashboard.open()
    await dashboard.sign_in()
    # The admin's shop picker offers the shops that have events; the first is opened.
    options = await dashboard.page.eval_on_selector_all("#shop-list option", "os => os.map(o => o.value)")
    assert options == [SHOP, "shop-other"]
    assert await dashboard.page.input_value("#shop") == SHOP
    params = dashboard.stats_requests()[-1]
    assert params == {"shopId": SHOP, "timezone": TIMEZONE, "period": "30d", "compare": "previous"}

    stats = await api_get(client, "/api/stats", params)
    assert stats["totals"]["sessions"] == 25 and stats["totals"]["orders"] == 4
    assert_kpis_match(await dashboard.kpis(), stats["totals"])
    changes = await dashboard.page.eval_on_selector_all(".kpi-change", "ps => ps.map(p => p.textContent)")
    assert len(changes) == 8
    previous = stats["previous"]["sessions"]
    sessions_change = changes[1]
    if previous:
        pct = stats["change"]["sessions"]
        assert sessions_change == f"{'+' if pct > 0 else '−' if pct < 0 else '±'}{abs(pct):.1f}% vs previous period"
    else:
        assert sessions_change == "no data in the previous period"

    pages = await dashboard.table_rows("#breakdown-topPages")
    assert pages == [[row["value"], f"{row['pageViews']:,}", f"{row['sessions']:,}"] for row in stats["topPages"]]
    devices = await dashboard.table_rows("#breakdown-devices")
    assert devices == [[row["value"], f"{row['sessions']:,}", f"{row['pageViews']:,}"] for row in stats["devices"]]
    funnel = await dashboard.page.eval_on_selector_all("#funnel .bar-label", "ls => ls.map(l => l.textContent)")
    assert funnel == [step["step"] for step in stats["funnel"]]
    products = await dashboard.table_rows("#products")
    assert products[0][:4] == ["Blue mug (mug)", *(str(stats["topProducts"][0][k])
                                                   for k in ("views", "addToCarts", "purchases"))]
    assert await dashboard.page.locator("#timeseries canvas").count() >= 1
    await dashboard.finish()


async def test_changing_the_period_changes_the_request_and_the_numbers(dashboard: Session,
                                                                       client: TestClient) -> None:
    await dashboard.open()
    await dashboard.sign_in()
    month = (await dashboard.kpis())["sessions"][0]

    async with dashboard.page.expect_request(lambda r: "/api/stats" in r.url and "period=7d" in r.url) as info:
        await dashboard.page.select_option("#period", "7d")
    await dashboard.settled()
    params = query_of(await info.value)
    assert params["period"] == "7d" and params["shopId"] == SHOP
    week = await api_get(client, "/api/stats", params)
    assert_kpis_match(await dashboard.kpis(), week["totals"])
    assert week["totals"]["sessions"] < month

    # A custom range sends explicit dates and no period.
    await dashboard.page.select_option("#period", "custom")
    await dashboard.page.fill("#start", "2026-11-20")
    async with dashboard.page.expect_request(lambda r: "endDate=" in r.url) as info:
        await dashboard.page.fill("#end", "2026-11-25")
    await dashboard.settled()
    params = query_of(await info.value)
    assert (params["startDate"], params["endDate"]) == ("2026-11-20", "2026-11-25") and "period" not in params
    custom = await api_get(client, "/api/stats", params)
    assert_kpis_match(await dashboard.kpis(), custom["totals"])
    range_text = await dashboard.page.text_content("#range")
    assert range_text is not None and custom["range"]["start"] in range_text
    await dashboard.finish()


async def test_clicking_a_breakdown_row_filters_the_dashboard(dashboard: Session, client: TestClient) -> None:
    await dashboard.open()
    await dashboard.sign_in()
    stats = await api_get(client, "/api/stats", dashboard.stats_requests()[-1])
    row = dashboard.page.locator("#breakdown-devices tbody tr", has_text="mobile")
    async with dashboard.page.expect_request(
            lambda r: r.url.endswith("/api/query") and '"device"' in (r.post_data or "")) as info:
        await row.click()
    await dashboard.settled()
    body = json.loads((await info.value).post_data or "{}")
    assert body["filters"] == [["is", "device", ["mobile"]]]
    chip = dashboard.page.locator("#filters .chip")
    assert await chip.text_content() == "Devices: mobile ✕"

    expected = await api_post(client, "/api/query", {
        "shopId": SHOP, "timezone": TIMEZONE, "filters": [["is", "device", ["mobile"]]],
        "dateRange": [stats["range"]["start"], stats["range"]["end"]], "metrics": ["sessions", "pageViews"]})
    kpis = await dashboard.kpis()
    assert [kpis["sessions"][0], kpis["pageViews"][0]] == expected["results"][0]["metrics"]
    assert kpis["sessions"][0] == 12 < stats["totals"]["sessions"]
    assert await dashboard.table_rows("#breakdown-devices") == [["mobile", "12", f"{kpis['pageViews'][0]:,}"]]
    # The filtered daily series lines up with the report's buckets: its page views add up to the filtered total.
    label = await dashboard.page.get_attribute("#timeseries", "aria-label")
    assert label is not None and label.endswith(f"total {kpis['pageViews'][0]}")

    # The chip is a button: keyboard removes the filter and the whole-shop numbers come back.
    await chip.focus()
    await dashboard.page.keyboard.press("Enter")
    await dashboard.settled()
    assert await chip.count() == 0
    assert (await dashboard.kpis())["sessions"][0] == stats["totals"]["sessions"]
    await dashboard.finish()


async def test_event_values_render_as_text_and_execute_nothing(dashboard: Session) -> None:
    await dashboard.open()
    await dashboard.sign_in()
    live = dashboard.page.locator("#live")
    await live.locator("td", has_text="__pwned").first.wait_for()
    text = await live.inner_text()
    assert XSS_NAME in text
    assert json.dumps(XSS_PROP)[1:-1] in text  # the properties column shows the JSON, quotes escaped
    pages = await dashboard.table_rows("#breakdown-topPages")
    assert any("<img src=x onerror=" in row[0] for row in pages), pages
    assert await dashboard.page.evaluate("window.__pwned") is None
    assert await dashboard.page.locator("img[src='x']").count() == 0
    scripts = await dashboard.page.eval_on_selector_all("script", "ss => ss.map(s => s.getAttribute('src'))")
    assert scripts == ["/dashboard/js/main.js"]
    await dashboard.finish()


async def test_csp_header_and_same_origin_requests(dashboard: Session, client: TestClient) -> None:
    await dashboard.open()
    csp = dashboard.document_headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    await dashboard.sign_in()
    assets = [r for r in dashboard.requests if "/dashboard/" in r.url]
    assert {urlsplit(r.url).path for r in assets} >= {"/dashboard/js/main.js", "/dashboard/vendor/uPlot.esm.js",
                                                     "/dashboard/app.css"}
    for request in assets:
        response = await request.response()
        assert response is not None and "script-src 'self'" in (await response.all_headers())[
            "content-security-policy"]
    await dashboard.finish()


async def test_sign_in_errors_sign_out_and_revoked_tokens(dashboard: Session, client: TestClient) -> None:
    page = dashboard.page
    await dashboard.open()
    await page.fill("#token", "not-a-token")
    await page.press("#token", "Enter")
    await page.locator("#signin-message", has_text="Check the token").wait_for()
    assert await page.evaluate("localStorage.getItem('flowtel.token')") is None

    resp = await client.post("/api/tokens", json={"shopId": SHOP, "name": "browser"},
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    created = await resp.json()
    await dashboard.sign_in(created["token"])
    assert await page.evaluate("localStorage.getItem('flowtel.token')") == created["token"]
    assert await page.input_value("#shop") == SHOP and await page.locator("#shop").get_attribute("readonly") == ""

    # A reload keeps the session; a revoked token sends the user back to sign in, saying so.
    await page.reload()
    await dashboard.settled()
    assert not await page.locator("#dashboard").is_hidden()
    resp = await client.delete(f"/api/tokens/{created['id']}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 204
    await page.click("#controls button[type=submit]")
    await page.locator("#signin-message", has_text="Sign in again").wait_for()
    assert await page.evaluate("localStorage.getItem('flowtel.token')") is None

    await dashboard.sign_in()
    await page.click("#sign-out")
    await page.locator("#signin").wait_for()
    assert await page.evaluate("localStorage.getItem('flowtel.token')") is None
    await dashboard.finish()


async def test_an_empty_shop_shows_the_snippet_and_make_demo(dashboard: Session) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.sign_in()
    async with page.expect_request(lambda r: "shopId=shop-new" in r.url):
        await page.fill("#shop", "shop-new")
        await page.press("#shop", "Enter")
    await dashboard.settled()
    empty = page.locator("#empty")
    await empty.wait_for()
    text = await empty.inner_text()
    assert "make demo" in text
    assert f'<script defer src="{dashboard.base}/tracker.js" data-shop-id="shop-new"></script>' in text
    assert (await dashboard.kpis())["sessions"][0] == 0
    await dashboard.finish()


async def test_screenshots_at_desktop_and_phone_width_in_light_and_dark(dashboard: Session,
                                                                        browser: Browser) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.sign_in()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-desktop.png", full_page=True)

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.wait_for_timeout(300)  # the charts resize after a short debounce
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways at phone width"
    await page.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)

    await page.emulate_media(color_scheme="dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 22)"
    await page.screenshot(path=ARTIFACTS / "dashboard-phone-dark.png", full_page=True)
    for name in ("dashboard-desktop.png", "dashboard-phone.png", "dashboard-phone-dark.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
    await dashboard.finish()


async def test_generating_insights_shows_cards_with_their_evidence(dashboard: Session) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.sign_in()
    insights = page.locator("#insights")
    await insights.locator(".notice", has_text="No insights yet").wait_for()
    async with page.expect_response(lambda r: urlsplit(r.url).path == "/api/insights/generate") as info:
        await page.click("#generate")
    response = await info.value
    assert response.status == 201
    assert json.loads(response.request.post_data or "{}") == {"shopId": SHOP}
    generated = (await response.json())["data"]
    assert generated
    cards = insights.locator(".insight")
    await cards.first.wait_for()
    assert await cards.count() == len(generated)
    for i, insight in enumerate(generated):
        card = cards.nth(i)
        assert await card.locator("h3").text_content() == insight["title"]
        assert insight["content"] in (await card.inner_text())
        evidence = dict(zip(await card.locator("dt").all_text_contents(), await card.locator("dd").all_text_contents(),
                            strict=True))
        assert evidence["Metric"] == insight["metadata"]["metric"]
        assert evidence["Method"] == insight["metadata"]["method"]
        assert "Baseline" in evidence and "Value" in evidence
        assert await card.locator("pre.sql").text_content() == insight["metadata"]["sql"]

    # They are stored: a fresh load lists them through GET /api/insights.
    async with page.expect_response(lambda r: urlsplit(r.url).path == "/api/insights") as info:
        await page.reload()
    listed = (await (await info.value).json())["data"]
    assert {i["id"] for i in listed} >= {i["id"] for i in generated}
    await insights.locator(".insight").first.wait_for()
    assert await insights.locator(".insight").count() == len(listed)
    await dashboard.finish()


async def test_the_builtin_chat_answers_with_a_table_and_explains_a_missing_provider(dashboard: Session) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.sign_in()
    await page.fill("#chat-input", "Top sources last 30 days")
    async with page.expect_response(lambda r: urlsplit(r.url).path == "/api/chat") as info:
        await page.press("#chat-input", "Enter")
    response = await info.value
    assert response.status == 200 and json.loads(response.request.post_data or "{}")["shopId"] == SHOP
    result = await response.json()
    assert result["provider"] == "builtin" and result["rows"]
    output = page.locator("#chat-output")
    await output.locator("table").wait_for()
    assert await output.locator(".chat-answer").text_content() == result["answer"]
    headers = await output.locator("table thead th").all_text_contents()
    assert headers == result["columns"]
    rows = await dashboard.table_rows("#chat-output")
    assert [row[0] for row in rows] == [str(row[0]) for row in result["rows"]]
    assert "direct" in [row[0] for row in rows]
    sql = await output.locator("pre.sql").first.text_content()
    assert sql == result["queries"][0]["sql"]

    # Without an LLM, a question the built-in answers do not cover says how to configure a provider.
    await page.fill("#chat-input", "Write me a poem about our customers")
    async with page.expect_response(lambda r: urlsplit(r.url).path == "/api/chat") as info:
        await page.press("#chat-input", "Enter")
    assert (await info.value).status == 503
    await output.locator(".notice-error").wait_for()
    text = await output.inner_text()
    assert "OPENAI_API_KEY" in text and "ANTHROPIC_API_KEY" in text
    assert "Top pages this month" in text
    await dashboard.finish()
