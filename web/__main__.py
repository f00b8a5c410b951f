"""``python -m web``: run the jobcast web server (see ``web.server.main``)."""

from __future__ import annotations

from web.server import main

raise SystemExit(main())
