"""The neutral LLM interface shared by insights and chat: messages, tools and completions, provider-agnostic.

The OpenAI and Anthropic adapters (official async SDKs) implement `LLM`; nothing else in the code base imports an SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anthropic
import openai


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Which provider to talk to and how; built by the server from its Settings (analytics never reads env)."""

    provider: Literal["openai", "anthropic", "none"]
    api_key: str | None = None
    base_url: str | None = None
    model: str = ""
    timeout_s: float = 30.0
    max_retries: int = 1


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a name, a description and a JSON-schema object for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. role "tool" carries a tool result for `tool_call_id`; an assistant turn may carry tool calls."""

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""


class LLMError(Exception):
    """The provider failed (auth, rate limit, timeout, 5xx, malformed answer); callers fall back or answer 503."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class LLM(Protocol):
    """What insights and chat need from a provider; one adapter per SDK."""

    provider: str
    model: str

    async def complete(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        *,
        max_tokens: int = 1024,
    ) -> Completion: ...

    async def close(self) -> None: ...


# Statuses worth another try later: rate limits, timeouts, conflicts and server errors (529 is Anthropic "overloaded").
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Local OpenAI-compatible servers (Ollama, vLLM, llama.cpp) need no key, but both SDKs refuse to start without one;
# passing one explicitly also stops the SDKs from reading credentials from the environment behind Settings' back.
_NO_KEY = "not-needed"


def _is_retryable(status: int | None) -> bool:
    return status is None or status in _RETRYABLE_STATUSES or status >= 500


def _sdk_error(exc: Exception, provider: str) -> LLMError:
    """Any SDK failure → LLMError with the HTTP status (None for timeouts and connection errors)."""
    if isinstance(exc, openai.APITimeoutError | anthropic.APITimeoutError):
        return LLMError(f"{provider}: the request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        return LLMError(f"{provider}: could not connect ({exc})", retryable=True)
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        status = exc.status_code
        return LLMError(f"{provider}: HTTP {status}: {exc.message}", status=status, retryable=_is_retryable(status))
    if isinstance(exc, openai.APIResponseValidationError | anthropic.APIResponseValidationError):
        return LLMError(f"{provider}: malformed answer: {exc.message}", status=exc.status_code)
    return LLMError(f"{provider}: {type(exc).__name__}: {exc}")


def _arguments(raw: str | None, provider: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        raise LLMError(f"{provider}: a tool call's arguments are not JSON: {raw!r:.200}") from None
    if not isinstance(value, dict):
        raise LLMError(f"{provider}: a tool call's arguments are not a JSON object: {raw!r:.200}")
    return value


def openai_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral turns → Chat Completions messages (system first; tool results as role "tool")."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content})
        elif message.role == "assistant" and message.tool_calls:
            out.append({
                "role": "assistant",
                "content": message.content or None,
                "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
                    for call in message.tool_calls
                ],
            })
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in tools]


def anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral turns → Messages API turns: content blocks, tool results inside a user turn, and consecutive turns of
    one role merged (the API wants every result of an assistant's tool calls in the one user turn that follows)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        blocks: list[dict[str, Any]]
        if message.role == "tool":
            role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}]
        else:
            role = message.role
            blocks = [{"type": "text", "text": message.content}] if message.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in message.tool_calls]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def anthropic_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


class OpenAIChat:
    """`LLM` over AsyncOpenAI's Chat Completions (also any OpenAI-compatible server via base_url)."""

    provider = "openai"

    def __init__(self, config: LLMConfig) -> None:
        self.model = config.model
        self._client = openai.AsyncOpenAI(api_key=config.api_key or _NO_KEY, base_url=config.base_url,
                                          timeout=config.timeout_s, max_retries=config.max_retries)

    async def complete(self, system: str, messages: list[Message], tools: list[ToolSpec] | None = None, *,
                       max_tokens: int = 1024) -> Completion:
        extra: dict[str, Any] = {"tools": openai_tools(tools)} if tools else {}
        try:
            # max_tokens rather than max_completion_tokens: the OpenAI-compatible local servers only know the former.
            response = await self._client.chat.completions.create(
                model=self.model, messages=openai_messages(system, messages),  # type: ignore[arg-type]
                max_tokens=max_tokens, **extra)
        except openai.OpenAIError as exc:
            raise _sdk_error(exc, self.provider) from exc
        if not response.choices:
            raise LLMError("openai: the answer has no choices")
        message = response.choices[0].message
        calls = tuple(
            ToolCall(call.id, call.function.name, _arguments(call.function.arguments, self.provider))
            for call in message.tool_calls or () if call.type == "function"
        )
        usage = response.usage
        return Completion(
            text=message.content or "",
            tool_calls=calls,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            model=response.model or self.model,
        )

    async def close(self) -> None:
        await self._client.close()


class AnthropicMessages:
    """`LLM` over AsyncAnthropic's Messages API."""

    provider = "anthropic"

    def __init__(self, config: LLMConfig) -> None:
        self.model = config.model
        self._client = anthropic.AsyncAnthropic(api_key=config.api_key or _NO_KEY, base_url=config.base_url,
                                                timeout=config.timeout_s, max_retries=config.max_retries)

    async def complete(self, system: str, messages: list[Message], tools: list[ToolSpec] | None = None, *,
                       max_tokens: int = 1024) -> Completion:
        extra: dict[str, Any] = {"tools": anthropic_tools(tools)} if tools else {}
        if system:
            extra["system"] = system
        try:
            response = await self._client.messages.create(
                model=self.model, max_tokens=max_tokens,
                messages=anthropic_messages(messages),  # type: ignore[arg-type]
                **extra)
        except anthropic.AnthropicError as exc:
            raise _sdk_error(exc, self.provider) from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in response.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                if not isinstance(block.input, dict):
                    raise LLMError("anthropic: a tool call's input is not a JSON object")
                calls.append(ToolCall(block.id, block.name, block.input))
        return Completion(
            text="".join(texts),
            tool_calls=tuple(calls),
            usage=Usage(response.usage.input_tokens, response.usage.output_tokens),
            model=response.model or self.model,
        )

    async def close(self) -> None:
        await self._client.close()


def make_llm(config: LLMConfig) -> LLM | None:
    """The adapter for the configured provider, or None when no provider is configured (templates only)."""
    if config.provider == "openai":
        return OpenAIChat(config)
    if config.provider == "anthropic":
        return AnthropicMessages(config)
    return None
