"""The model holder: bounded memory for pinned versions, no memory of unknown ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from refluent.examples.models import river_regressor
from refluent.models.base import ServableModel
from refluent.registry import UnknownModelError, UnknownModelVersionError
from refluent.serving.holder import ModelHolder, UnknownServedModelError


@dataclass(frozen=True)
class Version:
    name: str
    version: int


@dataclass
class Registry:
    models: dict[tuple[str, int], ServableModel] = field(default_factory=dict)
    loads: int = 0

    def revision(self, name: str) -> str:
        return "0"

    def resolve(self, name: str, alias: str = "champion") -> Any:
        versions = [v for n, v in self.models if n == name]
        if not versions:
            raise UnknownModelError(name)
        return Version(name, max(versions))

    def get(self, name: str, version: int) -> Any:
        if (name, version) not in self.models:
            raise UnknownModelVersionError(name, version)
        return Version(name, version)

    def latest_checkpoint(self, name: str, version: int) -> None:
        return None

    def load(self, name: str, version: int) -> tuple[Any, ServableModel]:
        self.loads += 1
        return Version(name, version), self.models[(name, version)]


def registry(versions: int) -> Registry:
    return Registry({("m", v): river_regressor(("x",)) for v in range(1, versions + 1)})


@pytest.mark.unit
def test_get__pinned_versions_beyond_the_cap_drop_the_least_recently_used() -> None:
    reg = registry(4)
    holder = ModelHolder(reg, max_pinned=2)  # type: ignore[arg-type]
    holder.get("m")  # the champion is never dropped
    holder.get("m", 1)
    holder.get("m", 2)
    holder.get("m", 1)  # used again: version 2 is now the least recently used
    holder.get("m", 3)
    assert set(holder.held()) == {("m", None), ("m", 1), ("m", 3)}
    loads = reg.loads
    holder.get("m", 2)  # dropped: loaded again
    assert reg.loads == loads + 1
    assert set(holder.held()) == {("m", None), ("m", 2), ("m", 3)}


@pytest.mark.unit
def test_get__unknown_versions_are_404_errors_and_never_remembered() -> None:
    reg = registry(1)
    holder = ModelHolder(reg, refresh_s=3600)  # type: ignore[arg-type]
    for version in range(2, 50):
        with pytest.raises(UnknownServedModelError, match=rf"model 'm' version {version}") as err:
            holder.get("m", version)
        assert err.value.reason == "unknown_version"
    assert holder.held() == {}
    assert not [k for k, v in vars(holder).items() if isinstance(v, dict) and len(v) >= 48]
    # A version registered since is served at once, not after a remembered miss expires.
    reg.models[("m", 7)] = river_regressor(("x",))
    assert holder.get("m", 7).number == 7
