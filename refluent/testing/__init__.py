"""Helpers for testing Refluent and the feature views and models built on it.

- :class:`InMemoryRunner`: the in-memory engine (:mod:`refluent.engines.memory`), to run views
  over lists of events in a unit test.
- :mod:`refluent.testing.services`: real services (broker, Redis, lake catalog) for tests.
- :mod:`refluent.testing.strategies`: hypothesis strategies for every event contract.
- :mod:`refluent.testing.kafka`: small helpers to create unique topics and read them back.
"""

from refluent.engines.memory import InMemoryRunner, Rejected

__all__ = ["InMemoryRunner", "Rejected"]
