"""Durability of a real server process: SIGKILL under load loses no acknowledged event and leaves no partial
batch; SIGTERM under load exits 0 after committing everything it acknowledged.

Each test starts `python -m server` as a subprocess on a free loopback port with its SQLite file in tmp_path,
drives it with concurrent aiohttp clients posting single events, arrays and envelopes with client-chosen ids,
and then checks the SQLite file itself (and the restarted server's API) against the ledger of what was
acknowledged. Readiness is polled on /healthz; the only fixed wait is the length of the load phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uuid_utils

from analytics import sqlitelib

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "crash-test-admin-token-0123456789"
CLIENTS = 32
LOAD_SECONDS = 2.0
READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 5.0
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
)

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ServerProcess:
    """`python -m server` on a free loopback port, its output in a log file next to the database."""

    def __init__(self, db: Path, extra_env: dict[str, str]) -> None:
        self.db = db
        self.extra_env = extra_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.log_path = db.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        self.port = free_port()
        self.starts += 1
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FLOWTEL_", "OPENAI_", "ANTHROPIC_")) and k not in ("PORT", "HOST", "DATABASE_URL")}
        env.update(
            PORT=str(self.port),
            HOST="127.0.0.1",
            DATABASE_URL=f"sqlite:{self.db}",
            FLOWTEL_ADMIN_TOKEN=ADMIN_TOKEN,
            FLOWTEL_DUCKDB_PATH=str(self.db.with_suffix(".duckdb")),
            FLOWTEL_LLM_PROVIDER="none",
            # The load comes from one address far above a browser's rate; this test is about durability.
            FLOWTEL_RATE_LIMIT_IP="0",
            FLOWTEL_RATE_LIMIT_SHOP="0",
            FLOWTEL_RATE_LIMIT_READ="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Spawn and poll /healthz until it answers 200; respawn on another port if the first one was taken."""
        for _attempt in range(3):
            self._spawn()
            if await self._wait_ready(session):
                return
        pytest.fail(f"the server never became ready\n{self.log_tail()}")

    async def _wait_ready(self, session: aiohttp.ClientSession) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if b"address already in use" in self.log_path.read_bytes().lower():
                    return False
                pytest.fail(f"the server exited with {self.proc.returncode} while starting\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.02)
        pytest.fail(f"/healthz did not answer 200 within {READY_TIMEOUT} s\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None when the process is still running after `timeout` seconds."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.proc.poll()

    def stop(self) -> None:
        """Teardown: make sure no server outlives its test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "server log tail:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, one tuple of ids per request."""

    sent: list[tuple[str, ...]] = field(default_factory=list)
    acked: list[tuple[str, ...]] = field(default_factory=list)
    bodies: dict[tuple[str, ...], bytes] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    inflight: int = 0

    @property
    def acked_ids(self) -> set[str]:
        return {event_id for batch in self.acked for event_id in batch}

    @property
    def sent_ids(self) -> set[str]:
        return {event_id for batch in self.sent for event_id in batch}

    @property
    def unanswered(self) -> list[tuple[str, ...]]:
        """Requests that got no 2xx: refused, cut off by the kill, or still in flight when it came."""
        acked = set(self.acked)
        return [batch for batch in self.sent if batch not in acked]


def _event(rng: random.Random, session_id: str) -> dict[str, Any]:
    event_id = str(uuid_utils.uuid7()) if rng.random() < 0.5 else str(uuid.uuid4())
    event: dict[str, Any] = {
        "id": event_id,
        "shopId": f"shop-{rng.randrange(8)}",
        "sessionId": session_id,
        "eventType": rng.choice(("pageview", "product_viewed", "add_to_cart", "purchase", "custom_thing")),
        "url": f"https://shop.example/products/{rng.randrange(1000)}?ref=crash",
        "properties": {"productId": f"p{rng.randrange(100)}", "price": rng.randrange(100, 10000) / 100},
        "userAgent": rng.choice(USER_AGENTS),
    }
    if rng.random() < 0.5:
        event["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event


def _request_body(rng: random.Random) -> tuple[tuple[str, ...], bytes]:
    """A single event object, an array, or a sentAt envelope, each event with a client-chosen id."""
    session_id = uuid.uuid4().hex
    shape = rng.random()
    if shape < 0.4:
        event = _event(rng, session_id)
        return (event["id"],), orjson.dumps(event)
    events = [_event(rng, session_id) for _ in range(rng.randint(2, 25))]
    ids = tuple(e["id"] for e in events)
    if shape < 0.7:
        return ids, orjson.dumps(events)
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ids, orjson.dumps({"events": events, "sentAt": sent_at})


async def _client(session: aiohttp.ClientSession, url: str, ledger: Ledger, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        ids, body = _request_body(rng)
        ledger.sent.append(ids)
        ledger.bodies[ids] = body
        ledger.inflight += 1
        try:
            async with session.post(f"{url}/api/events", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                payload = await resp.read()
                ledger.statuses[resp.status] += 1
                if 200 <= resp.status < 300:
                    _check_ack(ids, resp.status, orjson.loads(payload))
                    ledger.acked.append(ids)
        except (aiohttp.ClientError, OSError) as exc:
            ledger.errors[type(exc).__name__] += 1
            # The server is gone or going: back off a little instead of spinning on refused connections.
            await asyncio.sleep(0.005)
        finally:
            ledger.inflight -= 1


def _check_ack(ids: tuple[str, ...], status: int, payload: Any) -> None:
    """A 2xx must describe exactly the events sent; ids are fresh, so every one is new."""
    if isinstance(payload, dict) and "results" in payload:
        assert status == 201
        assert payload["accepted"] == len(ids) and payload["duplicates"] == 0
        assert [r["id"] for r in payload["results"]] == list(ids)
    else:
        assert (status, payload["id"]) == (201, ids[0])


@contextlib.asynccontextmanager
async def load(url: str, ledger: Ledger, session: aiohttp.ClientSession) -> AsyncIterator[asyncio.Event]:
    """Run CLIENTS concurrent posting clients until the block ends (set the yielded event to stop them early)."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_client(session, url, ledger, stop, seed)) for seed in range(CLIENTS)]
    try:
        yield stop
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a failed ack check in a client fails the test here
        assert not pending, "load clients did not finish within 15 s of the stop"


async def wait_for_acks(ledger: Ledger, count: int, timeout: float = 15.0) -> None:
    """Poll until the load has had `count` requests acknowledged, so a kill always lands on a busy server."""
    deadline = time.monotonic() + timeout
    while len(ledger.acked) < count:
        assert time.monotonic() < deadline, f"only {len(ledger.acked)} requests acknowledged in {timeout} s"
        await asyncio.sleep(0.01)


def stored_ids(db: Path) -> list[str]:
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events")]
    finally:
        conn.close()


def integrity(db: Path) -> list[str]:
    conn = sqlitelib.connect(db)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def assert_ledger_matches(db: Path, ledger: Ledger) -> set[str]:
    """Every acknowledged id is stored, every request is all-or-nothing, nothing unknown is stored."""
    ids = stored_ids(db)
    stored = set(ids)
    assert len(ids) == len(stored), "an event id is stored twice"
    assert stored <= ledger.sent_ids, f"{len(stored - ledger.sent_ids)} stored ids were never sent"
    lost = ledger.acked_ids - stored
    assert not lost, f"{len(lost)} of {len(ledger.acked_ids)} acknowledged events are missing, e.g. {sorted(lost)[:3]}"
    partial = [batch for batch in ledger.sent if 0 < sum(i in stored for i in batch) < len(batch)]
    assert not partial, f"{len(partial)} requests are partly stored, e.g. {partial[0]}"
    assert integrity(db) == ["ok"]
    return stored


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.parametrize("synchronous", [None, "NORMAL"], ids=["synchronous-default-FULL", "synchronous-NORMAL"])
async def test_sigkill_under_load_loses_no_acknowledged_event(
    tmp_path: Path, servers: list[ServerProcess], synchronous: str | None
) -> None:
    db = tmp_path / "crash.db"
    server = ServerProcess(db, {"FLOWTEL_SQLITE_SYNCHRONOUS": synchronous} if synchronous else {})
    servers.append(server)
    ledger = Ledger()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        async with load(server.url, ledger, session) as stop:
            await wait_for_acks(ledger, 50)
            await asyncio.sleep(LOAD_SECONDS)  # the load phase itself, not a synchronisation
            inflight_at_kill = ledger.inflight
            server.signal(signal.SIGKILL)
            stop.set()
            assert await server.wait_exit(EXIT_TIMEOUT) == -signal.SIGKILL
        assert inflight_at_kill > 0, "the kill should land while requests are in flight"
        assert ledger.errors, "requests in flight at the kill should fail, not succeed"
        assert set(ledger.statuses) <= {200, 201}, f"unexpected statuses under load: {ledger.statuses}"
        acked_before_restart = len(ledger.acked_ids)
        assert acked_before_restart >= 200, f"only {acked_before_restart} events acknowledged before the kill"

        await server.start(session)  # recovery happens here, as in production
        stored = assert_ledger_matches(db, ledger)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        # The restarted server serves what was acknowledged, the last acknowledgements before the kill included.
        flat = [event_id for batch in ledger.acked for event_id in batch]
        sample = flat[-40:] + random.Random(7).sample(flat, min(40, len(flat)))
        for event_id in sample:
            async with session.get(f"{server.url}/api/events/{event_id}", headers=admin) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["id"] == event_id

        # A client retrying what got no answer is safe: stored requests come back duplicate, lost ones created.
        retries = ledger.unanswered
        assert retries, "some requests must have been cut off by the kill"
        for ids in retries:
            async with session.post(f"{server.url}/api/events", data=ledger.bodies[ids],
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status in (200, 201), await resp.text()
                payload = await resp.json()
            was_stored = ids[0] in stored
            if "results" in payload:
                expected = "duplicate" if was_stored else "created"
                assert [r["status"] for r in payload["results"]] == [expected] * len(ids)
            else:
                assert resp.status == (200 if was_stored else 201)
        assert set(stored_ids(db)) == stored | {i for ids in retries for i in ids}

        server.signal(signal.SIGTERM)
        assert await server.wait_exit(EXIT_TIMEOUT) == 0, server.log_tail()
    assert integrity(db) == ["ok"]


async def test_sigterm_under_load_commits_everything_acknowledged_and_exits_0(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    db = tmp_path / "graceful.db"
    server = ServerProcess(db, {})
    servers.append(server)
    ledger = Ledger()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await server.start(session)
        async with load(server.url, ledger, session) as stop:
            await wait_for_acks(ledger, 50)
            await asyncio.sleep(LOAD_SECONDS / 2)  # the load phase itself, not a synchronisation
            inflight_at_term = ledger.inflight
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            code = await server.wait_exit(EXIT_TIMEOUT)
            took = time.monotonic() - started
            stop.set()
        assert code == 0, f"exit code {code} after {took:.1f} s\n{server.log_tail()}"
    assert inflight_at_term > 0, "SIGTERM should land while requests are in flight"
    assert set(ledger.statuses) <= {200, 201, 503}, f"unexpected statuses: {ledger.statuses}"
    assert_ledger_matches(db, ledger)
    log = server.log_path.read_text(errors="replace")
    for symptom in ("Error handling request", "Task was destroyed but it is pending", "never retrieved"):
        assert symptom not in log, f"{symptom!r} in the server log during shutdown\n{server.log_tail()}"
