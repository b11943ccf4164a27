"""Security: no route lets a caller read what is not theirs.

A real `python -m server` holds two shops whose events, products and token names carry distinctive markers. The route
list is read from the app's own router, so a route added later is covered without touching this file. Every route is
called with no token, malformed and unknown tokens, a revoked token and the other shop's token, and with path and
parameter tricks (`../`, percent-encoded ids and slashes, `shopId` twice, `shopId` in the body vs the query, case
variants, overlong values, NUL bytes). Answers are 401/403/404/400 (405 for a method a route lacks) in the one error
shape, and the other shop's marker never appears in any response body. Requests go out byte for byte as written
(http.client, no URL normalisation), so the server sees the tricks themselves.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from server.app import create_app
from server.auth import PUBLIC_ROUTES
from tests.conftest import make_settings
from tests.fuzzing import ADMIN_TOKEN, Answer, ServerProcess, admin_headers, create_shop_token

SHOP_A, SHOP_B = "shop-a", "shop-b"
# Distinctive strings that exist only inside each shop's data (never in a shop id, so an echoed shopId is no leak).
MARK_A, MARK_B = "mrkA7f3c9e1d", "mrkB2b8d4a6f"
MARKS = {SHOP_A: MARK_A, SHOP_B: MARK_B}

pytestmark = pytest.mark.timeout(120)


def router_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the app registers, CORS preflights aside."""
    app = create_app(make_settings(Path("/nonexistent-never-opened")))
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                   if r.method != "OPTIONS" and r.resource is not None})


ROUTES = router_routes()
PROTECTED = [(m, p) for m, p in ROUTES if p.startswith("/api/") and (m, p) not in PUBLIC_ROUTES]
PUBLIC = [(m, p) for m, p in ROUTES if (m, p) not in PROTECTED]


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]  # shop → secret
    token_ids: dict[str, str]  # shop → token id
    event_ids: dict[str, list[str]]  # shop → its event ids
    revoked: str  # a shop-a token that was revoked


def plant(server: ServerProcess, shop: str) -> list[str]:
    mark = MARKS[shop]
    ids = [str(uuid.uuid4()) for _ in range(4)]
    events = [
        {"id": ids[0], "shopId": shop, "sessionId": f"sess-{mark}", "eventType": "page_view",
         "url": f"https://{shop}.example/{mark}?utm_source={mark}&utm_campaign={mark}",
         "referrer": f"https://{mark}.example/", "properties": {"secret": mark}},
        {"id": ids[1], "shopId": shop, "sessionId": f"sess-{mark}", "eventType": "product_view",
         "url": f"https://{shop}.example/p/{mark}", "properties": {"productId": mark, "name": mark, "price": 1}},
        {"id": ids[2], "shopId": shop, "sessionId": f"sess-{mark}", "eventType": "purchase", "eventName": mark,
         "properties": {"orderId": mark, "value": 10, "items": [{"id": mark, "name": mark, "quantity": 1}]}},
        {"id": ids[3], "shopId": shop, "sessionId": f"sess2-{mark}", "eventType": f"custom_{mark}",
         "userAgent": f"Mozilla/5.0 {mark}"},
    ]
    answer = server.request("POST", "/api/events", orjson.dumps(events), {"Content-Type": "application/json"})
    assert answer.status == 201, answer.body
    return ids


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = ServerProcess(tmp_path_factory.mktemp("security"))
    server.start()
    try:
        event_ids = {shop: plant(server, shop) for shop in (SHOP_A, SHOP_B)}
        token_ids, tokens = {}, {}
        for shop in (SHOP_A, SHOP_B):
            token_ids[shop], tokens[shop] = create_shop_token(server, shop, f"token-{MARKS[shop]}")
        revoked_id, revoked = create_shop_token(server, SHOP_A, "to-revoke")
        assert server.request("DELETE", f"/api/tokens/{revoked_id}", headers=admin_headers()).status == 204
        yield World(server, tokens, token_ids, event_ids, revoked)
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fill(path: str, world: World, shop: str = SHOP_B) -> str:
    """A concrete path for a template: ids are those of `shop`'s event or token (the other shop's, by default)."""
    value = world.token_ids[shop] if path.startswith("/api/tokens/") else world.event_ids[shop][0]
    # Any path parameter ({id}, {conversationId}, ...): a real id of that shop, never the template's braces.
    return re.sub(r"\{[^}/]+\}", value, path)


def body_for(method: str) -> bytes | None:
    return orjson.dumps({"shopId": SHOP_B, "metrics": ["events"], "name": "x"}) if method in ("POST", "PATCH",
                                                                                              "PUT") else None


def assert_no_leak(answer: Answer, *marks: str) -> None:
    text = answer.body.decode("utf-8", errors="replace")
    for mark in marks:
        assert mark not in text, f"{mark} leaked: {text[:500]}"


def assert_error_shape(answer: Answer, statuses: tuple[int, ...]) -> None:
    assert answer.status in statuses, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json; charset=utf-8", answer.headers
    doc = answer.json()
    assert set(doc) == {"error"} and set(doc["error"]) <= {"code", "message", "details"}
    assert doc["error"]["message"]


def call(world: World, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> Answer:
    hdrs = dict(headers or {})
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    return world.server.request(method, path, body, hdrs)


# ---------------------------------------------------------------------------------------------- the route list


def test_the_router_has_the_routes_this_suite_knows_to_be_protected() -> None:
    # Not a list to keep in sync: a sanity check that enumeration works and found the contract's read routes.
    assert {("GET", "/api/events"), ("GET", "/api/events/{id}"), ("GET", "/api/stats"), ("POST", "/api/query"),
            ("GET", "/api/tokens"), ("POST", "/api/tokens"), ("DELETE", "/api/tokens/{id}")} <= set(PROTECTED)
    assert ("POST", "/api/events") in PUBLIC


BAD_TOKENS = {
    "none": {},
    "empty-bearer": {"Authorization": "Bearer"},
    "blank-bearer": {"Authorization": "Bearer    "},
    "basic-scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "unknown": bearer("ft_" + "A" * 43),
    "admin-prefix": bearer(ADMIN_TOKEN[:-1]),
    "admin-plus-suffix": bearer(ADMIN_TOKEN + "x"),
    "admin-uppercased": bearer(ADMIN_TOKEN.upper()),
    "token-in-query-only": {},
}


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_no_or_bad_token_is_401_and_shows_nothing(world: World, route: tuple[str, str], kind: str) -> None:
    method, template = route
    path = fill(template, world)
    if kind == "token-in-query-only":
        path += ("&" if "?" in path else "?") + f"token={ADMIN_TOKEN}&access_token={ADMIN_TOKEN}"
    answer = call(world, method, path, BAD_TOKENS[kind], body_for(method))
    assert_error_shape(answer, (401,))
    assert answer.json()["error"]["code"] == "unauthorized"
    assert_no_leak(answer, MARK_A, MARK_B)


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_a_revoked_token_is_401(world: World, route: tuple[str, str]) -> None:
    method, template = route
    answer = call(world, method, fill(template, world, SHOP_A), bearer(world.revoked), body_for(method))
    assert_error_shape(answer, (401,))
    assert_no_leak(answer, MARK_A, MARK_B)


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_another_shops_token_never_sees_this_shops_data(world: World, route: tuple[str, str]) -> None:
    """Shop A's token aimed at shop B's ids, shopId and body: refused, or an answer about shop A only."""
    method, template = route
    path = fill(template, world, SHOP_B)
    tries = [path, f"{path}?shopId={SHOP_B}", f"{path}?shopId={SHOP_A}&shopId={SHOP_B}",
             f"{path}?shopId={SHOP_B}&shopId={SHOP_A}", f"{path}?shopid={SHOP_B}&ShopId={SHOP_B}",
             f"{path}?shopId={SHOP_B.upper()}", f"{path}?shopId=*", f"{path}?shopId=%25"]
    for target in tries:
        answer = call(world, method, target, bearer(world.tokens[SHOP_A]), body_for(method))
        assert answer.status in (200, 201, 204, 400, 403, 404, 405), (target, answer.status, answer.body[:300])
        if answer.status >= 400:
            assert_error_shape(answer, (400, 403, 404, 405))
        assert_no_leak(answer, MARK_B)


@pytest.mark.parametrize("route", PUBLIC, ids=[f"{m} {p}" for m, p in PUBLIC])
def test_public_routes_show_no_shop_data(world: World, route: tuple[str, str]) -> None:
    method, template = route
    body = orjson.dumps({"shopId": SHOP_B, "sessionId": "probe", "eventType": "probe"}) if method == "POST" else None
    answer = call(world, method, fill(template, world), {}, body)
    assert answer.status < 500
    assert_no_leak(answer, MARK_A, MARK_B)


# ---------------------------------------------------------------------------------------------- by route


def test_event_by_id_tricks_are_404(world: World) -> None:
    a_token = bearer(world.tokens[SHOP_A])
    b_id = world.event_ids[SHOP_B][0]
    # The shop's own event is readable, so the 404s below are about the id, not a broken route.
    own = call(world, "GET", f"/api/events/{world.event_ids[SHOP_A][0]}", a_token)
    assert own.status == 200 and MARK_A in own.body.decode()
    for path in (f"/api/events/{b_id}", f"/api/events/{b_id.upper()}", f"/api/events/{quote(b_id, safe='')}",
                 f"/api/events/{b_id}%00", f"/api/events/{b_id}%2F..", f"/api/events/%2e%2e%2f{b_id}",
                 f"/api/events/{'%7B'}{b_id}{'%7D'}", f"/api/events/{b_id}?shopId={SHOP_B}",
                 f"/api/events/..%2F..%2Fapi%2Fevents%2F{b_id}", "/api/events/%2e%2e", "/api/events/" + "a" * 5000):
        answer = call(world, "GET", path, a_token)
        assert_error_shape(answer, (400, 404))
        assert_no_leak(answer, MARK_B)


def test_dot_segments_and_case_variants_do_not_reach_another_route(world: World) -> None:
    a_token = bearer(world.tokens[SHOP_A])
    for path in ("/api/events/../tokens", "/api/events/%2e%2e/tokens", "/api/events/..%2ftokens",
                 "/api/stats/../events", "//api/events", "/api//events", "/API/EVENTS", "/Api/Stats",
                 f"/api/events/./{world.event_ids[SHOP_B][0]}", "/api/./tokens", "/api/tokens/../tokens"):
        for headers in ({}, a_token):
            answer = call(world, "GET", path, headers)
            assert answer.status in (200, 401, 404, 400), (path, answer.status, answer.body[:200])
            if answer.status >= 400:
                assert_error_shape(answer, (400, 401, 404))
            # With no token nothing is shown at all; with A's token nothing of B's.
            assert_no_leak(answer, MARK_B, *([MARK_A] if not headers else []))


def test_shop_id_twice_in_the_query_never_widens_the_scope(world: World) -> None:
    a_token = bearer(world.tokens[SHOP_A])
    for path in ("/api/events", "/api/stats?period=all"):
        sep = "&" if "?" in path else "?"
        for query in (f"shopId={SHOP_A}&shopId={SHOP_B}", f"shopId={SHOP_B}&shopId={SHOP_A}",
                      f"shopId={SHOP_A}%26shopId%3D{SHOP_B}", f"shopId={SHOP_A},{SHOP_B}",
                      f"shopId[]={SHOP_B}", f"shopId={SHOP_A}%00{SHOP_B}", f"shopId=%20{SHOP_B}",
                      f"shopId={SHOP_B}%20", "shopId=", "shopId=" + "a" * 5_000, "shopId=%00"):
            answer = call(world, "GET", f"{path}{sep}{query}", a_token)
            assert answer.status in (200, 400, 403), (query, answer.status, answer.body[:200])
            if answer.status >= 400:
                assert_error_shape(answer, (400, 403))
            assert_no_leak(answer, MARK_B)
    # And the admin's duplicate-shopId listing is scoped to one shop, never both.
    listing = call(world, "GET", f"/api/events?shopId={SHOP_A}&shopId={SHOP_B}", admin_headers())
    assert listing.status == 200
    assert {e["shopId"] for e in listing.json()["data"]} == {SHOP_A}


def test_shop_id_in_the_body_is_what_counts_for_the_query_api(world: World) -> None:
    a_token = bearer(world.tokens[SHOP_A])
    query = {"metrics": ["events"], "dimensions": ["path"], "dateRange": "all"}
    # Body names B, the query string names A: refused, not read as A.
    answer = call(world, "POST", f"/api/query?shopId={SHOP_A}", a_token, orjson.dumps({**query, "shopId": SHOP_B}))
    assert_error_shape(answer, (403,))
    # Body names A, the query string names B: A's data only.
    answer = call(world, "POST", f"/api/query?shopId={SHOP_B}", a_token, orjson.dumps({**query, "shopId": SHOP_A}))
    assert answer.status == 200 and MARK_A in answer.body.decode()
    assert_no_leak(answer, MARK_B)
    # Duplicate keys in the JSON body: whichever wins, the answer is A's or a refusal.
    raw = b'{"metrics": ["events"], "dimensions": ["path"], "dateRange": "all", "shopId": "shop-a", "shopId": "shop-b"}'
    answer = call(world, "POST", "/api/query", a_token, raw)
    assert answer.status in (200, 403)
    assert_no_leak(answer, MARK_B)
    for shop in (SHOP_B.upper(), f" {SHOP_B}", f"{SHOP_B}\x00", "*", "%", "a" * 10_000, ["shop-b"], {"$ne": "x"}):
        answer = call(world, "POST", "/api/query", a_token, orjson.dumps({**query, "shopId": shop}))
        assert_error_shape(answer, (400, 403))
        assert_no_leak(answer, MARK_B)


def test_admin_only_routes_refuse_a_shop_token_and_leave_the_other_shop_alone(world: World) -> None:
    a_token = bearer(world.tokens[SHOP_A])
    answer = call(world, "DELETE", f"/api/tokens/{world.token_ids[SHOP_B]}", a_token)
    assert_error_shape(answer, (403,))
    answer = call(world, "POST", "/api/tokens", a_token, orjson.dumps({"shopId": SHOP_B, "name": "steal"}))
    assert_error_shape(answer, (403,))
    # B's token still works and still sees B.
    answer = call(world, "GET", f"/api/events?shopId={SHOP_B}", bearer(world.tokens[SHOP_B]))
    assert answer.status == 200 and MARK_B in answer.body.decode()
    # A's token list shows A's token only.
    listing = call(world, "GET", "/api/tokens", a_token)
    assert listing.status == 200
    assert {t["shopId"] for t in listing.json()["data"]} == {SHOP_A}
    assert_no_leak(listing, MARK_B)


def test_a_shop_token_reads_its_own_shop_everywhere(world: World) -> None:
    """The other side of the refusals: the markers are findable, so their absence above means something."""
    a_token = bearer(world.tokens[SHOP_A])
    for path in ("/api/events", f"/api/events?shopId={SHOP_A}", "/api/stats?period=all", "/api/tokens"):
        answer = call(world, "GET", path, a_token)
        assert answer.status == 200, answer.body[:300]
        assert MARK_A in answer.body.decode(), path
        assert_no_leak(answer, MARK_B)


def test_malformed_http_is_refused_by_the_parser_and_shows_nothing(world: World) -> None:
    """Request lines past 128 KiB, headers past 8190 bytes or with a NUL byte never reach the app: aiohttp's
    HTTP parser answers 400 itself, as plain text (not the JSON error shape: that happens before any middleware)."""
    a_token = bearer(world.tokens[SHOP_A])
    attempts = [
        ("/api/events?sessionId=" + "s" * 200_000, a_token),
        ("/api/events?shopId=" + "a" * 140_000, a_token),
        ("/api/events/" + "e" * 200_000, a_token),
        ("/api/events", {**a_token, "X-Padding": "p" * 20_000}),
        ("/api/events", bearer(ADMIN_TOKEN + "\x00")),
        ("/api/events", bearer(world.tokens[SHOP_A] + "\x00" + ADMIN_TOKEN)),
    ]
    for path, headers in attempts:
        answer = call(world, "GET", path, headers)
        assert answer.status == 400, (path[:60], answer.status)
        assert_no_leak(answer, MARK_A, MARK_B)
    assert world.server.alive()
