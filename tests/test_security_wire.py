"""The broker's wire security on real sockets and processes: CURVE + ZAP, binds, junk, modes.

Covers RELIABILITY.md S13 (no off-loopback bind without CURVE), S14 (ZAP allowlist: an
enrolled key is accepted; an unknown key, a wrong server key and a plaintext peer are
refused), S15/Z4 (raw TCP junk and legacy ZMTP/1.0), Z2 (a frame above MAXMSGSIZE) and
S18 (ipc sockets are private to the broker's user).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import zmq
import zmq.auth
from helpers import PYTHON, ReadyProcess, jobcast, raw_dealer, wait_for
from websockets.sync.client import connect as ws_connect
from zmq.utils.monitor import recv_monitor_message

from broker import protocol as p
from broker.client import Client
from broker.errors import UnknownTask
from broker.security import ClientKeys, client_keys, configure_client, create_key_pair

CONTROL_S = 2.0  # a control request on a healthy broker answers well within this


@dataclass(frozen=True)
class KeyFiles:
    """Key files of one test: the broker's pair, an allowlist and three client pairs."""

    broker_secret: str
    broker_public: str
    allow_dir: str
    worker_secret: str
    client_secret: str
    unknown_secret: str  # a valid pair whose public key is not in the allowlist

    def client(self, secret: str | None = None, server: str | None = None) -> ClientKeys:
        keys = client_keys(secret or self.client_secret, server or self.broker_public)
        assert keys is not None
        return keys

    def worker_args(self, secret: str | None = None) -> list[str]:
        return ["--curve-secret", secret or self.worker_secret, "--curve-server", self.broker_public]


def free_base_port() -> int:
    """A base port whose next three ports were free a moment ago (the broker binds four)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base <= 65535 - 3 and all(_port_free(base + i) for i in range(4)):
            return base
    raise RuntimeError("no four consecutive free ports")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture
def keys(tmpdir_short: str) -> KeyFiles:
    """A broker pair, and worker/client pairs enrolled in the allowlist; one pair is not."""
    own, allow = os.path.join(tmpdir_short, "own"), os.path.join(tmpdir_short, "allow")
    os.makedirs(allow)
    broker_public, broker_secret = create_key_pair(own, "broker")
    pairs = {name: create_key_pair(own, name) for name in ("worker", "client", "unknown")}
    for name in ("worker", "client"):
        os.link(pairs[name][0], os.path.join(allow, f"{name}.key"))
    return KeyFiles(broker_secret, broker_public, allow, pairs["worker"][1], pairs["client"][1],
                    pairs["unknown"][1])  # fmt: skip


@pytest.fixture
def tcp_url() -> str:
    """A tcp base URL on 127.0.0.1 with four free ports."""
    return f"tcp://127.0.0.1:{free_base_port()}"


@pytest.fixture
def start_tcp_broker(tmpdir_short: str, part_env: dict[str, str],
                     processes: list[ReadyProcess]) -> Callable[..., ReadyProcess]:  # fmt: skip
    """Start a real broker bound to ``url`` (extra options, e.g. the CURVE ones, appended)."""

    def start(url: str, *extra: str) -> ReadyProcess:
        data = os.path.join(tmpdir_short, "data")
        proc = ReadyProcess(jobcast("broker", "--broker", url, "--data", data, *extra), env=part_env)
        processes.append(proc)
        return proc

    return start


@pytest.fixture
def curve_broker(start_tcp_broker: Callable[..., ReadyProcess], keys: KeyFiles,
                 tcp_url: str) -> Iterator[tuple[ReadyProcess, str]]:  # fmt: skip
    """A CURVE broker bound to 0.0.0.0 (allowed with keys); its URL on 127.0.0.1."""
    port = tcp_url.rsplit(":", 1)[1]
    proc = start_tcp_broker(f"tcp://0.0.0.0:{port}", "--curve-secret", keys.broker_secret,
                            "--curve-allow", keys.allow_dir)  # fmt: skip
    yield proc, tcp_url
    assert not [line for line in proc.stderr_lines if "Traceback" in line], proc.output()


@pytest.fixture
def good_client(curve_broker: tuple[ReadyProcess, str], keys: KeyFiles) -> Iterator[Client]:
    """A client whose key is enrolled, with the broker's real public key."""
    with Client(curve_broker[1], timeout_s=10, curve=keys.client()) as client:
        yield client


def start_tcp_workers(processes: list[ReadyProcess], part_env: dict[str, str], url: str,
                      *extra: str) -> ReadyProcess:  # fmt: skip
    """A one-slot worker pool running the test tasks (ready once its agent heard the broker)."""
    proc = ReadyProcess(jobcast("worker", "--broker", url, "-n", "1", "--tasks", "tasks", *extra),
                        env=part_env)  # fmt: skip
    processes.append(proc)
    return proc


def assert_serves(client: Client) -> None:
    """A control request answers promptly (the broker is alive and serving)."""
    started = time.monotonic()
    client.stats()
    assert time.monotonic() - started < CONTROL_S


def handshake_outcome(sock: zmq.Socket[bytes], endpoint: str, timeout_s: float = 5.0) -> str:
    """Connect ``sock`` to ``endpoint`` and return the first handshake event's name."""
    names = {value: name for name, value in vars(zmq).items()
             if name.startswith("EVENT_HANDSHAKE") and isinstance(value, int)}  # fmt: skip
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + timeout_s
        while monitor.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            event = recv_monitor_message(monitor)["event"]
            if event in names:
                return names[event]
        raise TimeoutError(f"no handshake outcome from {endpoint} in {timeout_s} s")
    finally:
        sock.disable_monitor()
        monitor.close()


# --- S13: where the broker may bind ----------------------------------------------------


def test_off_loopback_bind_without_keys_exits_with_a_clear_message(tmpdir_short: str, tcp_url: str) -> None:
    port = tcp_url.rsplit(":", 1)[1]
    argv = jobcast("broker", "--broker", f"tcp://0.0.0.0:{port}", "--data", f"{tmpdir_short}/d")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCAST_CURVE")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    assert done.returncode == 2
    assert "refusing to bind 0.0.0.0" in done.stderr and "--curve-secret" in done.stderr
    assert "Traceback" not in done.stderr and " ready" not in done.stdout


def test_off_loopback_bind_with_keys_starts(curve_broker: tuple[ReadyProcess, str]) -> None:
    info = json.loads(curve_broker[0].ready_line.split(" ready ", 1)[1])
    assert info["curve"] is True and info["clients"].startswith("tcp://0.0.0.0:")


def test_keys_command_writes_a_pair_with_a_private_secret(tmpdir_short: str) -> None:
    directory = os.path.join(tmpdir_short, "keys")
    done = subprocess.run(jobcast("keys", directory, "--name", "w1"), capture_output=True,
                          text=True, timeout=20)  # fmt: skip
    assert done.returncode == 0, done.stderr
    public, secret = os.path.join(directory, "w1.key"), os.path.join(directory, "w1.key_secret")
    assert public in done.stdout and secret in done.stdout
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    public_key, secret_key = zmq.auth.load_certificate(secret)
    assert secret_key is not None and zmq.auth.load_certificate(public)[0] == public_key
    assert secret_key.decode() not in done.stdout + done.stderr  # no key material printed
    again = subprocess.run(jobcast("keys", directory, "--name", "w1"), capture_output=True,
                           text=True, timeout=20)  # fmt: skip
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


# --- S14: CURVE with a ZAP allowlist ----------------------------------------------------


def test_enrolled_worker_and_client_run_a_job_with_progress(
    curve_broker: tuple[ReadyProcess, str], good_client: Client, keys: KeyFiles,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    start_tcp_workers(processes, part_env, curve_broker[1], *keys.worker_args())
    job = good_client.submit("slow", {"seconds": 1.0, "steps": 10})
    events = list(job.events())  # SUB (CURVE) ← XPUB ← XSUB (CURVE) ← the runner's PUB
    middle = {event["done"] for event in events if event["state"] == "running"} - {0, 10}
    assert len(middle) >= 3, events  # intermediate progress really crossed the CURVE PUB
    assert job.result(timeout=10) == {"steps": 10}
    assert good_client.stats()["workers"] == 1


def test_a_worker_key_with_a_task_grant_runs_only_those_tasks(
    start_tcp_broker: Callable[..., ReadyProcess], keys: KeyFiles, tcp_url: str,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    """S17: ``NAME.tasks`` beside ``NAME.key`` narrows what that worker key may register."""
    with open(os.path.join(keys.allow_dir, "worker.tasks"), "w") as grant:
        grant.write("# this host may only echo\necho\n")
    port = tcp_url.rsplit(":", 1)[1]
    broker = start_tcp_broker(f"tcp://0.0.0.0:{port}", "--curve-secret", keys.broker_secret,
                              "--curve-allow", keys.allow_dir)  # fmt: skip
    start_tcp_workers(processes, part_env, tcp_url, *keys.worker_args())
    with Client(tcp_url, timeout_s=10, curve=keys.client()) as client:
        wait_for(lambda: client.stats()["workers"] == 1, timeout_s=10)
        assert client.submit("echo", {"n": 3}).result(timeout=10) == {"n": 3}
        with pytest.raises(UnknownTask):
            client.submit("slow", {"seconds": 0.1, "steps": 1})  # advertised, not granted
        stats = client.stats()
    assert stats["tasks"] == ["echo"] and stats["refused_tasks"] > 0
    assert any("may not run" in line for line in broker.stderr_lines), broker.output()


def test_a_worker_key_with_a_task_grant_may_not_read_the_event_stream(
    start_tcp_broker: Callable[..., ReadyProcess], keys: KeyFiles, tcp_url: str,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    """The event stream out carries every job's id: a key narrowed to some tasks is kept off
    it (its runner still publishes progress in), an unnarrowed key still reads it."""
    with open(os.path.join(keys.allow_dir, "worker.tasks"), "w") as grant:
        grant.write("slow\n")
    port = tcp_url.rsplit(":", 1)[1]
    start_tcp_broker(f"tcp://0.0.0.0:{port}", "--curve-secret", keys.broker_secret,
                     "--curve-allow", keys.allow_dir)  # fmt: skip
    start_tcp_workers(processes, part_env, tcp_url, *keys.worker_args())
    with Client(tcp_url, timeout_s=10, curve=keys.client()) as client:
        ctx = zmq.Context()
        try:
            outcomes = {}
            for name, secret in (("worker", keys.worker_secret), ("client", keys.client_secret)):
                sub = ctx.socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                configure_client(sub, keys.client(secret))
                try:
                    outcomes[name] = handshake_outcome(sub, client.endpoints.events_out)
                finally:
                    sub.close()
        finally:
            ctx.term()
        assert outcomes == {"worker": "EVENT_HANDSHAKE_FAILED_AUTH", "client": "EVENT_HANDSHAKE_SUCCEEDED"}
        job = client.submit("slow", {"seconds": 1.0, "steps": 10})  # run by the narrowed key
        middle = {event["done"] for event in job.events() if event["state"] == "running"} - {0, 10}
        assert len(middle) >= 3  # its progress still comes in, and out to the client
        assert job.result(timeout=10) == {"steps": 10}


def test_keys_command_writes_a_task_grant(tmpdir_short: str) -> None:
    directory = os.path.join(tmpdir_short, "keys")
    done = subprocess.run(jobcast("keys", directory, "--name", "w2", "--tasks", "report, feeds"),
                          capture_output=True, text=True, timeout=20)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(os.path.join(directory, "w2.tasks")) as grant:
        assert grant.read().split() == ["feeds", "report"]
    empty = subprocess.run(jobcast("keys", directory, "--name", "w3", "--tasks", " , "),
                           capture_output=True, text=True, timeout=20)  # fmt: skip
    assert empty.returncode == 2 and "at least one task" in empty.stderr
    assert not os.path.exists(os.path.join(directory, "w3.key"))  # refused before writing keys


def test_unknown_worker_key_is_refused_and_its_job_never_runs(
    curve_broker: tuple[ReadyProcess, str], good_client: Client, keys: KeyFiles,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    url = curve_broker[1]
    argv = [PYTHON, "-m", "workers.agent_cli", "--broker", url, "--tasks", "tasks",
            *keys.worker_args(keys.unknown_secret)]  # fmt: skip
    agent = ReadyProcess(argv, env=part_env)  # prints its ready line before it connects
    processes.append(agent)
    job = good_client.submit("echo", {"n": 1})
    # the agent hears nothing back and starts its reconnect back-off: ZAP refused it
    wait_for(lambda: any("reconnecting" in line for line in agent.stderr_lines), timeout_s=10)
    stats = good_client.stats()
    assert stats["workers"] == 0 and stats["queued"] == 1
    assert good_client.status(job.id)["state"] == "queued"
    agent.stop()
    start_tcp_workers(processes, part_env, url, *keys.worker_args())
    assert job.result(timeout=10) == {"n": 1}  # an enrolled worker then runs it


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown key", {"EVENT_HANDSHAKE_FAILED_AUTH"}),  # ZAP said no
        ("wrong server key", {"EVENT_HANDSHAKE_FAILED_NO_DETAIL"}),  # the broker can't read HELLO
        # which side notices the mechanism mismatch first is a race
        ("plaintext", {"EVENT_HANDSHAKE_FAILED_PROTOCOL", "EVENT_HANDSHAKE_FAILED_NO_DETAIL"}),
    ],
)
def test_refused_clients_get_no_reply_and_a_good_client_still_works(
    curve_broker: tuple[ReadyProcess, str], good_client: Client, keys: KeyFiles,
    tmpdir_short: str, case: str, expected: set[str],
) -> None:  # fmt: skip
    curves = {
        "unknown key": keys.client(keys.unknown_secret),
        "wrong server key": keys.client(server=create_key_pair(tmpdir_short, "impostor")[0]),
        "plaintext": None,
    }
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    configure_client(dealer, curves[case])
    try:
        assert handshake_outcome(dealer, good_client.endpoints.clients) in expected
        with contextlib.suppress(zmq.Again):  # no handshaken peer may take it at all
            dealer.send_multipart(p.encode(p.Stats(req=1)), zmq.NOBLOCK)
        assert not dealer.poll(1000), f"{case}: the broker answered a refused peer"
    finally:
        dealer.close()
        ctx.term()
    refused = Client(good_client.base_url, timeout_s=1, curve=curves[case])
    with refused, pytest.raises(TimeoutError):  # the public client sees the refusal as a timeout
        refused.stats()
    assert_serves(good_client)
    assert good_client.stats()["invalid_messages"] == 0


def test_web_with_keys_submits_and_streams_progress(
    curve_broker: tuple[ReadyProcess, str], keys: KeyFiles, tmpdir_short: str,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    url = curve_broker[1]
    start_tcp_workers(processes, part_env, url, *keys.worker_args())
    argv = [PYTHON, "-m", "web", "--broker", url, "--data", f"{tmpdir_short}/data", "--port", "0",
            "--curve-secret", keys.client_secret, "--curve-server", keys.broker_public]  # fmt: skip
    web = ReadyProcess(argv, env=part_env)
    processes.append(web)
    base = web.ready_line.split(" ready ", 1)[1].split()[0]
    reply = httpx.post(f"{base}/api/jobs", json={"task": "slow", "args": {"seconds": 1.0}}, timeout=10)
    assert reply.status_code == 202, reply.text
    ws_url = "ws" + base.removeprefix("http") + f"/api/jobs/{reply.json()['id']}/events"
    with ws_connect(ws_url, open_timeout=10) as ws:  # relay SUB and AsyncClient, both CURVE
        messages = [json.loads(message) for message in ws]
    assert messages[-1]["state"] == "done"
    assert len({m["done"] for m in messages if m["state"] == "running"} - {0, 10}) >= 3, messages


# --- Z4 / S15: raw TCP junk ---------------------------------------------------------------


def test_raw_tcp_junk_leaves_a_plaintext_broker_serving(
    start_tcp_broker: Callable[..., ReadyProcess], tcp_url: str,
    processes: list[ReadyProcess], part_env: dict[str, str],
) -> None:  # fmt: skip
    broker = start_tcp_broker(tcp_url)
    start_tcp_workers(processes, part_env, tcp_url)
    host, port = "127.0.0.1", int(tcp_url.rsplit(":", 1)[1])
    with Client(tcp_url, timeout_s=10) as client:
        before = client.stats()["invalid_messages"]
        junk = [socket.create_connection((host, port + i % 4)) for i in range(200)]  # silent
        try:
            for i in range(10):
                noisy = socket.create_connection((host, port + i % 4))
                junk.append(noisy)
                noisy.sendall(os.urandom(512))
            legacy = socket.create_connection((host, port))  # the clients ROUTER
            junk.append(legacy)
            legacy.sendall(b"\x01\x00\x06\x00HELLO")  # ZMTP/1.0: one frame, b"HELLO"
            wait_for(lambda: client.stats()["invalid_messages"] > before, timeout_s=5)
            started = time.monotonic()
            assert client.submit("echo", {"after": "junk"}).result(timeout=5) == {"after": "junk"}
            assert time.monotonic() - started < 1.0
        finally:
            for sock in junk:
                sock.close()
        assert_serves(client)
    assert not [line for line in broker.stderr_lines if "Traceback" in line], broker.output()


def test_legacy_zmtp_is_closed_and_delivers_nothing_with_curve(good_client: Client) -> None:
    before = good_client.stats()["invalid_messages"]
    port = int(good_client.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as legacy:
        legacy.sendall(b"\x01\x00\x06\x00HELLO")
        received = b""
        while chunk := legacy.recv(64):  # closed by the broker, not left open (else a timeout)
            received += chunk
        assert received == b"" or received.startswith(b"\xff"), received  # at most its greeting
    assert_serves(good_client)
    assert good_client.stats()["invalid_messages"] == before


# --- Z2: a frame above MAXMSGSIZE -----------------------------------------------------------


def test_frame_above_max_message_size_leaves_the_broker_healthy(
    client: Client, start_workers: Callable[..., ReadyProcess]
) -> None:
    start_workers(1)
    with raw_dealer(client.endpoints.clients) as raw:
        oversized = b"x" * (p.MAX_ARGS_BYTES + p.MAX_HEADER_BYTES + 1)  # the clients' MAXMSGSIZE
        raw.send_multipart([p.TAG, b"SUBMIT", b"{}", oversized])
        assert not raw.poll(500)  # libzmq drops the peer; nothing reaches the broker
    assert_serves(client)
    assert client.stats()["invalid_messages"] == 0
    assert client.submit("echo", {"after": "big"}).result(timeout=10) == {"after": "big"}


# --- S18: ipc sockets are private -------------------------------------------------------------


def test_ipc_sockets_are_private_to_the_broker_user(
    tmpdir_short: str, part_env: dict[str, str], processes: list[ReadyProcess]
) -> None:
    directory = os.path.join(tmpdir_short, "sockets")  # the broker creates it
    url = f"ipc://{directory}/jc"
    proc = ReadyProcess(jobcast("broker", "--broker", url, "--data", f"{tmpdir_short}/data"),
                        env=part_env)  # fmt: skip
    processes.append(proc)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    names = sorted(os.listdir(directory))
    assert names == ["jc.clients", "jc.events-in", "jc.events-out", "jc.workers"]
    for name in names:
        mode = os.stat(os.path.join(directory, name)).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0, (name, oct(mode))
    with Client(url, timeout_s=10) as client:
        assert_serves(client)
