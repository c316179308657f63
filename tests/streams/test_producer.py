"""Producer delivery checks, without a broker (the client is replaced by a fake)."""

from __future__ import annotations

from typing import Any

import pytest

from refluent.config import KafkaSettings
from refluent.streams.errors import DeliveryError
from refluent.streams.kafka import Producer

pytestmark = pytest.mark.unit


class _FakeMsg:
    def __init__(self, topic: str, partition: int) -> None:
        self._t, self._p = topic, partition

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p


class _FakeClient:
    """Fails every third record and fills up after 5 queued ones."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.queued: list[tuple[str, bytes | None, bytes | None]] = []
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.full_raised = 0

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        if len(self.queued) >= 5:
            self.full_raised += 1
            raise BufferError("queue full")
        self.queued.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        cb = self.conf["on_delivery"]
        n = len(self.queued)
        for rec in self.queued:
            self.sent.append(rec)
            if len(self.sent) % 3 == 0:
                cb("MSG_TIMED_OUT", _FakeMsg(rec[0], 1))
        self.queued = []
        return n

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.queued)


@pytest.fixture()
def producer(monkeypatch: pytest.MonkeyPatch) -> Producer:
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", _FakeClient)
    return Producer(KafkaSettings(), "fake:9092")


def test_config__idempotent_acks_all_error_only_reports(producer: Producer) -> None:
    conf = producer._producer.conf  # noqa: SLF001
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["delivery.report.only.error"] is True
    assert conf["partitioner"] == "murmur2_random"


def test_full_queue__is_backpressure_not_an_error(producer: Producer) -> None:
    for i in range(12):
        producer.produce("t", b"v", key=str(i))
    assert producer._producer.full_raised > 0  # noqa: SLF001
    with pytest.raises(DeliveryError):
        producer.flush()
    assert len(producer._producer.sent) == 12  # noqa: SLF001


def test_flush__raises_naming_topic_partition_and_error(producer: Producer) -> None:
    for _ in range(3):
        producer.produce("orders", b"v", key="k")
    with pytest.raises(DeliveryError, match=r"1 record\(s\) not delivered.*orders partition 1"
                                            r".*MSG_TIMED_OUT"):
        producer.flush()
    producer.produce("orders", b"v")
    producer.flush()  # failures are reported once
