"""Pure tests of the dashboard's cookie signing, bearer parsing and token rules (fake clock)."""

from __future__ import annotations

import pytest

from web.auth import COOKIE_MAX_AGE_S, bearer, cookie_valid, cookie_value, token_matches
from web.settings import Settings, check_dashboard_token

TOKEN = "s3cret-dashboard-token"
NOW = 1_800_000_000.0


def test_cookie_holds_an_expiry_and_an_hmac_never_the_token() -> None:
    value = cookie_value(TOKEN, NOW)
    expires, mac = value.split(".")
    assert int(expires) == int(NOW) + COOKIE_MAX_AGE_S and len(mac) == 64 and TOKEN not in value
    assert cookie_valid(TOKEN, value, NOW + 60)
    assert not cookie_valid(TOKEN, value, NOW + COOKIE_MAX_AGE_S)  # expired
    assert not cookie_valid("another-token-entirely", value, NOW)  # a new token signs everyone out


@pytest.mark.parametrize(
    "forged",
    [None, "", "no-dot", "abc.def", f"{int(NOW) + 10 * COOKIE_MAX_AGE_S}.{'0' * 64}", "1" * 200,
     f"{int(NOW) + 60}.{'0' * 64}", "-5." + "0" * 64],
)  # fmt: skip
def test_forged_or_malformed_cookies_are_refused(forged: str | None) -> None:
    assert not cookie_valid(TOKEN, forged, NOW)
    assert cookie_valid(TOKEN, cookie_value(TOKEN, NOW), NOW)  # the real one still works


def test_a_cookie_expiring_too_far_ahead_is_refused_even_if_signed() -> None:
    far = cookie_value(TOKEN, NOW, max_age_s=10 * COOKIE_MAX_AGE_S)
    assert not cookie_valid(TOKEN, far, NOW)


def test_bearer_header_parsing_and_constant_time_match() -> None:
    assert bearer(f"Bearer {TOKEN}") == TOKEN and bearer(f"bearer  {TOKEN} ") == TOKEN
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN, TOKEN[:-1])
    assert not token_matches(TOKEN, "\udcff" * 5)  # undecodable input is just wrong


def test_token_rules() -> None:
    assert check_dashboard_token(None) is None and check_dashboard_token("") is None
    for bad in ("short", "x" * 15, "has a space in it!!", "ünïcödé-token-1234"):
        with pytest.raises(ValueError, match="at least 16 printable ASCII"):
            check_dashboard_token(bad)
    assert TOKEN not in repr(Settings(dashboard_token=TOKEN))
    with pytest.raises(ValueError, match="the metrics token must be at least 16"):
        Settings(metrics_token="short")
    assert TOKEN not in repr(Settings(metrics_token=TOKEN))
