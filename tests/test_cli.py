"""The `flowtel token` commands against a real SQLite file, cross-checked with a real app over the same file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ClientFactory, assert_error

FLOWTEL = Path(sys.executable).parent / "flowtel"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def flowtel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:{tmp_path}/f.db"}
    return subprocess.run([str(FLOWTEL), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)


def create(tmp_path: Path, shop: str, *extra: str) -> tuple[str, str]:
    result = flowtel(tmp_path, "token", "create", "--shop", shop, *extra)
    assert result.returncode == 0, result.stderr
    ids = UUID_RE.findall(result.stdout)
    assert len(ids) == 1, result.stdout
    secret = result.stdout.strip().splitlines()[-1].strip()
    assert secret and " " not in secret and secret != ids[0]
    return ids[0], secret


async def test_token_create_list_revoke(tmp_path: Path, make_client: ClientFactory) -> None:
    token_id, secret = create(tmp_path, "s1")
    other_id, other_secret = create(tmp_path, "s2", "--name", "second")
    db = tmp_path / "f.db"
    assert db.exists()
    for path in tmp_path.iterdir():
        if path.name.startswith("f.db"):
            assert secret.encode() not in path.read_bytes()

    client = await make_client(database_path=db)
    resp = await client.post("/api/events", json=[
        {"shopId": "s1", "sessionId": "a", "eventType": "page_view"},
        {"shopId": "s2", "sessionId": "b", "eventType": "page_view"},
    ])
    assert resp.status == 201
    headers = {"Authorization": f"Bearer {secret}"}
    resp = await client.get("/api/events", headers=headers)
    assert resp.status == 200
    assert [e["shopId"] for e in (await resp.json())["data"]] == ["s1"]
    await assert_error(await client.get("/api/events", params={"shopId": "s2"}, headers=headers), 403, "forbidden")

    listed = flowtel(tmp_path, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert token_id in listed.stdout and other_id in listed.stdout
    assert "s1" in listed.stdout and "second" in listed.stdout
    assert secret not in listed.stdout and other_secret not in listed.stdout
    # The API lists the CLI's tokens too, without secrets.
    resp = await client.get("/api/tokens", headers={"Authorization": "Bearer test-admin-token-0123456789abcdef"})
    text = await resp.text()
    assert token_id in text and other_id in text and secret not in text

    revoked = flowtel(tmp_path, "token", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    await assert_error(await client.get("/api/events", headers=headers), 401, "unauthorized")
    resp = await client.get("/api/events", headers={"Authorization": f"Bearer {other_secret}"})
    assert resp.status == 200
    listed = flowtel(tmp_path, "token", "list")
    assert token_id not in listed.stdout and other_id in listed.stdout


def test_revoke_unknown_token_fails(tmp_path: Path) -> None:
    result = flowtel(tmp_path, "token", "revoke", "3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b")
    assert result.returncode != 0
    assert "3f2b8c1e-0d4a-4b7e-9c5f-6a1d2e3f4a5b" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_rejects_a_bad_shop_id(tmp_path: Path) -> None:
    result = flowtel(tmp_path, "token", "create", "--shop", "bad shop!")
    assert result.returncode == 2
    assert "--shop" in result.stderr and "Traceback" not in result.stderr


async def test_chat_answers_a_builtin_question_from_the_files(tmp_path: Path, make_client: ClientFactory) -> None:
    from tests.test_chat import alpha_events, ingest

    client = await make_client()
    await ingest(client)
    await client.close()  # the command opens the DuckDB file itself, as with analyze
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:{tmp_path}/flowtel.db",
           "FLOWTEL_DUCKDB_PATH": str(tmp_path / "flowtel.duckdb"), "FLOWTEL_LLM_PROVIDER": "none"}
    result = subprocess.run([str(FLOWTEL), "chat", "--shop", "alpha", "Top pages of all time"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    views: dict[str, int] = {}
    for e in alpha_events("2000-01-01", "2100-01-01"):
        if e["type"] == "page_view":
            views[e["path"]] = views.get(e["path"], 0) + 1
    top = sorted(views.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    assert f"{top[0]} | {top[1]} |" in result.stdout
    assert "beta-secret" not in result.stdout
    assert "FROM events" in result.stdout

    declined = subprocess.run([str(FLOWTEL), "chat", "--shop", "alpha", "write a poem"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert declined.returncode == 1 and "Top pages" in declined.stderr
