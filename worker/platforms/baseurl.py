"""Opsgenie base URLs: normalisation and the allowlist check.

A base URL is where a key is sent. An attacker who can choose it can collect keys,
so only URLs on `OGV_ALLOWED_BASE_URLS` are accepted, compared after
normalisation, when an integration is added and again before every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from worker.errors import BaseUrlError

__all__ = ["BaseUrlError", "check_allowed", "normalise_base_url"]


def normalise_base_url(url: str) -> str:
    """Return `scheme://host[:port]/path/` in lower case, or raise BaseUrlError.

    Userinfo, queries and fragments are refused rather than dropped: a URL
    carrying them was not typed by someone who meant an Opsgenie host.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BaseUrlError("the base URL is not a valid URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BaseUrlError("the base URL must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise BaseUrlError("the base URL must not carry credentials")
    if parts.query or parts.fragment:
        raise BaseUrlError("the base URL must not carry a query or fragment")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{netloc}{path}"


def check_allowed(url: str, allowed: Iterable[str]) -> str:
    """Return the normalised URL if it is on the allowlist, else raise BaseUrlError."""
    normal = normalise_base_url(url)
    if normal not in set(allowed):
        raise BaseUrlError("the base URL is not one of the allowed API hosts")
    return normal
