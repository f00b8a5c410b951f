"""``callback_url``: the URL rules (pure) and delivery by a real web process to a real receiver."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from helpers import ReadyProcess, wait_for
from web_fixtures import WebServer

from broker.client import Client
from broker.errors import BadArguments
from web.callback_store import CallbackStore
from web.callbacks import CallbackPolicy, callback_body, check_callback_url

OPEN = CallbackPolicy()
LOCAL_ALLOWED = CallbackPolicy(allow_hosts=frozenset({"127.0.0.1"}))


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("file:///etc/passwd", "http or https URL"),
        ("gopher://example.com/", "http or https URL"),
        ("http:///no-host", "http or https URL"),
        ("http://127.0.0.1:8000/hook", "non-public address"),
        ("http://169.254.169.254/latest/meta-data/", "non-public address"),
        ("http://10.0.0.7/hook", "non-public address"),
        ("http://[::1]/hook", "non-public address"),
        ("http://[::ffff:127.0.0.1]/hook", "non-public address"),
        ("http://user:secret@example.com/hook", "credentials"),
        ("http://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "x" * 3000, "1..2048 characters"),
        (42, "must be a string"),
    ],
)
def test_refused_callback_urls(url: Any, phrase: str) -> None:
    with pytest.raises(BadArguments, match=phrase):
        check_callback_url(url, OPEN)
    assert check_callback_url("https://example.com/hook?x=1", OPEN).hostname == "example.com"


def test_the_allowlist_admits_a_listed_host_only() -> None:
    assert check_callback_url("http://127.0.0.1:9/hook", LOCAL_ALLOWED).port == 9
    with pytest.raises(BadArguments):
        check_callback_url("http://127.0.0.2:9/hook", LOCAL_ALLOWED)


def test_a_too_big_result_is_left_out_of_the_body() -> None:
    view = {"id": "j", "state": "done", "result": "x" * 5000}
    assert json.loads(callback_body(view, 10_000)) == view
    small = json.loads(callback_body(view, 1000))
    assert "result" not in small and small["result_omitted"] is True and small["state"] == "done"


class Receiver:
    """A little HTTP server on 127.0.0.1 that records POSTs; answers 500 to the first ``fail_first``."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.answers) < receiver.fail_first else 200
                receiver.answers.append(status)
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/jobcast?k=v"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(fail_first=2)
    yield running
    running.close()


@pytest.fixture
def stack(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
) -> WebServer:  # fmt: skip
    start_broker()
    start_workers(1)
    return start_web(env={"JOBCAST_CALLBACK_ALLOW_HOSTS": "127.0.0.1", "JOBCAST_CALLBACK_BACKOFF_S": "0.05"})


def post_job(web: WebServer, task: str, args: dict[str, Any], callback_url: Any) -> httpx.Response:
    body = {"task": task, "args": args, "callback_url": callback_url}
    return httpx.post(f"{web.url}/api/jobs", json=body, timeout=10)


def test_the_final_view_is_posted_after_retries(stack: WebServer, receiver: Receiver) -> None:
    response = post_job(stack, "echo", {"hook": "me"}, receiver.url)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_for(lambda: receiver.bodies, timeout_s=20)
    assert receiver.answers == [500, 500, 200]  # two failed deliveries, retried with back-off
    (view,) = receiver.bodies
    assert view["id"] == job_id and view["state"] == "done" and view["result"] == {"hook": "me"}
    failed = post_job(stack, "fail", {}, receiver.url).json()
    wait_for(lambda: len(receiver.bodies) == 2, timeout_s=20)
    assert receiver.bodies[1]["id"] == failed["id"] and receiver.bodies[1]["state"] == "failed"
    assert receiver.bodies[1]["error"]["message"] == "boom"


def test_bad_callback_urls_are_400_and_create_no_job(
    stack: WebServer, receiver: Receiver, base_url: str
) -> None:
    for url in ("file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", 7):
        response = post_job(stack, "echo", {"bad": str(url)}, url)
        assert response.status_code == 400 and "callback_url" in response.json()["error"]
    with Client(base_url, timeout_s=10) as client:
        assert client.stats()["submitted"] == 0
    assert post_job(stack, "echo", {"good": 1}, receiver.url).status_code in (200, 202)
    wait_for(lambda: receiver.bodies, timeout_s=20)


def test_without_the_allowlist_loopback_is_refused(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer], receiver: Receiver,
) -> None:  # fmt: skip
    start_broker()
    start_workers(1)
    web = start_web(env={"JOBCAST_CALLBACK_BACKOFF_S": "0.05"})
    literal = post_job(web, "echo", {"n": 1}, receiver.url)
    assert literal.status_code == 400 and "non-public address" in literal.json()["error"]
    by_name = receiver.url.replace("127.0.0.1", "localhost")  # a name: checked when resolved
    response = post_job(web, "echo", {"n": 2}, by_name)
    assert response.status_code == 202
    wait_for(lambda: "callback refused" in web.proc.output(), timeout_s=20)
    assert receiver.answers == []


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_stored_callback_is_taken_over_only_once_its_lease_ran_out(tmp_path: Any) -> None:
    clock = Clock()
    first = CallbackStore(str(tmp_path), lease_s=30, clock=clock)
    second = CallbackStore(str(tmp_path), lease_s=30, clock=clock)
    kept = first.add("job-a", "https://example.com/a")
    assert second.claim(10) == []  # the first process holds it
    clock.now += 20
    first.renew()  # the first process is alive: its lease runs 30 s from now
    clock.now += 20
    assert second.claim(10) == []
    clock.now += 11  # the first process stopped renewing (it died)
    assert second.claim(10) == [kept]
    assert first.claim(10) == [] and second.claim(10) == []  # taken once
    first.renew()  # the old owner's renewal does not take it back
    clock.now += 31
    assert first.claim(10) == [kept]  # ... and the new owner's lease ran out too
    first.remove(kept.row)
    assert second.count() == 0 and second.claim(10) == []
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    first.close()
    second.close()


def test_released_callbacks_are_taken_at_once_and_a_claim_takes_at_most_its_limit(tmp_path: Any) -> None:
    clock = Clock()
    leaving = CallbackStore(str(tmp_path), lease_s=30, clock=clock)
    rows = [leaving.add(f"job-{i}", f"https://example.com/{i}") for i in range(5)]
    leaving.release()
    leaving.close()
    taking = CallbackStore(str(tmp_path), lease_s=30, clock=clock)
    assert taking.claim(0) == []
    assert taking.claim(3) == rows[:3]  # oldest first
    assert taking.claim(3) == rows[3:]
    assert taking.count() == 5
    taking.close()


@pytest.fixture
def lenient_receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def pending_callbacks(data_dir: str) -> int:
    store = CallbackStore(data_dir)
    try:
        return store.count()
    finally:
        store.close()


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_callback_outlives_the_web_process_that_took_it(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer], lenient_receiver: Receiver, tmpdir_short: str, how: str,
) -> None:  # fmt: skip
    start_broker()
    start_workers(1)
    # a killed process's lease runs out after 1 s; a stopped one releases its callbacks, so
    # the next process must take them at once, well before a 60 s lease would run out
    lease = {"killed": "1", "stopped": "60"}[how]
    env = {"JOBCAST_CALLBACK_ALLOW_HOSTS": "127.0.0.1", "JOBCAST_CALLBACK_LEASE_S": lease}
    first = start_web(env=env)
    response = post_job(first, "slow", {"seconds": 1.5, "steps": 3}, lenient_receiver.url)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    data_dir = os.path.join(tmpdir_short, "data")
    assert pending_callbacks(data_dir) == 1  # on disk before the submission was answered
    if how == "killed":
        first.proc.signal(signal.SIGKILL)
        first.proc.wait(10)
    else:
        first.proc.stop()
        assert "1 undelivered callbacks left to the next web process" in first.proc.output()
    assert lenient_receiver.bodies == []
    start_web(env=env)
    wait_for(lambda: lenient_receiver.bodies, timeout_s=30)
    (view,) = lenient_receiver.bodies
    assert view["id"] == job_id and view["state"] == "done" and view["result"]["steps"] == 3
    wait_for(lambda: pending_callbacks(data_dir) == 0, timeout_s=10)  # forgotten once delivered
