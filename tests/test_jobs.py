"""Pure tests of job records: transitions, ids, canonical args and cache keys."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from broker.errors import BadArguments, PayloadTooLarge
from broker.jobs import (
    FINAL_STATES,
    MAX_ARGS_DEPTH,
    MAX_SAFE_INT,
    Job,
    State,
    cache_key,
    canonical_args,
    is_job_id,
    job_from_record,
    job_record,
    new_job_id,
    parse_args,
)
from broker.protocol import MAX_ARGS_BYTES

LEGAL = [
    (State.QUEUED, State.RUNNING), (State.QUEUED, State.FAILED), (State.QUEUED, State.CANCELLED),
    (State.RUNNING, State.QUEUED), (State.RUNNING, State.DONE), (State.RUNNING, State.FAILED),
    (State.RUNNING, State.CANCELLED),
]  # fmt: skip
ILLEGAL = [(before, after) for before in State for after in State if (before, after) not in LEGAL]


def make_job(state: State = State.QUEUED) -> Job:
    job = Job(id=new_job_id(), task="echo", args=b"{}", cache_key="k", created_at=0.0)
    job.state = state
    return job


def test_state_values_are_design_strings() -> None:
    assert [str(state) for state in State] == ["queued", "running", "done", "failed", "cancelled"]
    assert {State.DONE, State.FAILED, State.CANCELLED} == FINAL_STATES


@pytest.mark.parametrize(("before", "after"), LEGAL, ids=lambda s: str(s))
def test_legal_transition(before: State, after: State) -> None:
    job = make_job(before)
    job.move_to(after)
    assert job.state is after
    assert job.is_final == (after in FINAL_STATES)


@pytest.mark.parametrize(("before", "after"), ILLEGAL, ids=lambda s: str(s))
def test_illegal_transition(before: State, after: State) -> None:
    job = make_job(before)
    with pytest.raises(ValueError, match=f"illegal transition {before} → {after}"):
        job.move_to(after)
    assert job.state is before


def test_final_states_are_terminal() -> None:
    for state in FINAL_STATES:
        assert make_job(state).is_final
        assert not any(before == state for before, _ in LEGAL)


def test_view_is_json_and_excludes_result() -> None:
    job = make_job(State.DONE)
    job.result = b'{"x":1}'
    view = job.view(epoch=7)
    assert json.loads(json.dumps(view)) == view
    assert view["epoch"] == 7 and view["state"] == "done" and "result" not in view


# --- ids ---------------------------------------------------------------------------------


def test_new_job_id_shape() -> None:
    job_id = new_job_id()
    assert len(job_id) == 22
    assert re.fullmatch(r"[A-Za-z0-9_-]+", job_id)
    assert is_job_id(job_id)


def test_no_new_job_id_starts_with_a_dash() -> None:
    # one in 64 would without the rule: 5,000 draws would show about 78
    assert not [job_id for job_id in (new_job_id() for _ in range(5000)) if job_id.startswith("-")]


def test_new_job_ids_are_unique() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_job_id(job_id) for job_id in ids)


@pytest.mark.parametrize(
    "value", ["", "short", "A" * 21, "A" * 23, "A" * 21 + "/", "A" * 21 + "=", "A" * 21 + " ", "A" * 21 + "é"]
)
def test_is_job_id_rejects(value: str) -> None:
    assert not is_job_id(value)


# --- canonical args ------------------------------------------------------------------------


def test_canonical_args_ignore_key_order() -> None:
    a = canonical_args({"year": 2026, "region": "eu", "nested": {"b": 1, "a": [1, 2]}})
    b = canonical_args({"nested": {"a": [1, 2], "b": 1}, "region": "eu", "year": 2026})
    assert a == b


def test_canonical_args_fixed_separators() -> None:
    assert canonical_args({"b": [1, 2], "a": "x y"}) == b'{"a":"x y","b":[1,2]}'
    assert canonical_args({}) == b"{}"


def test_canonical_args_are_ascii() -> None:
    encoded = canonical_args({"city": "Zürich"})
    assert encoded == b'{"city":"Z\\u00fcrich"}'
    assert json.loads(encoded) == {"city": "Zürich"}


def test_canonical_args_accept_the_safe_int_bound() -> None:
    assert canonical_args({"n": MAX_SAFE_INT, "m": -MAX_SAFE_INT}) == (
        b'{"m":-9007199254740992,"n":9007199254740992}'
    )


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ({"x": float("nan")}, r"NaN or Infinity \(got nan\)"),
        ({"x": float("inf")}, r"NaN or Infinity \(got inf\)"),
        ({"x": [float("-inf")]}, r"NaN or Infinity \(got -inf\)"),
        ({"x": MAX_SAFE_INT + 1}, "out of range"),
        ({"x": -(MAX_SAFE_INT + 1)}, "out of range"),
        ({"x": 10**100}, "an integer of 101 digits"),
        ({"x": "\ud800"}, "lone surrogate"),
        ({"\udcff": 1}, "lone surrogate"),
        ({1: "x"}, "keys must be strings"),
        ({"x": (1, 2)}, "tuple is not a JSON value"),
        ({"x": b"bytes"}, "bytes is not a JSON value"),
        ([1, 2], "must be a JSON object"),
        ("text", "must be a JSON object"),
        (None, "must be a JSON object"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "int+",
        "int-",
        "bigint",
        "surrogate",
        "surrogate-key",
        "int-key",
        "tuple",
        "bytes",
        "list",
        "str",
        "none",
    ],
)
def test_canonical_args_reject(args: Any, phrase: str) -> None:
    with pytest.raises(BadArguments, match=phrase):
        canonical_args(args)
    assert canonical_args({"ok": 1}) == b'{"ok":1}'


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_canonical_args_depth_bound() -> None:
    canonical_args(nested(MAX_ARGS_DEPTH))
    with pytest.raises(BadArguments, match=f"deeper than {MAX_ARGS_DEPTH}"):
        canonical_args(nested(MAX_ARGS_DEPTH + 2))


def test_canonical_args_oversized() -> None:
    with pytest.raises(PayloadTooLarge, match=f"args exceed {MAX_ARGS_BYTES} bytes"):
        canonical_args({"x": "y" * MAX_ARGS_BYTES})
    assert issubclass(PayloadTooLarge, BadArguments)


def test_parse_args_rejects_constants_and_deep_nesting() -> None:
    with pytest.raises(BadArguments, match="NaN is not allowed"):
        parse_args(b'{"x":NaN}')
    with pytest.raises(BadArguments, match="not valid JSON"):
        parse_args(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BadArguments, match="not valid JSON"):
        parse_args(b"{oops")
    assert parse_args(b'{"x":1}') == {"x": 1}


# --- cache keys ------------------------------------------------------------------------------


def test_cache_key_same_for_reordered_args() -> None:
    a = cache_key("report", canonical_args({"region": "eu", "year": 2026}))
    b = cache_key("report", canonical_args({"year": 2026, "region": "eu"}))
    assert a == b
    assert re.fullmatch(r"[0-9a-f]{64}", a)


def test_cache_key_differs_by_task_args_and_scope() -> None:
    args = canonical_args({"region": "eu"})
    base = cache_key("report", args)
    assert cache_key("export", args) != base
    assert cache_key("report", canonical_args({"region": "us"})) != base
    assert cache_key("report", args, scope="tenant-a") != base
    assert cache_key("report", args, scope="tenant-a") != cache_key("report", args, "tenant-b")
    assert cache_key("report", args, scope="") == base


def test_cache_key_has_no_boundary_ambiguity() -> None:
    # Naive concatenation would make ("ab", "c…") and ("a", "bc…") collide.
    assert cache_key("ab", b"{}") != cache_key("a", b"b{}")
    assert cache_key("a", b"{}", "x") != cache_key("a", b"{}x", "")
    assert cache_key("a", b"", "{}") != cache_key("a", b"{}", "")


def test_a_journal_record_keeps_the_log_a_running_task_wrote() -> None:
    job = Job(id=new_job_id(), task="echo", args=b"{}", cache_key="k", created_at=0.0)
    assert "log" not in job_record(job)  # no log: no fields
    job.extra.update(log=["b", "c"], log_count=3, position=4)  # line 0 fell off the bound
    record = json.loads(json.dumps(job_record(job)))
    assert (record["log"], record["log_count"]) == (["b", "c"], 3) and "position" not in record
    again = job_from_record(record)
    assert again.extra == {"log": ["b", "c"], "log_count": 3}


@pytest.mark.parametrize("log", [["ok", 7], "not a list", None])
def test_a_record_whose_log_is_malformed_restores_the_job_without_it(log: Any) -> None:
    job = Job(id=new_job_id(), task="echo", args=b"{}", cache_key="k", created_at=0.0)
    record = {**job_record(job), "log": log, "log_count": 2}
    restored = job_from_record(record)
    assert restored.id == job.id and restored.extra == {}
