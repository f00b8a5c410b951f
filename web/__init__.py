"""jobcast's web server: JSON API, WebSocket progress events, progress and report pages.

``create_app(settings)`` builds the Starlette app; ``python -m web`` (or ``jobcast web``,
both through ``web.server.main``) runs it on uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web.app import create_app, jobcast_lifespan
    from web.settings import Settings

__all__ = ["Settings", "create_app", "jobcast_lifespan"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a pure module such as web.relay does not start Starlette.
    if name in ("create_app", "jobcast_lifespan"):
        from web import app

        return getattr(app, name)
    if name == "Settings":
        from web.settings import Settings

        return Settings
    raise AttributeError(f"module 'web' has no attribute {name!r}")
