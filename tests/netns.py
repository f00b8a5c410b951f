"""Hosts as Linux network namespaces on one bridge, for multi-host tests and scripts/bench_hosts.

``Network(["broker", "w1", ...])`` makes one namespace per host, each with a veth ``eth0``
at ``10.231.N.k/24`` whose peer sits on a bridge in this process's namespace at
``10.231.N.254`` (so the test itself can reach every host). ``N`` is picked under a file
lock among the subnets no interface of this box uses yet, so parallel runs never share one.
``host.cut()`` takes the host off the network (its bridge-side link down: packets vanish,
no TCP reset reaches anyone), ``host.restore()`` puts it back.

Names carry this process's pid (``jc<pid hex><2 random hex>``), which lets ``sweep_stale``
remove what a killed run left behind (its namespaces, the processes still in them, its
bridge) without touching other live runs. Needs root and
iproute2; ``unavailable()`` says why not. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

SUBNET_PREFIX: Final = "10.231"
BRIDGE_HOST: Final = 254
LOCK_FILE: Final = "/tmp/jobcast-netns.lock"
IP_TIMEOUT_S: Final = 10.0
ORPHAN_RETRIES: Final = "echo 1 > /proc/sys/net/ipv4/tcp_orphan_retries"
NAME_PATTERN: Final = re.compile(r"^jc([0-9a-f]{6})[0-9a-f]{2}")


class NetnsError(RuntimeError):
    """An ``ip`` command failed (with its stderr)."""


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout. Raises NetnsError with stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no iproute2), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root to test multiple hosts"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    return None


@dataclass
class Host:
    """One host: a namespace, its address, and its bridge-side veth."""

    name: str
    namespace: str
    address: str
    veth: str  # the peer on the bridge, in the creating namespace

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this host (``ip netns exec`` execs in place: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def cut(self) -> None:
        """Take the host off the network: its frames go nowhere, nobody is told."""
        ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        """Put the host back on the network."""
        ip("link", "set", self.veth, "up")


class Network:
    """Namespaces on one private bridge; removed on exit, even after a failure."""

    def __init__(self, names: Sequence[str]) -> None:
        self.token = f"jc{os.getpid():06x}{secrets.token_hex(1)}"
        self.bridge = f"{self.token}b"
        self.names = list(names)
        self.hosts: dict[str, Host] = {}
        self.subnet = ""

    @property
    def gateway(self) -> str:
        """The address of this (the creating) namespace on the bridge."""
        return f"{self.subnet}.{BRIDGE_HOST}"

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Network:
        sweep_stale()
        try:
            with _lock():
                self.subnet = _free_subnet()
                ip("link", "add", self.bridge, "type", "bridge")
                ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for number, name in enumerate(self.names, start=1):
                self.hosts[name] = self._add_host(name, number)
        except BaseException:
            self.close()
            raise
        return self

    def _add_host(self, name: str, number: int) -> Host:
        host = Host(name, f"{self.token}-{name}", f"{self.subnet}.{number}", f"{self.token}h{number}")
        ip("netns", "add", host.namespace)
        self.hosts[name] = host  # from here on, close() removes it
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        # A closed socket still sending to a host that is gone keeps the whole namespace (and
        # its veth) alive in the kernel for minutes after ``ip netns del``; give up quickly.
        ip("netns", "exec", host.namespace, "sh", "-c", ORPHAN_RETRIES)
        return host

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        """Delete every namespace (their veths go with them) and the bridge."""
        for host in self.hosts.values():
            with contextlib.suppress(NetnsError):
                ip("netns", "del", host.namespace)
        self.hosts.clear()
        with contextlib.suppress(NetnsError):
            ip("link", "del", self.bridge)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    with open(LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_subnet() -> str:
    """A ``10.231.N`` that no interface here uses (call under the lock)."""
    used = set(re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", ip("-4", "addr")))
    free = [n for n in range(1, 250) if str(n) not in used]
    if not free:
        raise NetnsError(f"no free {SUBNET_PREFIX}.N.0/24 subnet left")
    return f"{SUBNET_PREFIX}.{secrets.choice(free)}"


def sweep_stale() -> None:
    """Remove namespaces, their processes and bridges left by runs whose process is gone."""
    for namespace in ip("netns", "list").split():
        if _owner_gone(namespace):
            with contextlib.suppress(NetnsError):
                for pid in ip("netns", "pids", namespace).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                ip("netns", "del", namespace)
    for line in ip("-o", "link", "show", "type", "bridge").splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if _owner_gone(name):
            with contextlib.suppress(NetnsError):
                ip("link", "del", name)


def _owner_gone(name: str) -> bool:
    match = NAME_PATTERN.match(name)
    return match is not None and not os.path.exists(f"/proc/{int(match.group(1), 16)}")
