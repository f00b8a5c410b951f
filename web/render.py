"""HTML rendering without a template engine: ``string.Template`` files and escaping.

Every value is HTML-escaped unless it is ``Markup`` (HTML this module built itself from
escaped parts). Job results are untrusted data (feeds are attacker-controlled), so only
``http``/``https`` strings ever become links.
"""

from __future__ import annotations

import html
import json
from collections import OrderedDict
from functools import cache
from pathlib import Path
from string import Template
from typing import Any, Final
from urllib.parse import urlsplit

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"
MAX_RENDERED_ROWS: Final = 1000


class Markup(str):
    """A string of HTML that is already safe to insert as is."""


def escape(value: object) -> Markup:
    """HTML-escape any value (quotes included); Markup passes through."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


def render(name: str, **values: object) -> str:
    """Fill the template ``name`` with escaped values."""
    return _template(name).substitute({key: escape(value) for key, value in values.items()})


def is_web_link(value: object) -> bool:
    """Whether a value is an absolute ``http(s)`` URL, the only kind rendered clickable."""
    if not isinstance(value, str) or len(value) > 2048:
        return False
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def render_value(value: Any) -> Markup:
    """One JSON value as HTML: links for http(s) strings, nested lists/objects as JSON text."""
    if is_web_link(value):
        href = escape(value.strip())
        return Markup(f'<a href="{href}" rel="noopener noreferrer nofollow">{escape(value)}</a>')
    if isinstance(value, str):
        return escape(value)
    if value is None:
        return Markup("")
    return escape(json.dumps(value, ensure_ascii=False))


def render_result(result: Any) -> Markup:
    """A job result as HTML: a table for a list of objects, a list of terms for an object."""
    if isinstance(result, list) and result and all(isinstance(row, dict) for row in result):
        return _table(result)
    if isinstance(result, dict):
        items = "".join(f"<dt>{escape(key)}</dt><dd>{_nested(value)}</dd>" for key, value in result.items())
        return Markup(f'<dl class="result">{items}</dl>')
    return Markup(f'<pre class="result">{escape(json.dumps(result, indent=2))}</pre>')


def _nested(value: Any) -> Markup:
    if isinstance(value, list | dict):
        return render_result(value)
    return render_value(value)


def _table(rows: list[dict[str, Any]]) -> Markup:
    columns: list[str] = []
    for row in rows[:MAX_RENDERED_ROWS]:
        columns.extend(str(key) for key in row if str(key) not in columns)
    head = "".join(f'<th scope="col">{escape(column)}</th>' for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{render_value(row.get(column))}</td>" for column in columns) + "</tr>"
        for row in rows[:MAX_RENDERED_ROWS]
    )
    more = len(rows) - MAX_RENDERED_ROWS
    note = f'<p class="note">{more} more rows not shown.</p>' if more > 0 else ""
    return Markup(f'<table class="result"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}')


class RenderedResults:
    """Result HTML by job id, least recently used dropped first.

    A finished job's result never changes, so a cached report is rendered once, not on
    every request for it.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._pages: OrderedDict[str, Markup] = OrderedDict()

    def render(self, job_id: str, result: Any) -> Markup:
        """The HTML of a job's result; pass a callable to load the result only when needed."""
        page = self._pages.get(job_id)
        if page is None:
            page = render_result(result() if callable(result) else result)
            self._pages[job_id] = page
            if len(self._pages) > self.capacity:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(job_id)
        return page
