"""Errors of the embedded services, each naming the service and the fix."""

from __future__ import annotations

from pathlib import Path

from refluent.errors import RefluentError


class ServiceError(RefluentError):
    """Root of the embedded-service errors."""


class PortInUseError(ServiceError):
    """The port asked for is taken by another process."""

    def __init__(self, service: str, port: int, setting: str) -> None:
        self.service = service
        self.port = port
        super().__init__(
            f"{service}: port 127.0.0.1:{port} is already in use (fix: free it, pick another with "
            f"{setting}, or set it to 0 to take a free port)"
        )


class ServiceBinaryNotFoundError(ServiceError):
    """The program that runs a service is not installed."""

    def __init__(self, service: str, looked: str, fix: str) -> None:
        self.service = service
        super().__init__(f"{service}: no executable found ({looked}) (fix: {fix})")


class ServiceStartError(ServiceError):
    """A service exited or did not answer its health check in time."""

    def __init__(self, service: str, detail: str, log: Path | None) -> None:
        self.service = service
        tail = ""
        if log is not None and log.exists():
            lines = log.read_text(errors="replace").strip().splitlines()[-5:]
            tail = "; last log lines: " + " | ".join(lines) if lines else ""
        where = f" (log: {log})" if log else ""
        super().__init__(f"{service} did not start: {detail}{where}{tail}")


class ServicesNotRunningError(ServiceError):
    """A command needs a service that is neither configured nor started."""

    def __init__(self, service: str, setting: str, state_dir: Path) -> None:
        self.service = service
        super().__init__(
            f"no {service} address: {setting} is not set and no embedded {service} is recorded "
            f"in {state_dir} (fix: run `refluent up`, or set {setting})"
        )


class ServiceDeadError(ServiceError):
    """A recorded embedded service is no longer running."""

    def __init__(self, service: str, pid: int | None, state_dir: Path) -> None:
        self.service = service
        super().__init__(
            f"the embedded {service} (pid {pid}) recorded in {state_dir} is not running "
            "(fix: `refluent down && refluent up`)"
        )


class CommandError(RefluentError):
    """A ``refluent`` child process exited on its own, or did not end in time."""

    def __init__(self, name: str, detail: str, output: str) -> None:
        self.name = name
        self.output = output
        super().__init__(f"refluent {name} {detail}:\n{output}")
