"""Errors of the lake: its catalog, tables, offsets, queries and maintenance.

Every message starts with ``lake`` and names the catalog, table or query involved.
"""

from __future__ import annotations

from collections.abc import Sequence

from refluent.config import safe_url
from refluent.errors import RefluentError


class LakeError(RefluentError):
    """Something went wrong with a lake table, the lake catalog or a lake query.

    Not a :class:`~refluent.sinks.errors.SinkError`: the model registry and the ``refluent
    lake`` commands use the lake without any sink. The lake sink lets these through as they are.
    """

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        self.detail = detail
        super().__init__(f"lake {subject}: {detail}")


class LakeCatalogError(LakeError):
    """The lake catalog could not be opened or answered with an error."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = safe_url(uri)
        super().__init__(f"catalog {self.uri}", detail)


class LakeNamespaceNotFoundError(LakeError):
    """A namespace named by the user does not exist."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        super().__init__(f"namespace {namespace}", "does not exist (a sink creates it on setup; "
                         "`refluent up` creates the configured one)")


class LakeTableNotFoundError(LakeError):
    """A table named by the user does not exist."""

    def __init__(self, table: str, available: Sequence[str] = ()) -> None:
        self.table = table
        self.available = list(available)
        hint = f" (tables: {', '.join(self.available)})" if self.available else " (no tables)"
        super().__init__(table, f"no such table{hint}")


class LakeCommitError(LakeError):
    """A micro-batch or maintenance commit did not land; nothing was committed."""

    def __init__(self, table: str, attempts: int, detail: str) -> None:
        self.table = table
        self.attempts = attempts
        super().__init__(table, f"commit failed after {attempts} attempt(s): {detail}")


class LakeRowError(LakeError):
    """A record could not be turned into a row of its table."""

    def __init__(self, table: str, topic: str, partition: int, offset: int, detail: str) -> None:
        self.table = table
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(table, f"record {topic}[{partition}]@{offset}: {detail}")


class LakeOffsetsError(LakeError):
    """The offsets stored in a snapshot summary cannot be read."""

    def __init__(self, table: str, snapshot_id: int, detail: str) -> None:
        self.table = table
        self.snapshot_id = snapshot_id
        super().__init__(table, f"snapshot {snapshot_id} has unreadable offsets: {detail}")


class LakeQueryError(LakeError):
    """A lake query failed."""

    def __init__(self, sql: str, detail: str) -> None:
        self.sql = sql
        short = sql if len(sql) <= 80 else sql[:77] + "..."
        super().__init__(f"query {short!r}", detail)


class LakeMaintenanceError(LakeError):
    """A maintenance step could not run on a table."""

    def __init__(self, table: str, step: str, detail: str) -> None:
        self.table = table
        self.step = step
        super().__init__(table, f"{step}: {detail}")
