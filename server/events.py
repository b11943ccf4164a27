"""Event parsing: request body → validated, normalised, context-enriched NewEvents. Pure, no I/O."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
import uuid_utils

from server.context import parse_user_agent, path_of, visitor_hash
from server.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = 500
MAX_PROPERTIES_BYTES = 32 * 1024
MAX_DEPTH = 8
MAX_DETAILS = 50
FUTURE_TOLERANCE_MS = 3600_000
SKEW_TOLERANCE_MS = 60_000
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

ACCEPTED_MEDIA_TYPES = ("", "application/json", "text/plain")

CANONICAL_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout_start", "purchase",
                   "search")
_ALIASES = {
    "page_view": ("pageview", "page_viewed", "$pageview", "Page Viewed"),
    "product_view": ("product_viewed", "view_item", "Product Viewed"),
    "add_to_cart": ("product_added_to_cart", "Product Added"),
    "remove_from_cart": ("product_removed_from_cart", "Product Removed"),
    "checkout_start": ("checkout_started", "begin_checkout", "Checkout Started"),
    "purchase": ("checkout_completed", "Order Completed"),
    "search": ("search_submitted", "Products Searched"),
}
EVENT_TYPE_ALIASES: dict[str, str] = {
    name.lower(): canonical for canonical, names in _ALIASES.items() for name in (canonical, *names)
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SHOP_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# The stored columns an Event is output from, in NewEvent.from_row's order.
EVENT_COLUMNS = ("id, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer, user_agent, "
                 "created_at, path, browser, os, device, country, is_bot")


def normalise_event_type(event_type: str) -> str:
    return EVENT_TYPE_ALIASES.get(event_type.strip().lower(), event_type)


def is_valid_shop_id(value: str) -> bool:
    return bool(_SHOP_RE.fullmatch(value))


def is_uuid(value: str) -> bool:
    return bool(_UUID_RE.fullmatch(value))


def new_event_id() -> str:
    """Time-ordered UUIDv7: new keys append to the end of the id index instead of landing at random pages."""
    return str(uuid_utils.uuid7())


def format_ms(ms: int) -> str:
    """Epoch milliseconds → ISO 8601 UTC with milliseconds and Z (on every response, so no datetime objects)."""
    days, rest = divmod(ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_of(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def utc_day(ms: int) -> str:
    """The UTC date (YYYY-MM-DD) of an epoch-ms instant; cached, since every request asks for today's."""
    return _day_of(ms // 86_400_000)


@lru_cache(maxsize=4096)
def _day_of(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).date().isoformat()


def parse_instant(value: str) -> int | None:
    """ISO 8601 (Z, offset, or none meaning UTC) → epoch ms, or None when it is not a valid instant."""
    if not 10 <= len(value) <= 40:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return (dt - _EPOCH) // _MS
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What ingestion needs to know about the request, gathered by the handler."""

    user_agent: str
    client_ip: str
    country: str | None
    now_ms: int
    salt: bytes


@dataclass(frozen=True, slots=True)
class ParsedBody:
    items: list[Any]
    sent_at: Any
    single: bool


@dataclass(slots=True)
class NewEvent:
    id: str
    shop_id: str
    session_id: str
    event_type: str
    event_name: str
    properties: str  # serialised JSON object
    timestamp: int  # epoch ms, UTC
    url: str | None
    referrer: str | None
    user_agent: str | None
    created_at: int
    path: str | None
    browser: str | None
    os: str | None
    device: str
    country: str | None
    is_bot: bool
    visitor_hash: str

    def row(self) -> tuple[Any, ...]:
        return (
            self.id, self.shop_id, self.session_id, self.event_type, self.event_name, self.properties,
            self.timestamp, self.url, self.referrer, self.user_agent, self.created_at, self.path, self.browser,
            self.os, self.device, self.country, int(self.is_bot), self.visitor_hash,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...] | Any) -> NewEvent:
        """A row selected with EVENT_COLUMNS back into an event (the visitor hash is never read back)."""
        (id_, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer, user_agent,
         created_at, path, browser, os_, device, country, is_bot) = row
        return cls(id_, shop_id, session_id, event_type, event_name, properties, timestamp, url, referrer,
                   user_agent, created_at, path, browser, os_, device, country, bool(is_bot), "")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shopId": self.shop_id,
            "sessionId": self.session_id,
            "eventType": self.event_type,
            "eventName": self.event_name,
            "properties": orjson.Fragment(self.properties),
            "timestamp": format_ms(self.timestamp),
            "url": self.url,
            "referrer": self.referrer,
            "userAgent": self.user_agent,
            "createdAt": format_ms(self.created_at),
            "context": {
                "path": self.path,
                "browser": self.browser,
                "os": self.os,
                "device": self.device,
                "country": self.country,
                "isBot": self.is_bot,
            },
        }


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(raw: bytes, content_type: str | None, content_encoding: str | None) -> bytes:
    """Check the media type and encoding, and inflate gzip without ever holding more than the JSON limit."""
    media_type = _media_type(content_type)
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise ApiError(
            415, "unsupported_media_type",
            f"Content-Type {media_type!r} is not accepted: send application/json or text/plain.",
        )
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", "The body is larger than 1 MiB of JSON: send smaller batches.")
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(
            415, "unsupported_media_type",
            f"Content-Encoding {encoding!r} is not accepted: send gzip or an uncompressed body.",
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # Inflate at most one byte past the limit, so a gzip bomb costs us 1 MiB, not its full size.
        data = inflater.decompress(raw, MAX_BODY_BYTES + 1)
        if len(data) <= MAX_BODY_BYTES and not inflater.unconsumed_tail:
            data += inflater.flush()
    except zlib.error:
        raise ApiError(
            400, "invalid_json", "The body is not valid gzip data: compress it with gzip or send it plain."
        ) from None
    if len(data) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise ApiError(413, "payload_too_large", "The body inflates to more than 1 MiB of JSON: send smaller batches.")
    if not inflater.eof:
        raise ApiError(400, "invalid_json", "The gzip body is truncated: send the whole compressed stream.")
    if inflater.unused_data:
        # Bytes after the end of the gzip stream (garbage, or a second gzip member) would be dropped unread.
        raise ApiError(400, "invalid_json", "The body has data after the end of its gzip stream: send one gzip stream.")
    return data


def parse_body(data: bytes) -> ParsedBody:
    """Decoded bytes → one event, an array, or an envelope with sentAt."""
    if not data.strip():
        raise ApiError(
            400, "invalid_json", "The body is empty: send a JSON event, an array of events or {\"events\": [...]}."
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if isinstance(doc, list):
        items, sent_at, single = doc, None, False
    elif isinstance(doc, dict) and "events" in doc:
        items, sent_at, single = doc["events"], doc.get("sentAt"), False
        if not isinstance(items, list):
            raise ApiError(400, "validation_failed", "events: must be an array of event objects.",
                           [{"field": "events", "message": "must be an array of event objects"}])
    elif isinstance(doc, dict):
        items, sent_at, single = [doc], None, True
    else:
        raise ApiError(400, "validation_failed",
                       "The body must be an event object, an array of events or {\"events\": [...]}.")
    if not single and not items:
        raise ApiError(400, "validation_failed", "events: the batch is empty; send at least one event.",
                       [{"field": "events", "message": "must contain at least one event"}])
    if len(items) > MAX_EVENTS:
        raise ApiError(413, "payload_too_large",
                       f"The batch has {len(items)} events; send at most {MAX_EVENTS} per request.")
    return ParsedBody(items, sent_at, single)


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return False


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, index: int | None, field: str, message: str) -> None:
        detail: dict[str, Any] = {"field": field, "message": message}
        if index is not None:
            detail = {"index": index, **detail}
        self.items.append(detail)


def _optional_text(raw: dict[str, Any], field: str, limit: int, index: int | None, problems: _Problems) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(index, field, f"must be a string of at most {limit} characters")
        return None
    if len(value) > limit:
        problems.add(index, field, f"is {len(value)} characters long; the limit is {limit}")
        return None
    return value


def _required_printable(raw: dict[str, Any], field: str, limit: int, index: int | None,
                        problems: _Problems) -> str | None:
    value = raw.get(field)
    if value is None:
        problems.add(index, field, "is required")
        return None
    if not isinstance(value, str):
        problems.add(index, field, f"must be a string of 1 to {limit} printable characters")
        return None
    if not value.strip():
        problems.add(index, field, "must not be empty or blank")
        return None
    if len(value) > limit:
        problems.add(index, field, f"is {len(value)} characters long; the limit is {limit}")
        return None
    if not value.isprintable():
        problems.add(index, field, "must contain only printable characters (no control characters)")
        return None
    return value


def _parse_one(raw: Any, index: int | None, info: RequestInfo, skew_ms: int, problems: _Problems,
               hashes: dict[tuple[str, str], str]) -> NewEvent | None:
    if not isinstance(raw, dict):
        problems.add(index, "event", "must be a JSON object")
        return None
    before = len(problems.items)

    event_id = raw.get("id")
    if event_id is not None and not (isinstance(event_id, str) and is_uuid(event_id)):
        problems.add(index, "id", "must be a UUID string like 0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d")
        event_id = None

    shop_id = raw.get("shopId")
    if shop_id is None:
        problems.add(index, "shopId", "is required")
    elif not isinstance(shop_id, str) or not is_valid_shop_id(shop_id):
        problems.add(index, "shopId", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")

    session_id = _required_printable(raw, "sessionId", 128, index, problems)
    event_type = _required_printable(raw, "eventType", 100, index, problems)
    event_name = _optional_text(raw, "eventName", 200, index, problems)
    url = _optional_text(raw, "url", 2048, index, problems)
    referrer = _optional_text(raw, "referrer", 2048, index, problems)
    user_agent = _optional_text(raw, "userAgent", 1024, index, problems)

    properties = raw.get("properties")
    properties_json = "{}"
    if properties is None:
        pass
    elif not isinstance(properties, dict):
        problems.add(index, "properties", "must be a JSON object")
    else:
        try:
            encoded = orjson.dumps(properties)
        except orjson.JSONEncodeError:  # nested beyond orjson's own limit, far past ours
            encoded = None
        # Nesting deeper than MAX_DEPTH needs more than MAX_DEPTH opening brackets, so most objects skip the walk.
        if (encoded is None or encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH) and \
                _depth_exceeds(properties, MAX_DEPTH):
            problems.add(index, "properties", f"is nested more than {MAX_DEPTH} levels deep")
        elif encoded is None:
            problems.add(index, "properties", "must be a JSON object")
        elif len(encoded) > MAX_PROPERTIES_BYTES:
            problems.add(index, "properties", f"is {len(encoded)} bytes serialised; the limit is 32 KiB")
        else:
            properties_json = encoded.decode()

    timestamp = info.now_ms
    raw_ts = raw.get("timestamp")
    if raw_ts is not None:
        parsed = parse_instant(raw_ts) if isinstance(raw_ts, str) else None
        if parsed is None:
            problems.add(index, "timestamp", "must be an ISO 8601 time such as 2026-11-26T04:15:17.123Z")
        else:
            timestamp = parsed + skew_ms
            if timestamp > info.now_ms + FUTURE_TOLERANCE_MS:
                problems.add(index, "timestamp", "is more than 1 hour in the future; check the client's clock")
            elif timestamp < MIN_TIMESTAMP_MS:
                problems.add(index, "timestamp", "is before 2000-01-01")

    if len(problems.items) > before:
        return None
    assert isinstance(shop_id, str) and session_id is not None and event_type is not None
    ua = user_agent if user_agent is not None else info.user_agent
    ua_info = parse_user_agent(ua)
    return NewEvent(
        id=event_id.lower() if isinstance(event_id, str) else new_event_id(),
        shop_id=shop_id,
        session_id=session_id,
        event_type=normalise_event_type(event_type),
        event_name=event_name if event_name is not None else event_type,
        properties=properties_json,
        timestamp=timestamp,
        url=url,
        referrer=referrer,
        user_agent=ua or None,
        created_at=info.now_ms,
        path=path_of(url),
        browser=ua_info.browser,
        os=ua_info.os,
        device=ua_info.device,
        country=info.country,
        is_bot=ua_info.is_bot,
        visitor_hash=_visitor(info, shop_id, ua, hashes),
    )


def _visitor(info: RequestInfo, shop_id: str, ua: str, hashes: dict[tuple[str, str], str]) -> str:
    # A batch is one visitor's events, nearly always one shop and one user agent: hash once per request.
    key = (shop_id, ua)
    value = hashes.get(key)
    if value is None:
        value = hashes[key] = visitor_hash(info.salt, shop_id, info.client_ip, ua)
    return value


def parse_events(body: ParsedBody, info: RequestInfo) -> list[NewEvent]:
    """Validate every event; any problem rejects the whole request with one detail per problem."""
    problems = _Problems()
    skew_ms = 0
    if body.sent_at is not None:
        sent_at = parse_instant(body.sent_at) if isinstance(body.sent_at, str) else None
        if sent_at is None:
            problems.add(None, "sentAt", "must be an ISO 8601 time such as 2026-11-26T04:15:17.123Z")
        elif abs(info.now_ms - sent_at) > SKEW_TOLERANCE_MS:
            skew_ms = info.now_ms - sent_at
    events: list[NewEvent] = []
    hashes: dict[tuple[str, str], str] = {}
    for i, raw in enumerate(body.items):
        event = _parse_one(raw, None if body.single else i, info, skew_ms, problems, hashes)
        if event is not None:
            events.append(event)
    if problems.items:
        first = problems.items[0]
        where = f"event {first['index']}: " if "index" in first else ""
        more = len(problems.items) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ApiError(400, "validation_failed", f"{where}{first['field']} {first['message']}{suffix}.",
                       problems.items[:MAX_DETAILS])
    return events
