"""The retraining loop's two Kafka services.

- :class:`TriggerService` (``refluent jobs trigger``) reads ``alerts`` in the group
  ``jobs.trigger_group`` and, where :class:`~refluent.jobs.trigger.RetrainTrigger` grants it,
  produces a :class:`~refluent.streams.contracts.RetrainRequest` to ``retrain.requests`` (keyed
  by model), flushed before the alerts' offsets are committed.
- :class:`LauncherService` (``refluent jobs launch``) reads ``retrain.requests`` in the group
  ``jobs.launcher_group`` and starts each request as a job through the ``jobs.runner`` runner,
  under the request id as run id: a request read twice runs once (the launcher skips ids it
  started; the job's ledger charge and registration are idempotent by run id). The job reports
  its own outcome; a local job that ended without being able to (killed, timed out) is reported
  ``retrain.failed`` by the launcher. A request's ``params`` (overrides of ``retrain.*``, see
  :mod:`refluent.jobs.params`) are checked first: a request they do not fit starts nothing and
  is reported ``retrain.failed`` with the reason.

Records that are not alerts or requests go to the topic's dead-letter sibling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from refluent.jobs import outcomes
from refluent.jobs.errors import JobError
from refluent.jobs.params import with_params
from refluent.jobs.runners import JobSpec, Runner, make_runner
from refluent.jobs.trigger import RetrainTrigger, lake_labels, registry_last_retrain
from refluent.streams.contracts import DriftAlert, RetrainRequest
from refluent.streams.errors import DecodeError
from refluent.streams.serde import JsonSerde
from refluent.streams.topics import ALERTS, RETRAIN_REQUESTS

if TYPE_CHECKING:
    from confluent_kafka import Message

    from refluent.config import Settings
    from refluent.streams.kafka import LoopStats, StopSignal

log = logging.getLogger(__name__)

JOB_REPORTED_EXIT = 1
"""Exit status of a ``refluent retrain --report`` that failed and reported it."""


@dataclass
class TriggerStats:
    alerts: int = 0
    requests: int = 0
    dead_lettered: int = 0


@dataclass
class LauncherStats:
    requests: int = 0
    launched: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    """Run id -> why its job failed (the end of its error output)."""


class _Service:
    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        self.settings, self.bootstrap_servers = settings, bootstrap_servers
        self.stats: Any = None

    def _decoded(self, records: list[Message], serde: JsonSerde[Any], router: Any,
                 step: str) -> Iterator[Any]:
        """The records' events; a record that is not one goes to its dead-letter topic."""
        for m in records:
            try:
                event = serde.decode(m.value())
            except DecodeError as exc:
                router.route(m, step, exc)
                self.stats.dead_lettered += 1
                continue
            if event is not None:
                yield event

    def _consume(self, group: str, topic: str, handle: Any, stop: StopSignal | None,
                 idle_timeout: float | None, until_caught_up: bool, **overrides: Any
                 ) -> LoopStats:
        from refluent.streams.deadletter import DeadLetterRouter
        from refluent.streams.kafka import ConsumerLoop, Producer

        producer = Producer(self.settings.kafka, self.bootstrap_servers)
        router = DeadLetterRouter(producer)
        loop = ConsumerLoop(self.settings.kafka, self.bootstrap_servers, group, [topic],
                            **overrides)

        def batch(records: list[Message]) -> None:
            handle(records, producer, router)
            producer.flush()  # requests and dead letters are durable before the commit

        try:
            return loop.run(batch, stop=stop, idle_timeout=idle_timeout,
                            until_caught_up=until_caught_up)
        finally:
            producer.close()


class TriggerService(_Service):
    """Alerts to retrain requests (see the module).

    Args:
        settings: ``jobs`` settings above all.
        bootstrap_servers: Kafka brokers.
        trigger: The policy (default: from the settings, the registry and the lake).
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, *,
                 trigger: RetrainTrigger | None = None, alerts_topic: str = ALERTS,
                 requests_topic: str = RETRAIN_REQUESTS) -> None:
        super().__init__(settings, bootstrap_servers)
        self.alerts_topic, self.requests_topic = alerts_topic, requests_topic
        self.trigger = trigger or self._default_trigger()
        self.stats: TriggerStats = TriggerStats()

    def _default_trigger(self) -> RetrainTrigger:
        from refluent.lake.catalog import open_catalog
        from refluent.registry.store import IcebergModelRegistry

        j, catalog = self.settings.jobs, open_catalog(self.settings)
        return RetrainTrigger(
            j.trigger_events, timedelta(seconds=j.cooldown_s), j.min_new_labels,
            last_retrain=registry_last_retrain(IcebergModelRegistry(
                catalog, self.settings.lake.namespace)),
            labels=lake_labels(catalog, self.settings.lake.namespace))

    def run(self, stop: StopSignal | None = None, idle_timeout: float | None = None,
            until_caught_up: bool = False) -> TriggerStats:
        alerts, requests = JsonSerde(DriftAlert), JsonSerde(RetrainRequest)

        def handle(records: list[Message], producer: Any, router: Any) -> None:
            for alert in self._decoded(records, alerts, router, "retrain-trigger"):
                self.stats.alerts += 1
                decision = self.trigger.decide(alert)
                log.info("alert %s: %s", alert.alert_id, decision.why)
                if decision.request is not None:
                    producer.produce(self.requests_topic, requests.encode(decision.request),
                                     decision.request.model_name)
                    self.stats.requests += 1

        self._consume(self.settings.jobs.trigger_group, self.alerts_topic, handle, stop,
                      idle_timeout, until_caught_up)
        return self.stats


class LauncherService(_Service):
    """Retrain requests to jobs (see the module).

    Args:
        settings: ``jobs`` settings above all.
        bootstrap_servers: Kafka brokers.
        runner: Where jobs run (default: ``jobs.runner``).
    """

    def __init__(self, settings: Settings, bootstrap_servers: str, *,
                 runner: Runner | None = None, requests_topic: str = RETRAIN_REQUESTS,
                 alerts_topic: str = ALERTS) -> None:
        super().__init__(settings, bootstrap_servers)
        self.runner = runner or make_runner(settings.jobs.runner, settings)
        self.requests_topic, self.alerts_topic = requests_topic, alerts_topic
        self.stats: LauncherStats = LauncherStats()
        self._launched: set[str] = set()

    def launch(self, request: RetrainRequest) -> None:
        """Start ``request``'s job once, and report a local job that could not report."""
        self.stats.requests += 1
        if request.request_id in self._launched:
            self.stats.skipped += 1
            return
        spec = JobSpec(request.model_name, request.request_id, request.snapshot_id,
                       params=tuple(sorted(request.params.items())))
        try:
            with_params(self.settings, request.params)  # refused here, before any job starts
        except JobError as exc:
            self._launched.add(request.request_id)
            self.stats.failed += 1
            self.stats.failures[spec.run_id] = str(exc)
            outcomes.report(self.settings, outcomes.failed(spec.model, spec.run_id, str(exc)),
                            self.alerts_topic)
            return
        launched = self.runner.launch(spec)
        self._launched.add(request.request_id)
        self.stats.launched += 1
        log.info("retrain %s of %s: %s %s", spec.run_id, spec.model, launched.job,
                 "ok" if launched.ok else launched.detail)
        if launched.finished and not launched.ok:
            self.stats.failed += 1
            self.stats.failures[spec.run_id] = launched.detail
            if launched.exit_code != JOB_REPORTED_EXIT:
                outcomes.report(self.settings, outcomes.failed(
                    spec.model, spec.run_id, launched.detail), self.alerts_topic)

    def run(self, stop: StopSignal | None = None, idle_timeout: float | None = None,
            until_caught_up: bool = False) -> LauncherStats:
        requests = JsonSerde(RetrainRequest)

        def handle(records: list[Message], producer: Any, router: Any) -> None:
            for request in self._decoded(records, requests, router, "retrain-launcher"):
                self.launch(request)

        # A local job holds the loop while it runs: the group must not take it for dead.
        wait_ms = int((self.settings.jobs.local_timeout_s + 300) * 1000)
        self._consume(self.settings.jobs.launcher_group, self.requests_topic, handle, stop,
                      idle_timeout, until_caught_up, batch_size=1,
                      **{"max.poll.interval.ms": min(wait_ms, 86_400_000)})
        return self.stats


__all__ = ["LauncherService", "LauncherStats", "TriggerService", "TriggerStats"]
