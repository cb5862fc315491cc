"""Page cursors: a place in the order of team ids, for the pages that follow that order.

An organization's teams (`worker.web.teams`) and the changes the guard holds
(`worker.checks.held`) are keyset pages ordered by team id: a cursor names the last
team of the previous page, so a page costs the same however deep it is and a team
added or removed meanwhile never shifts the others. A cursor is unpadded base64url of
the team id's UTF-8 bytes. It is a place in that order, not a promise that the team
still exists: every well-formed cursor (`CURSOR_PATTERN`) names one, so the OpenAPI
document states all there is to know about it.
"""

from __future__ import annotations

import base64
import re

from models.integration import TEAM_ID_MAX

MAX_PAGE = 100
DEFAULT_PAGE = 50
# base64url of the longest team id: TEAM_ID_MAX characters of up to 4 UTF-8 bytes each.
CURSOR_MAX = -(-TEAM_ID_MAX * 4 // 3) * 4
# Unpadded base64url; a length of 1 more than a multiple of 4 encodes no byte.
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
_CURSOR = re.compile(CURSOR_PATTERN)


class BadCursor(ValueError):
    """Raised when a page cursor is not unpadded base64url of 2 to `CURSOR_MAX` characters."""


def encode_cursor(team_id: str) -> str:
    return base64.urlsafe_b64encode(team_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The place in the order that `cursor` names: the team id it encodes, or BadCursor.

    A cursor this API did not give out names a place as well. Bytes that are not
    UTF-8, and a NUL (PostgreSQL refuses it in text), become U+FFFD; such a place
    sorts where no team id is, which is all a bound needs.
    """
    if not 2 <= len(cursor) <= CURSOR_MAX or not _CURSOR.fullmatch(cursor):
        raise BadCursor("the cursor must be a next_cursor this API gave out")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
