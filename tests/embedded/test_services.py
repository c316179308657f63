"""`up`, `status` and `down` of the embedded services, and their failure messages."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from refluent.config import Settings
from refluent.embedded import services as emb
from refluent.embedded.errors import (
    PortInUseError,
    ServiceBinaryNotFoundError,
    ServiceDeadError,
    ServicesNotRunningError,
)
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.integration


def _state(tmp_path: Path, **embedded: object) -> Settings:
    return Settings(embedded={"state_dir": tmp_path / "state", **embedded})


def test_up_status_down__starts_records_and_leaves_nothing_running(tmp_path: Path) -> None:
    settings = _state(tmp_path)
    recorded = emb.up(settings)
    pids = [r.pid for r in recorded.values() if r.pid]
    try:
        assert len(pids) == 2
        assert all(emb.pid_runs(p) for p in pids)
        assert {s.name: s.healthy for s in emb.status(settings)} == {
            "broker": True, "redis": True, "lake": True}
        ends = emb.resolve_endpoints(settings)
        assert ends.bootstrap_servers == recorded["broker"].address
        assert ends.catalog_uri.startswith("sqlite:///")
        again = emb.up(settings)  # idempotent: keeps the running ones
        assert again["broker"].pid == recorded["broker"].pid
    finally:
        stopped = emb.down(settings)
    assert sorted(pid for _, pid, _ in stopped) == sorted(pids)
    assert all(ok for _, _, ok in stopped)
    assert not any(emb.pid_runs(p) for p in pids)
    assert not (tmp_path / "state" / emb.STATE_FILE).exists()
    with pytest.raises(ServicesNotRunningError, match="refluent up"):
        emb.resolve_bootstrap(settings)


def test_taken_port__names_port_and_fix(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"{port}.*REFLUENT_EMBEDDED__BROKER_PORT"):
            emb.up(_state(tmp_path, broker_port=port))
    assert not (tmp_path / "state" / emb.STATE_FILE).exists()


def test_missing_binary__names_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ServiceBinaryNotFoundError, match="REFLUENT_EMBEDDED__REDIS_BIN"):
        emb.up(_state(tmp_path, redis_bin=tmp_path / "no-redis"))
    monkeypatch.setattr(emb.shutil, "which", lambda name: None)
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists",
                        lambda self: "redis-server" not in str(self) and real_exists(self))
    with pytest.raises(ServiceBinaryNotFoundError, match="apt-get install redis-server"):
        emb.find_redis_bin()


def test_failed_start__stops_what_it_started(tmp_path: Path) -> None:
    settings = _state(tmp_path, redis_bin=tmp_path / "no-redis")
    with pytest.raises(ServiceBinaryNotFoundError):
        emb.up(settings)
    assert emb.load_state(tmp_path / "state") == {}
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _is_our_broker(int(p),
                                                                                   tmp_path)]
    assert leftovers == []


def _is_our_broker(pid: int, tmp_path: Path) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd.startswith(str(tmp_path)) and emb.pid_runs(pid)


def test_dead_service__is_reported_with_fix(tmp_path: Path) -> None:
    settings = _state(tmp_path)
    recorded = emb.up(settings)
    try:
        redis_pid = recorded["redis"].pid
        assert redis_pid is not None
        emb.stop_pid(redis_pid, recorded["redis"].program)
        health = {s.name: s for s in emb.status(settings)}
        assert not health["redis"].healthy and "refluent down && refluent up" in \
            health["redis"].detail
        assert health["broker"].healthy
        with pytest.raises(ServiceDeadError, match="redis.*not running"):
            emb.resolve_redis_url(settings)
    finally:
        emb.down(settings)


def test_external_services__are_checked_not_started_nor_stopped(
    tmp_path: Path, services: RunningServices
) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": services.bootstrap_servers},
        redis={"url": services.redis_url},
        lake={"catalog_uri": services.catalog_uri, "warehouse": services.warehouse},
        embedded={"state_dir": tmp_path / "state"},
    )
    recorded = emb.up(settings)
    assert all(r.external and r.pid is None for r in recorded.values())
    assert all(s.healthy for s in emb.status(settings))
    assert emb.down(settings) == []
    assert emb.check_broker(services.bootstrap_servers) >= 1, "external broker still up"


def test_stop_pid__never_signals_a_process_running_another_program(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert emb.stop_pid(proc.pid, "/usr/bin/redis-server") is True  # "gone" for that program
        assert proc.poll() is None, "the unrelated process was left alone"
    finally:
        proc.kill()
        proc.wait()
