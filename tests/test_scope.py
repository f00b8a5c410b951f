"""Issue 7 / S3: with host authentication, the cache scope is the signed-in user's, never the request's."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest
from helpers import PYTHON, ReadyProcess, wait_for


@pytest.fixture
def app_url(
    broker: ReadyProcess,
    start_workers: Callable[..., ReadyProcess],
    base_url: str,
    tmpdir_short: str,
    part_env: dict[str, str],
    processes: list[ReadyProcess],
) -> Iterator[str]:
    """The base URL of jobcast mounted at /jobcast in an app with AuthenticationMiddleware."""
    start_workers(2)
    env = {**part_env, "JOBCAST_BROKER": base_url, "JOBCAST_DATA": os.path.join(tmpdir_short, "data")}
    app = ReadyProcess([PYTHON, "-m", "mounted_auth_app"], env=env)
    processes.append(app)
    yield app.ready_line.split(" ready ", 1)[1] + "/jobcast"  # fmt: skip


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name}


def finished(url: str, job_id: str) -> bool:
    return bool(httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()["state"] == "done")


def test_one_users_cached_report_is_never_served_to_another(app_url: str) -> None:
    report = f"{app_url}/reports/echo?region=eu&year=2026"
    first = httpx.get(report, headers=as_user("alice"), timeout=10)
    assert first.status_code == 303
    alice_job = first.headers["location"].split("/jobs/", 1)[1].split("?", 1)[0]
    wait_for(lambda: finished(app_url, alice_job), timeout_s=15)
    again = httpx.get(report, headers=as_user("alice"), timeout=10)
    assert again.status_code == 200 and "Cached result." in again.text  # same user: a cache hit
    bob = httpx.get(report, headers=as_user("bob"), timeout=10)
    assert bob.status_code == 303  # another user: a new job, never alice's result
    bob_job = bob.headers["location"].split("/jobs/", 1)[1].split("?", 1)[0]
    assert bob_job != alice_job
    anonymous = httpx.get(report, timeout=10)
    assert anonymous.status_code == 303 and alice_job not in anonymous.headers["location"]


def test_api_submissions_are_scoped_and_scope_cannot_be_chosen(app_url: str) -> None:
    body = {"task": "echo", "args": {"n": 7}}
    alice = httpx.post(f"{app_url}/api/jobs", json=body, headers=as_user("alice"), timeout=10)
    assert alice.status_code == 202
    wait_for(lambda: finished(app_url, alice.json()["id"]), timeout_s=15)
    hit = httpx.post(f"{app_url}/api/jobs", json=body, headers=as_user("alice"), timeout=10)
    assert hit.status_code == 200 and hit.json()["cached"] is True and hit.json()["result"] == {"n": 7}
    bob = httpx.post(f"{app_url}/api/jobs", json=body, headers=as_user("bob"), timeout=10)
    assert bob.status_code == 202 and bob.json()["id"] != alice.json()["id"] and not bob.json().get("cached")
    # a request naming a scope is refused, in the body and (under auth) in the report's query
    forged = httpx.post(f"{app_url}/api/jobs", json={**body, "scope": "user:alice"}, headers=as_user("bob"),
                        timeout=10)  # fmt: skip
    assert forged.status_code == 400 and "scope is set by the server" in forged.json()["error"]
    query = httpx.get(f"{app_url}/reports/echo?n=7&scope=user:alice", headers=as_user("bob"), timeout=10)
    assert query.status_code == 400 and "scope is set by the server" in query.json()["error"]
    # and the next good request still works
    again = httpx.post(f"{app_url}/api/jobs", json=body, headers=as_user("bob"), timeout=10)
    assert again.status_code in (200, 202)


def test_group_children_are_scoped_too(app_url: str) -> None:
    body = {"task": "echo", "args": [{"g": 1}, {"g": 2}]}
    alice = httpx.post(f"{app_url}/api/groups", json=body, headers=as_user("alice"), timeout=10)
    assert alice.status_code == 202, alice.text
    alice_children = [child["id"] for child in alice.json()["children"]]
    wait_for(lambda: all(finished(app_url, child) for child in alice_children), timeout_s=15)
    again = httpx.post(f"{app_url}/api/groups", json=body, headers=as_user("alice"), timeout=10)
    assert again.status_code == 200 and [c["id"] for c in again.json()["children"]] == alice_children
    bob = httpx.post(f"{app_url}/api/groups", json=body, headers=as_user("bob"), timeout=10)
    assert bob.status_code == 202  # not served from alice's cache
    assert not set(c["id"] for c in bob.json()["children"]) & set(alice_children)
