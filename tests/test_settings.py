"""Contract section 10: load_settings from an environment mapping, its defaults, and a clear error per bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import DEFAULT_CORS_ORIGINS, SettingsError, load_settings

FLOWTEL = Path(sys.executable).parent / "flowtel"


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings.port == 4000
    assert settings.host == "0.0.0.0"
    assert settings.database_path == Path("./data/flowtel.db")
    assert settings.duckdb_path == Path("./data/flowtel.duckdb")
    assert settings.mirror_interval == 1
    assert settings.admin_token is None
    assert settings.auth_enabled is True
    assert settings.cors_origins == (
        "http://localhost:3000", "http://localhost:5173", "http://127.0.0.1:3000", "http://127.0.0.1:5173",
    )
    assert settings.trust_proxy is False
    assert settings.llm_provider == "none"
    assert settings.openai_api_key is None and settings.anthropic_api_key is None
    assert settings.openai_base_url is None and settings.anthropic_base_url is None
    assert settings.admin_token_path == Path("./data/admin-token")


def test_blank_values_mean_the_default() -> None:
    blank = {name: "" for name in ("PORT", "HOST", "DATABASE_URL", "FLOWTEL_MIRROR_INTERVAL", "FLOWTEL_AUTH",
                                   "FLOWTEL_CORS_ORIGINS", "FLOWTEL_TRUST_PROXY", "FLOWTEL_LLM_PROVIDER",
                                   "FLOWTEL_ADMIN_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    assert load_settings(blank) == load_settings({})


def test_good_values_are_read() -> None:
    settings = load_settings({
        "PORT": "8080",
        "HOST": "127.0.0.1",
        "DATABASE_URL": "sqlite:///srv/flowtel/events.db",
        "FLOWTEL_DUCKDB_PATH": "/srv/flowtel/mirror.duckdb",
        "FLOWTEL_MIRROR_INTERVAL": "0.5",
        "FLOWTEL_ADMIN_TOKEN": "a-long-enough-admin-token",
        "FLOWTEL_AUTH": "off",
        "FLOWTEL_CORS_ORIGINS": "https://dash.example.com, https://admin.example.com:8443/",
        "FLOWTEL_TRUST_PROXY": "1",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
        "OPENAI_MODEL": "gpt-test",
    })
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.database_path == Path("/srv/flowtel/events.db")
    assert settings.duckdb_path == Path("/srv/flowtel/mirror.duckdb")
    assert settings.admin_token_path == Path("/srv/flowtel/admin-token")
    assert settings.mirror_interval == 0.5
    assert settings.admin_token == "a-long-enough-admin-token"
    assert settings.auth_enabled is False
    assert settings.cors_origins == (*DEFAULT_CORS_ORIGINS, "https://dash.example.com", "https://admin.example.com:8443")
    assert settings.trust_proxy is True
    assert settings.llm_provider == "openai"
    assert (settings.openai_api_key, settings.openai_base_url, settings.openai_model) == (
        "sk-test", "http://127.0.0.1:9999/v1", "gpt-test")


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:./data/flowtel.db", Path("data/flowtel.db")),
    ("sqlite:relative/x.db", Path("relative/x.db")),
    ("sqlite:///abs/x.db", Path("/abs/x.db")),
    ("sqlite:/abs/y.db", Path("/abs/y.db")),
])
def test_database_url_forms(url: str, path: Path) -> None:
    assert load_settings({"DATABASE_URL": url}).database_path == path


@pytest.mark.parametrize(("value", "enabled"), [("on", True), ("1", True), ("true", True), ("off", False),
                                                ("0", False), ("false", False), ("OFF", False)])
def test_auth_switch(value: str, enabled: bool) -> None:
    assert load_settings({"FLOWTEL_AUTH": value}).auth_enabled is enabled


@pytest.mark.parametrize(("env", "provider"), [
    ({}, "none"),
    ({"OPENAI_API_KEY": "sk-1"}, "openai"),
    ({"ANTHROPIC_API_KEY": "sk-ant-1"}, "anthropic"),
    ({"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-ant-1"}, "openai"),
    ({"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-ant-1", "FLOWTEL_LLM_PROVIDER": "anthropic"}, "anthropic"),
    ({"OPENAI_API_KEY": "sk-1", "FLOWTEL_LLM_PROVIDER": "none"}, "none"),
    ({"OPENAI_API_KEY": "sk-1", "FLOWTEL_LLM_PROVIDER": "OpenAI"}, "openai"),
])
def test_llm_provider_follows_the_keys_unless_chosen(env: dict[str, str], provider: str) -> None:
    assert load_settings(env).llm_provider == provider


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "abc"),
    ("PORT", "70000"),
    ("PORT", "-1"),
    ("PORT", "80.5"),
    ("DATABASE_URL", "postgres://x"),
    ("DATABASE_URL", "sqlite:"),
    ("DATABASE_URL", "sqlite::memory:"),
    ("FLOWTEL_MIRROR_INTERVAL", "0"),
    ("FLOWTEL_MIRROR_INTERVAL", "abc"),
    ("FLOWTEL_MIRROR_INTERVAL", "-1"),
    ("FLOWTEL_MIRROR_INTERVAL", "nan"),
    ("FLOWTEL_AUTH", "maybe"),
    ("FLOWTEL_CORS_ORIGINS", "not-an-origin"),
    ("FLOWTEL_CORS_ORIGINS", "https://ok.example,ftp://files.example"),
    ("FLOWTEL_CORS_ORIGINS", "https://dash.example.com/path"),
    ("FLOWTEL_LLM_PROVIDER", "foo"),
    ("FLOWTEL_TRUST_PROXY", "2"),
    ("FLOWTEL_TRUST_PROXY", "maybe"),
])
def test_bad_value_raises_settings_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert name in str(info.value)


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:{tmp_path}/f.db"}
    return subprocess.run([str(FLOWTEL), "serve"], env={**base, **env}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "abc"), ("DATABASE_URL", "postgres://x"), ("FLOWTEL_AUTH", "maybe"),
])
def test_serve_with_a_bad_environment_exits_2_with_a_clear_message(tmp_path: Path, name: str, value: str) -> None:
    result = run_serve(tmp_path, **{name: value})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "f.db").exists()
