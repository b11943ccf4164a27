"""The `flowtel` command: serve, manage tokens, load demo data, and analyze, export or rebuild the warehouse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from analytics import sqlitelib
from server.auth import SELECT_TOKENS, create_token, delete_token
from server.events import format_ms, is_valid_shop_id, new_event_id
from server.settings import Settings, SettingsError, load_settings
from server.store import prepare_database

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings(os.environ)
    except SettingsError as exc:
        print(f"flowtel: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from server.app import create_app
    from server.telemetry import JsonAccessLogger, access_logger

    settings = _settings()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    print(f"Flowtel listening on http://{host}:{port} (store: {settings.database_path})", flush=True)
    # An access log line costs more per request than ingesting the event; it is opt-in.
    access_log = access_logger() if settings.access_log else None
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=10, access_log=access_log,
                access_log_class=JsonAccessLogger)


async def _token_create(settings: Settings, shop_id: str, name: str) -> tuple[str, str]:
    prepare_database(settings.database_path)
    async with sqlitelib.connect_async(settings.database_path) as conn:
        await conn.execute("PRAGMA busy_timeout = 5000")
        token_id = new_event_id()
        token = await create_token(conn, token_id=token_id, shop_id=shop_id, name=name,
                                   created_at=time.time_ns() // 1_000_000)
        await conn.commit()
    return token_id, token


async def _token_list(settings: Settings) -> list[tuple[str, str, str, int]]:
    prepare_database(settings.database_path)
    async with sqlitelib.connect_async(settings.database_path) as conn:
        async with conn.execute(SELECT_TOKENS) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


async def _token_revoke(settings: Settings, token_id: str) -> bool:
    prepare_database(settings.database_path)
    async with sqlitelib.connect_async(settings.database_path) as conn:
        await conn.execute("PRAGMA busy_timeout = 5000")
        removed = await delete_token(conn, token_id)
        await conn.commit()
    return removed


def token(args: argparse.Namespace) -> None:
    settings = _settings()
    if args.action == "create":
        if not is_valid_shop_id(args.shop):
            print("flowtel: --shop must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'", file=sys.stderr)
            raise SystemExit(2)
        token_id, secret = asyncio.run(_token_create(settings, args.shop, args.name or args.shop))
        print(f"Created token {token_id} for shop {args.shop}. It is shown only once:")
        print(secret)
    elif args.action == "list":
        for token_id, shop_id, name, created_at in asyncio.run(_token_list(settings)):
            print(f"{token_id}  shop={shop_id}  name={name}  created={format_ms(created_at)}")
    else:
        if not asyncio.run(_token_revoke(settings, args.id)):
            print(f"flowtel: no token with id {args.id}", file=sys.stderr)
            raise SystemExit(1)
        print(f"Revoked token {args.id}")


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"flowtel: {message}", file=sys.stderr)
    raise SystemExit(code)


def _shop_arg(value: str) -> str:
    if not is_valid_shop_id(value):
        raise argparse.ArgumentTypeError("must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
    return value


def _days_arg(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of days") from None
    if not 1 <= days <= 3660:
        raise argparse.ArgumentTypeError("must be from 1 to 3660")
    return days


def _offline(settings: Settings, shop_id: str | None, work: Callable[[Any], T]) -> T:
    """Run work(warehouse) on the DuckDB file opened directly and caught up; exit 1 with a clear message when
    the server holds the file or there is no store yet."""
    from analytics.export import StoreMissing, WarehouseLocked, open_offline

    try:
        with open_offline(settings.database_path, settings.duckdb_path,
                          memory_limit=settings.duckdb_memory_limit) as warehouse:
            return work(warehouse)
    except StoreMissing as exc:
        _fail(f"{exc}: load some events first (make demo, or start the server and send events), "
              "or set DATABASE_URL to your store.")
    except WarehouseLocked as exc:
        query = f"?shopId={shop_id}" if shop_id else ""
        _fail(f"{exc}.\n  Stop the server first, or ask the running server instead: "
              f"GET http://localhost:{settings.port}/api/stats{query} (with a token).")


def demo(args: argparse.Namespace) -> None:
    from server.demo import DemoError, generate_demo_traffic, load_demo, summary

    settings = _settings()
    shops = tuple(s.strip() for s in args.shops.split(",") if s.strip())
    bad = [s for s in shops if not is_valid_shop_id(s)]
    if not shops or bad:
        _fail("--shops must be a comma-separated list of shop ids (1-64 of A-Z, a-z, 0-9, '_', '.', '-')", 2)
    now = datetime.now(UTC)
    traffic = generate_demo_traffic(random.Random(args.seed), now, days=args.days, shops=shops)
    print(f"Flowtel demo: {len(shops)} shop{'s' * (len(shops) != 1)} ({', '.join(shops)}), {args.days} days "
          f"ending today, seed {args.seed}", flush=True)

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        result = asyncio.run(load_demo(settings, traffic, base_url=args.url, use_running_server=not args.in_process,
                                       progress=progress))
    except DemoError as exc:
        _fail(str(exc))
    print(summary(result, settings))


def analyze(args: argparse.Namespace) -> None:
    from analytics.export import shops as list_shops
    from analytics.report import render_html, render_text, report_request
    from analytics.stats import compute_report
    from analytics.timerange import resolve_timezone

    settings = _settings()
    try:
        tz_name = resolve_timezone(args.timezone).key
    except ValueError as exc:
        _fail(f"--timezone: {exc}", 2)
    now = datetime.now(UTC)
    request = report_request(args.shop, args.days, tz_name, now)

    def work(warehouse: Any) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        report = warehouse.call(lambda conn: compute_report(conn, request))
        known = warehouse.call(list_shops) if report["totals"]["events"] == 0 else []
        return report, known

    report, known = _offline(settings, args.shop, work)
    if report["totals"]["events"] == 0 and not (report.get("previous") or {}).get("events"):
        others = ", ".join(shop for shop, _ in known[:20]) or "none yet (try make demo)"
        print(f"flowtel: no events for shop {args.shop!r} in this range. Shops with events: {others}",
              file=sys.stderr)
    print(render_text(report), end="")
    if args.html:
        path = Path(args.html)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(report, generated_at=now), encoding="utf-8")
        print(f"\nWrote the HTML report to {path}")


def export(args: argparse.Namespace) -> None:
    from analytics.export import default_output, export_events

    settings = _settings()
    output = Path(args.output) if args.output else default_output(settings.data_dir, args.shop, args.format)
    started = time.perf_counter()
    rows = _offline(settings, args.shop,
                    lambda warehouse: warehouse.call(lambda conn: export_events(conn, args.shop, args.format, output)))
    if rows == 0:
        print(f"flowtel: shop {args.shop!r} has no events; wrote an empty file", file=sys.stderr)
    print(f"Exported {rows:,} events of {args.shop} to {output} ({args.format}, "
          f"{time.perf_counter() - started:.1f} s)")


def rebuild(args: argparse.Namespace) -> None:
    from analytics.export import StoreMissing, WarehouseLocked
    from analytics.rebuild import rebuild_warehouse

    settings = _settings()
    print(f"Rebuilding {settings.duckdb_path} from {settings.database_path} ...", flush=True)
    try:
        result = rebuild_warehouse(settings.database_path, settings.duckdb_path,
                                   memory_limit=settings.duckdb_memory_limit, progress=not args.quiet)
    except StoreMissing as exc:
        _fail(f"{exc}: nothing to rebuild from (set DATABASE_URL to your store).")
    except WarehouseLocked as exc:
        _fail(f"{exc}.\n  The rebuild swaps the file, so the server must be stopped first; nothing was changed.")
    note = "" if result.rows == result.source_rows else f" (SQLite had {result.source_rows:,} when it started)"
    print(f"Rebuilt {result.path}: {result.rows:,} events{note}, sorted by shop and time, "
          f"in {result.seconds:.1f} s.")


def chat(args: argparse.Namespace) -> None:
    """Ask one question about a shop from the terminal: the LLM tool loop when a provider is configured, else the
    built-in answers; the same sandbox as POST /api/chat (server stopped, like analyze)."""
    from analytics.chat import ChatTimeout, ask_llm
    from analytics.chat_builtin import EXAMPLES, NotUnderstood, answer, route
    from analytics.llm import LLMError, make_llm
    from analytics.sandbox import Result, Sandbox, copy_shop_rows, describe
    from analytics.timerange import resolve_timezone
    from server.settings import llm_config

    settings = _settings()
    try:
        tz = resolve_timezone(args.timezone)
    except ValueError as exc:
        _fail(f"--timezone: {exc}", 2)
    rows = _offline(settings, args.shop, lambda warehouse: warehouse.call(lambda conn: copy_shop_rows(conn, args.shop)))
    sandbox = Sandbox(rows)
    now = datetime.now(UTC)
    llm = make_llm(llm_config(settings))
    if llm is None:
        try:
            result = answer(sandbox, route(args.question, now, tz), tz.key)
        except NotUnderstood:
            _fail("no LLM is configured and this is not a built-in question. Try one of:\n  "
                  + "\n  ".join(EXAMPLES))
    else:
        async def run() -> Any:
            async def run_sql(sql: str) -> Result:
                return await asyncio.to_thread(sandbox.run_sql, sql)

            async def get_schema() -> dict[str, Any]:
                return await asyncio.to_thread(describe, sandbox)

            try:
                return await ask_llm(llm, args.question, [], run_sql=run_sql, get_schema=get_schema, now=now,
                                     timezone=tz.key)
            finally:
                await llm.close()

        try:
            result = asyncio.run(run())
        except (LLMError, ChatTimeout) as exc:
            _fail(f"the LLM provider failed: {exc}")
    sandbox.close()
    print(result.answer)
    for query in result.queries:
        print(f"\n-- {query.row_count} rows, {query.ms:.0f} ms\n{query.sql}")
    if result.columns:
        print("\n" + " | ".join(result.columns))
        for row in result.rows[:50]:
            print(" | ".join("" if v is None else str(v) for v in row))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def backup(args: argparse.Namespace) -> None:
    from analytics.export import StoreMissing
    from server.backup import BackupError, backup_store

    settings = _settings()
    dest = Path(args.dest)
    print(f"Backing up {settings.database_path} to {dest} ...", flush=True)
    try:
        result = backup_store(settings.database_path, dest)
    except StoreMissing as exc:
        _fail(f"{exc}: nothing to back up (set DATABASE_URL to your store).")
    except BackupError as exc:
        _fail(str(exc))
    print(f"Backed up {result.events:,} events ({result.pages:,} pages, up to seq {result.max_seq:,}) to "
          f"{result.path} in {result.seconds:.1f} s.")


def restore(args: argparse.Namespace) -> None:
    from analytics.export import WarehouseLocked
    from server.backup import BackupError, restore_store

    settings = _settings()
    print(f"Restoring {settings.database_path} from {args.src} ...", flush=True)
    try:
        result = restore_store(Path(args.src), settings.database_path, settings.duckdb_path,
                               memory_limit=settings.duckdb_memory_limit)
    except BackupError as exc:
        _fail(f"{exc}; nothing was changed.")
    except WarehouseLocked as exc:
        _fail(f"{exc}.\n  Stop the server first: a restore replaces the store under it; nothing was changed.")
    print(f"Restored {result.events:,} events into {result.path} (the replaced store is kept as "
          f"{result.path.name}.pre-restore) and rebuilt {settings.duckdb_path} in {result.seconds:.1f} s.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtel", description="Flowtel analytics server")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run the HTTP server")
    p_serve.add_argument("--host", default=None, help="bind address (default: $HOST or 0.0.0.0)")
    p_serve.add_argument("--port", type=int, default=None, help="port (default: $PORT or 4000)")
    p_serve.set_defaults(func=serve)

    p_token = commands.add_parser("token", help="manage shop tokens")
    actions = p_token.add_subparsers(dest="action", required=True)
    p_create = actions.add_parser("create", help="create a read token for one shop")
    p_create.add_argument("--shop", required=True, help="the shop id the token may read")
    p_create.add_argument("--name", default=None, help="a label for the token (default: the shop id)")
    actions.add_parser("list", help="list tokens (never their secrets)")
    p_revoke = actions.add_parser("revoke", help="revoke a token by id")
    p_revoke.add_argument("id")
    p_token.set_defaults(func=token)

    p_demo = commands.add_parser("demo", help="load realistic demo traffic through POST /api/events")
    p_demo.add_argument("--days", type=_days_arg, default=90, help="days of traffic ending today (default 90)")
    p_demo.add_argument("--shops", default="demo-shoes,demo-books,demo-coffee",
                        help="comma-separated shop ids (default: demo-shoes,demo-books,demo-coffee)")
    p_demo.add_argument("--seed", type=int, default=42, help="random seed; the same seed gives the same event ids")
    p_demo.add_argument("--url", default=None,
                        help="post to the server at this base URL (default: http://127.0.0.1:$PORT if it answers)")
    p_demo.add_argument("--in-process", action="store_true",
                        help="never use a running server: load through an in-process one on the configured files")
    p_demo.set_defaults(func=demo)

    p_analyze = commands.add_parser("analyze", help="a report on one shop from the data files (server stopped)")
    p_analyze.add_argument("--shop", required=True, type=_shop_arg, help="the shop id")
    p_analyze.add_argument("--days", type=_days_arg, default=30, help="days ending today (default 30)")
    p_analyze.add_argument("--timezone", default="UTC", help="IANA timezone for days (default UTC)")
    p_analyze.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained HTML report")
    p_analyze.set_defaults(func=analyze)

    p_export = commands.add_parser("export", help="write one shop's events to Parquet or NDJSON (server stopped)")
    p_export.add_argument("--shop", required=True, type=_shop_arg, help="the shop id")
    p_export.add_argument("--format", choices=("parquet", "ndjson"), default="parquet")
    p_export.add_argument("--output", default=None, metavar="FILE",
                          help="output file (default: <data dir>/export-<shop>.<parquet|ndjson>)")
    p_export.set_defaults(func=export)

    p_rebuild = commands.add_parser("rebuild", help="recreate the DuckDB file from SQLite (server stopped)")
    p_rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    p_rebuild.set_defaults(func=rebuild)

    p_chat = commands.add_parser("chat", help="ask a question about one shop's data (server stopped)")
    p_chat.add_argument("--shop", required=True, type=_shop_arg, help="the shop id")
    p_chat.add_argument("--timezone", default="UTC", help="IANA timezone for relative dates (default UTC)")
    p_chat.add_argument("question", help='e.g. "Top pages last 7 days"')
    p_chat.set_defaults(func=chat)

    p_insights = commands.add_parser("insights", help="compute, store and print a day's insights (server stopped)")
    p_insights.add_argument("--shop", required=True, type=_shop_arg)
    p_insights.add_argument("--date", help="local day to analyse (YYYY-MM-DD; default: yesterday)")
    p_insights.add_argument("--timezone", default="UTC", help="IANA timezone of the shop's days (default UTC)")
    p_insights.set_defaults(func=insights)

    p_backup = commands.add_parser("backup", help="a consistent snapshot of the SQLite store (server may run)")
    p_backup.add_argument("dest", help="the backup file to write (must not exist)")
    p_backup.set_defaults(func=backup)

    p_restore = commands.add_parser("restore", help="replace the SQLite store with a backup (server stopped)")
    p_restore.add_argument("src", help="a file written by flowtel backup")
    p_restore.set_defaults(func=restore)
    return parser


async def _insights(settings: Settings, warehouse: Any, shop_id: str, day: Any, tz_name: str) -> list[dict[str, Any]]:
    from analytics.llm import make_llm
    from server.insights import generate_insights
    from server.settings import llm_config
    from server.store import Store

    store = Store(settings.database_path, synchronous=settings.sqlite_synchronous)
    await store.open()
    llm = make_llm(llm_config(settings))
    try:
        # open_offline already caught the mirror up, so no Mirror is passed.
        return await generate_insights(store, warehouse, None, llm, shop_id, day, tz_name, time.time_ns() // 1_000_000)
    finally:
        if llm is not None:
            await llm.close()
        await store.close()


def insights(args: argparse.Namespace) -> None:
    from datetime import date

    from analytics.timerange import resolve_timezone
    from server.insights import last_complete_day

    settings = _settings()
    try:
        tz_name = resolve_timezone(args.timezone).key
    except ValueError as exc:
        _fail(f"--timezone: {exc}", 2)
    latest = last_complete_day(datetime.now(UTC), tz_name)
    try:
        day = date.fromisoformat(args.date) if args.date else latest
    except ValueError:
        _fail("--date must be a date like 2026-11-25", 2)
    if day > latest:
        _fail(f"--date must be a complete day: {latest.isoformat()} or earlier", 2)
    found = _offline(settings, args.shop, lambda warehouse: asyncio.run(
        _insights(settings, warehouse, args.shop, day, tz_name)))
    print(f"Insights for {args.shop} on {day.isoformat()} ({tz_name}), stored:")
    for item in found:
        meta = item["metadata"]
        print(f"\n[{item['type']}] {item['title']}\n  {item['content']}\n  (generated by {meta['generatedBy']}"
              f"{', fallback: ' + meta['llmFallback'] if meta.get('llmFallback') else ''})")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
