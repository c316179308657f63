"""A registry stand-in for the online-learning tests: the calls the learners make, in memory,
round-tripping checkpoint state and offsets through JSON as the real registry does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from refluent.models.base import ServableModel
from refluent.models.kinds import load_model


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    kind: str
    task: str
    feature_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ckpt:
    name: str
    version: int
    seq: int
    artifact: bytes
    offsets: dict[str, dict[int, int]]
    examples: int
    state: dict[str, Any]
    created_at: datetime


class FakeRegistry:
    """The registry calls the learners make, in memory."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], tuple[Version, bytes, dict[str, Any]]] = {}
        self.alias: dict[str, dict[str, int]] = {}
        self.ckpts: dict[tuple[str, int], list[Ckpt]] = {}
        self.promotions: list[tuple[str, int, str, str]] = []
        self.prune_error: Exception | None = None
        self.save_error: Exception | None = None

    def register(self, name: str, model: ServableModel, alias: str | None = None) -> Version:
        version = 1 + max((v for n, v in self.models if n == name), default=0)
        meta = model.metadata()
        registered = Version(name, version, model.kind, model.task)
        self.models[(name, version)] = (registered, model.to_bytes(), meta)
        if alias:
            self.alias.setdefault(name, {})[alias] = version
        return registered

    def get(self, name: str, version: int) -> Version:
        return self.models[(name, version)][0]

    def names(self) -> list[str]:
        return sorted({n for n, _ in self.models})

    def aliases(self, name: str) -> dict[str, int]:
        if not any(n == name for n, _ in self.models):
            from refluent.registry import UnknownModelError

            raise UnknownModelError(name)
        return dict(self.alias.get(name, {}))

    def revision(self, name: str) -> str:
        return repr((sorted(self.alias.get(name, {}).items()),
                     sorted((k, len(v)) for k, v in self.ckpts.items() if k[0] == name)))

    def _model(self, name: str, version: int, data: bytes) -> ServableModel:
        registered, _, meta = self.models[(name, version)]
        return load_model(registered.kind, data, meta)  # type: ignore[arg-type]

    def load(self, name: str, version: int) -> tuple[Version, ServableModel]:
        cps = self.ckpts.get((name, version))
        data = cps[-1].artifact if cps else self.models[(name, version)][1]
        return self.get(name, version), self._model(name, version, data)

    def latest_checkpoint(self, name: str, version: int) -> Ckpt | None:
        cps = self.ckpts.get((name, version))
        return cps[-1] if cps else None

    def load_checkpoint(self, cp: Ckpt) -> ServableModel:
        return self._model(cp.name, cp.version, cp.artifact)

    def save_checkpoint(self, name: str, version: int, model: ServableModel, *,
                        offsets: dict[str, dict[int, int]], examples: int,
                        state: dict[str, Any]) -> Ckpt:
        if self.save_error is not None:
            raise self.save_error
        cps = self.ckpts.setdefault((name, version), [])
        stored_offsets = {t: {int(p): o for p, o in parts.items()} for t, parts in orjson.loads(
            orjson.dumps(offsets, option=orjson.OPT_NON_STR_KEYS)).items()}
        seq = cps[-1].seq + 1 if cps else 1
        cp = Ckpt(name, version, seq, model.to_bytes(), stored_offsets, examples,
                  orjson.loads(orjson.dumps(state)), datetime.now(UTC))
        cps.append(cp)
        return cp

    def prune_checkpoints(self, name: str, keep: int, version: int | None = None
                          ) -> list[Ckpt]:
        if self.prune_error is not None:
            raise self.prune_error
        pruned = []
        for (n, v), cps in self.ckpts.items():
            if n == name and version in (None, v) and len(cps) > keep:
                pruned += cps[:-keep]
                del cps[:-keep]
        return pruned

    def promote(self, name: str, version: int, alias: str = "champion", *,
                reason: str = "") -> None:
        self.promotions.append((name, version, alias, reason))
        self.alias.setdefault(name, {})[alias] = version
