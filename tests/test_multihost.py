"""Past one box: hosts as Linux network namespaces on a bridge (tests/netns.py), CURVE on tcp.

Four hosts: ``broker`` (the broker, and web A reading the broker's data dir: the fast
path), ``w1`` and ``w2`` (a worker pool of 2 slots each), ``web`` (web B, whose data dir
does not exist on its host: everything comes over the wire). This process reaches them all
through the bridge, like a browser or a client on the LAN. Skipped where namespaces cannot
be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from helpers import PYTHON, ReadyProcess, jobcast, pid_alive, wait_for
from netns import NetnsError, Network, ip, sweep_stale, unavailable
from web_fixtures import WEB_TEST_ENV
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from broker.client import Client
from broker.security import ClientKeys, client_keys, create_key_pair

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
HOSTS = ("broker", "w1", "w2", "web")
BROKER_PORT = 5555  # every host has its own network stack: fixed ports cannot collide
WEB_PORT = 8000
HEARTBEAT_S = "0.25"  # a cut-off slot is declared dead after 3 silent intervals
FINAL = {"done", "failed", "cancelled"}


@dataclass
class Cluster:
    """The running hosts and how to reach them from this process."""

    net: Network
    tmp: str
    broker_url: str
    keys: ClientKeys
    web_a: str = ""
    web_b: str = ""
    procs: dict[str, ReadyProcess] = field(default_factory=dict)

    def client(self) -> Client:
        """A CURVE client with an enrolled key (this process is one more LAN host)."""
        return Client(self.broker_url, timeout_s=10, curve=self.keys)

    def ws(self, web: str, job_id: str, after: int | None = None) -> ClientConnection:
        """A WebSocket on a web process's events of ``job_id``."""
        query = "" if after is None else f"?after={after}"
        return connect(f"ws{web.removeprefix('http')}/api/jobs/{job_id}/events{query}", open_timeout=10)


def _keys(tmp: str) -> dict[str, str]:
    """A broker pair and one enrolled pair per host (and for this test process)."""
    own, allow = os.path.join(tmp, "keys"), os.path.join(tmp, "allow")
    os.makedirs(allow, mode=0o700)
    files = {"broker_public": create_key_pair(own, "broker")[0]}
    files["broker_secret"] = files["broker_public"] + "_secret"
    for name in (*HOSTS, "tester"):
        public, secret = create_key_pair(own, f"host-{name}")
        os.link(public, os.path.join(allow, f"{name}.key"))
        files[name] = secret
    files["allow"] = allow
    return files


def _env(host: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "JOBCAST_HEARTBEAT_S": HEARTBEAT_S, "JOBCAST_TEST_HOST": host,
            **WEB_TEST_ENV}  # fmt: skip


def _start(cluster: Cluster, name: str, host: str, argv: list[str]) -> ReadyProcess:
    proc = ReadyProcess(cluster.net[host].argv(argv), env=_env(host), ready_timeout_s=30)
    cluster.procs[name] = proc
    return proc


def _web(cluster: Cluster, name: str, host: str, data: str, secret: str, server: str) -> str:
    address = cluster.net[host].address
    argv = [PYTHON, "-m", "web", "--broker", cluster.broker_url, "--data", data, "--host", address,
            "--port", str(WEB_PORT), "--curve-secret", secret, "--curve-server", server]  # fmt: skip
    proc = _start(cluster, name, host, argv)
    url = proc.ready_line.split(" ready ", 1)[1].split()[0]
    wait_for(lambda: _healthy(url), timeout_s=20)
    return url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _start_all(cluster: Cluster, files: dict[str, str]) -> None:
    curve = ["--curve-server", files["broker_public"]]
    data = os.path.join(cluster.tmp, "data")
    _start(cluster, "broker", "broker",
           jobcast("broker", "--broker", cluster.broker_url, "--data", data,
                   "--curve-secret", files["broker_secret"], "--curve-allow", files["allow"]))  # fmt: skip
    for host in ("w1", "w2"):
        _start(cluster, host, host,
               jobcast("worker", "--broker", cluster.broker_url, "-n", "2", "--tasks", "host_tasks",
                       "--curve-secret", files[host], *curve))  # fmt: skip
    cluster.web_a = _web(cluster, "web_a", "broker", data, files["broker"], files["broker_public"])
    absent = os.path.join(cluster.tmp, "not-on-this-host", "data")
    cluster.web_b = _web(cluster, "web_b", "web", absent, files["web"], files["broker_public"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Four hosts, a CURVE broker, two worker hosts and two web processes; all removed after."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tempfile.mkdtemp(prefix="jc-mh-")
    try:
        with Network(HOSTS) as net:
            files = _keys(tmp)
            keys = client_keys(files["tester"], files["broker_public"])
            assert keys is not None
            url = f"tcp://{net['broker'].address}:{BROKER_PORT}"
            running = Cluster(net, tmp, url, keys)
            try:
                _start_all(running, files)
                yield running
            finally:
                for proc in reversed(running.procs.values()):
                    proc.stop()
    except NetnsError as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_until(ws: ClientConnection, predicate: Any, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Messages until one satisfies ``predicate`` or the server closes."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            messages.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
            if predicate(messages[-1]):
                break
    except ConnectionClosed:
        pass
    return messages


def test_workers_on_two_hosts_take_jobs_over_curve(cluster: Cluster) -> None:
    ready = json.loads(cluster.procs["broker"].ready_line.split(" ready ", 1)[1])
    assert ready["curve"] is True and ready["workers"] == f"tcp://{cluster.net['broker'].address}:5556"
    with cluster.client() as client:
        assert client.stats()["workers"] == 4  # 2 slots on each worker host
        results = client.map("where", [{"i": i} for i in range(24)], timeout=30)
    assert {result["host"] for result in results} == {"w1", "w2"}  # least recently used first


def test_a_job_started_on_one_web_is_watched_from_another(cluster: Cluster) -> None:
    gate = os.path.join(cluster.tmp, "gate")
    started = httpx.post(f"{cluster.web_a}/api/jobs",
                         json={"task": "gated", "args": {"gate": gate, "steps": 3}}, timeout=10)  # fmt: skip
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]

    with cluster.ws(cluster.web_a, job_id) as ws:  # web A relays the first half, then we leave
        first = read_until(ws, lambda m: m["done"] >= 3)
    assert first[-1]["done"] == 3 and first[-1]["state"] == "running", first
    last_seq = first[-1]["seq"]

    with cluster.ws(cluster.web_b, job_id, after=last_seq) as ws:  # a different web, another host
        # open: web B has subscribed and found nothing newer than last_seq, so it sends nothing
        # yet; only now may the second half run, and web B must push it live
        open(gate, "w").close()
        rest = read_until(ws, lambda m: False)  # until web B closes, after the final state
    assert ws.close_code == 1000

    seqs = [m["seq"] for m in rest]
    assert seqs and seqs[0] > last_seq and seqs == sorted(set(seqs)), (last_seq, seqs)  # no repeat
    assert [m for m in rest if m["state"] == "running" and m["done"] > 3], rest  # pushed by web B
    assert rest[-1]["state"] == "done" and rest[-1]["done"] == rest[-1]["total"] == 6

    view = httpx.get(f"{cluster.web_b}/api/jobs/{job_id}", timeout=10).json()
    assert view["state"] == "done" and view["result"]["steps"] == 6  # the result, over the wire


def test_a_web_without_the_data_dir_serves_cached_reports_from_the_broker(cluster: Cluster) -> None:
    first = httpx.get(f"{cluster.web_b}/reports/report_on?region=nordics", timeout=10)
    assert first.status_code == 303  # not cached yet: submitted, sent to the progress page
    job_id = first.headers["location"].split("/jobs/", 1)[1].split("?", 1)[0]
    with cluster.client() as client:
        client.result(job_id, timeout=20)
    for web in (cluster.web_b, cluster.web_a):  # B asks the broker; A reads the data dir
        page = httpx.get(f"{web}/reports/report_on?region=nordics", timeout=10)
        assert page.status_code == 200 and "Cached result." in page.text and "nordics" in page.text
    errors = [line for line in cluster.procs["web_b"].stderr_lines if "Traceback" in line]
    assert not errors, cluster.procs["web_b"].output()


def test_a_worker_host_cut_off_mid_job_finishes_on_the_other(cluster: Cluster) -> None:
    with cluster.client() as client:
        stale_before = client.stats()["stale_messages"]
        job = client.submit("where_slow", {"seconds": 3.0, "steps": 30})
        running = wait_for(lambda: _running_on(client, job.id), timeout_s=20)
        lost, other = running, ({"w1", "w2"} - {running}).pop()
        cluster.net[lost].cut()
        try:
            result = job.result(timeout=30)
            view = client.status(job.id)
            assert result["host"] == other and view["attempts"] == 2, view
            assert view["state"] == "done"
        finally:
            cluster.net[lost].restore()
        # back on the network, the lost host's late result for attempt 1 is fenced off
        wait_for(lambda: client.stats()["stale_messages"] > stale_before, timeout_s=30)
        assert client.status(job.id)["result"]["host"] == other
        wait_for(lambda: client.stats()["workers"] == 4, timeout_s=30)  # and it serves again


def _running_on(client: Client, job_id: str) -> str | None:
    view = client.status(job_id)
    message = str(view.get("message") or "")
    if view["state"] == "running" and message.startswith("on "):
        return message.removeprefix("on ")
    return None


SWEEP_CHILD = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from netns import Network
net = Network(["a"]).__enter__()
sleeper = subprocess.Popen(net["a"].argv(["sleep", "60"]), start_new_session=True)
print(net["a"].namespace, net.bridge, sleeper.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_run_leaves_nothing_behind_once_the_next_run_sweeps() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    run = subprocess.Popen([PYTHON, "-c", SWEEP_CHILD, TESTS_DIR], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    namespace, bridge, sleeper = run.stdout.readline().split()
    run.kill()  # SIGKILL: no cleanup of its own, its sleeper stays in the namespace
    run.wait(timeout=10)
    run.stdout.close()
    assert namespace in ip("netns", "list") and pid_alive(int(sleeper))
    sweep_stale()
    assert namespace not in ip("netns", "list")
    assert bridge not in ip("-o", "link", "show")
    wait_for(lambda: not pid_alive(int(sleeper)), timeout_s=10)
