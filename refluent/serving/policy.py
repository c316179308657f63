"""Which online features a model reads, and what a stale or missing view gets: pure logic.

Naming rule (how a model's inputs map to the feature views):

- ``<view>.<feature>``, where ``<view>`` is a declared view: that feature of that view. A
  windowed view must declare the feature; an entity-state view must list it in ``columns``
  (one with ``columns=None`` serves any column).
- a plain name: the one view that declares it (a windowed view's aggregation, an entity-state
  view's ``columns``). Declared by two views, it is ambiguous and the model cannot be served
  until it is qualified. Declared by none, it is a request-time feature: the request must bring
  it.
- a model that declares no inputs (a River model that takes any dict) reads every feature of
  every declared view, each named ``<view>.<feature>``.

Request-time ``features`` win over online values of the same name. A view is not read for a
request that brings every feature the model wants from it. Values that are None are left out of
the model's input (River reads a missing key as missing; an ONNX model then rejects the request,
naming the feature).

Stale policy, per view (``serving.view_policies``, else ``serving.stale_policy``). A view is
stale for an entity when the store holds nothing live for it (unknown, expired or deleted) or
its values are older than ``serving.max_feature_age_s``:

- ``default``: the view's declared defaults are served instead (the value of an empty window:
  0 for count, sum and approx_distinct, None for mean, min, max and last; None for entity-state
  columns). A wanted feature whose default is None rejects the request (``missing_features``).
- ``reject``: the request is rejected (``stale_features`` naming the view and the age, or
  ``missing_entity`` when the store holds nothing for it).
- ``flag``: the values are served as they are (nothing, when the entity is missing) and the
  prediction is flagged ``stale``.

Examples:
    >>> from datetime import timedelta
    >>> from refluent.processors.aggregations import Aggregation
    >>> from refluent.processors.features import FeatureView
    >>> from refluent.processors.windows import Tumbling
    >>> orders = FeatureView("orders", "customer_id", ("cdc.orders",), (
    ...     Aggregation("n_1h", "count", None, Tumbling(timedelta(hours=1))),
    ...     Aggregation("avg_1h", "mean", "amount", Tumbling(timedelta(hours=1)))))
    >>> catalog = FeatureCatalog([orders])
    >>> plan = catalog.plan(["n_1h", "orders.avg_1h", "basket"])
    >>> [(r.view, r.features, r.inputs) for r in plan.reads]
    [('orders', ('n_1h', 'avg_1h'), ('n_1h', 'orders.avg_1h'))]
    >>> plan.request_only
    ('basket',)
    >>> catalog.defaults("orders")
    {'n_1h': 0, 'avg_1h': None}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from refluent.errors import RefluentError
from refluent.processors.accumulators import make_accumulator
from refluent.processors.features import FeatureView, View
from refluent.streams.contracts import FeatureValue
from refluent.streams.processing import RecordRejected

StalePolicy = Literal["default", "reject", "flag"]
STEP = "serving"
"""The step named in the dead-letter headers of a request the service rejected."""


class FeaturePlanError(RefluentError):
    """A model's inputs cannot be mapped to the declared feature views."""

    def __init__(self, model: str, feature: str, problem: str) -> None:
        self.model = model
        self.feature = feature
        self.problem = problem
        super().__init__(f"model {model}: input {feature!r}: {problem}")


def rejected(reason: str, detail: str) -> RecordRejected:
    """The rejection of one request by the serving step, with a short ``reason``."""
    return RecordRejected(STEP, reason, detail)


@dataclass(frozen=True, slots=True)
class ViewRead:
    """What a model reads from one view.

    Attributes:
        view: View name.
        features: Feature names to read from the store; None reads every feature.
        inputs: Model input name of each of ``features`` (same order); empty with None.
    """

    view: str
    features: tuple[str, ...] | None
    inputs: tuple[str, ...] = ()

    def input_name(self, feature: str) -> str:
        """The model input a stored feature becomes (for a read of every feature)."""
        return f"{self.view}.{feature}"


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    """Where each of a model's inputs comes from.

    Attributes:
        reads: One read per view the model uses, in declaration order.
        request_only: Inputs no view declares: the request must bring them.
        any_input: True when the model declares no inputs (every view is read whole).
    """

    reads: tuple[ViewRead, ...]
    request_only: tuple[str, ...] = ()
    any_input: bool = False


class FeatureCatalog:
    """The declared feature views: which features each serves and their defaults.

    Args:
        views: The views (see :func:`refluent.processors.features.discover`).
    """

    def __init__(self, views: Sequence[View] = ()) -> None:
        self.views: dict[str, View] = {v.name: v for v in views}
        self._declared: dict[str, list[str]] = {}
        for view in views:
            for name in self._features_of(view) or ():
                self._declared.setdefault(name, []).append(view.name)
        self._plans: dict[tuple[str, tuple[str, ...]], FeaturePlan] = {}

    @staticmethod
    def _features_of(view: View) -> tuple[str, ...] | None:
        if isinstance(view, FeatureView):
            return view.feature_names
        return view.columns

    def defaults(self, view: str) -> dict[str, FeatureValue]:
        """The value each feature of ``view`` takes when the view has nothing for an entity:
        the value of an empty window (windowed views), None (entity-state columns)."""
        spec = self.views[view]
        if isinstance(spec, FeatureView):
            return {a.name: make_accumulator(a.kind).result() for a in spec.aggregations}
        return dict.fromkeys(spec.columns or ())

    def plan(self, feature_names: Sequence[str], model: str = "?") -> FeaturePlan:
        """Map a model's inputs to view reads (see the module docstring for the rule).

        Raises:
            FeaturePlanError: an input names a feature its view lacks, or a plain name two
                views declare.
        """
        key = (model, tuple(feature_names))
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        if not feature_names:
            plan = FeaturePlan(tuple(ViewRead(v, None) for v in self.views), (), True)
        else:
            plan = self._plan(model, feature_names)
        self._plans[key] = plan
        return plan

    def _plan(self, model: str, feature_names: Sequence[str]) -> FeaturePlan:
        by_view: dict[str, list[tuple[str, str]]] = {}
        request_only: list[str] = []
        for name in feature_names:
            view_name, dot, feature = name.partition(".")
            if dot and view_name in self.views:
                declared = self._features_of(self.views[view_name])
                if declared is not None and feature not in declared:
                    raise FeaturePlanError(
                        model, name, f"view {view_name!r} has no feature {feature!r} "
                        f"(it has: {', '.join(declared)})")
                by_view.setdefault(view_name, []).append((feature, name))
                continue
            owners = self._declared.get(name, [])
            if len(owners) > 1:
                raise FeaturePlanError(
                    model, name, f"declared by views {', '.join(owners)}; name it "
                    f"<view>.{name} in the model's inputs")
            if owners:
                by_view.setdefault(owners[0], []).append((name, name))
            else:
                request_only.append(name)
        reads = tuple(
            ViewRead(v, tuple(f for f, _ in pairs), tuple(i for _, i in pairs))
            for v in self.views if (pairs := by_view.get(v))
        )
        return FeaturePlan(reads, tuple(request_only))


@dataclass(slots=True)
class StoreRead:
    """What the online store said about one entity in one view.

    Attributes:
        values: Feature name -> value (every stored feature, or the ones asked for).
        age_s: Age of the values in seconds; None when the store holds nothing.
        found: True when the store holds live values.
    """

    values: Mapping[str, FeatureValue]
    age_s: float | None
    found: bool


@dataclass(slots=True)
class Assembled:
    """A request's model input after the views were read and the policies applied.

    Attributes:
        features: Model input name -> value, exactly what the model is given.
        ages_ms: Age of each view read, in milliseconds (views with nothing are left out).
        stale: True when a stale or missing view was served under the ``flag`` policy.
    """

    features: dict[str, FeatureValue] = field(default_factory=dict)
    ages_ms: dict[str, float] = field(default_factory=dict)
    stale: bool = False


class StalePolicies:
    """The stale-feature policy of each view.

    Args:
        default: Policy of views missing from ``per_view``.
        per_view: Policy per view name.
        max_age_s: Age above which a view's values are stale.
    """

    def __init__(self, default: StalePolicy = "flag",
                 per_view: Mapping[str, StalePolicy] | None = None,
                 max_age_s: float = 3600.0) -> None:
        self.default = default
        self.per_view = dict(per_view or {})
        self.max_age_s = max_age_s

    def of(self, view: str) -> StalePolicy:
        """The policy of ``view``."""
        return self.per_view.get(view, self.default)


def needed_reads(plan: FeaturePlan, request_features: Mapping[str, FeatureValue]
                 ) -> list[ViewRead]:
    """The reads of ``plan`` a request still needs: those with an input it does not bring."""
    if plan.any_input:
        return list(plan.reads)
    return [r for r in plan.reads if any(i not in request_features for i in r.inputs)]


def assemble(
    entity_id: str | None,
    plan: FeaturePlan,
    reads: Mapping[str, StoreRead],
    request_features: Mapping[str, FeatureValue],
    policies: StalePolicies,
    catalog: FeatureCatalog,
) -> Assembled:
    """Build one request's model input from the store's answers and the request's features.

    Args:
        entity_id: Entity scored (None: no online features).
        plan: The model's feature plan.
        reads: View name -> what the store said for this entity (views the request needs).
        request_features: The request's own features (they win).
        policies: Stale policies.
        catalog: The views, for their defaults.

    Raises:
        RecordRejected: A view is stale or missing under ``reject``, a wanted feature has no
            default under ``default``, or a request-time input is missing.
    """
    out = Assembled()
    features = out.features
    for read in needed_reads(plan, request_features):
        got = reads.get(read.view)
        if got is None:
            if entity_id is None:
                # No entity to read: only request-time values can fill these inputs.
                continue
            raise rejected("missing_entity", f"view {read.view!r} was not read for entity "
                                             f"{entity_id!r}")
        if got.age_s is not None:
            out.ages_ms[read.view] = round(got.age_s * 1000, 3)
        stale = not got.found or (got.age_s is not None and got.age_s > policies.max_age_s)
        values: Mapping[str, FeatureValue] = got.values
        if stale:
            policy = policies.of(read.view)
            what = (f"no values for entity {entity_id!r}" if not got.found else
                    f"values of entity {entity_id!r} are {got.age_s:.1f}s old "
                    f"(limit {policies.max_age_s:g}s)")
            if policy == "reject":
                reason = "missing_entity" if not got.found else "stale_features"
                raise rejected(reason, f"view {read.view!r}: {what}")
            if policy == "default":
                values = catalog.defaults(read.view)
                if read.features is not None:
                    for feature, name in zip(read.features, read.inputs, strict=True):
                        if values.get(feature) is None and name not in request_features:
                            raise rejected(
                                "missing_features",
                                f"view {read.view!r}: {what}, and feature {feature!r} has "
                                "no default")
            else:
                out.stale = True
        if read.features is None:
            for feature, value in values.items():
                if value is not None:
                    features[read.input_name(feature)] = value
        else:
            for feature, name in zip(read.features, read.inputs, strict=True):
                value = values.get(feature)
                if value is not None:
                    features[name] = value
    for name, value in request_features.items():
        if value is None:
            features.pop(name, None)
        else:
            features[name] = value
    for name in plan.request_only:
        if name not in features:
            raise rejected("missing_features", f"input {name!r} is in no feature view and "
                                               "the request does not bring it")
    return out


def check_numeric(model: str, feature_names: Sequence[str],
                  features: Mapping[str, FeatureValue]) -> None:
    """Check that every input of a model over numbers is present and a finite number.

    Raises:
        RecordRejected: ``missing_features`` or ``feature_type``, naming the input and model.
    """
    for name in feature_names:
        value = features.get(name)
        if value is None:
            raise rejected("missing_features", f"model {model}: input {name!r} is missing")
        if type(value) is bool or type(value) is int:
            continue
        if type(value) is float:
            if math.isfinite(value):
                continue
            raise rejected("feature_type", f"model {model}: input {name!r} is {value!r}, "
                                           "not a finite number")
        raise rejected("feature_type", f"model {model}: input {name!r} is "
                                       f"{type(value).__name__} {value!r}, not a number")
