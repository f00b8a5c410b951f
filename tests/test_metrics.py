"""Metrics: the pure per-task figures, the core's STATS payload, and a real ``GET /metrics``."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from helpers import ReadyProcess, raw_dealer, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_core import C2, W1, Harness, assert_sent, finish, run_to_assign
from web_fixtures import WebServer

from broker import protocol as p
from broker.addresses import endpoints
from broker.client import Client
from broker.jobs import Job, State
from broker.metrics import MAX_METRIC_TASKS, OTHER_TASK, RUN_BUCKETS_S, WAIT_BUCKETS_S, Histogram, Metrics
from broker.tally import count_states


def job(task: str, state: State, created: float = 0.0, started: float | None = None,
        finished: float | None = None) -> Job:  # fmt: skip
    return Job(id=f"{task}-{created}", task=task, args=b"{}", cache_key="k", created_at=created,
               state=state, started_at=started, finished_at=finished)  # fmt: skip


def test_histogram_buckets_are_upper_bounds_inclusive() -> None:
    hist = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 99.0, -2.0):
        hist.observe(value)
    assert hist.counts == [3, 2, 1] and hist.sum == 107.0


def test_started_observes_the_wait_from_when_the_job_was_due() -> None:
    metrics = Metrics()
    delayed = job("report", State.RUNNING, created=10.0, started=75.0)
    delayed.run_at = 70.0  # due at 70: waited 5 s, not 65
    metrics.started(delayed)
    wait = metrics.tasks["report"].wait_s
    assert wait.sum == 5.0 and sum(wait.counts) == 1


def test_finished_counts_states_and_run_time_of_running_jobs_only() -> None:
    metrics = Metrics()
    metrics.finished(job("a", State.DONE, started=1.0, finished=3.5), was_running=True)
    metrics.finished(job("a", State.FAILED, started=1.0, finished=2.0), was_running=True)
    metrics.finished(job("a", State.CANCELLED, created=1.0, finished=2.0), was_running=False)
    figures = metrics.tasks["a"]
    assert figures.finished == {"done": 1, "failed": 1, "cancelled": 1}
    assert sum(figures.run_s.counts) == 2 and figures.run_s.sum == 3.5


def test_snapshot_adds_live_counts_and_caps_the_task_labels() -> None:
    metrics = Metrics()
    for n in range(MAX_METRIC_TASKS + 5):
        metrics.finished(job(f"t{n}", State.CANCELLED, finished=1.0), was_running=False)
    live = [job("t0", State.QUEUED), job("t0", State.RUNNING), job("new-task", State.QUEUED)]
    snap = metrics.snapshot(count_states(live))
    assert len(snap["tasks"]) == MAX_METRIC_TASKS + 1
    assert snap["tasks"][OTHER_TASK]["cancelled"] == 5 and snap["tasks"][OTHER_TASK]["queued"] == 1
    assert snap["tasks"]["t0"]["queued"] == 1 and snap["tasks"]["t0"]["running"] == 1
    assert snap["wait_buckets_s"] == list(WAIT_BUCKETS_S) and snap["run_buckets_s"] == list(RUN_BUCKETS_S)
    json.dumps(snap)  # JSON-ready


def test_core_sends_metrics_only_when_asked() -> None:
    core = Harness()
    job_id, assign = run_to_assign(core, 0.0)
    finish(core, W1, assign, 2.0)
    plain = assert_sent(core.client(C2, p.Stats(req=1), 3.0), C2, p.Counters)
    assert plain.metrics is None and plain.stats["done"] == 1
    asked = assert_sent(core.client(C2, p.Stats(req=2, metrics=True), 3.0), C2, p.Counters)
    figures = json.loads(asked.metrics)
    assert figures["tasks"]["echo"]["done"] == 1 and figures["tasks"]["echo"]["run_s"]["sum"] == 2.0


def test_stats_with_metrics_round_trips_on_the_wire() -> None:
    for msg in (p.Stats(req=3, metrics=True), p.Counters(req=4, stats={"a": 1}, metrics=b'{"tasks":{}}')):
        assert p.decode(p.encode(msg)) == msg
    assert len(p.encode(p.Counters(req=4, stats={}))) == 3  # no payload frame unless asked


def scrape(web: WebServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{web.url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_endpoint_counts_real_jobs(
    start_broker: Callable[..., ReadyProcess], start_workers: Callable[..., ReadyProcess],
    start_web: Callable[..., WebServer], base_url: str,
) -> None:  # fmt: skip
    start_broker()
    start_workers(2)
    web = start_web()
    with Client(base_url, timeout_s=10) as client:
        for n in range(3):
            assert client.submit("echo", {"n": n}).result(timeout=20) == {"n": n}
        for _ in range(2):
            failing = client.submit("fail", {}, force=True)
            wait_for(lambda job=failing: job.status()["state"] == "failed", timeout_s=20)  # type: ignore[misc]
        cancelled = client.submit("echo", {"cancel": 1}, delay=3600)
        client.cancel(cancelled.id)
        client.submit("echo", {"later": 1}, delay=3600)  # stays queued
        wait_for(lambda: client.stats()["workers"] == 2, timeout_s=10)
    with raw_dealer(endpoints(base_url).clients) as dealer:
        dealer.send_multipart([b"not", b"jobcast"])
        assert dealer.poll(10_000)
    samples = scrape(web)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("jobcast_jobs_finished_total", task="echo", state="done") == 3
    assert value("jobcast_jobs_finished_total", task="echo", state="cancelled") == 1
    assert value("jobcast_jobs_finished_total", task="fail", state="failed") == 2
    assert value("jobcast_jobs_finished_total", task="fail", state="done") == 0
    assert value("jobcast_jobs", task="echo", state="queued") == 1
    assert value("jobcast_jobs", task="echo", state="running") == 0
    assert value("jobcast_job_run_seconds_count", task="echo") == 3
    assert value("jobcast_job_run_seconds_count", task="fail") == 2
    assert value("jobcast_job_run_seconds_bucket", task="echo", le="+Inf") == 3
    assert value("jobcast_job_wait_seconds_count", task="echo") == 3  # the cancelled one never started
    assert value("jobcast_workers") == 2
    assert value("jobcast_broker_invalid_messages_total") >= 1
    assert value("jobcast_broker_submitted_total") == 7
    assert not [name for name, _ in samples if name.startswith(("python_", "process_"))]  # own registry


def test_a_metrics_token_keeps_scrapers_without_it_out(
    start_broker: Callable[..., ReadyProcess], start_web: Callable[..., WebServer]
) -> None:
    start_broker()
    token = "scrape-" + "x" * 24
    web = start_web(env={"JOBCAST_METRICS_TOKEN": token, "JOBCAST_NOT_FOUND_BURST": "3",
                         "JOBCAST_NOT_FOUND_RATE": "0.01"})  # fmt: skip
    bare = httpx.get(f"{web.url}/metrics", timeout=10)
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    good = httpx.get(f"{web.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert good.status_code == 200 and "jobcast_workers" in good.text
    wrong = [
        httpx.get(f"{web.url}/metrics", headers={"Authorization": f"Bearer {token}y"}, timeout=10).status_code
        for _ in range(5)
    ]
    assert wrong[:3] == [401, 401, 401] and wrong[-1] == 429  # guessing is rate-limited
