"""The models being served: each model's champion (or a pinned version), kept current.

:class:`ModelHolder` loads a model from the registry the first time it is asked for (or at
:meth:`ModelHolder.start` for the names it is given), then polls
:meth:`~refluent.registry.ModelRegistry.revision` every ``refresh_s`` seconds from a
background thread. When the revision moved it resolves the alias again and looks at the latest
checkpoint; a new version or a newer checkpoint is loaded in the background and swapped in with
one reference assignment.

Swap guarantee: a scorer takes a :class:`LoadedModel` once per batch and scores the whole batch
with it, so every batch is scored by exactly one version (the one each prediction names), a
swap never waits for or interrupts a batch, and no request is dropped or answered twice because
of one. A poll that fails (registry down) leaves the model in hand serving and is counted in
``refluent_serving_model_refresh_errors_total``.

Examples:
    >>> holder = ModelHolder(registry, names=["churn"], refresh_s=2.0)  # doctest: +SKIP
    >>> holder.start()  # doctest: +SKIP
    >>> loaded = holder.get("churn")  # doctest: +SKIP
    >>> loaded.version.version, loaded.checkpoint  # doctest: +SKIP
    (3, 12)
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refluent.errors import RefluentError
from refluent.observability import serving as m
from refluent.registry.errors import (
    UnknownAliasError,
    UnknownModelError,
    UnknownModelVersionError,
)
from refluent.streams.processing import RecordRejected

if TYPE_CHECKING:
    from refluent.models.base import ServableModel
    from refluent.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

Key = tuple[str, int | None]
"""(model name, pinned version or None for the alias)."""
_UNKNOWN = (UnknownModelError, UnknownModelVersionError, UnknownAliasError)
MAX_PINNED = 8
"""Pinned versions kept loaded unless told otherwise (``serving.max_pinned_versions``)."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One model as it is served now.

    Attributes:
        version: The registry's version record.
        model: The loaded model (never trained by the service).
        checkpoint: Sequence of the checkpoint it was loaded from; None for the registered
            artifact.
        alias: The alias it was resolved through; None for a pinned version.
        revision: The registry revision it was loaded at.
    """

    version: ModelVersion
    model: ServableModel
    checkpoint: int | None
    alias: str | None
    revision: str

    @property
    def name(self) -> str:
        """Model name."""
        return self.version.name

    @property
    def number(self) -> int:
        """Version number."""
        return self.version.version


class UnknownServedModelError(RecordRejected):
    """A request names a model, version or alias the registry does not know.

    ``reason`` is ``unknown_model`` or ``unknown_version``; dead-lettered from Kafka, 404 over
    HTTP.
    """

    def __init__(self, name: str, version: int | None, detail: str) -> None:
        self.name = name
        self.version = version
        reason = "unknown_model" if version is None else "unknown_version"
        what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
        super().__init__("serving", reason, f"{what} cannot be served: {detail}")


class ModelHolder:
    """Loads models from the registry and swaps in new champions and checkpoints.

    Thread safety: :meth:`get` may be called from any thread; loads are serialised by a lock,
    reads of the current model take none.

    Args:
        registry: The model registry.
        names: Models loaded at :meth:`start` (each must exist); others load on first request.
        alias: Alias served when a request pins no version.
        refresh_s: Seconds between two registry polls.
        only_named: Serve only ``names``; any other model is unknown to this service.
        on_swap: Called with the old and the new model after each swap.
        max_pinned: Most pinned versions kept loaded; loading one more drops the least
            recently used (a later request for it loads it again). Models served by alias
            are always kept.

    Memory is bounded: the holder keeps the models served by alias and at most
    ``max_pinned`` pinned versions, and nothing about names or versions the registry does not
    know (the registry answers those from its cached tables).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        names: Sequence[str] = (),
        alias: str = "champion",
        refresh_s: float = 2.0,
        only_named: bool = False,
        on_swap: Callable[[LoadedModel, LoadedModel], None] | None = None,
        max_pinned: int = MAX_PINNED,
    ) -> None:
        self.registry = registry
        self.names = list(names)
        self.only_named = only_named
        self.alias = alias
        self.refresh_s = refresh_s
        self.on_swap = on_swap
        self.swaps = 0
        self.max_pinned = max(1, max_pinned)
        self._held: dict[Key, LoadedModel] = {}
        self._pinned: OrderedDict[Key, None] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, poll: bool = True) -> None:
        """Load the named models, then poll the registry from a daemon thread (``poll``).

        Raises:
            UnknownServedModelError: a named model has no such alias in the registry.
        """
        for name in self.names:
            self.get(name)
        if poll and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll_loop, name="refluent-models",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop polling (models in hand stay usable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.refresh_s, 1.0) + 5)
            self._thread = None

    def __enter__(self) -> ModelHolder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------

    def peek(self, name: str, version: int | None = None) -> LoadedModel | None:
        """The model :meth:`get` would return if it is loaded already, else None; never
        blocks (for an event loop: only a miss needs :meth:`get` in a worker thread)."""
        held = self._held.get((name, version))
        if held is not None and version is not None:
            self._touch((name, version))
        return held

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The model that scores the next batch for ``name`` (``version`` pins one).

        Raises:
            UnknownServedModelError: the registry knows no such model, version or alias.
        """
        key = (name, version)
        held = self._held.get(key)
        if held is not None:
            if version is not None:
                self._touch(key)
            return held
        if self.only_named and name not in self.names:
            raise UnknownServedModelError(name, None, "not served here (this service "
                                          f"serves {', '.join(self.names)})")
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                return held
            try:
                loaded = self._load(name, version)
            except RefluentError as exc:
                if not isinstance(exc, _UNKNOWN):
                    raise
                raise UnknownServedModelError(name, version, str(exc)) from exc
            self._held[key] = loaded
            if version is not None:
                self._pinned[key] = None
                while len(self._pinned) > self.max_pinned:
                    dropped, _ = self._pinned.popitem(last=False)
                    self._held.pop(dropped, None)
                    log.info("model %s: version %s unloaded (least recently used of %d pinned "
                             "versions)", dropped[0], dropped[1], self.max_pinned)
            self._observe(loaded)
            return loaded

    def _touch(self, key: Key) -> None:
        """Mark a pinned version as just used (it is dropped last)."""
        with self._lock:
            if key in self._pinned:
                self._pinned.move_to_end(key)

    def held(self) -> dict[Key, LoadedModel]:
        """Every model in hand, by (name, pinned version)."""
        return dict(self._held)

    def is_ready(self) -> bool:
        """True once every model named at construction is loaded."""
        return all((name, None) in self._held for name in self.names)

    # -- refreshing --------------------------------------------------------------------------

    def refresh(self) -> list[LoadedModel]:
        """Poll the registry once for every model in hand; returns the models swapped in."""
        swapped: list[LoadedModel] = []
        revisions: dict[str, str] = {}
        for key, held in list(self._held.items()):
            name = key[0]
            try:
                if name not in revisions:
                    revisions[name] = self.registry.revision(name)
                if revisions[name] == held.revision:
                    continue
                new = self._load(name, key[1], revisions[name], held)
            except Exception as exc:  # noqa: BLE001 - keep serving the model in hand
                m.MODEL_REFRESH_ERRORS.labels(name).inc()
                log.warning("model %s: registry poll failed, still serving version %s: %s",
                            name, held.number, exc)
                continue
            with self._lock:
                if key not in self._held:
                    continue  # dropped while it was loading
                self._held[key] = new
            if new is not held and (new.number, new.checkpoint) != (held.number,
                                                                    held.checkpoint):
                self.swaps += 1
                swapped.append(new)
                self._observe(new)
                m.MODEL_SWAPS.labels(name, self._alias_label(new)).inc()
                log.info("model %s: now serving version %s checkpoint %s (was %s/%s)", name,
                         new.number, new.checkpoint, held.number, held.checkpoint)
                if self.on_swap is not None:
                    self.on_swap(held, new)
        return swapped

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def _load(self, name: str, version: int | None, revision: str | None = None,
              held: LoadedModel | None = None) -> LoadedModel:
        """Load ``name`` (its alias, or the pinned ``version``) with its latest checkpoint.

        The revision is read first, so a change that lands while loading shows up at the next
        poll. When ``held`` already is that version and checkpoint it is kept (with the new
        revision) instead of loading the same thing again.
        """
        registry = self.registry
        if revision is None:
            revision = registry.revision(name)
        if version is None:
            record = registry.resolve(name, self.alias)
        else:
            record = registry.get(name, version)
        checkpoint = registry.latest_checkpoint(name, record.version)
        seq = checkpoint.seq if checkpoint is not None else None
        alias = self.alias if version is None else None
        if held is not None and (held.number, held.checkpoint) == (record.version, seq):
            return LoadedModel(held.version, held.model, seq, alias, revision)
        if checkpoint is not None:
            model = registry.load_checkpoint(checkpoint)
        else:
            _, model = registry.load(name, record.version)
        return LoadedModel(record, model, seq, alias, revision)

    def _alias_label(self, loaded: LoadedModel) -> str:
        return loaded.alias or f"v{loaded.number}"

    def _observe(self, loaded: LoadedModel) -> None:
        alias = self._alias_label(loaded)
        m.MODEL_VERSION.labels(loaded.name, alias).set(loaded.number)
        m.MODEL_CHECKPOINT.labels(loaded.name, alias).set(
            -1 if loaded.checkpoint is None else loaded.checkpoint)
