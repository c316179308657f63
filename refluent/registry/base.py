"""What serving and learning need from a model registry: :class:`ModelRegistry`, and the
records it answers with (:class:`ModelVersion`, :class:`Checkpoint`, :class:`AliasEvent`).

The prediction service (:mod:`refluent.serving.holder`), the online learner
(:mod:`refluent.online_learning.learner`), the feedback service and the ``refluent models``
commands depend on this interface only; the registry kept in the lake
(:class:`refluent.registry.store.IcebergModelRegistry`) is the implementation, and
:meth:`ModelRegistry.from_settings` opens it.

Artifacts must come from a trusted registry: River artifacts are pickles, and loading one runs
code. An implementation records a digest of each artifact it stores and refuses to load one
whose bytes differ (:class:`~refluent.registry.errors.ArtifactDigestError`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from refluent.models.base import ModelKind, Task

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.models.base import ServableModel

CHAMPION = "champion"
"""The alias serving answers with."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    Attributes:
        name: Model name.
        version: Version number, from 1 per name.
        kind: ``"river"`` or ``"onnx"``.
        task: ``"classification"`` or ``"regression"``.
        feature_names: Inputs in order (may be empty for a River model: any features).
        artifact_uri: Where the artifact is.
        created_at: When it was registered (UTC).
        parent: The version it was derived from (retrained or fine-tuned), if any.
        lineage: What it was trained on, e.g. ``{"snapshot_id": ..., "offsets": {...}}``.
        metrics: Metric name -> value at registration.
        epsilon: Differential-privacy epsilon spent by its training, if private.
        description: Free text.
        model_meta: What :func:`~refluent.models.kinds.load_model` needs beside the artifact.
        artifact_sha256: SHA-256 of the artifact (hex), checked on load; None for a version
            registered before digests were recorded.
    """

    name: str
    version: int
    kind: ModelKind
    task: Task
    feature_names: tuple[str, ...]
    artifact_uri: str
    created_at: datetime
    parent: int | None
    lineage: dict[str, Any]
    metrics: dict[str, float]
    epsilon: float | None
    description: str
    model_meta: dict[str, Any] = field(default_factory=dict, compare=False)
    artifact_sha256: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """The learned state of a version at one point of its stream.

    Attributes:
        name: Model name.
        version: Model version.
        seq: Checkpoint number of this version, from 1.
        artifact_uri: Where the checkpointed model is.
        offsets: Topic -> partition -> next offset to consume, to resume learning from.
        examples: Examples this version had learned.
        state: JSON-able learner state (rolling metrics, recent ids, ...).
        created_at: When it was saved (UTC).
        artifact_sha256: SHA-256 of the artifact (hex), checked on load; None for a
            checkpoint saved before digests were recorded.
    """

    name: str
    version: int
    seq: int
    artifact_uri: str
    offsets: dict[str, dict[int, int]]
    examples: int
    state: dict[str, Any]
    created_at: datetime
    artifact_sha256: str | None = None


@dataclass(frozen=True)
class AliasEvent:
    """One change of an alias, as recorded in ``model_aliases``."""

    name: str
    alias: str
    seq: int
    event: str
    version: int
    previous_version: int | None
    reason: str
    at: datetime
    row_id: str


class ModelRegistry(ABC):
    """Versions, aliases and checkpoints of models, and their artifacts.

    Guarantees an implementation gives: a version's number and a checkpoint's sequence count
    from 1 and never repeat; an alias change is atomic (readers see the old holder or the new
    one); an artifact is stored before the record that points to it; a loaded artifact is the
    one that was stored (its digest is checked).

    Thread safety: one registry may be shared between threads.
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The configured registry: the one in the lake (``settings.lake``,
        ``settings.registry``)."""
        from refluent.registry.store import IcebergModelRegistry

        return IcebergModelRegistry.from_settings(settings)

    # -- versions ----------------------------------------------------------------------------
    @abstractmethod
    def register(self, name: str, model: ServableModel, *, parent: int | None = None,
                 lineage: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, float] | None = None, epsilon: float | None = None,
                 description: str = "", alias: str | None = None) -> ModelVersion:
        """Store ``model`` as the next version of ``name`` (with ``alias``: promote it)."""

    @abstractmethod
    def get(self, name: str, version: int) -> ModelVersion:
        """One version of a model (``UnknownModelError`` / ``UnknownModelVersionError``)."""

    @abstractmethod
    def names(self) -> list[str]:
        """The registered model names, sorted."""

    @abstractmethod
    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (of every model when None), by name then version."""

    # -- aliases -----------------------------------------------------------------------------
    @abstractmethod
    def alias_events(self, name: str | None = None, alias: str | None = None
                     ) -> list[AliasEvent]:
        """The alias events of ``name`` (of every model when None; of ``alias`` only, when
        given), by name, alias, then seq."""

    @abstractmethod
    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> the version holding it now."""

    @abstractmethod
    def resolve(self, name: str, alias: str = CHAMPION) -> ModelVersion:
        """The version holding ``alias`` (``UnknownAliasError`` when none does)."""

    @abstractmethod
    def promote(self, name: str, version: int, alias: str = CHAMPION, *,
                reason: str = "") -> None:
        """Point ``alias`` at ``version`` (nothing happens if it already does)."""

    @abstractmethod
    def rollback(self, name: str, alias: str = CHAMPION) -> ModelVersion:
        """Point ``alias`` back at its previous holder; returns that version."""

    # -- checkpoints -------------------------------------------------------------------------
    @abstractmethod
    def save_checkpoint(self, name: str, version: int, model: ServableModel, *,
                        offsets: Mapping[str, Mapping[int, int]], examples: int,
                        state: Mapping[str, Any]) -> Checkpoint:
        """Save what ``model`` (a version of ``name`` that learns) has learned so far."""

    @abstractmethod
    def latest_checkpoint(self, name: str, version: int) -> Checkpoint | None:
        """The newest checkpoint of a version, or None."""

    @abstractmethod
    def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        """Every checkpoint of a version, oldest first."""

    @abstractmethod
    def prune_checkpoints(self, name: str, keep: int, version: int | None = None
                          ) -> list[Checkpoint]:
        """Delete all but the ``keep`` newest checkpoints of each version; returns them."""

    # -- loading -----------------------------------------------------------------------------
    @abstractmethod
    def load(self, name: str, version: int | None = None, alias: str = CHAMPION
             ) -> tuple[ModelVersion, ServableModel]:
        """A version (``version``, else the holder of ``alias``) and its model, as of its
        latest checkpoint when it has one.

        Raises:
            ArtifactDigestError: the artifact is not the one that was stored.
        """

    @abstractmethod
    def load_checkpoint(self, checkpoint: Checkpoint) -> ServableModel:
        """The model as it was at ``checkpoint`` (``ArtifactDigestError`` as :meth:`load`)."""

    @abstractmethod
    def revision(self, name: str) -> str:
        """A token that changes whenever the aliases or checkpoints of ``name`` change; cheap
        enough to poll every couple of seconds."""

    def close(self) -> None:  # noqa: B027 - optional hook: most registries hold nothing
        """Release what the registry holds open."""
