"""The `flowtel` command: serve, and manage tokens."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import aiosqlite

from server.auth import SELECT_TOKENS, create_token, delete_token
from server.events import format_ms, is_valid_shop_id, new_event_id
from server.settings import Settings, SettingsError, load_settings
from server.store import prepare_database


def _settings() -> Settings:
    try:
        return load_settings(os.environ)
    except SettingsError as exc:
        print(f"flowtel: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from server.app import create_app

    settings = _settings()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    print(f"Flowtel listening on http://{host}:{port} (store: {settings.database_path})", flush=True)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=10)


async def _token_create(settings: Settings, shop_id: str, name: str) -> tuple[str, str]:
    prepare_database(settings.database_path)
    async with aiosqlite.connect(settings.database_path) as conn:
        await conn.execute("PRAGMA busy_timeout = 5000")
        token_id = new_event_id()
        token = await create_token(conn, token_id=token_id, shop_id=shop_id, name=name,
                                   created_at=time.time_ns() // 1_000_000)
        await conn.commit()
    return token_id, token


async def _token_list(settings: Settings) -> list[tuple[str, str, str, int]]:
    prepare_database(settings.database_path)
    async with aiosqlite.connect(settings.database_path) as conn:
        async with conn.execute(SELECT_TOKENS) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


async def _token_revoke(settings: Settings, token_id: str) -> bool:
    prepare_database(settings.database_path)
    async with aiosqlite.connect(settings.database_path) as conn:
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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
