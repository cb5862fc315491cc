"""What the fake Opsgenie answers: a scenario of per-key behaviours and server-wide settings.

One fake server stands for three hosts at once, told apart by the path prefix (the
platform's base URL is the fake's URL plus the prefix):

    host         prefix                  probes
    opsgenie     /                       POST v2/integrations/authenticate, GET v2/alerts
    opsgenie-eu  /eu/                    the same two
    jsm-ops      /jsm/ops/integration/   GET v2/alerts only (authenticate answers 404)

Scenario format (JSON, as read by :meth:`Scenario.from_json` and the CLI's ``--scenario``)::

    {
      "keys": {
        "good-key":   {"behaviour": "valid", "account": "acme"},
        "slow-key":   {"behaviour": "valid", "latency_ms": 200},
        "busy-key":   {"behaviour": "throttle", "times": 2, "period_seconds": 1},
        "flaky-key":  {"behaviour": "server_error", "times": -1, "status": 502},
        "moved-key":  "eu_only",
        "short-form": "no_access"
      },
      "default": {"behaviour": "invalid_key"},
      "hosts": {"opsgenie": "retired"},
      "latency_ms": 0,
      "hang_seconds": 30.0,
      "large_body_bytes": 8388608,
      "account_rate_per_second": null
    }

Every field is optional; a key's entry may be just its behaviour. Unknown keys get
``default``. The behaviours, first Opsgenie's own answers (JSON, with ``X-Request-ID``):

``valid``            200 with Opsgenie's success body: ``{"result": ...}`` on
                     authenticate, ``{"data": [], ...}`` on alerts.
``invalid_key``      401 (key unknown, or its integration disabled).
``no_access``        403 with ``"code": 40301`` (no configuration access).
``no_config_access`` 403 with ``"code": 40301`` on authenticate, but 200 on alerts: a key
                     whose integration has configuration access turned off can still
                     read alerts (spec section 4).
``unprocessable``    422 with a message.
``malformed_key``    422 ``"Key format is not valid!"``.
``retired``          410 ``"This API is deprecated and no longer available"``.
``throttle``         429 with the ``X-RateLimit-*`` headers, ``times`` times, then 200.
``server_error``     ``status`` (a 5xx), ``times`` times, then 200.
``large_body``       200 with a body of ``large_body_bytes`` bytes.
``eu_only``          ``valid`` on ``opsgenie-eu``, ``invalid_key`` on the other hosts.
``jsm_only``         ``valid`` on ``jsm-ops``, ``invalid_key`` on the other hosts.
``switched_off``     an account migrated to JSM Ops and switched off: ``valid`` on
                     ``jsm-ops``, and on the Opsgenie hosts 401 "Opsgenie has been turned
                     off for this account." (read alone, it looks like a revoked key).

A ``throttle``'s 429 names its wait of ``period_seconds`` the way ``rate_limit_headers``
says (see :data:`RATE_LIMIT_HEADERS`): ``opsgenie`` (the default,
``X-RateLimit-Period-In-Sec``), ``retry_after``, ``retry_after_date``, ``ratelimit``
(``RateLimit: "default";r=0;t=N``), ``ratelimit_policy`` (only
``RateLimit-Policy: "default";q=10;w=N``), ``ratelimit_reset`` (``RateLimit-Reset: N``),
``x_ratelimit_remaining`` (``X-RateLimit-Remaining: 0`` and an epoch
``X-RateLimit-Reset``), or a broken one: ``none``, ``negative``, ``absurd`` (two hours),
``unparseable``.

then what stands between a client and Opsgenie (no ``X-Request-ID``; spec section 6):

``redirect``         302 to ``https://id.atlassian.com/login``, with an HTML body.
``html_404``         404 with nginx's HTML page.
``gateway_timeout``  408 with a load balancer's HTML page.
``empty_200``        200 with an empty body (labelled JSON, as some proxies do).
``captive_portal``   200 with an HTML login page.

and the network:

``hang``             sleeps ``hang_seconds`` (scenario-wide) and answers 200; after
                     ``times`` hangs (if given) answers 200 at once.
``reset``            aborts the TCP connection without any HTTP response; after ``times``
                     resets (if given) answers 200.

Apart from ``eu_only`` and ``jsm_only``, a behaviour answers the same on every host.
``times`` counts the key's attempts across both endpoints and every host; ``-1`` means
forever, and leaving it out means once for ``throttle`` and ``server_error``, forever for
``hang`` and ``reset``. Every answer waits ``latency_ms`` (scenario) plus the key's
``latency_ms`` first. If ``account_rate_per_second`` is set, the fake itself throttles
each account beyond that many admitted calls in any 1-second window, as Opsgenie's
per-account buckets do; such a 429 does not consume the key's ``times``.

``hosts`` maps a host to a behaviour that answers every call made to that host, whatever
the key (and on ``jsm-ops`` even the missing authenticate): a host that has been
retired, or sits behind a proxy or portal. Only behaviours that can describe a host are
allowed there (:data:`HOST_BEHAVIOURS`); ``server_error`` answers 503, and ``hang``
never answers: after ``hang_seconds`` it drops the connection, since a host gone dark
says nothing about any key. Such calls are recorded but never reach the key: they use
none of its ``times`` nor of its account's rate, and wait only the scenario's
``latency_ms``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Host = Literal["opsgenie", "opsgenie-eu", "jsm-ops"]
HOSTS: tuple[str, ...] = get_args(Host)

Behaviour = Literal[
    "valid",
    "invalid_key",
    "no_access",
    "no_config_access",
    "unprocessable",
    "malformed_key",
    "retired",
    "throttle",
    "server_error",
    "large_body",
    "eu_only",
    "jsm_only",
    "switched_off",
    "redirect",
    "html_404",
    "gateway_timeout",
    "empty_200",
    "captive_portal",
    "hang",
    "reset",
]
BEHAVIOURS: tuple[str, ...] = get_args(Behaviour)

# What a whole host can answer, whatever the key: its retirement, what stands in front of
# it, its going dark, or a blanket refusal. The rest are about one key or one account.
HOST_BEHAVIOURS: tuple[str, ...] = (
    "invalid_key",
    "retired",
    "server_error",
    "redirect",
    "html_404",
    "gateway_timeout",
    "empty_200",
    "captive_portal",
    "hang",
    "reset",
)

# The behaviours that answer like ``valid`` on one host, and elsewhere like the second.
_VALID_ONLY_ON: dict[str, tuple[Host, Behaviour]] = {
    "eu_only": ("opsgenie-eu", "invalid_key"),
    "jsm_only": ("jsm-ops", "invalid_key"),
    "switched_off": ("jsm-ops", "switched_off"),
}

RateLimitHeaders = Literal[
    "opsgenie",
    "retry_after",
    "retry_after_date",
    "ratelimit",
    "ratelimit_policy",
    "ratelimit_reset",
    "x_ratelimit_remaining",
    "none",
    "negative",
    "absurd",
    "unparseable",
]
RATE_LIMIT_HEADERS: tuple[str, ...] = get_args(RateLimitHeaders)
"""How a ``throttle``'s 429 names its wait: each header form, and broken ones."""


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _reject_unknown_fields(cls: type[Any], data: Mapping[str, Any]) -> None:
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class KeyScenario:
    """How the fake answers probes made with one integration key."""

    behaviour: Behaviour = "valid"
    account: str = "default"
    times: int | None = None
    """Failures before 200; None: once for throttle/server_error, forever for hang/reset."""
    period_seconds: int = 1
    latency_ms: int = 0
    status: int = 503
    rate_limit_headers: RateLimitHeaders = "opsgenie"
    """How a ``throttle``'s 429 names ``period_seconds``."""

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {self.behaviour!r}")
        if self.rate_limit_headers not in RATE_LIMIT_HEADERS:
            raise ValueError(
                f"rate_limit_headers must be one of {RATE_LIMIT_HEADERS}, "
                f"got {self.rate_limit_headers!r}"
            )
        if not isinstance(self.account, str) or not self.account:
            raise ValueError(f"account must be a non-empty string, got {self.account!r}")
        if self.times is not None:
            _check_int("times", self.times, -1)
        _check_int("period_seconds", self.period_seconds, 1)
        _check_int("latency_ms", self.latency_ms, 0)
        _check_int("status", self.status, 500)
        if self.status > 599:
            raise ValueError(f"status must be a 5xx, got {self.status}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> KeyScenario:
        """Build from a JSON object, or from a bare behaviour name."""
        if isinstance(data, str):
            return cls(behaviour=data)  # type: ignore[arg-type]  # validated in __post_init__
        _reject_unknown_fields(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def behaviour_on(self, host: Host) -> Behaviour:
        """The behaviour this key shows on ``host``: its own, unless it is host-dependent."""
        split = _VALID_ONLY_ON.get(self.behaviour)
        if split is None:
            return self.behaviour
        only_on, elsewhere = split
        return "valid" if host == only_on else elsewhere


def _default_key_scenario() -> KeyScenario:
    return KeyScenario(behaviour="invalid_key")


def _check_hosts(hosts: object) -> None:
    """Refuse a ``hosts`` mapping that names an unknown host or a key-only behaviour."""
    if not isinstance(hosts, Mapping):
        raise ValueError(f"hosts must map a host to a behaviour, got {hosts!r}")
    for host, behaviour in hosts.items():
        if host not in HOSTS:
            raise ValueError(f"hosts: unknown host {host!r}; the hosts are {HOSTS}")
        if behaviour in BEHAVIOURS and behaviour not in HOST_BEHAVIOURS:
            raise ValueError(
                f"hosts[{host!r}]: {behaviour!r} describes a key, not a host; "
                f"a host-wide behaviour is one of {HOST_BEHAVIOURS}"
            )
        if behaviour not in HOST_BEHAVIOURS:
            raise ValueError(
                f"hosts[{host!r}]: behaviour must be one of {HOST_BEHAVIOURS}, got {behaviour!r}"
            )


@dataclass
class Scenario:
    """The whole fake account landscape: per-key behaviours plus server-wide settings."""

    keys: dict[str, KeyScenario] = field(default_factory=dict)
    default: KeyScenario = field(default_factory=_default_key_scenario)
    hosts: dict[Host, Behaviour] = field(default_factory=dict)
    """Host-wide overrides: every call to such a host answers its behaviour."""
    latency_ms: int = 0
    hang_seconds: float = 30.0
    large_body_bytes: int = 8 * 1024 * 1024
    account_rate_per_second: int | None = None
    account_separator: str | None = None
    """When set, a key not in `keys` that contains it belongs to the account its text
    before the first one names (`acct-7.9f1c…` → `acct-7`), with `default`'s behaviour:
    a fleet of a million keys needs no million entries."""

    def __post_init__(self) -> None:
        _check_hosts(self.hosts)
        _check_int("latency_ms", self.latency_ms, 0)
        _check_number("hang_seconds", self.hang_seconds)
        _check_int("large_body_bytes", self.large_body_bytes, 0)
        if self.account_rate_per_second is not None:
            _check_int("account_rate_per_second", self.account_rate_per_second, 1)
        if self.account_separator is not None and (
            not isinstance(self.account_separator, str) or not self.account_separator
        ):
            raise ValueError(
                f"account_separator must be a non-empty string, got {self.account_separator!r}"
            )

    def for_key(self, key: str) -> KeyScenario:
        found = self.keys.get(key)
        if found is not None:
            return found
        if self.account_separator is not None:
            account, separator, _ = key.partition(self.account_separator)
            if separator and account:
                return dataclasses.replace(self.default, account=account)
        return self.default

    def for_host(self, host: Host) -> Behaviour | None:
        """The host-wide override of ``host``, or None if its calls reach the keys."""
        return self.hosts.get(host)

    def with_host(self, host: str, behaviour: str | None) -> Scenario:
        """A copy with ``host`` overridden by ``behaviour`` (None: no override); validated."""
        # Typed loosely because both come from outside; __post_init__ validates them.
        hosts: dict[Any, Any] = {h: b for h, b in self.hosts.items() if h != host}
        if behaviour is not None:
            hosts[host] = behaviour
        return dataclasses.replace(self, hosts=hosts)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        _reject_unknown_fields(cls, data)
        fields = dict(data)
        fields["keys"] = {k: KeyScenario.from_dict(v) for k, v in data.get("keys", {}).items()}
        if "default" in data:
            fields["default"] = KeyScenario.from_dict(data["default"])
        if isinstance(data.get("hosts"), Mapping):
            fields["hosts"] = dict(data["hosts"])  # a copy: the caller's stays theirs
        return cls(**fields)

    @classmethod
    def from_json(cls, source: str | bytes | Mapping[str, Any]) -> Scenario:
        """Build from JSON text or an already decoded JSON object."""
        data = json.loads(source) if isinstance(source, str | bytes) else source
        if not isinstance(data, Mapping):
            raise ValueError("a scenario must be a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": {k: v.to_dict() for k, v in self.keys.items()},
            "default": self.default.to_dict(),
            "hosts": dict(self.hosts),
            "latency_ms": self.latency_ms,
            "hang_seconds": self.hang_seconds,
            "large_body_bytes": self.large_body_bytes,
            "account_rate_per_second": self.account_rate_per_second,
            "account_separator": self.account_separator,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
