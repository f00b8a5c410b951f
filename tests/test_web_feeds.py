"""workers.feeds: our own bounded HTTP client (SSRF guards), bytes to feedparser, progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from workers import feeds as feeds_module
from workers.feeds import (
    FeedFetchError,
    FeedRefused,
    Limits,
    check_url,
    feed_urls,
    fetch,
    is_allowlisted,
    is_public_address,
    parse_items,
)

FEEDS_DIR = Path(__file__).parent.parent / "web" / "demo_feeds"
FAST = Limits(connect_timeout_s=2, total_timeout_s=5, max_bytes=64 * 1024, max_redirects=3)


class FeedHandler(BaseHTTPRequestHandler):
    """Sample feeds plus misbehaving endpoints, on 127.0.0.1."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        match self.path:
            case "/feeds/python.xml" | "/feeds/tricky.xml" | "/feeds/jobcast-atom.xml":
                self._send(200, (FEEDS_DIR / self.path.rsplit("/", 1)[1]).read_bytes())
            case "/feeds/redirect-in":
                self._redirect("/feeds/python.xml")
            case "/feeds/redirect-out":
                self._redirect(f"http://127.0.0.1:{port}/private/secret")
            case "/feeds/redirect-file":
                self._redirect("file:///etc/hostname")
            case "/feeds/loop":
                self._redirect("/feeds/loop")
            case "/feeds/endless":
                self._endless()
            case "/feeds/big-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(100 * 1024 * 1024))
                self.end_headers()
            case "/feeds/slow":
                self._drip()
            case "/feeds/html":
                self._send(200, b"<html><body>not a feed</body></html>")
            case _:
                self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"<rss>" * 10_000)
        except OSError:
            pass

    def _drip(self) -> None:
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)  # the server side of a slow response, not synchronisation
        except OSError:
            pass


@pytest.fixture
def feed_server() -> Iterator[str]:
    """Base URL of a local feed server; its /feeds/ prefix is what tests allowlist."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FeedHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def allow(base: str) -> tuple[str, ...]:
    return (f"{base}/feeds/",)


def test_fetch_an_allowlisted_local_feed(feed_server: str) -> None:
    body = fetch(f"{feed_server}/feeds/python.xml", allow(feed_server), FAST)
    items = parse_items("u", body)
    assert items[0] == {
        "feed": "Python news (sample)",
        "title": "Python 3.11 released",
        "link": "https://docs.python.org/3.11/whatsnew/3.11.html",
    }


def test_loopback_is_refused_without_the_allowlist(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="not a public address"):
        fetch(f"{feed_server}/feeds/python.xml", (), FAST)
    assert fetch(f"{feed_server}/feeds/python.xml", allow(feed_server), FAST)  # next one works


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/etc/hostname", "only http and https"),
        ("file:///etc/hostname", "only http and https"),
        ("ftp://example.org/feed", "only http and https"),
        ("gopher://127.0.0.1:70/", "only http and https"),
        ("http://", "needs a host"),
        ("http://user:pw@example.org/", "credentials"),
        ("http://[::1", "not a valid URL"),
        ("http://169.254.169.254/latest/meta-data/", "not a public address"),
        ("http://10.0.0.1/", "not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
        ("http://0.0.0.0/", "not a public address"),
        ("http://localhost:1/", "not a public address"),
    ],
)
def test_refused_urls_fail_with_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(FeedRefused, match=message):
        fetch(url, (), FAST)


def test_redirect_inside_the_allowlist_is_followed(feed_server: str) -> None:
    assert b"<rss" in fetch(f"{feed_server}/feeds/redirect-in", allow(feed_server), FAST)


def test_redirect_to_loopback_outside_the_allowlist_is_refused(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="not a public address"):
        fetch(f"{feed_server}/feeds/redirect-out", allow(feed_server), FAST)


def test_redirect_to_a_file_url_is_refused(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="only http and https"):
        fetch(f"{feed_server}/feeds/redirect-file", allow(feed_server), FAST)


def test_too_many_redirects(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="more than 3 redirects"):
        fetch(f"{feed_server}/feeds/loop", allow(feed_server), FAST)


def test_an_endless_body_is_cut_at_the_size_limit(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="larger than 65536 bytes"):
        fetch(f"{feed_server}/feeds/endless", allow(feed_server), FAST)


def test_a_declared_huge_body_is_refused_before_reading(feed_server: str) -> None:
    with pytest.raises(FeedRefused, match="declared 104857600"):
        fetch(f"{feed_server}/feeds/big-declared", allow(feed_server), FAST)


def test_a_slow_body_hits_the_total_timeout(feed_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FeedFetchError, match="timed out"):
        fetch(f"{feed_server}/feeds/slow", allow(feed_server), Limits(total_timeout_s=0.5))
    assert time.monotonic() - started < 3


def test_http_errors_and_non_feeds(feed_server: str) -> None:
    with pytest.raises(FeedFetchError, match="HTTP 404"):
        fetch(f"{feed_server}/feeds/missing", allow(feed_server), FAST)
    with pytest.raises(FeedFetchError, match="not an RSS or Atom feed"):
        parse_items("u", fetch(f"{feed_server}/feeds/html", allow(feed_server), FAST))


def test_allowlist_is_scheme_host_port_and_path_prefix() -> None:
    prefixes = ("http://127.0.0.1:8000/demo/feeds/",)
    assert is_allowlisted(check_url("http://127.0.0.1:8000/demo/feeds/a.xml"), prefixes)
    for url in [
        "http://127.0.0.1:8000/demo/feedsX/a.xml",
        "http://127.0.0.1:8000/demo/feeds/../../api/jobs",
        "http://127.0.0.1:8000/demo/feeds/%2e%2e/%2e%2e/api/jobs",
        "http://127.0.0.1:8001/demo/feeds/a.xml",
        "https://127.0.0.1:8000/demo/feeds/a.xml",
        "http://localhost:8000/demo/feeds/a.xml",
    ]:
        assert not is_allowlisted(check_url(url), prefixes), url


def test_public_addresses() -> None:
    assert is_public_address("93.184.216.34")
    assert is_public_address("2606:2800:220:1:248:1893:25c8:1946")
    for address in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                    "100.64.0.1", "::1", "fe80::1%eth0", "fd00:ec2::254", "::ffff:10.0.0.1",
                    "224.0.0.1", "0.0.0.0"]:  # fmt: skip
        assert not is_public_address(address), address


def test_feedparser_is_given_bytes_never_a_path() -> None:
    with pytest.raises(FeedFetchError, match="not an RSS or Atom feed"):
        parse_items("u", b"/etc/hostname")


def test_tricky_items_pass_through_as_data(feed_server: str) -> None:
    items = parse_items("u", fetch(f"{feed_server}/feeds/tricky.xml", allow(feed_server), FAST))
    assert items[0]["title"] == "<img src=x onerror=alert(1)>"  # escaping is the page's job
    assert items[0]["link"] == "javascript:alert(1)"


def test_feed_urls_argument() -> None:
    assert feed_urls("https://example.org/a") == ["https://example.org/a"]
    with pytest.raises(FeedRefused, match="1..20 feed URLs"):
        feed_urls([])
    with pytest.raises(FeedRefused, match="1..20 feed URLs"):
        feed_urls({"url": "x"})
    with pytest.raises(FeedRefused, match="only http and https"):
        feed_urls(["https://example.org/a", "file:///etc/passwd"])


class FakeJob:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int, str]] = []

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.steps.append((done, total, message))


def test_the_task_reports_one_step_per_feed(feed_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCAST_FEEDS_ALLOW", f"{feed_server}/feeds/")
    job = FakeJob()
    urls = [f"{feed_server}/feeds/python.xml", f"{feed_server}/feeds/jobcast-atom.xml"]
    items = feeds_module.feeds(job, urls)  # type: ignore[arg-type]
    assert [step[:2] for step in job.steps] == [(0, 2), (1, 2), (2, 2)]
    assert {item["feed"] for item in items} == {"Python news (sample)", "jobcast changelog (sample)"}
    assert all(urlsplit(item["link"]).scheme == "https" for item in items)


def test_the_task_checks_every_url_before_fetching_any(feed_server: str) -> None:
    job = FakeJob()
    with pytest.raises(FeedRefused, match="only http and https"):
        feeds_module.feeds(job, [f"{feed_server}/feeds/python.xml", "file:///etc/hostname"])  # type: ignore[arg-type]
    assert job.steps == []
