"""A fake OpenAI + Anthropic server for tests and local development: real SDK wire shapes, a per-test script.

It answers `POST /v1/chat/completions` and `POST /v1/messages` (also without `/v1`) as the real APIs do, records
every request, plays scripted replies (text, tool calls, errors, delays) and rejects what the real APIs reject: an
unknown key, an assistant tool call left without a tool result, a Messages request without `max_tokens`.
Run it by hand with `python -m tests.fake_llm [port]` and point OPENAI_BASE_URL/ANTHROPIC_BASE_URL at it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

FAKE_KEY = "sk-fake-test-key"

_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded",
                       500: "server_error", 529: "server_error"}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
                          500: "api_error", 529: "overloaded_error"}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text and/or tool calls (name, arguments), or an error status; after `delay` seconds."""

    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    status: int | None = None
    delay: float = 0.0
    input_tokens: int = 12
    output_tokens: int = 5


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: CIMultiDict[str]
    body: Any


class InvalidRequest(Exception):
    """What the real API would answer with a 400."""


@dataclass
class FakeLLM:
    """The fake provider's state: the key it accepts, the script it plays and the requests it saw."""

    api_key: str = FAKE_KEY
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stop: asyncio.Event | None = None

    def play(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one."""
        self.script.extend(replies)

    def settings_for(self, provider: str, *, timeout: float = 5.0, v1: bool = True) -> dict[str, Any]:
        """Settings overrides that point the server's LLM layer at this fake (see tests/conftest.py make_client)."""
        base = self.url + ("/v1" if v1 and provider == "openai" else "")
        return {"llm_provider": provider, f"{provider}_api_key": self.api_key, f"{provider}_base_url": base,
                f"{provider}_model": f"fake-{provider}-model", "llm_timeout": timeout}

    def make_app(self) -> web.Application:
        app = web.Application()
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self._chat_completions)
            app.router.add_post(f"{prefix}/messages", self._messages)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _start(self, app: web.Application) -> None:
        self._stop = asyncio.Event()

    async def _shutdown(self, app: web.Application) -> None:
        # Wakes delayed replies so a test server never waits out a long scripted delay at teardown.
        if self._stop is not None:
            self._stop.set()

    def _record(self, request: web.Request, raw: bytes) -> tuple[Any, bool]:
        """Record the request; the bool says whether either auth header carries the key."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append(Recorded(request.path, CIMultiDict(request.headers), body))
        bearer = request.headers.get("Authorization", "")
        return body, self.api_key in (bearer.removeprefix("Bearer ").strip(), request.headers.get("X-Api-Key"))

    async def _next_reply(self) -> Reply | None:
        """The next scripted reply (None when the script is used up), after its delay."""
        reply = self.script.popleft() if self.script else None
        if reply is not None and reply.delay and self._stop is not None:
            try:
                await asyncio.wait_for(self._stop.wait(), reply.delay)
            except TimeoutError:
                pass
        return reply

    # -- OpenAI Chat Completions ---------------------------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.Response:
        body, authorised = self._record(request, await request.read())
        if not authorised:
            return _openai_error(401, "Incorrect API key provided.")
        try:
            _check_openai(body)
        except InvalidRequest as exc:
            return _openai_error(400, str(exc))
        reply = await self._next_reply()
        if reply is None:
            return _openai_error(500, "fake LLM: no scripted reply left for this request")
        if reply.status is not None:
            return _openai_error(reply.status, f"scripted error {reply.status}")
        calls = [{"id": f"call_{next(self._ids)}", "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in reply.tool_calls]
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return web.json_response({
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": 1_795_666_517,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens},
        })

    # -- Anthropic Messages --------------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.Response:
        body, authorised = self._record(request, await request.read())
        if not authorised:
            return _anthropic_error(401, "invalid x-api-key")
        try:
            _check_anthropic(body)
        except InvalidRequest as exc:
            return _anthropic_error(400, str(exc))
        reply = await self._next_reply()
        if reply is None:
            return _anthropic_error(500, "fake LLM: no scripted reply left for this request")
        if reply.status is not None:
            return _anthropic_error(reply.status, f"scripted error {reply.status}")
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        content += [{"type": "tool_use", "id": f"toolu_{next(self._ids)}", "name": name, "input": args}
                    for name, args in reply.tool_calls]
        return web.json_response({
            "id": f"msg_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        })


def _openai_error(status: int, message: str) -> web.Response:
    error = {"message": message, "type": _OPENAI_ERROR_TYPES.get(status, "server_error"), "param": None,
             "code": _OPENAI_ERROR_CODES.get(status)}
    return web.json_response({"error": error}, status=status, headers={"x-should-retry": "false"})


def _anthropic_error(status: int, message: str) -> web.Response:
    error = {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}
    return web.json_response({"type": "error", "error": error, "request_id": "req_fake"}, status=status,
                             headers={"x-should-retry": "false"})


def _check_openai(body: Any) -> None:
    """Reject what Chat Completions rejects: no model, no messages, tool calls and tool results that do not pair."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidRequest("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array")
    pending: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise InvalidRequest(f"messages[{index}].role is invalid: {role!r}")
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                raise InvalidRequest(f"messages[{index}]: messages with role 'tool' must be a response to a "
                                     "preceding message with 'tool_calls'")
            pending.remove(message["tool_call_id"])
            continue
        if pending:
            raise InvalidRequest("An assistant message with 'tool_calls' must be followed by tool messages "
                                 f"responding to each 'tool_call_id'. Missing: {', '.join(pending)}")
        if role == "assistant":
            pending = [call["id"] for call in message.get("tool_calls") or ()]
    if pending:
        raise InvalidRequest("An assistant message with 'tool_calls' must be followed by tool messages responding "
                             f"to each 'tool_call_id'. Missing: {', '.join(pending)}")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise InvalidRequest("content must be a string or an array of content blocks")


def _check_anthropic(body: Any) -> None:
    """Reject what Messages rejects: no max_tokens, no model, tool_use blocks not answered in the next user turn."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise InvalidRequest("max_tokens: Field required")
    if not isinstance(body.get("model"), str):
        raise InvalidRequest("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required")
    pending: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        blocks = _blocks(message.get("content"))
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if answered - pending:
            raise InvalidRequest(f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks")
        if pending - answered:
            raise InvalidRequest(f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                                 f"immediately after: {', '.join(sorted(pending - answered))}")
        pending = {b["id"] for b in blocks if b.get("type") == "tool_use"} if role == "assistant" else set()
    if pending:
        raise InvalidRequest("the last assistant turn has `tool_use` ids without `tool_result` blocks after it")


def main() -> None:
    """Serve the fake on localhost for local development; every request answers one fixed text."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    fake = FakeLLM()
    fake.play(*(Reply(text="A quiet week: nothing to add.") for _ in range(10_000)))
    print(f"fake LLM on http://127.0.0.1:{port} (key {fake.api_key})", flush=True)
    web.run_app(fake.make_app(), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
