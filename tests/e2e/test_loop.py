"""The whole loop as a user runs it: ``refluent serve`` answers prediction requests from Kafka,
``refluent feedback`` joins the labels that arrive later to the predictions, and the champion
learns online, scored by progressive validation.

Both commands run as subprocesses on the test run's broker, Redis and lake catalog. The questions
and answers are River's: ``river.stream.simulate_qa`` over the first ``N`` rows of
``river.datasets.Phishing()``, each answer revealed ``DELAY`` questions after its question.

The feedback join merges predictions and labels by event time, and a prediction's event time is
the moment the service scored it (``Prediction.ts``), not the request's ``ts``. So the client
sends a question once the previous one is answered, which gives every prediction its own time in
question order, and times each label from the predictions read back: an answer revealed just
before question ``j`` carries the prediction time of question ``j`` (at equal times the join takes
labels first, as ``simulate_qa`` yields them), and the answers revealed after the last question
follow it a millisecond apart. The service then sees the questions and answers in River's order,
and the champion's progressive accuracy must equal ``river.evaluate.progressive_val_score`` on
the same stream and delay, exactly.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from river import datasets, evaluate, metrics, stream
from support.qa import logreg

from refluent.config import Settings
from refluent.embedded.commands import RefluentCommand
from refluent.embedded.services import check_lake
from refluent.lake.catalog import load_table, open_catalog
from refluent.models.river import RiverModel
from refluent.online_learning.metrics import ProgressiveMetrics
from refluent.registry import ModelRegistry
from refluent.serving.scorer import prediction_id
from refluent.streams.contracts import Feedback, LabeledExample, Prediction, PredictionRequest
from refluent.streams.deadletter import DeadLetter
from refluent.streams.io import TailRecord
from refluent.streams.kafka import Producer, TopicAdmin, partition_offsets
from refluent.streams.topics import TopicCatalog
from refluent.testing.kafka import read_all
from refluent.testing.services import RunningServices

pytestmark = pytest.mark.e2e

N = 300
DELAY = 7
"""Questions between a question and the reveal of its answer."""
REQUESTS = "inference.requests"
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
EXAMPLES = "examples"
FIRST_ANSWER_S = 60.0
"""Longest wait for the first answer: the service starts and joins its consumer group."""
ANSWER_S = 15.0
"""Longest wait for any later answer."""
COMMAND_S = 120.0
"""Longest run of ``refluent feedback --until-caught-up``."""

Row = tuple[Any, Any]
"""A dataset row, (features, label), as River types it."""


def phishing(n: int) -> list[Row]:
    return list(itertools.islice(datasets.Phishing(), n))


# ---------------------------------------------------------------------------------------------
# the commands and the topics
# ---------------------------------------------------------------------------------------------


@dataclass
class Loop:
    """The test's settings, lake namespace, registry and commands.

    The commands use the catalog's topics, which every test of the run shares: what a test
    checks is told apart by its ``tag`` (request ids, model names) or its prediction ids.
    """

    services: RunningServices
    settings: Settings
    registry: ModelRegistry
    tag: str
    cwd: Path
    commands: list[RefluentCommand] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers or ""

    def env(self) -> dict[str, str]:
        return self.services.command_env(
            namespace=self.settings.lake.namespace, key_prefix=f"t{self.tag}",
            REFLUENT_SERVING__GROUP=f"serve-{self.tag}",
            REFLUENT_FEEDBACK__GROUP=f"feedback-{self.tag}",
            REFLUENT_FEEDBACK__CHECKPOINT_EVERY="100", COLUMNS="200")

    def command(self, name: str, *args: str) -> RefluentCommand:
        cmd = RefluentCommand(name, [name, *args], self.env(), self.cwd)
        self.commands.append(cmd)
        return cmd

    def serve(self, model: str) -> RefluentCommand:
        return self.command("serve", "--models", model, "--no-http").start(fresh_log=True)

    def feedback(self, model: str) -> RefluentCommand:
        """``refluent feedback`` until caught up; fails the test unless it ends cleanly."""
        cmd = self.command("feedback", "--model", model, "--until-caught-up", "--idle-s", "0.5")
        code = cmd.start(fresh_log=True).wait(COMMAND_S)
        assert code == 0, cmd.output()
        return cmd

    def produce(self, records: Sequence[tuple[str, bytes, str]]) -> None:
        with Producer(self.settings.kafka, self.bootstrap) as producer:
            for topic, value, key in records:
                producer.produce(topic, value, key)

    def read(self, topic: str) -> list[TailRecord]:
        """Every record ``topic`` holds now."""
        ends = partition_offsets(self.settings.kafka, self.bootstrap, topic)
        held = sum(int(r["high"] or 0) - int(r["low"] or 0) for r in ends)
        records = read_all(self.settings, topic, held, timeout=10.0) if held else []
        assert len(records) == held, f"{topic}: read {len(records)} of {held} records"
        return records

    def dead_letters(self, topic: str, mine: Collection[str]) -> list[DeadLetter]:
        """Dead letters of ``topic`` whose record holds one of the strings ``mine``."""
        letters = [DeadLetter.parse(r.headers, r.key, r.value) for r in self.read(f"{topic}.dlq")]
        return [d for d in letters if any(s.encode() in (d.value or b"") for s in mine)]


@pytest.fixture()
def loop(services: RunningServices, tmp_path: Path) -> Iterator[Loop]:
    tag = uuid.uuid4().hex[:10]
    namespace = f"t_{tag}"
    check_lake(services.catalog_uri, services.warehouse, namespace, create=True)
    settings = services.settings(lake={"namespace": namespace},
                                 redis={"key_prefix": f"t{tag}"})
    catalog = TopicCatalog.from_settings(settings.topics)
    TopicAdmin(settings.kafka, settings.kafka.bootstrap_servers or "").ensure(
        [s for name in (REQUESTS, PREDICTIONS, FEEDBACK, EXAMPLES)
         for s in (catalog.get(name), catalog.get(name).dlq())])
    e = Loop(services, settings, ModelRegistry.from_settings(settings), tag, tmp_path)
    try:
        yield e
    finally:
        for cmd in e.commands:
            cmd.stop()


class PredictionWatch:
    """Reads ``predictions`` from its end as of its creation, to see answers as they come.

    The end is ListOffsets' answer, which the embedded broker may give short of the true end
    (see :func:`refluent.streams.kafka.exact_ends`): older predictions read again are ignored.
    """

    def __init__(self, settings: Settings) -> None:
        conf = settings.kafka.client_config(settings.kafka.bootstrap_servers or "")
        conf.update({"group.id": f"watch-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
                     "fetch.wait.max.ms": 10})
        self.consumer = ck.Consumer(conf)
        topic = self.consumer.list_topics(PREDICTIONS, timeout=10).topics[PREDICTIONS]
        starts = []
        for p in sorted(topic.partitions):
            _, high = self.consumer.get_watermark_offsets(ck.TopicPartition(PREDICTIONS, p),
                                                          timeout=10)
            starts.append(ck.TopicPartition(PREDICTIONS, p, high))
        self.consumer.assign(starts)

    def wait(self, wanted: Collection[str], timeout: float, server: RefluentCommand
             ) -> dict[str, Prediction]:
        """The predictions answering the request ids ``wanted`` (fewer after ``timeout``)."""
        got: dict[str, Prediction] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(wanted) and time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is None:
                server.check_alive()
                continue
            if msg.error() is not None:
                continue
            p = Prediction.model_validate_json(msg.value() or b"")
            if p.request_id in wanted:
                got[p.request_id] = p
        return got

    def close(self) -> None:
        self.consumer.close()


def request(loop: Loop, name: str, model: str, x: dict[str, Any]) -> PredictionRequest:
    """A request ``<tag>-<name>`` for one of 17 entities (the predictions' partition key)."""
    return PredictionRequest(request_id=f"{loop.tag}-{name}", model=model,
                             entity_id=f"site-{zlib.crc32(name.encode()) % 17}", features=x)


def encoded(r: PredictionRequest) -> tuple[str, bytes, str]:
    return REQUESTS, r.model_dump_json().encode(), r.entity_id


def labelled(f: Feedback) -> tuple[str, bytes, str]:
    return FEEDBACK, f.model_dump_json().encode(), f.prediction_id or ""


def champion_state(loop: Loop, model: str) -> tuple[int, ProgressiveMetrics, Any]:
    cp = loop.registry.latest_checkpoint(model, 1)
    assert cp is not None, f"no checkpoint of {model} v1"
    return cp.examples, ProgressiveMetrics.from_state(cp.state["metrics"]), cp


def answered_count(serve_output: str) -> int:
    found = re.search(r"(\d+) request\(s\) answered, \d+ dead-lettered", serve_output)
    assert found, serve_output
    return int(found.group(1))


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def label_times(data: list[Row], served: list[Prediction]) -> dict[int, datetime]:
    """Event time of the label of each question, from the prediction times ``served`` (see the
    module docstring): the labels revealed before a question end at its prediction time, one
    microsecond apart; those revealed after the last question follow it a millisecond apart."""
    times: dict[int, datetime] = {}
    revealed: list[int] = []
    for i, _, y in stream.simulate_qa(data, None, DELAY):
        if y is not None:
            revealed.append(i)
            continue
        at = served[i].ts
        for k, j in enumerate(revealed):
            times[j] = at - timedelta(microseconds=len(revealed) - 1 - k)
        revealed = []
    for k, j in enumerate(revealed):
        times[j] = served[-1].ts + timedelta(milliseconds=k + 1)
    return times


def test_loop__champion_learns_from_delayed_labels_exactly_as_river_progressive_validation(
        loop: Loop) -> None:
    data = phishing(N)
    model = f"phish-{loop.tag}"
    features = tuple(data[0][0])
    # The dataset's features, declared by no view: request-time features every request brings.
    loop.registry.register(model, RiverModel(logreg(), feature_names=features, name=model),
                           alias="champion")

    # Question i is asked (request id and ts) once question i - 1 is answered.
    watch = PredictionWatch(loop.settings)
    server = loop.serve(model)
    requests: list[PredictionRequest] = []
    served: list[Prediction] = []
    try:
        with Producer(loop.settings.kafka, loop.bootstrap) as producer:
            for i, (x, _) in enumerate(data):
                r = request(loop, f"q{i:04d}", model, x)
                requests.append(r)
                producer.produce(*encoded(r))
                producer.flush()
                got = watch.wait({r.request_id}, FIRST_ANSWER_S if i == 0 else ANSWER_S,
                                 server)
                assert r.request_id in got, (f"request {i} not answered:\n"
                                             f"{server.output()}")
                served.append(got[r.request_id])
    finally:
        watch.close()
    server.check_alive()
    assert server.stop() == 0, server.output()
    assert answered_count(server.output()) == N  # requests for other models: dead letters

    # Answered as served, each prediction after its request and after the one before it.
    reference_server = loop.registry.load(model)[1]
    for r, p, (x, _) in zip(requests, served, data, strict=True):
        assert p.prediction_id == prediction_id(model, r.request_id)
        assert (p.model_name, p.model_version, p.entity_id) == (model, "1", r.entity_id)
        assert p.features == x and list(p.features) == list(x)
        assert p.probabilities == reference_server.predict_one(x).probabilities
        assert p.ts >= r.ts
    assert all(a.ts < b.ts for a, b in itertools.pairwise(served))

    # Every request answered exactly once, none dead-lettered.
    ids = Counter(p.request_id for p in (Prediction.model_validate_json(r.value or b"")
                                         for r in loop.read(PREDICTIONS))
                  if p.request_id.startswith(f"{loop.tag}-"))
    assert ids == Counter({r.request_id: 1 for r in requests})
    assert loop.dead_letters(REQUESTS, [loop.tag]) == []

    # The answers, in simulate_qa's order, timed from the predictions.
    times = label_times(data, served)
    order = [i for i, _, y in stream.simulate_qa(data, None, DELAY) if y is not None]
    assert sorted(order) == list(range(N))
    assert all(times[a] < times[b] for a, b in itertools.pairwise(order))
    assert all(times[i] > served[i].ts for i in range(N))
    at_a_question = {p.ts for p in served}
    assert sum(times[i] in at_a_question for i in range(N)) == N - DELAY  # ties: labels first
    pids = {served[i].prediction_id: i for i in range(N)}
    loop.produce([labelled(Feedback(prediction_id=served[i].prediction_id, label=data[i][1],
                                 event_time=times[i])) for i in order])

    cmd = loop.feedback(model)

    # Every label joined exactly once, none dead-lettered.
    examples = [e for e in (LabeledExample.model_validate_json(r.value or b"")
                            for r in loop.read(EXAMPLES)) if e.model_name == model]
    assert Counter(e.prediction_id for e in examples) == Counter(dict.fromkeys(pids, 1))
    for e in examples:
        i = pids[e.prediction_id]
        assert e.label is data[i][1] and e.features == data[i][0]
        assert (e.prediction_time, e.label_time) == (served[i].ts, times[i])
    assert loop.dead_letters(FEEDBACK, list(pids)) == []

    # The champion's progressive accuracy is River's, exactly, and so is what it learned.
    reference = logreg()
    expected = evaluate.progressive_val_score(data, reference, metrics.Accuracy(),
                                              moment=None, delay=DELAY).get()
    learned, measured, cp = champion_state(loop, model)
    assert learned == N and measured.labels == N
    assert measured.get("accuracy") == expected
    probe = data[-1][0]
    assert loop.registry.load_checkpoint(cp).predict_one(probe).probabilities == {
        str(k): v for k, v in reference.predict_proba_one(probe).items()}
    table = load_table(open_catalog(loop.settings), "model_metrics",
                       loop.settings.lake.namespace)
    rows = [r for r in table.scan().to_arrow().to_pylist() if r["model"] == model]
    last = max(rows, key=lambda r: r["seq"])
    assert last["accuracy"] == expected and last["examples"] == N
    assert f"{model} v1 (champion): {N} learned; accuracy {expected:.4f}" in cmd.output()


# ---------------------------------------------------------------------------------------------
# bad input through the loop
# ---------------------------------------------------------------------------------------------


def test_loop__bad_requests_and_labels_are_dead_lettered_and_the_good_ones_go_through(
        loop: Loop) -> None:
    data = phishing(5)
    model = f"phish-{loop.tag}"
    features = tuple(data[0][0])
    loop.registry.register(model, RiverModel(logreg(), feature_names=features, name=model),
                           alias="champion")
    good = [request(loop, f"g{i}", model, x) for i, (x, _) in enumerate(data)]
    x0 = data[0][0]
    missing = {k: v for k, v in x0.items() if k != "https"}
    bad: list[tuple[str, bytes, str]] = [
        (REQUESTS, f'{{"request_id": "{loop.tag}-broken", "model": '.encode(), "k"),
        encoded(request(loop, "unknown", f"nope-{loop.tag}", x0)),
        (REQUESTS, f'{{"request_id": "{loop.tag}-invalid", "model": "{model}"}}'.encode(), "k"),
        encoded(request(loop, "missing", model, missing)),
    ]
    # Bad requests between good ones: the service goes on after each.
    loop.produce([encoded(good[0]), encoded(good[1]), *bad[:3], encoded(good[2]), *bad[3:],
                  encoded(good[3]), encoded(good[4])])

    watch = PredictionWatch(loop.settings)
    server = loop.serve(model)
    try:
        # The watch starts at the topic's end: these requests wait for the service anyway.
        got = watch.wait({r.request_id for r in good}, FIRST_ANSWER_S, server)
    finally:
        watch.close()
    assert sorted(got) == sorted(r.request_id for r in good), server.output()
    server.check_alive()  # still serving after the bad requests
    assert server.stop() == 0, server.output()  # a clean stop: every answer acknowledged
    letters = loop.dead_letters(REQUESTS, [loop.tag])
    assert answered_count(server.output()) == len(good)
    by_reason = {d.reason: d for d in letters}
    assert sorted((d.step, d.reason) for d in letters) == [
        ("decode", "json"), ("decode", "validation"), ("serving", "missing_features"),
        ("serving", "unknown_model")]
    assert f"nope-{loop.tag}" in by_reason["unknown_model"].message
    assert "'https'" in by_reason["missing_features"].message
    assert by_reason["json"].value == bad[0][1]  # the record kept whole
    assert all(d.topic == REQUESTS for d in letters)
    ids = Counter(p.request_id for p in (Prediction.model_validate_json(r.value or b"")
                                         for r in loop.read(PREDICTIONS))
                  if p.request_id.startswith(f"{loop.tag}-"))
    assert ids == Counter({r.request_id: 1 for r in good})

    # Labels a second after their predictions; the third is not a class of the model.
    served = [got[r.request_id] for r in good]
    labels = [labelled(Feedback(prediction_id=p.prediction_id,
                             label="maybe" if i == 2 else data[i][1],
                             event_time=p.ts + timedelta(seconds=1)))
              for i, p in enumerate(served)]
    broken = (FEEDBACK, f'{{"prediction_id": "{loop.tag}-p", "label": '.encode(), "k")
    loop.produce([*labels[:2], broken, *labels[2:]])

    loop.feedback(model)

    pids = [p.prediction_id for p in served]
    letters = loop.dead_letters(FEEDBACK, [*pids, loop.tag])
    assert sorted((d.step, d.reason) for d in letters) == [("decode", "json"),
                                                           ("feedback_join", "label_type")]
    by_reason = {d.reason: d for d in letters}
    assert "'maybe'" in by_reason["label_type"].message
    assert by_reason["label_type"].value == labels[2][1]
    assert by_reason["json"].value == broken[1]
    examples = Counter(e.prediction_id for e in (LabeledExample.model_validate_json(r.value or b"")
                                                 for r in loop.read(EXAMPLES))
                       if e.model_name == model)
    assert examples == Counter({pid: 1 for i, pid in enumerate(pids) if i != 2})
    learned, measured, _ = champion_state(loop, model)
    assert learned == 4 and measured.labels == 4
