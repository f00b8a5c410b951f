"""The task registry: @task, lookup, options, loading --tasks modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from broker.errors import UnknownTask
from workers import Job, registry, task
from workers.registry import TaskModuleError


@pytest.fixture
def scratch() -> Iterator[list[str]]:
    """Names registered by a test; unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


def test_task_registers_function_with_its_options(scratch: list[str]) -> None:
    @task("t_report", ttl=60, timeout=5, max_attempts=2)
    def report(job: Job, region: str) -> dict[str, Any]:
        return {"region": region}

    scratch.append("t_report")
    spec = registry.lookup("t_report")
    assert spec.fn is report  # the decorator returns the function unchanged
    assert spec(Job("j", 1), region="eu") == {"region": "eu"}
    assert registry.options()["t_report"] == {"ttl_s": 60.0, "timeout_s": 5.0, "max_attempts": 2}
    assert "t_report" in registry.names()


def test_defaults_are_designs(scratch: list[str]) -> None:
    task("t_plain")(lambda job: None)
    scratch.append("t_plain")
    assert registry.lookup("t_plain").options() == {
        "ttl_s": 86400.0,
        "timeout_s": None,
        "max_attempts": 3,
    }


def test_scheduling_options_are_announced_only_when_set(scratch: list[str]) -> None:
    task("t_limited", concurrency=2, every=30)(lambda job: None)
    task("t_cron", cron="*/5 * * * *")(lambda job: None)
    task("t_paris", cron="0 6 * * *", tz="Europe/Paris")(lambda job: None)
    scratch.extend(["t_limited", "t_cron", "t_paris"])
    options = registry.options()
    assert options["t_limited"] == {
        "ttl_s": 86400.0, "timeout_s": None, "max_attempts": 3, "concurrency": 2, "every_s": 30.0,
    }  # fmt: skip
    assert options["t_cron"]["cron"] == "*/5 * * * *" and "every_s" not in options["t_cron"]
    assert "tz" not in options["t_cron"] and options["t_paris"]["tz"] == "Europe/Paris"


def test_unknown_task_names_the_known_ones(scratch: list[str]) -> None:
    task("t_known")(lambda job: None)
    scratch.append("t_known")
    with pytest.raises(UnknownTask, match=r"no task named 'nope'.*t_known"):
        registry.lookup("nope")
    assert registry.lookup("t_known").name == "t_known"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl": -1}, "ttl must be a number >= 0"),
        ({"timeout": 0}, "timeout must be None or > 0"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_attempts": True}, "max_attempts must be an int >= 1"),
        ({"concurrency": 0}, "concurrency must be None or an int >= 1"),
        ({"concurrency": 1.5}, "concurrency must be None or an int >= 1"),
        ({"every": 0}, "every must be 0.1"),
        ({"every": "5"}, "every must be 0.1"),
        ({"cron": "every five minutes"}, "cron must be a cron spec"),
        ({"every": 5, "cron": "* * * * *"}, "every or cron, not both"),
        ({"tz": "Europe/Paris"}, "give cron too"),
        ({"cron": "0 6 * * *", "tz": "Mars/Olympus"}, "tz must be an IANA time zone"),
        ({"cron": "0 6 * * *", "tz": "../../etc/passwd"}, "tz must be an IANA time zone"),
        ({"cron": "0 6 * * *", "tz": 2}, "tz must be an IANA time zone"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        task("t_bad", **kwargs)
    assert "t_bad" not in registry.names()


def test_bad_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bad task name"):
        task("")


def test_a_name_taken_by_another_function_is_refused(scratch: list[str]) -> None:
    def first(job: Job) -> None: ...

    def second(job: Job) -> None: ...

    task("t_taken")(first)
    scratch.append("t_taken")
    with pytest.raises(ValueError, match="already registered by .*first"):
        task("t_taken")(second)
    task("t_taken")(first)  # the same function again (a reloaded module) is fine
    assert registry.lookup("t_taken").fn is first


def test_load_modules_imports_and_registers() -> None:
    names = registry.load_modules(["tasks", "workers.demo"])
    assert {"echo", "slow", "fail", "crash", "hang", "progress_n", "report"} <= set(names)
    assert registry.options()["fail"]["max_attempts"] == 1


def test_load_modules_missing_module_is_a_clear_error() -> None:
    with pytest.raises(TaskModuleError, match=r"cannot import task module 'no_such_mod'.*PYTHONPATH"):
        registry.load_modules(["no_such_mod"])
    assert "echo" in registry.load_modules(["tasks"])  # the next good load still works


def test_load_modules_failing_module_is_a_clear_error(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "broken_tasks_mod.py").write_text("raise RuntimeError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TaskModuleError, match="'broken_tasks_mod' failed to import: RuntimeError: oops"):
        registry.load_modules(["broken_tasks_mod"])


def test_demo_report_has_steady_progress_and_a_deterministic_result() -> None:
    registry.load_modules(["workers.demo"])
    report = registry.lookup("report")
    assert report.timeout_s == 600.0
    first = Job("j-demo", 1)
    result = report(first, region="eu", year=2026, steps=8, step_s=0)
    assert len(result["rows"]) == 8
    assert result["total"]["orders"] == sum(row["orders"] for row in result["rows"])
    assert first.last is not None and (first.last["done"], first.last["total"]) == (8, 8)
    assert report(Job("j-demo", 2), region="eu", year=2026, steps=8, step_s=0) == result
    with pytest.raises(ValueError, match="steps must be an int"):
        report(Job("j-demo", 3), steps=0, step_s=0)
