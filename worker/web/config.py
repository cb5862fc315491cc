"""What `ogv api` is configured with, and where its handlers find it on the application.

`api_config` reads the settings and refuses an unsafe start (`StartRefused`); the
application keys carry the client, the config, the POST gatherer and the OpenAPI
document to every handler and middleware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from worker import key_holders
from worker.access import CACHE_SECONDS, Verifier
from worker.checks import guard
from worker.settings import Settings
from worker.web.client import ValidationClient
from worker.web.grouping import Gatherer

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})


class StartRefused(RuntimeError):
    """Raised when `ogv api` will not start as asked (no token, or insecure and public)."""

    code = "refused"


@dataclass(frozen=True)
class ApiConfig:
    """What the handlers need besides the client: the bootstrap tokens (OGV_API_TOKEN,
    separated by spaces; None: no auth at all) and limits."""

    token: str | None
    max_wait: float
    group_spacing: float = 0.0
    """Seconds a group of POSTs may fill after the one before it began (`Gatherer`)."""
    guard_windows: guard.Windows = field(default_factory=guard.DatabaseWindows)
    """Where the mass-change guard's windows are read (`guard.windows_for`)."""
    guard_thresholds: guard.Thresholds = field(default_factory=guard.Thresholds)
    fingerprints: tuple[str, ...] = ()
    """The fingerprints of the API's encryption keys, newest first (never the keys)."""
    process_name: str | None = None
    """The API's name in `api_processes`; None: no heartbeat (an in-process test app)."""
    token_cache_seconds: float = CACHE_SECONDS
    """How long what a stored token is allowed stays known: a revocation takes this long."""


CLIENT = web.AppKey("client", ValidationClient)
CONFIG = web.AppKey("config", ApiConfig)
OPENAPI = web.AppKey("openapi", bytes)
GATHERER = web.AppKey("gatherer", Gatherer)
VERIFIER = web.AppKey("verifier", Verifier)


def api_config(settings: Settings, host: str, insecure_local: bool) -> ApiConfig:
    """The server's config, or StartRefused: no token needs --insecure-local on loopback."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if insecure_local and host not in LOCAL_HOSTS:
        raise StartRefused(f"--insecure-local only binds to {' or '.join(sorted(LOCAL_HOSTS))}")
    if token is None and not insecure_local:
        raise StartRefused(
            "OGV_API_TOKEN is not set; set it, or run with --insecure-local on this machine only"
        )
    return ApiConfig(
        token=token,
        max_wait=settings.api_max_wait,
        group_spacing=settings.api_group_spacing,
        guard_windows=guard.windows_for(settings),
        guard_thresholds=guard.Thresholds.from_settings(settings),
        fingerprints=tuple(key_holders.fingerprints(settings)),
    )
