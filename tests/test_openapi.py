"""The OpenAPI document: valid 3.1, covers exactly the registered routes, and real answers match their schemas."""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from server import __version__
from server.auth import PUBLIC_ROUTES
from server.events import _ALIASES, MAX_DETAILS, MAX_EVENTS
from server.handlers.events import MAX_LIMIT
from tests.conftest import assert_error

DOC_URI = "urn:flowtel:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
CONTRACT_CODES = {
    "invalid_json", "validation_failed", "payload_too_large", "unsupported_media_type", "unauthorized", "forbidden",
    "not_found", "method_not_allowed", "rate_limited", "overloaded", "llm_unavailable", "llm_upstream",
    "internal_error",
}


# --- helpers ---------------------------------------------------------------------------------------------------------

async def fetch_doc(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    doc: dict[str, Any] = await resp.json()
    return doc


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def lookup(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for part in pointer.lstrip("/").split("/"):
        node = node[_unescape(part)]
    return node


def follow(doc: dict[str, Any], obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """Follow a local $ref (response, parameter or header object) to its target and that target's pointer."""
    while "$ref" in obj:
        target = obj["$ref"]
        assert target.startswith("#/"), target
        pointer = target[1:]
        obj = lookup(doc, pointer)
    return obj, pointer


def validator_at(doc: dict[str, Any], pointer: str) -> Draft202012Validator:
    """A 2020-12 validator for the schema at `pointer`, with every #/components ref resolved against the document."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#{pointer}"}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def assert_valid(doc: dict[str, Any], pointer: str, instance: Any) -> None:
    errors = sorted(validator_at(doc, pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def documented_response(doc: dict[str, Any], path: str, method: str, status: int) -> tuple[dict[str, Any], str]:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, which the document does not list"
    pointer = f"/paths/{_escape(path)}/{method.lower()}/responses/{status}"
    return follow(doc, responses[str(status)], pointer)


async def check_response(
    doc: dict[str, Any], resp: ClientResponse, response: dict[str, Any], pointer: str
) -> Any:
    """The answer's body matches the documented schema and the documented required headers are present."""
    for name, header in response.get("headers", {}).items():
        header, _ = follow(doc, header, "")
        if header.get("required"):
            assert name in resp.headers, f"{resp.status} answer lacks the documented {name} header"
    content = response.get("content")
    if content is None:
        assert await resp.read() == b""
        return None
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await resp.json()
    assert_valid(doc, f"{pointer}/content/application~1json/schema", body)
    return body


async def conforms(doc: dict[str, Any], resp: ClientResponse, path: str, method: str) -> Any:
    """Check an answer of `method path` against the response the document lists for its status."""
    response, pointer = documented_response(doc, path, method, resp.status)
    return await check_response(doc, resp, response, pointer)


def app_operations(client: TestClient) -> set[tuple[str, str]]:
    ops = set()
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        assert route.resource is not None
        # aiohttp writes {name} or {name:regex}; OpenAPI writes {name}.
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", route.resource.canonical)
        ops.add((route.method, path))
    return ops


def documented_operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): item[method]
        for path, item in doc["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }


def event(**fields: Any) -> dict[str, Any]:
    return {"shopId": "shop-a", "sessionId": "s-1", "eventType": "page_view", **fields}


# --- (a) a valid OpenAPI 3.1 document --------------------------------------------------------------------------------

async def test_served_document_is_valid_openapi_3_1(client: TestClient) -> None:
    doc = await fetch_doc(client)
    assert doc["openapi"].startswith("3.1.")
    validate(doc)
    assert doc["info"]["version"] == __version__
    assert_valid(doc, "/paths/~1api~1openapi.json/get/responses/200/content/application~1json/schema", doc)
    # The refs really resolve: a wrong instance fails, through a response $ref and a schema $ref alike.
    assert list(validator_at(doc, "/components/schemas/Event").iter_errors({"id": "x"}))
    _, pointer = documented_response(doc, "/api/events", "GET", 401)
    wrong = {"error": {"code": "forbidden", "message": "x"}}
    assert list(validator_at(doc, f"{pointer}/content/application~1json/schema").iter_errors(wrong))


# --- (b) route coverage ----------------------------------------------------------------------------------------------

async def test_every_registered_route_is_documented_and_nothing_else(client: TestClient) -> None:
    doc = await fetch_doc(client)
    registered = app_operations(client)
    documented = set(documented_operations(doc))
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations the app does not have"
    for (method, path), op in documented_operations(doc).items():
        params = [follow(doc, param, "")[0] for param in op.get("parameters", [])]
        path_params = {param["name"] for param in params if param["in"] == "path"}
        assert path_params == set(re.findall(r"\{(\w+)\}", path)), f"{method} {path}"


async def test_public_routes_are_exactly_those_without_security(client: TestClient) -> None:
    doc = await fetch_doc(client)
    assert doc["security"] == [{"bearer": []}]
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for (method, path), op in documented_operations(doc).items():
        public = (method, path) in PUBLIC_ROUTES or not path.startswith("/api/")
        assert (op.get("security", doc["security"]) == []) == public, f"{method} {path}"
        if not public:
            assert "401" in op["responses"], f"{method} {path} needs a token but documents no 401"


async def test_every_error_uses_the_shared_error_schema(client: TestClient) -> None:
    doc = await fetch_doc(client)
    codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
    assert set(codes) == CONTRACT_CODES
    for (method, path), op in documented_operations(doc).items():
        assert "500" in op["responses"], f"{method} {path}"
        for status, response in op["responses"].items():
            response, _ = follow(doc, response, "")
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert "#/components/schemas/Error" in str(schema), f"{method} {path} {status}"
            if status in ("429", "503"):
                header, _ = follow(doc, response["headers"]["Retry-After"], "")
                assert header["required"] is True


async def test_documented_limits_match_the_code(client: TestClient) -> None:
    doc = await fetch_doc(client)
    schemas = doc["components"]["schemas"]
    assert schemas["EventBatch"]["maxItems"] == MAX_EVENTS
    assert schemas["Error"]["properties"]["error"]["properties"]["details"]["maxItems"] == MAX_DETAILS
    assert doc["components"]["parameters"]["Limit"]["schema"]["maximum"] == MAX_LIMIT
    ingest = doc["paths"]["/api/events"]["post"]["description"]
    for canonical, aliases in _ALIASES.items():
        assert f"`{canonical}`" in ingest
        for alias in aliases:
            assert alias in ingest, alias


async def test_examples_match_their_schemas_and_are_accepted(client: TestClient) -> None:
    doc = await fetch_doc(client)
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            assert_valid(doc, f"/components/schemas/{name}", example)
    for name, response in doc["components"]["responses"].items():
        for example in response["content"]["application/json"].get("examples", {}).values():
            assert_valid(doc, f"/components/responses/{name}/content/application~1json/schema", example["value"])
    ingest = doc["paths"]["/api/events"]["post"]
    request = ingest["requestBody"]["content"]["application/json"]
    for key, example in request["examples"].items():
        assert_valid(doc, "/components/schemas/IngestBody", example["value"])
        resp = await client.post("/api/events", json=example["value"])
        assert resp.status == 201, (key, await resp.text())
        await conforms(doc, resp, "/api/events", "POST")
    for example in ingest["responses"]["201"]["content"]["application/json"]["examples"].values():
        assert_valid(doc, "/paths/~1api~1events/post/responses/201/content/application~1json/schema",
                     example["value"])


# --- (c) real answers match their documented schemas -----------------------------------------------------------------

async def test_ingestion_answers_match(client: TestClient) -> None:
    doc = await fetch_doc(client)
    event_id = str(uuid.uuid4())
    single = event(id=event_id.upper(), eventType="Product Added", url="https://shop.example/p/1?x=1",
                   properties={"productId": "p1", "price": 9.5})
    resp = await client.post("/api/events", json=single, headers={"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone "
                             "OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"})
    assert resp.status == 201
    stored = await conforms(doc, resp, "/api/events", "POST")
    assert stored["id"] == event_id and stored["eventType"] == "add_to_cart"

    resp = await client.post("/api/events", json=single)
    assert resp.status == 200
    assert await conforms(doc, resp, "/api/events", "POST") == stored

    batch = [event(id=event_id), event(sessionId="s-2"), event(eventType="checkout_started")]
    resp = await client.post("/api/events", json=batch, headers={"Content-Type": "text/plain"})
    assert resp.status == 201
    result = await conforms(doc, resp, "/api/events", "POST")
    assert [r["status"] for r in result["results"]] == ["duplicate", "created", "created"]

    envelope = {"events": [event()], "sentAt": "2026-11-26T04:10:00Z"}
    resp = await client.post("/api/events", json=envelope)
    assert resp.status == 201
    await conforms(doc, resp, "/api/events", "POST")


async def test_ingestion_errors_match(client: TestClient) -> None:
    doc = await fetch_doc(client)
    resp = await client.post("/api/events", json=[event(), event(shopId="bad shop", sessionId=""), 7])
    error = await assert_error(resp, 400, "validation_failed")
    await conforms(doc, resp, "/api/events", "POST")
    assert [(d["index"], d["field"]) for d in error["details"]] == [(1, "shopId"), (1, "sessionId"), (2, "event")]

    resp = await client.post("/api/events", json=event(timestamp="yesterday"))
    error = await assert_error(resp, 400, "validation_failed")
    await conforms(doc, resp, "/api/events", "POST")
    assert error["details"] == [{"field": "timestamp", "message": error["details"][0]["message"]}]

    resp = await client.post("/api/events", data=b"{not json", headers={"Content-Type": "application/json"})
    await assert_error(resp, 400, "invalid_json")
    await conforms(doc, resp, "/api/events", "POST")

    resp = await client.post("/api/events", data=b"{}", headers={"Content-Type": "application/xml"})
    await assert_error(resp, 415, "unsupported_media_type")
    await conforms(doc, resp, "/api/events", "POST")

    resp = await client.post("/api/events", json=[event()] * (MAX_EVENTS + 1))
    await assert_error(resp, 413, "payload_too_large")
    await conforms(doc, resp, "/api/events", "POST")


async def test_listing_answers_match(client: TestClient, admin: dict[str, str]) -> None:
    doc = await fetch_doc(client)
    resp = await client.post("/api/events", json=[event(sessionId=f"s-{i}") for i in range(3)])
    assert resp.status == 201

    resp = await client.get("/api/events", params={"shopId": "shop-a", "limit": "2"}, headers=admin)
    assert resp.status == 200
    page = await conforms(doc, resp, "/api/events", "GET")
    assert len(page["data"]) == 2 and page["total"] == 3 and page["nextCursor"] is not None

    resp = await client.get("/api/events", params={"shopId": "shop-a", "limit": "2", "cursor": page["nextCursor"]},
                            headers=admin)
    assert resp.status == 200
    last = await conforms(doc, resp, "/api/events", "GET")
    assert len(last["data"]) == 1 and last["nextCursor"] is None and last["page"] == 2

    resp = await client.get(f"/api/events/{page['data'][0]['id']}", headers=admin)
    assert resp.status == 200
    assert await conforms(doc, resp, "/api/events/{id}", "GET") == page["data"][0]

    resp = await client.get("/api/events", params={"limit": "101"}, headers=admin)
    await assert_error(resp, 400, "validation_failed")
    await conforms(doc, resp, "/api/events", "GET")

    resp = await client.get("/api/events")
    await assert_error(resp, 401, "unauthorized")
    await conforms(doc, resp, "/api/events", "GET")

    resp = await client.get(f"/api/events/{uuid.uuid4()}", headers=admin)
    await assert_error(resp, 404, "not_found")
    await conforms(doc, resp, "/api/events/{id}", "GET")


async def test_token_answers_match(client: TestClient, admin: dict[str, str]) -> None:
    doc = await fetch_doc(client)
    resp = await client.post("/api/tokens", json={"shopId": "shop-a", "name": "dashboard"}, headers=admin)
    assert resp.status == 201
    created = await conforms(doc, resp, "/api/tokens", "POST")
    shop = {"Authorization": f"Bearer {created['token']}"}

    resp = await client.get("/api/tokens", headers=shop)
    assert resp.status == 200
    listed = await conforms(doc, resp, "/api/tokens", "GET")
    assert listed["data"] == [{k: v for k, v in created.items() if k != "token"}]

    resp = await client.get("/api/events", params={"shopId": "shop-b"}, headers=shop)
    await assert_error(resp, 403, "forbidden")
    await conforms(doc, resp, "/api/events", "GET")

    resp = await client.post("/api/tokens", json={"name": "no shop"}, headers=admin)
    await assert_error(resp, 400, "validation_failed")
    await conforms(doc, resp, "/api/tokens", "POST")

    resp = await client.delete(f"/api/tokens/{created['id']}", headers=admin)
    assert resp.status == 204
    await conforms(doc, resp, "/api/tokens/{id}", "DELETE")

    resp = await client.delete(f"/api/tokens/{created['id']}", headers=admin)
    await assert_error(resp, 404, "not_found")
    await conforms(doc, resp, "/api/tokens/{id}", "DELETE")

    resp = await client.get("/api/tokens", headers=shop)
    await assert_error(resp, 401, "unauthorized")
    await conforms(doc, resp, "/api/tokens", "GET")


async def test_health_and_route_errors_match(client: TestClient) -> None:
    doc = await fetch_doc(client)
    resp = await client.post("/api/events", json=event())
    assert resp.status == 201

    resp = await client.get("/healthz")
    assert resp.status == 200
    health = await conforms(doc, resp, "/healthz", "GET")
    assert health["mirror"] == {"lagEvents": 1, "lastSyncAt": None}

    resp = await client.put("/api/events")
    await assert_error(resp, 405, "method_not_allowed")
    await check_response(doc, resp, *follow(doc, {"$ref": "#/components/responses/MethodNotAllowed"}, ""))

    resp = await client.get("/api/no-such-route")
    await assert_error(resp, 404, "not_found")
    await check_response(doc, resp, *follow(doc, {"$ref": "#/components/responses/NotFound"}, ""))


async def test_stats_and_query_answers_match(client: TestClient, admin: dict[str, str]) -> None:
    doc = await fetch_doc(client)
    purchase = {"orderId": "o-1", "value": 20, "currency": "EUR", "items": [{"productId": "p1", "price": 10,
                                                                            "quantity": 2}]}
    resp = await client.post("/api/events", json=[
        event(url="https://shop.example/p/1?utm_source=news"),
        event(eventType="product_view", properties={"productId": "p1", "name": "Mug", "price": 10}),
        event(eventType="purchase", properties=purchase),
    ])
    assert resp.status == 201

    params = {"shopId": "shop-a", "period": "7d", "compare": "previous", "includeBots": "true"}
    resp = await client.get("/api/stats", params=params, headers=admin)
    assert resp.status == 200, await resp.text()
    stats = await conforms(doc, resp, "/api/stats", "GET")
    assert stats["totals"]["events"] == 3

    query = {"shopId": "shop-a", "metrics": ["events", "revenue", "bounceRate"], "dimensions": ["eventType"],
             "includeBots": True, "orderBy": [["events", "desc"]]}
    resp = await client.post("/api/query", json=query, headers=admin)
    assert resp.status == 200, await resp.text()
    result = await conforms(doc, resp, "/api/query", "POST")
    assert result["meta"]["total"] == 3

    resp = await client.get("/api/stats", params={"period": "fortnight"}, headers=admin)
    await assert_error(resp, 400, "validation_failed")
    await conforms(doc, resp, "/api/stats", "GET")

    resp = await client.get("/metrics")
    assert resp.status == 200
    documented, _ = documented_response(doc, "/metrics", "GET", 200)
    assert resp.headers["Content-Type"].split(";")[0] in documented["content"]
