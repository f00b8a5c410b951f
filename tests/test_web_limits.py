"""Admission control (H5, S10): per-client submission rate, not-found throttling, queue cap.

Pure limiter tests use a fake clock; the rest run a real broker, workers and uvicorn with
small limits set through the web process's environment.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import ReadyProcess, wait_for
from web_fixtures import WebServer, WebStack
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker.client import Client
from web.errors import too_many_requests
from web.limits import RateLimiter, TokenBucket, client_key
from web.settings import Settings
from web.throttle import is_id_route

ID_ALPHABET = string.ascii_letters + string.digits + "-_"
REPORT = "/reports/report?year=2026&steps=100&step_s=0.1&region=flood"  # runs ~10 s

# --- the limiter, with a fake clock ----------------------------------------------------------


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.wait_s("a", 0.25) == pytest.approx(0.25)
    assert limiter.take("a", 0.5) == 0.0 and limiter.take("a", 0.5) > 0
    assert limiter.take("b", 0.5) == 0.0  # another client has its own bucket


def test_bucket_never_holds_more_than_its_burst() -> None:
    limiter = RateLimiter(rate=100, burst=4)
    limiter.take("a", 0.0)
    assert [limiter.take("a", 3600.0) for _ in range(5)].count(0.0) == 4


def test_refused_and_peeked_requests_take_nothing() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a", 0.0) == 0.0
    for _ in range(100):
        assert limiter.take("a", 0.5) == pytest.approx(0.5)
        assert limiter.wait_s("a", 0.5) == pytest.approx(0.5)
    assert limiter.take("a", 1.0) == 0.0  # refusals did not push the next token back
    assert limiter.wait_s("never-seen", 1.0) == 0.0 and "never-seen" not in limiter


def test_a_clock_going_backwards_earns_no_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=2, tokens=0.0, stamp=10.0)
    assert bucket.take(5.0) == pytest.approx(1.0) and bucket.tokens == 0.0
    assert bucket.take(11.0) == 0.0


def test_tracked_clients_are_bounded_least_recently_seen_first() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=3)
    for key in "abc":
        limiter.take(key, 0.0)
    limiter.take("a", 0.0)  # a is seen again (refused): now b is the oldest
    limiter.take("d", 0.0)
    assert len(limiter) == 3 and "b" not in limiter and all(key in limiter for key in "acd")
    for n in range(10_000):
        limiter.take(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter) == 3
    assert limiter.take("b", 0.0) == 0.0  # forgetting a client only hands it a full bucket


@pytest.mark.parametrize(("rate", "burst"), [(0, 40), (20, 0), (0, 0)])
def test_zero_disables_the_limiter(rate: float, burst: float) -> None:
    limiter = RateLimiter(rate, burst)
    assert not limiter.enabled
    assert all(limiter.take("a", 0.0) == 0.0 for _ in range(1000)) and len(limiter) == 0


@pytest.mark.parametrize(("rate", "burst"), [(-1, 5), (1, float("nan")), (float("inf"), 5)])
def test_bad_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


@pytest.mark.parametrize(
    ("host", "key"),
    [("127.0.0.1", "127.0.0.1"), ("2001:db8::1", "2001:db8::/64"), ("2001:db8::ffff:1", "2001:db8::/64"),
     ("2001:db8:0:1::1", "2001:db8:0:1::/64"), ("::ffff:10.1.2.3", "10.1.2.3"), (None, "unknown"),
     ("testclient", "testclient")],
)  # fmt: skip
def test_client_keys_group_an_ipv6_64(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(broker_url="x")
    assert (settings.submit_rate, settings.submit_burst) == (20.0, 40.0)
    assert (settings.not_found_rate, settings.not_found_burst) == (10.0, 20.0)
    monkeypatch.setenv("JOBCAST_SUBMIT_RATE", "0")
    monkeypatch.setenv("JOBCAST_NOT_FOUND_BURST", "3")
    settings = Settings(broker_url="x")
    assert settings.submit_rate == 0.0 and settings.not_found_burst == 3.0
    for bad in ("-1", "nan", "abc", "1e9"):
        monkeypatch.setenv("JOBCAST_SUBMIT_BURST", bad)
        with pytest.raises(ValueError):
            Settings(broker_url="x")


def test_429_answer_shape() -> None:
    response = too_many_requests(0.01)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert json.loads(response.body) == {"error": "too many requests"}
    assert too_many_requests(2.1).headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("kind", "method", "path", "root", "expected"),
    [("http", "GET", "/api/jobs/x", "", True), ("http", "DELETE", "/api/jobs/x", "", True),
     ("http", "GET", "/jobs/x", "", True), ("http", "GET", "/bars", "", True),
     ("websocket", None, "/api/jobs/x/events", "", True), ("http", "POST", "/api/jobs", "", False),
     ("http", "GET", "/reports/report", "", False), ("http", "GET", "/healthz", "", False),
     ("http", "GET", "/jobcast/jobs/x", "/jobcast", True), ("http", "GET", "/jobcast/", "/jobcast", False)],
)  # fmt: skip
def test_id_routes(kind: str, method: str | None, path: str, root: str, expected: bool) -> None:
    assert is_id_route({"type": kind, "method": method, "path": path, "root_path": root}) is expected


# --- a real stack with small limits ---------------------------------------------------------

SMALL_LIMITS = {
    "JOBCAST_SUBMIT_RATE": "1",
    "JOBCAST_SUBMIT_BURST": "5",
    "JOBCAST_NOT_FOUND_RATE": "0.5",  # a token every 2 s: nothing refills during a flood
    "JOBCAST_NOT_FOUND_BURST": "5",
}


def _stack(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    env: dict[str, str],
    slots: int = 2,
) -> WebStack:
    broker = start_broker()
    web = start_web(env=env)
    workers = start_workers(slots, "--tasks", "workers.demo")
    return WebStack(broker, workers, web)


@pytest.fixture
def limited_stack(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
) -> WebStack:
    """Broker, 2 workers and a web server with SMALL_LIMITS."""
    return _stack(start_broker, start_workers, start_web, SMALL_LIMITS)


@pytest.fixture
def other_client() -> Iterator[httpx.Client]:
    """An HTTP client from another loopback address (127.0.0.2): a different client."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as client:
        yield client


def post(url: str, args: dict[str, object], task: str = "echo") -> httpx.Response:
    return httpx.post(f"{url}/api/jobs", json={"task": task, "args": args}, timeout=10)


def assert_429(response: httpx.Response) -> int:
    """A 429 with the JSON error and a whole-seconds Retry-After; returns that."""
    assert response.status_code == 429, response.text
    assert response.json() == {"error": "too many requests"}
    retry = response.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60
    return int(retry)


def accepted(request: Callable[[], httpx.Response], timeout_s: float) -> httpx.Response:
    """Repeat ``request`` every 0.1 s until it is answered 202 (deadline ``timeout_s``)."""
    answers: list[httpx.Response] = []
    wait_for(lambda: answers.append(request()) or answers[-1].status_code == 202,
             timeout_s=timeout_s, interval_s=0.1)  # fmt: skip
    return answers[-1]


def random_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(22))


def test_submit_flood_gets_429_with_retry_after_then_recovers(
    limited_stack: WebStack, other_client: httpx.Client
) -> None:
    url = limited_stack.url
    started = time.monotonic()
    answers = [post(url, {"n": n}) for n in range(30)]
    elapsed = time.monotonic() - started
    admitted = [a for a in answers if a.status_code in (200, 202)]
    refused = [a for a in answers if a.status_code == 429]
    assert len(admitted) + len(refused) == 30, [a.status_code for a in answers]
    assert all(a.status_code == 202 for a in answers[:5])  # the burst
    assert 5 <= len(admitted) <= 5 + elapsed * 1 + 1  # then 1 per second
    retry = max(assert_429(a) for a in refused)
    # another address is another client: not limited by this one's flood
    other = other_client.post(f"{url}/api/jobs", json={"task": "echo", "args": {"other": 1}})
    assert other.status_code == 202
    refused_at = time.monotonic()
    recovered = accepted(lambda: post(url, {"after": "wait"}), timeout_s=retry + 2)
    assert time.monotonic() - refused_at <= retry + 1
    job_id = recovered.json()["id"]
    done = wait_for(lambda: httpx.get(f"{url}/api/jobs/{job_id}").json()["state"] == "done")
    assert done  # a good job still completes after the flood


def test_post_flood_is_refused_before_the_body_is_read(limited_stack: WebStack) -> None:
    for n in range(5):
        post(limited_stack.url, {"n": n})
    big = b'{"task": "echo", "args": {"x": "' + b"y" * 500_000 + b'"}}'
    response = httpx.post(f"{limited_stack.url}/api/jobs", content=big,
                          headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert_429(response)


def test_100_identical_report_gets_make_one_job_then_429(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    base_url: str,
) -> None:
    env = {"JOBCAST_SUBMIT_RATE": "1", "JOBCAST_SUBMIT_BURST": "100"}
    stack = _stack(start_broker, start_workers, start_web, env)
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        answers = [http.get(REPORT) for _ in range(100)]
        assert {a.status_code for a in answers} == {303}, [a.status_code for a in answers]
        job_ids = {urlsplit(a.headers["location"]).path.rsplit("/", 1)[1] for a in answers}
        assert len(job_ids) == 1  # coalesced: one job
        more = [http.get(REPORT) for _ in range(5)]  # past the burst (1 token/s refills)
        assert_429(next(a for a in more if a.status_code != 303))
    with Client(base_url, timeout_s=10) as client:
        stats = client.stats()
    assert stats["submitted"] == 1 and stats["coalesced"] >= 99
    (job_id,) = job_ids
    cancel = httpx.delete(f"{stack.url}/api/jobs/{job_id}")
    assert cancel.status_code == 200


def test_queue_cap_holds_for_report_gets(
    start_broker: Callable[..., ReadyProcess],
    start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer],
    part_env: dict[str, str],
) -> None:
    part_env["JOBCAST_MAX_LIVE_JOBS"] = "2"  # read by the broker
    stack = _stack(start_broker, start_workers, start_web, {}, slots=1)
    part_env.pop("JOBCAST_MAX_LIVE_JOBS")
    first, second = (httpx.get(f"{stack.url}{REPORT}{n}") for n in (1, 2))
    assert first.status_code == second.status_code == 303
    full = httpx.get(f"{stack.url}{REPORT}3")
    assert full.status_code == 503 and full.headers["retry-after"].isdigit()
    assert "queue is full" in full.json()["error"]
    assert post(stack.url, {"x": 1}).status_code == 503
    assert httpx.get(f"{stack.url}{REPORT}1").status_code == 303  # joining a live job is fine
    for answer in (first, second):
        job_id = urlsplit(answer.headers["location"]).path.rsplit("/", 1)[1]
        httpx.delete(f"{stack.url}/api/jobs/{job_id}")
    job = accepted(lambda: post(stack.url, {"after": "cap"}), timeout_s=10).json()
    assert wait_for(lambda: httpx.get(f"{stack.url}/api/jobs/{job['id']}").json()["state"] == "done")


async def _ws_status(stack: WebStack, job_id: str) -> int | None:
    """The HTTP status refusing the events upgrade, None when it was accepted."""
    try:
        async with connect(stack.web.events_url(job_id), open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            return None
    except InvalidStatus as exc:
        return int(exc.response.status_code)


def ws_status(stack: WebStack, job_id: str) -> int | None:
    return asyncio.run(asyncio.wait_for(_ws_status(stack, job_id), 15))


def test_not_found_flood_is_throttled_then_a_real_id_works(
    limited_stack: WebStack, other_client: httpx.Client
) -> None:
    url = limited_stack.url
    job = post(url, {"real": 1}).json()
    real = job["id"]
    # each id route spends the same not-found bucket (burst 5): one 404 from each
    assert httpx.get(f"{url}/api/jobs/{random_id()}").status_code == 404
    assert httpx.delete(f"{url}/api/jobs/{random_id()}").status_code == 404
    assert httpx.get(f"{url}/jobs/{random_id()}").status_code == 404
    assert httpx.get(f"{url}/bars", params={"id": random_id()}).status_code == 404
    assert ws_status(limited_stack, random_id()) == 404
    began = time.monotonic()
    with httpx.Client() as client:
        flood = [client.get(f"{url}/api/jobs/{random_id()}") for _ in range(50)]
    refills = int((time.monotonic() - began) * 0.5)  # a loaded machine may refill a token or two
    statuses = [a.status_code for a in flood]
    assert set(statuses) <= {404, 429} and statuses.count(404) <= refills, statuses
    retry = max(assert_429(a) for a in flood if a.status_code == 429)
    # while the bucket is empty, id routes answer 429 before looking the id up
    assert_429(httpx.get(f"{url}/api/jobs/{real}"))
    assert_429(httpx.delete(f"{url}/api/jobs/{real}"))  # and nothing is cancelled
    assert_429(httpx.get(f"{url}/jobs/{real}"))
    assert_429(httpx.get(f"{url}/bars", params={"id": real}))
    assert ws_status(limited_stack, real) == 429
    assert httpx.get(f"{url}/healthz").status_code == 200  # other routes are not throttled
    assert other_client.get(f"{url}/api/jobs/{real}").status_code == 200  # nor other clients
    refused_at = time.monotonic()
    found = wait_for(lambda: httpx.get(f"{url}/api/jobs/{real}").status_code == 200,
                     timeout_s=retry + 2, interval_s=0.1)  # fmt: skip
    assert found and time.monotonic() - refused_at <= retry + 1
    assert wait_for(lambda: httpx.get(f"{url}/api/jobs/{real}").json()["state"] == "done")
    # a found id spends nothing: many lookups of the real id all succeed
    assert all(httpx.get(f"{url}/api/jobs/{real}").status_code == 200 for _ in range(30))
    assert httpx.get(f"{url}/jobs/{real}").status_code == 200
    assert ws_status(limited_stack, real) is None
