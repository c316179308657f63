"""Which lake table mapping each topic gets (no services: the catalog is never opened)."""

from __future__ import annotations

import pytest

from refluent.config import Settings
from refluent.lake.mappings import (
    CdcChangelogTable,
    FeatureHistoryTable,
    PredictionsTable,
    RawEventsTable,
)
from refluent.sinks.pipeline import lake_routes

pytestmark = pytest.mark.unit


def test_lake_routes__choose_the_mapping_from_the_topics_contract() -> None:
    settings = Settings(topics={"cdc_primary_keys": {"orders": ["order_id"]}})
    topics = ["cdc.orders", "features.activity", "predictions", "logs.app", "examples",
              "somewhere.else"]
    routes = lake_routes(settings, topics, make_catalog=lambda: None)
    mappings = {t: routes[t][0].mapping for t in topics}  # type: ignore[attr-defined]
    assert isinstance(mappings["cdc.orders"], CdcChangelogTable)
    assert mappings["cdc.orders"].primary_key == ("order_id",)
    assert isinstance(mappings["features.activity"], FeatureHistoryTable)
    assert isinstance(mappings["predictions"], PredictionsTable)
    # Other contracts, and topics the catalog does not know, land as raw events.
    for topic in ("logs.app", "examples", "somewhere.else"):
        assert type(mappings[topic]) is RawEventsTable, topic
