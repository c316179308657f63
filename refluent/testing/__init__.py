"""Helpers for testing Refluent and the feature views and models built on it.

- :mod:`refluent.testing.services`: real services (broker, Redis, lake catalog) for tests.
- :mod:`refluent.testing.strategies`: hypothesis strategies for every event contract.
- :mod:`refluent.testing.kafka`: small helpers to create unique topics and read them back.
"""
