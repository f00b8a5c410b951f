"""Helpers for scripts/bench: processes ended by PID, RSS, stats, and other processes' CPU.

The "others" figure follows the anchors' idea (shared/anchors/bench/benchlib.py): machine-wide
user+nice+system ticks from /proc/stat, minus the ticks of this benchmark's own process tree
(itself, its live descendants, and reaped ones through cutime/cstime), plus steal.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO: Final = HERE.parent
HZ: Final = os.sysconf("SC_CLK_TCK")


def bench_env() -> dict[str, str]:
    """Environment for jobcast children: the repo and scripts/ importable, quiet logs."""
    path = os.pathsep.join(p for p in [str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "JOBCAST_LOG": "WARNING", "PYTHONWARNINGS": "ignore"}


class Procs:
    """Processes started for one measurement; each is ended by its own PID (TERM, then KILL)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, argv: Sequence[str], ready: str | None = None, timeout: float = 60.0,
              stdin: bool = False) -> subprocess.Popen[str]:
        """Start argv; with ``ready``, wait (bounded) for a stdout line containing it."""
        err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=err, text=True,
                                env=bench_env(), cwd=str(REPO),
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        proc.stderr_file = err  # type: ignore[attr-defined]
        self.started.append(proc)
        if ready is not None:
            line = read_line(proc, timeout)
            while ready not in line:
                line = read_line(proc, timeout)
            proc.ready_line = line.strip()  # type: ignore[attr-defined]
        return proc

    def stop(self, proc: subprocess.Popen[str], grace: float = 10.0) -> None:
        """End one process by its PID and reap it."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(grace)
        for stream in (proc.stdout, proc.stdin, proc.stderr_file):  # type: ignore[attr-defined]
            if stream is not None:
                stream.close()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in reversed(self.started):
            log = proc.stderr_file  # type: ignore[attr-defined]
            if exc_type is not None and proc.poll() is not None and proc.returncode and not log.closed:
                log.seek(0)  # a process stopped earlier has its log closed already: skip it
                tail = log.read()[-2000:].decode(errors="replace")
                print(f"  [{proc.args!r}] exited {proc.returncode}: {tail}", file=sys.stderr)
            self.stop(proc)  # always: a failed section must not leave processes behind
        self.started.clear()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of proc within timeout (raises if it exits or times out)."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"{proc.args!r} printed nothing in {timeout:.0f}s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited ({proc.poll()}) early")
    return line


def status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` style field of /proc/PID/status, in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of pid."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def descendants(pid: int) -> set[int]:
    """pid and all its live descendants."""
    found = {pid}
    for child in children(pid):
        found |= descendants(child)
    return found


def cpu_ticks(pid: int) -> int:
    """utime+stime+cutime+cstime of one process, in clock ticks (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return 0
    return sum(int(x) for x in data[data.rindex(")") + 2:].split()[11:15])


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of pid and its live descendants (own time only, children counted once)."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        total += sum(int(x) for x in data[data.rindex(")") + 2:].split()[11:13])
    return total / HZ


def _machine_ticks() -> list[int]:
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:9]]


class OtherLoad:
    """CPU that processes outside this benchmark's tree took during a block, and steal.

    ``result``: ``other_cores`` and ``steal_cores``, averaged over the block's wall time.
    """

    def __enter__(self) -> OtherLoad:
        self.pids = descendants(os.getpid())
        self.start = {pid: cpu_ticks(pid) for pid in self.pids}
        self.stat = _machine_ticks()
        self.t0 = time.monotonic()
        self.result: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        pids = descendants(os.getpid()) | self.pids
        # A child reaped meanwhile shows up in its parent's cutime/cstime (whole life), so
        # its ticks from before the block are taken off again here.
        ours = sum(cpu_ticks(pid) - self.start.get(pid, 0) for pid in pids)
        stat = _machine_ticks()
        wall = max(1e-6, time.monotonic() - self.t0)
        delta = [b - a for a, b in zip(self.stat, stat, strict=True)]
        busy = delta[0] + delta[1] + delta[2]
        self.result = {"other_cores": max(0, busy - ours) / HZ / wall,
                       "steal_cores": delta[7] / HZ / wall}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of one figure's per-trial values (NaNs dropped)."""
    clean = [v for v in values if v == v]
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators ('—' for NaN)."""
    if value != value:
        return "—"
    return f"{value:,.{digits}f}"


def fmt_range(fig: dict[str, float], digits: int = 0) -> str:
    """'median (min–max)'."""
    if fig["median"] != fig["median"]:
        return "—"
    if fig["min"] == fig["max"]:
        return fmt(fig["median"], digits)
    return f"{fmt(fig['median'], digits)} ({fmt(fig['min'], digits)}–{fmt(fig['max'], digits)})"


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (bounded) until other processes plus steal take under ``threshold`` cores; the
    last 1-second probe's figure."""
    deadline = time.monotonic() + max_wait
    while True:
        with OtherLoad() as probe:
            time.sleep(1.0)
        cores = probe.result["other_cores"] + probe.result["steal_cores"]
        if cores < threshold or time.monotonic() >= deadline:
            return cores
