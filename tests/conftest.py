"""Shared fixtures: one set of real services per test session (see refluent.testing.services);
with pytest-xdist, one set per worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from refluent.config import Settings
from refluent.testing.services import RunningServices, running_services

# pytest-xdist's workers export COLUMNS=80: Rich consoles made when the CLI modules are imported
# would keep that width and ignore the one a test sets. Tests set their own.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServices]:
    """A broker, Redis and lake catalog for the whole session."""
    with running_services(tmp_path_factory.mktemp("services")) as svc:
        yield svc


@pytest.fixture()
def settings(services: RunningServices) -> Settings:
    """Settings pointing at the session's services."""
    return services.settings()


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                    ) -> None:
    """Keep a developer's refluent.toml and REFLUENT_* variables out of the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("REFLUENT_") and name != "REFLUENT_TEST_SERVICES":
            monkeypatch.delenv(name)
    empty = tmp_path_factory.getbasetemp() / "empty.toml"
    empty.touch()
    monkeypatch.setenv("REFLUENT_CONFIG", str(empty))


TIERS = {"unit", "contract", "integration", "property", "e2e"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to a tier, so `-m` selections never skip one silently."""
    unmarked = [i.nodeid for i in items if not TIERS & {m.name for m in i.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"tests without a tier marker ({', '.join(sorted(TIERS))}): "
                                + ", ".join(unmarked[:5]))
