"""``monitor.reference = "training"``: a version's features are compared with the training
window its registry lineage names (a real Iceberg table written by the lake sink, at the named
snapshot, that model's rows only). The oracle is the produced training rows: the alert's KS
statistic equals scipy's over exactly those rows and the window, so a reference taken from
another snapshot, another model's rows or the first requests would not match."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from refluent.config import MonitorSettings
from refluent.embedded.services import lake_catalog
from refluent.examples.models import river_classifier
from refluent.lake.mappings import RawEventsTable
from refluent.monitoring.monitor import ModelMonitors
from refluent.monitoring.reference import training_references
from refluent.registry.store import IcebergModelRegistry
from refluent.sinks.base import SinkRecord
from refluent.sinks.iceberg import IcebergSink
from refluent.streams.contracts import LabeledExample, Prediction
from refluent.streams.origin import Origin

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SIZE = 1000


def _examples(model: str, spends: list[float], start: int) -> list[SinkRecord[Any]]:
    out = []
    for i, spend in enumerate(spends, start):
        t = T0 + timedelta(seconds=i)
        ex = LabeledExample(prediction_id=f"p{i}", entity_id="e", model_name=model,
                            model_version="0", features={"spend": spend, "v": [1.0, 2.0]},
                            label=True, prediction_time=t, label_time=t)
        out.append(SinkRecord("examples", 0, i, b"e", ex, timestamp_ms=None))
    return out


def test_training_reference__is_the_named_snapshot_of_the_model_s_rows(tmp_path: Path) -> None:
    rnd = random.Random(7)
    (tmp_path / "warehouse").mkdir()
    catalog = lake_catalog(f"sqlite:///{tmp_path / 'catalog.db'}",
                           (tmp_path / "warehouse").as_uri())
    sink = IcebergSink(catalog, RawEventsTable(), "examples", namespace="lab",
                       max_records=10**6, max_seconds=3600)
    sink.setup()
    trained = [rnd.gauss(300, 20) for _ in range(SIZE + 200)]  # the last SIZE are the window
    others = [rnd.gauss(900, 5) for _ in range(500)]
    sink.write(_examples("churn", trained[:600], 0) + _examples("fraud", others, 600)
               + _examples("churn", trained[600:], 1100))
    sink.flush()
    sink.table.refresh()
    snapshot = sink.table.current_snapshot()
    assert snapshot is not None
    sink.write(_examples("churn", [rnd.gauss(5, 1) for _ in range(SIZE)], 5000))  # later
    sink.flush()

    registry = IcebergModelRegistry(catalog, "lab")
    registry.register("churn", river_classifier(("spend",)),
                      lineage={"training_table": "examples", "snapshot_id": snapshot.snapshot_id})
    registry.register("churn", river_classifier(("spend",)))  # v2: no training window
    monitors = ModelMonitors(MonitorSettings(reference="training", reference_size=SIZE,
                                             window_size=SIZE),
                             references=training_references(lambda: registry, lambda: catalog,
                                                            "lab", SIZE))
    served = [rnd.gauss(300, 20) for _ in range(SIZE)]
    found: dict[str, list[Any]] = {"1": [], "2": []}
    for version in found:
        for i, spend in enumerate(served):
            p = Prediction(prediction_id=f"{version}-{i}", request_id=f"r{i}",
                           model_name="churn", model_version=version, entity_id="e",
                           features={"spend": spend}, ts=T0 + timedelta(seconds=i))
            found[version] += monitors.on_prediction(p, Origin("predictions", 0, i))
    assert found["2"] == []  # its first requests are its reference: nothing to compare yet
    # v1 compares its first window with its training window at once; same distribution, so
    # no alert, and the statistics are those of exactly the training rows.
    assert found["1"] == []
    shifted = [rnd.gauss(340, 20) for _ in range(SIZE)]
    alerts = []
    for i, spend in enumerate(shifted, SIZE):
        p = Prediction(prediction_id=f"1-{i}", request_id=f"r{i}", model_name="churn",
                       model_version="1", entity_id="e", features={"spend": spend},
                       ts=T0 + timedelta(seconds=i))
        alerts += monitors.on_prediction(p, Origin("predictions", 0, i))
    assert [(a.feature, a.window["first_request"]) for a in alerts] == [("spend", SIZE)]
    expected = stats.ks_2samp(trained[-SIZE:], shifted).statistic
    assert alerts[0].window["ks"] == pytest.approx(expected, abs=1e-6)
