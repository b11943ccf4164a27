"""Deletion and retention: DELETE /api/events through the app (scoping, refusals, counts, stats and listing after),
tombstones that the DuckDB mirror applies exactly under any interleaving with its batches, a rebuild that agrees with
the incrementally kept mirror, the mirror starting over on an older (restored) store, and the retention purge."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from analytics import sqlitelib
from analytics.rebuild import rebuild_warehouse
from analytics.warehouse import Warehouse
from server.keys import STORE
from server.retention import DAY_MS, purge_expired
from server.settings import SettingsError, load_settings
from server.store import DELETE_BY_SEQ, INSERT_TOMBSTONES, Store
from tests.conftest import NOW_MS, ClientFactory, assert_error
from tests.test_mirror import Env, base_event, duck_rows, insert, sqlite_rows

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


def ev(shop: str, session: str, n: int = 0, ts: str = "2026-11-26T03:00:00.000Z") -> dict[str, Any]:
    return {"shopId": shop, "sessionId": session, "eventType": "page_view", "url": f"https://x.example/{n}",
            "timestamp": ts, "userAgent": UA}


async def post(client: TestClient, events: list[dict[str, Any]], ua: str = UA) -> list[str]:
    resp = await client.post("/api/events", json=events, headers={"User-Agent": ua})
    assert resp.status == 201, await resp.text()
    return [r["id"] for r in (await resp.json())["results"]]


async def listed_ids(client: TestClient, admin: dict[str, str], shop: str) -> set[str]:
    resp = await client.get("/api/events", params={"shopId": shop, "limit": "100"}, headers=admin)
    assert resp.status == 200, await resp.text()
    return {e["id"] for e in (await resp.json())["data"]}


async def stats_events(client: TestClient, admin: dict[str, str], shop: str) -> int:
    resp = await client.get("/api/stats", params={"shopId": shop, "period": "7d"}, headers=admin)
    assert resp.status == 200, await resp.text()
    total: int = (await resp.json())["totals"]["events"]
    return total


async def shop_token(client: TestClient, admin: dict[str, str], shop: str) -> dict[str, str]:
    resp = await client.post("/api/tokens", json={"shopId": shop, "name": "t"}, headers=admin)
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


# ---------------------------------------------------------------------------------------------- the API


async def test_delete_by_session_removes_from_listing_and_stats(make_client: ClientFactory,
                                                                admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    gone = await post(client, [ev("d1", "s-gone", i) for i in range(4)])
    kept = await post(client, [ev("d1", "s-kept", i) for i in range(3)])
    other_shop = await post(client, [ev("d2", "s-gone", i) for i in range(2)])
    assert await stats_events(client, admin, "d1") == 7  # mirrored before the delete

    resp = await client.delete("/api/events", params={"shopId": "d1", "sessionId": "s-gone"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert await resp.json() == {"shopId": "d1", "deleted": 4}

    assert await listed_ids(client, admin, "d1") == set(kept)
    assert await listed_ids(client, admin, "d2") == set(other_shop)  # same session id, another shop: untouched
    for event_id in gone:
        await assert_error(await client.get(f"/api/events/{event_id}", headers=admin), 404, "not_found")
    assert await stats_events(client, admin, "d1") == 3
    assert await stats_events(client, admin, "d2") == 2

    # Repeating the delete is safe and finds nothing.
    resp = await client.delete("/api/events", params={"shopId": "d1", "sessionId": "s-gone"}, headers=admin)
    assert await resp.json() == {"shopId": "d1", "deleted": 0}


async def test_delete_by_event_ids_session_list_and_visitors(make_client: ClientFactory,
                                                             admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    a = await post(client, [ev("v1", "a", i) for i in range(2)])
    await post(client, [ev("v1", "b", i) for i in range(2)])
    c = await post(client, [ev("v1", "c", i) for i in range(2)])
    # Same browser, same day: another session of the visitor of session "a" (same client IP and user agent).
    a_again = await post(client, [ev("v1", "a-later", i) for i in range(3)])
    other_ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1"
    stranger = await post(client, [{**ev("v1", "z", 0), "userAgent": other_ua}], ua=other_ua)
    assert await stats_events(client, admin, "v1") == 10

    resp = await client.delete("/api/events", params=[("shopId", "v1"), ("eventId", c[0].upper())], headers=admin)
    assert await resp.json() == {"shopId": "v1", "deleted": 1}
    resp = await client.delete("/api/events", params=[("shopId", "v1"), ("sessionId", "b"), ("sessionId", "c")],
                               headers=admin)
    assert await resp.json() == {"shopId": "v1", "deleted": 3}
    assert await listed_ids(client, admin, "v1") == set(a + a_again + stranger)

    resp = await client.delete("/api/events", params={"shopId": "v1", "sessionId": "a", "includeVisitors": "true"},
                               headers=admin)
    assert await resp.json() == {"shopId": "v1", "deleted": 5}
    assert await listed_ids(client, admin, "v1") == set(stranger)
    assert await stats_events(client, admin, "v1") == 1


async def test_all_true_deletes_one_whole_shop(make_client: ClientFactory, admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    await post(client, [ev("w1", f"s{i}", i) for i in range(30)])
    kept = await post(client, [ev("w2", "s0", i) for i in range(5)])
    resp = await client.delete("/api/events", params={"shopId": "w1", "all": "true"}, headers=admin)
    assert await resp.json() == {"shopId": "w1", "deleted": 30}
    assert await listed_ids(client, admin, "w1") == set()
    assert await listed_ids(client, admin, "w2") == set(kept)
    assert await stats_events(client, admin, "w1") == 0


async def test_a_shop_token_deletes_only_its_own_shop(make_client: ClientFactory, admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    mine = await post(client, [ev("mine", "s", i) for i in range(3)])
    theirs = await post(client, [ev("theirs", "s", i) for i in range(3)])
    token = await shop_token(client, admin, "mine")

    await assert_error(await client.delete("/api/events", params={"shopId": "theirs", "sessionId": "s"},
                                           headers=token), 403, "forbidden")
    # The other shop's event ids named under its own shop: nothing of theirs is touched.
    resp = await client.delete("/api/events", params=[("eventId", theirs[0]), ("sessionId", "nope")], headers=token)
    assert await resp.json() == {"shopId": "mine", "deleted": 0}
    resp = await client.delete("/api/events", params={"sessionId": "s"}, headers=token)  # shopId defaults to its own
    assert await resp.json() == {"shopId": "mine", "deleted": 3}
    assert await listed_ids(client, admin, "theirs") == set(theirs)
    assert await listed_ids(client, admin, "mine") == set()
    assert mine


@pytest.mark.parametrize(("params", "field"), [
    ({"sessionId": "s"}, "shopId"),                                  # the admin must name a shop
    ({"shopId": "r1"}, "sessionId"),                                 # no selector: never a whole shop by accident
    ({"shopId": "r1", "all": "false"}, "sessionId"),
    ({"shopId": "r1", "all": "yes please"}, "all"),
    ({"shopId": "r1", "all": "true", "sessionId": "s"}, "all"),
    ({"shopId": "bad shop!", "sessionId": "s"}, "shopId"),
    ({"shopId": "r1", "eventId": "not-a-uuid"}, "eventId"),
    ({"shopId": "r1", "sessionId": ""}, "sessionId"),
    ({"shopId": "r1", "sessionId": "s", "includeVisitors": "maybe"}, "includeVisitors"),
    ([("shopId", "r1"), ("shopId", "r2"), ("sessionId", "s")], "shopId"),
    ([("shopId", "r1")] + [("sessionId", f"s{i}") for i in range(51)], "sessionId"),
])
async def test_bad_deletes_are_refused_and_delete_nothing(make_client: ClientFactory, admin: dict[str, str],
                                                          params: Any, field: str) -> None:
    client = await make_client(mirror_interval=3600.0)
    ids = await post(client, [ev("r1", "s", i) for i in range(2)])
    error = await assert_error(await client.delete("/api/events", params=params, headers=admin), 400,
                               "validation_failed")
    assert error["details"][0]["field"] == field
    assert await listed_ids(client, admin, "r1") == set(ids)


async def test_delete_needs_a_token(make_client: ClientFactory, admin: dict[str, str]) -> None:
    client = await make_client(mirror_interval=3600.0)
    ids = await post(client, [ev("t1", "s", 0)])
    await assert_error(await client.delete("/api/events", params={"shopId": "t1", "all": "true"}), 401,
                       "unauthorized")
    await assert_error(await client.delete("/api/events", params={"shopId": "t1", "all": "true"},
                                           headers={"Authorization": "Bearer ft_wrong"}), 401, "unauthorized")
    assert await listed_ids(client, admin, "t1") == set(ids)


async def test_a_big_delete_runs_in_chunks_and_the_mirror_and_a_rebuild_agree(
        make_client: ClientFactory, admin: dict[str, str], tmp_path: Path) -> None:
    client = await make_client(mirror_interval=3600.0)
    for start in range(0, 1200, 400):
        await post(client, [ev("big", f"s{i % 3}", i) for i in range(start, start + 400)][:500])
    assert await stats_events(client, admin, "big") == 1200
    store = client.app[STORE]
    # Fewer rows per chunk than the mirror's batches, so chunks and batches interleave.
    deleted = await store.delete_matching("SELECT seq FROM events WHERE session_id = 's1'", (), chunk=37)
    assert deleted == 400
    tombstones = await store.fetchone("SELECT count(*) FROM deletions")
    assert tombstones[0] == 400
    assert await stats_events(client, admin, "big") == 800
    await client.close()  # the app closes its files: now the incremental mirror can be compared with a rebuild

    db, incremental = tmp_path / "flowtel.db", tmp_path / "flowtel.duckdb"
    kept = warehouse_rows(incremental)
    assert kept == sqlite_rows(db) and len(kept) == 800
    rebuilt = rebuild_warehouse(db, tmp_path / "rebuilt.duckdb", progress=False)
    assert rebuilt.rows == 800
    assert warehouse_rows(tmp_path / "rebuilt.duckdb") == kept


def warehouse_rows(path: Path) -> list[tuple[int, str]]:
    warehouse = Warehouse(path, memory_limit="256MB", threads=1)
    warehouse.open_sync()
    try:
        return duck_rows(warehouse)
    finally:
        warehouse.close_sync()


# ---------------------------------------------------------------------------------------------- mirror exactness


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close_all()


def delete_seqs(path: Path, seqs: list[int]) -> None:
    """One writer chunk, with the store's own statements."""
    conn = sqlitelib.connect(path, isolation_level=None)
    try:
        payload = "[" + ",".join(str(s) for s in seqs) + "]"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT_TOMBSTONES, (payload,))
        conn.execute(DELETE_BY_SEQ, (payload,))
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.parametrize("seed", range(4))
def test_tombstones_interleaved_with_mirror_batches_leave_exactly_sqlite(env: Env, seed: int) -> None:
    rng = random.Random(seed)
    warehouse = env.open()
    mirror = env.mirror(warehouse, batch_rows=rng.choice((7, 20, 64)))
    n = 0
    for _ in range(30):
        step = rng.random()
        if step < 0.4:
            insert(env.sqlite_path, [base_event(n + i) for i in range(rng.randint(1, 40))])
            n += 40
        elif step < 0.7:
            seqs = [s for s, _ in sqlite_rows(env.sqlite_path)]
            if seqs:
                # Mirrored and not yet mirrored rows alike, newest included.
                delete_seqs(env.sqlite_path, rng.sample(seqs, min(len(seqs), rng.randint(1, 25))))
        elif step < 0.85:
            warehouse.call(mirror.sync_once)
        else:
            warehouse.call(mirror.catch_up)
    warehouse.call(mirror.catch_up)
    source = sqlite_rows(env.sqlite_path)
    assert duck_rows(warehouse) == source
    assert mirror.status.lag_events == 0
    env.close(warehouse)

    rebuilt = env.sqlite_path.with_name("rebuilt.duckdb")
    rebuild_warehouse(env.sqlite_path, rebuilt, progress=False)
    assert warehouse_rows(rebuilt) == source


def test_a_crash_between_delete_and_watermark_applies_the_tombstones_once(env: Env) -> None:
    insert(env.sqlite_path, [base_event(i) for i in range(50)])
    warehouse = env.open()
    assert warehouse.call(env.mirror(warehouse).catch_up) == 50
    delete_seqs(env.sqlite_path, [s for s, _ in sqlite_rows(env.sqlite_path)][::3])

    def fail(rows: int) -> None:
        raise OSError("injected fault between the delete and the watermark")

    with pytest.raises(OSError):
        warehouse.call(env.mirror(warehouse, before_commit=fail).catch_up)
    assert len(duck_rows(warehouse)) == 50  # rolled back: nothing deleted, watermark unchanged
    warehouse.call(env.mirror(warehouse).catch_up)
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    assert len(duck_rows(warehouse)) == 33


def test_a_store_older_than_the_mirror_is_mirrored_again_from_scratch(env: Env, tmp_path: Path) -> None:
    insert(env.sqlite_path, [base_event(i) for i in range(20)])
    backup = tmp_path / "older.db"
    src = sqlitelib.connect(env.sqlite_path)
    dst = sqlitelib.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    insert(env.sqlite_path, [base_event(100 + i) for i in range(10)])
    warehouse = env.open()
    assert warehouse.call(env.mirror(warehouse).catch_up) == 30
    env.close(warehouse)

    # The older file comes back (a restore without a rebuild) and gets new rows that reuse seqs 21..25.
    backup.replace(env.sqlite_path)
    for suffix in ("-wal", "-shm"):
        env.sqlite_path.with_name(env.sqlite_path.name + suffix).unlink(missing_ok=True)
    insert(env.sqlite_path, [base_event(200 + i) for i in range(5)])
    warehouse = env.open()
    warehouse.call(env.mirror(warehouse).catch_up)
    assert duck_rows(warehouse) == sqlite_rows(env.sqlite_path)
    assert len(duck_rows(warehouse)) == 25


# ---------------------------------------------------------------------------------------------- retention


async def test_purge_expired_deletes_only_events_older_than_the_cutoff(tmp_path: Path) -> None:
    db = tmp_path / "flowtel.db"
    store = Store(db, synchronous="NORMAL")
    await store.open()
    try:
        insert(db, [base_event(i, timestamp=NOW_MS - (i * 7 + 1) * DAY_MS // 2) for i in range(20)])
        expected = [s for s, _ in sqlite_rows(db)]
        old = {s for s, ts in sqlite_timestamps(db) if ts < NOW_MS - 30 * DAY_MS}
        assert 0 < len(old) < 20
        assert await purge_expired(store, 30, NOW_MS) == len(old)
        assert [s for s, _ in sqlite_rows(db)] == [s for s in expected if s not in old]
        assert await purge_expired(store, 30, NOW_MS) == 0
    finally:
        await store.close()


def sqlite_timestamps(path: Path) -> list[tuple[int, int]]:
    conn = sqlitelib.connect(path)
    try:
        return [(int(s), int(t)) for s, t in conn.execute("SELECT seq, timestamp FROM events ORDER BY seq")]
    finally:
        conn.close()


async def test_the_server_purges_expired_events_at_start(make_client: ClientFactory, admin: dict[str, str],
                                                         tmp_path: Path) -> None:
    db = Env(tmp_path).sqlite_path  # the store the app will open, seeded with events 10 and 40 days old
    insert(db, [base_event(i, shop_id="keep", timestamp=NOW_MS - (10 if i % 2 else 40) * DAY_MS) for i in range(10)])
    fresh = {i for s, i in sqlite_rows(db) if s % 2 == 0}  # seq 2, 4, ... were i = 1, 3, ...
    client = await make_client(mirror_interval=3600.0, retention_days=30)
    for _ in range(200):
        if {i for _, i in sqlite_rows(db)} == fresh:
            break
        await asyncio.sleep(0.01)  # the purge runs in its own task, started with the app
    assert {i for _, i in sqlite_rows(db)} == fresh
    assert await listed_ids(client, admin, "keep") == fresh
    resp = await client.get("/api/stats", params={"shopId": "keep", "period": "90d"}, headers=admin)
    assert (await resp.json())["totals"]["events"] == 5


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("30", 30), (" 400 ", 400)])
def test_retention_days_setting(raw: str | None, expected: int | None) -> None:
    environ = {} if raw is None else {"FLOWTEL_RETENTION_DAYS": raw}
    assert load_settings(environ).retention_days == expected


@pytest.mark.parametrize("raw", ["0", "-1", "thirty", "1.5", "36501"])
def test_a_bad_retention_days_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="FLOWTEL_RETENTION_DAYS"):
        load_settings({"FLOWTEL_RETENTION_DAYS": raw})


async def test_delete_answers_match_the_openapi_document(make_client: ClientFactory, admin: dict[str, str]) -> None:
    from tests.test_openapi import conforms, fetch_doc

    client = await make_client(mirror_interval=3600.0)
    doc = await fetch_doc(client)
    await post(client, [ev("o1", "s", i) for i in range(2)])
    resp = await client.delete("/api/events", params={"shopId": "o1", "sessionId": "s"}, headers=admin)
    assert (await conforms(doc, resp, "/api/events", "DELETE")) == {"shopId": "o1", "deleted": 2}
    for params, headers, status in (({"shopId": "o1"}, admin, 400), ({"shopId": "o1", "all": "1"}, {}, 401)):
        resp = await client.delete("/api/events", params=params, headers=headers)
        assert resp.status == status
        await conforms(doc, resp, "/api/events", "DELETE")


async def test_dashboards_may_send_a_delete_and_shop_pages_may_not(make_client: ClientFactory) -> None:
    client = await make_client(mirror_interval=3600.0)
    preflight = {"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "Authorization"}
    resp = await client.options("/api/events", headers={"Origin": "http://localhost:3000", **preflight})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    resp = await client.options("/api/events", headers={"Origin": "https://some-shop.example", **preflight})
    assert "Access-Control-Allow-Origin" not in resp.headers
