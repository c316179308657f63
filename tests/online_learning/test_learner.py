"""Online learners: progressive validation equal to River's, metrics and their state,
checkpoints that resume without learning twice, and the promotion rule.

A small registry (``support.registry``) stands in for :class:`refluent.registry.ModelRegistry`
here (the integration tests of the feedback service use the real one); it round-trips
checkpoint state and offsets through JSON as the real one does."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

import orjson
import pytest
from river import (
    compose,
    datasets,
    dummy,
    evaluate,
    linear_model,
    metrics,
    preprocessing,
    utils,
)
from support.qa import T0, F, P, in_merge_order, logreg, qa_stream
from support.registry import FakeRegistry, Version

from refluent.config import FeedbackSettings
from refluent.feedback.join import FeedbackJoin
from refluent.feedback.service import FeedbackProcessor
from refluent.feedback.state.memory import MemoryJoinState
from refluent.models.base import Scored
from refluent.models.river import RiverModel
from refluent.online_learning.errors import NoChampionError
from refluent.online_learning.learner import (
    LearnerPool,
    LearningMember,
    OnlineLearner,
    promotion_reason,
)
from refluent.online_learning.metrics import ProgressiveMetrics
from refluent.streams.origin import Origin

pytestmark = pytest.mark.unit



def settings(**kw: Any) -> FeedbackSettings:
    base: dict[str, Any] = {"checkpoint_every": 10_000, "early_label_wait_s": 0,
                            "rolling_window": 50, "promotion_min_labels": 500}
    base.update(kw)
    return FeedbackSettings(**base)


# ---------------------------------------------------------------------------------------------
# a delayed stream, as simulate_qa reveals it, spread over partitions
# ---------------------------------------------------------------------------------------------


def processor(registry: FakeRegistry, fs: FeedbackSettings, **kw: Any
              ) -> tuple[FeedbackProcessor, LearnerPool]:
    pool = LearnerPool(registry, fs)  # type: ignore[arg-type]
    pool.load()
    join = FeedbackJoin.from_settings(fs, task_of=pool.task_of, clock_us=pool.clock_us())
    return FeedbackProcessor(join, pool, **kw), pool


def phishing(n: int) -> list[tuple[dict[str, Any], Any]]:
    return list(itertools.islice(datasets.Phishing(), n))


# ---------------------------------------------------------------------------------------------
# progressive validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [1, 7])
def test_learner__classifier_metrics_equal_progressive_val_score(delay: int) -> None:
    data = phishing(250)
    registry = FakeRegistry()
    registry.register("m", RiverModel(logreg()), alias="champion")
    proc, pool = processor(registry, settings(rolling_window=1000))
    result = proc.process(in_merge_order(qa_stream(data, delay)))
    assert len(result.examples) == 250 and not result.rejected
    champion = pool.get("m").champion  # type: ignore[union-attr]
    assert champion is not None and champion.examples == 250
    for name, metric in (("accuracy", metrics.Accuracy()), ("log_loss", metrics.LogLoss()),
                         ("roc_auc", metrics.ROCAUC())):
        expected = evaluate.progressive_val_score(data, logreg(), metric, delay=delay).get()
        assert champion.metrics.get(name) == expected, name
        assert champion.metrics.get(name, "rolling") == expected, name  # window > stream


def test_learner__regressor_metrics_equal_progressive_val_score() -> None:
    data = list(itertools.islice(datasets.TrumpApproval(), 150))

    def model() -> Any:
        return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())

    registry = FakeRegistry()
    registry.register("r", RiverModel(model()), alias="champion")
    proc, pool = processor(registry, settings())
    proc.process(in_merge_order(qa_stream(data, 4, model="r")))
    champion = pool.get("r").champion  # type: ignore[union-attr]
    assert champion is not None
    for name, metric in (("mae", metrics.MAE()), ("rmse", metrics.RMSE())):
        expected = evaluate.progressive_val_score(data, model(), metric, delay=4).get()
        assert champion.metrics.get(name) == pytest.approx(expected, rel=0, abs=0), name


def test_learner__model_without_champion_is_not_learned() -> None:
    registry = FakeRegistry()
    registry.register("m", RiverModel(logreg()), alias="staging")
    learner = OnlineLearner("m", registry)  # type: ignore[arg-type]
    with pytest.raises(NoChampionError, match="staging=1"):
        learner.load()
    pool = LearnerPool(registry, settings())  # type: ignore[arg-type]
    assert pool.get("m") is None and pool.get("unknown") is None


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def test_metrics__rolling_window_equals_river_rolling() -> None:
    rng = random.Random(3)
    ours = ProgressiveMetrics("classification", window=20)
    acc = utils.Rolling(metrics.Accuracy, window_size=20)
    loss = utils.Rolling(metrics.LogLoss, window_size=20)
    for _ in range(150):
        y = rng.random() < 0.4
        p = rng.random()
        ours.update(y, Scored(p, p > 0.5, {"False": 1 - p, "True": p}))
        acc.update(y, p > 0.5)
        loss.update(y, p)
    assert ours.get("accuracy", "rolling") == acc.get()
    assert ours.get("log_loss", "rolling") == loss.get()
    assert ours.labels == 150


def test_metrics__answer_without_prediction_updates_nothing() -> None:
    ours = ProgressiveMetrics("classification", window=5)
    assert ours.update(True, Scored(None, None, {})) is False
    assert ours.labels == 0 and ours.values() == {}
    regression = ProgressiveMetrics("regression", window=5)
    assert regression.update(1.0, Scored(None, None, None)) is False


def test_metrics__multiclass_uses_cross_entropy_and_no_auc() -> None:
    ours = ProgressiveMetrics("classification", window=5)
    ours.update("b", Scored(0.5, "b", {"a": 0.2, "b": 0.5, "c": 0.3}))
    ce = metrics.CrossEntropy()
    ce.update("b", {"a": 0.2, "b": 0.5, "c": 0.3})
    assert ours.get("log_loss") == ce.get()
    assert "roc_auc" not in ours.names()


def test_metrics__state_round_trip_continues_identically() -> None:
    rng = random.Random(5)
    a = ProgressiveMetrics("classification", window=7)
    pairs = [(rng.random() < 0.5, rng.random()) for _ in range(40)]
    for y, p in pairs[:20]:
        a.update(y, Scored(p, p > 0.5, {"False": 1 - p, "True": p}))
    b = ProgressiveMetrics.from_state(orjson.loads(orjson.dumps(a.state())))
    for y, p in pairs[20:]:
        for m in (a, b):
            m.update(y, Scored(p, p > 0.5, {"False": 1 - p, "True": p}))
    assert a.values() == b.values() and a.labels == b.labels == 40
    with pytest.raises(ValueError, match="not a metrics state"):
        ProgressiveMetrics.from_state("bm90IGEgcGlja2xl")


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def test_checkpoint__restart_from_it_replays_without_learning_twice() -> None:
    """Run 1 checkpoints, goes on, then stops without checkpointing; run 2 restores the
    checkpoint and reads again from its offsets. The end state equals River's uninterrupted
    progressive validation, and no example is produced twice."""
    data = phishing(240)
    events = in_merge_order(qa_stream(data, 5))
    registry = FakeRegistry()
    registry.register("m", RiverModel(logreg()), alias="champion")
    fs = settings(checkpoint_every=60)
    memory = MemoryJoinState()  # the store outlives the process, as Redis does

    run1, pool1 = processor(registry, fs, memory=memory)
    produced = []
    cut = 300
    for start in range(0, cut, 25):
        result = run1.process(events[start:min(start + 25, cut)])
        produced += [e.prediction_id for e in result.examples]
        run1.commit(result)
        run1.after_batch()
    cp = registry.latest_checkpoint("m", 1)
    assert cp is not None and cp.examples < len(produced)  # events after the checkpoint

    run2, pool2 = processor(registry, fs, memory=memory, emitted=dict(run1.positions),
                            start={(t, p): o for t, parts in cp.offsets.items()
                                   for p, o in parts.items()})
    member = pool2.get("m").champion  # type: ignore[union-attr]
    assert member is not None and member.examples == cp.examples
    replay = [e for e in events
              if e.source.offset >= run2.positions.get((e.source.topic, e.source.partition), 0)]
    assert len(replay) > len(events) - cut  # some events are read a second time
    result = run2.process(replay)
    produced += [e.prediction_id for e in result.examples]

    assert sorted(produced) == sorted(f"p{i}" for i in range(240))  # each exactly once
    assert member.examples == 240
    expected = evaluate.progressive_val_score(data, logreg(), metrics.Accuracy(), delay=5)
    assert member.metrics.get("accuracy") == expected.get()
    reference = logreg()
    for x, y in data:
        reference.learn_one(x, y)
    probe = data[0][0]
    assert member.model.predict_one(probe).probabilities == {
        str(k): v for k, v in reference.predict_proba_one(probe).items()}


def test_checkpoint__stores_json_state_offsets_and_a_metrics_row() -> None:
    registry = FakeRegistry()
    registry.register("m", RiverModel(logreg()), alias="champion")
    proc, pool = processor(registry, settings())
    proc.process(in_merge_order(qa_stream(phishing(30), 2)))
    rows = proc.after_batch(force=True)
    (row,) = rows
    cp = registry.latest_checkpoint("m", 1)
    assert cp is not None and cp.examples == 30 and row.seq == cp.seq == 1
    assert cp.offsets == {topic: {p: o for (t, p), o in proc.positions.items() if t == topic}
                          for topic in (P, F)}
    assert row.values[("accuracy", "cumulative")] == pool.get("m").champion.metrics.get(  # type: ignore[union-attr]
        "accuracy")
    assert row.event_time == T0 + timedelta(seconds=31)
    assert proc.after_batch(force=True) == []  # nothing changed since


def test_checkpoints__older_ones_are_pruned_every_checkpoints_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    from refluent.registry import RegistryCommitError

    registry = FakeRegistry()
    registry.register("m", RiverModel(logreg()), alias="champion")
    proc, pool = processor(registry, settings(checkpoint_every=10, checkpoints_kept=3))
    events = in_merge_order(qa_stream(phishing(120), 2))
    seqs: list[list[int]] = []
    for start in range(0, len(events), 20):
        proc.process(events[start:start + 20])
        proc.after_batch()
        seqs.append([cp.seq for cp in registry.ckpts[("m", 1)]])
    # Saved at 1, 2, 3, ...; at every third the older ones go and the newest 3 stay.
    assert max(map(max, seqs)) >= 9
    assert all(len(s) <= 3 + 2 for s in seqs)
    assert all(s == list(range(s[0], s[-1] + 1)) for s in seqs), "the newest are kept"
    # A failed prune is logged; learning and checkpoints go on.
    registry.prune_error = RegistryCommitError("lake.model_checkpoints", 10, "conflict")
    before = registry.ckpts[("m", 1)][-1].seq
    more = in_merge_order(qa_stream(phishing(160), 2))[len(events):]
    with caplog.at_level("WARNING"):
        for start in range(0, len(more), 20):
            proc.process(more[start:start + 20])
            proc.after_batch()
    assert registry.ckpts[("m", 1)][-1].seq > before
    assert "could not prune the checkpoints of m v1" in caplog.text
    assert pool.get("m").champion.examples == 160  # type: ignore[union-attr]


def test_pool__starts_each_partition_at_the_lowest_member_checkpoint() -> None:
    registry = FakeRegistry()
    registry.register("a", RiverModel(logreg()), alias="champion")
    registry.register("b", RiverModel(logreg()), alias="champion")
    registry.save_checkpoint("a", 1, RiverModel(logreg()), offsets={P: {0: 10, 1: 4}},
                             examples=3, state={})
    registry.save_checkpoint("b", 1, RiverModel(logreg()), offsets={P: {0: 7}, F: {0: 2}},
                             examples=1, state={})
    pool = LearnerPool(registry, settings())  # type: ignore[arg-type]
    pool.load()
    assert pool.start_offsets() == {(P, 0): 7, (P, 1): 4, (F, 0): 2}
    member = pool.get("a").champion  # type: ignore[union-attr]
    assert member is not None and member.examples == 3
    assert not member.accepts(Origin(P, 0, 9)) and member.accepts(Origin(P, 0, 10))


# ---------------------------------------------------------------------------------------------
# promotion
# ---------------------------------------------------------------------------------------------


def _member(version: int, task: str, pairs: list[tuple[Any, Scored]], window: int = 100,
            roles: tuple[str, ...] = ("champion",)) -> LearningMember:
    metrics_ = ProgressiveMetrics(task, window)  # type: ignore[arg-type]
    for y, s in pairs:
        metrics_.update(y, s)
    return LearningMember(Version("m", version, "river", task), None, roles, metrics_)  # type: ignore[arg-type]


def _acc(correct: int, total: int) -> list[tuple[Any, Scored]]:
    return [(True, Scored(1.0, i < correct, None)) for i in range(total)]


def test_promotion_rule__accuracy_must_beat_champion_by_the_margin() -> None:
    champion = _member(1, "classification", _acc(80, 100))
    better = _member(2, "classification", _acc(83, 100), roles=("challenger",))
    slightly = _member(3, "classification", _acc(81, 100), roles=("challenger",))
    reason = promotion_reason(champion, better, margin=0.02, min_labels=100)
    assert reason is not None
    assert "0.8300" in reason and "0.8000" in reason and "v2" in reason and "v1" in reason
    assert promotion_reason(champion, slightly, margin=0.02, min_labels=100) is None
    assert promotion_reason(champion, better, margin=0.02, min_labels=101) is None
    assert promotion_reason(champion, _member(4, "classification", _acc(80, 100)),
                            margin=0.0, min_labels=1) is None  # a tie is not better


def test_promotion_rule__mae_must_be_lower_by_a_relative_margin() -> None:
    champion = _member(1, "regression", [(0.0, Scored(1.0, None, None))] * 50)
    better = _member(2, "regression", [(0.0, Scored(0.9, None, None))] * 50)
    close = _member(3, "regression", [(0.0, Scored(0.99, None, None))] * 50)
    reason = promotion_reason(champion, better, margin=0.05, min_labels=50)
    assert reason is not None and "mae 0.9000" in reason and "10.00%" in reason
    assert promotion_reason(champion, close, margin=0.05, min_labels=50) is None


def test_learner__challenger_that_wins_is_promoted_and_old_champion_checkpointed() -> None:
    registry = FakeRegistry()
    registry.register("m", RiverModel(dummy.PriorClassifier()), alias="champion")
    registry.register("m", RiverModel(logreg()), alias="challenger-logreg")
    proc, pool = processor(registry, settings(promotion_min_labels=100, rolling_window=100,
                                              promotion_margin=0.05))
    learner = pool.get("m")
    assert learner is not None and sorted(learner.members) == [1, 2]
    events = in_merge_order(qa_stream(phishing(300), 3))
    rows = []
    for start in range(0, len(events), 50):
        proc.process(events[start:start + 50])
        rows += proc.after_batch()
    ((name, version, alias, reason),) = registry.promotions
    assert (name, version, alias) == ("m", 2, "champion")
    assert "rolling accuracy" in reason and "v1" in reason
    assert learner.champion is not None and learner.champion.version.version == 2
    assert 1 not in learner.members  # no learning alias left
    assert any(r.version == 1 for r in rows)  # its last numbers are on record
    assert proc.stats.promotions == 1
