"""The model registry: versions, aliases and checkpoints as Iceberg tables in the lake.

Three tables in the lake namespace hold everything:

- ``model_versions``: one row per version (versions count from 1 per model name): kind, task,
  feature names, artifact location and the SHA-256 digest of its bytes, parent version,
  lineage (training snapshot, offsets), metrics, epsilon spent and the metadata
  :func:`~refluent.models.kinds.load_model` needs.
- ``model_aliases``: append-only alias events (``promote`` or ``rollback``): model, alias,
  version, previous holder, reason, time and a per-alias sequence number. An alias's holder is
  the outcome of its latest event.
- ``model_checkpoints``: the learned state of an online model, saved as it learns: artifact
  and its SHA-256 digest, the next offset to consume per topic partition, examples learned and
  JSON learner state.

Artifacts are files under ``registry.artifact_root`` (default ``<warehouse>/models``):
``<name>/<version>/<uuid>.<ext>`` and ``<name>/<version>/checkpoints/<seq>-<uuid>.<ext>``,
written through the lake's FileIO, so ``file://`` and ``s3://`` (with the catalog's S3
properties) both work.

Guarantees:

- An artifact is written before the row that points to it is committed, so a crash never
  leaves a row pointing to a missing file (at worst an unreferenced file; a failed commit
  deletes its file).
- Every change is ONE Iceberg append commit, so a promotion is atomic: readers see the old
  holder or the new one. Commits are optimistic: when a concurrent commit lands first (another
  process promoting, registering, checkpointing), the registry re-reads the table, recomputes
  the version number, sequence number or previous holder against the new head and tries again.
  A row carries a unique id, so a commit whose outcome was unknown is never recorded twice.
- Reads are cached per table snapshot: re-reading the table metadata is all a read costs when
  nothing changed, so a service can poll :meth:`IcebergModelRegistry.revision` every couple
  of seconds.

Each commit adds a snapshot: expire old ones and compact with ``refluent lake maintain``.
Checkpoints pile up as a model learns: :meth:`IcebergModelRegistry.prune_checkpoints` (``refluent
models prune``; the feedback service does it as it checkpoints, ``feedback.checkpoints_kept``)
deletes all but the newest of each version, rows first, then their artifacts;
:meth:`IcebergModelRegistry.delete_orphan_artifacts` (``refluent models gc``) removes files no row
points to.

Trust: River artifacts are pickles, and unpickling runs code. Artifacts must come from a
trusted registry: only processes you trust should be able to write its tables and artifact
root. The registry records the SHA-256 digest of every artifact it writes, beside its location,
and checks it on every load: an artifact changed after it was stored (a replaced file in the
bucket) is refused with :class:`~refluent.registry.errors.ArtifactDigestError` before it is
unpickled. The digest guards against a file swapped behind the registry's back, not against
someone who can write the tables too. Versions and checkpoints stored before digests were
recorded have none and load unchecked.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from refluent.embedded.services import lake_catalog
    >>> from refluent.examples.models import river_classifier
    >>> lake = Path(tempfile.mkdtemp())
    >>> registry = IcebergModelRegistry(lake_catalog(f"sqlite:///{lake / 'c.db'}", lake.as_uri()))
    >>> registry.register("churn", river_classifier(), alias="champion").version
    1
    >>> registry.register("churn", river_classifier(), parent=1).version
    2
    >>> registry.promote("churn", 2, reason="better log loss")
    >>> registry.aliases("churn"), registry.rollback("churn").version
    ({'champion': 2}, 1)
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from refluent.lake.catalog import (
    OPERATION_KEY,
    ensure_table,
    identifier,
    open_catalog,
    retry_commit,
    transaction,
)
from refluent.models.base import ServableModel
from refluent.models.kinds import is_known_kind, load_model
from refluent.registry.base import CHAMPION, AliasEvent, Checkpoint, ModelRegistry, ModelVersion
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

try:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.exceptions import (
        CommitFailedException,
        NoSuchTableError,
    )
    from pyiceberg.expressions import In
    from pyiceberg.io import FileIO, load_file_io
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table
    from pyiceberg.types import (
        DoubleType,
        LongType,
        NestedField,
        StringType,
        TimestamptzType,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from refluent.errors import MissingExtraError

    raise MissingExtraError(exc.name or "pyiceberg", "iceberg") from exc

if TYPE_CHECKING:
    from refluent.config import Settings

VERSIONS_TABLE = "model_versions"
ALIASES_TABLE = "model_aliases"
CHECKPOINTS_TABLE = "model_checkpoints"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DIGEST_COLUMN = "artifact_sha256"
"""Column of the versions and checkpoints tables holding the artifact's SHA-256 (hex)."""


def _s(i: int, name: str, doc: str, required: bool = True) -> NestedField:
    return NestedField(i, name, StringType(), required=required, doc=doc)


def _l(i: int, name: str, doc: str, required: bool = True) -> NestedField:
    return NestedField(i, name, LongType(), required=required, doc=doc)


def _ts(i: int, name: str, doc: str) -> NestedField:
    return NestedField(i, name, TimestamptzType(), required=True, doc=doc)


VERSIONS_SCHEMA = Schema(
    _s(1, "name", "Model name"),
    _l(2, "version", "Version, from 1 per name"),
    _s(3, "kind", "river or onnx"),
    _s(4, "task", "classification or regression"),
    _s(5, "feature_names", "Inputs in order (JSON list)"),
    _s(6, "artifact_uri", "Where the artifact is"),
    _ts(7, "created_at", "When the version was registered"),
    _l(8, "parent", "Version it was derived from", required=False),
    _s(9, "lineage", "Training data: snapshot id, offsets, ... (JSON)"),
    _s(10, "metrics", "Metric name -> value (JSON)"),
    NestedField(11, "epsilon", DoubleType(), required=False, doc="DP epsilon spent"),
    _s(12, "description", "Free text"),
    _s(13, "model_meta", "What load_model needs beside the artifact (JSON)"),
    _s(14, "row_id", "Unique id of this row"),
    _s(15, DIGEST_COLUMN, "SHA-256 of the artifact (hex); empty for older versions",
       required=False),
)
ALIASES_SCHEMA = Schema(
    _s(1, "name", "Model name"),
    _s(2, "alias", "Alias (champion, challenger-...)"),
    _l(3, "seq", "Order of the events of this alias, from 1"),
    _s(4, "event", "promote or rollback"),
    _l(5, "version", "Version holding the alias after the event"),
    _l(6, "previous_version", "Version holding it before", required=False),
    _s(7, "reason", "Why"),
    _ts(8, "at", "When"),
    _s(9, "row_id", "Unique id of this row"),
)
CHECKPOINTS_SCHEMA = Schema(
    _s(1, "name", "Model name"),
    _l(2, "version", "Model version"),
    _l(3, "seq", "Checkpoint number of this version, from 1"),
    _s(4, "artifact_uri", "Where the checkpointed model is"),
    _s(5, "offsets", "Topic -> partition -> next offset to consume (JSON)"),
    _l(6, "examples", "Examples learned by this version so far"),
    _s(7, "state", "Learner state (JSON)"),
    _ts(8, "created_at", "When the checkpoint was saved"),
    _s(9, "row_id", "Unique id of this row"),
    _s(10, DIGEST_COLUMN, "SHA-256 of the artifact (hex); empty for older checkpoints",
       required=False),
)
_SCHEMAS = {VERSIONS_TABLE: VERSIONS_SCHEMA, ALIASES_TABLE: ALIASES_SCHEMA,
            CHECKPOINTS_TABLE: CHECKPOINTS_SCHEMA}


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def check_name(what: str, name: str) -> str:
    """``name`` if it can name a model or alias (it becomes part of artifact paths).

    Raises:
        InvalidNameError: it cannot.

    Examples:
        >>> check_name("model", "churn-v2.1")
        'churn-v2.1'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidNameError(what, str(name))
    return name


def _json(subject: str, value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError as exc:
        raise RegistryDataError(subject, f"is not JSON-able: {exc}") from exc


def _offsets(subject: str, offsets: Mapping[str, Mapping[int, int]]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for topic, parts in offsets.items():
        try:
            out[str(topic)] = {int(p): int(o) for p, o in parts.items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise RegistryDataError(subject, f"has offsets of topic {topic!r} that are not "
                                    f"partition -> offset integers: {exc}") from exc
    return out


def holders(events: list[AliasEvent]) -> list[int]:
    """The stack of an alias's holders after ``events`` (in ``seq`` order): a promotion pushes
    its version, a rollback pops back to the one before. The last item holds the alias.

    Examples:
        >>> t = datetime(2024, 1, 1, tzinfo=UTC)
        >>> def ev(seq, kind, v): return AliasEvent("m", "champion", seq, kind, v, None, "", t, "")
        >>> holders([ev(1, "promote", 1), ev(2, "promote", 3), ev(3, "rollback", 1)])
        [1]
    """
    stack: list[int] = []
    for e in events:
        if e.event == "rollback" and len(stack) >= 2 and stack[-2] == e.version:
            stack.pop()
        else:  # a promotion (or a rollback whose history was lost): the version now holds it
            stack.append(e.version)
    return stack


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------


@dataclass
class _Cached:
    snapshot_id: int | None
    rows: list[Any]


ORPHAN_AGE = timedelta(days=1)
"""Unreferenced artifacts younger than this are left alone (a registration may be between
writing its artifact and committing its row)."""


class IcebergModelRegistry(ModelRegistry):
    """Versions, aliases and checkpoints of models, in the lake (see the module docstring).

    Args:
        catalog: A pyiceberg catalog, or a function returning one (called on first use).
        namespace: Namespace of the registry's tables.
        artifact_root: Where artifacts are written (``file:///...``, ``s3://...``); default
            ``<warehouse>/models``.
        commit_attempts: Tries per change when concurrent commits get in the way.

    Thread safety: one registry may be shared between threads.
    """

    def __init__(self, catalog: Catalog | Callable[[], Catalog], namespace: str = "refluent",
                 artifact_root: str | None = None, *, commit_attempts: int = 10) -> None:
        self._catalog_source = catalog
        self.namespace = namespace
        self._artifact_root = artifact_root.rstrip("/") if artifact_root else None
        self.commit_attempts = max(1, commit_attempts)
        self._catalog: Catalog | None = None
        self._tables: dict[str, Table] = {}
        self._cache: dict[str, _Cached] = {}
        self._io: FileIO | None = None
        self._lock = threading.RLock()
        self._revisions: dict[str, tuple[tuple[int | None, int | None], str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IcebergModelRegistry:
        """The registry in ``settings.lake``'s catalog and namespace, artifacts under
        ``settings.registry.artifact_root`` (the catalog is opened on first use)."""
        return cls(lambda: open_catalog(settings), settings.lake.namespace,
                   settings.registry.artifact_root)

    # -- tables --------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The lake catalog (opened on first use)."""
        with self._lock:
            if self._catalog is None:
                source = self._catalog_source
                self._catalog = source if isinstance(source, Catalog) else source()
            return self._catalog

    def _table(self, key: str, refresh: bool = True) -> Table:
        with self._lock:
            table = self._tables.get(key)
            if table is None:
                table = ensure_table(self.catalog, identifier(key, self.namespace), _SCHEMAS[key])
                table = self._with_digest_column(key, table)
                self._tables[key] = table
            elif refresh:
                try:
                    table.refresh()
                except (OSError, NoSuchTableError) as exc:
                    raise RegistryError(f"registry table {key}",
                                        f"cannot be re-read: {exc}") from exc
            return table

    def _with_digest_column(self, key: str, table: Table) -> Table:
        """``table`` with the artifact digest column, added to a table made before it existed
        (older rows read it as null)."""
        if key == ALIASES_TABLE or DIGEST_COLUMN in table.schema().column_names:
            return table
        column = next(f for f in _SCHEMAS[key].fields if f.name == DIGEST_COLUMN)
        try:
            with table.update_schema() as update:
                update.add_column(DIGEST_COLUMN, StringType(), doc=column.doc)
        except (CommitFailedException, ValueError):
            pass  # another process added it first (re-read below)
        table.refresh()
        if DIGEST_COLUMN not in table.schema().column_names:
            raise RegistryError(f"registry table {key}",
                                f"lacks the {DIGEST_COLUMN} column and it cannot be added")
        return table

    def _rows(self, key: str, table: Table | None = None) -> list[Any]:
        """The decoded rows of ``key`` at its current snapshot (scanned once per snapshot)."""
        with self._lock:
            table = table if table is not None else self._table(key)
            snap = table.current_snapshot()
            snap_id = snap.snapshot_id if snap is not None else None
            cached = self._cache.get(key)
            if cached is not None and cached.snapshot_id == snap_id:
                return cached.rows
            raw = table.scan().to_arrow().to_pylist() if snap is not None else []
            decode = {VERSIONS_TABLE: self._version, ALIASES_TABLE: self._alias_event,
                      CHECKPOINTS_TABLE: self._checkpoint}[key]
            rows = [decode(r) for r in raw]
            self._cache[key] = _Cached(snap_id, rows)
            return rows

    @staticmethod
    def _version(r: dict[str, Any]) -> tuple[ModelVersion, str]:
        return ModelVersion(
            name=r["name"], version=int(r["version"]), kind=r["kind"], task=r["task"],
            feature_names=tuple(orjson.loads(r["feature_names"])),
            artifact_uri=r["artifact_uri"], created_at=r["created_at"], parent=r["parent"],
            lineage=orjson.loads(r["lineage"]), metrics=orjson.loads(r["metrics"]),
            epsilon=r["epsilon"], description=r["description"],
            model_meta=orjson.loads(r["model_meta"]),
            artifact_sha256=r.get(DIGEST_COLUMN) or None,
        ), r["row_id"]

    @staticmethod
    def _alias_event(r: dict[str, Any]) -> AliasEvent:
        return AliasEvent(r["name"], r["alias"], int(r["seq"]), r["event"], int(r["version"]),
                          r["previous_version"], r["reason"], r["at"], r["row_id"])

    @staticmethod
    def _checkpoint(r: dict[str, Any]) -> tuple[Checkpoint, str]:
        offsets = {t: {int(p): int(o) for p, o in parts.items()}
                   for t, parts in orjson.loads(r["offsets"]).items()}
        cp = Checkpoint(r["name"], int(r["version"]), int(r["seq"]), r["artifact_uri"], offsets,
                        int(r["examples"]), orjson.loads(r["state"]), r["created_at"],
                        r.get(DIGEST_COLUMN) or None)
        return cp, r["row_id"]

    def _commit(self, key: str, operation: str,
                make_rows: Callable[[list[Any]], list[dict[str, Any]] | None]) -> None:
        """Append the rows ``make_rows`` builds from the table's current rows, in one commit;
        on a conflict re-read and rebuild. ``make_rows`` returns None when the table already
        holds the change (a commit whose outcome was unknown had landed)."""

        def append(tx: Any, table: Table, current: list[Any]) -> bool:
            rows = make_rows(current)
            if rows is None:
                return False
            tx.append(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()),
                      snapshot_properties={OPERATION_KEY: f"registry:{operation}"})
            return True

        self._change(key, append)

    def _change(self, key: str, change: Callable[[Any, Table, list[Any]], bool]) -> None:
        """One optimistic commit to ``key``: ``change`` puts it on a transaction, given the
        table and its current rows (False: nothing to do); on a conflict the table is re-read
        and ``change`` called again."""
        name = identifier(key, self.namespace)

        def attempt(n: int) -> None:
            with self._lock:
                table = self._table(key)
                try:
                    tx = transaction(table)
                    if change(tx, table, self._rows(key, table)):
                        tx.commit_transaction()
                except (OSError, ValueError, TypeError, NoSuchTableError) as exc:
                    raise RegistryCommitError(name, n, f"{type(exc).__name__}: {exc}") from exc

        # The next attempt loads the table afresh (_table), so a conflict needs no re-read.
        retry_commit(attempt, attempts=self.commit_attempts, on_conflict=lambda: None,
                     error=lambda n, last: RegistryCommitError(name, n, last),
                     backoff_s=0.02, max_backoff_s=0.5)

    # -- artifacts -----------------------------------------------------------------------------
    @property
    def artifact_root(self) -> str:
        """Where artifacts are written: ``artifact_root``, else ``<warehouse>/models``, else
        beside the versions table."""
        if self._artifact_root is None:
            warehouse = str(self.catalog.properties.get("warehouse") or "")
            if "://" in warehouse or warehouse.startswith("/"):
                self._artifact_root = warehouse.rstrip("/") + "/models"
            else:
                self._artifact_root = self._table(VERSIONS_TABLE).location().rstrip("/") \
                    + "/artifacts"
        return self._artifact_root

    @property
    def io(self) -> FileIO:
        """The FileIO artifacts are written and read with (the catalog's properties)."""
        if self._io is None:
            self._io = load_file_io(dict(self.catalog.properties), location=self.artifact_root)
        return self._io

    def _write_artifact(self, uri: str, data: bytes) -> None:
        try:
            with self.io.new_output(uri).create(overwrite=False) as out:
                out.write(data)
        except (OSError, ValueError) as exc:
            raise ArtifactError(uri, f"cannot be written: {type(exc).__name__}: {exc}") from exc

    def _delete_artifact(self, uri: str) -> None:
        try:
            self.io.delete(uri)
        except (OSError, ValueError):
            pass  # an unreferenced file is harmless; orphan cleanup removes it

    def read_artifact(self, uri: str) -> bytes:
        """The bytes of an artifact.

        Raises:
            ArtifactError: it cannot be read (missing, no permission).
        """
        try:
            with self.io.new_input(uri).open() as stream:
                return bytes(stream.read())
        except (OSError, ValueError) as exc:
            raise ArtifactError(uri, f"cannot be read: {type(exc).__name__}: {exc}") from exc

    def _artifact_uri(self, name: str, version: int, ext: str, checkpoint: int | None = None
                      ) -> str:
        unique = uuid.uuid4().hex
        if checkpoint is None:
            return f"{self.artifact_root}/{name}/{version}/{unique}.{ext}"
        return f"{self.artifact_root}/{name}/{version}/checkpoints/{checkpoint}-{unique}.{ext}"

    # -- versions ------------------------------------------------------------------------------
    def register(self, name: str, model: ServableModel, *, parent: int | None = None,
                 lineage: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, float] | None = None, epsilon: float | None = None,
                 description: str = "", alias: str | None = None) -> ModelVersion:
        """Store ``model`` as the next version of ``name`` (1 for a new name).

        The artifact is written first, then the row committed; with ``alias`` the new version
        is then promoted to it (a second commit).

        Raises:
            InvalidNameError: ``name`` or ``alias`` cannot be used.
            UnknownModelVersionError: ``parent`` is not a version of ``name``.
            RegistryDataError: lineage or metrics are not JSON-able.
            ArtifactError: the artifact cannot be written.
            RegistryCommitError: the row could not be committed (nothing is registered).
        """
        check_name("model", name)
        if alias is not None:
            check_name("alias", alias)
        if not is_known_kind(model.kind):
            raise RegistryDataError(f"model {name!r}", f"has an unknown kind {model.kind!r}")
        if parent is not None:
            self.get(name, parent)
        data = model.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        meta = {k: v for k, v in model.metadata().items() if k != "name"}
        lineage_json = _json(f"lineage of {name!r}", dict(lineage or {}))
        metrics_json = _json(f"metrics of {name!r}",
                             {str(k): float(v) for k, v in (metrics or {}).items()})
        meta_json = _json(f"metadata of {name!r}", meta)
        row_id = uuid.uuid4().hex
        written: dict[int, str] = {}  # version -> artifact written for it
        outcome: list[ModelVersion] = []

        def make_rows(rows: list[tuple[ModelVersion, str]]) -> list[dict[str, Any]] | None:
            mine = [v for v, rid in rows if rid == row_id]
            if mine:
                outcome.append(mine[0])
                return None
            version = max((v.version for v, _ in rows if v.name == name), default=0) + 1
            if version not in written:
                for stale in written.values():  # someone else took that number
                    self._delete_artifact(stale)
                written.clear()
                uri = self._artifact_uri(name, version, model.artifact_extension)
                self._write_artifact(uri, data)
                written[version] = uri
            return [{
                "name": name, "version": version, "kind": model.kind, "task": model.task,
                "feature_names": _json("feature names", list(model.feature_names)),
                "artifact_uri": written[version], "created_at": datetime.now(UTC),
                "parent": parent, "lineage": lineage_json, "metrics": metrics_json,
                "epsilon": None if epsilon is None else float(epsilon),
                "description": description, "model_meta": meta_json, "row_id": row_id,
                DIGEST_COLUMN: digest,
            }]

        try:
            self._commit(VERSIONS_TABLE, "register", make_rows)
        except RegistryError:
            for uri in written.values():
                self._delete_artifact(uri)
            raise
        registered = outcome[0] if outcome else self._find(name, row_id)
        if alias is not None:
            self.promote(name, registered.version, alias, reason="registered with this alias")
        return registered

    def _find(self, name: str, row_id: str) -> ModelVersion:
        for v, rid in self._rows(VERSIONS_TABLE):
            if rid == row_id:
                return v
        raise RegistryError(f"the registered version of {name!r}", "is missing from the table")

    def _versions_of(self, name: str) -> list[ModelVersion]:
        rows = [v for v, _ in self._rows(VERSIONS_TABLE)]
        mine = sorted((v for v in rows if v.name == name), key=lambda v: v.version)
        if not mine:
            raise UnknownModelError(name, sorted({v.name for v in rows}))
        return mine

    def get(self, name: str, version: int) -> ModelVersion:
        """One version of a model.

        Raises:
            UnknownModelError: no such model.
            UnknownModelVersionError: no such version (the message lists the known ones).
        """
        mine = self._versions_of(name)
        for v in mine:
            if v.version == version:
                return v
        raise UnknownModelVersionError(name, version, [v.version for v in mine])

    def names(self) -> list[str]:
        """The registered model names, sorted."""
        return sorted({v.name for v, _ in self._rows(VERSIONS_TABLE)})

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of ``name`` (of every model when None), by name then version.

        Raises:
            UnknownModelError: ``name`` is given and not registered.
        """
        if name is not None:
            return self._versions_of(name)
        return sorted((v for v, _ in self._rows(VERSIONS_TABLE)),
                      key=lambda v: (v.name, v.version))

    # -- aliases -------------------------------------------------------------------------------
    def alias_events(self, name: str | None = None, alias: str | None = None
                     ) -> list[AliasEvent]:
        """The alias events of ``name`` (of every model when None; of one alias), by name,
        alias, then sequence."""
        events = [e for e in self._rows(ALIASES_TABLE)
                  if (name is None or e.name == name) and (alias is None or e.alias == alias)]
        return sorted(events, key=lambda e: (e.name, e.alias, e.seq))

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> the version holding it now.

        Raises:
            UnknownModelError: no such model.
        """
        self._versions_of(name)
        by_alias: dict[str, list[AliasEvent]] = {}
        for e in self.alias_events(name):
            by_alias.setdefault(e.alias, []).append(e)
        return {a: holders(evs)[-1] for a, evs in sorted(by_alias.items())}

    def resolve(self, name: str, alias: str = CHAMPION) -> ModelVersion:
        """The version holding ``alias``.

        Raises:
            UnknownModelError: no such model.
            UnknownAliasError: the model has never had that alias.
        """
        current = self.aliases(name)
        if alias not in current:
            raise UnknownAliasError(name, alias, current)
        return self.get(name, current[alias])

    def promote(self, name: str, version: int, alias: str = CHAMPION, *, reason: str = "") -> None:
        """Point ``alias`` at ``version``, in one commit; nothing happens if it already does.

        Raises:
            InvalidNameError: ``alias`` cannot be used.
            UnknownModelError / UnknownModelVersionError: no such model or version.
            RegistryCommitError: the event could not be committed (the alias is unchanged).
        """
        check_name("alias", alias)
        self.get(name, version)
        self._move_alias(name, alias, "promote", reason, lambda stack: version)

    def rollback(self, name: str, alias: str = CHAMPION) -> ModelVersion:
        """Point ``alias`` back at the version that held it before the current holder (as the
        events record it), and record that as a new event. Rolling back again goes further
        back.

        Raises:
            UnknownModelError: no such model.
            UnknownAliasError: the model has never had that alias.
            NoPreviousVersionError: the alias has had no earlier holder.
            RegistryCommitError: the event could not be committed (the alias is unchanged).
        """
        self._versions_of(name)

        def target(stack: list[int]) -> int:
            if not stack:
                raise UnknownAliasError(name, alias, self.aliases(name))
            if len(stack) < 2:
                raise NoPreviousVersionError(name, alias, stack[-1])
            return stack[-2]

        version = self._move_alias(name, alias, "rollback", "rollback", target)
        return self.get(name, version)

    def _move_alias(self, name: str, alias: str, event: str, reason: str,
                    target: Callable[[list[int]], int]) -> int:
        row_id = uuid.uuid4().hex
        chosen: list[int] = []

        def make_rows(rows: list[AliasEvent]) -> list[dict[str, Any]] | None:
            events = sorted((e for e in rows if e.name == name and e.alias == alias),
                            key=lambda e: e.seq)
            mine = [e for e in events if e.row_id == row_id]
            if mine:
                chosen.append(mine[0].version)
                return None
            stack = holders(events)
            version = target(stack)
            chosen.clear()
            chosen.append(version)
            previous = stack[-1] if stack else None
            if event == "promote" and previous == version:
                return None
            return [{"name": name, "alias": alias, "seq": (events[-1].seq if events else 0) + 1,
                     "event": event, "version": version, "previous_version": previous,
                     "reason": reason, "at": datetime.now(UTC), "row_id": row_id}]

        self._commit(ALIASES_TABLE, event, make_rows)
        return chosen[-1]

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoints_of(self, name: str, version: int) -> list[tuple[Checkpoint, str]]:
        rows = self._rows(CHECKPOINTS_TABLE)
        return sorted((r for r in rows if r[0].name == name and r[0].version == version),
                      key=lambda r: r[0].seq)

    def save_checkpoint(self, name: str, version: int, model: ServableModel, *,
                        offsets: Mapping[str, Mapping[int, int]], examples: int,
                        state: Mapping[str, Any]) -> Checkpoint:
        """Save what ``model`` (a version of ``name`` that learns) has learned so far.

        Args:
            name: Model name.
            version: The version the model is.
            model: The model, with its learned state.
            offsets: Topic -> partition -> next offset to consume: where learning resumes.
            examples: Examples this version has learned.
            state: JSON-able learner state.

        Raises:
            UnknownModelError / UnknownModelVersionError: no such model or version.
            ModelKindMismatchError: the model is not of the version's kind.
            RegistryDataError: offsets or state are not what they should be.
            ArtifactError / RegistryCommitError: nothing was saved.
        """
        registered = self.get(name, version)
        if model.kind != registered.kind:
            raise ModelKindMismatchError(name, version, registered.kind, model.kind)
        subject = f"checkpoint of {name!r} version {version}"
        clean_offsets = _offsets(subject, offsets)
        offsets_json = _json(f"offsets of the {subject}", clean_offsets)
        state_json = _json(f"state of the {subject}", dict(state))
        data = model.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        row_id = uuid.uuid4().hex
        written: dict[int, str] = {}
        outcome: list[Checkpoint] = []

        def make_rows(rows: list[tuple[Checkpoint, str]]) -> list[dict[str, Any]] | None:
            mine = [cp for cp, rid in rows if rid == row_id]
            if mine:
                outcome.append(mine[0])
                return None
            seq = max((cp.seq for cp, _ in rows if cp.name == name and cp.version == version),
                      default=0) + 1
            if seq not in written:
                for stale in written.values():
                    self._delete_artifact(stale)
                written.clear()
                uri = self._artifact_uri(name, version, model.artifact_extension,
                                         checkpoint=seq)
                self._write_artifact(uri, data)
                written[seq] = uri
            return [{"name": name, "version": version, "seq": seq, "artifact_uri": written[seq],
                     "offsets": offsets_json, "examples": int(examples), "state": state_json,
                     "created_at": datetime.now(UTC), "row_id": row_id,
                     DIGEST_COLUMN: digest}]

        try:
            self._commit(CHECKPOINTS_TABLE, "checkpoint", make_rows)
        except RegistryError:
            for uri in written.values():
                self._delete_artifact(uri)
            raise
        if outcome:
            return outcome[0]
        for cp, rid in self._checkpoints_of(name, version):
            if rid == row_id:
                return cp
        raise RegistryError(f"the saved {subject}", "is missing from the table")

    def latest_checkpoint(self, name: str, version: int) -> Checkpoint | None:
        """The newest checkpoint of a version, or None.

        Raises:
            UnknownModelError / UnknownModelVersionError: no such model or version.
        """
        self.get(name, version)
        mine = self._checkpoints_of(name, version)
        return mine[-1][0] if mine else None

    def checkpoints(self, name: str, version: int) -> list[Checkpoint]:
        """Every checkpoint of a version, oldest first."""
        self.get(name, version)
        return [cp for cp, _ in self._checkpoints_of(name, version)]

    def prune_checkpoints(self, name: str, keep: int, version: int | None = None
                          ) -> list[Checkpoint]:
        """Delete every checkpoint of ``name`` (of ``version`` only, when given) but the
        ``keep`` newest of each version; returns the deleted ones, oldest first.

        The rows go in one delete commit (re-read and retried when a concurrent commit lands
        first), then their artifacts: a crash in between leaves unreferenced files, never a
        row pointing to a missing file. The newest checkpoint of a version, the one a restart
        resumes from, is always kept.

        Raises:
            RegistryDataError: ``keep`` is below 1.
            UnknownModelError / UnknownModelVersionError: no such model or version.
            RegistryCommitError: nothing was deleted.
        """
        if keep < 1:
            raise RegistryDataError(f"checkpoints of {name!r} to keep", f"is {keep}, not >= 1")
        versions = [version] if version is not None else [
            v.version for v in self._versions_of(name)]
        for v in versions:
            self.get(name, v)
        wanted = set(versions)
        doomed: list[tuple[Checkpoint, str]] = []

        def delete(tx: Any, _: Table, rows: list[tuple[Checkpoint, str]]) -> bool:
            by_version: dict[int, list[tuple[Checkpoint, str]]] = {}
            for cp, rid in rows:
                if cp.name == name and cp.version in wanted:
                    by_version.setdefault(cp.version, []).append((cp, rid))
            doomed[:] = [r for mine in by_version.values()
                         for r in sorted(mine, key=lambda r: r[0].seq)[:-keep]]
            if not doomed:
                return False
            # pyiceberg types In by its pydantic fields, not its constructor's arguments.
            ids = In("row_id", [rid for _, rid in doomed])  # type: ignore[call-arg,arg-type]
            tx.delete(ids, snapshot_properties={OPERATION_KEY: "registry:prune"})
            return True

        self._change(CHECKPOINTS_TABLE, delete)
        for cp, _ in doomed:
            self._delete_artifact(cp.artifact_uri)
        return sorted((cp for cp, _ in doomed), key=lambda cp: (cp.version, cp.seq))

    def delete_orphan_artifacts(self, older_than: datetime | timedelta = ORPHAN_AGE, *,
                                dry_run: bool = False) -> list[str]:
        """Delete the files under the artifact root that no version or checkpoint row points
        to and that were last modified before ``older_than`` (a time, or an age): what a
        registration or checkpoint that crashed before its commit, or a prune that crashed
        before deleting its files, left behind. Younger files stay: an artifact is written
        before its row is committed. Returns the paths deleted (or, with ``dry_run``, that
        would be).

        Raises:
            ArtifactError: the artifact root cannot be listed.
        """
        from refluent.lake.maintenance import delete_unreferenced_files

        referenced = {v.artifact_uri for v, _ in self._rows(VERSIONS_TABLE)}
        referenced |= {cp.artifact_uri for cp, _ in self._rows(CHECKPOINTS_TABLE)}
        try:
            return delete_unreferenced_files(self.io, self.artifact_root, referenced,
                                             older_than, dry_run=dry_run)
        except OSError as exc:
            raise ArtifactError(self.artifact_root, str(exc)) from exc

    def load_checkpoint(self, checkpoint: Checkpoint) -> ServableModel:
        """The model as it was at ``checkpoint``.

        Raises:
            ArtifactError: the artifact cannot be read.
            ArtifactDigestError: the artifact is not the one the checkpoint stored.
            ModelLoadError: it is not a model of the version's kind.
        """
        registered = self.get(checkpoint.name, checkpoint.version)
        return self._load(registered, checkpoint.artifact_uri, checkpoint.artifact_sha256,
                          checkpoint.seq)

    # -- loading -------------------------------------------------------------------------------
    def _load(self, registered: ModelVersion, uri: str, digest: str | None,
              checkpoint: int | None = None) -> ServableModel:
        """The model in ``uri``, once its bytes match ``digest`` (None: stored before digests
        were recorded, loaded unchecked)."""
        data = self.read_artifact(uri)
        if digest is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ArtifactDigestError(registered.name, registered.version, uri, digest,
                                          actual, checkpoint)
        meta = dict(registered.model_meta)
        meta.setdefault("task", registered.task)
        meta.setdefault("feature_names", list(registered.feature_names))
        meta["name"] = f"{registered.name}@v{registered.version}"
        return load_model(registered.kind, data, meta)

    def load(self, name: str, version: int | None = None, alias: str = CHAMPION
             ) -> tuple[ModelVersion, ServableModel]:
        """A version (``version``, else the holder of ``alias``) and its model, as of its
        latest checkpoint when it has one. The model is named ``<name>@v<version>``.

        Raises:
            UnknownModelError / UnknownModelVersionError / UnknownAliasError: nothing to load.
            ArtifactError: the artifact cannot be read.
            ArtifactDigestError: the artifact is not the one the registry stored.
            ModelLoadError: it is not a model of the registered kind.
        """
        registered = self.get(name, version) if version is not None else self.resolve(name, alias)
        latest = self._checkpoints_of(registered.name, registered.version)
        if latest:
            cp = latest[-1][0]
            return registered, self._load(registered, cp.artifact_uri, cp.artifact_sha256,
                                          cp.seq)
        return registered, self._load(registered, registered.artifact_uri,
                                      registered.artifact_sha256)

    def revision(self, name: str) -> str:
        """A token that changes whenever the aliases or checkpoints of ``name`` change.

        Cheap: it re-reads the two tables' metadata and scans them only when one has a new
        snapshot. A name never registered gets a token too (serving may poll before the first
        registration).
        """
        with self._lock:
            aliases = self._table(ALIASES_TABLE)
            checkpoints = self._table(CHECKPOINTS_TABLE)
            a_snap, c_snap = aliases.current_snapshot(), checkpoints.current_snapshot()
            key = (a_snap.snapshot_id if a_snap is not None else None,
                   c_snap.snapshot_id if c_snap is not None else None)
            cached = self._revisions.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
            events = [(e.alias, e.seq) for e in self._rows(ALIASES_TABLE, aliases)
                      if e.name == name]
            cps = [(cp.version, cp.seq) for cp, _ in self._rows(CHECKPOINTS_TABLE, checkpoints)
                   if cp.name == name]
            digest = hashlib.sha256(_json("revision", [sorted(events), sorted(cps)]).encode())
            token = digest.hexdigest()[:16]
            self._revisions[name] = (key, token)
            return token

    def close(self) -> None:
        """Close the catalog if the registry opened it."""
        with self._lock:
            if self._catalog is not None and self._catalog is not self._catalog_source:
                close = getattr(self._catalog, "close", None)
                if callable(close):
                    close()
            self._catalog = None
            self._tables.clear()


__all__ = ["ALIASES_TABLE", "CHECKPOINTS_TABLE", "DIGEST_COLUMN", "VERSIONS_TABLE",
           "IcebergModelRegistry", "check_name", "holders"]
