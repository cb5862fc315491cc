"""Scoped API tokens: who may call which routes, for which organizations (SPEC §8).

    read      the GET routes of teams, validations and organizations
    validate  POST /v1/validations, and read
    operate   the mass-change guard, held changes and the audit log, and read
    manage    writes to integrations and teams, and read

A token is `ogv_` and 43 characters of `secrets.token_urlsafe(32)` (256 random
bits). Only its SHA-256 is stored (`models.ApiToken`): for a secret that random a
plain hash is as good as a slow one, and a check costs one hash. A token limited
to some organizations sees and asks only for those.

`OGV_API_TOKEN` is the bootstrap token: every scope, every organization. It may
hold several tokens separated by spaces, so a new one can be rolled out before
the old one is dropped.

`Verifier` answers "who is this?" for the API. What it learned of a stored token
is kept `CACHE_SECONDS` (2 s): a revocation reaches every running API within
that, and a busy caller costs one database read per interval. It writes a
token's `last_used_at` at most every `TOUCH_SECONDS` (60 s).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import ApiToken, utcnow
from models.access import TOKEN_NAME_MAX
from models.integration import BIGINT_MAX
from worker import audit
from worker.errors import RecordError

TOKEN_PREFIX = "ogv_"
TOKEN_BYTES = 32
NAME_PATTERN = rf"^[a-z0-9][a-z0-9_.-]{{0,{TOKEN_NAME_MAX - 1}}}$"
EXPIRES_IN_DAYS_MAX = 3650
CACHE_SECONDS = 2.0
"""How long a stored token's verdict is reused; a revocation takes effect within it."""
TOUCH_SECONDS = 60.0
"""`last_used_at` is written at most this often per token."""
CACHE_MAX = 10_000
"""Verdicts kept at most; past it the cache starts again (unknown tokens are cached too)."""
BOOTSTRAP_NAME = "OGV_API_TOKEN"
LOCAL_NAME = "insecure-local"

_NAME = re.compile(NAME_PATTERN)
_HASH = re.compile(r"[0-9a-f]{64}")


class Scope(enum.StrEnum):
    """What a token may do; every scope includes `read`."""

    READ = "read"
    VALIDATE = "validate"
    OPERATE = "operate"
    MANAGE = "manage"


def granted(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """The scopes a token with `scopes` holds: those, and read."""
    return frozenset({*scopes, Scope.READ})


@dataclass(frozen=True)
class Caller:
    """Who called: a token's name, what it may do, and the organizations it is limited
    to (None: every one)."""

    name: str
    scopes: frozenset[Scope]
    organizations: frozenset[int] | None = None
    expires_at: datetime | None = None

    @property
    def actor(self) -> str:
        """How the audit log names it."""
        return f"token:{self.name}"

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sees(self, organization_id: int) -> bool:
        return self.organizations is None or organization_id in self.organizations

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


EVERY_SCOPE = frozenset(Scope)
BOOTSTRAP = Caller(BOOTSTRAP_NAME, EVERY_SCOPE)
LOCAL = Caller(LOCAL_NAME, EVERY_SCOPE)
"""The caller of an API started with --insecure-local (no token asked)."""


class TokenRefused(RecordError):
    """Raised when a token cannot be created or revoked as asked; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str | bytes) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    raw = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


# -- the tokens' records -------------------------------------------------------------


@dataclass(frozen=True)
class TokenView:
    """A token as `ogv tokens list` shows it: never its secret, nor its hash."""

    name: str
    scopes: list[str]
    organizations: list[int] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class Issued:
    """A token just created: the only time its secret exists outside the caller's hands."""

    token: str
    view: TokenView


def _view(row: ApiToken) -> TokenView:
    return TokenView(
        name=row.name,
        scopes=row.scopes.split(","),
        organizations=_organizations(row.organizations),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _organizations(stored: str | None) -> list[int] | None:
    return None if stored is None else [int(part) for part in stored.split(",")]


def parse_scopes(names: Iterable[str]) -> list[Scope]:
    """Scope names as given (`--scope`), or TokenRefused naming the known ones."""
    chosen = []
    for name in names:
        if name not in Scope._value2member_map_:
            raise TokenRefused("invalid_scope", f"scopes are {', '.join(s.value for s in Scope)}")
        chosen.append(Scope(name))
    if not chosen:
        raise TokenRefused("invalid_scope", "give at least one --scope")
    return sorted(set(chosen), key=list(Scope).index)


def create_token(
    session: Session,
    name: str,
    scopes: Sequence[str],
    *,
    organizations: Sequence[int] = (),
    expires_in_days: int | None = None,
    actor: str,
) -> Issued:
    """Store a new token's hash and audit it; the secret is returned once, here."""
    chosen = parse_scopes(scopes)
    _check_name(name)
    orgs = sorted(set(organizations))
    if any(not 1 <= org <= BIGINT_MAX for org in orgs):
        raise TokenRefused("invalid", f"organization ids run from 1 to {BIGINT_MAX}")
    if expires_in_days is not None and not 1 <= expires_in_days <= EXPIRES_IN_DAYS_MAX:
        raise TokenRefused("invalid", f"--expires-in-days runs from 1 to {EXPIRES_IN_DAYS_MAX}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenRefused(
            "duplicate_token", f"a token named {name} exists (revoked ones keep their name)"
        )
    token = new_token()
    now = utcnow()
    row = ApiToken(
        name=name,
        token_hash=token_hash(token),
        scopes=",".join(chosen),
        organizations=",".join(str(org) for org in orgs) if orgs else None,
        created_by=actor,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(row)
    session.flush()
    view = _view(row)
    audit.record(
        session,
        actor,
        "token.create",
        target=name,
        details={
            "scopes": view.scopes,
            "organizations": view.organizations,
            "expires_at": view.expires_at.isoformat() if view.expires_at else None,
        },
    )
    return Issued(token, view)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise TokenRefused(
            "invalid_name",
            f"a token's name is 1 to {TOKEN_NAME_MAX} of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit (e.g. billing-app)",
        )


def list_tokens(session: Session) -> list[TokenView]:
    """Every token, revoked ones included, by name."""
    return [_view(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(session: Session, name: str, *, actor: str) -> TokenView:
    """Revoke the token named `name` (running APIs refuse it within CACHE_SECONDS)."""
    _check_name(name)  # a name no token can have never reaches the database
    row = session.scalar(select(ApiToken).where(ApiToken.name == name).with_for_update())
    if row is None:
        raise TokenRefused("not_found", "no token has that name; `ogv tokens list` lists them")
    if row.revoked_at is not None:
        raise TokenRefused("already_revoked", f"token {name} was revoked already")
    row.revoked_at = utcnow()
    session.flush()
    audit.record(session, actor, "token.revoke", target=name)
    return _view(row)


# -- verifying a caller ----------------------------------------------------------------


class _Miss:
    """`Verifier.cached` has no fresh verdict: ask `Verifier.verify`."""


MISS = _Miss()


@dataclass(frozen=True)
class _Verdict:
    caller: Caller | None
    token_id: int | None
    until: float


class Verifier:
    """Who a bearer token belongs to: the bootstrap tokens, or a stored, live token.

    `cached` answers without I/O (the bootstrap tokens, and verdicts younger than
    `ttl`); `verify` may read the database, and is called off the event loop.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        bootstrap: Sequence[str] = (),
        *,
        ttl: float = CACHE_SECONDS,
        touch_every: float = TOUCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._bootstrap = [hashlib.sha256(t.encode()).digest() for t in bootstrap]
        self._ttl = ttl
        self._touch_every = timedelta(seconds=touch_every)
        self._clock = clock
        self._verdicts: dict[str, _Verdict] = {}
        self._lock = threading.Lock()

    def cached(self, token: bytes) -> Caller | _Miss | None:
        """The caller of `token` if known without a database read, else MISS."""
        return self.cached_hash(token_hash(token))

    def cached_hash(self, hashed: str) -> Caller | _Miss | None:
        """`cached` for a token known by its hash (`token_hash`), as the console's
        session cookie names it; a malformed hash is nobody's."""
        if not _HASH.fullmatch(hashed):
            return None
        digest = bytes.fromhex(hashed)
        # Every bootstrap token is compared, in constant time, whatever matched.
        if sum(hmac.compare_digest(digest, known) for known in self._bootstrap):
            return BOOTSTRAP
        with self._lock:
            verdict = self._verdicts.get(hashed)
        if verdict is None or verdict.until <= self._clock():
            return MISS
        return _live(verdict.caller)

    def verify(self, token: bytes) -> Caller | None:
        """The caller of `token`, or None: unknown, revoked or expired."""
        return self.verify_hash(token_hash(token))

    def verify_hash(self, hashed: str) -> Caller | None:
        """`verify` for a token known by its hash (`token_hash`)."""
        known = self.cached_hash(hashed)
        if not isinstance(known, _Miss):
            return known
        with self._sessions.begin() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hashed))
            if row is None or not hmac.compare_digest(row.token_hash, hashed):
                verdict = _Verdict(None, None, self._clock() + self._ttl)
            else:
                verdict = _Verdict(_caller_of(row), row.id, self._clock() + self._ttl)
                self._touch(session, row)
        with self._lock:
            if len(self._verdicts) >= CACHE_MAX:
                self._verdicts.clear()
            self._verdicts[hashed] = verdict
        return _live(verdict.caller)

    def _touch(self, session: Session, row: ApiToken) -> None:
        now = utcnow()
        if row.revoked_at is not None:
            return
        if row.last_used_at is not None and now - row.last_used_at < self._touch_every:
            return  # this process, or another, wrote it lately
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))


def _caller_of(row: ApiToken) -> Caller | None:
    if row.revoked_at is not None:
        return None
    orgs = _organizations(row.organizations)
    return Caller(
        row.name,
        granted(Scope(s) for s in row.scopes.split(",")),
        frozenset(orgs) if orgs is not None else None,
        row.expires_at,
    )


def _live(caller: Caller | None) -> Caller | None:
    return None if caller is None or caller.expired(utcnow()) else caller


def bootstrap_tokens(configured: str | None) -> list[str]:
    """The tokens of OGV_API_TOKEN: one, or several separated by spaces."""
    return configured.split() if configured else []
