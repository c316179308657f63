"""The ``refluent`` child processes the demo starts, on its services and views."""

from __future__ import annotations

import os

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand

VIEWS = "refluent.examples.views"
"""The views module the demo runs."""


def child_env(settings: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    """What a ``refluent`` child process of the demo sets beside this process's environment:
    the demo's services, views and lake namespace, then ``env``."""
    return {"REFLUENT_EMBEDDED__STATE_DIR": str(settings.embedded.state_dir.resolve()),
            "REFLUENT_PROCESSING__VIEWS": VIEWS,
            "REFLUENT_LAKE__NAMESPACE": settings.lake.namespace, **(env or {})}


def spawn(settings: Settings, args: list[str], log_name: str,
          env: dict[str, str] | None = None) -> RefluentCommand:
    """Start ``refluent <args>`` on the demo's services and views, logging to
    ``<state_dir>/logs/<log_name>.log``."""
    full_env = {**os.environ, **child_env(settings, env)}
    logs = settings.embedded.state_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return RefluentCommand(log_name, args, full_env, logs).start()
