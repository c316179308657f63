"""Errors of the model registry."""

from __future__ import annotations

from collections.abc import Iterable

from refluent.errors import RefluentError


def _known(kind: str, values: Iterable[object]) -> str:
    listed = [str(v) for v in values]
    return f" (known {kind}: {', '.join(listed)})" if listed else f" (no {kind} yet)"


class RegistryError(RefluentError):
    """The model registry could not answer or record something."""

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        self.detail = detail
        super().__init__(f"{subject} {detail}")


class InvalidNameError(RegistryError):
    """A model or alias name that cannot be used (it becomes part of artifact paths)."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} {name!r}", "must start with a letter or digit and hold only "
                         "letters, digits, '.', '_' and '-' (at most 128 characters)")


class UnknownModelError(RegistryError):
    """No version of the named model is registered."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        super().__init__(f"model {name!r}", "is not registered" + _known("models", known))


class UnknownModelVersionError(RegistryError):
    """The model exists but not in that version."""

    def __init__(self, name: str, version: int, known: Iterable[int] = ()) -> None:
        self.name = name
        self.version = version
        super().__init__(f"model {name!r}", f"has no version {version}"
                         + _known("versions", known))


class UnknownAliasError(RegistryError):
    """The model has never had that alias."""

    def __init__(self, name: str, alias: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"model {name!r}", f"has no alias {alias!r}" + _known("aliases", known))


class NoPreviousVersionError(RegistryError):
    """A rollback was asked for but the alias has had no other holder to go back to."""

    def __init__(self, name: str, alias: str, version: int) -> None:
        self.name = name
        self.alias = alias
        self.version = version
        super().__init__(f"model {name!r}", f"cannot roll back alias {alias!r}: it has held only "
                         f"version {version} since it was set")


class ModelKindMismatchError(RegistryError):
    """A checkpoint's model is not of the kind its version was registered with."""

    def __init__(self, name: str, version: int, expected: str, got: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"model {name!r} version {version}",
                         f"is a {expected} model; a {got} model cannot be checkpointed for it")


class RegistryCommitError(RegistryError):
    """A registry table commit did not land; nothing was recorded."""

    def __init__(self, table: str, attempts: int, detail: str) -> None:
        self.table = table
        self.attempts = attempts
        super().__init__(f"commit to registry table {table}",
                         f"failed after {attempts} attempt(s): {detail}")


class ArtifactError(RegistryError):
    """A model artifact could not be written or read."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(f"artifact {uri}", detail)


class ArtifactDigestError(ArtifactError):
    """An artifact's bytes do not have the SHA-256 digest recorded when it was stored: it was
    changed (or replaced) after registration, and is not loaded."""

    def __init__(self, name: str, version: int, uri: str, expected: str, actual: str,
                 checkpoint: int | None = None) -> None:
        self.name = name
        self.version = version
        self.checkpoint = checkpoint
        self.expected = expected
        self.actual = actual
        what = f"model {name!r} version {version}"
        if checkpoint is not None:
            what += f" checkpoint {checkpoint}"
        super().__init__(uri, f"of {what} has SHA-256 {actual}, not the {expected} recorded "
                              "at registration: it was modified after it was stored and is "
                              "not loaded")


class RegistryDataError(RegistryError):
    """A registry row, or a value to be stored in one, is not what the registry expects."""
