"""Property-based tests (hypothesis) of event parsing and the query builder.

Event parsing (`decode_body` → `parse_body` → `parse_events`): any body gives events or an ApiError with 400/413/415
and its code, never another exception; structured strategies build valid-looking events and batches with one field
perturbed (wrong types, limits just past the edge, control characters, aliases in any case, nested and huge
properties, unicode, huge numbers, gzip), and the result must agree with an oracle of what is valid. Through HTTP on a
real server the same bodies are never a 5xx, and the SQLite file grows by exactly what was acknowledged: a rejected
batch stores none of its events.

The query builder (`parse_query` → `build_query_sql`/`build_count_sql`): any JSON document gives a Query or a
QueryError; for valid queries the SQL text depends only on the query's shape (user text is always bound, never
pasted), every referenced parameter is bound, and the SQL runs on DuckDB over a small real warehouse.

Settings are derandomised (the same examples on every run) with no deadline, since CPUs are shared.
"""

from __future__ import annotations

import gzip
import json
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from analytics import sqlitelib
from analytics.metrics import DIMENSIONS, METRICS
from analytics.mirror import Mirror
from analytics.query import (
    FILTER_OPS,
    MAX_FILTER_VALUES,
    MAX_LIMIT,
    MAX_OFFSET,
    Query,
    QueryError,
    Scope,
    Sql,
    build_count_sql,
    build_query_sql,
    parse_query,
)
from analytics.warehouse import Warehouse
from server.errors import ApiError
from server.events import (
    _ALIASES,
    CANONICAL_TYPES,
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_EVENTS,
    MAX_PROPERTIES_BYTES,
    MIN_TIMESTAMP_MS,
    NewEvent,
    RequestInfo,
    decode_body,
    is_uuid,
    is_valid_shop_id,
    normalise_event_type,
    parse_body,
    parse_events,
)
from server.store import INSERT_EVENT, prepare_database
from tests.fuzzing import ADMIN_TOKEN, ServerProcess, stored_count, stored_ids

# The clock every parsed event is checked against. Through HTTP the server reads the wall clock, which is later than
# this, so a timestamp valid here is valid there too (the limits are 2000-01-01 and one hour ahead of the clock).
NOW_MS = time.time_ns() // 1_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
INFO = RequestInfo(user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", client_ip="203.0.113.9",
                   country="DE", now_ms=NOW_MS, salt=b"s" * 32)
ERRORS = {400: {"invalid_json", "validation_failed"}, 413: {"payload_too_large"}, 415: {"unsupported_media_type"}}
EVENT_FIELDS = {"id", "shopId", "sessionId", "eventType", "eventName", "properties", "timestamp", "url", "referrer",
                "userAgent", "event", "events", "sentAt"}

PURE = settings(derandomize=True, deadline=None, database=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
THROUGH_HTTP = settings(PURE, max_examples=100)
ON_DUCKDB = settings(PURE, max_examples=60)


def assert_api_error(exc: ApiError, statuses: tuple[int, ...] = (400, 413, 415)) -> None:
    """A clear 4xx: a known status, the code that goes with it, a sentence, well-formed details."""
    assert exc.status in statuses, (exc.status, exc.code, exc.message)
    assert exc.code in ERRORS[exc.status], (exc.status, exc.code)
    assert isinstance(exc.message, str) and exc.message.strip()
    for detail in exc.details or []:
        assert set(detail) <= {"index", "field", "message"}, detail
        assert detail["field"] in EVENT_FIELDS, detail
        assert isinstance(detail["message"], str) and detail["message"]


# ---------------------------------------------------------------------------------------------- event strategies

# What str.isprintable() accepts: no control, format, surrogate, private-use, unassigned or separator characters
# other than the plain space.
printable_char = st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
                               include_characters=" ")
any_char = st.characters(codec="utf-8")


def printable(max_size: int) -> st.SearchStrategy[str]:
    return st.text(printable_char, min_size=1, max_size=max_size).filter(lambda s: bool(s.strip()))


def case_variants(name: str) -> st.SearchStrategy[str]:
    """An alias as a tracker might send it: any letter case, padded with spaces."""
    return st.tuples(st.lists(st.booleans(), min_size=len(name), max_size=len(name)),
                     st.sampled_from(["", " ", "  "]), st.sampled_from(["", " "])).map(
        lambda t: t[1] + "".join(c.upper() if up else c.lower() for c, up in zip(name, t[0], strict=True)) + t[2])


ALIAS_NAMES = sorted({name for canonical, names in _ALIASES.items() for name in (canonical, *names)})
shop_ids = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
event_types = st.one_of(st.sampled_from(ALIAS_NAMES).flatmap(case_variants), printable(100))
json_scalars = st.one_of(
    st.none(), st.booleans(), st.text(any_char, max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    # Past int64: orjson reads these as doubles, and they must still round-trip as JSON.
    st.integers(min_value=2**64, max_value=10**30),
)
small_json = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(any_char, max_size=8), inner, max_size=4)), max_leaves=12)
properties_ok = st.dictionaries(st.text(any_char, max_size=12), small_json, max_size=6)
instants = st.datetimes(min_value=datetime(2000, 1, 2), max_value=NOW.replace(tzinfo=None) - timedelta(minutes=1))


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """A valid instant in any of the accepted spellings: Z, an offset, no offset (UTC), with or without fraction."""
    moment = draw(instants).replace(tzinfo=UTC)
    form = draw(st.sampled_from(["Z", "offset", "naive", "seconds"]))
    if form == "Z":
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if form == "offset":
        hours = draw(st.integers(-12, 14))
        return moment.astimezone(timezone(timedelta(hours=hours))).isoformat()
    if form == "naive":
        return moment.replace(tzinfo=None).isoformat(timespec="microseconds")
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "shopId": draw(shop_ids),
        "sessionId": draw(printable(128)),
        "eventType": draw(event_types),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "id": st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()])),
        "eventName": st.text(any_char, max_size=200),
        "properties": properties_ok,
        "timestamp": timestamps(),
        "url": st.one_of(st.text(any_char, max_size=60), st.just("https://shop.example/p/1?utm_source=x")),
        "referrer": st.text(any_char, max_size=60),
        "userAgent": st.text(any_char, max_size=60),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        event[name] = draw(optional[name])
    return event


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"n": node}
    return node


wrong_types = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                max_size=2))
# Values that make a field invalid, per field ("missing" deletes a required field).
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "shopId": st.one_of(st.sampled_from(["", "shop/../x", "shöp", "shop id", "a" * 65, "%2e%2e", "shop\x00"]),
                        st.text(any_char, min_size=1, max_size=80).filter(lambda s: not is_valid_shop_id(s)),
                        wrong_types, st.just("missing")),
    "sessionId": st.one_of(st.sampled_from(["", "   ", "a\x00b", "\n", "tab\there", "a" * 129]), wrong_types,
                           st.just("missing")),
    "eventType": st.one_of(st.sampled_from(["", " ", "x" * 101, "page\u200bview", "page\nview"]), wrong_types,
                           st.just("missing")),
    "eventName": st.one_of(st.just("n" * 201), wrong_types),
    "url": st.one_of(st.just("u" * 2049), wrong_types),
    "referrer": st.one_of(st.just("r" * 2049), wrong_types),
    "userAgent": st.one_of(st.just("a" * 1025), wrong_types),
    "properties": st.one_of(st.sampled_from([[], "text", 1, True]), st.integers(MAX_DEPTH + 1, 40).map(nested),
                            st.just({"big": "x" * MAX_PROPERTIES_BYTES})),
    "timestamp": st.one_of(
        st.sampled_from(["yesterday", "", "2026-13-01T00:00:00Z", "1999-12-31T23:59:59Z", "9999-12-31T23:59:59Z",
                         "0001-01-01T00:00:00+14:00", "2026-11-26T04:15:17+25:00", "x" * 41]),
        st.datetimes(min_value=NOW.replace(tzinfo=None) + timedelta(hours=2)).map(lambda d: d.isoformat() + "Z"),
        wrong_types),
    "id": st.one_of(st.sampled_from(["not-a-uuid", "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8", "{" + "0" * 32 + "}"]),
                    wrong_types),
}


@dataclass
class Batch:
    """A request body and the oracle's verdict: the (index, field) pairs that must be reported, or none."""

    doc: Any
    single: bool
    broken: set[tuple[int | None, str]]


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    """One event, an array or an envelope; at most one event (or the envelope) perturbed in one field."""
    shape = draw(st.sampled_from(["single", "array", "envelope"]))
    count = 1 if shape == "single" else draw(st.integers(1, 6))
    events: list[Any] = [draw(valid_events()) for _ in range(count)]
    broken: set[tuple[int | None, str]] = set()
    index: int | None = None if shape == "single" else draw(st.integers(0, count - 1))
    perturb = draw(st.sampled_from(["none", "field", "field", "field", "not-an-object", "sentAt"]))
    if perturb == "not-an-object" and shape != "single":
        assert index is not None
        events[index] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.none(), max_size=2)))
        broken.add((index, "event"))
    elif perturb == "field":
        field = draw(st.sampled_from(sorted(INVALID)))
        value = draw(INVALID[field])
        target = events[index or 0]
        if value == "missing":
            target.pop(field, None)
        else:
            target[field] = value
        broken.add((index, field))
    doc: Any
    if shape == "single":
        doc = events[0]
    elif shape == "array":
        doc = events
    else:
        doc = {"events": events}
        if perturb == "sentAt":
            doc["sentAt"] = draw(st.one_of(st.sampled_from(["soon", "", "2026-02-30T00:00:00Z"]), wrong_types))
            broken.add((None, "sentAt"))
        elif draw(st.booleans()):
            # Within the 60 s tolerance, so no shift: the oracle stays exact.
            doc["sentAt"] = (NOW + timedelta(seconds=draw(st.integers(-50, 50)))).isoformat()
    return Batch(doc, shape == "single", broken)


def encode(doc: Any) -> bytes:
    # The stdlib writes integers of any size, which orjson cannot; ensure_ascii=False keeps unicode as UTF-8.
    return json.dumps(doc, ensure_ascii=False).encode()


def ingest(raw: bytes, content_type: str | None = "application/json", encoding: str | None = None
           ) -> list[NewEvent]:
    return parse_events(parse_body(decode_body(raw, content_type, encoding)), INFO)


def check_accepted(batch: Batch, events: list[NewEvent]) -> None:
    """What a valid batch must become: one event per input, each normalised as documented."""
    inputs = [batch.doc] if batch.single else (batch.doc if isinstance(batch.doc, list) else batch.doc["events"])
    assert len(events) == len(inputs)
    for raw, stored in zip(inputs, events, strict=True):
        assert stored.shop_id == raw["shopId"] and is_valid_shop_id(stored.shop_id)
        assert stored.session_id == raw["sessionId"]
        assert stored.event_type == normalise_event_type(raw["eventType"])
        if raw["eventType"].strip().lower() in {n.lower() for n in ALIAS_NAMES}:
            assert stored.event_type in CANONICAL_TYPES
        assert stored.event_name == raw.get("eventName", raw["eventType"])
        assert is_uuid(stored.id) and stored.id == stored.id.lower()
        if "id" in raw:
            assert stored.id == raw["id"].lower()
        props = orjson.loads(stored.properties)
        assert isinstance(props, dict) and len(stored.properties.encode()) <= MAX_PROPERTIES_BYTES
        assert MIN_TIMESTAMP_MS <= stored.timestamp <= NOW_MS + 3600_000
        for name, attr in (("url", stored.url), ("referrer", stored.referrer)):
            assert attr == raw.get(name)


# ---------------------------------------------------------------------------------------------- event parsing, pure


@PURE
@given(batch=batches(), gzipped=st.booleans(),
       content_type=st.sampled_from([None, "application/json", "text/plain;charset=UTF-8", "APPLICATION/JSON"]))
def test_parsing_agrees_with_the_oracle(batch: Batch, gzipped: bool, content_type: str | None) -> None:
    raw = encode(batch.doc)
    assume(len(raw) <= MAX_BODY_BYTES)
    body = gzip.compress(raw, mtime=0) if gzipped else raw
    try:
        events = ingest(body, content_type, "gzip" if gzipped else None)
    except ApiError as exc:
        event("rejected")
        assert_api_error(exc, (400,))
        assert exc.code == "validation_failed"
        assert batch.broken, f"a valid batch was rejected: {exc.message} {exc.details}"
        reported = {(d.get("index"), d["field"]) for d in exc.details or []}
        assert batch.broken <= reported, (batch.broken, exc.details)
        return
    event("accepted")
    assert not batch.broken, f"an invalid batch was accepted: {batch.broken}"
    check_accepted(batch, events)


content_types = st.one_of(st.none(), st.sampled_from(["application/json", "text/plain", "Application/JSON; x=1",
                                                      "application/xml", "multipart/form-data", "", ";", "text/html"]),
                          st.text(max_size=30))
encodings = st.one_of(st.none(), st.sampled_from(["gzip", "x-gzip", "GZIP", " gzip ", "identity", "", "br", "deflate",
                                                  "gzip, gzip"]), st.text(max_size=12))


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are anything from noise to almost-right JSON, sometimes gzipped or cut short."""
    base = draw(st.one_of(
        st.binary(max_size=200),
        small_json.map(encode),
        batches().map(lambda b: encode(b.doc)),
        st.sampled_from([b"", b"   ", b"[]", b"{}", b'{"events": {}}', b'{"events": []}', b"null", b"[1,2",
                         b'{"a": 1e400}', b'"\\ud800"', b"\xff\xfe{}", b"[" * 2000]),
        st.integers(MAX_EVENTS - 1, MAX_EVENTS + 2).map(lambda n: encode([{"shopId": "s", "sessionId": "x",
                                                                            "eventType": "t"}] * n)),
    ))
    how = draw(st.sampled_from(["plain", "plain", "gzip", "gzip-truncated", "gzip-garbage-tail"]))
    if how == "gzip":
        return gzip.compress(base, mtime=0)
    if how == "gzip-truncated":
        packed = gzip.compress(base, mtime=0)
        return packed[: draw(st.integers(0, max(0, len(packed) - 1)))]
    if how == "gzip-garbage-tail":
        return gzip.compress(base, mtime=0) + draw(st.binary(min_size=1, max_size=8))
    return base


BOMB = gzip.compress(b" " * (MAX_BODY_BYTES + 1), mtime=0)


@PURE
@given(raw=raw_bodies(), content_type=content_types, encoding=encodings)
@example(raw=BOMB, content_type="application/json", encoding="gzip")
@example(raw=b" " * (MAX_BODY_BYTES + 1), content_type=None, encoding=None)
def test_any_body_is_events_or_a_clear_4xx(raw: bytes, content_type: str | None, encoding: str | None) -> None:
    try:
        data = decode_body(raw, content_type, encoding)
    except ApiError as exc:
        assert_api_error(exc)
        return
    assert len(data) <= MAX_BODY_BYTES
    if (encoding or "").strip().lower() in ("gzip", "x-gzip"):
        assert data == gzip.decompress(raw)  # inflation is exact when it succeeds
    try:
        body = parse_body(data)
        assert body.single or 1 <= len(body.items) <= MAX_EVENTS
        events = parse_events(body, INFO)
    except ApiError as exc:
        assert_api_error(exc, (400, 413))
        return
    assert len(events) == len(body.items)


@pytest.mark.parametrize("tail", [b"junk", gzip.compress(b'[{"shopId": "s"}]', mtime=0)],
                         ids=["garbage", "second-member"])
def test_data_after_the_gzip_stream_is_a_400_not_dropped(tail: bytes) -> None:
    # Found by test_any_body_is_events_or_a_clear_4xx: the bytes after the first gzip member used to be ignored, so
    # part of what the client sent was silently dropped while the rest was stored.
    raw = gzip.compress(encode({"shopId": "s", "sessionId": "x", "eventType": "t"}), mtime=0) + tail
    with pytest.raises(ApiError) as info:
        decode_body(raw, "application/json", "gzip")
    assert (info.value.status, info.value.code) == (400, "invalid_json")


# ---------------------------------------------------------------------------------------------- event parsing, HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("properties"))
    proc.start()
    yield proc
    proc.stop()


@THROUGH_HTTP
@given(batch=batches(), gzipped=st.booleans(), content_type=st.sampled_from(["application/json", "text/plain", None]))
def test_through_http_nothing_of_a_rejected_batch_is_stored(server: ServerProcess, batch: Batch, gzipped: bool,
                                                           content_type: str | None) -> None:
    raw = encode(batch.doc)
    inputs = [batch.doc] if batch.single else (batch.doc if isinstance(batch.doc, list) else batch.doc["events"])
    ids = [str(item["id"]).lower() for item in inputs
           if isinstance(item, dict) and isinstance(item.get("id"), str) and is_uuid(item["id"])]
    already = stored_ids(server.db, ids)
    before = stored_count(server.db)
    headers = {"Content-Type": content_type} if content_type else {}
    if gzipped:
        raw = gzip.compress(raw, mtime=0)
        headers["Content-Encoding"] = "gzip"
    answer = server.request("POST", "/api/events", raw, headers)
    after = stored_count(server.db)
    event(f"status {answer.status}")  # shown by --hypothesis-show-statistics: both outcomes are exercised
    assert answer.status < 500, answer.body
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    doc = answer.json()
    if answer.status >= 400:
        assert answer.status in (400, 413), answer.body
        assert set(doc) == {"error"} and doc["error"]["code"] in ERRORS[answer.status]
        assert batch.broken, f"a valid batch was rejected: {doc}"
        assert after == before, "a rejected request stored events"
        assert stored_ids(server.db, ids) == already
        return
    assert not batch.broken, f"an invalid batch was accepted: {batch.broken}"
    if batch.single:
        assert answer.status in (200, 201)
        assert after - before == (1 if answer.status == 201 else 0)
    else:
        assert answer.status == 201
        assert after - before == doc["accepted"]
        assert doc["accepted"] + doc["duplicates"] == len(inputs)
    assert set(ids) <= stored_ids(server.db, ids)


# ---------------------------------------------------------------------------------------------- query strategies

DIMENSION_NAMES = sorted(DIMENSIONS)
prop_keys = st.from_regex(r"[A-Za-z0-9_\-$ ]{1,64}", fullmatch=True)
dimension_names = st.one_of(st.sampled_from(DIMENSION_NAMES), prop_keys.map(lambda k: "prop:" + k))
# Regular expressions both Python's re and DuckDB's RE2 accept: the handler turns RE2 rejections into a 400 first.
patterns = st.one_of(st.sampled_from(["^/p", ".*", "[a-z]+", "(a|b)c?", "^$", "\\d{2,}", "(?i)PAGE"]),
                     st.text(any_char, max_size=12).map(re.escape))
hour_values = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                           timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                      timezone(timedelta(hours=-8))])
                           ).map(lambda d: d.replace(minute=0, second=0, microsecond=0).isoformat())
filter_texts = st.one_of(st.text(any_char, max_size=20), st.integers(-(10**6), 10**6),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.sampled_from(["'; DROP TABLE events; --", "$start", "%", "_", "\\", "' OR 1=1 --"]))


@st.composite
def filters(draw: st.DrawFn, dims: st.SearchStrategy[str] = dimension_names) -> list[Any]:
    op = draw(st.sampled_from(FILTER_OPS))
    dim = draw(dims)
    if op == "matches":
        values: list[Any] = draw(st.lists(patterns, min_size=1, max_size=3))
    elif dim == "time:hour" and op in ("is", "is_not"):
        values = draw(st.lists(hour_values, min_size=1, max_size=3))
    else:
        values = draw(st.lists(filter_texts, min_size=1, max_size=4))
    return [op, dim, values[0] if len(values) == 1 and draw(st.booleans()) else values]


@st.composite
def valid_query_docs(draw: st.DrawFn) -> dict[str, Any]:
    metrics = draw(st.lists(st.sampled_from(sorted(METRICS)), min_size=1, max_size=4, unique=True))
    dims = draw(st.lists(dimension_names, max_size=3, unique=True))
    doc: dict[str, Any] = {"metrics": metrics}
    if dims or draw(st.booleans()):
        doc["dimensions"] = dims
    doc["filters"] = draw(st.lists(filters(), max_size=3))
    names = metrics + dims
    order = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    doc["orderBy"] = [[name, draw(st.sampled_from(["asc", "desc"]))] for name in order]
    doc["limit"] = draw(st.integers(1, MAX_LIMIT))
    doc["offset"] = draw(st.one_of(st.just(0), st.integers(0, 50), st.integers(0, MAX_OFFSET)))
    return doc


QUERY_KEYS = ["metrics", "dimensions", "filters", "orderBy", "limit", "offset", "shopId", "timezone", "dateRange",
              "includeBots"]
# Documents a client could send: valid ones with one field replaced by anything, and free-form JSON objects.
any_query_docs = st.one_of(
    st.tuples(valid_query_docs(), st.sampled_from(QUERY_KEYS), small_json).map(lambda t: {**t[0], t[1]: t[2]}),
    st.dictionaries(st.sampled_from(QUERY_KEYS), st.one_of(small_json, st.lists(small_json, max_size=4)), max_size=6),
    st.tuples(valid_query_docs(), st.sampled_from(["filters", "orderBy", "dimensions"]),
              st.lists(small_json, min_size=1, max_size=3)).map(lambda t: {**t[0], t[1]: t[2]}),
)


# ---------------------------------------------------------------------------------------------- query builder, pure

SCOPE = Scope("shop-a", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "Europe/Berlin")
_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def user_strings(doc: dict[str, Any]) -> list[str]:
    """Every piece of free text in a query document: filter values and property keys."""
    found = [str(v) for _op, _dim, values in doc.get("filters", [])
             for v in (values if isinstance(values, list) else [values])]
    found += [d[len("prop:"):] for d in doc.get("dimensions", []) if d.startswith("prop:")]
    found += [f[1][len("prop:"):] for f in doc.get("filters", []) if f[1].startswith("prop:")]
    return found


@st.composite
def twin_docs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid query and a twin of the same shape whose free text (filter values, property keys) all differ."""
    doc = draw(valid_query_docs())
    twin = orjson.loads(orjson.dumps(doc))
    renamed = {}
    for i, name in enumerate(doc.get("dimensions", [])):
        if name.startswith("prop:"):
            # "T<i>" + anything: unique among the twin's dimensions, and never the original key.
            fresh_key = f"T{i}{draw(prop_keys)}"[:64]
            renamed[name] = "prop:" + (fresh_key if "prop:" + fresh_key != name else fresh_key[:-1] + "_")
    twin["dimensions"] = [renamed.get(d, d) for d in doc.get("dimensions", [])]
    twin["orderBy"] = [[renamed.get(n, n), d] for n, d in doc["orderBy"]]
    new_filters = []
    for op, dim, values in doc["filters"]:
        count = len(values) if isinstance(values, list) else 1
        new_dim = dim
        if dim.startswith("prop:"):
            new_dim = renamed.get(dim) or "prop:" + draw(prop_keys.filter(lambda k, n=dim: "prop:" + k != n))
        if op == "matches":
            fresh: list[Any] = [re.escape(f"zz{i}{draw(st.text(string.ascii_letters, max_size=4))}")
                                for i in range(count)]
        elif dim == "time:hour" and op in ("is", "is_not"):
            fresh = [draw(hour_values) for _ in range(count)]
        else:
            fresh = [f"twin-{i}-{draw(st.text(any_char, max_size=6))}" for i in range(count)]
        new_filters.append([op, new_dim, fresh])
    twin["filters"] = new_filters
    return doc, twin


@PURE
@given(doc=any_query_docs)
@example(doc={"metrics": ["events"], "filters": [["matches", "path", "(unclosed"]]})
@example(doc={"metrics": ["events"], "dimensions": ["prop:a\"; DROP TABLE events; --"]})
@example(doc={"metrics": ["events"], "filters": [["is", "time:hour", "yesterday"]]})
@example(doc={"metrics": ["events"], "limit": True})
def test_any_query_document_is_a_query_or_a_query_error(doc: dict[str, Any]) -> None:
    try:
        query = parse_query(doc)
    except QueryError as exc:
        assert exc.field and isinstance(exc.message, str) and exc.message
        assert exc.field.split("[")[0] in QUERY_KEYS, exc.field
        return
    assert isinstance(query, Query) and query.metrics
    assert 1 <= query.limit <= MAX_LIMIT and 0 <= query.offset <= MAX_OFFSET
    assert all(1 <= len(f.values) <= MAX_FILTER_VALUES for f in query.filters)
    for sql in (build_query_sql(query, SCOPE), build_count_sql(query, SCOPE)):
        assert set(_PARAM_RE.findall(sql.text)) == set(sql.params)


def bound_strings(sql: Sql) -> set[str]:
    found: set[str] = set()
    for value in sql.params.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.add(item)
    return found


@PURE
@given(pair=twin_docs())
def test_user_text_is_always_bound_never_pasted(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, twin = pair
    query, twin_query = parse_query(doc), parse_query(twin)
    for build in (build_query_sql, build_count_sql):
        sql, twin_sql = build(query, SCOPE), build(twin_query, SCOPE)
        # The text is a function of the query's shape alone: new values, same SQL.
        assert sql.text == twin_sql.text
        assert set(_PARAM_RE.findall(sql.text)) == set(sql.params)
        bound = bound_strings(sql)
        for f in query.filters:
            if f.dimension != "time:hour" or f.op not in ("is", "is_not"):
                assert set(f.values) <= bound | {v for p in sql.params.values() if isinstance(p, list) for v in p}
        for name in query.dimensions:
            if name.startswith("prop:"):
                assert f'$."{name[len("prop:"):]}"' in bound


# ---------------------------------------------------------------------------------------------- query builder, DuckDB

SEED_EVENTS = [
    {"shopId": shop, "sessionId": f"{shop}-s{i % 4}", "eventType": kind, "eventName": kind,
     "timestamp": (datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=7 * i)).isoformat(),
     "url": f"https://{shop}.example/p/{i % 3}?utm_source=news&utm_campaign=c{i % 2}",
     "referrer": "https://www.google.com/" if i % 2 else None, "userAgent": ua,
     "properties": {"productId": f"sku-{i % 5}", "price": 9.5 + i, "value": 10 * i, "orderId": f"o{i // 2}",
                    "currency": "EUR" if i % 3 else "USD", "plan": ["free", "pro"][i % 2], "n": i,
                    "items": [{"id": f"sku-{i % 5}", "quantity": 2, "price": 3.0}]}}
    for i, (shop, kind, ua) in enumerate(
        (shop, kind, ua)
        for shop in ("shop-a", "shop-b")
        for kind in ("page_view", "product_view", "add_to_cart", "checkout_start", "purchase", "search")
        for ua in ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
                   "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1",
                   "Googlebot/2.1 (+http://www.google.com/bot.html)"))
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """A small real warehouse: events parsed as ingestion parses them, stored by the store's schema, mirrored."""
    directory: Path = tmp_path_factory.mktemp("warehouse")
    db = directory / "flowtel.db"
    prepare_database(db)
    events = parse_events(parse_body(encode(SEED_EVENTS)), INFO)
    conn = sqlitelib.connect(db, isolation_level=None)
    try:
        conn.executemany(INSERT_EVENT, [e.row() for e in events])
    finally:
        conn.close()
    wh = Warehouse(directory / "flowtel.duckdb", memory_limit="256MB", threads=1)
    wh.open_sync()
    mirror = Mirror(db)
    assert wh.call(mirror.catch_up) == len(events)
    yield wh
    wh.call(lambda c: mirror.close())
    wh.close_sync()


scopes = st.builds(
    Scope,
    shop_id=st.sampled_from([None, "shop-a", "shop-b", "nobody"]),
    start=st.sampled_from([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 2, 12, tzinfo=UTC)]),
    end=st.sampled_from([datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)]),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham"]),
    include_bots=st.booleans(),
)


@ON_DUCKDB
@given(doc=valid_query_docs(), scope=scopes)
def test_every_valid_query_runs_on_duckdb(warehouse: Warehouse, doc: dict[str, Any], scope: Scope) -> None:
    query = parse_query(doc)
    sql, count_sql = build_query_sql(query, scope), build_count_sql(query, scope)

    def run(conn: duckdb.DuckDBPyConnection) -> tuple[list[Any], int]:
        rows = conn.execute(sql.text, sql.params).fetchall()
        total = conn.execute(count_sql.text, count_sql.params).fetchone()
        assert total is not None
        return rows, int(total[0])

    rows, total = warehouse.call(run)
    width = len(query.dimensions) + len(query.metrics) + 1
    assert all(len(row) == width for row in rows)
    assert len(rows) <= query.limit
    assert all(int(row[-1]) == total for row in rows)
    if query.offset == 0:
        assert len(rows) == min(total, query.limit)


# ---------------------------------------------------------------------------------------------- query API, HTTP

# (document, must it succeed): valid queries with valid scope fields must answer 200; anything else 200 or 400.
http_query_docs = st.one_of(
    valid_query_docs().flatmap(lambda d: st.fixed_dictionaries({
        "shopId": st.sampled_from(["shop-a", "shop-b", None]),
        "timezone": st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham", None]),
        "dateRange": st.one_of(st.sampled_from(["30d", "all", "today", "year", "lastMonth"]),
                               st.lists(st.sampled_from(["2026-01-01", "2026-03-03T10:00:00", "2026-03-09"]),
                                        min_size=2, max_size=2).map(sorted)),
        "includeBots": st.booleans(),
    }).map(lambda extra, d=d: ({**d, **extra}, True))),
    any_query_docs.map(lambda d: (d, False)),
)


@THROUGH_HTTP
@given(case=http_query_docs)
@example(case=({"metrics": ["events"], "filters": [["matches", "path", "(?=lookahead)"]]}, False))
def test_any_query_through_http_is_200_or_a_clear_400(server: ServerProcess, case: tuple[dict[str, Any], bool]
                                                       ) -> None:
    doc, must_succeed = case
    answer = server.request("POST", "/api/query", encode(doc),
                            {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"})
    event(f"status {answer.status}")
    assert answer.status in (200, 400), answer.body
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    body = answer.json()
    if answer.status == 400:
        assert not must_succeed, f"a valid query was rejected: {body}"
        assert set(body) == {"error"} and body["error"]["code"] in ("validation_failed", "invalid_json")
        assert body["error"]["message"]
    else:
        assert set(body) == {"results", "meta", "query"}
        assert len(body["results"]) <= body["query"]["limit"]
