"""A retrain request's parameters: overrides of ``retrain.*`` for that one run.

A :class:`~refluent.streams.contracts.RetrainRequest` carries ``params`` (``{"epochs": 3,
"target_epsilon": 1.0}``); the launcher checks them before it starts anything and the job
applies them (``refluent retrain MODEL --param epochs=3``). A key is a field of
:class:`~refluent.config.RetrainSettings` (with or without ``retrain.``); a value is checked
as the setting itself is, and a text value of a list or mapping setting (``hidden``,
``feature_scales``) is read as JSON.

Examples:
    >>> from refluent.config import Settings
    >>> s = with_params(Settings(), {"epochs": 3, "retrain.hidden": "[16, 8]"})
    >>> s.retrain.epochs, s.retrain.hidden
    (3, [16, 8])
    >>> with_params(Settings(), {"epoch": 3})
    Traceback (most recent call last):
    ...
    refluent.jobs.errors.JobError: retrain parameter 'epoch' is not a retrain setting (known: ...
    >>> parse_param("target_epsilon=1.5"), parse_param("alias=challenger-b")
    (('target_epsilon', 1.5), ('alias', 'challenger-b'))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError

from refluent.config import RetrainSettings
from refluent.jobs.errors import JobError

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.streams.contracts import Scalar

_PREFIX = "retrain."


def with_params(settings: Settings, params: Mapping[str, Scalar]) -> Settings:
    """``settings`` with ``params`` over its ``retrain`` settings.

    Raises:
        JobError: a key that is no retrain setting, or a value the setting refuses (both
            named).
    """
    if not params:
        return settings
    fields = RetrainSettings.model_fields
    update: dict[str, object] = {}
    for key, value in params.items():
        name = key.removeprefix(_PREFIX)
        if name not in fields:
            raise JobError(f"retrain parameter {key!r} is not a retrain setting (known: "
                           f"{', '.join(sorted(fields))})")
        annotation = str(fields[name].annotation)
        if isinstance(value, str) and ("list" in annotation or "dict" in annotation):
            try:
                update[name] = json.loads(value)
            except ValueError as exc:
                raise JobError(f"retrain parameter {key!r}: {value!r} is not JSON: "
                               f"{exc}") from exc
        else:
            update[name] = value
    try:
        retrain = RetrainSettings.model_validate({**settings.retrain.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise JobError(f"retrain parameters {dict(params)!r}: {problems}") from exc
    return settings.model_copy(update={"retrain": retrain})


def parse_param(text: str) -> tuple[str, Scalar]:
    """``KEY=VALUE`` as given on the command line: the value as JSON when it reads as a JSON
    number, boolean, null or string, else (a list or mapping for :func:`with_params`, or
    plain text) as given.

    Raises:
        JobError: no ``=``.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise JobError(f"retrain parameter {text!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    return (key, raw) if isinstance(value, list | dict) else (key, value)


def param_arg(key: str, value: Scalar) -> str:
    """The ``KEY=VALUE`` that :func:`parse_param` reads back as ``(key, value)``.

    Examples:
        >>> [param_arg(k, v) for k, v in [("a", 3), ("b", "3"), ("c", None), ("d", "x")]]
        ['a=3', 'b="3"', 'c=null', 'd=x']
        >>> [parse_param(param_arg(k, v)) for k, v in [("b", "3"), ("e", "[8, 4]")]]
        [('b', '3'), ('e', '[8, 4]')]
    """
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return f"{key}={value}"
        if isinstance(parsed, list | dict):
            return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


__all__ = ["param_arg", "parse_param", "with_params"]
