"""The model registry: versions, aliases and checkpoints of models, kept in the lake.

:class:`ModelRegistry` (:mod:`refluent.registry.base`) is what serving and learning use;
:class:`IcebergModelRegistry` (:mod:`refluent.registry.store`) keeps it in the lake. Artifacts
must come from a trusted registry (River artifacts are pickles); their SHA-256 digests are
checked on load.
"""

from __future__ import annotations

from refluent.registry.base import (
    CHAMPION,
    AliasEvent,
    Checkpoint,
    ModelRegistry,
    ModelVersion,
)
from refluent.registry.errors import (
    ArtifactDigestError,
    ArtifactError,
    InvalidNameError,
    ModelKindMismatchError,
    NoPreviousVersionError,
    RegistryCommitError,
    RegistryDataError,
    RegistryError,
    UnknownAliasError,
    UnknownModelError,
    UnknownModelVersionError,
)
from refluent.registry.store import IcebergModelRegistry

__all__ = [
    "CHAMPION",
    "AliasEvent",
    "ArtifactDigestError",
    "ArtifactError",
    "Checkpoint",
    "IcebergModelRegistry",
    "InvalidNameError",
    "ModelKindMismatchError",
    "ModelRegistry",
    "ModelVersion",
    "NoPreviousVersionError",
    "RegistryCommitError",
    "RegistryDataError",
    "RegistryError",
    "UnknownAliasError",
    "UnknownModelError",
    "UnknownModelVersionError",
]
