"""Encryption of integration keys at rest (Fernet, with MultiFernet rotation).

The first configured key encrypts; every configured key may decrypt, so a new key
is put first, `ogv keys rotate` re-encrypts, and the old key is then removed.

A process says which keys it holds by their *fingerprints*: a short hash of each
key, which names it without revealing it (`ogv keys rotate` compares them).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

FERNET_KEY_BYTES = 32
FINGERPRINT_LENGTH = 12
"""Hex digits of a key's fingerprint: enough to tell a deployment's keys apart."""


def is_fernet_key(key: bytes) -> bool:
    """True when `key` is a Fernet key: 32 bytes, URL-safe base64-encoded, nothing else.

    Stricter than `Fernet()`, whose decoder skips characters outside the alphabet: a
    key with a stray character would be accepted as some other key.
    """
    try:
        return len(base64.b64decode(key, altchars=b"-_", validate=True)) == FERNET_KEY_BYTES
    except ValueError:  # binascii.Error
        return False


def fingerprint(key: bytes) -> str:
    """A short, one-way name for an encryption key, safe to show and to compare."""
    return hashlib.sha256(b"ogv-encryption-key:" + key.strip()).hexdigest()[:FINGERPRINT_LENGTH]


class UndecryptableKey(Exception):
    """Raised when no configured encryption key can decrypt a stored integration key."""


class KeyVault:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is required")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError) as exc:
            raise ValueError("an encryption key is not a valid Fernet key") from exc

    def encrypt(self, integration_key: str) -> bytes:
        return self._fernet.encrypt(integration_key.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise UndecryptableKey("no configured encryption key decrypts this key") from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt `token` under the first key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise UndecryptableKey("no configured encryption key decrypts this key") from exc
