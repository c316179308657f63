"""The local runner: the job is a ``refluent retrain`` process on this machine.

The launcher waits for it (at most ``jobs.local_timeout_s``) and keeps the end of its error
output, so a job that died before it could report (killed, out of memory) is still reported
failed. The process inherits this one's environment (with ``env`` on top) and working
directory, and so its settings.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from refluent.jobs.runners.base import JobSpec, Launched, Runner, retrain_args

if TYPE_CHECKING:
    from refluent.config import Settings

_TAIL = 2000


class LocalRunner(Runner):
    """Runs a job as a child process (see the module).

    Args:
        settings: ``jobs`` settings.
        env: Variables set for the job beside this process's environment.
    """

    name = "local"

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        super().__init__(settings)
        self.env = dict(env or {})

    def command(self, spec: JobSpec) -> list[str]:
        return [sys.executable, "-m", "refluent.cli", *retrain_args(spec)]

    def render(self, spec: JobSpec) -> str:
        return shlex.join(self.command(spec))

    def launch(self, spec: JobSpec) -> Launched:
        timeout = self.settings.jobs.local_timeout_s
        with subprocess.Popen(self.command(spec), stdout=subprocess.DEVNULL,  # noqa: S603
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **self.env}) as proc:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                return Launched(self.name, str(proc.pid), True, False,
                                f"ended after {timeout:g} s (jobs.local_timeout_s)")
        ok = proc.returncode == 0
        detail = "" if ok else f"exit code {proc.returncode}: {(err or '')[-_TAIL:].strip()}"
        return Launched(self.name, str(proc.pid), True, ok, detail, proc.returncode)
