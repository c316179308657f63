"""The root of Refluent's errors and the ones shared by several concerns.

Every error a user can meet derives from :class:`RefluentError`; its message is built from its
arguments and names the thing involved (topic, partition, offset, service, setting) and, where
there is one, the fix.
"""

from __future__ import annotations


class RefluentError(Exception):
    """Root of every error raised by Refluent."""


class ConfigError(RefluentError):
    """A setting is missing or inconsistent."""

    def __init__(self, setting: str, problem: str, fix: str | None = None) -> None:
        self.setting = setting
        self.problem = problem
        self.fix = fix
        message = f"setting {setting}: {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)


class MissingExtraError(RefluentError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"the module {module!r} is not installed; run: pip install 'refluent[{extra}]'"
        )


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Examples:
        >>> require("json", "none").__name__
        'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc
