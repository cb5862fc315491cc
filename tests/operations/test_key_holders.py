"""Which processes hold which keys: fingerprints, the APIs' rows, the workers' answers."""

from __future__ import annotations

from datetime import timedelta

from cryptography.fernet import Fernet

from models import utcnow
from models.crypto import fingerprint
from models.db import session_factory
from worker import key_holders
from worker.key_holders import KeyHolder
from worker.settings import Settings


def test_a_fingerprint_names_a_key_without_showing_it() -> None:
    key, other = Fernet.generate_key(), Fernet.generate_key()

    assert fingerprint(key) == fingerprint(key + b"\n")  # as read from a file
    assert fingerprint(key) != fingerprint(other)
    assert len(fingerprint(key)) == 12
    assert fingerprint(key) not in key.decode()


def test_an_api_row_is_live_until_it_goes_stale_or_is_forgotten(settings: Settings) -> None:
    sessions = session_factory(settings.effective_database_url)
    name = f"host:{id(sessions)} (pid 1)"
    with sessions.begin() as session:
        key_holders.record_api(session, name, ["aaa", "bbb"])
    with sessions.begin() as session:
        key_holders.record_api(session, name, ["ccc"])  # refreshed, not doubled
    with sessions() as session:
        live = [h for h in key_holders.live_apis(session) if h.name == name]
        later = utcnow() + key_holders.STALE_AFTER + timedelta(seconds=1)
        stale = [h for h in key_holders.live_apis(session, now=later) if h.name == name]
    with sessions.begin() as session:
        key_holders.forget_api(session, name)
    with sessions() as session:
        gone = [h for h in key_holders.live_apis(session) if h.name == name]

    assert live == [KeyHolder("api", name, ("ccc",))]
    assert stale == [] and gone == []


def test_only_this_namespaces_workers_count() -> None:
    replies = [
        {"w2@h": {"namespace": "ogv", "fingerprints": ["new", "old"]}},
        {"w1@h": {"namespace": "ogv", "fingerprints": ["old"]}},
        {"x@h": {"namespace": "other", "fingerprints": ["old"]}},
        {"y@h": {"error": "unknown command"}},
    ]

    workers = key_holders.workers_from_replies(replies, "ogv")

    assert workers == [
        KeyHolder("worker", "w1@h", ("old",)),
        KeyHolder("worker", "w2@h", ("new", "old")),
    ]
    assert key_holders.lacking(workers, "new") == [workers[0]]
