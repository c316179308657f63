"""``kill -9`` the feedback service while it learns: the champion ends as if nothing had
crashed.

``refluent feedback`` runs as a subprocess on the session's broker, Redis and lake catalog, over
topics of its own. The stream is River's ``simulate_qa`` over ``N`` Phishing rows (cycled), each
label ``DELAY`` questions after its prediction, all produced up front. Checkpoints come every
``CHECKPOINT_EVERY`` examples, so a run is a string of lake commits with batches in between.
Before each of ``KILLS`` kills the service (started afresh each time) is seen producing
examples; it is then killed after a seeded random pause and started again at once. Each kill
is shown to land with work pending: the examples it had produced when it died cover fewer than
``N`` predictions (so it had records left to process), and the input holds records past the
offsets of the latest checkpoint, which is where the restarted service resumes (so the restart
has them to do again). Each kill's numbers are recorded as the test's ``kills`` property.

At the end the champion's latest checkpoint has learned every example once, its progressive
accuracy equals ``river.evaluate.progressive_val_score`` on the same stream and delay, exactly,
and its probabilities equal River's model's. Every prediction has at least one example (a
crash between a producer flush and the Redis write that follows repeats that batch's
examples: at-least-once), and no label was dead-lettered (a replayed label is recognised, not
taken for a duplicate).
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from river import datasets, evaluate, metrics
from support.qa import logreg, qa_records

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand
from refluent.embedded.services import check_lake
from refluent.feedback.service import FeedbackService
from refluent.models.river import RiverModel
from refluent.online_learning.metrics import ProgressiveMetrics
from refluent.registry import ModelRegistry
from refluent.streams.contracts import LabeledExample
from refluent.streams.kafka import Producer
from refluent.testing.kafka import read_all, topic_ends
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.e2e

N = 3000
DELAY = 7
KILLS = 3
CHECKPOINT_EVERY = 50
SEED = 20261206
PROGRESS_S = 90.0
"""Longest wait for a new checkpoint after a start (start-up and group join included)."""
FINAL_S = 180.0
"""Longest run of the last ``refluent feedback --until-caught-up``."""
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass
class Run:
    """The test's services, settings, registry and topics, and its ``refluent feedback``."""

    services: RunningServices
    settings: Settings
    registry: ModelRegistry
    tag: str
    cwd: Path

    @property
    def topics(self) -> tuple[str, str, str]:
        return f"predictions-{self.tag}", f"feedback-{self.tag}", f"examples-{self.tag}"

    def command(self, *extra: str) -> RefluentCommand:
        env = self.services.command_env(
            namespace=self.settings.lake.namespace, key_prefix=f"t{self.tag}",
            REFLUENT_FEEDBACK__GROUP=f"feedback-{self.tag}",
            REFLUENT_FEEDBACK__CHECKPOINT_EVERY=str(CHECKPOINT_EVERY))
        predictions, feedback, examples = self.topics
        return RefluentCommand("feedback", [
            "feedback", "--model", self.model, "--idle-s", "0.5",
            "--predictions-topic", predictions, "--feedback-topic", feedback,
            "--examples-topic", examples, *extra], env, self.cwd)

    @property
    def model(self) -> str:
        return f"crash-{self.tag}"



@pytest.fixture()
def run(services: RunningServices, tmp_path: Path) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:10]
    namespace = f"t_{tag}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    settings = services.settings(lake={"namespace": namespace}, redis={"key_prefix": f"t{tag}"})
    r = Run(services, settings, ModelRegistry.from_settings(settings), tag, tmp_path)
    predictions, feedback, examples = r.topics
    FeedbackService(settings, services.bootstrap_servers, services.redis_url,
                    predictions_topic=predictions, feedback_topic=feedback,
                    examples_topic=examples).ensure_topics()
    yield r
    r.registry.close()


@dataclass(frozen=True)
class Kill:
    """Where the work stood right after one kill."""

    examples: int
    """Example records the killed service had produced (replays included)."""
    predictions_done: int
    """Distinct predictions those examples cover (``N``: it had finished)."""
    to_do: int
    """Input records past the latest checkpoint's offsets: what a restart processes again."""


def examples_end(run: Run) -> int:
    return sum(topic_ends(run.settings, run.topics[2]).values())


def after_kill(run: Run) -> Kill:
    """What the killed service had done, and what its restart has to do."""
    end = examples_end(run)
    done = {LabeledExample.model_validate_json(r.value or b"{}").prediction_id
            for r in read_all(run.settings, run.topics[2], end, timeout=10)}
    ends = {(topic, p): end for topic in run.topics[:2]
            for p, end in topic_ends(run.settings, topic).items()}
    cp = run.registry.latest_checkpoint(run.model, 1)
    offsets = cp.offsets if cp is not None else {}
    checkpointed = sum(offsets.get(t, {}).get(p, 0) for t, p in ends)
    return Kill(end, len(done), sum(ends.values()) - checkpointed)


def wait_for_progress(run: Run, cmd: RefluentCommand, since: int) -> None:
    """Wait until the service has produced an example past the ``since`` there were when it
    started (start-up and group join take seconds; a busy service a few milliseconds)."""
    deadline = time.monotonic() + PROGRESS_S
    while time.monotonic() < deadline:
        cmd.check_alive()
        if examples_end(run) > since:
            return
        time.sleep(0.02)
    raise AssertionError(f"no example past {since} in {PROGRESS_S:.0f}s:\n{cmd.output(3000)}")


def test_feedback__kill_9_while_learning_learns_every_example_once(
        run: Run, record_property: Callable[[str, object], None]) -> None:
    data = list(itertools.islice(itertools.cycle(datasets.Phishing()), N))
    predictions, feedback, examples = run.topics
    records = qa_records(data, DELAY, model=run.model, t0=T0, predictions=predictions,
                         feedback=feedback, entities=29)
    run.registry.register(run.model, RiverModel(logreg()), alias="champion")
    with Producer(run.settings.kafka, run.services.bootstrap_servers) as producer:
        for topic, value, key in records:
            producer.produce(topic, value, key)

    rng = random.Random(SEED)
    since = examples_end(run)
    cmd = run.command().start(fresh_log=True)
    kills: list[Kill] = []
    try:
        for _ in range(KILLS):
            wait_for_progress(run, cmd, since)
            time.sleep(rng.uniform(0.0, 0.1))
            cmd.kill9()
            kills.append(after_kill(run))
            since = kills[-1].examples
            cmd.start()
        cmd.stop()
        last = run.command("--until-caught-up").start()
        code = last.wait(FINAL_S)
        assert code == 0, last.output(3000)
    finally:
        cmd.stop()
    assert cmd.kills == KILLS
    record_property("kills", [vars(k) for k in kills])
    for kill in kills:  # each kill stopped a service with records still to do
        assert kill.predictions_done < N and kill.to_do > 0, kills

    cp = run.registry.latest_checkpoint(run.model, 1)
    assert cp is not None
    measured = ProgressiveMetrics.from_state(cp.state["metrics"])
    reference = logreg()
    expected = evaluate.progressive_val_score(data, reference, metrics.Accuracy(), delay=DELAY)
    assert cp.examples == N
    assert measured.labels == N
    assert measured.get("accuracy") == expected.get()  # exact: nothing learned twice or lost
    probe = data[11][0]
    assert run.registry.load_checkpoint(cp).predict_one(probe).probabilities == {
        str(k): v for k, v in reference.predict_proba_one(probe).items()}

    held = sum(topic_ends(run.settings, examples).values())
    produced = Counter(LabeledExample.model_validate_json(r.value or b"").prediction_id
                       for r in read_all(run.settings, examples, held, timeout=5.0))
    assert set(produced) == {f"p{i}" for i in range(N)}
    assert sum(topic_ends(run.settings, f"{feedback}.dlq").values()) == 0
