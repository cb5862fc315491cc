"""Scoped API tokens (worker/access.py) on SQLite and PostgreSQL: made once, stored as a
hash, verified, cached briefly, revoked, expired, and audited."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models import ApiToken, AuditEvent, utcnow
from models.db import session_factory
from worker import access
from worker.access import BOOTSTRAP, MISS, Scope, TokenRefused, Verifier


class Clock:
    """A monotonic clock the test moves by hand: the cache's age, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_name() -> str:
    return f"app-{uuid.uuid4().hex[:12]}"


def create(database_url: str, name: str, *scopes: str, orgs: tuple[int, ...] = ()) -> str:
    with session_factory(database_url).begin() as session:
        issued = access.create_token(
            session, name, list(scopes), organizations=orgs, actor="cli:tester"
        )
    return issued.token


def test_a_token_is_long_random_and_stored_only_as_its_hash(database_url: str) -> None:
    name = a_name()
    token = create(database_url, name, "validate", orgs=(7, 3, 7))

    assert token.startswith("ogv_") and len(token) >= 40
    with session_factory(database_url)() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.name == name)).one()
        stored = [str(getattr(row, c.key)) for c in ApiToken.__table__.columns]
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.target == name, AuditEvent.action == "token.create")
        ).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in value or token[4:] in value for value in stored)
    assert (row.scopes, row.organizations, row.created_by) == ("validate", "3,7", "cli:tester")
    assert event.actor == "cli:tester" and token not in event.details


def test_the_list_shows_everything_but_the_secret(database_url: str) -> None:
    name = a_name()
    with session_factory(database_url).begin() as session:
        issued = access.create_token(
            session, name, ["read", "operate"], expires_in_days=30, actor="cli:tester"
        )
    with session_factory(database_url)() as session:
        [view] = [v for v in access.list_tokens(session) if v.name == name]

    assert view == issued.view
    assert (view.scopes, view.organizations, view.last_used_at, view.revoked_at) == (
        ["read", "operate"],
        None,
        None,
        None,
    )
    assert view.expires_at is not None
    assert timedelta(days=29) < view.expires_at - view.created_at <= timedelta(days=30)
    assert issued.token not in repr(view)


@pytest.mark.parametrize(
    ("name", "scopes", "code"),
    [
        ("Has Spaces", ["read"], "invalid_name"),
        ("x" * 65, ["read"], "invalid_name"),
        ("ok-name", ["admin"], "invalid_scope"),
        ("ok-name", [], "invalid_scope"),
    ],
)
def test_a_bad_name_or_scope_is_refused(
    database_url: str, name: str, scopes: list[str], code: str
) -> None:
    with session_factory(database_url).begin() as session, pytest.raises(TokenRefused) as caught:
        access.create_token(session, name, scopes, actor="cli:tester")
    assert caught.value.code == code


def test_a_name_is_used_once_even_after_its_token_is_revoked(database_url: str) -> None:
    name = a_name()
    create(database_url, name, "read")
    with session_factory(database_url).begin() as session:
        access.revoke_token(session, name, actor="cli:tester")

    with session_factory(database_url).begin() as session, pytest.raises(TokenRefused) as caught:
        access.create_token(session, name, ["read"], actor="cli:tester")
    assert caught.value.code == "duplicate_token"
    with session_factory(database_url).begin() as session, pytest.raises(TokenRefused) as again:
        access.revoke_token(session, name, actor="cli:tester")
    assert again.value.code == "already_revoked"


def test_a_verified_token_names_its_caller_its_scopes_and_organizations(
    database_url: str,
) -> None:
    name = a_name()
    token = create(database_url, name, "validate", orgs=(41, 42))
    verifier = Verifier(session_factory(database_url))

    caller = verifier.verify(token.encode())

    assert caller is not None
    assert (caller.name, caller.actor) == (name, f"token:{name}")
    assert caller.scopes == {Scope.READ, Scope.VALIDATE}
    assert caller.organizations == {41, 42}
    assert caller.sees(41) and not caller.sees(43)
    assert not caller.allows(Scope.OPERATE)
    assert verifier.verify(token.encode() + b"x") is None
    assert verifier.verify(b"ogv_" + b"A" * 43) is None


def test_a_revocation_takes_effect_once_the_cache_ages(database_url: str) -> None:
    name = a_name()
    token = create(database_url, name, "read").encode()
    clock = Clock()
    verifier = Verifier(session_factory(database_url), clock=clock)
    assert verifier.verify(token) is not None

    with session_factory(database_url).begin() as session:
        access.revoke_token(session, name, actor="cli:tester")

    assert verifier.cached(token) is not MISS  # still the cached verdict
    clock.now += access.CACHE_SECONDS
    assert verifier.cached(token) is MISS
    assert verifier.verify(token) is None
    with session_factory(database_url)() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.target == name).order_by(AuditEvent.id)
        ).all()
    assert actions == ["token.create", "token.revoke"]


def test_an_expired_token_is_refused(database_url: str) -> None:
    name = a_name()
    token = create(database_url, name, "read").encode()
    with session_factory(database_url).begin() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.name == name)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    assert Verifier(session_factory(database_url)).verify(token) is None


def test_last_used_is_written_at_most_once_a_minute(database_url: str) -> None:
    name = a_name()
    token = create(database_url, name, "read").encode()
    clock = Clock()
    verifier = Verifier(session_factory(database_url), clock=clock)

    def last_used() -> object:
        with session_factory(database_url)() as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.name == name))

    verifier.verify(token)
    first = last_used()
    clock.now += access.CACHE_SECONDS  # the cache is stale: the database is read again
    verifier.verify(token)

    assert first is not None and last_used() == first
    with session_factory(database_url).begin() as session:  # as if a minute had passed
        session.execute(
            update(ApiToken)
            .where(ApiToken.name == name)
            .values(last_used_at=utcnow() - timedelta(seconds=access.TOUCH_SECONDS + 1))
        )
    clock.now += access.CACHE_SECONDS
    verifier.verify(token)
    assert last_used() > first  # type: ignore[operator]


def test_every_bootstrap_token_has_every_scope_and_organization(database_url: str) -> None:
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    verifier = Verifier(session_factory(database_url), [old, new])

    assert verifier.cached(old.encode()) is BOOTSTRAP
    assert verifier.cached(new.encode()) is BOOTSTRAP
    assert BOOTSTRAP.scopes == set(Scope) and BOOTSTRAP.organizations is None
    assert verifier.verify(f"other-{uuid.uuid4().hex}".encode()) is None
