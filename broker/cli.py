"""The ``jobcast`` command line: up, broker, worker, web, keys, submit, status, cancel, stats,
failed, retry, pause, resume."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from broker.addresses import broker_url
from broker.errors import JobCancelled, JobcastError, JobFailed

if TYPE_CHECKING:
    from broker.client import Client

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    """Run one ``jobcast`` subcommand; return its exit code."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in ("worker", "web", "up"):
        return _delegate(args_in[0], args_in[1:])
    parser = _parser()
    args = parser.parse_args(args_in)
    logging.basicConfig(
        level=os.environ.get("JOBCAST_LOG", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (JobcastError, ValueError, TimeoutError) as exc:
        print(f"jobcast: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_JOB_FAILED


def _delegate(command: str, argv: list[str]) -> int:
    # imported lazily: the broker package never depends on workers or web at import time
    if command == "worker":
        from workers.pool import main as worker_main

        return int(worker_main(argv))
    if command == "web":
        from web.server import main as web_main

        return int(web_main(argv))
    from broker.supervisor import main as up_main

    return up_main(argv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobcast", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name in ("up", "worker", "web"):
        commands.add_parser(name, help=f"run {name} (see jobcast {name} --help)")

    run_broker = _command(commands, "broker", "run the broker", _broker)
    run_broker.add_argument(
        "--data",
        default=os.environ.get("JOBCAST_DATA", ".jobcast"),
        help="data dir for results (default $JOBCAST_DATA or ./.jobcast)",
    )
    run_broker.add_argument(
        "--curve-allow",
        default=None,
        metavar="DIR",
        help="directory of allowed client public .key files (default $JOBCAST_CURVE_ALLOW)",
    )

    keys = commands.add_parser("keys", help="write a CURVE key pair (for the broker or a worker)")
    keys.add_argument("directory", metavar="DIR")
    keys.add_argument("--name", default=socket.gethostname(), help="file name (default: host name)")
    keys.add_argument("--tasks", default=None, metavar="T1,T2",
                      help="write NAME.tasks too: the only tasks this worker key may register")  # fmt: skip
    keys.set_defaults(run=_keys)

    submit = _command(commands, "submit", "submit a job and print its id", _submit)
    submit.add_argument("task")
    submit.add_argument(
        "params",
        nargs="*",
        metavar="key=value",
        help="task arguments; values are JSON when they parse, else strings",
    )
    submit.add_argument("--wait", action="store_true", help="wait and print the result")
    submit.add_argument("--json", action="store_true", help="print JSON")
    submit.add_argument("--force", action="store_true", help="bypass the result cache")
    submit.add_argument("--ttl", type=float, help="seconds to cache the result (0: never)")
    submit.add_argument("--priority", choices=("high", "normal", "low"), default="normal")
    submit.add_argument("--delay", type=float, default=0.0, help="seconds before it may run")
    submit.add_argument("--scope", default="", help="cache scope, e.g. a tenant")
    submit.add_argument("--timeout", type=float, help="seconds to wait with --wait")
    stats = _command(commands, "stats", "print queues, workers and counters", _stats)
    stats.add_argument("--json", action="store_true", help="print JSON")

    failed = _command(commands, "failed", "list failed jobs, newest first, with their errors", _failed)
    failed.add_argument("--task", default=None, help="only this task's jobs")
    failed.add_argument("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
    failed.add_argument("--json", action="store_true", help="print JSON")
    for name, helptext, run in (
        ("status", "print a job's state", _status),
        ("cancel", "cancel a job", _cancel),
        ("retry", "re-submit a failed or cancelled job; print the new id", _retry),
    ):
        cmd = _command(commands, name, helptext, run)
        cmd.add_argument("job_id")
        cmd.add_argument("--json", action="store_true", help="print JSON")
    for name, helptext, run in (
        ("pause", "stop dispatching a task's jobs (they stay queued)", _pause),
        ("resume", "dispatch a paused task's jobs again", _pause),
    ):
        cmd = _command(commands, name, helptext, run)
        cmd.add_argument("task")
        cmd.add_argument("--json", action="store_true", help="print JSON")
        cmd.set_defaults(pausing=name == "pause")
    to_broker = [commands.choices[name] for name in ("status", "cancel", "retry", "pause", "resume")]
    for cmd in (submit, stats, failed, *to_broker):
        cmd.add_argument(
            "--curve-server",
            default=None,
            metavar="FILE",
            help="the broker's public .key file (default $JOBCAST_CURVE_SERVER)",
        )
    return parser


def _command(commands: Any, name: str, helptext: str, run: Any) -> argparse.ArgumentParser:
    cmd: argparse.ArgumentParser = commands.add_parser(name, help=helptext)
    cmd.add_argument(
        "--broker", default=None, help="broker base URL (default $JOBCAST_BROKER or tcp://127.0.0.1:5555)"
    )
    cmd.add_argument(
        "--curve-secret",
        default=None,
        metavar="FILE",
        help="own CURVE key pair (.key_secret) for an off-loopback broker ($JOBCAST_CURVE_SECRET)",
    )
    cmd.set_defaults(run=run)
    return cmd


def _keys(args: argparse.Namespace) -> int:
    from broker.security import create_key_pair
    from broker.task_grants import parse_task_list, write_task_grant

    tasks = parse_task_list(args.tasks) if args.tasks is not None else None
    if tasks is not None and not tasks:
        raise ValueError("--tasks needs at least one task name")
    try:
        public_file, secret_file = create_key_pair(args.directory, args.name)
        if tasks:
            grant = write_task_grant(public_file, tasks)
            print(f"task grant: {grant}  (copy it beside the .key in the broker's --curve-allow dir)")
    except OSError as exc:
        raise ValueError(f"cannot write keys into {args.directory}: {exc.strerror}") from None
    print(f"public key: {public_file}  (share it: enrol a worker or client in the broker's "
          "--curve-allow dir; give a broker's to its peers as --curve-server)")  # fmt: skip
    print(f"secret key: {secret_file}  (mode 0600; keep it on this host, pass it as --curve-secret)")
    return EXIT_OK


def _client(args: argparse.Namespace) -> Client:
    from broker.client import Client
    from broker.security import client_keys

    return Client(args.broker, curve=client_keys(args.curve_secret, args.curve_server))


def _broker(args: argparse.Namespace) -> int:
    from broker.security import server_keys
    from broker.server import BrokerServer

    curve = server_keys(args.curve_secret, args.curve_allow)
    server = BrokerServer(broker_url(args.broker), args.data, curve)
    return server.run(on_ready=lambda line: print(line, flush=True))


def _submit(args: argparse.Namespace) -> int:
    from broker.terminal import follow

    params = dict(_parse_param(item) for item in args.params)
    with _client(args) as client:
        job = client.submit(
            args.task,
            params,
            force=args.force,
            ttl=args.ttl,
            priority=args.priority,
            delay=args.delay,
            scope=args.scope,
        )
        if not args.wait:
            print(json.dumps(job.view) if args.json else job.id)
            return EXIT_OK
        if not args.json:
            print(job.id, file=sys.stderr)
        follow(client, job.id, show_bar=sys.stderr.isatty() and not args.json)
        try:
            result = job.result(timeout=args.timeout)
        except (JobFailed, JobCancelled) as exc:
            print(f"jobcast: {exc}", file=sys.stderr)
            if isinstance(exc, JobFailed) and exc.error.get("traceback"):
                print(exc.error["traceback"], file=sys.stderr)
            return EXIT_JOB_FAILED
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK


def _parse_param(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"arguments are key=value (got {item!r})")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_job(client.status(args.job_id), args.json)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_job(client.cancel(args.job_id), args.json)
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.retry(args.job_id)
    print(json.dumps(job.view) if args.json else job.id)
    return EXIT_OK


def _failed(args: argparse.Namespace) -> int:
    from broker.terminal import failure_line

    with _client(args) as client:
        views = client.jobs(state="failed", task=args.task, limit=args.limit)
    if args.json:
        print(json.dumps(views))
    else:
        for view in views:
            print(failure_line(view))
    return EXIT_OK


def _pause(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.pause(args.task) if args.pausing else client.resume(args.task)
    if args.json:
        print(json.dumps(reply))
    else:
        state = "paused" if args.pausing else "resumed"
        paused = ", ".join(reply["paused"]) or "none"
        print(f"{args.task} {state} ({reply['queued']} queued); paused tasks: {paused}")
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.stats()
    if args.json:
        print(json.dumps(stats))
    else:
        for key, value in stats.items():
            print(f"{key:>18}  {value}")
    return EXIT_OK


def _print_job(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view))
        return
    print(
        f"{view['id']}  {view['task']}  {view['state']}  {view['done']}/{view['total']}"
        f"  attempts {view['attempts']}  {view['message']}"
    )
    if view.get("error"):
        print(f"error: {view['error'].get('type')}: {view['error'].get('message')}")


if __name__ == "__main__":
    raise SystemExit(main())
