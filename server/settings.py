"""Runtime configuration: one frozen Settings built from the environment and validated at start."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from analytics.llm import LLMConfig

DEFAULT_CORS_ORIGINS = (
    "http://localhost:3000",
    "http://localhost:5173",
    "http://127.0.0.1:3000",
    "http://127.0.0.1:5173",
)
LLM_PROVIDERS = ("openai", "anthropic", "none")
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_TRUE = ("1", "true", "yes", "on")
# A bucket holds this many seconds of its rate, so short bursts (a page load's batch, a dashboard's refresh) pass.
RATE_BURST_SECONDS = 10
_FALSE = ("0", "false", "no", "off")
DEFAULT_INSIGHTS_HOUR = 4
# One retry for a rate limit or a 5xx: insights fall back to templates anyway, and a request should not hang on it.
LLM_MAX_RETRIES = 1


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and what to set instead."""


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 4000
    database_path: Path = Path("./data/flowtel.db")
    duckdb_path: Path = Path("./data/flowtel.duckdb")
    mirror_interval: float = 1.0
    admin_token: str | None = None
    auth_enabled: bool = True
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    trust_proxy: bool = False
    llm_provider: str = "none"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-3-5-haiku-latest"
    # Events waiting for the writer; past this the server answers 503 instead of buffering without bound.
    write_queue_events: int = 20000
    # DuckDB's memory cap: queries spill or fail cleanly instead of growing the process without bound. 640MB keeps
    # the whole server under 1 GiB at 10M events (measured: about 0.9 GiB after the all-shops report; with 1GB it
    # stayed at 1.2 GiB, as DuckDB's allocator keeps what a report used).
    duckdb_memory_limit: str = "640MB"
    # One log line per request (aiohttp's access log); off by default because it halves request throughput.
    access_log: bool = False
    # FULL fsyncs the WAL on every group commit, so an acknowledged event also survives power loss.
    sqlite_synchronous: str = "FULL"
    # Ingestion for a shop id nobody registered (POST /api/shops) is a 400 when on.
    require_known_shops: bool = False
    # Token buckets (0 = off). Each refills at the rate per second and holds RATE_BURST_SECONDS of it.
    rate_limit_ip: float = 200.0  # ingestion requests per client IP
    rate_limit_shop: float = 5000.0  # ingested events per shop
    rate_limit_read: float = 20.0  # read requests per token
    # Expensive reads (stats, query, insights, chat) running at once; more wait, then get 503.
    max_concurrent_queries: int = 4
    # Seconds a client may take to send its request body.
    body_timeout: float = 10.0
    # Seconds one LLM request may take (the SDKs' timeout); after it insights keep their template text.
    llm_timeout: float = 20.0
    # UTC hour of the daily insights run, or None for no background run (the default here, so tests and embedded
    # uses stay quiet; load_settings turns it on at 04:00 unless FLOWTEL_INSIGHTS_HOUR=off).
    insights_hour: int | None = None
    # Chat requests per shop per minute, and LLM tokens (input + output) per shop per UTC day.
    chat_rate_per_minute: int = 20
    chat_daily_tokens: int = 200_000
    # Events older than this many days are purged once a day; None keeps every event forever.
    retention_days: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.database_path.parent

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a switch: use one of 1/0, true/false, on/off.")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number: set it to {low}..{high}.") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: set it to {low}..{high}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, ok: Callable[[float], bool], fix: str) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number: {fix}.") from None
    if math.isnan(value) or not ok(value):
        raise SettingsError(f"{name}={raw!r} is out of range: {fix}.")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    return _float(env, name, default, lambda v: 0 < v <= 3600, "set seconds above 0 and at most 3600, e.g. 1 or 0.5")


def _rate(env: Mapping[str, str], name: str, default: float) -> float:
    return _float(env, name, default, lambda v: 0 <= v <= 1e9, "set a rate per second such as 100, or 0 for no limit")


def _hour_or_off(env: Mapping[str, str], name: str, default: int) -> int | None:
    raw = _nonempty(env, name)
    if raw is not None and raw.lower() in _FALSE:
        return None
    return _int(env, name, default, 0, 23)



def _sqlite_path(raw: str) -> Path:
    if not raw.startswith("sqlite:"):
        raise SettingsError(
            f"DATABASE_URL={raw!r} is not supported: use sqlite:./data/flowtel.db or sqlite:///absolute/path.db."
        )
    rest = raw[len("sqlite:") :]
    if rest.startswith("///"):  # sqlite:///abs and the SQLAlchemy-style sqlite:////abs
        rest = "/" + rest.lstrip("/")
    elif rest.startswith("//"):
        rest = rest[2:]
    if rest in ("", ":memory:"):
        raise SettingsError(f"DATABASE_URL={raw!r} must name a file: the store is durable by design.")
    return Path(rest)


def _origins(raw: str | None) -> tuple[str, ...]:
    extra: list[str] = []
    for part in (raw or "").split(","):
        origin = part.strip().rstrip("/")
        if not origin:
            continue
        if not _ORIGIN_RE.fullmatch(origin):
            raise SettingsError(
                f"FLOWTEL_CORS_ORIGINS has {origin!r}: each origin is scheme://host[:port], e.g. https://dash.example.com."
            )
        extra.append(origin)
    return DEFAULT_CORS_ORIGINS + tuple(o for o in extra if o not in DEFAULT_CORS_ORIGINS)


def _nonempty(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping, raising SettingsError with a fix for any bad value."""
    defaults_memory = Settings.duckdb_memory_limit
    admin_token = _nonempty(env, "FLOWTEL_ADMIN_TOKEN")
    if admin_token is not None and len(admin_token) < 16:
        raise SettingsError("FLOWTEL_ADMIN_TOKEN is too short: use at least 16 random characters.")

    openai_key = _nonempty(env, "OPENAI_API_KEY")
    anthropic_key = _nonempty(env, "ANTHROPIC_API_KEY")
    provider = (_nonempty(env, "FLOWTEL_LLM_PROVIDER") or "").lower()
    if provider == "":
        provider = "openai" if openai_key else "anthropic" if anthropic_key else "none"
    elif provider not in LLM_PROVIDERS:
        raise SettingsError(
            f"FLOWTEL_LLM_PROVIDER={env.get('FLOWTEL_LLM_PROVIDER')!r} is unknown: use openai, anthropic or none."
        )

    memory = _nonempty(env, "FLOWTEL_DUCKDB_MEMORY") or defaults_memory
    if not re.fullmatch(r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$", memory, re.IGNORECASE):
        raise SettingsError(f"FLOWTEL_DUCKDB_MEMORY={memory!r} is not a size: use e.g. 512MB or 2GB.")

    synchronous = (_nonempty(env, "FLOWTEL_SQLITE_SYNCHRONOUS") or "FULL").upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise SettingsError("FLOWTEL_SQLITE_SYNCHRONOUS must be FULL or NORMAL.")

    defaults = Settings()
    return Settings(
        host=_nonempty(env, "HOST") or defaults.host,
        port=_int(env, "PORT", defaults.port, 0, 65535),
        database_path=_sqlite_path(_nonempty(env, "DATABASE_URL") or "sqlite:./data/flowtel.db"),
        duckdb_path=Path(_nonempty(env, "FLOWTEL_DUCKDB_PATH") or str(defaults.duckdb_path)),
        mirror_interval=_positive_float(env, "FLOWTEL_MIRROR_INTERVAL", defaults.mirror_interval),
        admin_token=admin_token,
        auth_enabled=_flag(env, "FLOWTEL_AUTH", True),
        cors_origins=_origins(env.get("FLOWTEL_CORS_ORIGINS")),
        trust_proxy=_flag(env, "FLOWTEL_TRUST_PROXY", False),
        llm_provider=provider,
        openai_api_key=openai_key,
        openai_base_url=_nonempty(env, "OPENAI_BASE_URL"),
        openai_model=_nonempty(env, "OPENAI_MODEL") or defaults.openai_model,
        anthropic_api_key=anthropic_key,
        anthropic_base_url=_nonempty(env, "ANTHROPIC_BASE_URL"),
        anthropic_model=_nonempty(env, "ANTHROPIC_MODEL") or defaults.anthropic_model,
        write_queue_events=_int(env, "FLOWTEL_WRITE_QUEUE", defaults.write_queue_events, 1, 10_000_000),
        sqlite_synchronous=synchronous,
        duckdb_memory_limit=memory,
        access_log=_flag(env, "FLOWTEL_ACCESS_LOG", False),
        require_known_shops=_flag(env, "FLOWTEL_REQUIRE_KNOWN_SHOPS", False),
        rate_limit_ip=_rate(env, "FLOWTEL_RATE_LIMIT_IP", defaults.rate_limit_ip),
        rate_limit_shop=_rate(env, "FLOWTEL_RATE_LIMIT_SHOP", defaults.rate_limit_shop),
        rate_limit_read=_rate(env, "FLOWTEL_RATE_LIMIT_READ", defaults.rate_limit_read),
        max_concurrent_queries=_int(env, "FLOWTEL_MAX_CONCURRENT_QUERIES", defaults.max_concurrent_queries, 1, 256),
        body_timeout=_positive_float(env, "FLOWTEL_BODY_TIMEOUT", defaults.body_timeout),
        llm_timeout=_positive_float(env, "FLOWTEL_LLM_TIMEOUT", defaults.llm_timeout),
        insights_hour=_hour_or_off(env, "FLOWTEL_INSIGHTS_HOUR", DEFAULT_INSIGHTS_HOUR),
        chat_rate_per_minute=_int(env, "FLOWTEL_CHAT_RATE", defaults.chat_rate_per_minute, 1, 100_000),
        chat_daily_tokens=_int(env, "FLOWTEL_CHAT_DAILY_TOKENS", defaults.chat_daily_tokens, 0, 1_000_000_000),
        retention_days=_retention_days(env),
    )


def llm_config(settings: Settings) -> LLMConfig:
    """The LLM layer's configuration from Settings: the chosen provider's key, base URL and model."""
    if settings.llm_provider == "openai":
        return LLMConfig("openai", settings.openai_api_key, settings.openai_base_url, settings.openai_model,
                         timeout_s=settings.llm_timeout, max_retries=LLM_MAX_RETRIES)
    if settings.llm_provider == "anthropic":
        return LLMConfig("anthropic", settings.anthropic_api_key, settings.anthropic_base_url,
                         settings.anthropic_model, timeout_s=settings.llm_timeout, max_retries=LLM_MAX_RETRIES)
    return LLMConfig("none")


def _retention_days(env: Mapping[str, str]) -> int | None:
    if _nonempty(env, "FLOWTEL_RETENTION_DAYS") is None:
        return None
    return _int(env, "FLOWTEL_RETENTION_DAYS", 0, 1, 36500)
