"""The settings object: environment parsing, the embedded default, fail-fast checks."""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import AliasChoices, ValidationError

from worker.settings import OFFICIAL_BASE_URLS, Settings, describe_invalid_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No OGV_* variable from the caller's shell, and a private XDG data home."""
    for name in list(os.environ):
        if name.startswith("OGV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield


def test_embedded_default_lives_under_the_xdg_data_home(tmp_path: Path) -> None:
    settings = Settings()
    data_dir = tmp_path / "xdg" / "opsgenie-validator"

    assert settings.data_dir == data_dir
    assert settings.is_embedded
    assert settings.effective_database_url == f"sqlite:///{data_dir / 'ogv.sqlite3'}"
    assert settings.effective_broker_url == f"ogvsqla+sqlite:///{data_dir / 'broker.sqlite3'}"
    assert not settings.uses_redis
    assert settings.allowed_base_urls == list(OFFICIAL_BASE_URLS)
    assert settings.probe == "authenticate"


def test_explicit_kwargs(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()

    settings = Settings(
        data_dir=tmp_path,
        database_url="sqlite:////srv/ogv.db",
        broker_url="redis://cache:6379/0",
        encryption_keys=[key],
        probe="alerts",
        max_attempts=7,
    )

    assert settings.data_dir == tmp_path
    assert not settings.is_embedded
    assert settings.effective_database_url == "sqlite:////srv/ogv.db"
    assert settings.effective_broker_url == "redis://cache:6379/0"
    assert settings.fernet_keys() == [key.encode()]
    assert (settings.probe, settings.max_attempts) == ("alerts", 7)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("OGV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OGV_DATABASE_URL", "postgresql://ogv:pw@db:5432/ogv")
    monkeypatch.setenv("OGV_BROKER_URL", "rediss://cache:6380/1")
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", f" {first} ,{second},")
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", "https://API.opsgenie.com, http://127.0.0.1:8080 ,")
    monkeypatch.setenv("OGV_PROBE", "alerts")
    monkeypatch.setenv("OGV_TOTAL_TIMEOUT", "2.5")
    monkeypatch.setenv("OGV_LOG_FORMAT", "json")

    settings = Settings()

    assert settings.data_dir == tmp_path / "data"
    assert settings.effective_database_url == "postgresql+psycopg://ogv:pw@db:5432/ogv"
    assert settings.uses_redis
    assert settings.fernet_keys() == [first.encode(), second.encode()]
    assert settings.allowed_base_urls == ["https://api.opsgenie.com/", "http://127.0.0.1:8080/"]
    assert (settings.probe, settings.total_timeout, settings.log_format) == ("alerts", 2.5, "json")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:////var/lib/ogv.db", "sqlite:////var/lib/ogv.db"),
    ],
)
def test_database_url_gets_the_psycopg_driver(url: str, expected: str) -> None:
    settings = Settings(
        database_url=url, broker_url="embedded", encryption_keys=[Fernet.generate_key().decode()]
    )

    assert settings.effective_database_url == expected


@pytest.mark.parametrize(
    ("broker_url", "uses_redis"),
    [
        ("redis://localhost:6379/0", True),
        ("rediss://cache:6380/0", True),
        ("amqp://guest@rabbit//", False),
        ("", False),
    ],
)
def test_uses_redis(broker_url: str, uses_redis: bool) -> None:
    assert Settings(broker_url=broker_url).uses_redis is uses_redis


def test_embedded_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    settings = Settings(data_dir=data_dir)

    [key] = settings.fernet_keys()

    path = data_dir / "encryption.key"
    assert path.read_bytes().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key)  # a real Fernet key, not a placeholder
    assert settings.fernet_keys() == [key]
    assert Settings(data_dir=data_dir).fernet_keys() == [key]
    assert path.read_bytes().strip() == key


def test_explicit_keys_win_over_the_embedded_file(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()

    assert Settings(data_dir=tmp_path, encryption_keys=[key]).fernet_keys() == [key.encode()]
    assert not (tmp_path / "encryption.key").exists()


@pytest.mark.parametrize("keys", [None, "", " , "])
def test_a_real_database_needs_explicit_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: str | None
) -> None:
    monkeypatch.setenv("OGV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OGV_DATABASE_URL", "postgresql://ogv@db/ogv")
    monkeypatch.setenv("OGV_BROKER_URL", "redis://cache:6379/0")
    if keys is not None:
        monkeypatch.setenv("OGV_ENCRYPTION_KEYS", keys)

    with pytest.raises(ValidationError, match="OGV_ENCRYPTION_KEYS is required"):
        Settings()  # refused at start, not at the first check
    assert not (tmp_path / "encryption.key").exists()


def test_a_real_database_needs_a_broker_or_the_embedded_one_asked_for(tmp_path: Path) -> None:
    keys = [Fernet.generate_key().decode()]
    with pytest.raises(ValidationError, match="OGV_BROKER_URL is not set while OGV_DATABASE_URL"):
        Settings(database_url="postgresql://ogv@db/ogv", encryption_keys=keys)

    asked = Settings(
        data_dir=tmp_path,
        database_url="postgresql://ogv@db/ogv",
        encryption_keys=keys,
        broker_url="embedded",
    )

    assert asked.effective_broker_url == f"ogvsqla+sqlite:///{tmp_path / 'broker.sqlite3'}"


@pytest.mark.parametrize("placeholder", ["changeme", " CHANGEME ", "change-me", "secret", "todo"])
def test_placeholder_keys_are_refused(placeholder: str) -> None:
    with pytest.raises(ValidationError, match="OGV_ENCRYPTION_KEYS holds a placeholder"):
        Settings(encryption_keys=[Fernet.generate_key().decode(), placeholder])


def test_placeholder_key_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", "changeme")

    with pytest.raises(ValidationError, match="placeholder"):
        Settings()


def test_keys_are_not_shown_in_repr() -> None:
    key = Fernet.generate_key().decode()

    settings = Settings(encryption_keys=[key])

    assert key not in repr(settings)
    assert key not in str(settings)


def test_an_allowed_base_url_that_is_not_a_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", "https://api.opsgenie.com/,ftp://files.test/")

    with pytest.raises(ValidationError, match="http\\(s\\) URL"):
        Settings()


@pytest.mark.parametrize(("soft", "hard"), [(60, 60), (60, 30)])
def test_hard_time_limit_must_exceed_the_soft_one(soft: float, hard: float) -> None:
    with pytest.raises(ValidationError, match="OGV_TASK_TIME_LIMIT must be longer"):
        Settings(task_soft_time_limit=soft, task_time_limit=hard)


def test_the_lease_defaults_to_the_hard_limit_plus_slack() -> None:
    assert Settings(task_soft_time_limit=10, task_time_limit=20).lease == 50.0


def test_the_lease_can_be_shortened_but_must_outlast_the_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OGV_LEASE_SECONDS", "6")
    assert Settings(task_soft_time_limit=4, task_time_limit=5).lease == 6.0
    with pytest.raises(ValueError, match="OGV_LEASE_SECONDS"):
        Settings(task_soft_time_limit=4, task_time_limit=6)


def test_hard_time_limit_just_above_the_soft_one_is_fine() -> None:
    settings = Settings(task_soft_time_limit=60, task_time_limit=60.5)

    assert (settings.task_soft_time_limit, settings.task_time_limit) == (60, 60.5)


@pytest.mark.parametrize(
    ("fields", "longest_wait"),
    [
        ({}, 690),  # max(60, backoff_cap 60, dispatch_window 600) + task_time_limit 90
        ({"dispatch_window": 0.0}, 150),
        ({"dispatch_window": 0.0, "backoff_cap": 300.0}, 390),
        (
            {"dispatch_window": 0.0, "task_soft_time_limit": 100.0, "task_time_limit": 200.0},
            260,
        ),
    ],
)
def test_visibility_timeout_must_outlast_the_longest_wait(
    fields: dict[str, Any], longest_wait: int
) -> None:
    with pytest.raises(
        ValidationError, match=f"OGV_VISIBILITY_TIMEOUT must exceed {longest_wait}s"
    ):
        Settings(visibility_timeout=longest_wait, **fields)

    accepted = Settings(visibility_timeout=longest_wait + 1, **fields)
    assert accepted.visibility_timeout == longest_wait + 1


def test_visibility_timeout_from_the_environment_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OGV_VISIBILITY_TIMEOUT", "120")

    with pytest.raises(ValidationError, match="OGV_VISIBILITY_TIMEOUT"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OGV_PROBE", "heartbeat"),
        ("OGV_MAX_ATTEMPTS", "0"),
        ("OGV_TOTAL_TIMEOUT", "-1"),
        ("OGV_MAX_RESPONSE_BYTES", "10"),
        ("OGV_LOG_FORMAT", "xml"),
        ("OGV_ACCOUNT_RATE", "inf"),  # no limit at all
        ("OGV_ACCOUNT_RATE", "1e309"),  # infinity, spelled as a number
        ("OGV_ACCOUNT_RATE", "1e12"),
        ("OGV_ACCOUNT_RATE_ALERTS", "Infinity"),
        ("OGV_CONFIRM_AFTER", "nan"),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.max_attempts = 9


@pytest.mark.parametrize("token", ["a", "x" * 31, "changeme"])
def test_a_weak_api_token_is_refused_with_how_to_make_one(token: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters; make one with") as caught:
        Settings(api_token=token)
    assert f"'{token}'" not in str(caught.value)  # the value itself is not echoed


def test_a_token_pasted_with_a_newline_is_the_token() -> None:
    token = secrets.token_urlsafe(32)

    stored = Settings(api_token=f"  {token}\n").api_token
    assert stored is not None and stored.get_secret_value() == token


@pytest.mark.parametrize(
    "auth", ["admin:a", "admin:15-characters", f"ops:{secrets.token_urlsafe(16)},dev:x"]
)
def test_a_weak_flower_password_is_refused(auth: str) -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(flower_basic_auth=auth)


def test_flower_credentials_are_stripped() -> None:
    password = secrets.token_urlsafe(16)
    settings = Settings(flower_basic_auth=f"ops:{password}\n")

    stored = settings.flower_basic_auth
    assert stored is not None and stored.get_secret_value() == f"ops:{password}"


@pytest.mark.parametrize(
    "malformed",
    [
        "not-a-fernet-key",
        Fernet.generate_key().decode()[:-2],  # cut short
        "MDEyMzQ1Njc4OWFiY2RlZg==",  # base64 of 16 bytes, not 32
        Fernet.generate_key().decode().replace("-", "+").replace("_", "/") + "!",
    ],
)
def test_a_malformed_key_is_refused_by_its_place_never_its_value(
    monkeypatch: pytest.MonkeyPatch, malformed: str
) -> None:
    good = Fernet.generate_key().decode()
    monkeypatch.setenv("OGV_ENCRYPTION_KEYS", f"{good},{malformed},{good}")

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert describe_invalid_settings(refused.value) == (
        "OGV_ENCRYPTION_KEYS: entry 2 of 3 is not a Fernet key (32 bytes, URL-safe base64); "
        "make one with `ogv keys generate`"
    )
    assert malformed not in str(refused.value) and good not in str(refused.value)


def test_every_key_is_checked_not_only_the_newest() -> None:
    good = Fernet.generate_key().decode()

    with pytest.raises(ValidationError, match="entry 1 of 1 is not a Fernet key"):
        Settings(encryption_keys=["x" * 44])
    assert Settings(encryption_keys=[good, Fernet.generate_key().decode()]).fernet_keys()[0] == (
        good.encode()
    )


def test_the_readme_configuration_table_lists_every_setting_and_only_those() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    table = section[: section.index("\n### ")]  # the service's table; tests' come after
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, re.MULTILINE))

    assert documented == {environment_name(name) for name in Settings.model_fields}


def environment_name(field: str) -> str:
    """The variable a setting is read from: OGV_<FIELD>, or the alias it was given."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        assert isinstance(first, str)
        return first
    return f"OGV_{field.upper()}"


WEAK = [
    ("a" * 40, "one character repeated"),
    ("passwordpasswordpasswordpassword", "fewer than 8 different characters"),
    ("ab12" * 10, "fewer than 8 different characters"),
    ("Password123!Password123!Secret-Token", "dictionary words"),
    ("abcdefghijklmnopqrstuvwxyz0123456789", "a run of neighbouring characters"),
    ("replace-me-with-a-real-token-0123456789", "a placeholder"),
]


@pytest.mark.parametrize(("secret", "reason"), WEAK)
def test_an_obviously_weak_api_token_is_refused_whatever_its_length(
    secret: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=f"OGV_API_TOKEN is refused: it.*{reason}") as caught:
        Settings(api_token=f"{secrets.token_urlsafe(32)} {secret}")  # the second of two
    assert secret not in str(caught.value)


@pytest.mark.parametrize(("secret", "reason"), WEAK)
def test_an_obviously_weak_flower_password_is_refused(secret: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        Settings(flower_basic_auth=f"ops:{secrets.token_urlsafe(16)},dev:{secret}")
    assert secret not in str(caught.value)


def test_several_api_tokens_are_the_bootstrap_tokens() -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert Settings(api_token=f"{old}  {new}\n").api_tokens() == [old, new]
    assert Settings().api_tokens() == []


def test_webhook_secrets_give_their_keys() -> None:
    keys = [secrets.token_bytes(32), secrets.token_bytes(24)]
    value = " ".join("whsec_" + base64.b64encode(key).decode() for key in keys)
    assert Settings(webhook_secret=value).webhook_keys() == keys
    assert Settings().webhook_keys() == []


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("not-a-whsec-secret", "starts with whsec_"),
        ("whsec_%%%", "base64"),
        ("whsec_" + base64.b64encode(b"too short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(32)).decode(), "too few different bytes"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a published example"),
        (
            "whsec_" + base64.b64encode(b"webhook-secret-token-for-ogv").decode(),
            "dictionary words",
        ),
    ],
)
def test_a_malformed_or_weak_webhook_secret_is_refused_in_one_line(
    secret: str, reason: str
) -> None:
    good = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(ValidationError) as caught:
        Settings(webhook_secret=f"{good} {secret}")
    line = describe_invalid_settings(caught.value)
    assert line.startswith("OGV_WEBHOOK_SECRET") and reason in line and "\n" not in line
    assert secret not in line and good not in line
