"""The hot report pages: at most a second, never past the result's expiry, bounded (pure)."""

from __future__ import annotations

from web.hot_reports import HotReports

KEY = ("", "report", b"region=eu", "")
VIEW = {"finished_at": 100.0, "ttl_s": 86400}


def test_a_page_stays_hot_for_about_a_second() -> None:
    hot = HotReports(hot_for_s=1.0)
    hot.put(KEY, b"<p>page</p>", VIEW, now_wall=200.0)
    assert hot.get(KEY, 200.9) == b"<p>page</p>"
    assert hot.get(KEY, 201.0) is None
    assert hot.get(KEY, 200.5) is None  # dropped once cold


def test_a_page_never_outlives_its_result() -> None:
    hot = HotReports(hot_for_s=1.0)
    hot.put(KEY, b"page", {"finished_at": 100.0, "ttl_s": 0.5}, now_wall=100.2)
    assert hot.get(KEY, 100.4) == b"page"
    assert hot.get(KEY, 100.5) is None  # the result expired at 100.5, not at 101.2
    hot.put(KEY, b"page", {"finished_at": 100.0, "ttl_s": 0.5}, now_wall=100.6)
    assert hot.get(KEY, 100.6) is None  # already expired: never kept


def test_other_args_scopes_and_mounts_are_other_pages() -> None:
    hot = HotReports()
    hot.put(KEY, b"eu", VIEW, now_wall=200.0)
    assert hot.get(("", "report", b"region=us", ""), 200.1) is None
    assert hot.get(("", "report", b"region=eu", "user:bob"), 200.1) is None
    assert hot.get(("/jobs-app", "report", b"region=eu", ""), 200.1) is None


def test_the_least_recently_used_page_goes_first() -> None:
    hot = HotReports(capacity=2)
    keys = [("", "report", str(i).encode(), "") for i in range(3)]
    hot.put(keys[0], b"0", VIEW, 200.0)
    hot.put(keys[1], b"1", VIEW, 200.0)
    assert hot.get(keys[0], 200.1) == b"0"  # 0 used: 1 is now the oldest
    hot.put(keys[2], b"2", VIEW, 200.1)
    assert hot.get(keys[1], 200.2) is None and hot.get(keys[0], 200.2) == b"0"


def test_pages_are_bounded_in_bytes_too() -> None:
    hot = HotReports(max_bytes=100)
    spellings = [("", "report", query, "") for query in (b"a=1&b=2", b"b=2&a=1", b"a=%31&b=2")]
    for key in spellings:
        hot.put(key, b"x" * 40, VIEW, 200.0)
    assert hot.bytes == 80 and hot.get(spellings[0], 200.1) is None  # the oldest went
    assert hot.get(spellings[2], 200.1) == b"x" * 40
    hot.put(spellings[2], b"y" * 10, VIEW, 200.2)  # replaced, not counted twice
    assert hot.bytes == 50
    hot.put(("", "report", b"big", ""), b"z" * 101, VIEW, 200.3)  # larger than the bound
    assert hot.get(("", "report", b"big", ""), 200.4) is None and hot.bytes == 50
    assert hot.get(spellings[2], 201.5) is None and hot.bytes == 40  # a cold page frees its bytes
