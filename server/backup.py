"""Online backups of the SQLite store with SQLite's backup API, and restoring one (with the mirror rebuilt)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analytics import sqlitelib
from analytics.export import StoreMissing
from analytics.rebuild import fsync_path, hold_existing, rebuild_warehouse
from analytics.source import readonly_uri

# Pages copied per backup step (16 MiB at SQLite's default 4 KiB pages); progress is reported between steps.
STEP_PAGES = 4096
# Starts the backup's read snapshot; the event count comes from the finished copy.
BEGIN_SNAPSHOT = "SELECT coalesce(max(seq), 0) FROM events"
SELECT_COUNTS = "SELECT count(*), coalesce(max(seq), 0) FROM events"

Progress = Callable[[int, int, int], None]  # (status, remaining pages, total pages), as sqlite3 reports them


class BackupError(Exception):
    """The backup or restore cannot go ahead; the message says why and nothing was changed."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    events: int
    max_seq: int
    pages: int
    seconds: float



def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _check(path: Path) -> tuple[int, int]:
    """(events, max seq) of a complete, intact store; BackupError otherwise."""
    conn = sqlitelib.connect(readonly_uri(path), uri=True)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(problems[:3])}")
        events, max_seq = conn.execute(SELECT_COUNTS).fetchone()
        return int(events), int(max_seq)
    except sqlitelib.DatabaseError as exc:
        raise BackupError(f"{path} is not a Flowtel SQLite store ({exc})") from None
    finally:
        conn.close()


def _copy(source: Path, target: Path, *, step_pages: int, progress: Progress | None) -> int:
    """Copy source into target with the backup API, in steps, from one read snapshot; returns pages copied."""
    pages = 0

    def report(status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total
        if progress is not None:
            progress(status, remaining, total)

    src = sqlitelib.connect(readonly_uri(source), uri=True, isolation_level=None)
    dst = sqlitelib.connect(target, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout = 5000")
        # One read transaction across every step. In WAL mode it blocks no writer, and every step reads the same
        # snapshot; without it, each commit the server makes between two steps would restart the copy from the
        # first page, which under steady ingestion never ends.
        src.execute("BEGIN")
        src.execute(BEGIN_SNAPSHOT).fetchone()
        src.backup(dst, pages=step_pages, progress=report)
        src.execute("COMMIT")
    finally:
        dst.close()
        src.close()
    return pages


def backup_store(db: Path, dest: Path, *, step_pages: int = STEP_PAGES,
                 progress: Progress | None = None) -> BackupResult:
    """A consistent snapshot of the store at db, written to dest, while a server may keep ingesting.

    The copy is built beside dest, checked (integrity_check) and only then renamed to dest, so dest is either
    absent or a complete store. Refuses an existing dest.
    """
    if not db.exists():
        raise StoreMissing(f"there is no SQLite store at {db}")
    if dest.exists():
        raise BackupError(f"{dest} already exists: choose a new file name (a backup never overwrites)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    _remove([partial, *_sidecars(partial)])
    started = time.perf_counter()
    try:
        pages = _copy(db, partial, step_pages=step_pages, progress=progress)
        events, max_seq = _check(partial)
        fsync_path(partial)
        os.replace(partial, dest)
    except BaseException:
        _remove([partial, *_sidecars(partial)])
        raise
    fsync_path(dest.parent)
    return BackupResult(dest, events, max_seq, pages, time.perf_counter() - started)


def restore_store(backup: Path, db: Path, duckdb_path: Path, *, memory_limit: str = "1GB") -> BackupResult:
    """Put a backup in place of the store at db and rebuild the DuckDB mirror from it.

    Refuses (WarehouseLocked) while a server holds the warehouse, i.e. is running on these files. The replaced
    store is kept as `<db>.pre-restore`. The mirror is removed before the store is swapped, so it can never show
    rows the restored store does not have; it is then rebuilt (if that is interrupted, the server mirrors the
    store again from scratch at its next start).
    """
    if not backup.exists():
        raise BackupError(f"there is no backup at {backup}")
    started = time.perf_counter()
    _check(backup)
    guard = hold_existing(duckdb_path)  # raises WarehouseLocked while the server runs
    if guard is not None:
        guard.close()
    _remove([duckdb_path, duckdb_path.with_name(duckdb_path.name + ".wal")])

    incoming = db.with_name(db.name + ".restoring")
    _remove([incoming, *_sidecars(incoming)])
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        pages = _copy(backup, incoming, step_pages=STEP_PAGES, progress=None)
        events, max_seq = _check(incoming)
        fsync_path(incoming)
    except BaseException:
        _remove([incoming, *_sidecars(incoming)])
        raise
    if db.exists():
        # Fold the old store's WAL into it and keep it aside: its WAL must never be replayed onto the new file.
        conn = sqlitelib.connect(db, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        aside = db.with_name(db.name + ".pre-restore")
        _remove([aside, *_sidecars(aside)])
        os.replace(db, aside)
    _remove(_sidecars(db))
    os.replace(incoming, db)
    fsync_path(db.parent)
    rebuild_warehouse(db, duckdb_path, memory_limit=memory_limit, progress=False)
    return BackupResult(db, events, max_seq, pages, time.perf_counter() - started)
