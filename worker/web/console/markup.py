"""HTML that escapes by default: `html(template, **values)` and `Markup`.

Every value put into a page goes through `escape`, which turns `& < > " '` into
entities, unless it is already `Markup` (HTML this module built). Templates are
fixed text written here, never input; so text from the database (an account's
name, a team's label, an error message) can never become markup, and a page has
no script at all.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable
from datetime import datetime


class Markup(str):
    """Text that is HTML already: put into a page as it is."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """`value` as HTML text: Markup stays, None is empty, anything else is escaped."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    if isinstance(value, datetime):
        value = f"{value:%Y-%m-%d %H:%M} UTC"
    return Markup(_html.escape(str(value), quote=True))


def html(template: str, **values: object) -> Markup:
    """`template` with each `{name}` replaced by `values[name]`, escaped."""
    return Markup(template.format(**{name: escape(value) for name, value in values.items()}))


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """The parts, each escaped, one after another."""
    return Markup(separator.join(escape(part) for part in parts))


def table(headers: Iterable[str], rows: Iterable[Iterable[object]], css: str = "") -> Markup:
    """A table whose cells are escaped (Markup cells stay); each cell carries its
    header as `data-label`, which the narrow layout shows beside the value."""
    names = list(headers)
    head = join(html("<th scope=col>{h}</th>", h=name) for name in names)
    body = join(
        html(
            "<tr>{cells}</tr>",
            cells=join(
                html("<td data-label='{label}'>{cell}</td>", label=name, cell=cell)
                for name, cell in zip(names, row, strict=True)
            ),
        )
        for row in rows
    )
    return html(
        "<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        css=css,
        head=head,
        body=body,
    )
