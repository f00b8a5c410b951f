"""Pure pieces of web: next= validation, Origin check, after=, submit bodies, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import BadArguments, PayloadTooLarge
from web.api import SubmitRequest, parse_submit
from web.events import parse_after
from web.pages import _coerce, safe_next
from web.render import Markup, escape, is_web_link, render_result, render_value
from web.settings import Settings

# --- next= (open redirect, S6) ----------------------------------------------------------


@pytest.mark.parametrize("value", ["/reports/feeds?urls=a", "/", "/jobs/x?next=%2F"])
def test_next_accepts_same_origin_relative_paths(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "https://evil.example", "//evil.example", "/\\evil.example", "\\\\evil",
     "javascript:alert(1)", "reports/x", "/ok\r\nSet-Cookie: x", "/a\\b", "/" + "a" * 3000],
)  # fmt: skip
def test_next_refuses_anything_else(value: str | None) -> None:
    assert safe_next(value) == ""


# --- Origin (S7, S8) -----------------------------------------------------------------------


def test_origin_allowlist() -> None:
    settings = Settings(broker_url="ipc:///tmp/x", host="127.0.0.1", port=8000,
                        allowed_origins=("https://app.example",))  # fmt: skip
    assert settings.origin_allowed(None, "127.0.0.1:8000")  # not a browser
    assert settings.origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert settings.origin_allowed("http://localhost:8000", "localhost:8000")  # own Host
    assert settings.origin_allowed("https://app.example", "127.0.0.1:8000")
    assert not settings.origin_allowed("https://evil.example", "127.0.0.1:8000")
    assert not settings.origin_allowed("null", "127.0.0.1:8000")
    assert not settings.origin_allowed("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not settings.origin_allowed("http://127.0.0.1:8000.evil.example", "127.0.0.1:8000")


def test_trusted_hosts_follow_the_bind_address() -> None:
    assert "localhost" in Settings(broker_url="x", host="127.0.0.1").trusted_hosts()
    assert Settings(broker_url="x", host="0.0.0.0").trusted_hosts() == ["*"]
    assert Settings(broker_url="x", allowed_hosts=("a.example",)).trusted_hosts() == ["a.example"]
    assert Settings(broker_url="x", host="0.0.0.0", port=9).own_url == "http://127.0.0.1:9"


# --- after= (H4) ---------------------------------------------------------------------------


def test_after_parses_non_negative_integers() -> None:
    assert parse_after(None) is None
    assert parse_after("0") == 0
    assert parse_after("42") == 42


@pytest.mark.parametrize("value", ["-1", "1e309", "abc", "", "1.5", "9" * 20, "٣", " 1"])
def test_after_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        parse_after(value)


# --- submit bodies (H1) --------------------------------------------------------------------


def test_submit_body_defaults() -> None:
    assert parse_submit({"task": "echo"}) == SubmitRequest("echo", {}, None, False, "normal", 0.0)
    full = {"task": "t", "args": {"a": 1}, "ttl": 0, "force": True, "priority": "high", "delay": 2}
    assert parse_submit(full) == SubmitRequest("t", {"a": 1}, 0.0, True, "high", 2.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body must be a JSON object"),
        ({}, "task must be a string"),
        ({"task": ""}, "task name"),
        ({"task": "t", "extra": 1}, "unknown field 'extra'"),
        ({"task": "t", "args": [1]}, "args must be a JSON object"),
        ({"task": "t", "args": {"x": float("nan")}}, "must not contain NaN"),
        ({"task": "t", "args": {"x": 10**30}}, "out of range"),
        ({"task": "t", "force": "yes"}, "force must be true or false"),
        ({"task": "t", "priority": "urgent"}, "priority must be one of"),
        ({"task": "t", "ttl": -1}, "ttl must be within"),
        ({"task": "t", "ttl": True}, "ttl must be a number"),
        ({"task": "t", "delay": float("inf")}, "delay must be within"),
    ],
)
def test_submit_body_errors_name_the_rule(body: Any, message: str) -> None:
    with pytest.raises(BadArguments, match=message):
        parse_submit(body)


def test_submit_body_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_submit({"task": "t", "args": {"x": "y" * (2 * 1024 * 1024)}})


# --- query args and rendering (S11) --------------------------------------------------------


def test_query_values_become_numbers_only_when_plainly_numbers() -> None:
    assert _coerce("2026") == 2026
    assert _coerce("-3") == -3
    assert _coerce("0") == 0
    assert _coerce("01234") == "01234"
    assert _coerce("1e3") == "1e3"
    assert _coerce("0.05") == 0.05
    assert _coerce("-2.5") == -2.5
    assert _coerce("1.") == "1."
    assert _coerce("00.5") == "00.5"
    assert _coerce("9" * 30) == "9" * 30


def test_escape_and_markup() -> None:
    assert escape('<img src=x onerror="alert(1)">') == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
    assert escape(Markup("<b>")) == "<b>"


@pytest.mark.parametrize("link", ["javascript:alert(1)", "data:text/html,x", "//evil", "http:", "ftp://x/"])
def test_only_http_links_are_clickable(link: str) -> None:
    assert not is_web_link(link)
    assert "<a " not in render_value(link)


def test_feed_items_render_as_text() -> None:
    html = render_result([
        {"feed": "F", "title": "<img src=x onerror=alert(1)>", "link": "javascript:alert(1)"},
        {"feed": "F", "title": "ok", "link": "https://example.org/a?b=1&c=2"},
    ])  # fmt: skip
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org/a?b=1&amp;c=2"' in html


def test_other_results_render() -> None:
    assert "<dl" in render_result({"total": {"orders": 3}, "rows": [{"a": 1}]})
    assert "<pre" in render_result([1, 2, 3])
    assert "&lt;script&gt;" in render_result("<script>")


def test_rendered_results_render_once_per_job_and_evict_the_least_recent() -> None:
    from web.render import RenderedResults

    calls: list[str] = []

    def load(name: str) -> object:
        calls.append(name)
        return {"report": name}

    cache = RenderedResults(capacity=2)
    first = cache.render("job-a", lambda: load("a"))
    assert cache.render("job-a", lambda: load("a")) is first and calls == ["a"]
    assert "<dt>report</dt>" in first
    cache.render("job-b", lambda: load("b"))
    cache.render("job-a", lambda: load("a"))  # a is now the most recent
    cache.render("job-c", lambda: load("c"))  # evicts b
    cache.render("job-b", lambda: load("b"))
    assert calls == ["a", "b", "c", "b"]
