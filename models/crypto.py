"""Encryption of integration keys at rest (Fernet, with MultiFernet rotation).

The first configured key encrypts; every configured key may decrypt, so a new key
is put first, `ogv keys rotate` re-encrypts, and the old key is then removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


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
