"""One typed settings object, read from `OGV_*` environment variables.

Every other module asks `get_settings()`; `celeryconfig.py` only maps it onto
Celery's names. With no environment at all the service runs on an embedded
default: a SQLite database and a SQLite-backed broker under `OGV_DATA_DIR`, and
an encryption key generated once into that directory. Anything else that is
secret must be given explicitly: a deployment that points at a real database
without `OGV_ENCRYPTION_KEYS` fails at start-up instead of running with a
throwaway key.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker import webhooks
from worker.platforms import PLATFORMS, Platform, ProbeName
from worker.platforms.baseurl import normalise_base_url

OFFICIAL_BASE_URLS = tuple(p.official_base_url for p in PLATFORMS.values())
"""Where the platforms serve their integration APIs: Opsgenie US and EU, JSM Operations."""

EMBEDDED_BROKER = "embedded"
"""`OGV_BROKER_URL=embedded`: the SQLite-backed broker under OGV_DATA_DIR, asked for."""
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "xxx", "todo"})
PLACEHOLDER_MARKS = ("changeme", "change-me", "replaceme", "replace-me", "placeholder", "example")
"""Parts of a secret that say it was copied from a template, not made."""
WEAK_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passw0rd",
        "secret",
        "changeme",
        "change",
        "admin",
        "administrator",
        "token",
        "apitoken",
        "apikey",
        "qwerty",
        "qwertyuiop",
        "asdf",
        "asdfgh",
        "zxcv",
        "letmein",
        "welcome",
        "default",
        "example",
        "test",
        "testing",
        "guest",
        "root",
        "user",
        "login",
        "opsgenie",
        "flower",
        "webhook",
        "hello",
        "dragon",
        "monkey",
        "master",
        "iloveyou",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "shadow",
        "superman",
        "trustno",
        "access",
        "private",
        "pass",
        "word",
        "key",
        "api",
        "ogv",
        "validator",
        "the",
        "and",
        "for",
    }
)
"""Words a secret made only of is guessable, whatever digits and signs surround them."""
DISTINCT_MIN = 8
"""A random secret of 16 characters or more has many more different characters."""
API_TOKEN_MIN = 32
FLOWER_PASSWORD_MIN = 16
MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
MAKE_WEBHOOK_SECRET = (
    "python3 -c 'import base64, secrets; "
    'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opsgenie-validator"


def weakness(secret: str) -> str | None:
    """Why `secret` is obviously guessable, or None: a placeholder, one character
    repeated, too few different characters, a run (abcd..., 1234...), or nothing but
    dictionary words among its letters."""
    text = secret.lower()
    if text in PLACEHOLDER_SECRETS or any(mark in text for mark in PLACEHOLDER_MARKS):
        return "it is a placeholder"
    distinct = len(set(secret))
    if distinct == 1:
        return "it is one character repeated"
    if distinct < DISTINCT_MIN:
        return f"it has fewer than {DISTINCT_MIN} different characters"
    steps = [abs(ord(b) - ord(a)) <= 1 for a, b in itertools.pairwise(secret)]
    if 4 * sum(steps) >= 3 * len(steps):
        return "it is a run of neighbouring characters"
    letters = re.sub("[^a-z]", "", text)
    if letters and _made_of_words(letters):
        return "its letters are dictionary words"
    return None


def _made_of_words(letters: str) -> bool:
    """Whether `letters` is a concatenation of WEAK_WORDS."""
    ends = {0}
    for end in range(1, len(letters) + 1):
        if any(letters[start:end] in WEAK_WORDS for start in ends if start < end):
            ends.add(end)
    return len(letters) in ends


def _refuse_weak(name: str, secret: str, make: str = MAKE_SECRET) -> None:
    reason = weakness(secret)
    if reason is not None:
        # The reason, never the value: it is a secret, even a weak one.
        raise ValueError(f"{name} is refused: {reason}; make a random one with: {make}")


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


MAX_ACCOUNT_RATE = 10_000.0
"""Calls a second to one account, at most: far above any platform's limit, and finite."""


class Settings(BaseSettings):
    """The service's configuration; the README's table documents each field."""

    # A refused value is not echoed in the error: it may be a secret (keys, passwords).
    # No setting is infinite or not a number: `inf` would turn a rate into no limit.
    model_config = SettingsConfigDict(
        env_prefix="OGV_",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    namespace: str = Field(default="ogv", pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    """The queue name and Redis key prefix: deployments sharing a Redis stay apart."""
    database_url: str = ""
    database_pool_size: int = Field(default=20, ge=1, le=1000)
    broker_url: str = ""
    redis_url: str = ""
    """Where the state every worker shares lives (pacing, pauses, the guard's windows):
    the broker's URL when it is Redis."""
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    allowed_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(OFFICIAL_BASE_URLS)
    )

    probe: ProbeName = "authenticate"
    """The probe of integrations on an Opsgenie platform that chose none."""
    opsgenie_base_url: str | None = None
    opsgenie_eu_base_url: str | None = None
    jsm_ops_base_url: str | None = None
    """Where each platform is reached instead of its official URL (tests, proxies)."""
    locate_keys: bool = True
    """Look up where a key that just turned invalid on Opsgenie works instead."""
    migration_probe: bool = False
    """Also probe JSM Operations during periodic re-validation (the migration months)."""
    connect_timeout: float = Field(default=3.0, gt=0)
    total_timeout: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    http_connections: int = Field(default=250, ge=1)

    max_attempts: int = Field(default=5, ge=1)
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_cap: float = Field(default=60.0, gt=0)
    throttle_default: float = Field(default=1.0, gt=0)

    task_soft_time_limit: float = Field(default=60.0, gt=0)
    task_time_limit: float = Field(default=90.0, gt=0)
    lease_seconds: float | None = Field(default=None, gt=0)
    """How long a worker holds a running request; None: the hard time limit plus 30 s."""
    visibility_timeout: int = Field(default=3600, gt=0)

    account_rate: float = Field(default=10.0, gt=0, le=MAX_ACCOUNT_RATE)
    account_rate_authenticate: float | None = Field(default=None, gt=0, le=MAX_ACCOUNT_RATE)
    account_rate_alerts: float | None = Field(default=None, gt=0, le=MAX_ACCOUNT_RATE)
    """The rate of each probe's rate-limit domain, when not `account_rate` (SPEC §9)."""
    account_burst: int = Field(default=1, ge=1)
    max_inline_wait: float = Field(default=5.0, ge=0)

    outbox_republish_after: float = Field(default=60.0, gt=0)
    sweep_interval: float = Field(default=30.0, gt=0)

    revalidate_interval: float = Field(default=86_400.0, gt=0)
    dispatch_window: float = Field(default=600.0, ge=0)
    dispatch_page_size: int = Field(default=20_000, ge=1)
    batch_size: int = Field(default=250, ge=1, le=10_000)
    batch_concurrency: int = Field(default=250, ge=1)

    # When a base URL counts as unavailable (worker/checks/platform_health.py).
    platform_window: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds one window collects a base URL's answers before it restarts at zero."""
    platform_min_answers: int = Field(default=20, ge=1)
    """Answers a window needs before it may turn a base URL unavailable, or recover it."""

    # Never call a good key bad on one answer (worker/checks/guard.py).
    confirm_after: float = Field(default=60.0, ge=0, le=3_600)
    """Seconds before the second check that must confirm a valid key's failing verdict
    (0: no confirmation)."""
    guard_window: float = Field(default=600.0, gt=0, le=86_400)
    """Seconds of the sliding window the mass-change guard counts over, per base URL."""
    guard_threshold: float = Field(default=0.2, gt=0, le=1)
    """The share of checks of valid teams that may turn failing before the guard trips."""
    guard_min_changes: int = Field(default=20, ge=1)
    """Changes a window needs (each organization's counted up to a cap) before the guard
    may trip."""
    guard_min_organizations: int = Field(default=3, ge=2, le=1_000)
    """Distinct organizations whose changes a window needs before the guard may trip;
    each counts for at most ⌈guard_min_changes / this⌉ changes. At least 2: one
    organization's own changes never trip it (SPEC §8)."""
    guard_recheck: float = Field(default=900.0, gt=0)
    """Seconds between re-checks of a team whose change the guard holds."""

    sunset_interval: float = Field(default=21_600.0, gt=0)
    """Seconds between two looks for accounts whose deadline is 30, 7 or 1 days away."""

    status_webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    """`whsec_...` secrets (separated by spaces) that sign every webhook (worker/webhooks.py)."""
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)

    # The HTTP API (`ogv api`, worker/web/api.py).
    api_token: SecretStr | None = None
    api_max_wait: float = Field(default=30.0, gt=0)
    api_group_spacing: float = Field(default=0.01, ge=0, le=1)

    # Monitoring (worker/operations/flower.py, worker/metrics.py).
    flower_basic_auth: SecretStr | None = None
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    metrics_address: str = "0.0.0.0"
    api_metrics_port: int = Field(default=9809, ge=0, le=65535)
    """The port of `ogv api`'s own /metrics (the database's gauges); 0 turns it off."""

    # Tracing, opt-in (worker/tracing.py): off unless asked for or an endpoint is set.
    tracing: Literal["on", "off"] = "off"
    otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    """OpenTelemetry's own variable: where spans are sent (OTLP over HTTP)."""

    # Production topologies and growth (issue 15; docs/SCALING.md).
    history_retention_days: int = Field(default=365, ge=0)
    """Days `team_status_changes` keeps a row; 0 keeps every row for good."""
    request_retention_days: int = Field(default=30, ge=0)
    """Days a finished `validation_requests` row is kept, unless it is its team's latest
    or a status change or held change refers to it; 0 keeps every row for good."""
    prune_interval: float = Field(default=3600.0, gt=0)
    """Seconds between two runs of beat's pruning of requests and history
    (`ogv.prune_history`)."""
    audit_retention_days: int = Field(default=400, ge=0)
    """Days `audit_events` keeps an event; 0 keeps every event for good."""

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("encryption_keys", "allowed_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        # Refused here, at start: a malformed key would otherwise pass until the first
        # team is stored or checked. The message names the entry, never its value.
        if not keys:
            return keys
        # Only here: `ogv status` and its like never load cryptography (tests/test_startup.py).
        from models.crypto import is_fernet_key

        for number, key in enumerate(keys, start=1):
            text = key.get_secret_value().strip()
            if text.lower() in PLACEHOLDER_SECRETS:
                raise ValueError("OGV_ENCRYPTION_KEYS holds a placeholder, not a Fernet key")
            if not is_fernet_key(text.encode()):
                raise ValueError(
                    f"OGV_ENCRYPTION_KEYS: entry {number} of {len(keys)} is not a Fernet key "
                    "(32 bytes, URL-safe base64); make one with `ogv keys generate`"
                )
        return keys

    @field_validator("api_token", "flower_basic_auth", "webhook_secret", mode="before")
    @classmethod
    def _stripped(cls, value: object) -> object:
        # A secret pasted with a trailing newline would start a server nobody can log in to.
        return value.strip() if isinstance(value, str) else value

    @field_validator("api_token")
    @classmethod
    def _strong_tokens(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        # Several tokens, separated by spaces: a new one is rolled out before the old goes.
        for text in token.get_secret_value().split() or [""]:
            if text.lower() in PLACEHOLDER_SECRETS or len(text) < API_TOKEN_MIN:
                raise ValueError(
                    "OGV_API_TOKEN must be random tokens, separated by spaces, each of at "
                    f"least {API_TOKEN_MIN} characters; make one with: {MAKE_SECRET}"
                )
            _refuse_weak("OGV_API_TOKEN", text)
        return token

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secrets(cls, value: SecretStr | None) -> SecretStr | None:
        for secret in value.get_secret_value().split() if value is not None else []:
            try:
                key = webhooks.decode_secret(secret)
            except webhooks.WebhookSecretError as exc:
                raise ValueError(
                    f"OGV_WEBHOOK_SECRET: {exc}; make one with: {MAKE_WEBHOOK_SECRET}"
                ) from None
            if secret in webhooks.EXAMPLE_SECRETS or len(set(key)) < DISTINCT_MIN:
                raise ValueError(
                    "OGV_WEBHOOK_SECRET is refused: a published example, or too few different "
                    f"bytes; make one with: {MAKE_WEBHOOK_SECRET}"
                )
            if key.isascii() and key.decode().isprintable():
                _refuse_weak("OGV_WEBHOOK_SECRET", key.decode(), MAKE_WEBHOOK_SECRET)
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_password_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        # Flower takes a comma-separated list of `user:password` pairs.
        pairs = value.get_secret_value().split(",") if value is not None else []
        for pair in pairs:
            user, _, password = (part.strip() for part in pair.partition(":"))
            if not user or password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "OGV_FLOWER_BASIC_AUTH must be user:password pairs, separated by commas, "
                    "with real passwords"
                )
            if len(password) < FLOWER_PASSWORD_MIN:
                raise ValueError(
                    f"OGV_FLOWER_BASIC_AUTH: each password needs at least {FLOWER_PASSWORD_MIN} "
                    f"characters; make one with: {MAKE_SECRET}"
                )
            _refuse_weak("OGV_FLOWER_BASIC_AUTH's password", password)
        return value

    @field_validator("allowed_base_urls")
    @classmethod
    def _normalise_urls(cls, urls: list[str]) -> list[str]:
        return [normalise_base_url(url) for url in urls]

    @field_validator("opsgenie_base_url", "opsgenie_eu_base_url", "jsm_ops_base_url")
    @classmethod
    def _normalise_override(cls, url: str | None) -> str | None:
        return normalise_base_url(url) if url else None

    @model_validator(mode="after")
    def _overrides_are_allowed(self) -> Settings:
        for platform in PLATFORMS.values():
            url = self.platform_base_url(platform)
            if url != platform.official_base_url and url not in self.allowed_base_urls:
                raise ValueError(
                    f"{platform.base_url_setting} must be on OGV_ALLOWED_BASE_URLS "
                    "(a key is only ever sent to an allowed host)"
                )
        return self

    def rate_for(self, probe: ProbeName) -> float:
        """Calls per second per account in the rate-limit domain of `probe`."""
        override = {
            "authenticate": self.account_rate_authenticate,
            "alerts": self.account_rate_alerts,
        }[probe]
        return override if override is not None else self.account_rate

    @property
    def slowest_account_rate(self) -> float:
        """The lowest of the domains' rates: what a plan for any probe can count on."""
        return min(self.rate_for("authenticate"), self.rate_for("alerts"))

    def platform_base_url(self, platform: Platform) -> str:
        """Where `platform` is reached: its override, else its official base URL."""
        override: str | None = getattr(self, platform.base_url_setting.removeprefix("OGV_").lower())
        return override or platform.official_base_url

    @model_validator(mode="after")
    def _a_real_database_needs_its_partners(self) -> Settings:
        # Without these, a worker would start, say `ready`, and fail every check (no
        # keys) or publish to a broker nobody else reads (the embedded one).
        if self.database_url and not self.broker_url:
            raise ValueError(
                "OGV_BROKER_URL is not set while OGV_DATABASE_URL is: set it to your broker "
                f"(redis://... or amqp://...), or to `{EMBEDDED_BROKER}` for the no-server "
                "broker of a single machine"
            )
        if self.database_url and not self.encryption_keys:
            raise ValueError(
                "OGV_ENCRYPTION_KEYS is required when OGV_DATABASE_URL is set; generate one "
                "with `ogv keys generate`"
            )
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.task_time_limit <= self.task_soft_time_limit:
            raise ValueError("OGV_TASK_TIME_LIMIT must be longer than OGV_TASK_SOFT_TIME_LIMIT")
        # A lease that lapsed while its task may still run would let the sweeper hand a
        # live check to a second worker; past the hard limit the task is surely dead.
        if self.lease_seconds is not None and self.lease_seconds <= self.task_time_limit:
            raise ValueError("OGV_LEASE_SECONDS must be longer than OGV_TASK_TIME_LIMIT")
        # A Redis message waiting out a countdown must not be handed to a second
        # worker: the visibility timeout has to outlast the longest wait we schedule.
        longest_wait = (
            max(self.backoff_cap, 60.0, self.dispatch_window, self.confirm_after)
            + self.task_time_limit
        )
        if self.visibility_timeout <= longest_wait:
            raise ValueError(
                f"OGV_VISIBILITY_TIMEOUT must exceed {longest_wait:.0f}s "
                "(the longest retry countdown, confirmation delay or dispatch window plus the "
                "task time limit)"
            )
        return self

    @property
    def tracing_on(self) -> bool:
        """Spans are made and sent: OGV_TRACING=on, or an OTLP endpoint is set."""
        return self.tracing == "on" or bool(self.otlp_endpoint)

    @property
    def lease(self) -> float:
        """How long a worker holds a running request: OGV_LEASE_SECONDS, or the hard
        limit and some slack."""
        return self.lease_seconds if self.lease_seconds is not None else self.task_time_limit + 30.0

    @property
    def is_embedded(self) -> bool:
        """True when no database was configured: the SQLite default under data_dir."""
        return not self.database_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return _with_psycopg_driver(self.database_url)
        return f"sqlite:///{self.data_dir / 'ogv.sqlite3'}"

    @property
    def effective_broker_url(self) -> str:
        if self.broker_url and self.broker_url != EMBEDDED_BROKER:
            return self.broker_url
        return f"ogvsqla+sqlite:///{self.data_dir / 'broker.sqlite3'}"

    @property
    def uses_redis(self) -> bool:
        """True when the broker is Redis (its transport needs a visibility timeout)."""
        return self.effective_broker_url.startswith(("redis://", "rediss://"))

    @property
    def uses_rabbitmq(self) -> bool:
        """True when the broker is RabbitMQ (quorum queue, publisher confirms)."""
        return self.effective_broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    @property
    def shared_state_url(self) -> str | None:
        """The Redis every worker shares state through: OGV_REDIS_URL, else the broker
        when it is Redis, else None (each process keeps its own)."""
        if self.redis_url:
            return self.redis_url
        return self.effective_broker_url if self.uses_redis else None

    def api_tokens(self) -> list[str]:
        """The bootstrap tokens of OGV_API_TOKEN (several, while one is rotated)."""
        return self.api_token.get_secret_value().split() if self.api_token else []

    def webhook_keys(self) -> list[bytes]:
        """The HMAC keys of OGV_WEBHOOK_SECRET; every webhook is signed with each."""
        secrets = self.webhook_secret.get_secret_value().split() if self.webhook_secret else []
        return [webhooks.decode_secret(secret) for secret in secrets]

    def fernet_keys(self) -> list[bytes]:
        """The Fernet keys, newest first; on the embedded default one is made once."""
        if self.encryption_keys:
            return [key.get_secret_value().encode() for key in self.encryption_keys]
        if not self.is_embedded:
            raise RuntimeError(
                "OGV_ENCRYPTION_KEYS is required when OGV_DATABASE_URL is set; "
                "generate one with `ogv keys generate`"
            )
        return [_embedded_key(self.data_dir)]


def sqlalchemy_url(url: str) -> str:
    """A database URL as the service uses it: `postgresql://` gets the psycopg 3 driver."""
    return _with_psycopg_driver(url)


def _with_psycopg_driver(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _embedded_key(data_dir: Path) -> bytes:
    from cryptography.fernet import Fernet  # only here: most commands never touch a key

    path = data_dir / "encryption.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


def describe_invalid_settings(exc: ValidationError) -> str:
    """A refused configuration in one line, each problem under its variable's name."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"OGV_{field.upper()}" if field else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(message if message.startswith("OGV_") else f"{name}: {message}")
    return "; ".join(problems)


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
