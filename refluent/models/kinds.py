"""The kinds of model: kind name -> :class:`~refluent.models.base.ServableModel` class.

A kind is found by name (``"river"``, ``"onnx"``) or, for a user's own class, by its dotted path
(``"mypackage.models:MyModel"`` or ``"mypackage.models.MyModel"``). Built-in classes are
imported on first use, so ``import refluent`` does not import River or onnxruntime, and a
missing extra is reported by the class's own ``require`` with the ``pip install`` to run.

Examples:
    >>> model_class("river").__name__
    'RiverModel'
    >>> model_class("refluent.models.river:RiverModel").kind
    'river'
    >>> model_class("tensorflow")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    refluent.models.errors.UnknownModelKindError: model kind 'tensorflow' is not one of ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refluent.models.base import ModelKind, ServableModel
from refluent.models.errors import UnknownModelKindError
from refluent.plugins import ClassPathError, load_class

BUILTIN_KINDS: dict[str, str] = {
    "river": "refluent.models.river:RiverModel",
    "onnx": "refluent.models.onnx:OnnxModel",
}
"""Kind name -> ``module:Class`` of the built-in kinds."""
KINDS: tuple[str, ...] = tuple(BUILTIN_KINDS)
"""The built-in kind names."""

_resolved: dict[str, type[ServableModel]] = {}


def _import(kind: str, path: str) -> type[ServableModel]:
    try:
        return load_class(path, ServableModel)
    except ClassPathError as exc:
        if path in BUILTIN_KINDS.values():
            raise  # a bug, not a user's mistake
        raise UnknownModelKindError(kind, KINDS, exc.detail) from exc


def model_class(kind: ModelKind) -> type[ServableModel]:
    """The class of ``kind``: a built-in kind name or a dotted path to a user's class.

    Raises:
        UnknownModelKindError: no such kind (or the path is not a ServableModel class).
    """
    cls = _resolved.get(kind)
    if cls is None:
        path = BUILTIN_KINDS.get(kind)
        if path is None and "." not in kind:
            raise UnknownModelKindError(kind, KINDS)
        cls = _import(kind, path or kind)
        _resolved[kind] = cls
    return cls


def is_known_kind(kind: Any) -> bool:
    """True when :func:`model_class` finds a class for ``kind``."""
    if not isinstance(kind, str):
        return False
    try:
        model_class(kind)
    except UnknownModelKindError:
        return False
    return True


def load_model(kind: ModelKind, data: bytes, meta: Mapping[str, Any]) -> ServableModel:
    """Rebuild a model from its artifact and metadata with the class of ``kind``.

    Args:
        kind: A kind name (``"river"``: a pickled River estimator; ``"onnx"``: a serialised
            ONNX graph) or the dotted path of a user's class.
        data: The artifact, as :meth:`ServableModel.to_bytes` wrote it.
        meta: :meth:`ServableModel.metadata` (``task``, ``feature_names``, ``classes``,
            ``name``); for ONNX, what the graph's own metadata lacks.

    Raises:
        ModelLoadError: the bytes are not a model of that kind.
        UnknownModelKindError: the kind is unknown.

    A River artifact is a pickle: loading it runs code, so load only artifacts you trust (as
    with any pickled model).
    """
    return model_class(kind).from_bytes(data, meta)
