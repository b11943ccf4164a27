"""The writer's group commit: per-event outcomes when many requests share one transaction, arrival order, and
all-or-nothing when the group fails."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.store import Store
from tests.test_mirror import base_event, sqlite_rows


def stored_ids(path: Path) -> list[str]:
    return [event_id for _, event_id in sqlite_rows(path)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(tmp_path / "flowtel.db", synchronous="NORMAL")
    await opened.open()
    yield opened
    await opened.close()


def fresh(n: int, start: int = 0) -> list:
    return [replace(base_event(start + i), id=str(uuid.UUID(int=start + i + 1, version=4))) for i in range(n)]


async def test_a_group_of_many_requests_reports_each_event_and_keeps_arrival_order(store: Store) -> None:
    earlier = fresh(5, start=10_000)
    assert await store.insert_events(earlier) == [True] * 5
    jobs = [fresh(500, start=j * 500) for j in range(8)]  # 4,000 events, one group
    jobs[5][:100] = jobs[0][:100]  # repeats of an earlier job in the same group
    jobs[6][0] = jobs[6][1]  # a repeat inside one job
    jobs[7][-5:] = earlier  # already stored before the group
    outcomes = await asyncio.gather(*(store.insert_events(job) for job in jobs))
    assert outcomes[5][:100] == [False] * 100 and all(outcomes[5][100:])
    assert outcomes[6][:2] == [True, False]
    assert outcomes[7][-5:] == [False] * 5 and all(outcomes[7][:-5])
    assert all(all(o) for o in (outcomes[0], outcomes[1], outcomes[2], outcomes[3], outcomes[4]))
    expected = [e.id for e in earlier]
    seen = set(expected)
    for job in jobs:
        for event in job:
            if event.id not in seen:
                seen.add(event.id)
                expected.append(event.id)
    assert stored_ids(store.path) == expected
    assert store.stats.ingested == len(expected)
    assert store.stats.duplicates == 100 + 1 + 5


async def test_a_failing_event_late_in_a_group_stores_nothing_of_the_group(store: Store) -> None:
    before = fresh(3, start=50_000)
    assert await store.insert_events(before) == [True] * 3
    jobs = [fresh(500, start=j * 500) for j in range(8)]
    # NOT NULL on shop_id fails on the group's very last row, after thousands were inserted.
    jobs[7][-1] = replace(jobs[7][-1], shop_id=None)
    results = await asyncio.gather(*(store.insert_events(job) for job in jobs), return_exceptions=True)
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
    # The writer carries on: the next group commits.
    assert await store.insert_events(fresh(2, start=60_000)) == [True, True]
    ids = stored_ids(store.path)
    assert ids[:3] == [e.id for e in before] and len(ids) == 5
