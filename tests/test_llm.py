"""The LLM layer: both adapters drive the real openai/anthropic SDK clients against the fake provider."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from analytics.llm import LLM, AnthropicMessages, LLMConfig, LLMError, Message, OpenAIChat, ToolCall, ToolSpec, make_llm
from server.app import create_app
from server.keys import LLM_CLIENT
from server.settings import llm_config, load_settings
from server.telemetry import CountedLLM
from tests.conftest import make_settings
from tests.fake_llm import FAKE_KEY, FakeLLM, Reply

PROVIDERS = ("openai", "anthropic")
STATS_TOOL = ToolSpec("get_metric", "Read one metric for the shop",
                      {"type": "object", "properties": {"metric": {"type": "string"}}, "required": ["metric"]})


def llm_for(fake: FakeLLM, provider: str, *, key: str = FAKE_KEY, timeout: float = 5.0, retries: int = 1,
            v1: bool = True) -> LLM:
    base = fake.url + ("/v1" if v1 and provider == "openai" else "")
    llm = make_llm(LLMConfig(provider, key, base, f"model-{provider}", timeout_s=timeout,  # type: ignore[arg-type]
                             max_retries=retries))
    assert llm is not None
    return llm


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("v1", [True, False])
async def test_text_happy_path(fake_llm: FakeLLM, provider: str, v1: bool) -> None:
    fake_llm.play(Reply(text="Sessions rose 12%.", input_tokens=40, output_tokens=6))
    llm = llm_for(fake_llm, provider, v1=v1)
    try:
        completion = await llm.complete("You phrase facts.", [Message("user", "facts: {}")], max_tokens=300)
    finally:
        await llm.close()
    assert completion.text == "Sessions rose 12%."
    assert completion.tool_calls == ()
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (40, 6)
    assert completion.model == f"model-{provider}"
    [sent] = fake_llm.requests
    body = sent.body
    assert body["model"] == f"model-{provider}"
    assert body["max_tokens"] == 300
    if provider == "openai":
        assert sent.path == ("/v1/chat/completions" if v1 else "/chat/completions")
        assert sent.headers["Authorization"] == f"Bearer {FAKE_KEY}"
        assert body["messages"] == [{"role": "system", "content": "You phrase facts."},
                                    {"role": "user", "content": "facts: {}"}]
    else:
        assert sent.path == "/v1/messages"
        # This SDK generation sends the key as a bearer token; older ones send X-Api-Key (the fake takes both).
        assert FAKE_KEY in (sent.headers.get("X-Api-Key"), sent.headers.get("Authorization", "")[len("Bearer "):])
        assert "anthropic-version" in sent.headers
        assert body["system"] == "You phrase facts."
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "facts: {}"}]}]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_calls_round_trip(fake_llm: FakeLLM, provider: str) -> None:
    fake_llm.play(Reply(tool_calls=(("get_metric", {"metric": "sessions"}),)), Reply(text="There were 42 sessions."))
    llm = llm_for(fake_llm, provider)
    try:
        first = await llm.complete("sys", [Message("user", "How many sessions?")], [STATS_TOOL])
        [call] = first.tool_calls
        assert (call.name, call.arguments) == ("get_metric", {"metric": "sessions"})
        assert call.id
        history = [Message("user", "How many sessions?"), Message("assistant", first.text, first.tool_calls),
                   Message("tool", '{"sessions": 42}', tool_call_id=call.id)]
        second = await llm.complete("sys", history, [STATS_TOOL])
    finally:
        await llm.close()
    assert second.text == "There were 42 sessions." and second.tool_calls == ()
    first_body, second_body = (r.body for r in fake_llm.requests)
    if provider == "openai":
        assert first_body["tools"] == [{"type": "function", "function": {
            "name": "get_metric", "description": STATS_TOOL.description, "parameters": STATS_TOOL.parameters}}]
        assert second_body["messages"][2]["tool_calls"][0]["id"] == call.id
        assert second_body["messages"][3] == {"role": "tool", "tool_call_id": call.id, "content": '{"sessions": 42}'}
    else:
        assert first_body["tools"] == [{"name": "get_metric", "description": STATS_TOOL.description,
                                        "input_schema": STATS_TOOL.parameters}]
        assert second_body["messages"][1]["content"] == [
            {"type": "tool_use", "id": call.id, "name": "get_metric", "input": {"metric": "sessions"}}]
        assert second_body["messages"][2] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": '{"sessions": 42}'}]}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_unanswered_tool_call_is_rejected_like_the_real_api(fake_llm: FakeLLM, provider: str) -> None:
    fake_llm.play(Reply(text="never sent"))
    llm = llm_for(fake_llm, provider)
    history = [Message("user", "q"), Message("assistant", "", (ToolCall("call_9", "get_metric", {}),)),
               Message("user", "and?")]
    try:
        with pytest.raises(LLMError) as caught:
            await llm.complete("sys", history, [STATS_TOOL])
    finally:
        await llm.close()
    assert caught.value.status == 400 and not caught.value.retryable


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_wrong_key_is_401_and_not_retried(fake_llm: FakeLLM, provider: str) -> None:
    llm = llm_for(fake_llm, provider, key="sk-wrong")
    try:
        with pytest.raises(LLMError) as caught:
            await llm.complete("sys", [Message("user", "hi")])
    finally:
        await llm.close()
    assert caught.value.status == 401 and not caught.value.retryable
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [401, 429, 500, 529])
async def test_scripted_errors_map_to_llm_error(fake_llm: FakeLLM, provider: str, status: int) -> None:
    fake_llm.play(Reply(status=status))
    llm = llm_for(fake_llm, provider, retries=2)
    try:
        with pytest.raises(LLMError) as caught:
            await llm.complete("sys", [Message("user", "hi")])
    finally:
        await llm.close()
    assert caught.value.status == status
    assert caught.value.retryable is (status != 401)
    # x-should-retry: false wins over max_retries, as with the real APIs' non-retryable answers.
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_provider_times_out(fake_llm: FakeLLM, provider: str) -> None:
    fake_llm.play(Reply(text="too late", delay=3.0))
    llm = llm_for(fake_llm, provider, timeout=0.3, retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(LLMError) as caught:
            await llm.complete("sys", [Message("user", "hi")])
    finally:
        await llm.close()
    assert time.monotonic() - started < 2.5
    assert caught.value.status is None and caught.value.retryable


async def test_the_fake_checks_messages_requests_like_the_real_api(fake_llm: FakeLLM) -> None:
    fake_llm.play(Reply(text="ok"), Reply(text="ok"))
    async with aiohttp.ClientSession() as session:
        no_max = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{fake_llm.url}/v1/messages", json=no_max, headers={"X-Api-Key": FAKE_KEY}) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["type"] == "error" and "max_tokens" in body["error"]["message"]
        # Either header carries the key, on either route.
        good = {**no_max, "max_tokens": 10}
        async with session.post(f"{fake_llm.url}/messages", json=good,
                                headers={"Authorization": f"Bearer {FAKE_KEY}"}) as resp:
            assert resp.status == 200 and (await resp.json())["content"][0]["text"] == "ok"
        async with session.post(f"{fake_llm.url}/v1/chat/completions", json=no_max,
                                headers={"X-Api-Key": FAKE_KEY}) as resp:
            assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "ok"
        async with session.post(f"{fake_llm.url}/v1/chat/completions", json=no_max) as resp:
            assert resp.status == 401 and resp.headers["x-should-retry"] == "false"
    assert len(fake_llm.requests) == 4


def test_no_provider_means_no_llm() -> None:
    assert make_llm(LLMConfig("none")) is None
    assert llm_config(load_settings({})).provider == "none"


@pytest.mark.parametrize(("env", "expected"), [
    ({"OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_MODEL": "llama3",
      "FLOWTEL_LLM_TIMEOUT": "7"}, ("openai", "sk-1", "http://127.0.0.1:11434/v1", "llama3", 7.0)),
    ({"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_MODEL": "claude-x"}, ("anthropic", "sk-ant", None, "claude-x", 20.0)),
])
def test_llm_config_comes_from_settings(env: dict[str, str], expected: tuple[Any, ...]) -> None:
    config = llm_config(load_settings(env))
    assert (config.provider, config.api_key, config.base_url, config.model, config.timeout_s) == expected
    assert config.max_retries == 1


@pytest.mark.parametrize(("provider", "adapter"), [("openai", OpenAIChat), ("anthropic", AnthropicMessages),
                                                   ("none", type(None))])
async def test_the_app_holds_the_configured_llm(aiohttp_client: Any, tmp_path: Path, fake_llm: FakeLLM,
                                                provider: str, adapter: type) -> None:
    overrides = fake_llm.settings_for(provider) if provider != "none" else {}
    client = await aiohttp_client(create_app(make_settings(tmp_path, **overrides)))
    llm = client.app[LLM_CLIENT]
    if provider == "none":
        assert llm is None
        return
    # The adapter, wrapped so that every call shows in /metrics.
    assert isinstance(llm, CountedLLM) and isinstance(llm.inner, adapter)
    assert llm.model == f"fake-{provider}-model" and llm.provider == provider


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_llm_calls_and_tokens_are_counted_in_metrics(aiohttp_client: Any, tmp_path: Path, fake_llm: FakeLLM,
                                                           provider: str) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, **fake_llm.settings_for(provider))))
    llm = client.app[LLM_CLIENT]
    assert llm is not None
    fake_llm.play(Reply(text="hello", input_tokens=30, output_tokens=7), Reply(status=401))
    assert (await llm.complete("system", [Message("user", "hi")], max_tokens=50)).text == "hello"
    with pytest.raises(LLMError):
        await llm.complete("system", [Message("user", "hi")], max_tokens=50)
    text = await (await client.get("/metrics")).text()
    assert f'flowtel_llm_calls_total{{outcome="ok",provider="{provider}"}} 1.0' in text
    assert f'flowtel_llm_calls_total{{outcome="error_401",provider="{provider}"}} 1.0' in text
    assert f'flowtel_llm_tokens_total{{direction="input",provider="{provider}"}} 30.0' in text
    assert f'flowtel_llm_tokens_total{{direction="output",provider="{provider}"}} 7.0' in text
