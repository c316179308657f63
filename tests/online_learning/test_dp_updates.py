"""Incremental DP updates in the feedback loop: the champion of a DP-retrained lineage is
fine-tuned on each full micro-batch of its labels, every update charged to the ledger first.

Oracles: the produced stream itself (how many labels each micro-batch holds, so when an update
is due and the run it plans), Opacus' own PRV accountant over the ledger's recorded runs, and
onnxruntime's answers on fresh rows of the new rule (counted here). The champion starts on one
rule (``a + b > 0``); the labels follow another (``a - b > 0``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant
from support.qa import in_merge_order, qa_stream
from support.registry import FakeRegistry

from refluent.config import FeedbackSettings
from refluent.feedback.join import FeedbackJoin
from refluent.feedback.merge import TimedEvent
from refluent.feedback.service import FeedbackProcessor
from refluent.feedback.state.memory import MemoryJoinState
from refluent.jobs.dpsgd import DPConfig
from refluent.jobs.export import predict, to_onnx
from refluent.jobs.network import NetworkSpec
from refluent.models.onnx import OnnxModel
from refluent.online_learning.dp_updates import DPUpdates
from refluent.online_learning.learner import LearnerPool
from refluent.privacy.errors import BudgetExceededError
from refluent.privacy.ledger import MemoryPrivacyLedger
from refluent.streams.contracts import Feedback

pytestmark = pytest.mark.unit

ROWS, BATCH = 256, 64
FEATURES = ("a", "b")


@pytest.fixture(scope="module")
def champion() -> bytes:
    """A graph as a DP retrain exports it, trained (briefly, not privately) on ``a + b > 0``."""
    torch.manual_seed(0)
    spec = NetworkSpec(2, 2, (16,))
    module = spec.servable(FEATURES, "classification")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2000, 2)).astype(np.float32))
    y = (x[:, 0] + x[:, 1] > 0).long()
    opt = torch.optim.Adam(module.net.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module.net(x), y).backward()
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(module, FEATURES, "classification", (False, True), spec)


def new_rule(n: int, seed: int) -> list[tuple[dict[str, Any], Any]]:
    rng = np.random.default_rng(seed)
    return [({"a": float(a), "b": float(b)}, bool(a - b > 0)) for a, b in rng.normal(size=(n, 2))]


def accuracy(graph: bytes) -> float:
    rows = new_rule(2000, 99)
    x = np.array([[r["a"], r["b"]] for r, _ in rows], np.float32)
    y = np.array([label for _, label in rows])
    return float(((predict(graph, x).argmax(axis=1) == 1) == y).mean())


def setup(graph: bytes, ledger: MemoryPrivacyLedger, registry: FakeRegistry | None = None,
          memory: MemoryJoinState | None = None, start: dict[Any, int] | None = None,
          exhausted: list[tuple[str, int, BudgetExceededError]] | None = None
          ) -> tuple[FeedbackProcessor, LearnerPool, FakeRegistry]:
    if registry is None:
        registry = FakeRegistry()
        registry.register("m", OnnxModel(graph), alias="champion")
    fs = FeedbackSettings(checkpoint_every=10_000, early_label_wait_s=0, rolling_window=50)

    def refused(model: str, version: int, error: BudgetExceededError) -> None:
        if exhausted is not None:
            exhausted.append((model, version, error))

    updates = DPUpdates(ledger, DPConfig(epochs=1, batch_size=BATCH, learning_rate=0.05,
                                         noise_multiplier=3.0, seed=3), ROWS,
                        on_exhausted=refused)
    pool = LearnerPool(registry, fs, updates=updates)  # type: ignore[arg-type]
    pool.load()
    join = FeedbackJoin.from_settings(fs, task_of=pool.task_of, clock_us=pool.clock_us())
    return FeedbackProcessor(join, pool, memory=memory, start=start), pool, registry


def labels_in(chunk: list[TimedEvent]) -> int:
    return sum(isinstance(e.event, Feedback) for e in chunk)


def prv(entries: list[Any]) -> float:
    acc = PRVAccountant()
    acc.history = [(e.spend.noise_multiplier, e.spend.sample_rate, e.spend.steps)
                   for e in entries]
    return float(acc.get_epsilon(1e-5))


def test_dp_updates__each_full_micro_batch_fine_tunes_the_champion_charged_first(
        champion: bytes) -> None:
    ledger = MemoryPrivacyLedger(budget=50.0, delta=1e-5)
    proc, pool, registry = setup(champion, ledger)
    events = in_merge_order(qa_stream(new_rule(2400, 1), delay=3))
    waiting = trained = 0
    graphs = [champion]
    for start in range(0, len(events), 150):
        chunk = events[start:start + 150]
        proc.commit(proc.process(chunk))
        proc.after_batch()
        waiting += labels_in(chunk)
        entries = ledger.entries("m")
        checkpoints = registry.ckpts.get(("m", 1), [])
        if waiting < ROWS:  # no update, and no checkpoint skipping the waiting labels
            assert len(entries) == len(graphs) - 1 == len(checkpoints)
            continue
        assert len(entries) == len(graphs) == len(checkpoints)
        spend = entries[-1].spend
        steps = math.ceil(waiting / BATCH)
        assert (spend.kind, spend.model_version, spend.noise_multiplier) == ("update", "1", 3.0)
        assert (spend.sample_rate, spend.steps) == (pytest.approx(1 / steps), steps)
        assert entries[-1].epsilon_total == pytest.approx(prv(entries), rel=1e-6)
        trained += waiting
        waiting = 0
        cp = checkpoints[-1]
        assert cp.examples == trained and cp.artifact != graphs[-1]  # new weights, saved
        member = pool.get("m").champion  # type: ignore[union-attr]
        assert member is not None and member.model.to_bytes() == cp.artifact  # what serves
        graphs.append(cp.artifact)
    assert len(graphs) >= 8
    assert accuracy(champion) < 0.65 and accuracy(graphs[-1]) > 0.85


def test_dp_updates__the_budget_refuses_an_update_and_nothing_trains(champion: bytes) -> None:
    one = MemoryPrivacyLedger(budget=50.0, delta=1e-5).charge(
        "x", _spend("probe")).epsilon_total  # what one update of ROWS costs
    ledger = MemoryPrivacyLedger(budget=one * 1.2, delta=1e-5)
    exhausted: list[Any] = []
    proc, pool, registry = setup(champion, ledger, exhausted=exhausted)
    events = in_merge_order(qa_stream(new_rule(1200, 2), delay=3))
    while events:  # ROWS labels per batch: each update plans the probe's run
        n = _to_fill(events, ROWS) if labels_in(events) >= ROWS else len(events)
        proc.commit(proc.process(events[:n]))
        proc.after_batch()
        events = events[n:]
    entries = ledger.entries("m")
    assert len(entries) == 1 and len(exhausted) == 1
    model, version, error = exhausted[0]
    assert (model, version, error.budget) == ("m", 1, pytest.approx(one * 1.2))
    assert error.spent == pytest.approx(entries[0].epsilon_total) and error.planned > one * 1.2
    member = pool.get("m").champion  # type: ignore[union-attr]
    assert member is not None and member.examples == ROWS
    checkpoints = registry.ckpts[("m", 1)]
    assert {cp.artifact for cp in checkpoints} == {member.model.to_bytes()}  # updated once
    assert member.model.to_bytes() != champion


def _spend(run_id: str) -> Any:
    from refluent.privacy.ledger import Spend

    return Spend(run_id, 3.0, BATCH / ROWS, ROWS // BATCH, "update")


def test_dp_updates__a_restart_trains_each_label_once_and_a_replayed_update_is_charged_once(
        champion: bytes) -> None:
    """Run 1 updates, then crashes: once with labels waiting in the micro-batch, once between
    an update's charge and its checkpoint. Each restart reads again from the champion's
    checkpoint; at the end every label was trained exactly once, and the update replayed over
    the same labels spent nothing more."""
    ledger = MemoryPrivacyLedger(budget=50.0, delta=1e-5)
    memory = MemoryJoinState()  # outlives the process, as Redis does
    events = in_merge_order(qa_stream(new_rule(1500, 3), delay=3))
    total = labels_in(events)
    run, pool, registry = setup(champion, ledger, memory=memory)
    cut = 0
    while len(ledger.entries("m")) < 2 or not _waiting(pool):
        run.commit(run.process(events[cut:cut + 100]))
        run.after_batch()
        cut += 100
    # crash 1: labels wait in the micro-batch; run 2 starts from the checkpoint
    run, pool, _ = _restart(champion, ledger, registry, memory)
    member = pool.get("m").champion  # type: ignore[union-attr]
    assert member is not None and member.examples == registry.ckpts[("m", 1)][-1].examples
    replay = _from(events, run.positions)
    assert len(replay) > len(events) - cut
    # crash 2: the next update is charged, then its checkpoint fails
    charged = len(ledger.entries("m"))
    registry.save_error = RuntimeError("disk full")
    first = replay[:_to_fill(replay, ROWS)]
    run.commit(run.process(first))
    with pytest.raises(RuntimeError, match="disk full"):
        run.after_batch()
    assert len(ledger.entries("m")) == charged + 1
    registry.save_error = None
    run, pool, _ = _restart(champion, ledger, registry, memory)
    again = _from(events, run.positions)
    end = _position_after(first)
    same = [e for e in again if e.source.offset < end.get((e.source.topic,
                                                           e.source.partition), 0)]
    run.commit(run.process(same))
    run.after_batch()
    assert len(ledger.entries("m")) == charged + 1  # the same labels: the same run id
    rest = again[len(same):]
    for start in range(0, len(rest), 100):
        run.commit(run.process(rest[start:start + 100]))
        run.after_batch()
    member = pool.get("m").champion  # type: ignore[union-attr]
    assert member is not None and member.updater is not None
    assert member.examples + member.updater.pending == total


def _waiting(pool: LearnerPool) -> bool:
    member = pool.get("m").champion  # type: ignore[union-attr]
    return member is not None and member.updater is not None and member.updater.pending > 0


def _restart(champion: bytes, ledger: MemoryPrivacyLedger, registry: FakeRegistry,
             memory: MemoryJoinState) -> tuple[FeedbackProcessor, LearnerPool, FakeRegistry]:
    cp = registry.ckpts[("m", 1)][-1]
    start = {(t, p): o for t, parts in cp.offsets.items() for p, o in parts.items()}
    return setup(champion, ledger, registry, memory, start)


def _from(events: list[TimedEvent], positions: dict[Any, int]) -> list[TimedEvent]:
    return [e for e in events
            if e.source.offset >= positions.get((e.source.topic, e.source.partition), 0)]


def _to_fill(events: list[TimedEvent], labels: int) -> int:
    """How many of ``events`` hold ``labels`` labels."""
    seen = 0
    for i, e in enumerate(events):
        seen += isinstance(e.event, Feedback)
        if seen == labels:
            return i + 1
    raise AssertionError("not enough labels")


def _position_after(events: list[TimedEvent]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for e in events:
        out[(e.source.topic, e.source.partition)] = e.source.offset + 1
    return out
