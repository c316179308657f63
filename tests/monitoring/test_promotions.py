"""``model.promoted``: every alias change in a real (Iceberg) registry's event log becomes one
alert, in order, once; a restarted monitor repeats those within its look-back with the same ids
(which the webhook outbox takes once) and none older."""

from __future__ import annotations

from pathlib import Path

import pytest

from refluent.config import MonitorSettings, Settings
from refluent.embedded.services import lake_catalog
from refluent.examples.models import river_classifier
from refluent.monitoring.service import MonitorService
from refluent.registry.store import IcebergModelRegistry

pytestmark = pytest.mark.integration

FEATURES = ("x1", "x2")


def test_monitor__announces_each_alias_change_of_the_registry_once(tmp_path: Path) -> None:
    (tmp_path / "warehouse").mkdir()
    catalog = lake_catalog(f"sqlite:///{tmp_path / 'catalog.db'}",
                           (tmp_path / "warehouse").as_uri())
    registry = IcebergModelRegistry(catalog, "lab")
    service = MonitorService(Settings(), "127.0.0.1:9", registry=registry)
    assert service.check_promotions() == []
    registry.register("churn", river_classifier(FEATURES), alias="champion")
    registry.register("churn", river_classifier(FEATURES))
    registry.promote("churn", 2, reason="better log loss")
    first = service.check_promotions()
    assert [(a.model_version, a.detector, a.window["seq"]) for a in first] == [
        ("1", "promote", 1), ("2", "promote", 2)]
    assert first[1].window["reason"] == "better log loss"
    assert first[1].window["previous_version"] == 1
    registry.rollback("churn")
    assert [(a.model_version, a.detector) for a in service.check_promotions()] == [
        ("1", "rollback")]
    assert service.check_promotions() == []
    again = MonitorService(Settings(), "127.0.0.1:9", registry=registry).check_promotions()
    assert [a.alert_id for a in again][:2] == [a.alert_id for a in first]
    quiet = Settings(monitor=MonitorSettings(promotion_lookback_s=0))
    assert MonitorService(quiet, "127.0.0.1:9", registry=registry).check_promotions() == []
