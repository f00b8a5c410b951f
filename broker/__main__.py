"""``python -m broker``: run the broker (same as ``jobcast broker``)."""

import sys

from broker.cli import main

raise SystemExit(main(["broker", *sys.argv[1:]]))
