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
