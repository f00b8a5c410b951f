"""``GET /metrics``: the broker's figures in Prometheus text format (prometheus_client).

Each scrape asks the broker once (STATS with metrics) and renders the answer through a
custom collector registered in the app's own ``CollectorRegistry`` (never the global one,
so two apps in one process do not mix and nothing else leaks in). Metrics:

- ``jobcast_jobs{task,state}`` (gauge): queued and running jobs now;
- ``jobcast_jobs_finished_total{task,state}`` (counter): done, failed, cancelled since
  the broker started;
- ``jobcast_job_wait_seconds{task}`` and ``jobcast_job_run_seconds{task}`` (histograms):
  due → started per attempt, started → end per job (``broker.metrics``);
- ``jobcast_workers`` (live worker slots), ``jobcast_workers_idle``,
  ``jobcast_waiting_clients`` (gauges);
- ``jobcast_broker_<counter>_total`` for the broker's counters (``invalid_messages``,
  ``workers_lost``, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from web.auth import bearer, check_guess_rate, count_wrong_guess, token_matches
from web.settings import Settings

SCRAPE_TIMEOUT_S: Final = 5.0
LIVE_STATES: Final = ("queued", "running")
FINAL_STATES: Final = ("done", "failed", "cancelled")
GAUGES: Final = {
    "workers": "live worker slots",
    "idle_workers": "idle worker slots",
    "prefetched": "running jobs held by a slot behind the one it runs (short tasks)",
    "waiting_clients": "clients waiting for a job's end",
}


class BrokerCollector(Collector):
    """Turns the latest figures from the broker into metric families."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        """Every metric family of the figures last fetched."""
        figures = self.figures
        tasks: dict[str, dict[str, Any]] = figures.get("tasks", {})
        yield _jobs(tasks)
        yield _finished(tasks)
        yield _histogram("jobcast_job_wait_seconds", "Time from due to started, per attempt",
                         tasks, "wait_s", figures.get("wait_buckets_s", []))  # fmt: skip
        yield _histogram("jobcast_job_run_seconds", "Run time of finished jobs (last attempt)",
                         tasks, "run_s", figures.get("run_buckets_s", []))  # fmt: skip
        yield from _broker_figures(figures.get("stats", {}))


def _jobs(tasks: dict[str, dict[str, Any]]) -> Metric:
    family = GaugeMetricFamily("jobcast_jobs", "Jobs queued or running now", labels=["task", "state"])
    for task, entry in sorted(tasks.items()):
        for state in LIVE_STATES:
            family.add_metric([task, state], entry.get(state, 0))
    return family


def _finished(tasks: dict[str, dict[str, Any]]) -> Metric:
    family = CounterMetricFamily(
        "jobcast_jobs_finished", "Jobs that reached a final state since the broker started",
        labels=["task", "state"],
    )  # fmt: skip
    for task, entry in sorted(tasks.items()):
        for state in FINAL_STATES:
            family.add_metric([task, state], entry.get(state, 0))
    return family


def _histogram(
    name: str, documentation: str, tasks: dict[str, dict[str, Any]], key: str, bounds: list[float]
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["task"])
    for task, entry in sorted(tasks.items()):
        counts: list[int] = entry[key]["counts"]
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([task], buckets, sum_value=entry[key]["sum"])
    return family


def _broker_figures(stats: dict[str, Any]) -> Iterator[Metric]:
    for key, documentation in GAUGES.items():
        name = "jobcast_workers_idle" if key == "idle_workers" else f"jobcast_{key}"
        yield GaugeMetricFamily(name, documentation, value=stats.get(key, 0))
    counters = {key: value for key, value in stats.items() if key not in GAUGES and key not in LIVE_STATES}
    for key, value in sorted(counters.items()):
        if isinstance(value, int) and not isinstance(value, bool) and key != "epoch":
            yield CounterMetricFamily(f"jobcast_broker_{key}", f"broker counter {key}", value=value)


class MetricsExporter:
    """The app's own registry and collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = BrokerCollector()
        self.registry.register(self.collector)

    def render(self, figures: dict[str, Any]) -> bytes:
        """The Prometheus text for ``figures``."""
        self.collector.figures = figures
        return bytes(generate_latest(self.registry))


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format (503 while the broker does not answer).

    With ``JOBCAST_METRICS_TOKEN`` set, only ``Authorization: Bearer TOKEN`` gets in (401
    otherwise; wrong tokens spend the client's guess bucket, then 429).
    """
    settings: Settings = request.state.settings
    if settings.metrics_token is not None:
        check_guess_rate(request)
        presented = bearer(request.headers.get("authorization"))
        if presented is None or not token_matches(settings.metrics_token, presented):
            if presented is not None:
                count_wrong_guess(request)
            return PlainTextResponse(
                "metrics need Authorization: Bearer TOKEN", 401, headers={"WWW-Authenticate": "Bearer"}
            )
    figures = await asyncio.wait_for(request.state.client.metrics(), SCRAPE_TIMEOUT_S)
    exporter: MetricsExporter = request.state.metrics
    return Response(exporter.render(figures), media_type=CONTENT_TYPE_LATEST)


routes: Final = [Route("/metrics", metrics, methods=["GET"])]
