"""Task grants (RELIABILITY S17): parsing, loading beside the keys, and restricting a Ready."""

from __future__ import annotations

import os

import pytest

from broker import protocol as p
from broker.security import create_key_pair, load_public_key
from broker.task_grants import load_task_grants, parse_task_list, write_task_grant
from broker.workforce import restrict_ready


def test_task_lists_take_commas_newlines_and_comments() -> None:
    assert parse_task_list("report, feeds\n# a comment, not a task\n\nexport") == {
        "report",
        "feeds",
        "export",
    }
    assert parse_task_list(" ,\n") == frozenset()


def test_grants_are_keyed_by_the_z85_public_key(tmpdir_short: str) -> None:
    public_file, _ = create_key_pair(tmpdir_short, "box2")
    create_key_pair(tmpdir_short, "box3")  # no grant: may register any task
    write_task_grant(public_file, ["report", "feeds"])
    grants = load_task_grants(tmpdir_short)
    assert grants == {load_public_key(public_file).decode(): frozenset({"report", "feeds"})}
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_task_grant(public_file, ["other"])


def test_a_grant_without_its_key_refuses_to_load(tmpdir_short: str) -> None:
    with open(os.path.join(tmpdir_short, "ghost.tasks"), "w") as grant:
        grant.write("report\n")
    with pytest.raises(ValueError, match="not there"):
        load_task_grants(tmpdir_short)


def test_restrict_ready_keeps_only_granted_tasks() -> None:
    ready = p.Ready(tasks=["echo", "report", "feeds"], pid=1, host="h")
    kept, refused = restrict_ready(ready, frozenset({"report"}))
    assert kept.tasks == ["report"] and refused == ["echo", "feeds"]
    assert restrict_ready(ready, None) == (ready, [])
    assert restrict_ready(ready, frozenset({"echo", "report", "feeds", "x"})) == (ready, [])
