"""compute_report plans its statements without DuckDB's join-order optimizer, and gives every other query on the
warehouse connection (the query API, chat's sandboxed SQL) its optimizers back, also when the report fails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.query import Scope
from analytics.stats import ReportRequest, compute_report
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
