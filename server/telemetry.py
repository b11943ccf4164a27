"""Process telemetry in the Prometheus format: a per-app registry, request latency and ingestion counters."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from analytics.llm import LLM, Completion, LLMError, Message, ToolSpec
from server.errors import ERROR_CODE, Handler

# The request's id: the caller's X-Request-Id when it is a sane token, else a new one; echoed on every response.
REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _StateCollector(Collector):
    """Reads live numbers (store counters, queue depth, mirror status) at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        state = self._read()
        yield CounterMetricFamily("flowtel_events_ingested", "Events committed to SQLite.",
                                  value=state.get("ingested", 0))
        yield CounterMetricFamily("flowtel_events_duplicates", "Events not stored again because their id existed.",
                                  value=state.get("duplicates", 0))
        yield GaugeMetricFamily("flowtel_write_queue_events", "Events waiting for the SQLite writer.",
                                value=state.get("queue", 0))
        yield GaugeMetricFamily("flowtel_mirror_lag_events", "Committed events not yet in DuckDB.",
                                value=state.get("lag", 0))
        yield GaugeMetricFamily("flowtel_mirror_last_sync_timestamp_seconds", "When the mirror last synced.",
                                value=state.get("last_sync", 0))
        yield GaugeMetricFamily("flowtel_mirror_last_duration_seconds", "Duration of the last mirror catch-up.",
                                value=state.get("mirror_duration", 0.0))


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.rejected = Counter("flowtel_events_rejected", "Ingestion requests rejected, by error code.",
                                ["reason"], registry=self.registry)
        self.rate_limited = Counter("flowtel_rate_limited", "Requests refused by a rate limit, by limit.",
                                    ["limit"], registry=self.registry)
        self.latency = Histogram("flowtel_http_request_duration_seconds", "HTTP request latency by route.",
                                 ["method", "route", "status"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.llm_calls = Counter("flowtel_llm_calls", "LLM requests (insights narration and chat), by outcome.",
                                 ["provider", "outcome"], registry=self.registry)
        self.llm_tokens = Counter("flowtel_llm_tokens", "LLM tokens used, input and output.",
                                  ["provider", "direction"], registry=self.registry)
        self._state: Callable[[], dict[str, Any]] = dict

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        self._state = read
        self.registry.register(_StateCollector(lambda: self._state()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def make_telemetry_middleware(telemetry: Telemetry) -> Any:
    # Request ids: a random per-process prefix and a counter, 32 hex digits. Unique without a urandom syscall per
    # request (uuid4 costs one, on the hottest path we have).
    prefix = secrets.token_hex(8)
    counter = itertools.count(1)

    histograms: dict[tuple[str, str, int], Any] = {}

    def next_id() -> str:
        return f"{prefix}{next(counter):016x}"

    @web.middleware
    async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-Id")
        request_id = given if given is not None and _REQUEST_ID_RE.fullmatch(given) else next_id()
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 3xx that handlers raise pass through the error middleware
            exc.headers["X-Request-Id"] = request_id
            raise
        response.headers["X-Request-Id"] = request_id
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        key = (request.method, name, response.status)
        histogram = histograms.get(key)
        if histogram is None:
            # labels() takes a lock and builds a key on every call; one lookup per (method, route, status) is enough.
            histogram = histograms[key] = telemetry.latency.labels(key[0], name, str(key[2]))
        histogram.observe(time.perf_counter() - started)
        if name == "/api/events" and request.method == "POST" and response.status >= 400:
            telemetry.rejected.labels(request.get(ERROR_CODE, str(response.status))).inc()
        return response

    return telemetry_middleware


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON object per request on the `flowtel.access` logger. No client address: we store no IPs, logs included."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(orjson.dumps({
            "requestId": request.get(REQUEST_ID),
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "ms": round(time * 1000, 3),
            "bytes": response.body_length,
            "userAgent": request.headers.get("User-Agent"),
        }).decode())


def access_logger() -> logging.Logger:
    """The access log: bare JSON lines on stderr (no timestamp prefix), so log shippers parse each line as is."""
    logger = logging.getLogger("flowtel.access")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


class CountedLLM:
    """The app's LLM with every call counted in /metrics: calls by outcome, and tokens in and out."""

    def __init__(self, inner: LLM, telemetry: Telemetry) -> None:
        self.inner = inner
        self._telemetry = telemetry
        self.provider = inner.provider
        self.model = inner.model

    async def complete(self, system: str, messages: list[Message], tools: list[ToolSpec] | None = None, *,
                       max_tokens: int = 1024) -> Completion:
        try:
            completion = await self.inner.complete(system, messages, tools, max_tokens=max_tokens)
        except LLMError as exc:
            outcome = f"error_{exc.status}" if exc.status else "error"
            self._telemetry.llm_calls.labels(self.provider, outcome).inc()
            raise
        self._telemetry.llm_calls.labels(self.provider, "ok").inc()
        self._telemetry.llm_tokens.labels(self.provider, "input").inc(completion.usage.input_tokens)
        self._telemetry.llm_tokens.labels(self.provider, "output").inc(completion.usage.output_tokens)
        return completion

    async def close(self) -> None:
        await self.inner.close()
