"""Stats benchmark: the DuckDB mirror and the full GET /api/stats report, against SQLite and ClickHouse (chdb).

    make bench-stats          # = pip install chdb; .venv/bin/python -m bench.stats
    python -m bench.stats --sizes 1000000          # a quick run
    python -m bench.stats --sizes 1000000,10000000 --repeat 20

For each size it generates N events (200 shops with Zipf-skewed sizes, 90 days ending at generation time, realistic
sessions; see bench/stats_data.py) straight into a SQLite store with the project's schema, cached under
bench/results/ so later runs skip the generation, and measures
  (a) the mirror: Mirror(sqlite).catch_up into a fresh DuckDB file, in rows/s (target >= 300,000); then the time to
      compact that file into one sorted by (shop_id, ts);
  (b) GET /api/stats with the defaults (30 days, day buckets, no compare, bots excluded) on the real server
      (`flowtel serve` in a subprocess), for the largest shop and for the admin all-shops view, p50/p95 over
      --repeat calls, once on the file as mirrored (rows in time order) and once on the sorted file, plus the server's
      resident memory while holding the data (target < 1 GiB at 10M);
  (c) the same report as plain SQL on SQLite with its indexes (largest shop);
  (d) the same report on ClickHouse via chdb (MergeTree ordered by (shop_id, ts), loaded from a Parquet export of
      the mirror), largest shop and admin view;
checks that SQLite and chdb give the same figures as /api/stats, times each statement of the report in-process,
and prints the figures with the ratios: SQLite / ours (target >= 20x) and chdb / ours (target > 1).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import stats_data, stats_suites

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "bench" / "results"
ADMIN_TOKEN = "bench-stats-admin-token-0123456789"
DEFAULT_SIZES = "1000000,10000000"
RANGE_DAYS = 30
# Upper bounds on one series of timed calls; a series stops early (after at least MIN_CALLS) once over its budget.
HTTP_BUDGET_S = 75.0
SQLITE_BUDGET_S = 150.0
CHDB_BUDGET_S = 60.0
MIN_CALLS = 5
PROFILE_RUNS = 3
REST_S = 5.0


def log(message: str) -> None:
    print(f"# {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- timing


@dataclass
class Series:
    """Latencies of repeated calls, in seconds; the first call is also kept apart (cold caches)."""

    seconds: list[float] = field(default_factory=list)
    first: float | None = None

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def p95(self) -> float:
        if not self.seconds:
            return math.nan
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    @property
    def n(self) -> int:
        return len(self.seconds)


def repeat_timed(fn: Callable[[], float], repeat: int, budget_s: float, warmup: int = 1,
                 min_calls: int = MIN_CALLS) -> Series:
    """Call fn (which returns its own duration) warmup times untimed, then up to `repeat` times within budget_s."""
    series = Series()
    for i in range(warmup):
        took = fn()
        if i == 0:
            series.first = took
    began = time.monotonic()
    for i in range(repeat):
        series.seconds.append(fn())
        if i + 1 >= min_calls and time.monotonic() - began > budget_s:
            break
    return series


def ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    value = seconds * 1000
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def ratio(num: float, den: float) -> str:
    if math.isnan(num) or math.isnan(den) or den <= 0:
        return "-"
    return f"{num / den:,.1f}x"


# ---------------------------------------------------------------------------------------------------- the range


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime
    query: dict[str, str]  # what GET /api/stats gets for it
    note: str

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)


def stats_range(info: stats_data.GeneratedInfo) -> Range:
    """period=30d as of the day the data ends: the request default when the data was generated today (UTC), else
    the same 30 days as explicit dates (a cached store from an earlier day keeps its full 30-day window)."""
    last = datetime.fromtimestamp(info.end_ms / 1000, UTC).date()
    first = last - timedelta(days=RANGE_DAYS - 1)

    def midnight(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    if last == datetime.now(UTC).date():
        return Range(midnight(first), midnight(last + timedelta(days=1)), {"period": "30d"}, "period=30d")
    query = {"startDate": first.isoformat(), "endDate": last.isoformat()}
    return Range(midnight(first), midnight(last + timedelta(days=1)), query,
                 f"startDate={first}&endDate={last} (= period=30d on the day the cached data ends)")


# ---------------------------------------------------------------------------------------------------- the mirror


def mirror_into(sqlite_path: Path, duck_path: Path) -> tuple[int, float]:
    """Mirror(sqlite).catch_up into a fresh DuckDB file, as the server does, then a CHECKPOINT (timed too: rows that
    went through DuckDB's WAL are written again there); returns (rows, seconds)."""
    from analytics.mirror import Mirror
    from analytics.warehouse import Warehouse

    remove_duckdb(duck_path)
    warehouse = Warehouse(duck_path)
    warehouse.open_sync()
    mirror = Mirror(sqlite_path)
    try:
        began = time.perf_counter()
        rows = warehouse.call(lambda conn: mirror.catch_up(conn))
        warehouse.call(lambda conn: conn.execute("CHECKPOINT"))
        seconds = time.perf_counter() - began
    finally:
        warehouse.call(lambda conn: mirror.close())
        warehouse.close_sync()
    return rows, seconds


def compact(source: Path, dest: Path) -> float:
    """A fresh DuckDB file with every table copied over, the events sorted by (shop_id, ts); returns seconds."""
    from analytics.warehouse import Warehouse

    remove_duckdb(dest)
    warehouse = Warehouse(dest)
    warehouse.open_sync()

    def work(conn: Any) -> None:
        conn.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src' AND table_schema = 'main' "
            "AND table_type = 'BASE TABLE'").fetchall()]
        conn.execute("BEGIN")
        for table in tables:
            exists = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                "AND table_schema = 'main' AND table_name = ?", (table,)).fetchone()[0]
            order = " ORDER BY shop_id, ts, seq" if table == "events" else ""
            if exists:
                conn.execute(f'DELETE FROM main."{table}"')
                conn.execute(f'INSERT INTO main."{table}" SELECT * FROM src."{table}"{order}')
            else:
                conn.execute(f'CREATE TABLE main."{table}" AS SELECT * FROM src."{table}"{order}')
        conn.execute("COMMIT")
        conn.execute("DETACH src")
        conn.execute("CHECKPOINT")

    try:
        began = time.perf_counter()
        warehouse.call(work)
        return time.perf_counter() - began
    finally:
        warehouse.close_sync()


def remove_duckdb(path: Path) -> None:
    for suffix in ("", ".wal", ".tmp"):
        target = Path(f"{path}{suffix}")
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def flowtel_command() -> list[str]:
    script = Path(sys.executable).parent / "flowtel"
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "server"]


class Server:
    """`flowtel serve` on a loopback port over the given SQLite and DuckDB files; ready once the mirror lag is 0."""

    def __init__(self, db: Path, duck: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTEL_")}
        env.update(PORT=str(self.port), HOST="127.0.0.1", DATABASE_URL=f"sqlite:{db}", FLOWTEL_DUCKDB_PATH=str(duck),
                   FLOWTEL_ADMIN_TOKEN=ADMIN_TOKEN, FLOWTEL_LLM_PROVIDER="none", FLOWTEL_RATE_LIMIT_READ="0")
        env.update(extra_env or {})
        self.log_path = log_path
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(flowtel_command(), cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        self.conn: http.client.HTTPConnection | None = None
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 600
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the server exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                status, body = self.get("/healthz", auth=False)
                if status == 200 and json.loads(body).get("mirror", {}).get("lagEvents") == 0:
                    return
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the server did not catch its mirror up in time; see {self.log_path}")
            time.sleep(0.2)

    def get(self, path: str, *, auth: bool = True) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if auth else {}
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes: resident now and at peak."""
        values = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
        return values.get("VmRSS", 0), values.get("VmHWM", 0)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class HttpResult:
    shop: Series
    admin: Series
    rss: int
    hwm: int
    rss_shop: int  # after the largest-shop calls, before the admin view's
    rss_rest: int  # REST_S after the last call: what the server holds, once freed report memory went back
    shop_report: dict[str, Any]
    admin_report: dict[str, Any]


def measure_http(db: Path, duck: Path, shop: str, rng: Range, repeat: int, log_path: Path) -> HttpResult:
    server = Server(db, duck, log_path)
    try:
        reports: dict[str, dict[str, Any]] = {}

        def caller(params: dict[str, str], key: str) -> Callable[[], float]:
            path = "/api/stats?" + urllib.parse.urlencode(params) if params else "/api/stats"

            def call() -> float:
                began = time.perf_counter()
                status, body = server.get(path)
                took = time.perf_counter() - began
                if status != 200:
                    raise SystemExit(f"bench: GET {path} answered {status}: {body[:300]!r}")
                if key not in reports:
                    reports[key] = json.loads(body)
                return took

            return call

        shop_series = repeat_timed(caller({**rng.query, "shopId": shop}, "shop"), repeat, HTTP_BUDGET_S)
        rss_shop, _ = server.memory()
        admin_series = repeat_timed(caller(dict(rng.query), "admin"), repeat, HTTP_BUDGET_S)
        rss, hwm = server.memory()
        # Arrow's allocator (mimalloc) hands freed report memory back to the OS about a second later.
        time.sleep(REST_S)
        rss_rest, _ = server.memory()
        return HttpResult(shop_series, admin_series, rss, hwm, rss_shop, rss_rest, reports["shop"],
                          reports["admin"])
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- profile


class TimingConnection:
    """Wraps a DuckDB connection and times every statement compute_report runs (execute plus fetch)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.timings: list[tuple[str, float]] = []

    def execute(self, sql: str, *args: Any) -> Any:
        began = time.perf_counter()
        result = self._conn.execute(sql, *args)
        self.timings.append((statement_label(sql), time.perf_counter() - began))
        return _TimedResult(result, self.timings, len(self.timings) - 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _TimedResult:
    def __init__(self, result: Any, timings: list[tuple[str, float]], index: int) -> None:
        self._result, self._timings, self._index = result, timings, index

    def _timed(self, name: str) -> Callable[..., Any]:
        method = getattr(self._result, name)

        def call(*args: Any) -> Any:
            began = time.perf_counter()
            value = method(*args)
            label, took = self._timings[self._index]
            self._timings[self._index] = (label, took + time.perf_counter() - began)
            return value

        return call

    def __getattr__(self, name: str) -> Any:
        if name.startswith("fetch"):
            return self._timed(name)
        return getattr(self._result, name)


def statement_label(sql: str) -> str:
    """A readable name for a statement of the report (by the dimension it groups on, or what it builds)."""
    from analytics.metrics import DIMENSIONS

    text = " ".join(sql.split())
    if text.startswith("WITH report_base AS MATERIALIZED"):
        if "row_number() OVER ()" in text:
            return "the report: one statement (base, sessions, every part)"
        return "previous-range totals"
    if text.startswith("CREATE") and "report_base" in text:
        return "materialise base (ev + sessions + order firsts)"
    if text.startswith("DROP"):
        return "drop base"
    for name, dim in DIMENSIONS.items():
        if f"({' '.join(dim.sql.split())}) AS d0" in text:
            return f"breakdown {name}"
    if "FULL OUTER JOIN" in text:
        return "topProducts"
    if "s0 AS" in text:
        return "funnel"
    if "AS m0" in text:
        return "totals"
    return text[:48]


def profile_report(duck: Path, shop: str | None, rng: Range, runs: int = PROFILE_RUNS) -> list[tuple[str, float]]:
    """Median seconds per statement of analytics.stats.compute_report, in-process on the file (server stopped)."""
    from analytics.query import Scope
    from analytics.stats import ReportRequest, compute_report
    from analytics.warehouse import Warehouse

    request = ReportRequest(scope=Scope(shop, rng.start, rng.end, "UTC", False), interval="day")
    warehouse = Warehouse(duck)
    warehouse.open_sync()
    try:
        per_run: list[list[tuple[str, float]]] = []
        for _ in range(runs + 1):  # the first run warms the buffer pool
            def run(conn: Any) -> list[tuple[str, float]]:
                timed = TimingConnection(conn)
                began = time.perf_counter()
                compute_report(timed, request)  # type: ignore[arg-type]
                return [*timed.timings, ("whole report (in-process)", time.perf_counter() - began)]

            per_run.append(warehouse.call(run))
    finally:
        warehouse.close_sync()
    timed_runs = per_run[1:]
    labels = [label for label, _ in timed_runs[0]]
    out = []
    for i, label in enumerate(labels):
        out.append((label, statistics.median(r[i][1] for r in timed_runs if i < len(r))))
    return out


# ---------------------------------------------------------------------------------------------------- chdb


@dataclass
class ChResult:
    shop: Series
    admin: Series
    export_s: float
    load_s: float
    shop_answer: dict[str, Any]
    admin_answer: dict[str, Any]
    per_query: dict[str, float]


def measure_chdb(duck: Path, work: Path, shop: str, rng: Range, repeat: int) -> ChResult | str:
    try:
        from chdb import session as chdb_session
    except ImportError:
        return "chdb is not installed (pip install chdb; make bench-stats does)"
    import duckdb

    parquet = work / "events.parquet"
    parquet.unlink(missing_ok=True)
    began = time.perf_counter()
    conn = duckdb.connect(str(duck), read_only=True)
    try:
        conn.execute(f"COPY (SELECT {stats_suites.CH_COLUMNS} FROM events) TO '{parquet}' (FORMAT parquet)")
    finally:
        conn.close()
    export_s = time.perf_counter() - began
    path = work / "chdb"
    shutil.rmtree(path, ignore_errors=True)
    sess = chdb_session.Session(str(path))
    try:
        began = time.perf_counter()
        sess.query(stats_suites.CH_TABLE)
        sess.query(f"INSERT INTO events SELECT * FROM file('{parquet}', Parquet)")
        sess.query("OPTIMIZE TABLE events FINAL")
        load_s = time.perf_counter() - began

        def query(sql: str) -> Any:
            return sess.query(sql, "ArrowTable")

        answers: dict[str, dict[str, Any]] = {}
        per_query: dict[str, list[float]] = {}

        def caller(scope_shop: str | None, key: str) -> Callable[[], float]:
            queries = stats_suites.ch_queries(scope_shop, rng.start_ms, rng.end_ms)

            def call() -> float:
                result = stats_suites.run_ch(query, queries)
                answers.setdefault(key, result.answer)
                if key == "shop":
                    for name, took in result.per_query.items():
                        per_query.setdefault(name, []).append(took)
                return result.seconds

            return call

        shop_series = repeat_timed(caller(shop, "shop"), repeat, CHDB_BUDGET_S)
        admin_series = repeat_timed(caller(None, "admin"), repeat, CHDB_BUDGET_S)
    finally:
        sess.close()
        shutil.rmtree(path, ignore_errors=True)
        parquet.unlink(missing_ok=True)
    return ChResult(shop_series, admin_series, export_s, load_s, answers["shop"], answers["admin"],
                    {name: statistics.median(v) for name, v in per_query.items()})


# ---------------------------------------------------------------------------------------------------- SQLite


@dataclass
class SqliteResult:
    series: Series
    answer: dict[str, Any]
    per_query: dict[str, float]


def measure_sqlite(db: Path, shop: str, rng: Range, repeat: int) -> SqliteResult:
    conn = stats_suites.sqlite_connect(str(db))
    answers: list[dict[str, Any]] = []
    per_query: dict[str, list[float]] = {}

    def call() -> float:
        result = stats_suites.run_sqlite(conn, shop, rng.start_ms, rng.end_ms)
        answers.append(result.answer)
        for name, took in result.per_query.items():
            per_query.setdefault(name, []).append(took)
        return result.seconds

    try:
        series = repeat_timed(call, repeat, SQLITE_BUDGET_S, min_calls=1)
    finally:
        conn.close()
    return SqliteResult(series, answers[0], {name: statistics.median(v) for name, v in per_query.items()})


# ---------------------------------------------------------------------------------------------------- one size


@dataclass
class SizeResult:
    rows: int
    lines: list[str]
    summary: dict[str, str]


def run_size(rows: int, args: argparse.Namespace) -> SizeResult:
    cache: Path = args.cache
    db, info, built = stats_data.build_store(cache, rows, log)
    shop = info.largest_shop
    rng = stats_range(info)
    work = cache / f"stats-work-{rows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mirrored, sorted_duck = work / "mirrored.duckdb", work / "sorted.duckdb"
    lines: list[str] = []
    try:
        log(f"(a) mirroring {rows:,} rows into a fresh DuckDB file ...")
        copied, mirror_s = mirror_into(db, mirrored)
        log(f"    {copied:,} rows in {mirror_s:.1f} s; compacting (sorted by shop_id, ts) ...")
        compact_s = compact(mirrored, sorted_duck)
        log(f"    compacted in {compact_s:.1f} s")

        http: dict[str, HttpResult] = {}
        for layout, duck in (("as mirrored", mirrored), ("sorted", sorted_duck)):
            log(f"(b) GET /api/stats on the real server, DuckDB {layout} ...")
            http[layout] = measure_http(db, duck, shop, rng, args.repeat, work / f"server-{layout.split()[-1]}.log")
            h = http[layout]
            log(f"    largest shop p50 {ms(h.shop.p50)}, admin p50 {ms(h.admin.p50)}, "
                f"RSS {h.rss / 2**20:,.0f} MiB, at rest {h.rss_rest / 2**20:,.0f} MiB")

        log("    profiling compute_report in-process ...")
        profiles: dict[str, list[tuple[str, float]] | str] = {}
        for key, duck, scope_shop in (("shop, as mirrored", mirrored, shop), ("shop, sorted", sorted_duck, shop),
                                      ("admin, sorted", sorted_duck, None)):
            try:
                profiles[key] = profile_report(duck, scope_shop, rng)
            except Exception as exc:  # the report's internals may change; the bench should still print the rest
                profiles[key] = f"unavailable ({exc!r})"

        log(f"(c) the report as SQL on SQLite (largest shop, up to {args.sqlite_repeat} runs) ...")
        sq = measure_sqlite(db, shop, rng, args.sqlite_repeat)
        log(f"    p50 {ms(sq.series.p50)}")

        log("(d) the report on ClickHouse (chdb) ...")
        ch = measure_chdb(sorted_duck, work, shop, rng, args.repeat)
        if isinstance(ch, ChResult):
            log(f"    largest shop p50 {ms(ch.shop.p50)}, admin p50 {ms(ch.admin.p50)}")
        else:
            log(f"    skipped: {ch}")

        lines, summary = render_size(rows, db, info, built, rng, shop, copied, mirror_s, compact_s, http, profiles,
                                     sq, ch)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return SizeResult(rows, lines, summary)


def render_size(rows: int, db: Path, info: stats_data.GeneratedInfo, built: bool, rng: Range, shop: str,
                copied: int, mirror_s: float, compact_s: float, http: dict[str, HttpResult],
                profiles: dict[str, list[tuple[str, float]] | str], sq: SqliteResult,
                ch: ChResult | str) -> tuple[list[str], dict[str, str]]:
    mirrored, sorted_ = http["as mirrored"], http["sorted"]
    in_range = sorted_.shop_report["totals"]["events"]
    admin_in_range = sorted_.admin_report["totals"]["events"]
    end = datetime.fromtimestamp(info.end_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    out = [
        f"== {rows:,} events: {stats_data.SHOP_COUNT} shops (Zipf s={stats_data.ZIPF_S}), {stats_data.DAYS} days to "
        f"{end} UTC ==",
        f"largest shop {shop}: {info.shop_events[shop]:,} events, {in_range:,} in the 30-day range (bots excluded); "
        f"all shops: {admin_in_range:,} in range",
        f"request: GET /api/stats?{rng.note} [&shopId={shop}], UTC, day buckets, no compare",
        (f"data: generated in {info.seconds:.0f} s ({info.rows / info.seconds:,.0f} rows/s)" if built else
         f"data: cached (generated in {info.seconds:.0f} s)") + f", {db} ({db.stat().st_size / 1e9:.2f} GB)",
        "",
        f"(a) mirror        {copied:,} rows in {mirror_s:.1f} s = {copied / mirror_s:,.0f} rows/s   "
        f"[target >= 300,000: {'met' if copied / mirror_s >= 300_000 else 'MISSED'}]",
        f"    compaction    copy sorted by (shop_id, ts) into a fresh file: {compact_s:.1f} s",
        "",
        f"(b) GET /api/stats over HTTP   {'first':>9} {'p50':>9} {'p95':>9} {'calls':>6}",
    ]
    for label, series in (("largest shop, as mirrored", mirrored.shop), ("largest shop, sorted", sorted_.shop),
                          ("admin view, as mirrored", mirrored.admin), ("admin view, sorted", sorted_.admin)):
        out.append(f"    {label:<26} {ms(series.first):>9} {ms(series.p50):>9} {ms(series.p95):>9} {series.n:>6}")
    target_ms = 100 if rows <= 1_000_000 else 400
    out.append(f"    target: largest shop p50 < {target_ms} ms: as mirrored "
               f"{'met' if mirrored.shop.p50 * 1000 < target_ms else 'MISSED'}, sorted "
               f"{'met' if sorted_.shop.p50 * 1000 < target_ms else 'MISSED'}")
    out.append(f"    server memory (VmRSS): after the largest-shop calls / right after the admin calls / at rest "
               f"{REST_S:g} s later / peak (VmHWM)")
    for label, result in (("as mirrored", mirrored), ("sorted", sorted_)):
        out.append(f"      {label:<12} {result.rss_shop / 2**20:,.0f} / {result.rss / 2**20:,.0f} / "
                   f"{result.rss_rest / 2**20:,.0f} / {result.hwm / 2**20:,.0f} MiB")
    held = max(mirrored.rss_rest, sorted_.rss_rest)
    peak = max(mirrored.hwm, sorted_.hwm)
    out.append(f"    target RSS < 1 GiB holding the data (at rest): {'met' if held < 2**30 else 'MISSED'}; "
               f"peak during the admin view's report {'under' if peak < 2**30 else 'OVER'} 1 GiB")
    out.append("")
    sq_first = f", first run {ms(sq.series.first)}" if sq.series.first is not None else ""
    out.append(f"(c) SQLite (indexes, 1 GiB cache), largest shop: p50 {ms(sq.series.p50)} over {sq.series.n} runs"
               f"{sq_first}")
    out.append("    per query: " + ", ".join(f"{k} {ms(v)}" for k, v in sq.per_query.items()))
    if isinstance(ch, ChResult):
        out.append(f"(d) ClickHouse (chdb {chdb_version()}, MergeTree ORDER BY (shop_id, ts)); "
                   f"Parquet export {ch.export_s:.1f} s, load + merge {ch.load_s:.1f} s")
        out.append(f"    largest shop: p50 {ms(ch.shop.p50)}, p95 {ms(ch.shop.p95)} ({ch.shop.n} runs); "
                   f"admin view: p50 {ms(ch.admin.p50)}, p95 {ms(ch.admin.p95)} ({ch.admin.n} runs)")
        out.append("    per query: " + ", ".join(f"{k} {ms(v)}" for k, v in ch.per_query.items()))
    else:
        out.append(f"(d) ClickHouse: {ch}")
    out.append("")

    ours_shop = stats_suites.report_fingerprint(sorted_.shop_report)
    ours_admin = stats_suites.report_fingerprint(sorted_.admin_report)
    checks = [("SQLite", stats_suites.compare(ours_shop, sq.answer), len(ours_shop))]
    if isinstance(ch, ChResult):
        checks.append(("chdb shop", stats_suites.compare(ours_shop, ch.shop_answer), len(ours_shop)))
        checks.append(("chdb admin", stats_suites.compare(ours_admin, ch.admin_answer), len(ours_admin)))
    same_layouts = stats_suites.compare(ours_shop, stats_suites.report_fingerprint(mirrored.shop_report))
    checks.append(("/api/stats as mirrored", same_layouts, len(ours_shop)))
    out.append("cross-check with /api/stats (sorted): " + "; ".join(
        f"{name} {total - len(diff)}/{total} figures agree" + (f" (differ: {', '.join(diff[:6])})" if diff else "")
        for name, diff, total in checks))

    sq_p50 = sq.series.p50
    ch_shop = ch.shop.p50 if isinstance(ch, ChResult) else math.nan
    ch_admin = ch.admin.p50 if isinstance(ch, ChResult) else math.nan
    out.append(f"ratios (p50)  SQLite / ours: {ratio(sq_p50, mirrored.shop.p50)} as mirrored, "
               f"{ratio(sq_p50, sorted_.shop.p50)} sorted   [target >= 20x]")
    out.append(f"              chdb / ours, largest shop: {ratio(ch_shop, mirrored.shop.p50)} as mirrored, "
               f"{ratio(ch_shop, sorted_.shop.p50)} sorted; admin view: {ratio(ch_admin, mirrored.admin.p50)} as "
               f"mirrored, {ratio(ch_admin, sorted_.admin.p50)} sorted   [target > 1]")
    out.append("")
    out.extend(render_profiles(profiles))

    summary = {
        "events": f"{rows:,}",
        "mirror rows/s": f"{copied / mirror_s:,.0f}",
        "shop p50/p95 mirrored": f"{ms(mirrored.shop.p50)} / {ms(mirrored.shop.p95)}",
        "shop p50/p95 sorted": f"{ms(sorted_.shop.p50)} / {ms(sorted_.shop.p95)}",
        "admin p50/p95 mirrored": f"{ms(mirrored.admin.p50)} / {ms(mirrored.admin.p95)}",
        "admin p50/p95 sorted": f"{ms(sorted_.admin.p50)} / {ms(sorted_.admin.p95)}",
        "SQLite p50": ms(sq_p50),
        "chdb p50/p95 shop": f"{ms(ch_shop)} / {ms(ch.shop.p95 if isinstance(ch, ChResult) else math.nan)}",
        "SQLite/ours": f"{ratio(sq_p50, mirrored.shop.p50)} / {ratio(sq_p50, sorted_.shop.p50)}",
        "chdb/ours": f"{ratio(ch_shop, mirrored.shop.p50)} / {ratio(ch_shop, sorted_.shop.p50)}",
        "RSS MiB (at rest)": f"{mirrored.rss_rest / 2**20:,.0f} / {sorted_.rss_rest / 2**20:,.0f}",
    }
    return out, summary


def render_profiles(profiles: dict[str, list[tuple[str, float]] | str]) -> list[str]:
    out = [f"where the time goes: compute_report in-process, median of {PROFILE_RUNS} runs per statement"]
    tables = {k: v for k, v in profiles.items() if isinstance(v, list)}
    for key, value in profiles.items():
        if isinstance(value, str):
            out.append(f"    {key}: {value}")
    if not tables:
        return out
    keys = list(tables)
    labels: list[str] = []
    for value in tables.values():
        for label, _ in value:
            if label not in labels:
                labels.append(label)
    out.append(f"    {'statement':<48} " + " ".join(f"{k:>18}" for k in keys))
    for label in labels:
        cells = []
        for key in keys:
            found = [t for name, t in tables[key] if name == label]
            cells.append(f"{ms(sum(found)) if found else '-':>18}")
        out.append(f"    {label:<48} " + " ".join(cells))
    return out


# ---------------------------------------------------------------------------------------------------- main


def chdb_version() -> str:
    try:
        import chdb

        return str(chdb.__version__)
    except ImportError:
        return "not installed"


def describe_machine() -> str:
    import duckdb

    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {total_kb / 2**20:.0f} GiB RAM"
    import sqlite3

    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
            f"SQLite {sqlite3.sqlite_version}, chdb {chdb_version()}")


def parse_sizes(raw: str) -> list[int]:
    sizes = []
    for part in raw.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        value = int(float(part)) if "e" in part.lower() else int(part)
        if value < 10_000:
            raise argparse.ArgumentTypeError(f"size {value} is too small: use at least 10000 events")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"comma-separated event counts (default {DEFAULT_SIZES})")
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed calls per HTTP and chdb series (default 20; a series also stops after "
                             f"{HTTP_BUDGET_S:.0f} s once it has {MIN_CALLS} calls)")
    parser.add_argument("--sqlite-repeat", type=int, default=3,
                        help=f"timed runs of the SQLite suite after one warm-up (default 3, at most "
                             f"{SQLITE_BUDGET_S:.0f} s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated stores are cached")
    parser.add_argument("--keep", action="store_true", help="keep the DuckDB files and server logs of the run")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.sqlite_repeat < 1:
        parser.error("--repeat and --sqlite-repeat must be at least 1")
    return args


def print_summary(results: list[SizeResult]) -> None:
    if not results:
        return
    print()
    print("== summary (p50/p95; 'mirrored' = DuckDB file as the mirror wrote it, 'sorted' = compacted by (shop, ts);"
          " ratios and RSS: mirrored / sorted) ==")
    keys = list(results[0].summary)
    widths = {k: max(len(k), *(len(r.summary[k]) for r in results)) for k in keys}
    print("  ".join(f"{k:>{widths[k]}}" for k in keys))
    for result in results:
        print("  ".join(f"{result.summary[k]:>{widths[k]}}" for k in keys))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    print(f"command: python -m bench.stats {shlex.join(shown)}".rstrip())
    print(f"machine: {describe_machine()}")
    print("targets: largest shop p50 < 100 ms at 1M and < 400 ms at 10M; >= 20x faster than SQLite; faster than chdb;"
          " mirror >= 300,000 rows/s; server RSS < 1 GiB at 10M", flush=True)
    began = time.monotonic()
    results = []
    for rows in args.sizes:
        result = run_size(rows, args)
        results.append(result)
        print()
        print("\n".join(result.lines), flush=True)
    print_summary(results)
    print(f"\ntotal bench time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
