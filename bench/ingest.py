"""Ingestion benchmark: the real Flowtel server under wrk, against its two ceilings.

    make bench-ingest        # = .venv/bin/python -m bench.ingest  (see --help for options)

Over loopback, with `wrk -t1` and fresh time-ordered event ids in every request, it measures
  (a) single-event POST /api/events and (b) 100-event batch POSTs on the real server (default settings:
      synchronous FULL), against an empty store and against a store already holding 10M events;
  (c) a trivial aiohttp server (separate process) that parses the same JSON with orjson and answers 202
      without storing, driven by the same wrk scripts: the parse-only ceiling;
  (e) the floor: (c) plus the server's own group commit (server.store.Store), answering after the commit, with no
      validation, middleware, CORS or event-shaped answer (single events, empty store): the most (a) ÷ (c) can be;
  (d) plain executemany of the same rows (the server's SQLite library), 1,000 per transaction, into the schema that
      server.store.prepare_database creates, empty and at 10M: the storage ceiling;
and prints events/s, requests/s, p50/p99 latency and the ratios a ÷ c (target >= 0.5) and b ÷ d
(target >= 0.6) for both store sizes, and e ÷ c. bench/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from analytics import sqlitelib

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "bench" / "results"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
BATCH = 100
TXN_ROWS = 1000
PREFILL_CHUNK = 100_000
PREFILL_DAYS = 90

SHOPS = tuple(f"shop-{i:03d}" for i in range(300))
# A tracker sees a few hundred distinct user agents per shop; these are the common shapes, one crawler included.
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 "
    "Chrome/117.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
# (eventType as a tracker sends it, the canonical type stored, weight, URL path, properties); @N@ is a number.
EVENT_KINDS = (
    ("page_view", "page_view", 5, "/collections/c-@N@", '{"title":"Collection @N@"}'),
    ("product_viewed", "product_view", 3, "/products/p-@N@",
     '{"productId":"p-@N@","name":"Product @N@","price":@N@.99,"currency":"EUR"}'),
    ("add_to_cart", "add_to_cart", 1, "/products/p-@N@",
     '{"productId":"p-@N@","name":"Product @N@","price":@N@.99,"quantity":1,"currency":"EUR"}'),
    ("checkout_completed", "purchase", 1, "/checkouts/o-@N@/thank-you",
     '{"orderId":"o-@N@","value":@N@.50,"currency":"EUR","items":[{"productId":"p-@N@","name":"Product @N@",'
     '"price":@N@.50,"quantity":1}]}'),
)
EVENT_JSON = ('{"id":"%s","shopId":"%s","sessionId":"%s","eventType":"%s","url":"https://%s.example.com%s'
              '?utm_source=newsletter","referrer":"https://www.google.com/","userAgent":"%s","timestamp":"%s",'
              '"properties":%s}')
URL_SUFFIX = "?utm_source=newsletter"
REFERRER = "https://www.google.com/"


# ---------------------------------------------------------------------------------------------------- ids, rows


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def time_ordered_id(ms: int, nonce: int, counter: int) -> str:
    """UUIDv7 layout: 48-bit ms time, version 7, then a run nonce and a counter, so ids sort by (time, counter)."""
    t = f"{ms:012x}"
    return f"{t[:8]}-{t[8:]}-7{nonce >> 12 & 0xFFF:03x}-{8 | (nonce >> 10 & 3):x}{nonce & 0x3FF:03x}-{counter:012x}"


class RowFactory:
    """Stored event rows, column for column what the server writes for the wrk workload (INSERT_EVENT order)."""

    def __init__(self, seed: int, active_sessions: int = 5000) -> None:
        from server.context import parse_user_agent

        self.rng = random.Random(seed)
        self.nonce = self.rng.getrandbits(24)
        self.counter = 0
        self.agents = [(ua, parse_user_agent(ua)) for ua in USER_AGENTS]
        self.kinds = [kind for kind in EVENT_KINDS for _ in range(kind[2])]
        self.sessions = [self._session() for _ in range(active_sessions)]

    def _session(self) -> tuple[str, str, str, int]:
        rng = self.rng
        return (rng.choice(SHOPS), f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(128):032x}",
                rng.randrange(len(self.agents)))

    def rows(self, count: int, start_ms: int, end_ms: int) -> list[tuple[object, ...]]:
        """`count` rows with timestamps spread evenly over [start_ms, end_ms] and ids in the same order."""
        rng, sessions, kinds, agents = self.rng, self.sessions, self.kinds, self.agents
        step = (end_ms - start_ms) / count
        out: list[tuple[object, ...]] = []
        for i in range(count):
            ms = start_ms + int(i * step)
            j = rng.randrange(len(sessions))
            if rng.random() < 0.125:  # sessions end and new ones start
                sessions[j] = self._session()
            shop, session_id, visitor, agent = sessions[j]
            ua, info = agents[agent]
            sent_type, stored_type, _, path_tpl, props_tpl = kinds[rng.randrange(len(kinds))]
            n = str(rng.randint(1, 5000))
            path = path_tpl.replace("@N@", n)
            self.counter += 1
            out.append((
                time_ordered_id(ms, self.nonce, self.counter), shop, session_id, stored_type, sent_type,
                props_tpl.replace("@N@", n), ms, f"https://{shop}.example.com{path}{URL_SUFFIX}", REFERRER, ua,
                ms, path, info.browser, info.os, info.device, None, int(info.is_bot), visitor,
            ))
        return out


# ---------------------------------------------------------------------------------------------------- wrk scripts


def _lua_str(value: str) -> str:
    assert "]==]" not in value
    return f"[==[{value}]==]"


LUA_TEMPLATE = string.Template(r"""-- Generated by bench/ingest.py.
-- POST /api/events, $batch event(s) per request, every id fresh.
local BATCH = $batch
local TS8, TS4 = "$ts8", "$ts4"
local NONCE = "$nonce"
local TIMESTAMP = "$timestamp"
local EVENT = $event
local SHOPS = {$shops}
local UAS = {
  $uas
}
-- {eventType as sent, path format, properties format}, repeated by weight
local KINDS = {
  $kinds
}
local SESSIONS = {}
local counter = 0
local threads = 0
local headers = {["Content-Type"] = "application/json"}
tid = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local function new_session()
  return {string.format("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
                        math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)),
          SHOPS[math.random(#SHOPS)], UAS[math.random(#UAS)]}
end

function init(args)
  math.randomseed($seed + tid)
  for i = 1, 5000 do SESSIONS[i] = new_session() end
end

-- UUIDv7 layout: the run's start in ms, version 7, a run nonce, the thread, then a 48-bit counter.
local function next_id()
  counter = counter + 1
  return string.format("%s-%s-7%s-8%03x-%06x%06x", TS8, TS4, NONCE, tid % 4096,
                       math.floor(counter / 16777216), counter % 16777216)
end

local function event(s)
  local k = KINDS[math.random(#KINDS)]
  local n = math.random(1, 5000)
  return string.format(EVENT, next_id(), s[2], s[1], k[1], s[2], string.format(k[2], n, n, n),
                       s[3], TIMESTAMP, string.format(k[3], n, n, n, n, n, n))
end

function request()
  local i = math.random(#SESSIONS)
  if math.random(8) == 1 then SESSIONS[i] = new_session() end
  local s = SESSIONS[i]
  local body
  if BATCH == 1 then
    body = event(s)
  else
    local parts = {}
    for j = 1, BATCH do parts[j] = event(s) end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    math.floor(latency.mean), latency.max))
end
""")


def lua_script(batch: int, seed: int, start_ms: int, nonce: int, timestamp: str) -> str:
    """A wrk script posting `batch` events per request (a bare object when 1), every event with a fresh id."""
    kinds = ",\n  ".join(
        f"{{{_lua_str(sent)}, {_lua_str(path.replace('@N@', '%d'))}, {_lua_str(props.replace('@N@', '%d'))}}}"
        for sent, _stored, weight, path, props in EVENT_KINDS
        for _ in range(weight)
    )
    t = f"{start_ms:012x}"
    return LUA_TEMPLATE.substitute(
        batch=batch, ts8=t[:8], ts4=t[8:], nonce=f"{nonce & 0xFFF:03x}", timestamp=timestamp,
        event=_lua_str(EVENT_JSON), shops=", ".join(_lua_str(shop) for shop in SHOPS),
        uas=",\n  ".join(_lua_str(ua) for ua in USER_AGENTS), kinds=kinds, seed=seed,
    )


class ScriptMaker:
    """Writes a fresh wrk script per run: a new start time and nonce, so no id is ever sent twice."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.last_ms = 0
        self.count = 0

    def make(self, batch: int) -> Path:
        start = max(now_ms(), self.last_ms + 1)
        self.last_ms = start
        self.count += 1
        path = self.directory / f"post-{batch}-{self.count}.lua"
        path.write_text(lua_script(batch, seed=secrets.randbits(30), start_ms=start, nonce=secrets.randbits(12),
                                   timestamp=iso_ms(start)))
        return path


# ---------------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def pinned(cpu: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


class Service:
    """A server subprocess on a loopback port, its output in a log file; ready once `ready_path` answers 200."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, port: int, ready_path: str) -> None:
        self.port = port
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: {shlex.join(cmd)} exited with {self.proc.returncode}; see {log}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}{ready_path}", timeout=2) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"bench: {shlex.join(cmd)} did not become ready; see {log}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            doc: dict[str, object] = json.loads(resp.read())
        return doc

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all its threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_flowtel(db: Path, log: Path, synchronous: str | None, cpu: str | None) -> Service:
    """The real server with default settings (only the store paths, port and admin token set)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTEL_")}
    env.update(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=f"sqlite:{db}", FLOWTEL_ADMIN_TOKEN=ADMIN_TOKEN,
               FLOWTEL_DUCKDB_PATH=str(duckdb_path(db)), FLOWTEL_LLM_PROVIDER="none",
               # wrk is one client address sending thousands of requests a second: the abuse limits are not measured.
               FLOWTEL_RATE_LIMIT_IP="0", FLOWTEL_RATE_LIMIT_SHOP="0")
    if synchronous:
        env["FLOWTEL_SQLITE_SYNCHRONOUS"] = synchronous
    return Service(pinned(cpu, [sys.executable, "-m", "server"]), env, log, port, "/healthz")


def start_parse_only(log: Path, cpu: str | None, access_log: bool = False) -> Service:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.ingest", "--parse-only-server", str(port)]
    if access_log:
        cmd.append("--parse-only-access-log")
    return Service(pinned(cpu, cmd), dict(os.environ), log, port, "/healthz")


def serve_parse_only(port: int, access_log: bool) -> None:
    """(c): the same aiohttp stack and JSON parse as the real handler, nothing else; 202 without storing.

    With access_log, logging is set up the way `flowtel serve` sets it up, so aiohttp logs every request.
    """
    import logging

    import orjson
    from aiohttp import web

    async def post_events(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        count = len(doc) if isinstance(doc, list) else 1
        return web.Response(status=202, body=orjson.dumps({"accepted": count}), content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_post("/api/events", post_events)
    app.router.add_get("/healthz", healthz)
    if access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        web.run_app(app, host="127.0.0.1", port=port, print=None)
    else:
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_floor(db: Path, log: Path, cpu: str | None) -> Service:
    port = free_port()
    return Service(pinned(cpu, [sys.executable, "-m", "bench.ingest", "--floor-server", str(port), str(db)]),
                   dict(os.environ), log, port, "/healthz")


def serve_floor(port: int, db: Path) -> None:
    """(e): (c) plus the server's own durable write path, and nothing else.

    The handler parses the single event, hands it to server.store.Store (the same group commit, synchronous FULL and
    pragmas as `flowtel serve`) and answers 201 only after the commit. No middleware, CORS, validation, enrichment or
    event-shaped response: what (a) adds on top of this is what the contract asks for.
    """
    import orjson
    from aiohttp import web

    from server.events import NewEvent
    from server.store import Store

    store_key = web.AppKey("store", Store)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store(db)
        await store.open()
        app[store_key] = store
        yield
        await store.close()

    async def post_events(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        now = time.time_ns() // 1_000_000
        event = NewEvent(doc["id"], doc["shopId"], doc["sessionId"], doc["eventType"], doc["eventType"], "{}", now,
                         None, None, None, now, None, None, None, "other", None, False, "")
        await request.app[store_key].insert_events([event])
        return web.Response(status=201, body=b'{"accepted":1}', content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.cleanup_ctx.append(store_ctx)
    app.router.add_post("/api/events", post_events)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------------- measuring


@dataclass
class Result:
    label: str
    store: str
    events_s: float
    requests_s: float | None
    p50_ms: float
    p99_ms: float
    note: str = ""


@dataclass
class Wrk:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    raw: dict[str, int]
    cpu: str = ""

    @property
    def ok_requests(self) -> int:
        return self.requests - self.raw["status"]


def machine_busy() -> float:
    """CPU seconds the whole machine spent in user, system and steal time (interrupt time left out)."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 0.25, patience: float = 180) -> str:
    """Wait (at most `patience` s) until the machine has been idle for 2 s: other jobs' load skews every figure."""
    began = time.monotonic()
    quiet = 0
    last = machine_busy()
    while quiet < 2:
        time.sleep(1)
        now = machine_busy()
        quiet = quiet + 1 if now - last < limit else 0
        last = now
        if time.monotonic() - began > patience:
            log(f"  the machine stayed busy for {patience:.0f} s: measuring anyway (see 'other' in the notes)")
            return "machine was busy"
    waited = time.monotonic() - began
    if waited > 4:
        log(f"  waited {waited:.0f} s for other jobs on the machine to finish")
    return ""


class CpuMeter:
    """Cores used during a run by the server, by wrk, and by anything else on the machine (noise to watch)."""

    def __init__(self, server: Service) -> None:
        self.server = server
        self.machine = machine_busy()
        self.own = server.cpu_seconds()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = usage.ru_utime + usage.ru_stime
        self.started = time.monotonic()

    def read(self) -> str:
        wall = time.monotonic() - self.started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = usage.ru_utime + usage.ru_stime - self.children
        server = self.server.cpu_seconds() - self.own
        other = max(0.0, machine_busy() - self.machine - wrk - server)
        return f"cores: server {server / wall:.2f}, wrk {wrk / wall:.2f}, other {other / wall:.2f}"


def run_wrk(service: Service, script: Path, seconds: float, args: argparse.Namespace) -> Wrk:
    cmd = pinned(args.wrk_cpu, ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s", "--latency",
                                "--timeout", "10s", "-s", str(script), f"{service.url}/api/events"])
    meter = CpuMeter(service)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = meter.read()
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"bench: wrk printed no summary:\n{out}")
    raw = json.loads(line[len("BENCH_JSON "):])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return Wrk(raw["requests"], raw["duration_us"] / 1e6, errors, raw["p50_us"] / 1000, raw["p99_us"] / 1000, raw,
               cpu)


def wrk_result(label: str, store: str, w: Wrk, batch: int, notes: Sequence[str] = ()) -> Result:
    ok = w.ok_requests
    extra = [f"{w.errors} wrk errors {w.raw}"] if w.errors else []
    return Result(label, store, ok * batch / w.seconds, ok / w.seconds, w.p50_ms, w.p99_ms,
                  "; ".join([w.cpu, *notes, *extra]))


def max_seq(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        value: int = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        return value
    finally:
        conn.close()


def measure_server(label: str, store: str, db: Path, batch: int, args: argparse.Namespace, scripts: ScriptMaker,
                   work: Path, start: Callable[[Path, Path], Service]) -> Result:
    """wrk against a storing server that start(db, log) launches; every acknowledged event must be in db after."""
    log = work / f"server-{scripts.count + 1}.log"
    server = start(db, log)
    try:
        busy = wait_quiet()
        run_wrk(server, scripts.make(batch), args.warmup, args)
        warm = max_seq(db)
        w = run_wrk(server, scripts.make(batch), args.duration, args)
    finally:
        code = server.stop()
    stored = max_seq(db) - warm
    notes = [busy] if busy else []
    if code != 0:
        notes.append(f"server exit code {code}")
    if stored < w.ok_requests * batch:
        notes.append(f"ONLY {stored} rows stored for {w.ok_requests * batch} acknowledged")
    text = log.read_text(errors="replace")
    errors = sum(1 for line in text.splitlines() if " ERROR " in line)
    if errors:
        notes.append(f"{errors} ERROR lines in {log}")
        first = next((line for line in text.splitlines() if "Error:" in line and " ERROR " not in line), "")
        if first:
            notes.append(f"e.g. {first.strip()[:100]}")
    else:
        log.unlink()
    return wrk_result(label, store, w, batch, notes)


def measure_parse_only(batch: int, service: Service, args: argparse.Namespace, scripts: ScriptMaker) -> Result:
    busy = wait_quiet()
    run_wrk(service, scripts.make(batch), args.warmup, args)
    w = run_wrk(service, scripts.make(batch), args.duration, args)
    what = "single-event" if batch == 1 else f"{batch}-event batch"
    return wrk_result(f"(c) parse-only aiohttp, {what}", "-", w, batch, [busy] if busy else [])


def measure_executemany(label: str, store: str, db: Path, seconds: float, synchronous: str) -> Result:
    """(d): rows built outside the clock; only executemany + COMMIT of each 1,000-row transaction is timed."""
    from server.store import INSERT_EVENT, prepare_database

    prepare_database(db)
    factory = RowFactory(seed=secrets.randbits(30))
    # The server's SQLite library (analytics.sqlitelib) and settings, so only what sits above SQLite differs.
    conn = sqlitelib.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA cache_size = -65536")
        busy = wait_quiet()
        timings: list[float] = []
        spent = 0.0
        while spent < seconds:
            start = now_ms()
            rows = factory.rows(TXN_ROWS, start, start)
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany(INSERT_EVENT, rows)
            conn.execute("COMMIT")
            took = time.perf_counter() - t0
            timings.append(took)
            spent += took
    finally:
        conn.close()
    timings.sort()
    p50 = timings[len(timings) // 2] * 1000
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))] * 1000
    note = "latency: one 1,000-row transaction" + (f"; {busy}" if busy else "")
    return Result(label, store, len(timings) * TXN_ROWS / spent, None, p50, p99, note)


# ---------------------------------------------------------------------------------------------------- the 10M store


def duckdb_path(db: Path) -> Path:
    return db.with_suffix(".duckdb")


def _digest(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:10]


def schema_key() -> str:
    from server.store import MIGRATIONS

    # The events table comes from the first migration; later ones add other tables, created when the server opens.
    return f"v1-{_digest(MIGRATIONS[0])}"


def mirror_key() -> str:
    """The DuckDB mirror's cache key: the code that defines its layout."""
    sources = [REPO / "analytics" / name for name in ("mirror.py", "source.py", "warehouse.py")]
    return _digest(*(p.read_text() for p in sources if p.exists()))


def fill_sqlite(path: Path, rows: int) -> None:
    from server.store import INSERT_EVENT, prepare_database

    log(f"building a store of {rows:,} events at {path} (once per schema version) ...")
    prepare_database(path)
    factory = RowFactory(seed=20261126)
    end = now_ms() - 3600_000
    start = end - PREFILL_DAYS * 86400_000
    span = end - start
    conn = sqlite3.connect(path, isolation_level=None)
    began = time.monotonic()
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a throwaway build: a crash just means building it again
        conn.execute("PRAGMA cache_size = -2000000")
        done = 0
        while done < rows:
            n = min(PREFILL_CHUNK, rows - done)
            chunk = factory.rows(n, start + span * done // rows, start + span * (done + n) // rows - 1)
            conn.execute("BEGIN")
            conn.executemany(INSERT_EVENT, chunk)
            conn.execute("COMMIT")
            done += n
            if done % 1_000_000 == 0 or done == rows:
                took = time.monotonic() - began
                log(f"  {done:,} rows in {took:.0f} s ({done / took:,.0f} rows/s)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def fill_mirror(db: Path, work: Path) -> None:
    """Let the server's own mirror copy the pre-filled events into DuckDB, as a long-running server would have."""
    log(f"mirroring the pre-filled store into {duckdb_path(db)} with the server's own mirror ...")
    began = time.monotonic()
    server = start_flowtel(db, work / "mirror-build.log", None, None)
    try:
        while True:
            health = server.get_json("/healthz")
            mirror = health.get("mirror")
            lag = mirror.get("lagEvents") if isinstance(mirror, dict) else None
            if not isinstance(lag, int):
                log("  the server reports no mirror lag: nothing to mirror")
                break
            if lag == 0:
                break
            time.sleep(1)
    finally:
        code = server.stop()
    if code != 0:
        raise SystemExit(f"bench: the server exited with {code} while mirroring; see {work / 'mirror-build.log'}")
    (work / "mirror-build.log").unlink()
    log(f"  mirrored in {time.monotonic() - began:.0f} s")


def prefilled_store(cache: Path, rows: int, work: Path) -> tuple[Path, Path | None]:
    """A SQLite store of `rows` events over the last 90 days and its DuckDB mirror, built once and reused."""
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"prefill-{schema_key()}-{rows}.db"
    if not db.exists():
        # Built for another schema: 6+ GB each at 10M rows.
        for stale in [*cache.glob(f"prefill-*-{rows}.db"), *cache.glob(f"prefill-*-{rows}-mirror-*.duckdb")]:
            log(f"removing the stale {stale}")
            stale.unlink()
        partial = db.with_name(db.name + ".partial")
        remove_store(partial)
        began = time.monotonic()
        fill_sqlite(partial, rows)
        partial.rename(db)
        log(f"built {db} ({db.stat().st_size / 1e9:.1f} GB) in {time.monotonic() - began:.0f} s")
    else:
        log(f"using the cached pre-filled store {db} ({db.stat().st_size / 1e9:.1f} GB)")
    if not (REPO / "analytics" / "mirror.py").exists():
        return db, None
    mirror = cache / f"{db.stem}-mirror-{mirror_key()}.duckdb"
    if not mirror.exists():
        for stale in cache.glob(f"{db.stem}-mirror-*.duckdb"):
            log(f"removing the stale {stale}")
            stale.unlink()
        # The server mirrors into <db>.duckdb: build against a hard link so the cached .db is the file it reads.
        scratch = work / "mirror-build.db"
        remove_store(scratch)
        os.link(db, scratch)
        try:
            fill_mirror(scratch, work)
            duckdb_path(scratch).rename(mirror)
        finally:
            remove_store(scratch)
    else:
        log(f"using the cached mirror {mirror} ({mirror.stat().st_size / 1e9:.1f} GB)")
    return db, mirror


def copy_store(source: Path, mirror: Path | None, dest: Path) -> None:
    """A private copy for one measurement (runs add rows), flushed to disk so its writeback is not measured."""
    began = time.monotonic()
    pairs = [(source, dest)] + ([(mirror, duckdb_path(dest))] if mirror is not None else [])
    size = 0
    for src, dst in pairs:
        shutil.copyfile(src, dst)
        with dst.open("rb+") as handle:
            os.fsync(handle.fileno())
        size += src.stat().st_size
    log(f"  copied the {size / 1e9:.1f} GB store in {time.monotonic() - began:.1f} s")


def remove_store(db: Path) -> None:
    for path in (db, duckdb_path(db)):
        for suffix in ("", "-wal", "-shm", ".wal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- report


def log(message: str) -> None:
    print(f"# {message}", flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is not installed; run `sudo apt-get install wrk` (or `make bench-ingest` as root)")
    log("installing wrk with apt-get ...")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: apt-get did not install wrk")
    return found


def describe_machine(args: argparse.Namespace) -> None:
    import aiohttp

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    log(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} x {cpu}; Python {platform.python_version()}, "
        f"SQLite {sqlitelib.version} ({sqlitelib.library.__name__}: the server's and (d)'s), "
        f"aiohttp {aiohttp.__version__}; {wrk_version.strip()}")
    pins = (f"server on CPU {args.server_cpu}, wrk on CPU {args.wrk_cpu} (taskset)"
            if args.server_cpu is not None else "not pinned (the OS schedules the server's threads and wrk)")
    log(f"wrk -t1 -c{args.connections}, {args.warmup:g} s warm-up + {args.duration:g} s per wrk figure; {pins}")


def print_table(results: Sequence[Result]) -> None:
    header = f"{'scenario':<45} {'store':>5} {'events/s':>9} {'requests/s':>10} {'p50 ms':>7} {'p99 ms':>7}  notes"
    print(header)
    print("-" * len(header))
    for r in results:
        rps = f"{r.requests_s:,.0f}" if r.requests_s is not None else "-"
        print(f"{r.label:<45} {r.store:>5} {r.events_s:>9,.0f} {rps:>10} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f}  {r.note}")


def ratio_line(what: str, num: Result | None, den: Result | None, target: float | None, per: str) -> str:
    if num is None or den is None:
        return f"{what}: not measured"
    a = num.requests_s if per == "requests" else num.events_s
    b = den.requests_s if per == "requests" else den.events_s
    assert a is not None and b is not None
    value = a / b
    line = f"{what}: {a:,.0f} / {b:,.0f} = {value:.2f}"
    if target is None:
        return line
    verdict = "meets" if value >= target else "MISSES"
    return f"{line}  ({verdict} the >= {target:.2f} target)"


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=12, help="seconds per measured figure (default 12)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of wrk warm-up before each (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="events in the pre-filled store (default 10M)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the pre-filled store is kept between runs, and the scratch space for the "
                             "per-run copies (default bench/results, git-ignored)")
    parser.add_argument("--pin", choices=("none", "split"), default="none",
                        help="split: taskset the server to CPU 0 and wrk to CPU 1 (default none)")
    parser.add_argument("--no-normal", action="store_true",
                        help="skip the extra FLOWTEL_SQLITE_SYNCHRONOUS=NORMAL lines")
    parser.add_argument("--no-prefilled", action="store_true", help="only the empty-store figures")
    parser.add_argument("--parse-only-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--parse-only-access-log", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.server_cpu, args.wrk_cpu = ("0", "1") if args.pin == "split" else (None, None)
    return args


def store_label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 and rows % 1_000_000 == 0 else f"{rows:,}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.parse_only_server is not None:
        serve_parse_only(args.parse_only_server, args.parse_only_access_log)
        return
    if args.floor_server is not None:
        serve_floor(int(args.floor_server[0]), Path(args.floor_server[1]))
        return
    print(f"$ {shlex.join([sys.executable, '-m', 'bench.ingest', *(sys.argv[1:] if argv is None else argv)])}",
          flush=True)
    ensure_wrk()
    describe_machine(args)
    began = time.monotonic()
    args.cache.mkdir(parents=True, exist_ok=True)
    work = args.cache / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    work.mkdir()
    try:
        results, stores = run_all(args, work)
    finally:
        for leftover in work.glob("*.lua"):
            leftover.unlink()
        with contextlib.suppress(OSError):
            work.rmdir()  # kept only when a server log with errors is in it
    print()
    print_table(list(results.values()))
    print()
    for sync in ("FULL", "NORMAL"):
        for store in stores:
            if ("(a)", store, sync) in results:
                print(ratio_line(f"(a)/(c) single-event durable ingestion / parse-only, {store} store, {sync} "
                                 "(req/s)", results[("(a)", store, sync)], results.get(("(c)", "-", "1")), 0.5,
                                 "requests"))
        if sync == "FULL" and ("(e)", "empty", "FULL") in results:
            print(ratio_line("(e)/(c) the floor: parse + group commit, no validation, middleware, CORS or event "
                             "response (req/s)", results[("(e)", "empty", "FULL")], results.get(("(c)", "-", "1")),
                             None, "requests"))
        for store in stores:
            if ("(b)", store, sync) in results:
                print(ratio_line(f"(b)/(d) batched ingestion / sqlite3 executemany, {store} store, {sync} "
                                 "(events/s)", results[("(b)", store, sync)], results.get(("(d)", store, sync)), 0.6,
                                 "events"))
    log(f"the whole bench took {time.monotonic() - began:.0f} s")


def run_all(args: argparse.Namespace, work: Path) -> tuple[dict[tuple[str, str, str], Result], list[str]]:
    """Every figure keyed by (kind, store, synchronous mode or batch size), and the store sizes measured."""
    scripts = ScriptMaker(work)
    results: dict[tuple[str, str, str], Result] = {}
    prefilled = None if args.no_prefilled else prefilled_store(args.cache, args.rows, work)
    big = store_label(args.rows)
    stores = ["empty"] + ([] if prefilled is None else [big])

    def show(key: tuple[str, str, str], result: Result) -> None:
        results[key] = result
        rps = f"{result.requests_s:,.0f} req/s, " if result.requests_s is not None else ""
        log(f"  -> {result.events_s:,.0f} events/s, {rps}p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; "
            f"{result.note}")

    def fresh(db: Path, store: str) -> None:
        remove_store(db)
        if store != "empty":
            assert prefilled is not None
            copy_store(*prefilled, db)

    log("(c) parse-only aiohttp server ...")
    service = start_parse_only(work / "parse-only.log", args.server_cpu)
    try:
        show(("(c)", "-", "1"), measure_parse_only(1, service, args, scripts))
        show(("(c)", "-", str(BATCH)), measure_parse_only(BATCH, service, args, scripts))
    finally:
        service.stop()
    (work / "parse-only.log").unlink(missing_ok=True)

    log("(c) parse-only aiohttp server with aiohttp's access log on, as `flowtel serve` has it ...")
    service = start_parse_only(work / "parse-only.log", args.server_cpu, access_log=True)
    try:
        result = measure_parse_only(1, service, args, scripts)
        result.label = "(c) parse-only + access log, single-event"
        show(("(c)", "-", "1+log"), result)
    finally:
        service.stop()
    (work / "parse-only.log").unlink(missing_ok=True)

    log("(e) floor: the parse-only server plus the server's own group commit, nothing else [empty] ...")
    floor_db = work / "floor.db"
    try:
        show(("(e)", "empty", "FULL"),
             measure_server("(e) floor: (c) + group commit, single-event", "empty", floor_db, 1, args, scripts, work,
                            lambda db, log: start_floor(db, log, args.server_cpu)))
    finally:
        remove_store(floor_db)

    def flowtel(kind: str, store: str, synchronous: str | None) -> None:
        batch = 1 if kind == "(a)" else BATCH
        what = "single-event POST" if batch == 1 else f"{batch}-event batch POST"
        label = f"{kind} flowtel {what}, {synchronous or 'FULL'}"
        log(f"{label} [{store}] ...")
        db = work / "flowtel.db"
        fresh(db, store)
        try:
            show((kind, store, synchronous or "FULL"),
                 measure_server(label, store, db, batch, args, scripts, work,
                                lambda db, log: start_flowtel(db, log, synchronous, args.server_cpu)))
        finally:
            remove_store(db)

    def executemany(store: str, synchronous: str) -> None:
        label = f"(d) sqlite3 executemany 1,000/txn, {synchronous}"
        log(f"{label} [{store}] ...")
        db = work / "plain.db"
        fresh(db, store)
        try:
            show(("(d)", store, synchronous), measure_executemany(label, store, db, args.duration, synchronous))
        finally:
            remove_store(db)

    for store in stores:
        flowtel("(a)", store, None)
        flowtel("(b)", store, None)
        executemany(store, "FULL")
    if not args.no_normal:
        for store in stores:
            flowtel("(a)", store, "NORMAL")
            flowtel("(b)", store, "NORMAL")
            executemany(store, "NORMAL")
    return results, stores


if __name__ == "__main__":
    main()
