"""The model registry: versions, aliases and checkpoints of models, kept in the lake.

See :mod:`refluent.registry.store`.
"""

from __future__ import annotations

from refluent.registry.errors import (
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
from refluent.registry.store import (
    CHAMPION,
    AliasEvent,
    Checkpoint,
    ModelRegistry,
    ModelVersion,
)

__all__ = [
    "CHAMPION",
    "AliasEvent",
    "ArtifactError",
    "Checkpoint",
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
