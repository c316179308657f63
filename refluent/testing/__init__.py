"""Helpers for testing Refluent and the feature views and models built on it.

- :class:`InMemoryRunner`: the in-memory engine (:mod:`refluent.engines.memory`), to run views
  over lists of events in a unit test.
- :mod:`refluent.testing.parity`: does an engine publish what the in-memory engine does?
- :mod:`refluent.testing.models`: contract checks for model classes (as River's estimator
  checks).
- :mod:`refluent.testing.services`: real services (broker, Redis, lake catalog) for tests.
- :mod:`refluent.testing.strategies`: hypothesis strategies for every event contract.
- :mod:`refluent.testing.kafka`: small helpers to create unique topics and read them back.

The in-memory stores are :class:`refluent.online_store.memory.MemoryOnlineStore` and
:class:`refluent.feedback.state.memory.MemoryJoinState`.
"""

from refluent.engines.memory import InMemoryRunner, RejectedRecord

__all__ = ["InMemoryRunner", "RejectedRecord"]
