"""POST /api/chat and GET /api/chat/{conversationId}: a question answered over the asking shop's sandbox, by the
LLM tool loop or, without a provider, by the built-in router; conversations stored per shop."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from analytics.chat import ChatAnswer, ChatTimeout, ask_llm
from analytics.chat_builtin import EXAMPLES, NotUnderstood, Plan, answer, route
from analytics.llm import LLMError
from analytics.mirror import CATCH_UP_ROWS
from analytics.sandbox import Result, Sandbox, copy_shop_rows, describe
from analytics.timerange import resolve_timezone
from server.auth import principal_of, scoped_shop
from server.conversations import Turn, find_conversation, last_turns, messages_of, save_turn, tokens_since
from server.errors import ApiError, json_response, read_json_object, validation_error
from server.events import format_ms, is_uuid, is_valid_shop_id, new_event_id
from server.keys import CHAT_LIMITER, CLOCK, LLM_CLIENT, MIRROR, SANDBOXES, SETTINGS, SHOPS, STORE, WAREHOUSE

log = logging.getLogger("flowtel.chat")

MAX_MESSAGE_CHARS = 2000
HISTORY_MESSAGES = 6
REQUEST_DEADLINE_S = 60.0
DAY_MS = 86_400_000


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "No conversation with this id for your shop: start one with POST /api/chat.")


def _llm_unavailable() -> ApiError:
    return ApiError(
        503, "llm_unavailable",
        "No LLM is configured, and the built-in answers do not cover this question. Ask one of the examples, or set "
        "OPENAI_API_KEY or ANTHROPIC_API_KEY (see docs/chat.md).",
        [{"field": "message", "message": example} for example in EXAMPLES], headers={"Retry-After": "3600"})


def _llm_upstream(reason: str) -> ApiError:
    return ApiError(503, "llm_upstream", f"The LLM provider failed ({reason}); nothing was stored. Try again shortly.",
                    headers={"Retry-After": "5"})


async def _sandbox(request: web.Request, shop_id: str) -> Sandbox:
    """The shop's sandbox for the current mirror version, built after catching the mirror up."""
    warehouse, mirror, cache = request.app[WAREHOUSE], request.app[MIRROR], request.app[SANDBOXES]
    await warehouse.run(lambda conn: mirror.catch_up(conn, CATCH_UP_ROWS))
    watermark = mirror.status.watermark
    sandbox = cache.get(shop_id, watermark)
    if sandbox is None:
        rows = await warehouse.read(lambda conn: copy_shop_rows(conn, shop_id))
        sandbox = await asyncio.to_thread(Sandbox, rows)
        cache.put(shop_id, watermark, sandbox)
    return sandbox


def _check_rate(request: web.Request, shop_id: str) -> None:
    wait = request.app[CHAT_LIMITER].take(shop_id)
    if wait:
        per_minute = request.app[SETTINGS].chat_rate_per_minute
        seconds = str(max(1, math.ceil(wait)))
        raise ApiError(429, "rate_limited", f"At most {per_minute} chat requests per minute per shop: retry after "
                       f"{seconds} s.", headers={"Retry-After": seconds})


async def _check_budget(request: web.Request, shop_id: str, now_ms: int) -> None:
    budget = request.app[SETTINGS].chat_daily_tokens
    day_start = now_ms - now_ms % DAY_MS
    used = await tokens_since(request.app[STORE], shop_id, day_start)
    if used >= budget:
        seconds = (day_start + DAY_MS - now_ms) // 1000 + 1
        raise ApiError(429, "rate_limited", f"This shop used its {budget:,} LLM tokens for today (UTC); the budget "
                       "resets at midnight UTC. Built-in answers need no tokens: set FLOWTEL_LLM_PROVIDER=none to use "
                       "them, or raise FLOWTEL_CHAT_DAILY_TOKENS.", headers={"Retry-After": str(seconds)})


async def post_chat(request: web.Request) -> web.Response:
    doc = await read_json_object(request, '{"shopId": "my-shop", "message": "Top pages last 7 days"}')
    shop_raw = doc.get("shopId")
    if shop_raw is not None and (not isinstance(shop_raw, str) or not is_valid_shop_id(shop_raw)):
        raise validation_error("shopId", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
    shop_id = scoped_shop(request, shop_raw)
    if shop_id is None:
        raise validation_error("shopId", "is required with the admin token: name the shop to ask about")
    message = doc.get("message")
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE_CHARS:
        raise validation_error("message", f"must be a question of 1 to {MAX_MESSAGE_CHARS} characters")
    message = message.strip()
    tz_raw = doc.get("timezone")
    shop = request.app[SHOPS].get(shop_id)
    if tz_raw is None and shop is not None:
        tz_raw = shop.timezone  # a registered shop's own timezone is the default
    if tz_raw is not None and not isinstance(tz_raw, str):
        raise validation_error("timezone", "must be an IANA timezone name such as Europe/Berlin")
    try:
        tz = resolve_timezone(tz_raw)
    except ValueError as exc:
        raise validation_error("timezone", str(exc)) from None
    conversation_id = doc.get("conversationId")
    store = request.app[STORE]
    history: list[tuple[str, str]] = []
    if conversation_id is not None:
        if not isinstance(conversation_id, str) or not is_uuid(conversation_id):
            raise validation_error("conversationId", "must be the id of a conversation (a UUID)")
        conversation = await find_conversation(store, conversation_id)
        if conversation is None or conversation.shop_id != shop_id:
            raise _not_found()
        history = await last_turns(store, conversation_id, HISTORY_MESSAGES)

    now_ms = request.app[CLOCK]()
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    _check_rate(request, shop_id)
    llm = request.app[LLM_CLIENT]
    plan: Plan | None = None
    if llm is None:
        try:
            plan = route(message, now, tz)
        except NotUnderstood:
            raise _llm_unavailable() from None
    else:
        await _check_budget(request, shop_id, now_ms)

    sandbox = await _sandbox(request, shop_id)
    if plan is not None:
        result = await asyncio.to_thread(answer, sandbox, plan, tz.key)
    else:
        assert llm is not None

        async def run_sql(sql: str) -> Result:
            return await asyncio.to_thread(sandbox.run_sql, sql)

        async def get_schema() -> dict[str, Any]:
            return await asyncio.to_thread(describe, sandbox)

        try:
            result = await ask_llm(llm, message, history, run_sql=run_sql, get_schema=get_schema, now=now,
                                   timezone=tz.key, deadline_s=REQUEST_DEADLINE_S)
        except LLMError as exc:
            log.warning("chat for shop %s: provider failed: %s", shop_id, exc)
            raise _llm_upstream(str(exc)) from None
        except ChatTimeout as exc:
            raise _llm_upstream(str(exc)) from None

    is_new = conversation_id is None
    conversation_id = conversation_id or new_event_id()
    body = result.to_json(conversation_id)
    await save_turn(store, _turn(conversation_id, shop_id, is_new, message, result, body, now_ms))
    return json_response(body)


def _turn(conversation_id: str, shop_id: str, is_new: bool, question: str, result: ChatAnswer,
          body: dict[str, Any], now_ms: int) -> Turn:
    evidence = {key: body[key] for key in ("queries", "columns", "rows", "chart", "provider", "model", "warnings")}
    return Turn(conversation_id, shop_id, is_new, new_event_id(), question, new_event_id(), result.answer, evidence,
                result.input_tokens, result.output_tokens, now_ms)


async def get_chat(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversationId"]
    if not is_uuid(conversation_id):
        raise _not_found()
    store = request.app[STORE]
    conversation = await find_conversation(store, conversation_id)
    principal = principal_of(request)
    if conversation is None or (not principal.is_admin and conversation.shop_id != principal.shop_id):
        raise _not_found()
    return json_response({
        "conversationId": conversation.id,
        "shopId": conversation.shop_id,
        "createdAt": format_ms(conversation.created_at),
        "updatedAt": format_ms(conversation.updated_at),
        "messages": await messages_of(store, conversation.id),
    })
