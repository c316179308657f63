"""The ``refluent`` child processes the demo starts, on its services and views."""

from __future__ import annotations

import os

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand

VIEWS = "refluent.examples.views"
"""The views module the demo runs."""


def spawn(settings: Settings, args: list[str], log_name: str,
          env: dict[str, str] | None = None) -> RefluentCommand:
    """Start ``refluent <args>`` on the demo's services and views, logging to
    ``<state_dir>/logs/<log_name>.log``."""
    full_env = dict(os.environ)
    full_env.update({"REFLUENT_EMBEDDED__STATE_DIR": str(settings.embedded.state_dir.resolve()),
                     "REFLUENT_PROCESSING__VIEWS": VIEWS,
                     "REFLUENT_LAKE__NAMESPACE": settings.lake.namespace, **(env or {})})
    logs = settings.embedded.state_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return RefluentCommand(log_name, args, full_env, logs).start()
