"""The one SQLite library this process opens the event store with: pysqlite3's current SQLite when installed.

Two copies of SQLite in one process do not see each other's locks (sqlite.org/howtocorrupt.html, 2.2), so the
writer, the readers, the mirror's source, backups and the tests all connect through here; only other processes (the
mirror's ADBC reader) may run another copy.
"""

from __future__ import annotations

import functools
import importlib
import os
import sqlite3
from types import ModuleType
from typing import Any

import aiosqlite


def _load() -> ModuleType:
    # pysqlite3-binary bundles SQLite 3.51 where Python's build may link an old one (3.40 on Debian 12); the writer's
    # group insert reads JSONB from 3.45 on (server/store.py). Its only wheel is for Linux x86_64: it is a dependency
    # there, and Python's sqlite3 serves everywhere else.
    try:
        return importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        return sqlite3


library: ModuleType = _load()
version: str = library.sqlite_version
Error: type[Exception] = library.Error
DatabaseError: type[Exception] = library.DatabaseError
OperationalError: type[Exception] = library.OperationalError
IntegrityError: type[Exception] = library.IntegrityError
Row: type = library.Row
# A connection of `library` (its own class, not sqlite3.Connection).
Connection = Any


def has_jsonb() -> bool:
    """SQLite 3.45 and later: jsonb() and jsonb_each()."""
    numbers: tuple[int, ...] = library.sqlite_version_info
    return numbers >= (3, 45, 0)


def connect(database: str | os.PathLike[str], **kwargs: Any) -> Connection:
    return library.connect(database, **kwargs)


def connect_async(database: str | os.PathLike[str], **kwargs: Any) -> aiosqlite.Connection:
    """aiosqlite.connect with this library; await it (or use `async with`) to open."""
    return aiosqlite.Connection(functools.partial(library.connect, database, **kwargs), iter_chunk_size=64)
