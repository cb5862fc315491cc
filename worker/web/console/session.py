"""The console's session cookie and its CSRF token: signed, never the token itself.

Signing in with an API token gives the browser one cookie, `ogv_console`:

    <session id>.<SHA-256 of the token, or "-" before sign-in>.<expiry, unix>.<signature>

The session id is 192 random bits, new at every sign-in; the token is named by
the hash the database keeps (`worker.access.token_hash`), so the cookie never
holds the token, and every page asks the verifier whether that token is still
live and still allowed (a revocation ends its sessions within the verifier's
cache time). The signature is HMAC-SHA256 under a key derived from each of the
service's encryption keys (`derive_keys`): every `ogv api` of one deployment
accepts the others' cookies, and a cookie forged without the key is refused.

Every form carries a CSRF token, the HMAC of the session id under a separate
derived key: a synchronizer token tied to the session, compared in constant
time. A session exists before sign-in too ("-" for the token), so the sign-in
form is protected the same way, and signing in starts a new session id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

COOKIE = "ogv_console"
LIFETIME = 8 * 3600
"""Seconds a session lasts from sign-in; then the console asks for the token again."""
NO_TOKEN = "-"

_SID = re.compile(r"[A-Za-z0-9_-]{32}")
_HASH = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SESSION_LABEL = b"ogv console session v1"
_CSRF_LABEL = b"ogv console csrf v1"


@dataclass(frozen=True)
class ConsoleSession:
    """One browser's session: its id, the hash of the token it signed in with (None
    before sign-in), and when it ends (unix seconds)."""

    sid: str
    token_hash: str | None
    expires: int


def derive_keys(secrets_: Sequence[bytes]) -> tuple[bytes, ...]:
    """The console's signing keys, one per encryption key, newest first: the
    encryption keys themselves are never used as they are."""
    return tuple(hmac.new(secret, _SESSION_LABEL, hashlib.sha256).digest() for secret in secrets_)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class SessionKeys:
    """Issues and reads session cookies, and the CSRF tokens of their sessions.

    The first key signs; any of them verifies, so rotating the encryption keys
    does not sign everybody out at once.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("the console needs at least one signing key")
        self._keys = tuple(keys)

    def issue(self, token_hash: str | None, now: float) -> tuple[ConsoleSession, str]:
        """A new session (a new id) and its cookie's value."""
        session = ConsoleSession(secrets.token_urlsafe(24), token_hash, int(now) + LIFETIME)
        payload = f"{session.sid}.{token_hash or NO_TOKEN}.{session.expires}"
        return session, f"{payload}.{self._sign(self._keys[0], payload)}"

    def read(self, cookie: str | None, now: float) -> ConsoleSession | None:
        """The session a cookie names, or None: missing, malformed, forged or expired."""
        if not cookie or not cookie.isascii():  # compare_digest takes ASCII text only
            return None
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        sid, hashed, expires, signature = parts
        if not (
            _SID.fullmatch(sid)
            and (hashed == NO_TOKEN or _HASH.fullmatch(hashed))
            and _EXPIRES.fullmatch(expires)
        ):
            return None
        payload = f"{sid}.{hashed}.{expires}"
        # Every key is compared, in constant time, whichever matched.
        if not sum(hmac.compare_digest(self._sign(key, payload), signature) for key in self._keys):
            return None
        if int(expires) <= now:
            return None
        return ConsoleSession(sid, None if hashed == NO_TOKEN else hashed, int(expires))

    def csrf(self, session: ConsoleSession) -> str:
        """The CSRF token of `session`'s forms."""
        return self._csrf(self._keys[0], session.sid)

    def csrf_matches(self, session: ConsoleSession, given: str) -> bool:
        """Whether `given` is `session`'s CSRF token (under any key), in constant time."""
        if not given.isascii():
            return False
        return bool(
            sum(hmac.compare_digest(self._csrf(key, session.sid), given) for key in self._keys)
        )

    @staticmethod
    def _sign(key: bytes, payload: str) -> str:
        return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())

    @staticmethod
    def _csrf(key: bytes, sid: str) -> str:
        return _b64(hmac.new(key, _CSRF_LABEL + b"|" + sid.encode(), hashlib.sha256).digest())
