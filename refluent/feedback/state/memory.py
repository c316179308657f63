"""The join's state in dictionaries: :class:`MemoryJoinState`, for tests, the property checks,
benchmarks without Redis, and users who replay a stream in process."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from refluent.feedback.state.base import (
    JoinState,
    PendingPrediction,
    WaitingLabel,
    entity_target,
    label_target,
    prediction_target,
)
from refluent.streams.origin import Origin


class MemoryJoinState(JoinState):
    """:class:`JoinState` in dictionaries, without expiry.

    Examples:
        >>> state = MemoryJoinState()
        >>> state.prediction("p1") is None
        True
    """

    def __init__(self) -> None:
        self.predictions: dict[str, PendingPrediction] = {}
        self.by_entity: dict[str, dict[str, int]] = {}
        self.labels: dict[Origin, WaitingLabel] = {}
        self.by_target: dict[str, set[Origin]] = {}

    def prediction(self, prediction_id: str) -> PendingPrediction | None:
        """See :meth:`JoinState.prediction`."""
        return self.predictions.get(prediction_id)

    def save_prediction(self, pending: PendingPrediction, *, new: bool) -> None:
        """See :meth:`JoinState.save_prediction`."""
        self.predictions[pending.prediction_id] = pending
        if new:
            entity = pending.prediction.entity_id
            self.by_entity.setdefault(entity, {})[pending.prediction_id] = pending.ts_us

    def entity_predictions(self, entity_id: str, at_or_before_us: int
                           ) -> Iterator[PendingPrediction]:
        """See :meth:`JoinState.entity_predictions`."""
        index = self.by_entity.get(entity_id, {})
        ranked = sorted(((ts, pid) for pid, ts in index.items() if ts <= at_or_before_us),
                        reverse=True)
        for _, pid in ranked:
            found = self.predictions.get(pid)
            if found is not None:
                yield found

    def waiting_for(self, prediction_id: str, entity_id: str) -> list[WaitingLabel]:
        """See :meth:`JoinState.waiting_for`."""
        refs = self.by_target.get(prediction_target(prediction_id), set()) | self.by_target.get(
            entity_target(entity_id), set())
        return [self.labels[r] for r in refs if r in self.labels]

    def save_waiting(self, label: WaitingLabel, *, new: bool) -> None:
        """See :meth:`JoinState.save_waiting`."""
        self.labels[label.source] = label
        if new:
            self.by_target.setdefault(label_target(label.feedback), set()).add(label.source)

    def due_waiting(self, clock_us: int,
                    partitions: Collection[tuple[str, int]] | None = None) -> list[WaitingLabel]:
        """See :meth:`JoinState.due_waiting`."""
        out = [w for w in self.labels.values()
               if w.status == "waiting" and w.deadline_us < clock_us
               and (partitions is None or (w.source.topic, w.source.partition) in partitions)]
        return sorted(out, key=lambda w: (w.deadline_us, w.source))
