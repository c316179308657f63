"""Classes named by dotted path: how engines, sinks and model kinds load a user's own class.

Examples:
    >>> load_class("refluent.sinks.base:Sink", object).__name__
    'Sink'
    >>> load_class("refluent.sinks.base.Missing", object)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    refluent.plugins.ClassPathError: refluent.sinks.base.Missing is nothing, not a subclass of ...
"""

from __future__ import annotations

import importlib
from typing import Any

from refluent.errors import RefluentError


class ClassPathError(RefluentError):
    """A dotted path does not name a class of the kind wanted; ``detail`` says why."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(detail)


def _resolve(path: str) -> tuple[str, str, Any]:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ClassPathError(path, f"{path!r} is not a dotted path such as package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClassPathError(path, f"cannot import {module_name}: {exc}") from exc
    return module_name, attr, getattr(module, attr, None)


def load_class(path: str, base: type[Any]) -> type[Any]:
    """The class at ``path`` (``package.module:Class`` or ``package.module.Class``), which must
    subclass ``base``.

    Raises:
        ClassPathError: the path is malformed, its module does not import, or it names no
            subclass of ``base``.
    """
    module_name, attr, found = _resolve(path)
    if not (isinstance(found, type) and issubclass(found, base)):
        what = "nothing" if found is None else repr(found)
        raise ClassPathError(path, f"{module_name}.{attr} is {what}, not a subclass of "
                                   f"{base.__module__}.{base.__qualname__}")
    return found


def load_callable(path: str) -> Any:
    """The function (or other callable) at ``path``, as :func:`load_class` finds a class.

    Raises:
        ClassPathError: the path is malformed, its module does not import, or it names
            nothing callable.

    Examples:
        >>> load_callable("refluent.plugins:load_class").__name__
        'load_class'
    """
    module_name, attr, found = _resolve(path)
    if not callable(found):
        what = "nothing" if found is None else repr(found)
        raise ClassPathError(path, f"{module_name}.{attr} is {what}, not callable")
    return found
