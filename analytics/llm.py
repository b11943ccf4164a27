"""The neutral LLM interface shared by insights and chat: messages, tools and completions, provider-agnostic.

The OpenAI and Anthropic adapters (official async SDKs) implement `LLM`; nothing else in the code base imports an SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
