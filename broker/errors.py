"""Exceptions raised by jobcast, shared by the broker, the workers and the web server.

Hierarchy::

    JobcastError
     ├── ProtocolError      a frame sequence that breaks the wire grammar or its bounds
     ├── BadArguments       args with no canonical JSON form (NaN, huge ints, not an object)
     │    └── PayloadTooLarge   args or a result past its size bound
     ├── UnknownTask        no worker offers the task
     ├── UnknownJob         no such job id (never existed, or past its retention)
     ├── BrokerError        the broker refused a request (its error code and message)
     │    ├── StorageFull   the data dir cannot take more writes: submits are refused
     │    └── QueueFull     the broker holds its maximum of live jobs: retry later
     ├── UnsafeStoredData   a stored row that would need unpickling, or a bad data dir
     ├── JobFailed          the job ended ``failed``; carries the error record
     └── JobCancelled       the job ended ``cancelled``
"""

from __future__ import annotations

from typing import Any


class JobcastError(Exception):
    """Base class of every jobcast error."""


class ProtocolError(JobcastError):
    """A message broke the wire grammar or a size bound; the text says which rule."""


class BadArguments(JobcastError, ValueError):
    """Job arguments that have no canonical JSON form."""


class PayloadTooLarge(BadArguments):
    """Arguments or a result larger than their bound."""


class UnknownTask(JobcastError):
    """No worker offers this task."""


class UnknownJob(JobcastError, KeyError):
    """No job has this id (it never existed, or it is past its retention)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown job"


class BrokerError(JobcastError):
    """The broker refused a request; ``code`` is its machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StorageFull(BrokerError):
    """The broker's data dir is full or unwritable; submissions are refused meanwhile."""

    def __init__(self, message: str) -> None:
        super().__init__("storage_full", message)


class QueueFull(BrokerError):
    """The broker holds as many queued and running jobs as it allows; retry later."""

    def __init__(self, message: str) -> None:
        super().__init__("queue_full", message)


class UnsafeStoredData(JobcastError):
    """Stored data jobcast refuses to read (a pickled row) or a data dir it refuses to use."""


class JobFailed(JobcastError):
    """The job ended ``failed``; ``error`` holds ``type``, ``message`` and ``traceback``."""

    def __init__(self, job_id: str, error: dict[str, Any]) -> None:
        super().__init__(f"job {job_id} failed: {error.get('type')}: {error.get('message')}")
        self.job_id = job_id
        self.error = error


class JobCancelled(JobcastError):
    """The job ended ``cancelled``."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


def error_for_code(code: str, message: str) -> JobcastError:
    """Map a broker error code to the exception a client raises."""
    match code:
        case "unknown_job":
            return UnknownJob(message)
        case "unknown_task":
            return UnknownTask(message)
        case "too_large":
            return PayloadTooLarge(message)
        case "bad_args":
            return BadArguments(message)
        case "storage_full":
            return StorageFull(message)
        case "queue_full":
            return QueueFull(message)
        case _:
            return BrokerError(code, message)
