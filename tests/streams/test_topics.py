"""The topic catalog."""

from __future__ import annotations

import pytest

from refluent.config import TopicSettings
from refluent.streams import contracts as c
from refluent.streams.errors import UnknownTopicError
from refluent.streams.topics import TopicCatalog

pytestmark = pytest.mark.unit


def test_catalog__has_the_loop_topics_with_contracts_and_dlqs() -> None:
    catalog = TopicCatalog.from_settings(TopicSettings(cdc_tables=["users"], log_sources=["web"]))
    names = catalog.names()
    for name in ("inference.requests", "predictions", "feedback", "examples", "alerts",
                 "retrain.requests", "cdc.users", "logs.web"):
        assert name in names and name + ".dlq" in names
    assert catalog.get("feedback").contract is c.Feedback
    assert catalog.get("cdc.users").allow_tombstones
    assert not catalog.get("predictions").allow_tombstones


def test_patterns__match_unlisted_cdc_and_log_topics() -> None:
    catalog = TopicCatalog.from_settings(TopicSettings())
    assert catalog.get("cdc.inventory").contract is c.CdcEnvelope
    assert catalog.get("logs.mobile").contract is c.LogEvent
    dlq = catalog.get("cdc.inventory.dlq")
    assert dlq.contract is None and dlq.is_dlq and dlq.partitions == 1


def test_patterns__more_streams_of_the_loop_s_kinds_carry_their_contract() -> None:
    catalog = TopicCatalog.from_settings(TopicSettings())
    for name, contract in (("predictions.eu", c.Prediction), ("feedback.web", c.Feedback),
                           ("examples.eu", c.LabeledExample), ("alerts.staging", c.DriftAlert)):
        spec = catalog.get(name)
        assert (spec.name, spec.contract) == (name, contract)
        assert catalog.get(name + ".dlq").is_dlq
    assert catalog.get("predictions.dlq").is_dlq  # the loop's own DLQ, not a stream
    with pytest.raises(UnknownTopicError):
        catalog.get("inference.requests.eu")  # requests have no such siblings


def test_unknown_topic__error_lists_what_is_known() -> None:
    with pytest.raises(UnknownTopicError, match="'metrics'.*cdc\\.\\*"):
        TopicCatalog.from_settings(TopicSettings()).get("metrics")


def test_dlq__keeps_records_longer_and_larger() -> None:
    spec = TopicCatalog.from_settings(TopicSettings(retention_ms=3_600_000)).get("predictions")
    dlq = spec.dlq()
    assert int(dlq.topic_config()["retention.ms"]) >= 30 * 24 * 3600 * 1000
    assert int(dlq.topic_config()["max.message.bytes"]) >= 16 * 1024 * 1024
    forever = TopicCatalog.from_settings(TopicSettings(retention_ms=-1)).get("feedback").dlq()
    assert forever.retention_ms == -1


def test_settings__set_partitions_replication_and_retention() -> None:
    catalog = TopicCatalog.from_settings(
        TopicSettings(default_partitions=12, replication_factor=3, retention_ms=1000))
    spec = catalog.get("examples")
    assert (spec.partitions, spec.replication_factor) == (12, 3)
    assert spec.topic_config() == {"retention.ms": "1000", "cleanup.policy": "delete"}
    assert catalog.get("retrain.requests").partitions == 1
