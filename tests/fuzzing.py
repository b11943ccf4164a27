"""Shared by the property, schemathesis and security suites: a real `python -m server` subprocess on a free loopback
port over files in a temporary directory, a blocking HTTP helper for it, and SQLite row counts read from the file."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from analytics import sqlitelib

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
READY_TIMEOUT = 30.0
# Not aiohttp's or requests' default agent, which the server flags as a bot.
BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0 Safari/537.36")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Answer:
    """A finished HTTP exchange: status, headers (case-insensitive lookup) and the raw body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


class ServerProcess:
    """`python -m server` on a free loopback port; its log, SQLite and DuckDB files live in `directory`."""

    def __init__(self, directory: Path, extra_env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.db = directory / "flowtel.db"
        self.log_path = directory / "server.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Spawn and poll /healthz until it answers 200; another port if the first was taken meanwhile."""
        for _attempt in range(3):
            self._spawn()
            if self._wait_ready():
                return
        raise RuntimeError(f"the server never became ready\n{self.log_tail()}")

    def _spawn(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FLOWTEL_", "OPENAI_", "ANTHROPIC_")) and k not in ("PORT", "HOST", "DATABASE_URL")}
        env.update(
            PORT=str(self.port),
            HOST="127.0.0.1",
            DATABASE_URL=f"sqlite:{self.db}",
            FLOWTEL_ADMIN_TOKEN=ADMIN_TOKEN,
            FLOWTEL_DUCKDB_PATH=str(self.directory / "flowtel.duckdb"),
            FLOWTEL_DUCKDB_MEMORY="256MB",
            FLOWTEL_SQLITE_SYNCHRONOUS="NORMAL",
            FLOWTEL_LLM_PROVIDER="none",
            # Thousands of generated requests from one address and one token: the abuse limits would answer most
            # of them with 429 and hide the behaviour under test (429 itself is documented and tested elsewhere).
            FLOWTEL_RATE_LIMIT_IP="0",
            FLOWTEL_RATE_LIMIT_SHOP="0",
            FLOWTEL_RATE_LIMIT_READ="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if b"address already in use" in self.log_path.read_bytes().lower():
                    return False
                raise RuntimeError(f"the server exited with {self.proc.returncode} while starting\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/healthz", timeout=1).status == 200:
                    return True
            time.sleep(0.05)
        raise RuntimeError(f"/healthz did not answer 200 within {READY_TIMEOUT} s\n{self.log_tail()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> Answer:
        """One request on a fresh connection; `path` is sent exactly as given (no normalisation, no quoting)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"User-Agent": BROWSER_UA, **(headers or {})})
            resp = conn.getresponse()
            return Answer(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers; no server outlives its tests."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "server log tail:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def create_shop_token(server: ServerProcess, shop_id: str, name: str) -> tuple[str, str]:
    """(token id, secret) of a new shop token, made through POST /api/tokens."""
    answer = server.request("POST", "/api/tokens", orjson.dumps({"shopId": shop_id, "name": name}),
                            {**admin_headers(), "Content-Type": "application/json"})
    assert answer.status == 201, answer.body
    doc = answer.json()
    return doc["id"], doc["token"]


def stored_count(db: Path) -> int:
    """Committed events, read from the SQLite file itself (a WAL reader sees exactly what was committed)."""
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])
    finally:
        conn.close()


def stored_ids(db: Path, ids: list[str]) -> set[str]:
    """Which of `ids` the SQLite file holds."""
    if not ids:
        return set()
    conn = sqlitelib.connect(f"file:{db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(ids))
        return {row[0] for row in conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", ids)}
    finally:
        conn.close()
