"""compute_report plans its statements without DuckDB's join-order optimizer, and gives every other query on the
warehouse connection (the query API, chat's sandboxed SQL) its optimizers back, also when the report fails; reports
that run side by side keep it off until the last one ends."""

from __future__ import annotations

import concurrent.futures
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.query import Scope
from analytics.stats import JoinOrderSwitch, ReportRequest, compute_report
from analytics.warehouse import Warehouse

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)


def disabled(conn: duckdb.DuckDBPyConnection) -> str:
    row = conn.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    assert row is not None
    return str(row[0])


def test_the_report_runs_without_join_ordering_and_restores_the_optimizers(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", memory_limit="256MB", threads=1)
    warehouse.open_sync()
    try:
        seen: list[str] = []

        def report(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
            class Spy:
                def execute(self, sql: str, *args: object) -> object:
                    if "report_base" in sql:
                        seen.append(disabled(conn))
                    return conn.execute(sql, *args)

            return compute_report(Spy(), ReportRequest(Scope("s1", START, END), "day"))  # type: ignore[arg-type]

        result = warehouse.call(report)
        assert result["totals"]["events"] == 0
        assert seen == ["join_order"]
        assert warehouse.call(disabled) == ""

        def failing(conn: duckdb.DuckDBPyConnection) -> None:
            conn.execute("DROP TABLE events")  # the report's statement fails
            compute_report(conn, ReportRequest(Scope("s1", START, END), "day"))

        with pytest.raises(duckdb.Error):
            warehouse.call(failing)
        assert warehouse.call(disabled) == ""
    finally:
        warehouse.close_sync()


def test_reports_side_by_side_keep_join_ordering_off_until_the_last_one_ends(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", memory_limit="256MB", threads=1, readers=2)
    warehouse.open_sync()
    switch = JoinOrderSwitch()
    inside, release = threading.Event(), threading.Event()

    def long_report(conn: duckdb.DuckDBPyConnection) -> str:
        with switch.held(conn):
            inside.set()
            assert release.wait(10)
            return disabled(conn)

    def short_report(conn: duckdb.DuckDBPyConnection) -> str:
        compute_report(conn, ReportRequest(Scope("s1", START, END), "day"), switch)
        return disabled(conn)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(warehouse.read_sync, long_report)
            assert inside.wait(10)
            # The short report starts and ends inside the long one, on the other cursor: ending must not turn join
            # ordering back on under the long one.
            assert warehouse.read_sync(short_report) == "join_order"
            release.set()
            assert first.result() == "join_order"
        assert warehouse.read_sync(disabled) == ""
    finally:
        release.set()
        warehouse.close_sync()
