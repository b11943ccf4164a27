"""Request ids on every response, JSON access log lines without client addresses, and the Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_TOKEN

BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"}


async def test_every_response_carries_a_request_id(client: TestClient, admin: dict[str, str]) -> None:
    ids = set()
    for resp in (await client.get("/healthz"), await client.get("/nope"), await client.get("/api/events"),
                 await client.post("/api/events", data=b"{", headers=BROWSER),
                 await client.get("/api/events", headers=admin)):
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"]), resp.headers
        ids.add(resp.headers["X-Request-Id"])
    assert len(ids) == 5


async def test_a_sane_incoming_request_id_is_echoed_and_a_hostile_one_replaced(client: TestClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-Id": "edge-7f3a.42:1"})
    assert resp.headers["X-Request-Id"] == "edge-7f3a.42:1"
    resp = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith <html>"})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])


async def test_metrics_cover_ingestion_rejections_latency_and_the_mirror(client: TestClient) -> None:
    await client.post("/api/events", json={"shopId": "s", "sessionId": "x", "eventType": "page_view",
                                           "id": "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d"}, headers=BROWSER)
    await client.post("/api/events", json={"shopId": "s", "sessionId": "x", "eventType": "page_view",
                                           "id": "0190a7e2-5b1c-7cc1-8d2a-3f4e5a6b7c8d"}, headers=BROWSER)
    await client.post("/api/events", data=b"[]", headers={**BROWSER, "Content-Type": "application/json"})
    text = await (await client.get("/metrics")).text()
    assert "flowtel_events_ingested_total 1.0" in text
    assert "flowtel_events_duplicates_total 1.0" in text
    assert 'flowtel_events_rejected_total{reason="validation_failed"} 1.0' in text
    assert 'flowtel_http_request_duration_seconds_count{method="POST",route="/api/events",status="201"} 1.0' in text
    for name in ("flowtel_write_queue_events", "flowtel_mirror_lag_events",
                 "flowtel_mirror_last_sync_timestamp_seconds", "flowtel_mirror_last_duration_seconds"):
        assert re.search(rf"^{name} ", text, re.M), name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_access_log_is_one_json_object_per_request_without_addresses(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTEL_", "OPENAI_", "ANTHROPIC_"))}
    env.update(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=f"sqlite:{tmp_path}/f.db", FLOWTEL_ACCESS_LOG="1",
               FLOWTEL_DUCKDB_PATH=str(tmp_path / "f.duckdb"), FLOWTEL_ADMIN_TOKEN=ADMIN_TOKEN,
               FLOWTEL_LLM_PROVIDER="none")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    resp.read()
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"server did not start: {log.read_text()}")
                time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/stats", headers={"X-Request-Id": "trace-1"})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=5)
        failed.value.close()
        assert failed.value.code == 401 and failed.value.headers["X-Request-Id"] == "trace-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line["requestId"] == "trace-1")
    assert entry["method"] == "GET" and entry["path"] == "/api/stats" and entry["status"] == 401
    assert entry["ms"] >= 0 and entry["bytes"] > 0
    assert "127.0.0.1" not in log.read_text().replace(f"http://127.0.0.1:{port}", "")
    assert logging.getLogger("flowtel.access").propagate is True  # this process never configured it
