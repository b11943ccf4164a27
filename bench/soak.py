"""Soak benchmark: ten minutes of mixed load on the real server, then an exact account of every event.

    make bench-soak          # = .venv/bin/python -m bench.soak  (see --help; --minutes 1 for a quick look)

Over loopback, against a store whose largest shop holds about 1M events (the stats benchmark's generated data,
6M events over 200 shops, cached under bench/results), it runs at a steady rate, all at once:
  - single-event POST /api/events (default 100/s) and 50-event batches (default 10/s), every event a fresh id;
  - GET /api/stats?period=30d for the largest shop, two callers back to back with a pause of 1 s;
  - GET /api/events listing (limit 50) for random shops, one caller, twice a second;
and samples the server's RSS and its mirror lag (how old the oldest acknowledged event not yet in DuckDB is,
from /metrics) twice a second. At the end it stops the server and reads SQLite: every acknowledged id must be
stored exactly once, and nothing it did not acknowledge may be stored except requests that failed in flight.

Targets: zero lost or duplicated events, RSS growth under 10% after warm-up, mirror lag p99 under 2 s, stats p99
under 500 ms. The client address limit is off (the load generator is one address); the per-shop limit stays on.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

from bench import stats_data
from bench.stats import ADMIN_TOKEN, REPO, Server, remove_duckdb

DEFAULT_CACHE = REPO / "bench" / "results"
SOAK_ROWS = 6_000_000  # Zipf over 200 shops: the largest holds about 1M
BATCH = 50
RSS_WINDOW_S = 60.0  # the windows whose median RSS the growth compares
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def log(message: str) -> None:
    print(f"# {message}", flush=True)


def uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    value = (ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0b10 << 62) | random.getrandbits(62)
    return str(uuid.UUID(int=value))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Ledger:
    acked: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)  # sent, but the request failed: stored or not, both are fine
    ack_times: list[float] = field(default_factory=list)  # monotonic time of each acknowledgement, in order
    ack_counts: list[int] = field(default_factory=list)  # cumulative acknowledged events at that time
    errors: dict[str, int] = field(default_factory=dict)
    stats_ms: list[float] = field(default_factory=list)
    list_ms: list[float] = field(default_factory=list)
    ingest_ms: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def ack(self, ids: list[str]) -> None:
        self.acked.update(ids)
        self.ack_times.append(time.monotonic())
        self.ack_counts.append(len(self.acked))


def event(shop: str, session: str) -> dict[str, object]:
    kind = random.random()
    if kind < 0.7:
        return {"id": uuid7(), "shopId": shop, "sessionId": session, "eventType": "page_view",
                "url": f"https://{shop}.example/p/{random.randint(1, 500)}", "referrer": "https://www.google.com/"}
    if kind < 0.9:
        return {"id": uuid7(), "shopId": shop, "sessionId": session, "eventType": "product_view",
                "properties": {"productId": f"p-{random.randint(1, 300)}", "price": 19.99, "currency": "EUR"}}
    return {"id": uuid7(), "shopId": shop, "sessionId": session, "eventType": "purchase",
            "properties": {"orderId": uuid7(), "value": 59.5, "currency": "EUR",
                           "items": [{"productId": "p-1", "price": 59.5, "quantity": 1}]}}


async def post(session: aiohttp.ClientSession, url: str, events: list[dict[str, object]], ledger: Ledger) -> None:
    ids = [str(e["id"]) for e in events]
    body = orjson.dumps(events[0] if len(events) == 1 else {"events": events, "sentAt": datetime.now(UTC).isoformat()})
    began = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "text/plain", "User-Agent": UA}) as resp:
            await resp.read()
            if resp.status in (200, 201):
                ledger.ack(ids)
                ledger.ingest_ms.append((time.perf_counter() - began) * 1000)
            else:
                ledger.error(f"ingest HTTP {resp.status}")
                if resp.status >= 500:
                    ledger.in_doubt.update(ids)
    except (aiohttp.ClientError, TimeoutError) as exc:
        ledger.error(f"ingest {type(exc).__name__}")
        ledger.in_doubt.update(ids)


async def steady(rate: float, deadline: float, make: object) -> None:
    """Calls make() `rate` times a second (as tasks, so a slow answer does not slow the rate) until the deadline."""
    tasks: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    tick = time.monotonic()
    while tick < deadline:
        task = asyncio.ensure_future(make())  # type: ignore[operator]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        tick += interval
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks)


async def stats_caller(session: aiohttp.ClientSession, base: str, shop: str, deadline: float,
                       ledger: Ledger) -> None:
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            async with session.get(f"{base}/api/stats", params={"shopId": shop, "period": "30d"}, headers=AUTH) as r:
                await r.read()
                if r.status == 200:
                    ledger.stats_ms.append((time.perf_counter() - began) * 1000)
                else:
                    ledger.error(f"stats HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            ledger.error(f"stats {type(exc).__name__}")
        await asyncio.sleep(1.0)


async def list_caller(session: aiohttp.ClientSession, base: str, shops: list[str], deadline: float,
                      ledger: Ledger) -> None:
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            params = {"shopId": random.choice(shops), "limit": "50"}
            async with session.get(f"{base}/api/events", params=params, headers=AUTH) as r:
                await r.read()
                if r.status == 200:
                    ledger.list_ms.append((time.perf_counter() - began) * 1000)
                else:
                    ledger.error(f"list HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            ledger.error(f"list {type(exc).__name__}")
        await asyncio.sleep(0.5)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def sampler(session: aiohttp.ClientSession, base: str, server: Server, deadline: float,
                  ledger: Ledger) -> None:
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/metrics") as r:
                text = await r.text()
            now = time.monotonic()
            # Events this process committed minus those not yet mirrored = how many of ours DuckDB holds.
            mirrored = _metric(text, "flowtel_events_ingested_total") - _metric(text, "flowtel_mirror_lag_events")
            first_missing = bisect.bisect_right(ledger.ack_counts, mirrored)
            lag = now - ledger.ack_times[first_missing] if first_missing < len(ledger.ack_times) else 0.0
            ledger.lag_s.append(max(0.0, lag))
        except (aiohttp.ClientError, TimeoutError) as exc:
            ledger.error(f"metrics {type(exc).__name__}")
        ledger.rss.append((time.monotonic() - started, server.memory()[0]))
        await asyncio.sleep(0.5)


async def run_load(server: Server, shops: list[str], big_shop: str, args: argparse.Namespace) -> Ledger:
    ledger = Ledger()
    base = f"http://127.0.0.1:{server.port}"
    url = f"{base}/api/events"
    deadline = time.monotonic() + args.minutes * 60
    sessions = [uuid7() for _ in range(2000)]
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        def single() -> object:
            return post(session, url, [event(random.choice(shops), random.choice(sessions))], ledger)

        def batch() -> object:
            shop = random.choice(shops)
            return post(session, url, [event(shop, random.choice(sessions)) for _ in range(BATCH)], ledger)

        await asyncio.gather(
            steady(args.single_rate, deadline, single),
            steady(args.batch_rate, deadline, batch),
            stats_caller(session, base, big_shop, deadline, ledger),
            stats_caller(session, base, big_shop, deadline, ledger),
            list_caller(session, base, shops, deadline, ledger),
            sampler(session, base, server, deadline, ledger),
        )
    return ledger


def account(db: Path, ledger: Ledger) -> tuple[int, int, int]:
    """(acknowledged ids stored, acknowledged ids missing, duplicated ids among ours)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE TEMP TABLE ours (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO ours VALUES (?)", ((i,) for i in ledger.acked))
        stored = conn.execute("SELECT count(DISTINCT e.id) FROM events e JOIN ours USING (id)").fetchone()[0]
        duplicated = conn.execute("SELECT count(*) FROM (SELECT e.id FROM events e JOIN ours USING (id) "
                                  "GROUP BY e.id HAVING count(*) > 1)").fetchone()[0]
    finally:
        conn.close()
    return stored, len(ledger.acked) - stored, duplicated


def count_stored(db: Path, ids: set[str]) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE TEMP TABLE doubt (id TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO doubt VALUES (?)", ((i,) for i in ids))
        return int(conn.execute("SELECT count(*) FROM events JOIN doubt USING (id)").fetchone()[0])
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--single-rate", type=float, default=100, help="single-event requests per second")
    parser.add_argument("--batch-rate", type=float, default=10, help=f"{BATCH}-event batch requests per second")
    parser.add_argument("--rows", type=int, default=SOAK_ROWS, help="events in the pre-filled store")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before RSS growth is measured from")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)

    began = time.monotonic()
    source, info, _ = stats_data.build_store(args.cache, args.rows, log)
    big_shop = info.largest_shop
    work = args.cache / "soak-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db, duck = work / "soak.db", work / "soak.duckdb"
    log(f"copying the {info.rows:,}-event store; the largest shop {big_shop!r} holds {info.shop_events[big_shop]:,}")
    shutil.copyfile(source, db)
    remove_duckdb(duck)
    log("starting the server and waiting for its mirror to catch up ...")
    server = Server(db, duck, work / "server.log", {"FLOWTEL_RATE_LIMIT_IP": "0"})
    shops = sorted(info.shop_events)
    try:
        start_rss = server.memory()[0]
        log(f"load for {args.minutes:g} min: {args.single_rate:g} single + {args.batch_rate:g} x {BATCH}-event "
            f"batches per second, 2 stats callers, 1 listing caller")
        ledger = asyncio.run(run_load(server, shops, big_shop, args))
        end_rss = server.memory()[0]
    finally:
        server.stop()
    stored, missing, duplicated = account(db, ledger)
    in_doubt_stored = count_stored(db, ledger.in_doubt)
    warm = [rss for t, rss in ledger.rss if t >= args.warmup] or [rss for _, rss in ledger.rss]
    # Growth compares the median RSS of the minute after warm-up with that of the last minute under load. Single
    # samples swing by ±100 MiB from one report to the next (DuckDB's working memory, its in-memory appends until
    # the next checkpoint), so one sample against another measured that swing, not growth; a leak moves the medians.
    end_t = ledger.rss[-1][0] if ledger.rss else 0.0
    first_minute = [rss for t, rss in ledger.rss if args.warmup <= t < args.warmup + RSS_WINDOW_S] or warm[:1]
    last_minute = [rss for t, rss in ledger.rss if t > end_t - RSS_WINDOW_S and t >= args.warmup] or warm[-1:]
    first_median, last_median = statistics.median(first_minute), statistics.median(last_minute)
    growth = (last_median - first_median) / first_median * 100 if first_median else float("nan")
    mib = 1024 * 1024
    lag_p99 = pct(ledger.lag_s, 99)
    stats_p99 = pct(ledger.stats_ms, 99)
    print()
    print(f"events acknowledged           {len(ledger.acked):,}")
    print(f"acknowledged and stored       {stored:,}   missing {missing:,}   duplicated {duplicated:,}")
    print(f"failed in flight (in doubt)   {len(ledger.in_doubt):,} (of which stored: {in_doubt_stored:,})")
    print(f"errors                        {ledger.errors or 'none'}")
    print(f"ingest latency p50 / p99      {pct(ledger.ingest_ms, 50):.1f} / {pct(ledger.ingest_ms, 99):.1f} ms")
    print(f"stats (30d, {big_shop}) p50 / p99  {pct(ledger.stats_ms, 50):.0f} / {stats_p99:.0f} ms "
          f"over {len(ledger.stats_ms)} calls (target p99 < 500 ms)")
    print(f"listing p50 / p99             {pct(ledger.list_ms, 50):.1f} / {pct(ledger.list_ms, 99):.1f} ms")
    print(f"mirror lag p50 / p99          {pct(ledger.lag_s, 50):.2f} / {lag_p99:.2f} s (target p99 < 2 s)")
    print(f"RSS start / after warm-up / last sample under load / after the load  {start_rss / mib:.0f} / "
          f"{warm[0] / mib:.0f} / {warm[-1] / mib:.0f} / {end_rss / mib:.0f} MiB "
          f"(samples under load after warm-up: {min(warm) / mib:.0f}-{max(warm) / mib:.0f} MiB)")
    print(f"RSS median, first / last minute under load after warm-up  {first_median / mib:.0f} / "
          f"{last_median / mib:.0f} MiB (growth {growth:+.1f}%, target < 10%)")
    verdicts = {
        "no lost or duplicated event": missing == 0 and duplicated == 0,
        "RSS growth < 10%": growth < 10,
        "mirror lag p99 < 2 s": lag_p99 < 2,
        "stats p99 < 500 ms": stats_p99 < 500,
    }
    for name, ok in verdicts.items():
        print(f"{'MET   ' if ok else 'MISSED'} {name}")
    if os.environ.get("SOAK_KEEP") == "1":
        log(f"the whole soak took {time.monotonic() - began:.0f} s; server log and stores kept in {work}")
    else:
        log(f"the whole soak took {time.monotonic() - began:.0f} s (SOAK_KEEP=1 keeps the server log and stores)")
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if missing == 0 and duplicated == 0 else 1)


if __name__ == "__main__":
    main()
