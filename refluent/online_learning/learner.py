"""Online learners: each model's champion and challengers, taught by the labelled stream.

An :class:`OnlineLearner` holds, for one model name, the versions the registry aliases
``champion`` and ``challenger*`` name (:class:`LearningMember`: the loaded model, its
progressive metrics and how far it has learned). It does exactly what
``river.evaluate.progressive_val_score`` does with a delay:

1. when a prediction is seen (the question), every member answers it from the features as
   served (:meth:`OnlineLearner.answer`); the answers are kept with the pending prediction;
2. when its label arrives (:meth:`OnlineLearner.learn`), each member's metrics are updated
   with (label, its answer), then the member learns the example (``learn_one``).

Challengers score the same stream in shadow. A challenger whose rolling primary metric
(accuracy for a classifier, MAE for a regressor) beats the champion's by
``feedback.promotion_margin`` (accuracy: absolute; MAE: relative) after at least
``feedback.promotion_min_labels`` labels is promoted through
:meth:`~refluent.registry.ModelRegistry.promote`, with a reason that states the numbers.

A champion whose graph a DP retrain exported is not taught one example at a time: its
:class:`~refluent.online_learning.dp_updates.DPUpdater` keeps the examples and, once a
micro-batch is full, :meth:`OnlineLearner.run_updates` fine-tunes it with DP-SGD, charged to the
lineage's privacy ledger. Such a member is checkpointed only when no example waits in its
micro-batch (right after an update), so a restart reads the waiting examples again.

Checkpoints: every ``feedback.checkpoint_every`` examples a member is saved with
:meth:`~refluent.registry.ModelRegistry.save_checkpoint`: the model, the next offsets of the
input topics, the examples learned and, in ``state``, its metrics (pickled River metrics,
base64), so a restart resumes exactly where the checkpoint was. A member skips the events
below its checkpoint's offsets (:meth:`LearningMember.accepts`): restarted from an older
position, nothing is learned twice. A member never checkpointed is saved at the first
opportunity, so its starting point is on record. Every ``feedback.checkpoints_kept``
checkpoints of a version, the older ones are deleted
(:meth:`~refluent.registry.ModelRegistry.prune_checkpoints`), so a model that learns for
months does not pile up artifacts.

:class:`LearnerPool` holds the learners of every model the service sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from refluent.feedback.join import Joined
from refluent.feedback.state.base import PendingPrediction, from_us
from refluent.models.errors import ModelError
from refluent.observability import learning as m
from refluent.online_learning.errors import CheckpointStateError, NoChampionError
from refluent.online_learning.metrics import (
    PRIMARY_METRIC,
    MetricsRow,
    ProgressiveMetrics,
)
from refluent.streams.origin import Origin

if TYPE_CHECKING:
    from refluent.config import FeedbackSettings
    from refluent.models.base import ServableModel, Task
    from refluent.online_learning.dp_updates import DPUpdater, DPUpdates
    from refluent.registry import Checkpoint, ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER_PREFIX = "challenger"
STATE_FORMAT = 1

Offsets = dict[tuple[str, int], int]


def learning_alias(alias: str) -> bool:
    """True for the aliases whose holders learn: ``champion`` and ``challenger*``.

    Examples:
        >>> [learning_alias(a) for a in ("champion", "challenger-b", "staging")]
        [True, True, False]
    """
    return alias == CHAMPION or alias.startswith(CHALLENGER_PREFIX)


def nested_offsets(offsets: Mapping[tuple[str, int], int]) -> dict[str, dict[int, int]]:
    """``{(topic, partition): offset}`` as the registry stores it: topic -> partition -> offset.

    Examples:
        >>> nested_offsets({("feedback", 1): 7, ("predictions", 0): 3})
        {'feedback': {1: 7}, 'predictions': {0: 3}}
    """
    out: dict[str, dict[int, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[partition] = offset
    return out


def flat_offsets(offsets: Mapping[str, Mapping[Any, Any]]) -> Offsets:
    """Inverse of :func:`nested_offsets` (partitions may be text, as JSON has them)."""
    return {(topic, int(p)): int(o) for topic, parts in offsets.items() for p, o in parts.items()}


@dataclass
class LearningMember:
    """One model version an :class:`OnlineLearner` teaches.

    Attributes:
        version: The registry's record of the version.
        model: The loaded model, as of its latest checkpoint.
        roles: The learning aliases it holds.
        metrics: Its progressive metrics.
        examples: Examples it has learned.
        seen: Labelled examples it has been given (learned or, for a model that cannot
            learn, only scored).
        start: The offsets of its checkpoint: events below them are already in its state.
        checkpoint_seq: Sequence of its latest checkpoint (None: never checkpointed).
        checkpoint_seen: ``seen`` at that checkpoint.
        clock_us: The join's clock at that checkpoint.
        updater: Its DP updates, when its graph can be fine-tuned (used while it is champion).
        updated: A DP update changed the model since its last checkpoint.
    """

    version: ModelVersion
    model: ServableModel
    roles: tuple[str, ...]
    metrics: ProgressiveMetrics
    examples: int = 0
    seen: int = 0
    start: Offsets = field(default_factory=dict)
    checkpoint_seq: int | None = None
    checkpoint_seen: int | None = None
    clock_us: int | None = None
    updater: DPUpdater | None = None
    updated: bool = False
    _published: dict[str, int] = field(default_factory=dict, repr=False)
    key: str = field(init=False, repr=False, compare=False)
    """The version number as text: the key of its answers."""

    def __post_init__(self) -> None:
        self.key = str(self.version.version)

    @property
    def is_champion(self) -> bool:
        """True when it holds ``champion``."""
        return CHAMPION in self.roles

    @property
    def can_checkpoint(self) -> bool:
        """False while examples wait in its DP micro-batch: a checkpoint at the current
        offsets would skip them after a restart."""
        return self.updater is None or self.updater.pending == 0

    def accepts(self, source: Origin) -> bool:
        """Whether the event at ``source`` is new to this member (not in its checkpoint)."""
        start = self.start
        return not start or source.offset >= start.get((source.topic, source.partition), 0)

    def state(self, clock_us: int | None) -> dict[str, Any]:
        """The JSON-able learner state a checkpoint stores."""
        return {"format": STATE_FORMAT, "metrics": self.metrics.state(), "seen": self.seen,
                "labels": self.metrics.labels, "clock_us": clock_us, "roles": list(self.roles)}


@dataclass(frozen=True)
class Promotion:
    """A challenger that beat the champion.

    Attributes:
        model: Model name.
        version: The challenger's version.
        replaces: The champion's version.
        reason: The numbers, in words (recorded with the alias change).
    """

    model: str
    version: int
    replaces: int
    reason: str


def promotion_reason(champion: LearningMember, challenger: LearningMember, *, margin: float,
                     min_labels: int) -> str | None:
    """Why ``challenger`` should replace ``champion``, or None when it should not.

    It should when it has scored at least ``min_labels`` labels and its rolling primary metric
    is better than the champion's: accuracy higher by at least ``margin`` (absolute), or MAE
    lower by at least ``margin`` of the champion's (relative). A zero margin still asks for
    strictly better.
    """
    task = challenger.metrics.task
    metric, bigger_is_better = PRIMARY_METRIC[task]
    n = challenger.metrics.labels
    if n < min_labels or champion.metrics.labels == 0:
        return None
    mine = challenger.metrics.get(metric, "rolling")
    theirs = champion.metrics.get(metric, "rolling")
    if mine is None or theirs is None:
        return None
    if bigger_is_better:
        gain = mine - theirs
        how = f"higher by {gain:.4f} (promotion_margin {margin:g}, absolute)"
    else:
        gain = (theirs - mine) / theirs if theirs > 0 else 0.0
        how = f"lower by {gain:.2%} (promotion_margin {margin:g}, relative)"
    if gain <= 0 or gain < margin:
        return None
    window = min(n, challenger.metrics.window)
    return (f"challenger v{challenger.version.version} rolling {metric} {mine:.4f} vs champion "
            f"v{champion.version.version} {theirs:.4f} over the last {window} labels "
            f"({n} scored): {how}")


class OnlineLearner:
    """The champion and challengers of one model, taught by its labelled examples (see the
    module docstring).

    Lifecycle: :meth:`load` reads the aliases and loads every learning version from its latest
    checkpoint; :meth:`maybe_refresh` follows alias changes made elsewhere. The learner does no
    I/O besides the registry, and never on the per-event path (:meth:`answer`,
    :meth:`learn`).

    Args:
        name: Model name.
        registry: The model registry.
        rolling_window: Labels in the rolling metrics.
        checkpoint_every: Examples between two checkpoints of a member.
        checkpoints_kept: Checkpoints kept per version (0: all); pruned every this many.
        promotion_margin: See :func:`promotion_reason`.
        promotion_min_labels: See :func:`promotion_reason`.
        auto_promote: Promote challengers that win (else only report them).
        updates: Makes the DP updaters of fine-tunable graphs (None: no DP updates).
    """

    def __init__(self, name: str, registry: ModelRegistry, *, rolling_window: int = 1000,
                 checkpoint_every: int = 1000, checkpoints_kept: int = 10,
                 promotion_margin: float = 0.02, promotion_min_labels: int = 500,
                 auto_promote: bool = True, updates: DPUpdates | None = None) -> None:
        self.name = name
        self.registry = registry
        self.rolling_window = rolling_window
        self.checkpoint_every = checkpoint_every
        self.checkpoints_kept = checkpoints_kept
        self.promotion_margin = promotion_margin
        self.promotion_min_labels = promotion_min_labels
        self.auto_promote = auto_promote
        self.updates = updates
        self.members: dict[int, LearningMember] = {}
        self.task: Task | None = None
        """The champion's task (None until loaded)."""
        self._revision: str | None = None

    @classmethod
    def from_settings(cls, name: str, registry: ModelRegistry, settings: FeedbackSettings,
                      **kwargs: Any) -> OnlineLearner:
        """A learner with the window, checkpoint and promotion settings of ``settings``."""
        return cls(name, registry, rolling_window=settings.rolling_window,
                   checkpoint_every=settings.checkpoint_every,
                   checkpoints_kept=settings.checkpoints_kept,
                   promotion_margin=settings.promotion_margin,
                   promotion_min_labels=settings.promotion_min_labels, **kwargs)

    # -- membership ----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the champion and challengers.

        Raises:
            NoChampionError: the model has no champion.
            UnknownModelError: the model is not registered.
        """
        self._revision = self.registry.revision(self.name)
        self.refresh()
        if self.champion is None:
            raise NoChampionError(self.name, self.registry.aliases(self.name))

    def _wanted(self) -> dict[int, tuple[str, ...]]:
        wanted: dict[int, list[str]] = {}
        for alias, version in self.registry.aliases(self.name).items():
            if learning_alias(alias):
                wanted.setdefault(version, []).append(alias)
        return {v: tuple(sorted(roles)) for v, roles in wanted.items()}

    def refresh(self) -> list[LearningMember]:
        """Follow the registry's aliases: load new learning versions, update roles, and drop
        versions that no longer hold a learning alias (returned, for a last checkpoint)."""
        wanted = self._wanted()
        for version, roles in sorted(wanted.items()):
            member = self.members.get(version)
            if member is None:
                self.members[version] = self._load_member(version, roles)
            else:
                member.roles = roles
                if member.updater is not None and not member.is_champion:
                    member.updater.drop()  # only the champion is updated
        leaving = [self.members.pop(v) for v in sorted(self.members) if v not in wanted]
        champion = self.champion
        self.task = champion.version.task if champion is not None else None
        return leaving

    def maybe_refresh(self) -> list[LearningMember]:
        """:meth:`refresh` if the registry's revision of the model moved (cheap to call)."""
        revision = self.registry.revision(self.name)
        if revision == self._revision:
            return []
        self._revision = revision
        return self.refresh()

    def _load_member(self, version: int, roles: tuple[str, ...]) -> LearningMember:
        registered = self.registry.get(self.name, version)
        checkpoint = self.registry.latest_checkpoint(self.name, version)
        if checkpoint is None:
            model = self.registry.load(self.name, version)[1]
            member = LearningMember(registered, model, roles,
                                    ProgressiveMetrics(registered.task, self.rolling_window))
        else:
            model = self.registry.load_checkpoint(checkpoint)
            member = self._restore(registered, model, roles, checkpoint)
        if self.updates is not None and not model.can_learn:
            member.updater = self.updates.updater(self.name, version, model)
        log.info("learning %s v%d (%s) from %s%s", self.name, version, ", ".join(roles),
                 f"checkpoint {checkpoint.seq}" if checkpoint else "its registered artifact",
                 ", with DP updates" if member.updater is not None else "")
        return member

    def _restore(self, registered: ModelVersion, model: ServableModel, roles: tuple[str, ...],
                 checkpoint: Checkpoint) -> LearningMember:
        state = checkpoint.state
        try:
            if state.get("format") == STATE_FORMAT:
                metrics = ProgressiveMetrics.from_state(state["metrics"])
                seen = int(state["seen"])
                clock = state.get("clock_us")
            else:  # a checkpoint saved by something else: its model, fresh metrics
                metrics = ProgressiveMetrics(registered.task, self.rolling_window)
                seen, clock = checkpoint.examples, None
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointStateError(self.name, registered.version, checkpoint.seq,
                                       f"{type(exc).__name__}: {exc}") from exc
        return LearningMember(registered, model, roles, metrics, examples=checkpoint.examples,
                              seen=seen, start=flat_offsets(checkpoint.offsets),
                              checkpoint_seq=checkpoint.seq, checkpoint_seen=seen,
                              clock_us=None if clock is None else int(clock))

    @property
    def champion(self) -> LearningMember | None:
        """The member holding ``champion``."""
        for member in self.members.values():
            if member.is_champion:
                return member
        return None

    # -- the per-event path --------------------------------------------------------------------
    def answer(self, pending: PendingPrediction) -> None:
        """Every member answers the question ``pending`` asks (its features as served); the
        answers are kept in ``pending.answers``. A member that already has this event in its
        checkpoint keeps the answer it gave then."""
        x = pending.prediction.features
        source, answers = pending.source, pending.answers
        for member in self.members.values():
            if not member.accepts(source):
                continue
            try:
                answers[member.key] = member.model.predict_one(x)
            except ModelError as exc:
                answers.pop(member.key, None)
                m.LEARNER_ERRORS.labels(self.name, member.key, "predict").inc()
                log.debug("%s v%s cannot answer %s: %s", self.name, member.key,
                          pending.prediction_id, exc)

    def learn(self, joined: Joined) -> None:
        """Score each member's answer against the label, then teach it the example."""
        example = joined.example
        y, x = example.label, example.features
        trigger, answers = joined.trigger, joined.pending.answers
        for member in self.members.values():
            if not member.accepts(trigger):
                continue
            answer = answers.get(member.key)
            if answer is not None:
                member.metrics.update(y, answer)
            member.seen += 1
            model = member.model
            if not model.can_learn:
                updater = member.updater
                if updater is not None and member.is_champion:
                    updater.add(x, y, trigger)
                continue
            try:
                model.learn_one(x, y)
            except ModelError as exc:
                m.LEARNER_ERRORS.labels(self.name, member.key, "learn").inc()
                log.debug("%s v%s cannot learn %s: %s", self.name, member.key,
                          example.prediction_id, exc)
                continue
            member.examples += 1

    def run_updates(self) -> list[LearningMember]:
        """Run the DP update of every member whose micro-batch is full (see the module);
        returns the members updated.

        Raises:
            JobError: the update could not train (a bad device, ...).
            LedgerError: the privacy ledger failed.
        """
        updated = []
        for member in self.members.values():
            updater = member.updater
            if updater is None or not updater.ready or not member.is_champion:
                continue
            update = updater.update()
            if update is None:
                m.DP_UPDATES.labels(self.name, member.key, "refused").inc()
                continue
            member.model = update.model
            member.examples += update.rows
            member.updated = True
            m.DP_UPDATES.labels(self.name, member.key, "charged").inc()
            m.LINEAGE_EPSILON.labels(self.name).set(update.entry.epsilon_total)
            updated.append(member)
        return updated

    # -- checkpoints, promotion ----------------------------------------------------------------
    def due(self) -> list[LearningMember]:
        """Members to checkpoint now: never checkpointed, ``checkpoint_every`` examples since
        the last checkpoint, or a DP update since it; never one with examples waiting in its
        DP micro-batch."""
        return [mb for mb in self.members.values() if mb.can_checkpoint and (
            mb.updated or mb.checkpoint_seen is None
            or mb.seen - mb.checkpoint_seen >= self.checkpoint_every)]

    def checkpoint(self, member: LearningMember, positions: Mapping[tuple[str, int], int],
                   clock_us: int | None) -> tuple[Checkpoint, MetricsRow]:
        """Save ``member`` with the next input offsets ``positions`` (a member whose own
        checkpoint is ahead of a partition's position keeps its own offset there); returns
        the checkpoint and its ``model_metrics`` row."""
        offsets = dict(member.start)
        for tp, offset in positions.items():
            offsets[tp] = max(offset, offsets.get(tp, offset))
        nested = nested_offsets(offsets)
        checkpoint = self.registry.save_checkpoint(
            self.name, member.version.version, member.model, offsets=nested,
            examples=member.examples, state=member.state(clock_us))
        member.checkpoint_seq = checkpoint.seq
        member.checkpoint_seen = member.seen
        member.updated = False
        m.CHECKPOINTS.labels(self.name, member.key).inc()
        kept = self.checkpoints_kept
        if kept and checkpoint.seq % kept == 0:
            self._prune(member.version.version, kept)
        row = MetricsRow(
            model=self.name, version=member.version.version, seq=checkpoint.seq,
            roles=member.roles, task=member.version.task, examples=member.examples,
            labels=member.metrics.labels,
            event_time=from_us(clock_us) if clock_us is not None else checkpoint.created_at,
            created_at=datetime.now(UTC), offsets=nested,
            values={(k, w): v for (k, w), v in member.metrics.values().items()})
        return checkpoint, row

    def _prune(self, version: int, keep: int) -> None:
        """Delete the version's checkpoints but the newest ``keep``; a failure is logged and
        left for the next prune (learning goes on: the checkpoint itself was saved)."""
        from refluent.registry import RegistryError

        try:
            pruned = self.registry.prune_checkpoints(self.name, keep, version=version)
        except RegistryError as exc:
            log.warning("could not prune the checkpoints of %s v%d: %s", self.name, version,
                        exc)
            return
        if pruned:
            log.info("pruned %d checkpoint(s) of %s v%d (up to %d)", len(pruned), self.name,
                     version, pruned[-1].seq)

    def check_promotion(self) -> Promotion | None:
        """The best challenger that beats the champion (see :func:`promotion_reason`)."""
        champion = self.champion
        if champion is None:
            return None
        metric, bigger = PRIMARY_METRIC[champion.version.task]
        best: tuple[float, Promotion] | None = None
        for member in self.members.values():
            if member.is_champion or member.version.task != champion.version.task:
                continue
            reason = promotion_reason(champion, member, margin=self.promotion_margin,
                                      min_labels=self.promotion_min_labels)
            if reason is None:
                continue
            value = member.metrics.get(metric, "rolling") or 0.0
            rank = value if bigger else -value
            if best is None or rank > best[0]:
                best = (rank, Promotion(self.name, member.version.version,
                                        champion.version.version, reason))
        return best[1] if best is not None else None

    def promote(self, promotion: Promotion) -> list[LearningMember]:
        """Make the challenger champion in the registry; returns the members that no longer
        learn (for a last checkpoint)."""
        self.registry.promote(self.name, promotion.version, CHAMPION, reason=promotion.reason)
        m.PROMOTIONS.labels(self.name).inc()
        log.info("promoted %s v%d over v%d: %s", self.name, promotion.version,
                 promotion.replaces, promotion.reason)
        self._revision = None
        return self.maybe_refresh()

    def publish(self) -> None:
        """Set the Prometheus gauges and counters from the members' current numbers."""
        for member in self.members.values():
            for (metric, window), value in member.metrics.values().items():
                m.MODEL_METRIC.labels(self.name, member.key, metric, window).set(value)
            m.MODEL_LABELS.labels(self.name, member.key).set(member.metrics.labels)
            done = member._published.get("examples", member.examples)
            if member.examples > done:
                m.EXAMPLES_LEARNED.labels(self.name, member.key).inc(member.examples - done)
            member._published["examples"] = member.examples


class LearnerPool:
    """The learners of every model the feedback service sees, created as models appear.

    Args:
        registry: The model registry.
        settings: ``Settings.feedback``.
        names: Models to learn (None: every registered model with a champion, and models
            registered later as their predictions arrive).
        auto_promote: Promote winning challengers.
        retry_s: How long a model without a champion waits before it is looked up again.
        clock: Monotonic clock (seconds).
        updates: Makes the DP updaters of fine-tunable champions (None: no DP updates).
    """

    def __init__(self, registry: ModelRegistry, settings: FeedbackSettings, *,
                 names: Sequence[str] | None = None, auto_promote: bool = True,
                 retry_s: float = 30.0, clock: Callable[[], float] | None = None,
                 updates: DPUpdates | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.names = list(names) if names is not None else None
        self.auto_promote = auto_promote
        self.retry_s = retry_s
        self.updates = updates
        self._clock = clock or time.monotonic
        self.learners: dict[str, OnlineLearner] = {}
        self._missing: dict[str, float] = {}

    def load(self) -> None:
        """Load the learners of ``names`` (else of every registered model with a champion)."""
        for name in self.names if self.names is not None else self.registry.names():
            self.get(name)

    def get(self, name: str) -> OnlineLearner | None:
        """The learner of ``name``, loading it on first use; None when the model is not to be
        learned or has no champion (looked up again after ``retry_s``)."""
        learner = self.learners.get(name)
        if learner is not None:
            return learner
        if self.names is not None and name not in self.names:
            return None
        missing_since = self._missing.get(name)
        if missing_since is not None and self._clock() - missing_since < self.retry_s:
            return None
        from refluent.registry import RegistryError

        learner = OnlineLearner.from_settings(name, self.registry, self.settings,
                                              auto_promote=self.auto_promote,
                                              updates=self.updates)
        try:
            learner.load()
        except (NoChampionError, RegistryError) as exc:
            log.info("not learning %s: %s", name, exc)
            self._missing[name] = self._clock()
            return None
        self._missing.pop(name, None)
        self.learners[name] = learner
        return learner

    def all(self) -> list[OnlineLearner]:
        """The learners loaded so far."""
        return list(self.learners.values())

    def task_of(self, name: str) -> Task | None:
        """The task of a learned model's champion (None if not learned)."""
        learner = self.learners.get(name)
        return learner.task if learner is not None else None

    def start_offsets(self) -> Offsets:
        """Per partition, the lowest checkpoint offset of any member: where the input must be
        read from so that every member gets every event it has not learned."""
        out: Offsets = {}
        for learner in self.learners.values():
            for member in learner.members.values():
                if member.checkpoint_seq is None:
                    continue
                for tp, offset in member.start.items():
                    out[tp] = min(out.get(tp, offset), offset)
        return out

    def clock_us(self) -> int | None:
        """The earliest join clock among the members' checkpoints (None: none recorded)."""
        clocks = [mb.clock_us for lr in self.learners.values() for mb in lr.members.values()
                  if mb.clock_us is not None]
        return min(clocks) if clocks else None

