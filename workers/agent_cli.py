"""One worker slot's command line: ``python -m workers.agent_cli --broker URL --tasks MODULE``.

The pool (``jobcast worker``) starts one such process per slot, with ``--notify-fd`` for
the pipe on which the agent says ``connected``; run by hand, the agent prints a ready
line instead. Bad settings (a prefetch out of range, a broker URL that is no URL, a task
module that does not import, bad CURVE key files) exit with code 2 and one line on
stderr, before anything starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from broker.addresses import broker_url, endpoints
from broker.security import client_keys
from broker.workforce import MAX_PREFETCH  # the broker's own bound on what a slot holds
from workers import registry
from workers.agent import DEFAULT_PREFETCH, WARM_GRACE_S, Agent


def check_prefetch(prefetch: int) -> None:
    """Raises ValueError unless 1 <= prefetch <= MAX_PREFETCH."""
    if not 1 <= prefetch <= MAX_PREFETCH:
        raise ValueError(f"prefetch must be 1-{MAX_PREFETCH} (got {prefetch})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers.agent_cli")
    parser.add_argument("--broker", default=None, help="broker base URL ($JOBCAST_BROKER)")
    parser.add_argument("--tasks", action="append", default=[], help="task module (repeat)")
    parser.add_argument("--grace-s", type=float, default=WARM_GRACE_S)
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH,
                        help=f"attempts held at once, 1-{MAX_PREFETCH} (short tasks only)")  # fmt: skip
    parser.add_argument("--notify-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--curve-secret", default=None, help="own CURVE key pair file")
    parser.add_argument("--curve-server", default=None, help="the broker's public key file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one worker slot (``python -m workers.agent_cli --broker URL --tasks MODULE``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("JOBCAST_LOG", "INFO"), format="%(levelname)s agent %(process)d: %(message)s"
    )
    modules = args.tasks or list(registry.DEFAULT_TASK_MODULES)
    try:
        check_prefetch(args.prefetch)
        url = broker_url(args.broker)
        endpoints(url)
        registry.load_modules(modules)
        curve = client_keys(args.curve_secret, args.curve_server)
    except (ValueError, ImportError) as exc:
        sys.stderr.write(f"jobcast agent: {exc}\n")
        return 2
    agent = Agent(url, modules, grace_s=args.grace_s, notify_fd=args.notify_fd, curve=curve,
                  prefetch=args.prefetch)  # fmt: skip
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
