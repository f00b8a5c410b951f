"""The long-lived runner child of one worker slot: it runs attempts, one at a time, in order.

The agent starts it once (``python -m workers.runner``) and keeps it until it dies or
must be killed (timeout, cancel past its grace): never one process per job. They talk
over two pipes (not stdin/stdout, which task code may use), in ``workers.pipes`` frames::

    agent → runner   {"cmd": "assign", "id", "attempt", "task"} + args JSON
                     {"cmd": "cancel", "id", "attempt"}
                     {"cmd": "return"}      (drop every assignment not started yet)
    runner → agent   {"log": [lines], "id", "attempt"}      (any number, before the outcome)
                     {"outcome": "done", "id", "attempt", "last", "run_s"} + result JSON
                     {"outcome": "failed", "id", "attempt", "last", "error", "retry"}
                     {"outcome": "cancelled", "id", "attempt", "last"}
                     {"returned": [[id, attempt], ...]}      (the answer to a return)

A slot that prefetches writes several assignments ahead; the runner runs them in order,
and ``workers.inbox`` makes a cancel or a return written after them count first. Every
assignment gets exactly one outcome or is listed once as returned.

The runner owns its own zmq context and PUB socket for progress. It exits when the
control pipe closes.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Final

import zmq

from broker.addresses import endpoints
from broker.errors import BadArguments, JobCancelled, PayloadTooLarge, UnknownTask
from broker.jobs import parse_args
from broker.protocol import MAX_RESULT_BYTES
from broker.security import client_keys, configure_client
from workers import registry
from workers.context import Job, LogSink
from workers.inbox import AttemptKey, ControlInbox, ReturnSink
from workers.pipes import write_message

logger = logging.getLogger(__name__)

MAX_TRACEBACK_BYTES: Final = 8 * 1024
MAX_ERROR_MESSAGE_CHARS: Final = 2000
PUB_LINGER_MS: Final = 500
ORPHAN_CHECK_S: Final = 1.0


class BadResult(BadArguments):
    """A task returned a value with no JSON form."""


Outcome = tuple[dict[str, Any], bytes]


def execute(job: Job, args_json: bytes) -> Outcome:
    """Run one attempt and map how it ended to an outcome: the one exception ladder."""
    try:
        spec = registry.lookup(job.task)
        result = encode_result(spec(job, **parse_kwargs(args_json)))
    except JobCancelled:
        return _outcome(job, "cancelled"), b""
    except UnknownTask as exc:
        return _failure(job, exc, retry=False), b""
    except BadArguments as exc:  # bad args, a result too large or not JSON: retrying won't help
        return _failure(job, exc, retry=False), b""
    except Exception as exc:
        return _failure(job, exc, retry=True), b""
    return _outcome(job, "done"), result


def parse_kwargs(args_json: bytes) -> dict[str, Any]:
    """The task's keyword arguments from the job's args bytes (a JSON object)."""
    args = parse_args(args_json) if args_json else {}
    if not isinstance(args, dict):
        raise BadArguments(f"args must be a JSON object (got {type(args).__name__})")
    return args


def encode_result(value: Any) -> bytes:
    """The canonical JSON bytes of a task's return value.

    Raises:
        BadResult: the value has no JSON form.
        PayloadTooLarge: the encoding exceeds MAX_RESULT_BYTES.
    """
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        data = text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise BadResult(f"task must return a JSON-serialisable value: {exc}") from None
    if len(data) > MAX_RESULT_BYTES:
        raise PayloadTooLarge(f"result exceeds {MAX_RESULT_BYTES} bytes (got {len(data)})")
    return data


def _outcome(job: Job, outcome: str) -> dict[str, Any]:
    return {"outcome": outcome, "id": job.id, "attempt": job.attempt, "last": job.flush()}


def _failure(job: Job, exc: BaseException, *, retry: bool) -> dict[str, Any]:
    logger.warning("job %s attempt %d failed: %s: %s", job.id, job.attempt,
                   type(exc).__name__, exc)  # fmt: skip
    return {**_outcome(job, "failed"), "error": error_record(exc), "retry": retry}


def error_record(exc: BaseException) -> dict[str, str]:
    """An exception as data: ``type``, ``message`` and a traceback cut to 8 KiB."""
    text = "".join(traceback.format_exception(exc))
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_TRACEBACK_BYTES:
        tail = data[-(MAX_TRACEBACK_BYTES - 16) :].decode("utf-8", "ignore")
        text = "…(truncated)…\n" + tail
    message = str(exc)[:MAX_ERROR_MESSAGE_CHARS]
    return {"type": type(exc).__name__, "message": message, "traceback": text}


def serve(control_fd: int, result_fd: int, publisher: zmq.Socket[bytes] | None) -> None:
    """Run assignments from the control pipe, in order, until it closes."""
    inbox = ControlInbox(control_fd, on_return=return_writer(result_fd))
    while (assignment := inbox.next_assign()) is not None:
        header, payload, cancelled = assignment
        job_id, attempt = str(header["id"]), int(header["attempt"])
        job = Job(job_id, attempt, task=str(header["task"]), publisher=publisher,
                  cancel_check=functools.partial(inbox.cancelled, (job_id, attempt)),
                  log_sink=log_writer(result_fd, job_id, attempt),
                  quiet=inbox.has_waiting)  # fmt: skip
        if cancelled:  # cancelled while it waited here: it never starts
            write_message(result_fd, _outcome(job, "cancelled"))
            continue
        logger.debug("job %s attempt %d running %s", job.id, job.attempt, job.task)
        began = time.monotonic()
        outcome, result = execute(job, payload)
        outcome["run_s"] = round(time.monotonic() - began, 6)
        write_message(result_fd, outcome, result)


def return_writer(result_fd: int) -> ReturnSink:
    """Where the attempts dropped unstarted by a ``return`` are reported: the result pipe."""

    def write(returned: list[AttemptKey]) -> None:
        write_message(result_fd, {"returned": [list(key) for key in returned]})

    return write


def log_writer(result_fd: int, job_id: str, attempt: int) -> LogSink:
    """Where an attempt's log lines go: the result pipe, ahead of its outcome."""

    def write(lines: list[str]) -> None:
        write_message(result_fd, {"log": lines, "id": job_id, "attempt": attempt})

    return write


def _exit_when_orphaned(parent_pid: int) -> None:
    # A hung task never reads the control pipe, so this is how it notices a dead agent.
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers.runner")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--tasks", action="append", default=[])
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument("--curve-secret", default=None)
    parser.add_argument("--curve-server", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the runner child (started by the agent, never by users)."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the agent, which decides
    logging.basicConfig(
        level=os.environ.get("JOBCAST_LOG", "INFO"), format="%(levelname)s runner %(process)d: %(message)s"
    )
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    registry.load_modules(args.tasks)
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, PUB_LINGER_MS)
    configure_client(publisher, client_keys(args.curve_secret, args.curve_server))
    publisher.connect(endpoints(args.broker).events_in)
    try:
        serve(args.control_fd, args.result_fd, publisher)
    except BrokenPipeError:
        logger.warning("agent went away; runner exiting")
    finally:
        publisher.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
