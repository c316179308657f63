"""A DP retrain from a real lake: the registered challenger learned the rule the labels follow
(oracle: the rule, on fresh rows), its epsilon is what Opacus' accountant composes over what was
charged, a run id runs once, and a run over the budget is refused before anything happens."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from refluent.config import Settings
from refluent.examples.models import onnx_mlp_classifier
from refluent.jobs.retrain import RetrainJob
from refluent.lake.mappings import PredictionsTable, RawEventsTable
from refluent.models.onnx import OnnxModel
from refluent.privacy.accountant import accountant
from refluent.privacy.errors import BudgetExceededError
from refluent.privacy.iceberg import IcebergPrivacyLedger
from refluent.registry.base import CHAMPION
from refluent.registry.store import IcebergModelRegistry
from refluent.streams.contracts import LabeledExample, Prediction

from . import lake

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=UTC)
FEATURES = ("spend", "visits")


def rule(spend: float, visits: float) -> bool:
    return spend / 50 + visits / 3 > 5


def _row(rnd: random.Random) -> dict[str, Any]:
    return {"spend": round(rnd.uniform(0, 300), 2), "visits": rnd.randint(0, 15)}


def _lake(tmp_path: Path, n: int) -> Any:
    rnd = random.Random(7)
    catalog = lake.catalog(tmp_path)
    preds, examples = [], []
    for i in range(n):
        t, x = T0 + timedelta(seconds=i), _row(rnd)
        preds.append(Prediction(prediction_id=f"p{i}", request_id=f"r{i}", model_name="churn",
                                model_version="1", entity_id="e", score=0.5, label=True,
                                features=x, ts=t))
        examples.append(LabeledExample(
            prediction_id=f"p{i}", entity_id="e", model_name="churn", model_version="1",
            features=x, label=rule(**x), prediction_time=t,
            label_time=t + timedelta(minutes=1)))
    lake.write(catalog, "predictions", PredictionsTable(), preds, 0)
    lake.write(catalog, "examples", RawEventsTable(), examples, 0)
    return catalog


def test_retrain__registers_a_dp_challenger_with_the_accountant_s_epsilon(tmp_path: Path
                                                                          ) -> None:
    catalog = _lake(tmp_path, 6000)
    registry = IcebergModelRegistry(catalog, "lab")
    registry.register("churn", OnnxModel(onnx_mlp_classifier(FEATURES).data), alias=CHAMPION)
    settings = Settings(lake={"namespace": "lab"}, privacy={"epsilon_budget": 2.5},
                        retrain={"target_epsilon": 2.0, "seed": 11,
                                 "feature_scales": {"spend": (150.0, 90.0)}})
    ledger = IcebergPrivacyLedger(catalog, "lab", budget=2.5, delta=1e-5)
    job = RetrainJob(settings, catalog=catalog, registry=registry, ledger=ledger)

    out = job.run("churn", run_id="run-1")

    v = out.version
    assert (v.version, v.parent, v.kind) == (2, 1, "onnx")
    assert registry.aliases("churn") == {CHAMPION: 1, "challenger-dp": 2}
    # The run the ledger charged is the run the version records, and its epsilon is Opacus'
    # composition of it.
    assert out.entry is not None and [e.run_id for e in ledger.entries("churn")] == ["run-1"]
    spend = out.entry.spend
    lin = v.lineage
    assert (lin["noise_multiplier"], lin["sample_rate"], lin["steps"]) == (
        spend.noise_multiplier, spend.sample_rate, spend.steps)
    # 4800 training rows, 512 a batch expected: 10 steps an epoch, 5 epochs.
    assert spend.steps == 5 * 10 and spend.sample_rate == 1 / 10
    acc = accountant("prv")
    acc.history = [(spend.noise_multiplier, spend.sample_rate, spend.steps)]
    assert v.epsilon == pytest.approx(acc.get_epsilon(1e-5)) and v.epsilon <= 2.0
    assert lin["snapshot_id"] == out.training_set.predictions_snapshot  # type: ignore[union-attr]
    assert (lin["train_rows"], lin["validation_rows"], lin["rows"]) == (4800, 1200, 4800)
    assert lin["offsets"]["predictions"] == {"predictions:0": 6000}
    assert lin["device"] == "cpu" and lin["run_id"] == "run-1"
    assert lin["feature_scales"] == {"spend": [150.0, 90.0]}  # visits: symlog
    # It learned the rule: fresh rows, scored as serving would score them.
    _, model = registry.load("churn", 2)
    rnd = random.Random(99)
    rows = [_row(rnd) for _ in range(2000)]
    right = sum(s.label == rule(**x) for s, x in zip(model.predict_many(rows), rows,
                                                      strict=True))
    assert right / len(rows) > 0.85  # a third of the rows are positive
    assert v.metrics["validation_accuracy"] > 0.85

    again = job.run("churn", run_id="run-1")  # the same request: nothing runs twice
    assert again.repeated and again.version == v
    assert len(ledger.entries("churn")) == 1 and len(registry.versions("churn")) == 2

    with pytest.raises(BudgetExceededError, match="budget 2.5"):
        job.run("churn", run_id="run-2")  # 2.0 more would compose to more than 2.5
    assert len(ledger.entries("churn")) == 1 and len(registry.versions("churn")) == 2


def _accuracy(registry: IcebergModelRegistry, version: int) -> float:
    _, model = registry.load("churn", version)
    rnd = random.Random(99)
    rows = [_row(rnd) for _ in range(2000)]
    scored = model.predict_many(rows)
    return sum(s.label == rule(**x) for s, x in zip(scored, rows, strict=True)) / len(rows)


def test_retrain__two_torchrun_processes_spend_the_same_epsilon_for_an_equal_model(
        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    registries = {}
    for where in ("one", "two"):
        (tmp_path / where).mkdir()
        catalog = _lake(tmp_path / where, 6000)
        registries[where] = IcebergModelRegistry(catalog, "lab")
        registries[where].register("churn", OnnxModel(onnx_mlp_classifier(FEATURES).data),
                                   alias=CHAMPION)
    retrain = {"target_epsilon": 2.0, "seed": 11}
    single = RetrainJob(Settings(lake={"namespace": "lab"}, retrain=retrain),
                        catalog=registries["one"].catalog,
                        registry=registries["one"]).run("churn", run_id="single")
    env = {**os.environ, "REFLUENT_LAKE__NAMESPACE": "lab", "REFLUENT_RETRAIN__SEED": "11",
           "REFLUENT_RETRAIN__TARGET_EPSILON": "2.0",
           "REFLUENT_LAKE__CATALOG_URI": f"sqlite:///{tmp_path / 'two' / 'catalog.db'}",
           "REFLUENT_LAKE__WAREHOUSE": (tmp_path / "two" / "warehouse").as_uri()}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2", "-m", "refluent.cli", "retrain", "churn", "--run-id",
                "ddp", "--runner", "local"]
    done = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = registries["two"].get("churn", 2)
    assert registries["two"].aliases("churn")["challenger-dp"] == 2
    assert ddp.lineage["world_size"] == 2 and single.version.lineage["world_size"] == 1
    ledger = IcebergPrivacyLedger(registries["two"].catalog, "lab", budget=10, delta=1e-5)
    assert [e.run_id for e in ledger.entries("churn")] == ["ddp"]  # charged once, not twice
    for key in ("noise_multiplier", "sample_rate", "steps"):
        assert ddp.lineage[key] == single.version.lineage[key]
    # The same mechanism (asserted above), so the same epsilon; torchrun gives each worker one
    # OpenMP thread, and the accountant's numerics round the last bits differently with
    # another thread count (OMP_NUM_THREADS=1 alone moves them).
    assert ddp.epsilon == pytest.approx(single.version.epsilon, rel=1e-12)
    one, two = _accuracy(registries["one"], 2), _accuracy(registries["two"], 2)
    # Equal quality: both learned the rule (a third of the rows are positive); what is left
    # between them is the noise of two DP runs.
    assert one > 0.85 and two > 0.85 and abs(one - two) < 0.1, (one, two)
