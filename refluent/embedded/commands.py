"""``refluent`` commands run as child processes (the demo, benchmarks, end-to-end tests).

    >>> from pathlib import Path
    >>> cmd = RefluentCommand("status", ["status"], env={}, cwd=Path("."))
    >>> cmd.log.name
    'status.log'
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from refluent.embedded.errors import CommandError


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) process ``pid`` has used so far, None once it
    is gone. On a shared machine work per CPU-second says more than per wall second.

        >>> import os
        >>> cpu_seconds(os.getpid()) >= 0
        True
    """
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


@dataclass
class RefluentCommand:
    """One ``refluent <args>`` subprocess with its output in ``<cwd>/<name>.log``; killed and
    started again at will (the log keeps every run unless ``start(fresh_log=True)``).

    Only processes this object started are ever signalled.
    """

    name: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    prefix: list[str] = field(default_factory=list)
    """Words run before the command (``["taskset", "-c", "1"]`` pins it to a core)."""
    started_at: float = 0.0
    """``time.monotonic()`` of the last start."""
    _life_from: int = 0

    @property
    def pid(self) -> int | None:
        """Process id of the last start (None before)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def log(self) -> Path:
        return self.cwd / f"{self.name}.log"

    def start(self, fresh_log: bool = False) -> RefluentCommand:
        """Start the command (a new process each call)."""
        self._life_from = 0 if fresh_log or not self.log.exists() else self.log.stat().st_size
        self.started_at = time.monotonic()
        with self.log.open("wb" if fresh_log else "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                [*self.prefix, sys.executable, "-m", "refluent.cli", *self.args], env=self.env,
                cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        return self

    def output(self, last_chars: int | None = None) -> str:
        """What the command printed (its last ``last_chars`` characters)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-last_chars:] if last_chars else text

    def life_output(self) -> str:
        """What the running (or last) process printed since it started."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as log:
            log.seek(self._life_from)
            return log.read().decode(errors="replace")

    def check_alive(self) -> None:
        """Raises:
            CommandError: the command is not running (it exited on its own).
        """
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise CommandError(self.name, f"exited ({code}) on its own", self.output(3000))

    def kill9(self) -> None:
        """SIGKILL the running command (it must be running) and reap it."""
        self.check_alive()
        assert self.proc is not None  # noqa: S101 - check_alive guarantees it
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def freeze(self) -> None:
        """SIGSTOP the running command: it does nothing until :meth:`thaw` or a kill, so a
        test can make sure work is pending at the moment it then kills it."""
        self.check_alive()
        assert self.proc is not None  # noqa: S101 - check_alive guarantees it
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen command."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def wait(self, timeout: float) -> int:
        """Wait for the command to end on its own; its exit code.

        Raises:
            CommandError: it still ran after ``timeout`` (it is stopped first).
        """
        assert self.proc is not None  # noqa: S101 - start() first
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise CommandError(self.name, f"still ran after {timeout:.0f}s",
                               self.output()) from None

    def terminate(self) -> None:
        """Send SIGTERM if it runs, without waiting (to stop several at once: ``terminate``
        each, then :meth:`stop` each)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.thaw()  # a frozen process does not act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
