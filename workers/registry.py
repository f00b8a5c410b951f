"""The task registry: ``@task`` registers a function under a name, with its defaults.

A task is ``fn(job, **args)``: ``job`` is a ``workers.context.Job`` and ``args`` the
job's JSON object. Workers import the ``--tasks`` modules, which register their tasks as
a side effect, and announce ``options()`` to the broker in their ``Ready`` message.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from broker.errors import BadArguments, JobcastError, UnknownTask
from broker.jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_TTL_S, check_task_name
from broker.periodic import MAX_EVERY_S, MIN_EVERY_S, is_valid_cron, is_valid_timezone

if TYPE_CHECKING:
    from workers.context import Job

logger = logging.getLogger(__name__)

TaskFunction = Callable[..., Any]
F = TypeVar("F", bound=TaskFunction)
DEFAULT_TASK_MODULES: Final = ("workers.demo", "workers.feeds")


class TaskModuleError(JobcastError, ImportError):
    """A ``--tasks`` module could not be imported."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One registered task and its defaults."""

    name: str
    fn: TaskFunction
    ttl_s: float
    timeout_s: float | None
    max_attempts: int
    concurrency: int | None = None
    every_s: float | None = None
    cron: str | None = None
    tz: str | None = None

    def options(self) -> dict[str, Any]:
        """The defaults announced to the broker in ``Ready.options``."""
        scheduling = {"concurrency": self.concurrency, "every_s": self.every_s, "cron": self.cron,
                      "tz": self.tz}  # fmt: skip
        return {"ttl_s": self.ttl_s, "timeout_s": self.timeout_s, "max_attempts": self.max_attempts,
                **{name: value for name, value in scheduling.items() if value is not None}}  # fmt: skip

    def __call__(self, job: Job, **args: Any) -> Any:
        """Run the task function for one attempt."""
        return self.fn(job, **args)


_TASKS: dict[str, TaskSpec] = {}


def task(
    name: str,
    *,
    ttl: float = DEFAULT_TTL_S,
    timeout: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    concurrency: int | None = None,
    every: float | None = None,
    cron: str | None = None,
    tz: str | None = None,
) -> Callable[[F], F]:
    """Register ``fn(job, **args)`` as the task ``name`` (ttl, timeout and every in seconds).

    ``concurrency=N`` runs at most N of its jobs at once across all workers; ``every`` or
    ``cron`` makes the broker submit a run with empty args on that schedule. A cron spec
    is read in UTC, or in the IANA time zone ``tz`` (``tz="Europe/Paris"``, DST followed).

    Raises:
        ValueError: a bad name or option, or the name taken by another function.
    """
    spec_options = _checked_options(name, ttl, timeout, max_attempts)
    limit, every_s, cron, tz = _checked_schedule(name, concurrency, every, cron, tz)

    def register(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@task({name!r}) must decorate a function (got {fn!r})")
        _register(TaskSpec(name, fn, *spec_options, concurrency=limit, every_s=every_s, cron=cron, tz=tz))
        return fn

    return register


def _checked_options(
    name: str, ttl: float, timeout: float | None, max_attempts: int
) -> tuple[float, float | None, int]:
    try:
        check_task_name(name)
    except BadArguments as exc:
        raise ValueError(f"bad task name {name!r}: {exc}") from None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
        raise ValueError(f"task {name!r}: ttl must be a number >= 0 (got {ttl!r})")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ValueError(f"task {name!r}: timeout must be None or > 0 (got {timeout!r})")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"task {name!r}: max_attempts must be an int >= 1 (got {max_attempts!r})")
    return float(ttl), None if timeout is None else float(timeout), max_attempts


def _checked_schedule(
    name: str, concurrency: int | None, every: float | None, cron: str | None, tz: str | None
) -> tuple[int | None, float | None, str | None, str | None]:
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValueError(f"task {name!r}: concurrency must be None or an int >= 1 (got {concurrency!r})")
    if every is not None and cron is not None:
        raise ValueError(f"task {name!r}: give every or cron, not both")
    if every is not None and (
        isinstance(every, bool)
        or not isinstance(every, int | float)
        or not MIN_EVERY_S <= every <= MAX_EVERY_S
    ):
        raise ValueError(
            f"task {name!r}: every must be {MIN_EVERY_S}..{MAX_EVERY_S:g} seconds (got {every!r})"
        )
    if cron is not None and (not isinstance(cron, str) or not is_valid_cron(cron)):
        raise ValueError(f"task {name!r}: cron must be a cron spec like '*/5 * * * *' (got {cron!r})")
    if tz is not None and cron is None:
        raise ValueError(f"task {name!r}: tz is the time zone of a cron spec; give cron too")
    if tz is not None and (not isinstance(tz, str) or not is_valid_timezone(tz)):
        raise ValueError(f"task {name!r}: tz must be an IANA time zone like 'Europe/Paris' (got {tz!r})")
    return concurrency, None if every is None else float(every), cron, tz


def _register(spec: TaskSpec) -> None:
    old = _TASKS.get(spec.name)
    if old is not None and _origin(old.fn) != _origin(spec.fn):
        raise ValueError(f"task {spec.name!r} is already registered by {_origin(old.fn)}")
    _TASKS[spec.name] = spec  # the same function again (a reloaded module) replaces it


def _origin(fn: TaskFunction) -> str:
    module = getattr(fn, "__module__", "?")
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def lookup(name: str) -> TaskSpec:
    """The task registered as ``name``.

    Raises:
        UnknownTask: no such task in this worker.
    """
    try:
        return _TASKS[name]
    except KeyError:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise UnknownTask(f"no task named {name!r} in this worker (known: {known})") from None


def names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_TASKS)


def options() -> dict[str, dict[str, Any]]:
    """``{name: {"ttl_s", "timeout_s", "max_attempts", "concurrency", ...}}`` for ``Ready``."""
    return {name: _TASKS[name].options() for name in sorted(_TASKS)}


def unregister(name: str) -> None:
    """Forget a task (for tests)."""
    _TASKS.pop(name, None)


def load_modules(modules: Iterable[str]) -> list[str]:
    """Import the task modules; return the registered task names.

    Raises:
        TaskModuleError: a module is missing or fails while importing.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            itself = module == missing or module.startswith(missing + ".")
            hint = " (is it on PYTHONPATH?)" if itself else ""
            raise TaskModuleError(f"cannot import task module {module!r}: {exc}{hint}") from exc
        except Exception as exc:
            message = f"task module {module!r} failed to import: {type(exc).__name__}: {exc}"
            raise TaskModuleError(message) from exc
    return names()
