"""The local runner: the job is a ``refluent retrain`` process on this machine.

The launcher waits for it (at most ``jobs.local_timeout_s``) and keeps the end of its error
output, so a job that died before it could report (killed, out of memory) is still reported
failed. The process inherits this one's environment and working directory, and so its
settings.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from refluent.jobs.runners.base import JobSpec, Launched, Runner, retrain_args

_TAIL = 2000


class LocalRunner(Runner):
    """Runs a job as a child process (see the module)."""

    name = "local"

    def command(self, spec: JobSpec) -> list[str]:
        return [sys.executable, "-m", "refluent.cli", *retrain_args(spec)]

    def render(self, spec: JobSpec) -> str:
        return shlex.join(self.command(spec))

    def launch(self, spec: JobSpec) -> Launched:
        timeout = self.settings.jobs.local_timeout_s
        with subprocess.Popen(self.command(spec), stdout=subprocess.DEVNULL,  # noqa: S603
                              stderr=subprocess.PIPE, text=True) as proc:
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
