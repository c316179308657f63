"""The scoring path both front ends share: :class:`Scorer` turns a batch of requests into
predictions.

For a batch of requests the scorer takes the model of each (name, pinned version) once from the
:class:`~refluent.serving.holder.ModelHolder` (so one version scores the batch), reads the online
features of every entity the batch needs with one store call per view, applies the
stale-feature policies (:mod:`refluent.serving.policy`), scores the valid rows with one
``predict_many`` call per model and builds one :class:`~refluent.streams.contracts.Prediction`
per request, or the reason the request was rejected (``unknown_model``, ``unknown_version``,
``missing_entity``, ``stale_features``, ``missing_features``, ``feature_type``,
``model_input``, ...).

The ``prediction_id`` is derived from the model name and ``request_id``, so a replayed request
gets the same prediction id and downstream consumers (the feedback join, the lake) can drop the
repeat.

Examples:
    >>> prediction_id("churn", "r-1") == prediction_id("churn", "r-1")
    True
    >>> prediction_id("churn", "r-1") == prediction_id("churn", "r-2")
    False
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from refluent.models.errors import ModelError, ModelInputError
from refluent.observability import serving as m
from refluent.serving.holder import LoadedModel, ModelHolder
from refluent.serving.policy import (
    FeatureCatalog,
    FeaturePlan,
    FeaturePlanError,
    StalePolicies,
    StoreRead,
    assemble,
    check_numeric,
    needed_reads,
    rejected,
)
from refluent.streams.contracts import FeatureValue, Prediction, PredictionRequest
from refluent.streams.processing import RecordRejected

if TYPE_CHECKING:
    from refluent.config import Settings
    from refluent.models.base import ServableModel
    from refluent.online_store.base import OnlineStoreReader

_ID_NAMESPACE = uuid.UUID("5b0c1d4e-8f57-4a55-9a8e-2f0f6f1c8e11")


def prediction_id(model: str, request_id: str) -> str:
    """The id of the prediction that answers ``request_id`` with ``model``: the same for a
    replayed request, so its repeat can be recognised downstream."""
    return uuid.uuid5(_ID_NAMESPACE, f"{model}\x00{request_id}").hex


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One row to score, from Kafka or HTTP.

    Attributes:
        request_id: Caller's id of the request.
        model: Model name.
        entity_id: Entity whose online features are read; None reads none.
        features: Request-time features (they win over online ones).
        ts: When the caller made the request (latency is measured from it), if known.
        received: When the service received it (epoch seconds).
        version: A pinned version; None serves the model's alias (champion).
    """

    request_id: str
    model: str
    entity_id: str | None = None
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    ts: datetime | None = None
    received: float = field(default_factory=time.time)
    version: int | None = None

    @classmethod
    def from_event(cls, event: PredictionRequest, received: float) -> ScoreRequest:
        """The row of a :class:`~refluent.streams.contracts.PredictionRequest`."""
        return cls(event.request_id, event.model, event.entity_id, event.features, event.ts,
                   received)


ScoreOutcome = Prediction | RecordRejected
"""A request's answer: its prediction, or why it was rejected."""


@dataclass
class ScoredBatch:
    """What :meth:`Scorer.score` made of a batch.

    Attributes:
        outcomes: One per request, in order.
        loaded: The model that scored each (name, pinned version) of the batch.
        fetch_s: Seconds spent reading online features.
        model_s: Seconds spent scoring.
    """

    outcomes: list[ScoreOutcome]
    loaded: dict[tuple[str, int | None], LoadedModel] = field(default_factory=dict)
    fetch_s: float = 0.0
    model_s: float = 0.0


class Scorer:
    """Turns batches of requests into predictions (see the module docstring).

    Thread safety: one scorer may serve several threads; a batch touches no shared state but
    the holder (safe) and the reader (safe).

    Args:
        holder: The models being served.
        reader: The online store; None serves request-time features only.
        catalog: The declared feature views.
        policies: Stale-feature policies.
        source: Label of the front end in metrics (``kafka``, ``http``).
        clock: Current time in epoch seconds.
    """

    def __init__(
        self,
        holder: ModelHolder,
        reader: OnlineStoreReader | None,
        catalog: FeatureCatalog,
        policies: StalePolicies,
        *,
        source: str = "kafka",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.reader = reader
        self.catalog = catalog
        self.policies = policies
        self.source = source
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, holder: ModelHolder,
                      reader: OnlineStoreReader | None, catalog: FeatureCatalog,
                      **kwargs: Any) -> Scorer:
        """A scorer with the policies of ``settings.serving``."""
        serving = settings.serving
        policies = StalePolicies(serving.stale_policy, serving.view_policies,
                                 serving.max_feature_age_s)
        return cls(holder, reader, catalog, policies, **kwargs)

    def with_source(self, source: str) -> Scorer:
        """The same scorer labelled ``source`` in metrics."""
        return Scorer(self.holder, self.reader, self.catalog, self.policies, source=source,
                      clock=self.clock)

    # -- the batch ---------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest]) -> ScoredBatch:
        """Score ``requests``; one outcome per request, in order.

        Raises:
            OnlineStoreError: the online store could not be read (a fault: nothing is
                answered, the caller retries or stops).
        """
        outcomes: list[ScoreOutcome | None] = [None] * len(requests)
        batch = ScoredBatch([])
        groups: dict[tuple[str, int | None], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((req.model, req.version), []).append(i)
        plans: dict[tuple[str, int | None], FeaturePlan] = {}
        for key, idx in groups.items():
            try:
                loaded = self.holder.get(*key)
                plan = self.catalog.plan(loaded.model.feature_names, loaded.name)
            except RecordRejected as exc:
                for i in idx:
                    outcomes[i] = exc
                continue
            except FeaturePlanError as exc:
                err = rejected("feature_plan", str(exc))
                for i in idx:
                    outcomes[i] = err
                continue
            batch.loaded[key] = loaded
            plans[key] = plan

        started = time.perf_counter()
        reads = self._read(requests, groups, plans)
        batch.fetch_s = time.perf_counter() - started

        started = time.perf_counter()
        for key, plan in plans.items():
            self._score_group(requests, groups[key], plan, batch.loaded[key], reads, outcomes)
        batch.model_s = time.perf_counter() - started
        batch.outcomes = [o if o is not None else rejected("internal", "not scored")
                          for o in outcomes]
        self._count(requests, batch.outcomes)
        return batch

    def _read(
        self,
        requests: Sequence[ScoreRequest],
        groups: Mapping[tuple[str, int | None], list[int]],
        plans: Mapping[tuple[str, int | None], FeaturePlan],
    ) -> dict[tuple[str, tuple[str, ...] | None, str], StoreRead]:
        """Every (view, features, entity) the batch needs, one store call per view read."""
        wanted: dict[tuple[str, tuple[str, ...] | None], dict[str, None]] = {}
        for key, plan in plans.items():
            if not plan.reads:
                continue
            for i in groups[key]:
                req = requests[i]
                if req.entity_id is None:
                    continue
                for read in needed_reads(plan, req.features):
                    wanted.setdefault((read.view, read.features), {})[req.entity_id] = None
        out: dict[tuple[str, tuple[str, ...] | None, str], StoreRead] = {}
        if not wanted or self.reader is None:
            return out
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        for (view, features), entities in wanted.items():
            rows = self.reader.get_online_features(view, list(entities), features, now)
            for row in rows:
                age = row.age.total_seconds() if row.age is not None else None
                out[(view, features, row.entity_id)] = StoreRead(row.values, age, row.found)
        return out

    def _score_group(
        self,
        requests: Sequence[ScoreRequest],
        idx: list[int],
        plan: FeaturePlan,
        loaded: LoadedModel,
        reads: Mapping[tuple[str, tuple[str, ...] | None, str], StoreRead],
        outcomes: list[ScoreOutcome | None],
    ) -> None:
        model = loaded.model
        numeric = model.numeric_inputs
        rows: list[int] = []
        inputs: list[Any] = []
        for i in idx:
            req = requests[i]
            entity = req.entity_id
            views: dict[str, StoreRead] = {}
            if entity is not None:
                for read in needed_reads(plan, req.features):
                    got = reads.get((read.view, read.features, entity))
                    if got is not None:
                        views[read.view] = got
            try:
                assembled = assemble(entity, plan, views, req.features, self.policies,
                                     self.catalog)
                if numeric:
                    check_numeric(loaded.name, model.feature_names, assembled.features)
            except RecordRejected as exc:
                outcomes[i] = exc
                continue
            rows.append(i)
            inputs.append(assembled)
        if not rows:
            return
        scored = _predict(model, [a.features for a in inputs], loaded)
        now = self.clock()
        version = str(loaded.number)
        for i, assembled, answer in zip(rows, inputs, scored, strict=True):
            if isinstance(answer, RecordRejected):
                outcomes[i] = answer
                continue
            req = requests[i]
            start = req.received
            if req.ts is not None:
                sent = req.ts.timestamp()
                if sent <= now:
                    start = sent
            # The prediction's event time is the question's: when the request was made (or
            # received, when it does not say), never when a backlog let it be scored. Labels
            # are timed against questions, and a replay then rebuilds the same prediction.
            ts = datetime.fromtimestamp(start, tz=UTC)
            try:
                outcomes[i] = Prediction(
                    prediction_id=prediction_id(loaded.name, req.request_id),
                    request_id=req.request_id, model_name=loaded.name, model_version=version,
                    entity_id=req.entity_id or "", score=answer.score, label=answer.label,
                    probabilities=answer.probabilities, features=assembled.features,
                    feature_ages_ms=assembled.ages_ms, stale=assembled.stale, ts=ts,
                    latency_ms=max(now - start, 0.0) * 1000,
                )
            except ValidationError as exc:
                outcomes[i] = rejected("model_output", f"model {loaded.name} version "
                                       f"{version} answered something that is not a "
                                       f"prediction: {exc.errors()[0]['msg']}")

    def _count(self, requests: Sequence[ScoreRequest], outcomes: Sequence[ScoreOutcome]) -> None:
        source = self.source
        counts: dict[tuple[str, str], int] = {}
        rejects: dict[tuple[str, str], int] = {}
        stale: dict[str, int] = {}
        for req, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, Prediction):
                k = (outcome.model_name, outcome.model_version)
                counts[k] = counts.get(k, 0) + 1
                if outcome.stale:
                    stale[outcome.model_name] = stale.get(outcome.model_name, 0) + 1
            else:
                # A name no registry knows stays out of the labels: callers choose it freely.
                name = "(unknown)" if outcome.reason == "unknown_model" else req.model
                r = (name, outcome.reason)
                rejects[r] = rejects.get(r, 0) + 1
        for (name, version), n in counts.items():
            m.PREDICTIONS.labels(name, version, source).inc(n)
        for (name, reason), n in rejects.items():
            m.REJECTED.labels(name, reason, source).inc(n)
        for name, n in stale.items():
            m.STALE_SERVED.labels(name).inc(n)


def _predict(model: ServableModel, xs: list[dict[str, FeatureValue]],
             loaded: LoadedModel) -> list[Any]:
    """One ``predict_many`` call; if the model refuses a row, row by row to find which."""
    try:
        return list(model.predict_many(xs))
    except ModelError:
        pass  # row by row below names the row at fault
    out: list[Any] = []
    for x in xs:
        try:
            out.append(model.predict_one(x))
        except ModelInputError as exc:
            out.append(rejected("model_input", f"version {loaded.number}: {exc}"))
        except ModelError as exc:
            out.append(rejected("model_error", f"version {loaded.number}: {exc}"))
    return out


def build_scorer(
    settings: Settings,
    *,
    models: Sequence[str] = (),
    views: str | Sequence[Any] | None = None,
    registry: Any | None = None,
    reader: OnlineStoreReader | None = None,
    only_named: bool | None = None,
) -> Scorer:
    """The scoring path from ``settings``: the registry, a model holder, the online store and
    the declared views. Nothing is loaded or connected yet (see :meth:`ModelHolder.start`
    and :meth:`~refluent.online_store.base.OnlineStoreReader.setup`).

    Args:
        settings: Refluent settings.
        models: Models loaded at start (and, with ``only_named``, the only ones served).
        views: The views module (default ``processing.views``) or the views themselves;
            none declared means request-time features only.
        registry: The model registry (default: :meth:`ModelRegistry.from_settings`).
        reader: The online store reader (default: the configured Redis).
        only_named: Serve only ``models`` (default: True when some are named).
    """
    from refluent.errors import ConfigError
    from refluent.processors.features import discover

    if registry is None:
        from refluent.registry import ModelRegistry

        registry = ModelRegistry.from_settings(settings)
    target = views if views is not None else settings.processing.views
    declared = list(discover(target)) if isinstance(target, str) else list(target or [])
    names = {v.name for v in declared}
    unknown = sorted(set(settings.serving.view_policies) - names)
    if unknown:
        raise ConfigError("serving.view_policies", f"names view(s) {', '.join(unknown)} that "
                          f"are not declared (declared: {', '.join(sorted(names)) or 'none'})",
                          "fix the view names, or pass the views module with --views")
    if reader is None and declared:
        from refluent.online_store.redis import RedisOnlineReader

        reader = RedisOnlineReader.from_settings(settings)
    holder = ModelHolder(registry, names=models, refresh_s=settings.serving.model_refresh_s,
                         only_named=bool(models) if only_named is None else only_named,
                         max_pinned=settings.serving.max_pinned_versions)
    return Scorer.from_settings(settings, holder, reader, FeatureCatalog(declared))
