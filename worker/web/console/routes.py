"""The console's routes on the API's application (the list is in the package's docstring)."""

from __future__ import annotations

from aiohttp import web

from worker.web.config import CONFIG
from worker.web.console import views
from worker.web.console.auth import SESSION_KEYS
from worker.web.console.session import SessionKeys

PREFIX = "/console"


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def add_console(app: web.Application) -> None:
    """The console's routes on the API's application (its config set already)."""
    app[SESSION_KEYS] = SessionKeys(app[CONFIG].console_keys)
    app.router.add_get(PREFIX, views.home)
    app.router.add_get(f"{PREFIX}/fleet", views.fleet)
    app.router.add_get(f"{PREFIX}/organization", views.organization)
    app.router.add_get(f"{PREFIX}/platforms", views.platforms)
    app.router.add_post(f"{PREFIX}/changes/release", views.release)
    app.router.add_post(f"{PREFIX}/changes/discard", views.discard)
    app.router.add_get(f"{PREFIX}/sign-in", views.sign_in_form)
    app.router.add_post(f"{PREFIX}/sign-in", views.sign_in)
    app.router.add_post(f"{PREFIX}/sign-out", views.sign_out)
    app.router.add_get(f"{PREFIX}/console.css", views.stylesheet)


__all__ = ["PREFIX", "add_console", "is_console_path"]
