"""``broker.fresh_keys``: which cache keys may be on disk, with a fake clock (pure)."""

from __future__ import annotations

from broker.fresh_keys import FreshKeys


def test_nothing_is_known_before_loading() -> None:
    keys = FreshKeys()
    assert keys.may_exist("a", now=0.0)  # unknown: look on disk
    keys.add("a", 10.0, now=0.0)
    assert keys.may_exist("b", now=0.0)


def test_loaded_keys_are_fresh_until_they_expire() -> None:
    keys = FreshKeys()
    assert keys.load([("a", 10.0), ("b", None), ("c", 5.0)], now=7.0)
    assert keys.may_exist("a", now=9.9)
    assert not keys.may_exist("a", now=10.0)
    assert keys.may_exist("b", now=1e12)  # no expiry
    assert not keys.may_exist("c", now=7.0)  # loaded already expired
    assert not keys.may_exist("never-written", now=7.0)


def test_added_keys_are_known() -> None:
    keys = FreshKeys()
    keys.load([], now=0.0)
    assert not keys.may_exist("a", now=0.0)
    keys.add("a", 3.0, now=0.0)
    assert keys.may_exist("a", now=2.0)
    keys.add("a", 1.0, now=0.0)  # written again: the latest expiry counts
    assert not keys.may_exist("a", now=2.0)


def test_past_the_limit_expired_keys_make_room() -> None:
    keys = FreshKeys(limit=4)
    keys.load([], now=0.0)
    for i in range(4):
        keys.add(f"old{i}", 1.0, now=0.0)
    keys.add("new", 100.0, now=5.0)  # the fifth: the four expired ones go
    assert keys.complete and len(keys.expiry) == 1
    assert keys.may_exist("new", now=5.0)


def test_past_the_limit_with_fresh_keys_every_key_may_exist() -> None:
    keys = FreshKeys(limit=4)
    keys.load([], now=0.0)
    for i in range(5):
        keys.add(f"k{i}", 100.0, now=0.0)
    assert not keys.complete and keys.expiry == {}
    assert keys.may_exist("anything", now=0.0)
    keys.add("more", 100.0, now=0.0)  # ignored until a reload
    assert keys.expiry == {}


def test_loading_more_rows_than_the_limit_stays_incomplete() -> None:
    keys = FreshKeys(limit=2)
    assert not keys.load([("a", 9.0), ("b", 9.0), ("c", 9.0)], now=0.0)
    assert keys.may_exist("z", now=0.0)
    assert keys.load([("a", 9.0)], now=0.0)  # a later reload with fewer rows knows them all
    assert not keys.may_exist("z", now=0.0)
